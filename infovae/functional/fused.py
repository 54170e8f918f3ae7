"""The fused small-sample path of ``mmd``: the whole pooled kernel matrix at once, in
as few tensor operations as the guarantees allow.

At the batch sizes training uses (64-256 rows per sample) a call costs its number
of operations more than its arithmetic. This path keeps every guarantee of the
tiled one (canonical order: bitwise symmetry, permutation invariance, exactly 0
for the same multiset; centring: translation safety; IEEE float32 matmuls; the
gradient formed in the forward pass) and spends, for one rbf bandwidth:

- one pooled key product, one sort, one read-back (``distances.canonical_pooled``,
  which also proves the inputs finite) and one gather into canonical order;
- the centred squared distances D in one ``addmm`` (``distances.expanded_sq_dists``),
  which the median heuristic selects from and which then becomes the kernel in place;
- for the biased rbf estimator with a sum of bandwidths (the default), whose weights
  are W = w w^T (w_i = 1/n on one sample's rows, -1/m on the other's), one product of
  the stacked (S N, N) kernel matrices (or of E and K, combined first) with a right-hand
  side that carries the weights: [4 c w o z, 4 c w, w] gives the gradient, the row
  weights and K w, whose float64 dot with w is the value; no (N, N) weight matrix;
- otherwise (one bandwidth, imq, unbiased) one product (K o W) [z, 1] with the cached (N, N)
  block-weight matrix W of the estimator: its last column gives the weighted row
  sums (the value, added in float64), the rest the gradient;
- one scatter of the gradient rows back to the callers' order.

Shapes: x (n, d), y (m, d), pooled N = n + m rows; used up to ``fused_max_rows``.
"""
from __future__ import annotations

import functools
import math
from typing import Optional, Tuple, Union

import torch

from .distances import (
    _LOG2E,
    canonical_pooled,
    centre_rows,
    PooledPair,
    exact_median_sq_dist,
    expanded_sq_dists,
    order_stats_of,
    sym_mm,
)

__all__ = ["fused_max_rows", "median_scales_small", "mmd_fused", "FUSED_MAX_ROWS"]

# Pooled rows up to which ``mmd`` takes the fused path: one (N, N) matrix (plus the
# cached weights) against the tiles' (block, block) buffers; above it the tiled sweep,
# which skips the lower triangle, is as fast (measured on CPU at N = 1024).
FUSED_MAX_ROWS = {"cpu": 512, "cuda": 512}


def fused_max_rows(device: torch.device) -> int:
    return FUSED_MAX_ROWS.get(device.type, 512)


@functools.lru_cache(maxsize=8)
def block_weights(n: int, m: int, estimator: str, dtype: torch.dtype, device: torch.device) -> Tuple[torch.Tensor, float]:
    """(W, const) with MMD^2 = sum_ij W_ij K_ij + const over the pooled (n + m)^2 kernel
    matrix, diagonals included (``mmd.weights`` expanded to entries). W (N, N) in dtype;
    cached (a function of the sizes and the estimator only)."""
    if estimator == "biased":
        axx, ayy, const = 1.0 / (n * n), 1.0 / (m * m), 0.0
    else:
        axx, ayy = 1.0 / (n * (n - 1)), 1.0 / (m * (m - 1))
        const = -(n * axx + m * ayy)  # times k0: the diagonals k(z, z) are not part of the U-statistic
    axy = -1.0 / (n * m)
    w = torch.empty(n + m, n + m, dtype=dtype, device=device)
    w[:n, :n] = axx
    w[n:, n:] = ayy
    w[:n, n:] = axy
    w[n:, :n] = axy
    return w, const


