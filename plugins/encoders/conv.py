"""DCGAN-style convolutional encoder; its geometry helpers are shared with the conv decoder.

Each stage is a 4x4 convolution with stride 2 and padding 1, which maps a side
of length s to floor(s / 2). The number of stages adapts to the image: as many
halvings as keep the smaller side >= 4 (at least one), so 8x8 -> 4x4,
28x28 -> 14 -> 7, 32x32 -> 16 -> 8 -> 4. The flattened size fed to the final
linear layer is computed from the data spec, never hard-coded.
"""
from __future__ import annotations

from typing import List, Tuple

import torch
from torch import nn

from infovae import CapabilityError, DataSpec, PluginOptionError, diagonal_gaussian

from .mlp import check_input, make_activation


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


class ConvEncoder(nn.Module):
    """x (B, C, H, W) -> L x [Conv2d(4, stride 2, pad 1), activation] -> flatten -> Linear(2 * latent_dim).

    Options: ``channels`` of the first stage (doubled per stage, capped at 8x),
    ``layers`` (0 = automatic), ``activation``. No normalization layers, so the
    posterior of one example never depends on the rest of the batch.
    forward(x) returns ``infovae.diagonal_gaussian(loc, log_scale)`` (float32).
    """

    def __init__(self, spec: DataSpec, latent_dim: int, channels: int = 32, layers: int = 0, activation: str = "leaky_relu"):
        super().__init__()
        who = "encoder 'conv'"
        if latent_dim < 1:
            raise PluginOptionError(f"{who}: latent dimension must be >= 1, got {latent_dim}")
        self.spec, self.latent_dim = spec, int(latent_dim)
        c, h, w = spec.shape
        sizes = stage_sizes(h, w, layers, who)
        chans = stage_channels(channels, len(sizes) - 1, who)
        mods: List[nn.Module] = []
        prev = c
        for ch in chans:
            mods += [nn.Conv2d(prev, ch, 4, stride=2, padding=1), make_activation(activation, who)]
            prev = ch
        self.features = nn.Sequential(*mods)
        hl, wl = sizes[-1]
        self.head = nn.Linear(prev * hl * wl, 2 * self.latent_dim)

    def forward(self, x: torch.Tensor):
        check_input(x, self.spec, "encoder 'conv'")
        loc, log_scale = self.head(self.features(x).flatten(1)).float().chunk(2, dim=-1)
        return diagonal_gaussian(loc, log_scale)
