"""The C kernels of the training-size regularizers (the default MMD and the SVGD direction in one call
each) and of PixelCNN++'s concat_elu.

At training's batch sizes (64-256 codes, a few to a few dozen dimensions) the eager fused path
(``fused.py``) costs its ~30 tensor operations more than its arithmetic: on one core of the
2-vCPU EPYC of issue 13, about 330 us for the default MMD at n = 64, d = 8, of which the pairs'
arithmetic is a small part. ``infovae.functional._cpu_kernels`` does the same computation (the
canonical order, centring, the kernels, the value and the gradient) in one C call, in float64
internally, on eight-lane vectors.

It serves ``mmd`` where all of these hold, and only there:

- kernel "rbf", one or more explicit bandwidths (not "median"), the biased estimator;
- x and y float32 (or bf16 / fp16, cast up first) on the CPU, pooled rows N = n + m on the fused path (``fused_max_rows``);
- N^2 d at most ``MAX_WORK`` (above it the eager path's matrix products are faster, measured);
- the extension was built (setup.py; it needs a C compiler) and ``INFOVAE_NATIVE`` is not "0";
- the kernel accepts the data: no two rows of a sample with the same canonical key, unequal
  key sums for samples of equal size, finite rows. Otherwise it declines and the eager path
  runs, which handles ties, the same multiset (exactly 0) and the error naming a non-finite
  sample.

``stein_direction`` takes ``stein_rbf`` for one rbf bandwidth or the median heuristic, float32
(or bf16 / fp16) CPU particles and scores, n^2 d <= ``STEIN_MAX_WORK``, no ``block_size``; it declines non-finite input
(the eager path names it) and, under the heuristic, n < 2 and coinciding rows (a median of 0:
the eager path's rule). ``svgd_median_bandwidth`` then gives the kernel's median
(``stein_median_sigma``), so where the kernel serves both calls an explicit sigma equal to it
gives the same direction bits.

``concat_elu_forward`` / ``concat_elu_backward`` serve PixelCNN++'s ``concat_elu`` while training
(the autograd path of ``plugins.decoders.autoregressive``): float32 contiguous CPU input, one torch
thread (or fewer entries than torch would split across threads), the extension built and enabled.
Their values are within 2 float32 ulp of the exact elu, ``F.elu``'s within 1, so the two may differ
in the last bit; evaluation and sampling (no autograd) keep the eager path, whose values are
``F.elu``'s bit for bit (the fast sampler relies on that).

The guarantees of ``mmd`` (bitwise symmetry and permutation invariance, exactly 0 for the same
multiset, translation safety) are kept by the same canonical order; whether the kernel declines
depends only on the two multisets, so they hold across both paths. The values differ
from the eager path's by float32 rounding (the kernel's are the more accurate: float64
distances in the direct form).
"""
from __future__ import annotations

import os
from typing import Optional, Tuple

import torch

try:
    from . import _cpu_kernels
except ImportError:  # built without a C compiler: the eager path serves every call
    _cpu_kernels = None
_KERNELS = ("mmd_rbf_biased", "stein_rbf", "concat_elu_forward", "concat_elu_backward")
if _cpu_kernels is not None and not all(hasattr(_cpu_kernels, name) for name in _KERNELS):
    _cpu_kernels = None  # a stale build of an older source (an editable install not rebuilt): not used

__all__ = ["available", "enabled", "state", "MAX_WORK", "STEIN_MAX_WORK", "mmd_rbf_biased", "stein_rbf", "stein_median_sigma",
           "serves_concat_elu", "concat_elu_forward", "concat_elu_backward"]

# N^2 d up to which the kernel serves a call. Measured on one core of the 2-vCPU EPYC (AVX-512),
# fwd + bwd against the eager fused path, three sigmas: 4.7x at N = 128, d = 8; 2.3x at N = 128,
# d = 32; 1.8x at N = 256, d = 8; level at N^2 d = 2^21 (N = 256, d = 32 or N = 512, d = 8).
MAX_WORK = 1 << 20
# n^2 d up to which the Stein kernel serves (its direction is a product with d + 1 columns, which
# the eager path hands to BLAS): against the eager fast path, one core of the same EPYC, fixed sigma
# / median heuristic: 3.9x / 5.5x at n = 64, d = 2; 2.9x / 4.4x at d = 8; 1.2x / 2.1x at d = 32;
# 1.7x / 2.2x at n = 128, d = 8; slower from n^2 d = 2^19 (n = 128, d = 32: 0.54x / 0.86x).
STEIN_MAX_WORK = 1 << 17

