"""PixelCNN++ decoder p(x|z) for 8-bit gray and RGB images (Salimans et al. 2017), conditioned on z.

Architecture as in the authors' code (pixel_cnn_pp/model.py), with z added to the
gate pre-activations of every gated resnet block through its own learned linear map
(their ``h`` conditioning):

- two streams: ``u`` sees the rows above (down-shifted 2x3 convolutions), ``ul`` the
  rows above and the pixels to the left (down-right-shifted 2x2 convolutions); the
  input carries an extra channel of ones so padding differs from black;
- up pass: ``nr_resnet`` gated resnet blocks at each of three resolutions, joined by
  stride-2 shifted convolutions; every block output is kept for the down pass;
- down pass: ``nr_resnet`` blocks at the coarsest, ``nr_resnet + 1`` at the other two
  resolutions (joined by stride-2 shifted transposed convolutions), each taking the
  matching up-pass output through a 1x1 short-cut (``ul`` blocks also take ``u``);
- gated resnet: x + a * sigmoid(b), [a, b] = conv(dropout(concat_elu(conv(concat_elu(x))
  + nin(concat_elu(short-cut))))) + W z;
- output: 1x1 convolution of elu(ul) to the mixture of ``nr_logistic_mix`` discretized
  logistics (``infovae.functional.discretized_logistic_mixture_log_prob``), with the
  R -> G -> B mean dependence for RGB.

Not taken over: weight normalization with data-dependent initialization (plain
convolutions; the second convolution of each block starts scaled by 0.1 as there).
H and W must be divisible by 4 (two halvings).
"""
from __future__ import annotations

import contextlib
import functools
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from infovae import CapabilityError, DataSpec, PluginOptionError
from infovae.functional.logistic import (
    MAX_LOG_SCALE,
    MIN_LOG_SCALE,
    discretized_logistic_mixture_log_prob,
    discretized_logistic_mixture_log_prob_packed,
    logistic_mixture_params,
)

from .autoregressive import (
    AutoregressiveDecoder,
    Nin,
    ShiftedConv2d,
    ShiftedDeconv2d,
    channel_dropout_conv,
    concat_elu,
    gated_residual,
    with_ones,
)

PRESETS = {
    # (nr_resnet, nr_filters, nr_logistic_mix, dropout)
    "small": (1, 32, 5, 0.0),  # CPU-friendly default
    "paper": (5, 160, 10, 0.5),  # Salimans et al. 2017, CIFAR-10
}


@functools.lru_cache(maxsize=16)
def _batch_index(batch: int, device: torch.device) -> torch.Tensor:
    """arange(batch) (int64): the rows of a per-example gather, made once per batch size."""
    return torch.arange(batch, device=device)


def _quantize_rgb(mu, y, co, out):
    """The RGB channels of the chosen components in order, written into ``out`` (B, 3): level =
    round((m + y + 1) * 127.5) clipped to [0, 255], value = level / 127.5 - 1, with m = mu_R, then
    mu_G + c0 x_R, then mu_B + c1 x_R + c2 x_G (the quantized earlier values). mu, y, co (B, 3): torch
    tensors or numpy arrays of one dtype; each step is one correctly rounded IEEE operation (add, multiply,
    divide, round half to even, clip), so both give the same bits as the general sampler."""
    if isinstance(out, np.ndarray):  # ufuncs straight away (np.round and np.clip add Python wrappers)
        def level(t):
            return np.minimum(np.maximum(np.rint(t, out=t), 0.0, out=t), 255.0, out=t)
    else:
        def level(t):
            return torch.round(t).clamp_(0.0, 255.0)
    for ch in range(3):
        m = mu[:, ch]
        if ch == 1:
            m = m + co[:, 0] * out[:, 0]
        elif ch == 2:
            m = m + co[:, 1] * out[:, 0] + co[:, 2] * out[:, 1]
        out[:, ch] = level((m + y[:, ch] + 1.0) * 127.5) / 127.5 - 1.0
    return out


