"""Fully connected encoder q(z|x) = N(mu(x), diag sigma(x)^2); also the MLP trunk the MLP decoder reuses."""
from __future__ import annotations

from typing import Callable, Dict, List

import torch
from torch import nn

from infovae import DataSpec, PluginOptionError, diagonal_gaussian

ACTIVATIONS: Dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.2),
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
}


def make_activation(name: str, plugin: str) -> nn.Module:
    """A fresh activation module by name (one of ``ACTIVATIONS``)."""
    if name not in ACTIVATIONS:
        raise PluginOptionError(f"{plugin}: activation must be one of {', '.join(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]()


def mlp(d_in: int, d_out: int, hidden: int, layers: int, activation: str, plugin: str) -> nn.Sequential:
    """``layers`` hidden Linear+activation blocks of width ``hidden``, then a Linear to ``d_out``."""
    if hidden < 1:
        raise PluginOptionError(f"{plugin}: hidden must be >= 1, got {hidden}")
    if layers < 0:
        raise PluginOptionError(f"{plugin}: layers must be >= 0, got {layers}")
    mods: List[nn.Module] = []
    width = d_in
    for _ in range(layers):
        mods += [nn.Linear(width, hidden), make_activation(activation, plugin)]
        width = hidden
    mods.append(nn.Linear(width, d_out))
    return nn.Sequential(*mods)


def check_input(x: torch.Tensor, spec: DataSpec, who: str) -> None:
    if x.dim() != 4 or tuple(x.shape[1:]) != spec.shape:
        raise ValueError(f"{who} expects model values of shape (B, {', '.join(map(str, spec.shape))}), got {tuple(x.shape)}")


class MLPEncoder(nn.Module):
    """x (B, C, H, W) -> flatten -> ``layers`` x [Linear(hidden), activation] -> Linear(2 * latent_dim).

    forward(x) returns ``infovae.diagonal_gaussian(loc, log_scale)``: batch (B,),
    event (latent_dim,), parameters in float32 (also under autocast).
    """

    def __init__(self, spec: DataSpec, latent_dim: int, hidden: int = 256, layers: int = 2, activation: str = "relu"):
        super().__init__()
        if latent_dim < 1:
            raise PluginOptionError(f"encoder 'mlp': latent dimension must be >= 1, got {latent_dim}")
        self.spec, self.latent_dim = spec, int(latent_dim)
        self.net = mlp(spec.num_dims, 2 * self.latent_dim, hidden, layers, activation, "encoder 'mlp'")

    def forward(self, x: torch.Tensor):
        check_input(x, self.spec, "encoder 'mlp'")
        loc, log_scale = self.net(x.flatten(1)).float().chunk(2, dim=-1)
        return diagonal_gaussian(loc, log_scale)