# Read once at import: INFOVAE_NATIVE=0 turns the kernel off (to compare the paths, or to rule it
# out when debugging); the tests switch ``ENABLED`` directly.
ENABLED = os.environ.get("INFOVAE_NATIVE", "1") != "0"


def available() -> bool:
    """Whether the C kernels were built and import."""
    return _cpu_kernels is not None


def enabled() -> bool:
    """Whether ``mmd`` may use them now (built and not switched off)."""
    return ENABLED and _cpu_kernels is not None


def state() -> str:
    """For benchmark records: "on", "off (INFOVAE_NATIVE=0)" or "not built"."""
    return "on" if enabled() else ("off (INFOVAE_NATIVE=0)" if available() else "not built")


# Input dtypes the kernels take: float32, and bf16 / fp16 cast up to it first (as the eager paths
# cast them), so a low-precision input gives the result of its float32 copy on every path.
_SINGLE = (torch.float32, torch.bfloat16, torch.float16)


def serves(x: torch.Tensor, y: torch.Tensor) -> bool:
    """Whether the kernel may take this pair (given kernel rbf, explicit bandwidths, biased):
    float32 (or bf16 / fp16) CPU tensors within ``MAX_WORK``."""
    if not ENABLED or _cpu_kernels is None:
        return False
    if x.dtype not in _SINGLE or y.dtype not in _SINGLE or not (x.is_cpu and y.is_cpu):
        return False
    rows = x.shape[0] + y.shape[0]
    return rows * rows * x.shape[1] <= MAX_WORK


def _float32_rows(t: torch.Tensor) -> torch.Tensor:
    t = t.detach()
    if t.dtype != torch.float32:
        return t.float()
    return t if t.is_contiguous() else t.contiguous()


class _NativeMMD(torch.autograd.Function):
    """MMD^2 from the C kernel; the gradient is written in the forward call."""

    @staticmethod
    def forward(ctx, x, y, value, gx, gy):
        ctx.save_for_backward(gx, gy)
        return torch.scalar_tensor(value, dtype=torch.float32)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        gx, gy = ctx.saved_tensors
        return gx * grad_out, gy * grad_out, None, None, None


def mmd_rbf_biased(x: torch.Tensor, y: torch.Tensor, sigmas: Tuple[float, ...]) -> Optional[torch.Tensor]:
    """The biased rbf MMD^2 of x (n, d) and y (m, d) (checked, ``serves``) as a 0-dim float32
    tensor, differentiable w.r.t. x and y when they require grad; None when the kernel declines
    (nothing was computed that the caller would have to undo)."""
    xd, yd = _float32_rows(x), _float32_rows(y)
    n, d = xd.shape
    m = yd.shape[0]
    need_grad = torch.is_grad_enabled() and (x.requires_grad or y.requires_grad)
    if need_grad:
        gx = torch.empty((n, d), dtype=torch.float32)
        gy = torch.empty((m, d), dtype=torch.float32)
        value = _cpu_kernels.mmd_rbf_biased(xd.data_ptr(), yd.data_ptr(), n, m, d, sigmas, gx.data_ptr(), gy.data_ptr())
    else:
        value = _cpu_kernels.mmd_rbf_biased(xd.data_ptr(), yd.data_ptr(), n, m, d, sigmas, 0, 0)
    if value is None:
        return None
    if not need_grad:
        return torch.scalar_tensor(value, dtype=torch.float32)
    return _NativeMMD.apply(x, y, value, gx, gy)


def serves_stein(z, score) -> bool:
    """Whether the Stein kernel may take these particles (and scores, unless None): float32 (or
    bf16 / fp16) CPU tensors of one (n, d) shape, n, d >= 1, within ``STEIN_MAX_WORK``."""
    if not ENABLED or _cpu_kernels is None:
        return False
    if not isinstance(z, torch.Tensor) or z.dim() != 2 or z.dtype not in _SINGLE or not z.is_cpu:
        return False
    if score is not None and (not isinstance(score, torch.Tensor) or score.dtype not in _SINGLE
                              or not score.is_cpu or score.shape != z.shape):
        return False
    n, d = z.shape
    return n > 0 and d > 0 and n * n * d <= STEIN_MAX_WORK