class _DroppedConcatElu:
    """dropout(concat_elu(x)) as a pre-activation (training only): drops single activations of the
    2C-channel result (fused into concat_elu's pass); with ``pad`` the zero margins stay zero."""

    pads = True

    def __init__(self, p: float):
        self.p = p

    def __call__(self, x: torch.Tensor, pad=None) -> torch.Tensor:
        return concat_elu(x, pad=pad, dropout=self.p)


class _ChannelDroppedConcatElu:
    """concat_elu(x) as the pre-activation of a convolution that sees it through channel dropout
    (``nn.Dropout2d``, as the pclucas14 port): whole channels of the 2C-channel result are dropped per
    example, and the convolution skips them (``channel_dropout_conv``)."""

    pads = True

    def __init__(self, p: float):
        self.p = p

    def __call__(self, x: torch.Tensor, pad=None) -> torch.Tensor:
        return concat_elu(x, pad=pad)

    def convolve(self, module: ShiftedConv2d, padded: torch.Tensor) -> torch.Tensor:
        return channel_dropout_conv(module, padded, self.p)


DROPOUT_MODES = ("element", "channel")


class GatedResnet(nn.Module):
    """PixelCNN++ gated resnet block on ``filters`` channels, conditioned on z; ``shortcuts`` extra inputs."""

    def __init__(self, filters: int, latent_dim: int, mode: str, shortcuts: int, dropout: float,
                 dropout_mode: str = "element"):
        super().__init__()
        kernel = (2, 3) if mode == "down" else (2, 2)
        self.conv1 = ShiftedConv2d(2 * filters, filters, kernel, mode=mode)
        self.shortcut = Nin(2 * filters * shortcuts, filters) if shortcuts else None
        self.conv2 = ShiftedConv2d(2 * filters, 2 * filters, kernel, mode=mode, init_scale=0.1)
        self.cond = nn.Linear(latent_dim, 2 * filters)
        nn.init.normal_(self.cond.weight, 0.0, 0.05)
        nn.init.zeros_(self.cond.bias)
        self.filters, self.dropout, self.dropout_mode = filters, float(dropout), dropout_mode

    def connect(self, ops, x, shortcuts, z: torch.Tensor, dropout: bool):
        """Add the block to the network being built by ``ops``: x plus the gated residual."""
        hz = self.cond(z)[:, :, None, None]
        p = self.dropout if dropout else 0.0
        side = (self.shortcut, tuple(shortcuts), concat_elu) if shortcuts else None
        if p > 0:
            pre2 = _ChannelDroppedConcatElu(p) if self.dropout_mode == "channel" else _DroppedConcatElu(p)
        else:
            pre2 = concat_elu
        h = ops.conv(self.conv1, x, pre=concat_elu, side=side, channels=self.filters)
        return ops.conv(self.conv2, h, pre=pre2, post=gated_residual, extras=(x,), bias=hz, channels=self.filters)


