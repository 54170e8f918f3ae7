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

from infovae.layers import check_input, make_activation, stage_channels, stage_sizes


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