def _median_scale(kernel: str, zs: torch.Tensor, d2: torch.Tensor, sq: torch.Tensor) -> float:
    """The median heuristic's bandwidth on the pooled canonical rows zs (N <= 1024, so no
    striding), from their distance matrix d2: the same value ``mmd.resolve_bandwidth``
    gives (``distances.median_sq_dist``: same centring, same matrix, same selection)."""
    k = d2.shape[0]
    fast = order_stats_of(d2, sq, (), ((k * (k - 1) // 2 - 1) // 2,)) if k > 1 else None
    med = fast[1][0] if fast is not None else (exact_median_sq_dist(zs) if k > 1 else 1.0)
    return math.sqrt(med) if kernel == "rbf" else med


def median_scales_small(x: torch.Tensor, y: torch.Tensor, kernel: str) -> Optional[Tuple[float]]:
    """(scale,): the median heuristic's bandwidth for the pair x, y (checked, on the fused path),
    exactly as the fused path and ``mmd.resolve_bandwidth`` compute it (same canonical rows, same
    distance matrix, same selection); None for the same multiset. For callers that hand the
    scale to another evaluator of the same estimate (``native``), so that an explicit bandwidth
    equal to the heuristic's still gives the same bits. Under ``run_exact``."""
    dtype = torch.float64 if torch.float64 in (x.dtype, y.dtype) else torch.float32
    pair = canonical_pooled(x, y, dtype)
    if pair.identical:
        return None
    d2, sq = expanded_sq_dists(centre_rows(pair.z))
    return (_median_scale(kernel, pair.z, d2, sq),)


def _kernel_in_place(d2: torch.Tensor, kernel: str, scales: Tuple[float, ...], want_e: bool):
    """(K, E, e_factor) from the distance matrix d2 (consumed: K may be d2 itself);
    E * e_factor = -dk/dr, the gradient's weight (None unless want_e). rbf by ``exp2`` with
    log2(e) folded into the scale: on the AVX-512 CPU of issue 13's round 3, exp2 of a
    128 x 128 float32 matrix took 5.3 us against 14.0 us for exp (one thread, quiet)."""
    if len(scales) == 1:
        s = scales[0]
        if kernel == "rbf":
            k = d2.mul_(-_LOG2E / (2.0 * s * s)).exp2_()
            return k, k, 1.0 / (2.0 * s * s)
        k = d2.mul_(1.0 / s).add_(1.0).reciprocal_()
        return k, (k * k if want_e else None), 1.0 / s
    k = e = None
    for s in scales:
        if kernel == "rbf":
            t = torch.mul(d2, -_LOG2E / (2.0 * s * s)).exp2_()
            w = 1.0 / (2.0 * s * s)
            if want_e:
                e = t * w if e is None else e.add_(t, alpha=w)
        else:
            t = torch.mul(d2, 1.0 / s).add_(1.0).reciprocal_()
            w = 1.0 / s
            if want_e:
                e = (t * t).mul_(w) if e is None else e.addcmul_(t, t, value=w)
        k = t if k is None else k.add_(t)
    return k, e, 1.0


# Size N (d + 2) of the right-hand side up to which the rbf kernels of a sum of bandwidths are
# multiplied as one stacked (S N, N) matrix (each sigma with its own right-hand side) instead
# of being combined into E and K first: stacking costs S times the multiply-adds and saves the
# combination and a product. On CPU (one thread, three sigmas) stacking was 5-25% faster below
# this size (N = 64-512, d = 2-32) and level or 4-15% slower above it.
_STACKED_MAX_WORK = 4096


@functools.lru_cache(maxsize=16)
def _sample_weights(n: int, m: int, dtype: torch.dtype, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    """(w, w64) with the biased estimator's weights W = w w^T (``block_weights``): w_i = 1/n on
    the first sample's rows, -1/m on the second's; w as an (N, 1) column of dtype and as an
    (N,) float64 vector. Cached, read only."""
    w64 = torch.cat([torch.full((n,), 1.0 / n, dtype=torch.float64), torch.full((m,), -1.0 / m, dtype=torch.float64)])
    w64 = w64.to(device)
    return w64.to(dtype).unsqueeze(1), w64


@functools.lru_cache(maxsize=32)
def _stacked_rhs_weights(n: int, m: int, d: int, factors: Tuple[float, ...], dtype: torch.dtype,
                         device: torch.device) -> torch.Tensor:
    """(S, N, d + 2): for sigma s, columns 0..d hold 4 c_s w_i (the gradient's weights, c_s =
    1 / (2 sigma_s^2)) and column d + 1 holds w_i (the value's). Cached, read only."""
    w, _ = _sample_weights(n, m, dtype, device)
    c = torch.tensor(factors, dtype=dtype, device=device).view(-1, 1, 1)
    out = (w * 4.0 * c).expand(len(factors), n + m, d + 2).clone()
    out[:, :, d + 1 :] = w
    return out


@functools.lru_cache(maxsize=32)
def _rbf_sum_tensors(factors: Tuple[float, ...], dtype: torch.dtype, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    """(coef (S, 1, 1) = -log2(e) c_s, comb (2, S) = [[c_s], [1]]) for the rbf kernels with
    factors c_s = 1 / (2 sigma_s^2). Cached, read only."""
    c = torch.tensor(factors, dtype=dtype, device=device)
    return (c * -_LOG2E).view(-1, 1, 1), torch.stack([c, torch.ones_like(c)])


@functools.lru_cache(maxsize=16)
def _ones_columns(n: int, k: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A cached (n, k) block of ones (read only: it is only ever concatenated)."""
    return torch.ones(n, k, dtype=dtype, device=device)


def _rank_one_rbf(zc: torch.Tensor, d2: torch.Tensor, n_first: int, scales: Tuple[float, ...],
                  need_grad: bool) -> Tuple[float, Optional[torch.Tensor]]:
    """(sum_ij W_ij K_ij, g) for the biased estimator's W = w w^T and the rbf kernel (a sum over
    two or more ``scales``) of the centred pooled rows zc (N, d), from their distance matrix d2 (consumed);
    g (N, d) is the gradient of that sum w.r.t. the rows, g_i = 4 w_i sum_j w_j E_ij (z_j - z_i)
    with E = sum_s c_s K_s, c_s = 1 / (2 sigma_s^2). The weights ride in the right-hand side of
    one product (no (N, N) weight matrix): per sigma, [4 c_s w o zc, 4 c_s w, w] for the gradient,
    the row weights and the value; the sigmas either as one stacked (S N, N) product (narrow d)
    or combined into E and K by one product first."""
    n_total, d = zc.shape
    w, w64 = _sample_weights(n_first, n_total - n_first, zc.dtype, zc.device)
    factors = tuple(1.0 / (2.0 * s * s) for s in scales)
    if n_total * (d + 2) <= _STACKED_MAX_WORK:
        coef, _ = _rbf_sum_tensors(factors, zc.dtype, zc.device)
        t = torch.mul(d2, coef).exp2_()  # (S, N, N): K_s
        wts = _stacked_rhs_weights(n_first, n_total - n_first, d, factors, zc.dtype, zc.device)
        rhs = torch.mul(torch.cat([zc, _ones_columns(n_total, 2, zc.dtype, zc.device)], 1), wts)  # (S, N, d + 2)
        # sum_s K_s rhs_s as [K_1 .. K_S] (N, S N) @ [rhs_1; ..; rhs_S], with K_s^T for K_s (symmetric
        # up to the rounding of its expanded form) so that the narrow side is on the left
        p = torch.mm(rhs.view(-1, d + 2).T, t.view(-1, n_total)).T  # (N, d + 2), column-major
        total = float(torch.dot(p[:, d + 1].double(), w64))
    else:
        coef, comb = _rbf_sum_tensors(factors, zc.dtype, zc.device)
        t = torch.mul(d2, coef).exp2_()
        ek = torch.mm(comb, t.view(len(scales), -1))  # (2, N^2): E and K
        e, k = ek[0].view(n_total, n_total), ek[1].view(n_total, n_total)
        rhs = torch.cat([zc, _ones_columns(n_total, 1, zc.dtype, zc.device)], 1).mul_(w * 4.0)
        p = sym_mm(e, rhs)
        total = float(torch.dot(torch.mv(k, w.view(-1)).double(), w64))
    if not need_grad:
        return total, None  # the same product either way: the same value bits
    return total, torch.addcmul(p[:, :d], zc, p[:, d : d + 1], value=-1.0).mul_(w)


def fused_value_and_grad(zs: torch.Tensor, n_first: int, kernel: str, bandwidth: Union[str, Tuple[float, ...]],
                         estimator: str, need_grad: bool) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """(MMD^2 as a 0-dim tensor of zs's dtype, its gradient w.r.t. the rows of zs or None)
    for the pooled canonical rows zs (N, d), the first ``n_first`` of them one sample."""
    n_total, d = zs.shape
    zc = centre_rows(zs)  # translation safety
    # The same distance matrix with or without the median heuristic (which selects from
    # it), so that an explicit bandwidth equal to the heuristic's gives the same bits.
    d2, sq = expanded_sq_dists(zc)
    scales = (_median_scale(kernel, zs, d2, sq),) if bandwidth == "median" else bandwidth
    if kernel == "rbf" and estimator == "biased" and len(scales) > 1:
        # (one sigma: the weighted route is as fast or faster up to N = 256, measured)
        total, g = _rank_one_rbf(zc, d2, n_first, scales, need_grad)
    else:
        total, g = _weighted_value_and_grad(zc, d2, n_first, kernel, scales, estimator, need_grad)
    if estimator == "biased" and not total >= 0.0:
        # >= 0 exactly for a PD kernel; a negative value is rounding, and the clamped
        # function has zero gradient there.
        total = 0.0
        if g is not None:
            g.zero_()
    return torch.scalar_tensor(total, dtype=zs.dtype, device=zs.device), g


def _weighted_value_and_grad(zc: torch.Tensor, d2: torch.Tensor, n_first: int, kernel: str, scales: Tuple[float, ...],
                             estimator: str, need_grad: bool) -> Tuple[float, Optional[torch.Tensor]]:
    """(sum_ij W_ij K_ij + const, its gradient or None) with the (N, N) block-weight matrix W of
    the estimator (``block_weights``): the route of imq kernels and of the unbiased estimator."""
    n_total, d = zc.shape
    k, e, efac = _kernel_in_place(d2, kernel, scales, need_grad)
    w, const = block_weights(n_first, n_total - n_first, estimator, zc.dtype, zc.device)
    g = None
    if need_grad:
        aug = torch.cat([zc, _ones_columns(n_total, 1, zc.dtype, zc.device)], 1)
        if e is k:
            # (K o W) [z, 1]: the gradient and, in the last column, the (float32) row sums
            p = sym_mm(k.mul_(w), aug)
            total = p[:, d].sum(dtype=torch.float64)
        else:
            total = torch.mul(k, w).sum(dtype=torch.float64)
            p = sym_mm(e.mul_(w), aug)
        # d/dz_i sum_ij W_ij k_ij = 4 efac sum_j W_ij E_ij (z_j - z_i)
        g = torch.addcmul(p[:, :d], zc, p[:, d:], value=-1.0).mul_(4.0 * efac)
    else:
        total = k.mul_(w).sum(dtype=torch.float64)
    # Added in float64; the value is read back (one scalar) so that the constant, the clamp
    # and the zero gradient of the clamp cost no tensor operations.
    return float(total) + const * len(scales), g


class _FusedMMD(torch.autograd.Function):
    """MMD^2 of (x, y) through the fused path; the gradient is formed in the forward pass
    and scattered back to the rows of x and y."""

    @staticmethod
    def forward(ctx, x, y, zs, src, n_first, kernel, bandwidth, estimator, need_grad):
        value, g = fused_value_and_grad(zs, n_first, kernel, bandwidth, estimator, need_grad)
        if need_grad:
            # Row i of g belongs to row src[i] of cat([x, y]).
            ctx.n = x.shape[0]
            # contiguous whatever the layout of g (a transposed product gives a column-major g):
            # the gradients handed to autograd (and to collectives behind it) are plain rows
            ctx.save_for_backward(torch.empty(g.shape, dtype=g.dtype, device=g.device).index_copy_(0, src, g))
        return value

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        if not ctx.saved_tensors:
            raise RuntimeError("mmd: no gradient was prepared; inputs did not require grad when it ran")
        (g,) = ctx.saved_tensors
        g = g * grad_out
        return g[: ctx.n], g[ctx.n :], None, None, None, None, None, None, None


def mmd_fused(x: torch.Tensor, y: torch.Tensor, pair: PooledPair, kernel: str,
              bandwidth: Union[str, Tuple[float, ...]], estimator: str, need_grad: bool) -> torch.Tensor:
    """MMD^2 of x, y (checked, not the same multiset under the biased estimator) through
    the fused path; ``pair`` = ``distances.canonical_pooled(x, y, dtype)``."""
    return _FusedMMD.apply(x, y, pair.z, pair.src, pair.n_first, kernel, bandwidth, estimator, need_grad)
