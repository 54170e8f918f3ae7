"""Fully connected encoder q(z|x) = N(mu(x), diag sigma(x)^2); also the MLP trunk the MLP decoder reuses."""
from __future__ import annotations

from torch import nn

from infovae import DataSpec, PluginOptionError, diagonal_gaussian
from infovae.layers import ACTIVATIONS, check_input, make_activation, mlp  # noqa: F401 - shared helpers, re-exported


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
