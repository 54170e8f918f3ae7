"""Shared parts of the autoregressive decoders (``pixelcnn``, ``pixelcnnpp``).

A network is written once, as a method ``network(ops, x, z, dropout)`` that builds
its output from four primitives of an ``ops`` object:

- ``ops.conv(module, x, pre=None, post=None, extras=(), channels=None, side=None, bias=None)``:
  a shifted convolution (``ShiftedConv2d``) or 1x1 layer of ``pre(x)``, plus (``side`` =
  (nin, inputs, side_pre)) ``nin(side_pre(cat(inputs)))`` with ``nin`` a 1x1 layer and the
  inputs read at the output positions, plus (``bias``, (B, Cout, 1, 1)) a per-example
  bias, followed by ``post(y, *extras)`` where ``extras`` are maps read at the output
  positions. Spelling the short-cut and the per-example bias out (rather than inside
  ``post``) lets the fast sampler fold them into its matrix products;
- ``ops.deconv(...)``: the same for a ``ShiftedDeconv2d``;
- ``ops.shift(x, down=0, right=0, post=None, extras=(), channels=None)``;
- ``ops.pointwise(fn, *inputs, channels)``: ``fn`` acts position by position.

``TorchOps`` evaluates these on whole tensors (training, ``log_prob``, the naive
sampler). ``fast_sampling.GraphOps`` records them as a graph that the fast sampler
evaluates a few positions at a time. Both use the same modules' weights and the same
``post``/``fn`` callables (the fast sampler applies the known pre-activations with
in-place kernels and computes convolutions of single positions as matrix products), so
the two samplers compute the same function up to floating-point rounding.
Rules that keep it exact: ``pre`` must map 0 to 0 (it also sees the zero padding),
``post`` and ``fn`` must act position by position, and nothing may mix batch entries.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from infovae import CapabilityError, DataSpec, Decoder, PluginOptionError, check_reduction
from infovae.functional import native


def _concat_elu_into(x: torch.Tensor, pad: Optional[Tuple[int, int, int, int]]) -> torch.Tensor:
    """elu([x, -x]) written into a new (B, 2C, H + top + bottom, W + left + right) tensor whose
    margins ``pad`` = (left, right, top, bottom) are zero: the zero padding of the convolution that
    reads it, without a padded copy.

    One exponential per input entry instead of two: with m = expm1(-|x|) (<= 0),
    elu(x) = max(x, m) and elu(-x) = max(-x, m) (for x <= 0, m = expm1(x) >= x; for x > 0,
    m < 0 < x), the same values as ``F.elu`` (expm1 of the same argument, max is exact)."""
    b, c, h, w = x.shape
    left, right, top, bottom = pad if pad is not None else (0, 0, 0, 0)
    out = x.new_empty((b, 2 * c, h + top + bottom, w + left + right))
    if top:
        out[:, :, :top].zero_()
    if bottom:
        out[:, :, top + h :].zero_()
    if left:
        out[:, :, top : top + h, :left].zero_()
    if right:
        out[:, :, top : top + h, left + w :].zero_()
    inner = out[:, :, top : top + h, left : left + w]
    neg = torch.neg(x, out=inner[:, c:])
    m = torch.minimum(x, neg).expm1_()  # expm1(-|x|)
    torch.maximum(x, m, out=inner[:, :c])
    torch.maximum(neg, m, out=neg)
    return out


def _dropout_grid(p: float) -> Tuple[torch.dtype, int, int]:
    """(integer width, number of levels, dropped levels) of the grid that p is taken on:
    int8 and 256 levels when p is a multiple of 1/256, else int16 and 65536 levels."""
    if float(p * 256).is_integer():
        return torch.int8, 256, round(p * 256)
    return torch.int16, 65536, round(p * 65536)


def dropout_scale(p: float) -> float:
    """1 / q, q the keep probability of the grid p is taken on (see ``dropout_mask``)."""
    _, levels, threshold = _dropout_grid(p)
    return levels / (levels - threshold)


def dropout_mask(shape: Sequence[int], p: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A keep-and-scale mask of ``shape``: each entry is 1 / q with probability q, else 0, q ~ 1 - p.

    The entries come from random bytes (eight per 64-bit draw; two bytes per entry when p is not
    on the 1/256 grid, then p is taken on the 1/65536 grid), read as signed integers v and turned
    into {0, 1} by clamp(v + offset, 0, 1) in float32 (the conversion of int8/int16 to float is
    vectorized, a byte comparison is not); q is the keep probability of that grid, so the mask has
    mean exactly one. dtype: the mask's floating dtype (0 and 1 built in float32, converted, then scaled)."""
    n = 1
    for d in shape:
        n *= int(d)
    width, levels, threshold = _dropout_grid(p)
    per = 8 if width == torch.int8 else 4
    draws = torch.randint(-(2**63), 2**63 - 1, ((n + per - 1) // per,), dtype=torch.int64, device=device)
    mask = torch.empty(tuple(shape), dtype=torch.float32, device=device)
    mask.view(-1).copy_(draws.view(width)[:n])
    # keep v + levels / 2 >= threshold  <=>  v + levels / 2 - threshold + 1 >= 1 (integers): clamp gives 0 or 1
    mask.add_(levels // 2 - threshold + 1).clamp_(0.0, 1.0)
    return (mask if dtype == torch.float32 else mask.to(dtype)).mul_(dropout_scale(p))


class _ConcatElu(torch.autograd.Function):
    """mask * elu([x, -x]) written straight into its (B, 2C, ...) output, optionally with zero margins
    (no concatenated copy of the input, no padded copy of the output); ``mask`` (None or a
    ``dropout_mask`` of the output's shape, values 0 and s) fuses dropout in.

    On one CPU thread with float32 input both passes run in C (``native.concat_elu_forward`` /
    ``_backward``: one pass each instead of five and three, values within 2 ulp of ``F.elu``'s).
    Saves the output (which the convolution reading it keeps anyway) and the mask. Backward from
    the output y = s * elu(u) of kept entries (s = ``scale``, 1 without a mask): elu'(u) = 1 for
    y > 0, y / s + 1 otherwise, which is ``elu_backward`` on the result with alpha = s,
    input_scale = 1 / s;
    d/dx = m1 g1 elu'(x) - m2 g2 elu'(-x) (dropped entries get m = 0)."""

    @staticmethod
    def forward(ctx, x, pad, mask, scale):
        ctx.native = native.serves_concat_elu(x, mask)
        if ctx.native:  # one pass in C (values within 2 ulp of F.elu's; see native.concat_elu_forward)
            out = native.concat_elu_forward(x, pad if pad is not None else (0, 0, 0, 0), mask)
        else:
            out = _concat_elu_into(x, pad)
            if mask is not None:
                out.mul_(mask)
        ctx.save_for_backward(out, mask)
        ctx.pad, ctx.scale, ctx.shape = pad, scale, x.shape
        return out

    @staticmethod
    def backward(ctx, g):
        out, mask = ctx.saved_tensors
        if ctx.native:
            return native.concat_elu_backward(g, out, mask, ctx.scale, ctx.pad or (0, 0, 0, 0)), None, None, None
        b, c, h, w = ctx.shape
        left, _, top, _ = ctx.pad if ctx.pad is not None else (0, 0, 0, 0)
        rows, cols = slice(top, top + h), slice(left, left + w)
        s = ctx.scale
        # elu' over the whole padded block (the margins hold y = 0, a finite elu' that is cropped away): the
        # cropped rows are strided, and torch's elementwise loops take the scalar path on rows shorter than
        # 32 floats (20x slower than the vectorised one at 16 columns)
        d = torch.ops.aten.elu_backward(g, s, 1, 1.0 / s, True, out)
        if mask is not None:
            d.mul_(mask)
        return torch.sub(d[:, :c, rows, cols], d[:, c:, rows, cols]), None, None, None


def concat_elu(x: torch.Tensor, pad: Optional[Tuple[int, int, int, int]] = None, dropout: float = 0.0) -> torch.Tensor:
    """elu([x, -x]) along channels: (B, C, H, W) -> (B, 2C, H, W); maps 0 to 0.

    ``pad`` = (left, right, top, bottom): the result carries that many zero rows and columns around it
    (as ``F.pad`` of the result, without the copy), for a ``ShiftedConv2d`` to read directly.
    ``dropout`` = p > 0: dropout of single entries of the (padded) result with a ``dropout_mask``
    (the zero margins stay zero), fused into the same pass."""
    mask, scale = None, 1.0
    if dropout > 0.0:
        scale = dropout_scale(dropout)
        b, c, h, w = x.shape
        left, right, top, bottom = pad if pad is not None else (0, 0, 0, 0)
        mask = dropout_mask((b, 2 * c, h + top + bottom, w + left + right), dropout, x.device, x.dtype)
    if torch.compiler.is_compiling():  # plain composition: the compiler fuses it (and cannot trace out= into views)
        y = F.elu(torch.cat((x, -x), dim=1))
        y = y if pad is None else F.pad(y, pad)
        return y if mask is None else y * mask
    if x.requires_grad and torch.is_grad_enabled():
        return _ConcatElu.apply(x, pad, mask, scale)
    y = _concat_elu_into(x, pad)
    return y if mask is None else y.mul_(mask)


concat_elu.pads = True  # TorchOps.conv hands it the convolution's padding


def fast_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Dropout of single activations, as ``F.dropout(x, p, training=True)`` in law: each
    entry is kept with probability 1 - p and scaled by 1 / (1 - p).

    The mask is a ``dropout_mask`` (random bytes, 30x cheaper on CPU than one Bernoulli
    draw per entry): p is taken on a grid of 1/256 (exact for 0.5, 0.25, ...) or else of
    1/65536, and the scale uses the keep probability of that grid, so the result stays unbiased.
    """
    if p <= 0.0:
        return x
    return _MaskScale.apply(x, dropout_mask(x.shape, p, x.device, x.dtype))


# A convolution per example pays off from this many multiply-adds per example (kept input channels x output
# channels x kernel taps x output positions). Forward + backward on one CPU core at p = 0.5, per-example /
# dense (min of 7): 320 channels, batch 4: 0.77x at 16 x 16, 0.92x at 8 x 8 (19.7M); 64 channels, batch 16:
# 0.82x at 16 x 16 (3.1M), 1.33-1.40x at 8 x 8 (0.79M), where the cost per oneDNN call dominates.
PER_EXAMPLE_MIN_MACS = 1_500_000


def channel_dropout_conv(module: "ShiftedConv2d", padded: torch.Tensor, p: float) -> torch.Tensor:
    """``module.core(dropout2d(padded))``: the convolution of an input whose channels are dropped per
    example (kept with probability q ~ 1 - p and scaled by 1 / q, a ``dropout_mask`` of shape (B, Cin)),
    as ``nn.Dropout2d`` does before a convolution.

    padded: (B, Cin, H', W') (already carrying the convolution's zero padding) -> (B, Cout, Ho, Wo).
    On the CPU, where each example's kept channels are worth a convolution of their own, the dropped
    channels are not convolved at all: example b is ``conv2d(padded[b, kept_b], weight[:, kept_b] / q)``,
    and the backward computes input and weight gradients for the kept channels only (about half the
    multiply-adds at p = 0.5). Elsewhere (other devices, ``torch.compile``, autocast, small work) it is the dense
    convolution of ``padded * mask``; both are the same function up to rounding."""
    b, cin = padded.shape[:2]
    mask = dropout_mask((b, cin), p, padded.device, padded.dtype)
    kh, kw = module.kernel
    ho = (padded.shape[2] - kh) // module.stride + 1
    wo = (padded.shape[3] - kw) // module.stride + 1
    macs = cin * (1.0 - p) * module.out_channels * kh * kw * ho * wo
    if (padded.device.type != "cpu" or torch.compiler.is_compiling() or macs < PER_EXAMPLE_MIN_MACS
            or padded.dtype not in (torch.float32, torch.float64) or torch.is_autocast_enabled("cpu")):
        return module.core(padded * mask[:, :, None, None])
    flat = mask.nonzero()  # (kept, 2) rows (example, channel), sorted by example
    counts = torch.bincount(flat[:, 0], minlength=b).tolist()
    kept = torch.split(flat[:, 1], counts)
    return _ChannelDroppedConv.apply(padded, module.weight, module.bias, kept, dropout_scale(p), module.stride)


class _ChannelDroppedConv(torch.autograd.Function):
    """conv2d(y[b, kept_b], weight[:, kept_b] * scale, bias, stride) for every example b, stacked;
    the backward convolves each example's kept channels only (dropped channels get a zero gradient).

    The gathered inputs and weights are kept for the backward instead of gathered again: about half of
    y, plus per example about half of the weight (at batch 4 with 320 channels more than the float mask
    element dropout keeps: the paper configuration peaks ~100 MiB above element mode, still below the
    pclucas14 port's)."""

    @staticmethod
    def forward(ctx, y, weight, bias, kept, scale, stride):
        kh, kw = weight.shape[2:]
        ho, wo = (y.shape[2] - kh) // stride + 1, (y.shape[3] - kw) // stride + 1
        out = y.new_empty((y.shape[0], weight.shape[0], ho, wo))
        gathered = []
        for b, idx in enumerate(kept):
            if idx.numel() == 0:  # every channel dropped: the bias alone
                out[b] = bias[:, None, None]
                gathered.append(None)
                continue
            xb, wb = y[b : b + 1].index_select(1, idx), weight.index_select(1, idx).mul_(scale)
            out[b : b + 1] = F.conv2d(xb, wb, bias, stride=stride)
            gathered.append((xb, wb))
        ctx.y_meta, ctx.w_meta = (y.shape, y.dtype, y.device), weight.shape
        ctx.kept, ctx.gathered, ctx.scale, ctx.stride = kept, gathered, scale, stride
        return out

    @staticmethod
    def backward(ctx, g):
        need_y, need_w, need_b = ctx.needs_input_grad[:3]
        shape, dtype, device = ctx.y_meta
        gy = torch.zeros(shape, dtype=dtype, device=device) if need_y else None
        gw = torch.zeros(ctx.w_meta, dtype=dtype, device=device) if need_w else None
        stride = (ctx.stride, ctx.stride)
        if need_y or need_w:
            for b, (idx, pair) in enumerate(zip(ctx.kept, ctx.gathered)):
                if pair is None:
                    continue
                gyb, gwb, _ = torch.ops.aten.convolution_backward(
                    g[b : b + 1], pair[0], pair[1], None, stride, (0, 0), (1, 1), False,
                    (0, 0), 1, (need_y, need_w, False))
                if need_y:
                    gy[b].index_copy_(0, idx, gyb[0])
                if need_w:
                    gw.index_add_(1, idx, gwb, alpha=ctx.scale)
        gb = g.sum((0, 2, 3)) if need_b else None
        return gy, gw, gb, None, None, None


class _MaskScale(torch.autograd.Function):
    """x * mask for a keep-and-scale mask (values 0 and 1 / q); the mask is saved for backward."""

    @staticmethod
    def forward(ctx, x, mask):
        ctx.save_for_backward(mask)
        return x * mask

    @staticmethod
    def backward(ctx, g):
        (mask,) = ctx.saved_tensors
        return g * mask, None


def gate(x: torch.Tensor) -> torch.Tensor:
    """tanh(a) * sigmoid(b) for x = [a, b] along channels: (B, 2F, ...) -> (B, F, ...)."""
    a, b = x.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


def sigmoid_gate(x: torch.Tensor) -> torch.Tensor:
    """a * sigmoid(b) for x = [a, b] (the PixelCNN++ gated resnet output)."""
    a, b = x.chunk(2, dim=1)
    return a * torch.sigmoid(b)


class _GatedResidual(torch.autograd.Function):
    """skip + a * sigmoid(b) for y = [a, b] in one pass; saves a and sigmoid(b) (as autograd would) and
    writes both halves of dy into one (B, 2F, ...) gradient instead of concatenating them."""

    @staticmethod
    def forward(ctx, y, skip):
        f = y.shape[1] // 2
        a, s = y[:, :f], torch.sigmoid(y[:, f:])
        ctx.save_for_backward(a, s)
        return torch.addcmul(skip, a, s)

    @staticmethod
    def backward(ctx, g):
        a, s = ctx.saved_tensors
        f = a.shape[1]
        gy = g.new_empty((g.shape[0], 2 * f, *g.shape[2:]))
        torch.mul(g, s, out=gy[:, :f])
        # d/db a * sigmoid(b) = a * s * (1 - s) = a * (s - s^2)
        torch.mul(g, a, out=gy[:, f:]).mul_(torch.addcmul(s, s, s, value=-1.0))
        return gy, g


def gated_residual(y: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    """skip + a * sigmoid(b) for y = [a, b] along channels: (B, 2F, ...), (B, F, ...) -> (B, F, ...)."""
    if torch.compiler.is_compiling():
        a, b = y.chunk(2, dim=1)
        return skip + a * torch.sigmoid(b)
    if torch.is_grad_enabled() and (y.requires_grad or skip.requires_grad):
        return _GatedResidual.apply(y, skip)
    f = y.shape[1] // 2
    return torch.addcmul(skip, y[:, :f], torch.sigmoid(y[:, f:]))


class ShiftedConv2d(nn.Module):
    """Convolution whose output at (r, c) sees only rows <= r of its input.

    mode "down":       kernel (kh, kw) over rows r*s-kh+1 .. r*s, columns centred on c*s (kw odd);
    mode "down_right": kernel (kh, kw) over rows r*s-kh+1 .. r*s, columns c*s-kw+1 .. c*s.
    Implemented as zero padding ``self.pad`` = (left, right, top, bottom) and a valid
    convolution with stride s; (B, Cin, H, W) -> (B, Cout, ceil(H / s), ceil(W / s)).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: Tuple[int, int], stride: int = 1, mode: str = "down", init_scale: float = 1.0):
        super().__init__()
        kh, kw = kernel
        if mode == "down":
            if kw % 2 != 1:
                raise ValueError(f"a down-shifted convolution needs an odd kernel width, got {kw}")
            self.pad = (kw // 2, kw // 2, kh - 1, 0)
        elif mode == "down_right":
            self.pad = (kw - 1, 0, kh - 1, 0)
        else:
            raise ValueError(f"mode must be 'down' or 'down_right', got {mode!r}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel, self.stride, self.mode = (kh, kw), stride, mode
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kh, kw))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        nn.init.kaiming_uniform_(self.weight, a=5 ** 0.5)  # torch's Conv2d default
        with torch.no_grad():
            self.weight.mul_(init_scale)

    def core(self, padded: torch.Tensor) -> torch.Tensor:
        """The convolution of an input that already carries its zero padding."""
        return F.conv2d(padded, self.weight, self.bias, stride=self.stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.core(F.pad(x, self.pad))


class ShiftedDeconv2d(nn.Module):
    """Stride-s transposed convolution, (B, Cin, h, w) -> (B, Cout, s*h, s*w), cropped as in PixelCNN++.

    Input (I, J) feeds output rows s*I .. s*I+kh-1 and columns s*J-cl .. s*J-cl+kw-1,
    cl = (kw-1)//2 for mode "down" and 0 for "down_right": an output never sees an
    input from a later row block (or, for "down_right", a later column block).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: Tuple[int, int], stride: int = 2, mode: str = "down"):
        super().__init__()
        kh, kw = kernel
        self.crop_left = (kw - 1) // 2 if mode == "down" else 0
        if kh < stride or kw < stride + self.crop_left:
            raise ValueError(f"kernel {kernel} is too small to cover a stride-{stride} {mode} up-sampling")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel, self.stride, self.mode = (kh, kw), stride, mode
        self.weight = nn.Parameter(torch.empty(in_channels, out_channels, kh, kw))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        nn.init.kaiming_uniform_(self.weight, a=5 ** 0.5)

    def core(self, x: torch.Tensor) -> torch.Tensor:
        """The uncropped transposed convolution: rows s*h - s + kh, columns s*w - s + kw."""
        return F.conv_transpose2d(x, self.weight, self.bias, stride=self.stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s, (h, w) = self.stride, x.shape[-2:]
        return self.core(x)[:, :, : s * h, self.crop_left : self.crop_left + s * w]


class Nin(nn.Conv2d):
    """1x1 convolution ("network in network" layer): (B, Cin, H, W) -> (B, Cout, H, W).

    On a single position it runs as a matrix product, which costs far less per call
    than a convolution; that is the common case inside the fast sampler. On whole
    images it is one batched product W (Cout, Cin) @ x[b] (Cin, H * W) per example
    (``torch.baddbmm``, no transposed copies): on CPU its backward takes about half the
    time of oneDNN's 1x1 convolution backward at the PixelCNN++ shapes.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] == (1, 1):
            return F.linear(x.flatten(1), self.weight.flatten(1), self.bias)[:, :, None, None]
        if x.dim() != 4 or x.device.type != "cpu" or torch.compiler.is_compiling():
            return super().forward(x)
        b, _, h, w = x.shape
        weight = self.weight.flatten(1)  # (Cout, Cin)
        y = torch.baddbmm(self.bias[:, None], weight.expand(b, *weight.shape), x.flatten(2))
        return y.view(b, self.out_channels, h, w)


def shift(x: torch.Tensor, down: int = 0, right: int = 0) -> torch.Tensor:
    """out[..., r, c] = x[..., r - down, c - right], zero where that falls outside."""
    h, w = x.shape[-2:]
    return F.pad(x, (right, 0, down, 0))[..., :h, :w]


class TorchOps:
    """The ``ops`` that evaluate a network on whole tensors (see the module docstring)."""

    @staticmethod
    def conv(module: nn.Module, x: torch.Tensor, pre: Optional[Callable] = None, post: Optional[Callable] = None,
             extras: Sequence[torch.Tensor] = (), channels: Optional[int] = None,
             side: Optional[Tuple[nn.Module, Sequence[torch.Tensor], Optional[Callable]]] = None,
             bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        if pre is not None and getattr(pre, "pads", False) and isinstance(module, ShiftedConv2d):
            padded = pre(x, pad=module.pad)  # the pre-activation writes the padding itself
            # a pre-activation may convolve its own result (channel dropout skips the dropped channels)
            y = pre.convolve(module, padded) if hasattr(pre, "convolve") else module.core(padded)
        else:
            y = module(pre(x) if pre is not None else x)
        fresh = isinstance(module, (ShiftedConv2d, nn.Conv2d))  # a new tensor its backward does not need
        if side is not None:
            nin, inputs, side_pre = side
            a = torch.cat(tuple(inputs), dim=1) if len(inputs) > 1 else inputs[0]
            s = nin(side_pre(a) if side_pre is not None else a)
            y = y.add_(s) if fresh else y + s
        if bias is not None:
            y = y.add_(bias) if fresh and bias.dtype == y.dtype else y + bias
        return post(y, *extras) if post is not None else y

    @staticmethod
    def deconv(module: nn.Module, x: torch.Tensor, pre: Optional[Callable] = None, post: Optional[Callable] = None,
               extras: Sequence[torch.Tensor] = (), channels: Optional[int] = None) -> torch.Tensor:
        y = module(pre(x) if pre is not None else x)
        return post(y, *extras) if post is not None else y

    @staticmethod
    def shift(x: torch.Tensor, down: int = 0, right: int = 0, post: Optional[Callable] = None,
              extras: Sequence[torch.Tensor] = (), channels: Optional[int] = None) -> torch.Tensor:
        y = shift(x, down, right)
        return post(y, *extras) if post is not None else y

    @staticmethod
    def pointwise(fn: Callable, *inputs: torch.Tensor, channels: int) -> torch.Tensor:
        return fn(*inputs)


def with_ones(x: torch.Tensor) -> torch.Tensor:
    """Append a channel of ones, so the network can tell image from zero padding."""
    return torch.cat((x, torch.ones_like(x[:, :1])), dim=1)


class AutoregressiveDecoder(Decoder):
    """p(x|z) = prod over pixels in raster order (channels in order inside a pixel) of p(x_i | x_<i, z).

    Subclasses define ``network(ops, x, z, dropout) -> (B, P, H, W)``: the parameters of
    every pixel's conditional, where the output at pixel i depends only on the pixels
    before i; ``uniforms_per_pixel``; ``terms(x, out)`` -> (B, C, H, W) log-probabilities;
    and ``sample_pixel(params (B, P), uniforms (B, U)) -> (B, C)`` values, a deterministic
    function of the uniforms.

    ``sample(z, generator=None, fast=None)``: ``fast`` None uses the ``fast`` option.
    Both samplers draw all uniforms first, as one (B, U, H, W) tensor, and use the
    uniforms of pixel i for pixel i, so they consume randomness identically.
    """

    supports: Tuple[str, ...] = ()
    uniforms_per_pixel = 1

    def __init__(self, spec: DataSpec, latent_dim: int, fast: bool, who: str):
        super().__init__()
        if spec.kind not in self.supports:
            raise CapabilityError(
                f"{who} models {' and '.join(self.supports)} data, but the data are {spec.kind}; "
                f"pick a decoder that supports {spec.kind}"
            )
        if latent_dim < 1:
            raise PluginOptionError(f"{who}: latent dimension must be >= 1, got {latent_dim}")
        self.spec, self.latent_dim, self.fast, self.who = spec, int(latent_dim), bool(fast), who

    # -- subclass interface -------------------------------------------------------------
    def network(self, ops, x, z: torch.Tensor, dropout: bool):  # pragma: no cover
        raise NotImplementedError

    def terms(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def sample_pixel(self, params: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    # -- contract -----------------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def _check_z(self, z: torch.Tensor) -> None:
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"{self.who} expects codes z of shape (B, {self.latent_dim}), got {tuple(z.shape)}")

    def _check_x(self, x: torch.Tensor, z: torch.Tensor) -> None:
        self._check_z(z)
        if tuple(x.shape) != (z.shape[0], *self.spec.shape):
            raise ValueError(
                f"{self.who}: x has shape {tuple(x.shape)}, but codes z {tuple(z.shape)} and data of shape "
                f"{self.spec.shape} call for ({z.shape[0]}, {', '.join(map(str, self.spec.shape))})"
            )

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Parameters of every pixel's conditional, (B, P, H, W); dropout follows ``self.training``."""
        self._check_x(x, z)
        return self.network(TorchOps, x, z, self.training)

    def log_prob(self, x: torch.Tensor, z: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
        """log p(x|z) in nats: (B,) for "sum"; per subpixel (B, C, H, W) for "none" (float32 or float64)."""
        check_reduction(reduction)
        out = self(x, z)
        with torch.autocast(device_type=x.device.type, enabled=False):
            dtype = torch.float64 if out.dtype == torch.float64 else torch.float32
            if reduction == "sum":
                return self.total(x.to(dtype), out.to(dtype))
            return self.terms(x.to(dtype), out.to(dtype))

    def total(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """(B,) log p(x|z): the sum of ``terms``; a subclass may compute it more directly."""
        return self.terms(x, out).flatten(1).sum(1)

    @torch.no_grad()
    def sample(self, z: torch.Tensor, generator: Optional[torch.Generator] = None, fast: Optional[bool] = None,
               rows: Optional[int] = None) -> torch.Tensor:
        """x ~ p(x|z): (B, C, H, W) model values on the data grid, in the decoder's dtype.

        ``generator`` must live on z's device. fast=True: the cached sampler (one new
        position per layer and step); fast=False: the naive loop (one full network
        pass per pixel). Both give the same samples for the same generator state, up
        to floating-point differences between whole-image and windowed kernels (see
        ``fast_sampling``). Dropout is never applied while sampling. ``rows`` (benchmarks):
        draw only the first rows, leaving the rest 0; the uniforms are drawn for the whole
        image either way, so those rows equal the ones of a complete draw.
        """
        from .fast_sampling import sample_fast, sample_naive

        self._check_z(z)
        if rows is not None and not 0 <= rows <= self.spec.shape[1]:
            raise ValueError(f"rows must be in [0, {self.spec.shape[1]}], got {rows}")
        z = z.to(self.dtype)
        c, h, w = self.spec.shape
        uniforms = torch.rand((z.shape[0], self.uniforms_per_pixel, h, w), generator=generator, device=z.device)
        use_fast = self.fast if fast is None else bool(fast)
        return (sample_fast if use_fast else sample_naive)(self, z, uniforms.to(self.dtype), rows)
