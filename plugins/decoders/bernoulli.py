"""Factorized Bernoulli decoders p(x|z) = prod_i Bernoulli(x_i; sigmoid(logit_i(z))) for binary data.

Two networks produce the logits: ``bernoulli-mlp`` (fully connected) and
``bernoulli-conv`` (DCGAN-style transposed convolutions that mirror the conv
encoder's geometry, so the output is exactly the data's H x W for any size).
"""
from __future__ import annotations

from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from infovae import CapabilityError, DataSpec, Decoder, PluginOptionError, check_reduction
from infovae.layers import make_activation, mlp, stage_channels, stage_sizes
from infovae.plugins.decoders import SUPPORTS


class BernoulliDecoder(Decoder):
    """Shared part: subclasses define ``self.net`` mapping z (B, D) to logits (B, C, H, W).

    log_prob(x, z, reduction): x in {0., 1.} (model values of binary data),
    log p(x|z) = sum_i x_i l_i - softplus(l_i) in nats, computed in float32 as
    -BCE-with-logits, which is finite for any finite logit.
    """

    supports = SUPPORTS["bernoulli-mlp"]  # declared once, in the registration module

    def __init__(self, spec: DataSpec, latent_dim: int, who: str):
        super().__init__()
        if spec.kind not in self.supports:
            raise CapabilityError(
                f"{who} models binary data only, but the data are {spec.kind}; binarize them "
                "(e.g. --dataset mnist binarize=static) or pick a decoder that supports 8-bit values"
            )
        if latent_dim < 1:
            raise PluginOptionError(f"{who}: latent dimension must be >= 1, got {latent_dim}")
        self.spec, self.latent_dim, self.who = spec, int(latent_dim), who

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        """Bernoulli logits (B, C, H, W) for codes z (B, latent_dim)."""
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"{self.who} expects codes of shape (B, {self.latent_dim}), got {tuple(z.shape)}")
        return self.net(z).view(z.shape[0], *self.spec.shape)

    def log_prob(self, x: torch.Tensor, z: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
        """log p(x|z) in nats: (B,) for reduction="sum", per-pixel (B, C, H, W) for "none"."""
        check_reduction(reduction)
        if tuple(x.shape) != (z.shape[0], *self.spec.shape):
            raise ValueError(
                f"{self.who}: x has shape {tuple(x.shape)} but codes z {tuple(z.shape)} and data {self.spec.shape} "
                f"call for ({z.shape[0]}, {', '.join(map(str, self.spec.shape))})"
            )
        logits = self.logits(z).float()
        terms = -F.binary_cross_entropy_with_logits(logits, x.to(logits.dtype), reduction="none")
        return terms if reduction == "none" else terms.flatten(1).sum(1)

    def mean(self, z: torch.Tensor) -> torch.Tensor:
        """E[x|z] = sigmoid(logits), (B, C, H, W) in [0, 1]: smoother than samples for pictures."""
        return torch.sigmoid(self.logits(z).float())

    @torch.no_grad()
    def sample(self, z: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """x ~ p(x|z): (B, C, H, W) float32 in {0., 1.}; ``generator`` must live on z's device."""
        return torch.bernoulli(self.mean(z), generator=generator)


class BernoulliMLP(BernoulliDecoder):
    """z -> ``layers`` x [Linear(hidden), activation] -> Linear(C * H * W) logits."""

    def __init__(self, spec: DataSpec, latent_dim: int, hidden: int = 256, layers: int = 2, activation: str = "relu"):
        super().__init__(spec, latent_dim, "decoder 'bernoulli-mlp'")
        self.net = mlp(self.latent_dim, spec.num_dims, hidden, layers, activation, self.who)


class BernoulliConv(BernoulliDecoder):
    """z -> Linear -> (c_L, h_L, w_L) -> L x ConvTranspose2d(4, stride 2, pad 1) -> Conv2d(3x3) logits.

    The stages mirror ``encoder 'conv'`` for the same ``channels`` and ``layers``
    (0 = automatic): each transposed convolution doubles a side and adds
    ``output_padding`` 1 where the encoder's halving dropped an odd pixel, so
    28 -> 14 -> 7 is undone as 7 -> 14 -> 28 and 3 -> 7 works too.
    """

    def __init__(self, spec: DataSpec, latent_dim: int, channels: int = 32, layers: int = 0, activation: str = "relu"):
        super().__init__(spec, latent_dim, "decoder 'bernoulli-conv'")
        c, h, w = spec.shape
        sizes = stage_sizes(h, w, layers, self.who)
        chans = stage_channels(channels, len(sizes) - 1, self.who)
        hl, wl = sizes[-1]
        mods: List[nn.Module] = [
            nn.Linear(self.latent_dim, chans[-1] * hl * wl),
            make_activation(activation, self.who),
            nn.Unflatten(1, (chans[-1], hl, wl)),
        ]
        # Stage k (from the smallest) maps sizes[k+1] -> sizes[k] and chans[k] -> chans[k-1] (chans[0] at the end).
        for k in reversed(range(len(chans))):
            (ho, wo), (hi, wi) = sizes[k], sizes[k + 1]
            out_ch = chans[k - 1] if k > 0 else chans[0]
            pad = (ho - 2 * hi, wo - 2 * wi)  # 0 or 1 per side
            mods += [
                nn.ConvTranspose2d(chans[k], out_ch, 4, stride=2, padding=1, output_padding=pad),
                make_activation(activation, self.who),
            ]
        mods.append(nn.Conv2d(chans[0], c, 3, padding=1))
        self.net = nn.Sequential(*mods)
