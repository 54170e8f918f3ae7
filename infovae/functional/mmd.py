"""Maximum mean discrepancy (squared) between two samples.

MMD^2(P, Q) = E k(x, x') + E k(y, y') - 2 E k(x, y). From x (n, d) ~ P and
y (m, d) ~ Q:

- biased (V-statistic): (1/n^2) sum_ij k(x_i, x_j) + (1/m^2) sum_ij k(y_i, y_j)
  - (2/nm) sum_ij k(x_i, y_j). It is >= 0 for a positive definite kernel and,
  rbf and imq being characteristic, 0 exactly when the two samples have the
  same empirical distribution; for the same multiset the result is exactly 0.0.
- unbiased (U-statistic): the within-sample sums skip i == j and are divided
  by n(n-1) and m(m-1). Unbiased, and can be negative.

Kernels (r = ||a - b||^2):
- ``rbf``: k = exp(-r / (2 sigma^2)), ``bandwidth`` = sigma.
- ``imq``: k = c / (c + r), ``bandwidth`` = c.
A sequence of bandwidths means the sum of those kernels. ``"median"`` is the
median heuristic on the pooled sample: rbf sigma^2 = median r, imq c = median r,
the median taken over pairs i < j of the pooled rows (at most 1024 rows,
evenly strided, after sorting them canonically), with no gradient through it;
one exact selection on the expanded-form distances (relative error below
~2.5e-4, typically ~1e-6; see ``distances.median_sq_dist``).

Accuracy in float32: the kernel's argument comes from the expanded form on
data centred at the pooled mean c, so each kernel value carries a relative
error of about eps (||z_i - c||^2 + ||z_j - c||^2) / s, with s = 2 sigma^2
for rbf and s = c for imq. That is ~1e-7 with the median heuristic; for a
bandwidth much smaller than the data's spread pass float64 inputs.

The computation is a single sweep over tiles of the pooled kernel matrix
(see ``distances.kernel_sweep``; up to 512 pooled rows the whole matrix is one
tile, evaluated with one product per call): memory is O((n + m) d + block^2) for any n, m,
and when a gradient is needed it is formed in the same sweep (the loss is a
scalar), so backward only scales it. Both samples are sorted into a canonical
row order first, which makes the result bitwise invariant to row order and to
swapping x and y, and lets identical multisets give exactly 0.
"""
from __future__ import annotations

import math
from numbers import Real
from typing import Optional, Sequence, Tuple, Union

import torch

from .distances import (
    KernelSpec,
    canonical_order_and_keys,
    canonical_pooled,
    check_finite,
    check_pair,
    compute_dtype,
    exact_float_math,
    first_difference,
    kernel_sweep,
    median_sq_dist,
    run_exact,
)
from .fused import fused_max_rows, median_scales_small, mmd_fused
from . import native

__all__ = ["mmd", "resolve_bandwidth"]

Bandwidth = Union[str, float, Sequence[float]]
KERNELS = ("rbf", "imq")
ESTIMATORS = ("biased", "unbiased")


def check_kernel(kernel: str) -> str:
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; use one of {', '.join(KERNELS)}")
    return kernel


def check_estimator(estimator: str) -> str:
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; use one of {', '.join(ESTIMATORS)}")
    return estimator


def parse_bandwidth(bandwidth: Bandwidth) -> Union[str, Tuple[float, ...]]:
    """'median' or a tuple of positive finite floats; a clear error otherwise."""
    if type(bandwidth) is float and 0.0 < bandwidth < math.inf:  # the common case, checked in one comparison
        return (bandwidth,)
    if type(bandwidth) is tuple and bandwidth and all(type(v) is float and 0.0 < v < math.inf for v in bandwidth):
        return bandwidth  # the plugins' parsed option: already a tuple of positive finite floats
    if isinstance(bandwidth, str):
        if bandwidth == "median":
            return "median"
        raise ValueError(f"bandwidth must be 'median', a positive number or a sequence of them, got {bandwidth!r}")
    if isinstance(bandwidth, torch.Tensor):
        bandwidth = bandwidth.detach().reshape(-1).tolist()
    values = list(bandwidth) if isinstance(bandwidth, (list, tuple)) else [bandwidth]
    if not values:
        raise ValueError("bandwidth sequence is empty; give at least one value or 'median'")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, Real):
            raise ValueError(f"bandwidth values must be numbers, got {v!r}")
        v = float(v)
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"bandwidths must be positive and finite, got {v!r}")
        out.append(v)
    return tuple(out)


