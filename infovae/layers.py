"""Building blocks shared by plugins (public API: ``infovae.layers``): activations by name,
fully connected trunks, the geometry of stride-2 convolution stacks, input checks.

Units and shapes: x (B, C, H, W) model values; sizes in pixels; every function raises
``PluginOptionError`` / ``CapabilityError`` naming the plugin (``plugin`` argument) on bad input.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Tuple

import torch
from torch import nn

from .errors import CapabilityError, PluginOptionError
from .options import ACTIVATION_NAMES
from .spec import DataSpec

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


def stage_sizes(h: int, w: int, layers: int, plugin: str) -> List[Tuple[int, int]]:
    """Spatial sizes [(h0, w0) = (h, w), (h1, w1), ..., (hL, wL)] of a stride-2 stack.

    layers = 0 picks the number of stages automatically (see module doc).
    Raises CapabilityError when the image is too small for the stages asked for.
    """
    if layers < 0:
        raise PluginOptionError(f"{plugin}: layers must be >= 0 (0 = automatic), got {layers}")
    if layers == 0:
        layers, s = 1, min(h, w) // 2
        while s // 2 >= 4:
            layers, s = layers + 1, s // 2
    sizes = [(h, w)]
    for _ in range(layers):
        ph, pw = sizes[-1]
        sizes.append((ph // 2, pw // 2))
    if min(sizes[-1]) < 1:
        raise CapabilityError(f"{plugin}: {h}x{w} images are too small for {layers} stride-2 stage(s); use fewer layers")
    return sizes


def stage_channels(channels: int, layers: int, plugin: str) -> List[int]:
    """Feature channels per stage: ``channels`` doubling each stage, capped at 8 * channels."""
    if channels < 1:
        raise PluginOptionError(f"{plugin}: channels must be >= 1, got {channels}")
    return [min(channels * 2 ** i, 8 * channels) for i in range(layers)]



assert tuple(ACTIVATIONS) == ACTIVATION_NAMES, "infovae.layers.ACTIVATIONS and infovae.ACTIVATION_NAMES disagree"
