"""Gated PixelCNN decoder p(x|z) (van den Oord et al. 2016, "Conditional Image Generation
with PixelCNN Decoders"), the decoder of the InfoVAE paper's binarized MNIST experiments.

Two stacks remove the blind spot of masked convolutions:

- the vertical stack sees all rows above: its first layer is a (k//2) x k convolution
  moved one row down, later layers (k//2 + 1) x k convolutions over rows <= r of the
  stack (which itself only knows rows < r);
- the horizontal stack sees the current row to the left: its first layer is a
  1 x (k//2) convolution moved one column right, later layers 1 x (k//2 + 1); each
  layer also receives the vertical stack's pre-activation through a 1x1 convolution
  (allowed: that only knows rows above), and has a residual connection;
- every gate is tanh(a) * sigmoid(b) with V z added to [a, b], V a learned linear map
  of its own for each gate of each layer;
- output: relu -> 1x1 -> relu -> 1x1 to a Bernoulli logit (binary data) or 256
  logits of a categorical over the gray levels (gray8 data).

The input carries an extra channel of ones so zero padding differs from black pixels.
Any H and W work.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import infovae
from infovae import DataSpec, PluginOptionError
from infovae.plugins.decoders import SUPPORTS

from .autoregressive import AutoregressiveDecoder, Nin, ShiftedConv2d, gate, with_ones


class PixelCNN(AutoregressiveDecoder):
    """Gated PixelCNN p(x|z) for binary or gray8 data (see the module docstring).

    Options: ``layers`` gated layers, ``channels`` per stack, ``kernel_size`` k (odd),
    ``fast`` picks the cached sampler by default.
    """

    supports = SUPPORTS["pixelcnn"]  # declared once, in the registration module

    def __init__(self, spec: DataSpec, latent_dim: int, layers: int = 5, channels: int = 32, kernel_size: int = 3, fast: bool = True):
        super().__init__(spec, latent_dim, fast, "decoder 'pixelcnn'")
        if layers < 1 or channels < 1:
            raise PluginOptionError(f"{self.who}: layers and channels must be >= 1, got {layers} and {channels}")
        if kernel_size < 3 or kernel_size % 2 == 0:
            raise PluginOptionError(f"{self.who}: kernel_size must be odd and >= 3, got {kernel_size}")
        self.layers, self.channels, self.kernel_size = int(layers), int(channels), int(kernel_size)
        c, f, k, d = spec.channels, self.channels, self.kernel_size, self.latent_dim
        self.outputs = 1 if spec.kind == "binary" else 256
        self.v_in = ShiftedConv2d(c + 1, 2 * f, (k // 2, k), mode="down")
        self.h_in = ShiftedConv2d(c + 1, 2 * f, (1, k // 2), mode="down_right")
        self.v_conv = nn.ModuleList(ShiftedConv2d(f, 2 * f, (k // 2 + 1, k), mode="down") for _ in range(layers - 1))
        self.h_conv = nn.ModuleList(ShiftedConv2d(f, 2 * f, (1, k // 2 + 1), mode="down_right") for _ in range(layers - 1))
        self.v_to_h = nn.ModuleList(Nin(2 * f, 2 * f) for _ in range(layers))
        self.h_out = nn.ModuleList(Nin(f, f) for _ in range(layers))
        self.cond_v = nn.ModuleList(nn.Linear(d, 2 * f) for _ in range(layers - 1))
        self.cond_h = nn.ModuleList(nn.Linear(d, 2 * f) for _ in range(layers))
        self.head1 = Nin(f, f)
        self.head2 = Nin(f, self.outputs)

    def network(self, ops, x, z: torch.Tensor, dropout: bool):
        f = self.channels
        vz = [m(z)[:, :, None, None] for m in self.cond_v]
        hz = [m(z)[:, :, None, None] for m in self.cond_h]
        xp = ops.pointwise(with_ones, x, channels=self.spec.channels + 1)
        v_pre = ops.shift(ops.conv(self.v_in, xp), down=1)

        def first(hs, vp, v_to_h=self.v_to_h[0], out=self.h_out[0], hz=hz[0]):
            return out(gate(hs + v_to_h(vp) + hz))

        h = ops.shift(ops.conv(self.h_in, xp), right=1, post=first, extras=(v_pre,), channels=f)
        for layer in range(1, self.layers):
            v = ops.pointwise(lambda t, vz=vz[layer - 1]: gate(t + vz), v_pre, channels=f)
            v_pre = ops.conv(self.v_conv[layer - 1], v)

            def residual(hc, vp, skip, v_to_h=self.v_to_h[layer], out=self.h_out[layer], hz=hz[layer]):
                return skip + out(gate(hc + v_to_h(vp) + hz))

            h = ops.conv(self.h_conv[layer - 1], h, post=residual, extras=(v_pre, h), channels=f)
        head2 = self.head2
        return ops.conv(self.head1, h, pre=F.relu, post=lambda t: head2(F.relu(t)), channels=self.outputs)

    def terms(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        if self.outputs == 1:
            return -F.binary_cross_entropy_with_logits(out, x, reduction="none")
        return torch.log_softmax(out, dim=1).gather(1, infovae.to_levels(x, self.spec))

    def sample_pixel(self, params: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
        if self.outputs == 1:  # u < sigmoid(l)  <=>  logit(u) < l
            return (torch.logit(uniforms) < params).to(params.dtype)
        cdf = torch.cumsum(torch.softmax(params, dim=1), dim=1)
        level = (cdf < uniforms).sum(dim=1, keepdim=True).clamp(max=255)
        return infovae.from_levels(level, self.spec, params.dtype)