def _median_scales(kernel: str, pooled: torch.Tensor) -> Tuple[float, ...]:
    med = median_sq_dist(pooled)
    return (math.sqrt(med),) if kernel == "rbf" else (med,)


def canonical_pair(x: torch.Tensor, y: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, bool]:
    """Both samples in canonical row order, as a pair in canonical order.

    Returns (a, b, identical): a, b are x and y (possibly swapped), each with
    rows sorted by ``canonical_order`` (a differentiable gather); the smaller
    sample comes first, equal sizes are ordered by their first differing
    element. ``identical`` is True when they are the same multiset.
    """
    pa, ka = canonical_order_and_keys(x.detach())
    pb, kb = canonical_order_and_keys(y.detach())
    a, b = x[pa], y[pb]
    if a.shape[0] != b.shape[0]:
        return (a, b, False) if a.shape[0] < b.shape[0] else (b, a, False)
    # The sums of the keys in canonical order are functions of the multisets: when they
    # differ they order the pair (and the samples differ) without comparing elements.
    sa, sb = torch.stack([ka.sum(), kb.sum()]).tolist()
    if sa != sb:
        return (a, b, False) if sa < sb else (b, a, False)
    if torch.equal(a, b):
        return a, b, True
    return (a, b, False) if first_difference(a.detach(), b.detach()) < 0 else (b, a, False)


def prepared_pair(x: torch.Tensor, y: torch.Tensor):
    """Cast to the compute dtype and canonically ordered: (a, b, identical).
    Inputs must have passed ``check_pair``."""
    dtype = compute_dtype(x, y)
    return canonical_pair(x.to(dtype), y.to(dtype))


def kernel_for(kernel: str, bandwidth: Bandwidth, a: torch.Tensor, b: torch.Tensor) -> KernelSpec:
    """The KernelSpec for a prepared pair (median resolved on the pooled sample)."""
    bw = parse_bandwidth(bandwidth)
    if bw == "median":
        with torch.no_grad():
            bw = _median_scales(kernel, torch.cat([a.detach(), b.detach()]))
    return KernelSpec(kernel, bw)


def resolve_bandwidth(
    x: torch.Tensor, y: torch.Tensor, kernel: str = "rbf", bandwidth: Bandwidth = "median"
) -> Tuple[float, ...]:
    """The bandwidths ``mmd(x, y, kernel, bandwidth)`` uses, as a tuple of floats
    (sigma for rbf, c for imq): the given ones, or the median heuristic's."""
    check_kernel(kernel)
    check_pair(x, y)
    with exact_float_math(x.device):
        a, b, _ = prepared_pair(x, y)
        return kernel_for(kernel, bandwidth, a, b).scales


def weights(n: int, m: int, estimator: str, k0: float) -> Tuple[Tuple[Tuple[float, float], Tuple[float, float]], float]:
    """(W, const) with MMD^2 = sum_gh W[g][h] S[g][h] + const, where S are the
    block sums of the pooled kernel matrix over ordered pairs (diagonals included)."""
    if estimator == "biased":
        axx, ayy, const = 1.0 / (n * n), 1.0 / (m * m), 0.0
    else:
        axx, ayy = 1.0 / (n * (n - 1)), 1.0 / (m * (m - 1))
        const = -k0 * (n * axx + m * ayy)  # the diagonals k(z, z) = k0 are not part of the U-statistic
    axy = -1.0 / (n * m)
    return ((axx, axy), (axy, ayy)), const


