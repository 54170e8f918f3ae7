"""The Stein variational gradient direction (SVGD, Liu and Wang 2016).

For particles z_1..z_n and the target's score s(z) = grad_z log p(z),

    phi(z_i) = 1/n sum_j [ k(z_j, z_i) s(z_j) + grad_{z_j} k(z_j, z_i) ]

is the direction in the kernel's RKHS that decreases KL(q || p) fastest;
moving every particle by +eps * phi brings the particles towards p.
Kernel: rbf k = exp(-||a - b||^2 / (2 sigma^2)) (a sequence of sigmas means
their sum), so grad_{z_j} k(z_j, z_i) = k_ij (z_i - z_j) / sigma^2: the
second term pushes particles apart.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch

from .distances import (
    _LOG2E,
    KernelSpec,
    _mean_weights,
    centre_rows,
    check_finite,
    check_samples,
    clamp_with_zero_diagonal_,
    compute_dtype,
    dense_max_rows,
    exact_float_math,
    expanded_sq_dists,
    kernel_sweep,
    narrow_rhs,
    order_stats_of,
    order_stats_sq_dists,
    pairwise_sq_dists,
    run_exact,
)
from . import native
from .mmd import Bandwidth, parse_bandwidth

__all__ = ["stein_direction", "svgd_median_bandwidth"]

_MEDIAN_MAX_POINTS = 2048
# Rows from which the direction's product runs transposed for narrow d (see
# ``_dense_direction``): below, the copy back into a contiguous result costs more than the
# faster product saves (measured on CPU at 64 rows).
_TRANSPOSED_MIN_ROWS = 128


def _svgd_ranks(total: int) -> Tuple[int, ...]:
    """0-based ranks of numpy's median among ``total`` values: the middle one, or the two
    middle ones (their mean is the median) for an even count."""
    return (total // 2,) if total % 2 else (total // 2 - 1, total // 2)


def _svgd_median(z: torch.Tensor, n: int, expanded=None):
    """(sigma, D): the SVGD median bandwidth of z's rows (see ``svgd_median_bandwidth``)
    and, when the fast route applied to z itself, the expanded-form distance matrix it
    used (reusable for the kernel), else None. ``expanded``: (D, sq, float(sq.max())) from
    ``expanded_sq_dists(centre_rows(z))`` when the caller already has it (n <= 2048)."""
    with torch.no_grad():
        sub = z
        if z.shape[0] > _MEDIAN_MAX_POINTS:
            sub = z[torch.linspace(0, z.shape[0] - 1, _MEDIAN_MAX_POINTS, device=z.device).round().long()]
        k = sub.shape[0]
        ranks = _svgd_ranks(k * k)
        if k <= 1:
            fast = None
        elif expanded is not None and sub is z:
            fast = order_stats_of(expanded[0], expanded[1], ranks, sq_max=expanded[2])
        else:
            fast = order_stats_sq_dists(sub, ranks)
        if fast is not None:
            vals, _, d2 = fast
            med = sum(vals) / len(vals)
            return math.sqrt(med / (2.0 * math.log(n + 1.0))), (d2 if sub is z else None)
        iu = torch.triu_indices(k, k, offset=1, device=z.device)
        pairs = pairwise_sq_dists(sub)[iu[0], iu[1]]
        # The full matrix sorted: k zeros (the diagonal), then every pair value twice.
        vals = [0.0 if r < k else float(torch.kthvalue(pairs, (r - k) // 2 + 1).values) for r in ranks]
        med = sum(vals) / len(vals)
        if med <= 0.0:
            pos = pairs[pairs > 0]
            if pos.numel() == 0:
                return 1.0, None
            med = float(torch.quantile(pos.double(), 0.5, interpolation="midpoint"))
    return math.sqrt(med / (2.0 * math.log(n + 1.0))), None


def svgd_median_bandwidth(z: torch.Tensor) -> float:
    """sigma with sigma^2 = median(r) / (2 log(n + 1)), as the SVGD reference code.

    r are the squared distances over the full n x n matrix (its zero diagonal
    and both triangles included) and the median of an even count is the mean
    of the two middle values (numpy's). For n > 2048 the median is taken over
    2048 evenly strided rows. When that median is 0 (more than half of the
    entries coincide) the median of the positive distances is used; sigma = 1
    when all rows coincide. No gradient. The selection runs on expanded-form
    distances (``distances.order_stats_sq_dists``: one exact selection, relative
    error below ~2.5e-4 in float32, typically ~1e-6) unless the median is small
    against the data's spread, then on ``pairwise_sq_dists``. Where the C kernel serves
    (``native.serves_stein``: float32 CPU rows, n^2 d <= ``native.STEIN_MAX_WORK``) it selects from
    float64 direct-form distances instead, the sigma that ``stein_direction`` then uses.
    """
    if native.serves_stein(z, None) and z.shape[0] <= _MEDIAN_MAX_POINTS:
        sigma = native.stein_median_sigma(z)  # what stein_direction's C kernel uses (see native)
        if sigma is not None:
            return sigma
    return _svgd_median(z, z.shape[0])[0]


def _fixed_exponent(zc: torch.Tensor, sq: torch.Tensor, c: float) -> torch.Tensor:
    """The (n, n) base-2 exponent c r_ij = c (sq_i + sq_j - 2 z_i.z_j) of centred rows zc (n, d) with
    squared norms sq (n,), from one Gram product with the scale folded in, clamped at r >= 0 and
    exactly 0 on the diagonal."""
    return clamp_with_zero_diagonal_(torch.addmm(sq.unsqueeze(1), zc, zc.T, beta=c, alpha=-2.0 * c).add_(sq, alpha=c), upper=True)


def _direction_from_exponent(zc: torch.Tensor, sf: torch.Tensor, inv: float, exponent: torch.Tensor) -> torch.Tensor:
    """phi (n, d), contiguous, from the (n, n) base-2 exponent of the kernel (consumed: K = 2^exponent is
    built in place): phi = (K (s - z inv) + z (K 1) inv) / n in one ``addmm`` (the scale 1/n and the
    repulsion z (K 1) inv ride in its alpha, beta and bias). For narrow d and n >=
    ``_TRANSPOSED_MIN_ROWS`` the product runs transposed (``distances.narrow_rhs``), with K^T for both
    K-terms (K is symmetric up to the rounding of its expanded form). exp2, not exp: 2.6x faster on an
    AVX-512 CPU (RESULTS, issue 13 round 3)."""
    n, d = zc.shape
    k = exponent.exp2_()
    rhs = torch.add(sf, zc, alpha=-inv)
    if n >= _TRANSPOSED_MIN_ROWS and narrow_rhs(d, zc.device):
        # phi^T = (rhs^T K + inv z^T diag(K^T 1)) / n, transposed back into a contiguous (n, d)
        return torch.addmm(zc.T * k.sum(0), rhs.T, k, beta=inv / n, alpha=1.0 / n).T.contiguous()
    return torch.addmm(zc * k.sum(1, keepdim=True), k, rhs, beta=inv / n, alpha=1.0 / n)


def _dense_direction(zc: torch.Tensor, sf: torch.Tensor, inv: float, d2: Optional[torch.Tensor]) -> torch.Tensor:
    """phi (n, d) from the whole kernel matrix at once, K = exp(-r inv / 2), built in place of
    ``d2`` (the median's expanded-form distances) when given, else from ``_fixed_exponent``."""
    c = -_LOG2E * 0.5 * inv
    exponent = _fixed_exponent(zc, torch.linalg.vecdot(zc, zc), c) if d2 is None else d2.mul_(c)
    return _direction_from_exponent(zc, sf, inv, exponent)


_PLAIN_DTYPES = (torch.float32, torch.float64)


def _plain_pair(z, score) -> bool:
    """True for the common case that needs no conversion and passes every input check of
    ``stein_direction``: two tensors of one float32 / float64 dtype, one device and the
    same (n, d) shape, n, d >= 1."""
    return (isinstance(z, torch.Tensor) and isinstance(score, torch.Tensor) and z.dim() == 2
            and z.shape == score.shape and z.dtype in _PLAIN_DTYPES and score.dtype is z.dtype
            and z.shape[0] > 0 and z.shape[1] > 0 and score.device == z.device)


def _one_sigma(bandwidth) -> Optional[float]:
    """The bandwidth as one positive finite float when it is one (a float, or a one-element
    tuple of a float as the plugins' option parser gives), else None (the general path
    parses and checks it)."""
    if type(bandwidth) is tuple and len(bandwidth) == 1:
        bandwidth = bandwidth[0]
    return bandwidth if type(bandwidth) is float and 0.0 < bandwidth < math.inf else None


def _small_direction(z: torch.Tensor, score: torch.Tensor, sigma: Optional[float]) -> Optional[torch.Tensor]:
    """``stein_direction`` for one fixed sigma, or the median heuristic (sigma None), at
    n <= ``dense_max_rows`` rows, inputs detached and passing ``_plain_pair``: the arithmetic
    of the general path (same centring, same distance matrix and selection for the median,
    same exponent and product as ``_dense_direction``), written out in one function
    (``distances.run_exact`` for the precision guard), because at 64-128 rows every Python
    call costs a measurable share. None where the general path must run instead: a median
    the expanded form cannot be trusted with (coinciding rows, n = 1)."""
    out = run_exact(z.device, _small_direction_body, z, score, sigma)
    if out is not None and not math.isfinite(float(out.sum())):  # see the end of stein_direction
        check_finite(z, "z")
        check_finite(score, "score")
    return out


def _small_direction_body(z: torch.Tensor, score: torch.Tensor, sigma: Optional[float]) -> Optional[torch.Tensor]:
    """The arithmetic of ``_small_direction`` (under IEEE float32 matmul, autocast off)."""
    n = z.shape[0]
    zc = z - torch.mv(z.T, _mean_weights(n, z.dtype, z.device))  # = centre_rows(z)
    sq = torch.linalg.vecdot(zc, zc)
    if sigma is not None:
        inv = 1.0 / (sigma * sigma)
        return _direction_from_exponent(zc, score, inv, _fixed_exponent(zc, sq, -_LOG2E * 0.5 * inv))
    # = expanded_sq_dists(zc) and _svgd_median's selection on it
    d2 = clamp_with_zero_diagonal_(torch.addmm(sq.unsqueeze(1), zc, zc.T, alpha=-2.0).add_(sq))
    sq_max = float(sq.max())
    if not math.isfinite(sq_max):
        check_finite(z, "z")
    fast = order_stats_of(d2, sq, _svgd_ranks(n * n), sq_max=sq_max) if n > 1 else None
    if fast is None:
        return None
    sigma = math.sqrt(sum(fast[0]) / len(fast[0]) / (2.0 * math.log(n + 1.0)))
    inv = 1.0 / (sigma * sigma)
    return _direction_from_exponent(zc, score, inv, d2.mul_(-_LOG2E * 0.5 * inv))


def stein_direction(
    z: torch.Tensor,
    score: torch.Tensor,
    bandwidth: Bandwidth = "median",
    *,
    block_size: Optional[int] = None,
) -> torch.Tensor:
    """phi(z_i) for particles z (n, d) with target scores ``score`` (n, d) at z.

    bandwidth: sigma of the rbf kernel (a number or a sequence: sum of
    kernels) or "median" (``svgd_median_bandwidth``). Returns (n, d) in float32
    (float64 if an input is float64), detached: it is meant to be used under
    a stop-gradient. Memory: one n x n matrix up to 512 rows (fixed bandwidth)
    or 2048 rows (median: the median's distance matrix becomes the kernel),
    else O(n d + block^2) via the tiled kernel sweep.
    """
    if block_size is None and native.serves_stein(z, score):
        bw = parse_bandwidth(bandwidth)  # (the general path's errors for a bad one)
        if bw == "median" or len(bw) == 1:
            out = native.stein_rbf(z, score, None if bw == "median" else bw[0])  # the C kernel (None: it declined)
            if out is not None:
                return out
    if block_size is None and _plain_pair(z, score) and z.shape[0] <= dense_max_rows(z.device):
        sigma = _one_sigma(bandwidth)
        if sigma is not None or (type(bandwidth) is str and bandwidth == "median"):
            out = _small_direction(z.detach(), score.detach(), sigma)
            if out is not None:
                return out
    check_samples(z, "z", finite=False)
    check_samples(score, "score", finite=False)
    if score.shape != z.shape:
        raise ValueError(f"score must have the shape of z {tuple(z.shape)}, got {tuple(score.shape)}")
    device = z.device
    if score.device != device:
        raise ValueError(f"z and score must be on the same device, got {device} and {score.device}")
    bw = parse_bandwidth(bandwidth)
    dtype = compute_dtype(z, score)
    n = z.shape[0]
    # No grad mode needed: every tensor below derives from detached inputs (the tiled sweep
    # runs under no_grad itself); entering it cost a measurable share at small n.
    with exact_float_math(device):
        zf = z.detach()
        sf = score.detach()
        if zf.dtype is not dtype or sf.dtype is not dtype:
            zf, sf = zf.to(dtype), sf.to(dtype)
        zc = centre_rows(zf)  # the kernel and the repulsion depend on differences only
        d2 = None
        if bw == "median":
            if n <= _MEDIAN_MAX_POINTS:
                # One distance matrix for the median and (in place) the kernel; its row norms
                # prove z finite before the selection (score is checked through the result).
                d2, sq = expanded_sq_dists(zc)
                sq_max = float(sq.max())
                if not math.isfinite(sq_max):
                    check_finite(zf, "z")
                sigma, d2 = _svgd_median(zf, n, (d2, sq, sq_max))
            else:
                check_finite(zf, "z")  # before the selection; score is checked through the result
                sigma, d2 = _svgd_median(zf, n)
            scales: Tuple[float, ...] = (sigma,)
        else:
            scales = bw
        if len(scales) == 1:
            # sum_j k_ij [s_j + (z_i - z_j) / sigma^2] = (K [s - z / sigma^2])_i + z_i (K 1)_i / sigma^2:
            # one product with a (d + 1)-column matrix (per tile).
            inv = 1.0 / (scales[0] * scales[0])
            if d2 is not None or n <= min(block_size or n, dense_max_rows(device)):
                out = _dense_direction(zc, sf, inv, d2)
            else:
                rhs = torch.cat([sf - zc * inv, torch.ones_like(zc[:, :1])], 1)
                spec = KernelSpec("rbf", scales)
                prod = kernel_sweep(zc, (n,), spec, block=block_size, rhs=rhs, centred=True).prod
                out = (prod[:, :-1] + zc * (prod[:, -1:] * inv)) / n
        else:
            # A sum of kernels: one sweep gives K @ score and, with unit weights, the gradient
            # of sum_ij k(z_i, z_j), which is -2 sum_j grad_{z_j} k(z_j, z_i).
            spec = KernelSpec("rbf", scales)
            res = kernel_sweep(zc, (n,), spec, block=block_size, grad_weights=((1.0,),), rhs=sf, centred=True)
            out = (res.prod - 0.5 * res.grad) / n
    # Non-finite inputs make the result non-finite (NaN / inf reach every row through the
    # kernel products); checking the (n, d) result instead of both inputs first saves two
    # reductions, and no result is returned either way.
    if not math.isfinite(float(out.sum())):
        check_finite(z, "z")
        check_finite(score, "score")
    return out