def stein_rbf(z: torch.Tensor, score: torch.Tensor, sigma: Optional[float]) -> Optional[torch.Tensor]:
    """The SVGD direction phi (n, d) float32 (detached) of particles z with scores ``score``
    (``serves_stein``) for the rbf kernel with bandwidth sigma, or the SVGD median heuristic
    (sigma None; as ``stein.svgd_median_bandwidth`` on the same rows: this module's
    ``stein_median_sigma``); None when the kernel declines (non-finite input, coinciding rows)."""
    zd, sd = _float32_rows(z), _float32_rows(score)
    n, d = zd.shape
    phi = torch.empty((n, d), dtype=torch.float32)
    used = _cpu_kernels.stein_rbf(zd.data_ptr(), sd.data_ptr(), n, d, 0.0 if sigma is None else sigma, phi.data_ptr())
    return None if used is None else phi


def stein_median_sigma(z: torch.Tensor) -> Optional[float]:
    """The SVGD median bandwidth of the rows of z (``serves_stein``) from float64 direct-form
    distances, the value ``stein_rbf`` uses; None where the kernel declines (n < 2, non-finite
    rows, a median of 0)."""
    zd = _float32_rows(z)
    n, d = zd.shape
    return _cpu_kernels.stein_rbf(zd.data_ptr(), 0, n, d, 0.0, 0)


# concat_elu (PixelCNN++): elu([x, -x]) written with zero margins and an optional dropout mask in one pass,
# and its input gradient in one pass. torch runs the same as 5 + 3 elementwise passes; the kernel is single
# threaded, so it serves where torch would run those passes on one thread too: one intra-op thread, or
# fewer entries than torch's grain for splitting an elementwise loop.
_TORCH_GRAIN = 32768


def serves_concat_elu(x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> bool:
    """Whether the concat_elu kernels take x (B, C, H, W) (and the mask, unless None): float32,
    C-contiguous, on the CPU, where torch would use one thread."""
    if not ENABLED or _cpu_kernels is None:
        return False
    if x.dtype != torch.float32 or not x.is_cpu or x.dim() != 4 or not x.is_contiguous():
        return False
    if mask is not None and (mask.dtype != torch.float32 or not mask.is_contiguous()):
        return False
    return torch.get_num_threads() == 1 or x.numel() < _TORCH_GRAIN


def concat_elu_forward(x: torch.Tensor, pad: Tuple[int, int, int, int], mask: Optional[torch.Tensor]) -> torch.Tensor:
    """mask * pad(elu(cat(x, -x))) as a new (B, 2C, H + top + bottom, W + left + right) float32 tensor
    (``serves_concat_elu``); pad = (left, right, top, bottom); each value within 2 float32 ulp of the
    exact elu (``F.elu`` is within 1: the two may differ in the last bit)."""
    b, c, h, w = x.shape
    left, right, top, bottom = pad
    out = torch.empty((b, 2 * c, h + top + bottom, w + left + right), dtype=torch.float32)
    _cpu_kernels.concat_elu_forward(x.data_ptr(), out.data_ptr(), 0 if mask is None else mask.data_ptr(),
                                    b, c, h, w, left, right, top, bottom)
    return out


def concat_elu_backward(g: torch.Tensor, y: torch.Tensor, mask: Optional[torch.Tensor], scale: float,
                        pad: Tuple[int, int, int, int]) -> torch.Tensor:
    """The gradient (B, C, H, W) with respect to x of ``concat_elu_forward`` from the output gradient g
    and its output y (both (B, 2C, H', W')); ``scale`` the mask's nonzero value (1 without a mask)."""
    g = g if g.dtype == torch.float32 and g.is_contiguous() else g.float().contiguous()
    b, c2, hp, wp = y.shape
    left, right, top, bottom = pad
    c, h, w = c2 // 2, hp - top - bottom, wp - left - right
    dx = torch.empty((b, c, h, w), dtype=torch.float32)
    _cpu_kernels.concat_elu_backward(g.data_ptr(), y.data_ptr(), 0 if mask is None else mask.data_ptr(), dx.data_ptr(),
                                     b, c, h, w, left, right, top, bottom, float(scale))
    return dx