class PixelCNNpp(AutoregressiveDecoder):
    """PixelCNN++ p(x|z) for gray8 and rgb8 data (see the module docstring).

    Options: ``preset`` "small" (1 block per resolution, 32 filters, 5 logistics, no
    dropout) or "paper" (5, 160, 10, dropout 0.5); ``nr_resnet``, ``nr_filters``,
    ``nr_logistic_mix``, ``dropout`` override the preset when given; ``dropout_mode``
    "element" drops single activations (the authors' code), "channel" whole channels per
    example (``nn.Dropout2d``, as the pclucas14 port; the dropped channels are not
    convolved); ``fast`` picks the cached sampler by default.
    """

    supports = ("gray8", "rgb8")

    def __init__(
        self,
        spec: DataSpec,
        latent_dim: int,
        preset: str = "small",
        nr_resnet: Optional[int] = None,
        nr_filters: Optional[int] = None,
        nr_logistic_mix: Optional[int] = None,
        dropout: Optional[float] = None,
        fast: bool = True,
        dropout_mode: str = "element",
    ):
        super().__init__(spec, latent_dim, fast, "decoder 'pixelcnnpp'")
        if preset not in PRESETS:
            raise PluginOptionError(f"{self.who}: unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        base = PRESETS[preset]
        given = (nr_resnet, nr_filters, nr_logistic_mix, dropout)
        nr_resnet, nr_filters, nr_logistic_mix, dropout = (b if g is None else g for g, b in zip(given, base))
        for name, value in (("nr_resnet", nr_resnet), ("nr_filters", nr_filters), ("nr_logistic_mix", nr_logistic_mix)):
            if int(value) < 1:
                raise PluginOptionError(f"{self.who}: {name} must be >= 1, got {value}")
        if not 0.0 <= float(dropout) < 1.0:
            raise PluginOptionError(f"{self.who}: dropout must be in [0, 1), got {dropout}")
        if dropout_mode not in DROPOUT_MODES:
            raise PluginOptionError(f"{self.who}: unknown dropout_mode {dropout_mode!r}; choose one of "
                                    f"{', '.join(DROPOUT_MODES)}")
        _, h, w = spec.shape
        if h % 4 or w % 4:
            raise CapabilityError(
                f"{self.who} halves the image twice, so H and W must be divisible by 4; got {h}x{w}. "
                "Pad or crop the images (e.g. 28x28 and 32x32 work)."
            )
        self.preset = preset
        self.nr_resnet, self.nr_filters = int(nr_resnet), int(nr_filters)
        self.nr_logistic_mix, self.dropout = int(nr_logistic_mix), float(dropout)
        self.dropout_mode = dropout_mode
        c, f, d, k = spec.channels, self.nr_filters, self.latent_dim, self.nr_logistic_mix
        self.uniforms_per_pixel = 1 + c
        self.u_in = ShiftedConv2d(c + 1, f, (2, 3), mode="down")
        self.ul_in_v = ShiftedConv2d(c + 1, f, (1, 3), mode="down")
        self.ul_in_h = ShiftedConv2d(c + 1, f, (2, 1), mode="down_right")

        def blocks(n: int, mode: str, shortcuts: int) -> nn.ModuleList:
            return nn.ModuleList(GatedResnet(f, d, mode, shortcuts, self.dropout, dropout_mode) for _ in range(n))

        n = self.nr_resnet
        self.up_u = nn.ModuleList(blocks(n, "down", 0) for _ in range(3))
        self.up_ul = nn.ModuleList(blocks(n, "down_right", 1) for _ in range(3))
        self.down_u = nn.ModuleList(ShiftedConv2d(f, f, (2, 3), stride=2, mode="down") for _ in range(2))
        self.down_ul = nn.ModuleList(ShiftedConv2d(f, f, (2, 2), stride=2, mode="down_right") for _ in range(2))
        counts = (n, n + 1, n + 1)
        self.dn_u = nn.ModuleList(blocks(m, "down", 1) for m in counts)
        self.dn_ul = nn.ModuleList(blocks(m, "down_right", 2) for m in counts)
        self.up_dec_u = nn.ModuleList(ShiftedDeconv2d(f, f, (2, 3), stride=2, mode="down") for _ in range(2))
        self.up_dec_ul = nn.ModuleList(ShiftedDeconv2d(f, f, (2, 2), stride=2, mode="down_right") for _ in range(2))
        self.out = Nin(f, k * (10 if c == 3 else 3))

    def network(self, ops, x, z: torch.Tensor, dropout: bool):
        c = self.spec.channels
        xp = ops.pointwise(with_ones, x, channels=c + 1)
        u = ops.shift(ops.conv(self.u_in, xp), down=1)
        ul_above = ops.shift(ops.conv(self.ul_in_v, xp), down=1)
        ul = ops.shift(ops.conv(self.ul_in_h, xp), right=1, post=torch.add, extras=(ul_above,))
        us, uls = [u], [ul]
        for level in range(3):  # up pass
            if level:
                us.append(ops.conv(self.down_u[level - 1], us[-1]))
                uls.append(ops.conv(self.down_ul[level - 1], uls[-1]))
            for bu, bul in zip(self.up_u[level], self.up_ul[level]):
                us.append(bu.connect(ops, us[-1], (), z, dropout))
                uls.append(bul.connect(ops, uls[-1], (us[-1],), z, dropout))
        u, ul = us.pop(), uls.pop()
        for level in range(3):  # down pass
            if level:
                u = ops.deconv(self.up_dec_u[level - 1], u)
                ul = ops.deconv(self.up_dec_ul[level - 1], ul)
            for bu, bul in zip(self.dn_u[level], self.dn_ul[level]):
                u = bu.connect(ops, u, (us.pop(),), z, dropout)
                ul = bul.connect(ops, ul, (u, uls.pop()), z, dropout)
        assert not us and not uls
        return ops.conv(self.out, ul, pre=F.elu)

    def terms(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        lp, mu, ls, co = logistic_mixture_params(out, self.spec.channels, self.nr_logistic_mix)
        return discretized_logistic_mixture_log_prob(x, lp, mu, ls, co, reduction="none")

    def total(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """(B,) log p(x|z) straight from the mixture of the whole pixel (no per-channel chain terms), with the
        likelihood's analytic backward when training."""
        return discretized_logistic_mixture_log_prob_packed(x, out, self.nr_logistic_mix)

    def sample_pixel(self, params: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
        """One pixel of every image: params (B, P), uniforms (B, 1 + C) -> (B, C) values.

        The same draw as ``sample_discretized_logistic_mixture`` (component by inverting the
        cdf of the mixture weights with uniform 0, then y = mean + scale * logit(u) per channel,
        rounded to the nearest level and clipped, channels in order with the quantized earlier
        channels in the means), written on (B, P) rows: only the chosen component's parameters
        are gathered, a few dozen small operations per pixel instead of the general 5-d path.
        """
        k, c = self.nr_logistic_mix, self.spec.channels
        b = params.shape[0]
        dtype = torch.float64 if params.dtype == torch.float64 else torch.float32
        autocast = torch.is_autocast_enabled(params.device.type)
        with torch.autocast(device_type=params.device.type, enabled=False) if autocast else contextlib.nullcontext():
            if params.dtype != dtype or uniforms.dtype != dtype:
                params, uniforms = params.to(dtype), uniforms.to(dtype)
            u_comp, u_rest = uniforms[:, :1], uniforms[:, 1:]
            cdf = torch.cumsum(torch.softmax(params[:, :k], dim=1), dim=1)  # (B, K)
            comp = (cdf < u_comp).sum(dim=1).clamp_(max=k - 1)  # (B,)
            blocks, per = (3, 3) if c == 3 else (2, c)
            chosen = params[:, k:].reshape(b, blocks, k, per)[_batch_index(b, params.device), :, comp]  # (B, blocks, per)
            mu = chosen[:, 0]
            y = torch.logit(u_rest).mul_(chosen[:, 1].clamp(MIN_LOG_SCALE, MAX_LOG_SCALE).exp_())  # scale * logit(u)
            if c == 1:
                return torch.round((mu + y + 1.0) * 127.5).clamp_(0.0, 255.0).div_(127.5).sub_(1.0)
            co = torch.tanh(chosen[:, 2])
            if params.device.type != "cpu":
                return _quantize_rgb(mu, y, co, torch.empty((b, c), dtype=dtype, device=params.device))
            # on the CPU the same IEEE operations on numpy views of the (B, 3) rows cost a third of the dispatch
            out = np.empty((b, c), dtype=np.float64 if dtype == torch.float64 else np.float32)
            _quantize_rgb(mu.numpy(), y.numpy(), co.numpy(), out)
            return torch.from_numpy(out)