class _MMDSquared(torch.autograd.Function):
    """MMD^2 of a prepared pair; the gradient is computed in the forward sweep."""

    @staticmethod
    def forward(ctx, a, b, spec, estimator, block, need_grad):
        n, m = a.shape[0], b.shape[0]
        w, const = weights(n, m, estimator, spec.k0)
        res = kernel_sweep(
            torch.cat([a, b]), (n, m), spec, block=block, sum_weights=w,
            grad_weights=w if need_grad else None,
        )
        value = res.total + const if const else res.total
        if estimator == "biased":
            # >= 0 exactly for a PD kernel; a negative value is rounding, and the
            # clamped function has zero gradient there.
            keep = value >= 0
            value = value.clamp_min(0.0)
        value = value.to(a.dtype)
        if need_grad:
            g = res.grad
            if estimator == "biased":
                g = g * keep.to(g.dtype)
            ctx.save_for_backward(g[:n], g[n:])
        return value

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        if not ctx.saved_tensors:
            raise RuntimeError("mmd: no gradient was prepared; inputs did not require grad when it ran")
        ga, gb = ctx.saved_tensors
        return grad_out * ga, grad_out * gb, None, None, None, None


def mmd_prepared(a, b, identical, spec: KernelSpec, estimator: str, block: Optional[int]) -> torch.Tensor:
    if identical and estimator == "biased":
        # Same multiset: the V-statistic and its gradient are exactly 0.
        return (a * 0).sum() + (b * 0).sum()
    need_grad = torch.is_grad_enabled() and (a.requires_grad or b.requires_grad)
    return _MMDSquared.apply(a, b, spec, estimator, block, need_grad)


def _mmd_small(x: torch.Tensor, y: torch.Tensor, kernel: str, bw, estimator: str) -> torch.Tensor:
    """``mmd`` on the fused path (checked inputs, up to ``fused_max_rows`` pooled rows), under
    IEEE float32 matmul; finiteness is checked through the canonical keys (same errors)."""
    dtype = compute_dtype(x, y)
    pair = canonical_pooled(x, y, dtype)
    if pair.identical and estimator == "biased":
        return (x.to(dtype) * 0).sum() + (y.to(dtype) * 0).sum()  # same multiset: exactly 0, zero gradient
    need_grad = torch.is_grad_enabled() and (x.requires_grad or y.requires_grad)
    return mmd_fused(x, y, pair, kernel, bw, estimator, need_grad)


def mmd(
    x: torch.Tensor,
    y: torch.Tensor,
    kernel: str = "rbf",
    bandwidth: Bandwidth = "median",
    estimator: str = "biased",
    *,
    block_size: Optional[int] = None,
) -> torch.Tensor:
    """MMD^2 between samples x (n, d) and y (m, d) as a 0-dim tensor (see module doc).

    kernel: "rbf" (bandwidth = sigma) or "imq" (bandwidth = c); bandwidth: a
    positive number, a sequence of them (sum of kernels), or "median".
    estimator: "biased" (V-statistic, >= 0) or "unbiased" (U-statistic; needs
    n, m >= 2). block_size: rows per kernel tile (None: 1024 on CPU, 4096 on
    CUDA); it changes only rounding. Result dtype float32 (float64 if an
    input is float64), also under autocast; differentiable w.r.t. x and y
    (once: no double backward).
    """
    check_kernel(kernel)
    check_estimator(estimator)
    bw = parse_bandwidth(bandwidth)  # fail early on a bad value
    n_min = 2 if estimator == "unbiased" else 1
    check_pair(x, y, n_min, finite=False)
    rows = x.shape[0] + y.shape[0]
    if rows <= min(block_size or rows, fused_max_rows(x.device)):
        if kernel == "rbf" and estimator == "biased" and native.serves(x, y):
            # the C kernel (see native); the median heuristic's scale as the fused path selects it
            scales = bw if bw != "median" else run_exact(x.device, median_scales_small, x, y, kernel)
            out = native.mmd_rbf_biased(x, y, scales) if scales is not None else None
            if out is not None:  # None: the same multiset, or the kernel declined
                return out
        return run_exact(x.device, _mmd_small, x, y, kernel, bw, estimator)
    check_finite(x, "x")
    check_finite(y, "y")
    with exact_float_math(x.device):
        a, b, identical = prepared_pair(x, y)
        spec = kernel_for(kernel, bandwidth, a, b)
        return mmd_prepared(a, b, identical, spec, estimator, block_size)
