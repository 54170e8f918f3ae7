"""Squared distances, exact float32 arithmetic, canonical row order, and the
tiled kernel engine that MMD, Stein and the permutation test share.

Shapes: x (n, d), y (m, d); z (N, d) a pooled sample. Everything runs on the
device of the inputs, in float32 (float64 inputs stay float64), with autocast
disabled and TF32 / bf16 matmul shortcuts turned off for the duration.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Tuple

import torch

from .selection import kth_smallest

__all__ = ["pairwise_sq_dists"]

_LOG2E = 1.0 / math.log(2.0)
# pairwise_sq_dists recomputes entries below this fraction of ||a||^2 + ||b||^2 directly.
_RECOMPUTE_BELOW = 2.0**-10
# Rows per tile of the kernel matrix. CPU: a 1024 x 1024 float32 tile (4 MiB)
# stays in cache between the Gram product, the exp and the two products of the
# gradient (measured best among 256..2048 on 2 cores); CUDA: 16.7M entries per
# tile to fill the device, 64 MiB per tile buffer (at most four: multi-scale
# kernels with a gradient). Not tuned on a GPU yet.
_DEFAULT_BLOCK = {"cpu": 1024, "cuda": 4096}


# ---------------------------------------------------------------------------
# arithmetic set-up
# ---------------------------------------------------------------------------
class exact_float_math:
    """Context manager: autocast off and IEEE float32 matmul on ``device`` (no TF32 on
    CUDA, no bf16 in oneDNN on CPU) for the duration; the previous settings are restored.

    Squared distances by the expanded form cancel; TF32's 10-bit mantissa
    would leave nothing of small distances. (A class rather than a generator-based
    context manager: entering and leaving it costs ~2 us instead of ~7 us, which
    matters for the fused small-sample paths.)
    """

    __slots__ = ("device", "_restore", "_autocast")

    def __init__(self, device: torch.device):
        self.device = device
        self._restore = None
        self._autocast = None

    def __enter__(self) -> None:
        device = self.device
        device_type = device.type
        access = _precision_access(device_type)
        if access is not None:
            getter, setter, name = access
            old = getter(name, "matmul")
            if old != "ieee":
                setter(name, "matmul", "ieee")
                self._restore = functools.partial(setter, name, "matmul", old)
        else:
            backend = _matmul_backend_for(device_type)
            if backend is not None:
                try:
                    old = backend.fp32_precision
                except (AttributeError, RuntimeError):  # torch before the fp32_precision API
                    if device_type == "cuda" and torch.backends.cuda.matmul.allow_tf32:
                        torch.backends.cuda.matmul.allow_tf32 = False
                        self._restore = functools.partial(setattr, torch.backends.cuda.matmul, "allow_tf32", True)
                else:
                    if old != "ieee":
                        backend.fp32_precision = "ieee"
                        self._restore = functools.partial(setattr, backend, "fp32_precision", old)
        if _autocast_enabled(device_type):
            try:
                self._autocast = torch.autocast(device_type=device_type, enabled=False)
                self._autocast.__enter__()
            except BaseException:
                self._autocast = None
                self._undo()
                raise

    def __exit__(self, *exc) -> bool:
        try:
            if self._autocast is not None:
                self._autocast.__exit__(*exc)
                self._autocast = None
        finally:
            restore, self._restore = self._restore, None
            if restore is not None:
                restore()
        return False

    def _undo(self) -> None:
        restore, self._restore = self._restore, None
        if restore is not None:
            restore()


def run_exact(device: torch.device, fn, *args):
    """``fn(*args)`` under ``exact_float_math(device)``, the common case (torch's C precision
    accessors present, autocast off) handled without the context manager object: a few us
    less per call, which the small-sample paths notice."""
    device_type = device.type
    access = _precision_access(device_type)
    if access is None or _autocast_enabled(device_type):
        with exact_float_math(device):
            return fn(*args)
    getter, setter, name = access
    old = getter(name, "matmul")
    if old == "ieee":
        return fn(*args)
    setter(name, "matmul", "ieee")
    try:
        return fn(*args)
    finally:
        setter(name, "matmul", old)


def _autocast_enabled(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4: no per-device query; assume it may be on
        return True


@functools.lru_cache(maxsize=8)
def _matmul_backend_for(device_type: str):
    if device_type == "cuda":
        return torch.backends.cuda.matmul
    if device_type == "cpu":
        mkldnn = getattr(torch.backends, "mkldnn", None)
        return getattr(mkldnn, "matmul", None)
    return None


@functools.lru_cache(maxsize=8)
def _precision_access(device_type: str):
    """(getter, setter, backend name) of the matmul fp32 precision of a device type through
    torch's own C accessors (what ``torch.backends.<backend>.matmul.fp32_precision`` calls,
    ~5x cheaper than the property): ``getter(name, "matmul")``, ``setter(name, "matmul",
    value)``; None where they are missing (then the property is used)."""
    name = {"cpu": "mkldnn", "cuda": "cuda"}.get(device_type)
    getter = getattr(torch._C, "_get_fp32_precision_getter", None)
    setter = getattr(torch._C, "_set_fp32_precision_setter", None)
    if name is None or getter is None or setter is None:
        return None
    try:
        getter(name, "matmul")
    except (RuntimeError, TypeError):
        return None
    return getter, setter, name


def _matmul_backend(device: torch.device):
    return _matmul_backend_for(device.type)


def compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float64 when any input is float64, else float32 (bf16 / fp16 are cast up)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def check_samples(x: torch.Tensor, name: str = "x", min_rows: int = 1, finite: bool = True) -> None:
    """Raise a clear error unless x is a floating (rows, d) tensor with finite values
    (finite=False: the caller checks finiteness itself, see ``check_finite``)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (rows, dim), got {type(x).__name__}")
    if x.dim() != 2:
        raise ValueError(f"{name} must have shape (rows, dim), got {tuple(x.shape)}; reshape to 2-D first")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got {x.dtype}; convert with .float()")
    if x.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} row(s), got {x.shape[0]}")
    if x.shape[1] < 1:
        raise ValueError(f"{name} has zero columns; samples need at least one dimension")
    if finite:
        check_finite(x, name)


def check_finite(x: torch.Tensor, name: str = "x") -> None:
    """ValueError naming x unless all its entries are finite."""
    # One reduction first: a finite sum proves every entry finite; only a non-finite sum
    # (NaN / inf present, or an overflow of large finite values) needs the elementwise test.
    if not math.isfinite(float(x.detach().sum())) and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or infinite values")


def check_pair(x: torch.Tensor, y: torch.Tensor, min_rows: int = 1, finite: bool = True) -> None:
    """check_samples on both (finite=False: the caller checks finiteness), same dimension and device."""
    check_samples(x, "x", min_rows, finite)
    check_samples(y, "y", min_rows, finite)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension, got {x.shape[1]} and {y.shape[1]}")
    if x.device != y.device:
        raise ValueError(f"x and y must be on the same device, got {x.device} and {y.device}")


def default_block(device: torch.device) -> int:
    return _DEFAULT_BLOCK.get(device.type, 1024)


# ---------------------------------------------------------------------------
# pairwise squared distances (dense, differentiable)
# ---------------------------------------------------------------------------
def pairwise_sq_dists(x: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
    """||x_i - y_j||^2 as an (n, m) tensor; y defaults to x.

    Numerically safe in float32: both sets are centred on their shared mean
    before the expanded form ||a||^2 + ||b||^2 - 2 a.b (whose absolute error
    is a few eps (||a||^2 + ||b||^2)), matmuls run without TF32, the result is
    clamped at 0, and the entries where that error could exceed a few 1e-4
    relative (those below 2^-10 (||a||^2 + ||b||^2)) are recomputed directly
    as sum_k (a_k - b_k)^2 from the inputs: every entry is within a few 1e-4
    relative of the exact value, identical rows give exactly 0 and
    near-identical ones their correct small value. Differentiable; the gradient is finite
    (zero) at zero distance. bf16 / fp16 inputs give float32.
    """
    same = y is None or y is x
    y = x if y is None else y
    check_pair(x, y)
    dtype = compute_dtype(x, y)
    with exact_float_math(x.device):
        xf, yf = x.to(dtype), y.to(dtype)
        # The distances do not depend on the shift, so the mean carries no gradient.
        centre = torch.cat([xf, yf]).mean(0).detach() if not same else xf.mean(0).detach()
        xc = xf - centre
        yc = xc if same else yf - centre
        sx = xc.pow(2).sum(1)
        sy = sx if same else yc.pow(2).sum(1)
        scale = sx[:, None] + sy[None, :]
        d2 = torch.addmm(scale, xc, yc.T, beta=1.0, alpha=-2.0).clamp_min(0.0)
        tol = scale.detach() * _RECOMPUTE_BELOW
        ii, jj = torch.nonzero(d2.detach() <= tol, as_tuple=True)
        if ii.numel():
            # Differences of the inputs themselves: for near pairs they are exact
            # (Sterbenz), whereas the centred copies carry the centring's rounding.
            d2 = d2.index_put((ii, jj), _direct_sq_dists(xf, yf, ii, jj))
    return d2


def _direct_sq_dists(x, y, ii, jj, chunk: int = 1 << 18) -> torch.Tensor:
    """sum_k (x[ii] - y[jj])^2, in chunks of pairs to bound memory."""
    parts = [
        (x[ii[s : s + chunk]] - y[jj[s : s + chunk]]).pow(2).sum(1)
        for s in range(0, ii.numel(), chunk)
    ]
    return torch.cat(parts)


@functools.lru_cache(maxsize=16)
def _mean_weights(n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A cached (n,) vector of 1/n (read only)."""
    return torch.full((n,), 1.0 / n, dtype=dtype, device=device)


def centre_rows(z: torch.Tensor) -> torch.Tensor:
    """z (N, d) minus its column mean, taken as one product with cached weights 1/N (a
    cheaper call than ``mean``). Every row is shifted by the same vector, so differences
    of rows are those of z up to the subtraction's rounding (exact where Sterbenz applies);
    what the mean's own rounding changes is only the shift. No gradient."""
    return z - torch.mv(z.T, _mean_weights(z.shape[0], z.dtype, z.device))


# Rows up to which ``clamp_with_zero_diagonal_`` is one clamp against cached bound matrices
# instead of a clamp and a diagonal fill: one call fewer (1.6 against 3.1 us at 64 rows on
# CPU, 2.9 against 3.6 at 128); from 256 rows the bounds' memory traffic costs more.
_BOUNDS_MAX_ROWS = 128


@functools.lru_cache(maxsize=8)
def _zero_diagonal_bounds(n: int, upper: bool, dtype: torch.dtype, device: torch.device):
    """(lo, hi), each (n, n), read only: clamping to [lo, hi] is a clamp at 0 from below
    (upper=False: [0, inf) off the diagonal) or from above (upper=True: (-inf, 0]) and
    exactly 0 on the diagonal."""
    zeros = torch.zeros(n, n, dtype=dtype, device=device)
    open_side = torch.full((n, n), -math.inf if upper else math.inf, dtype=dtype, device=device)
    open_side.fill_diagonal_(0.0)
    return (open_side, zeros) if upper else (zeros, open_side)


def clamp_with_zero_diagonal_(x: torch.Tensor, upper: bool = False) -> torch.Tensor:
    """x (n, n) clamped in place at 0 from below (upper=False, x >= 0) or from above
    (upper=True, x <= 0), with its diagonal set to exactly 0; NaN stays NaN off the
    diagonal (and, up to ``_BOUNDS_MAX_ROWS`` rows, on it too). Returns x."""
    n = x.shape[0]
    if n <= _BOUNDS_MAX_ROWS:
        lo, hi = _zero_diagonal_bounds(n, upper, x.dtype, x.device)
        return x.clamp_(lo, hi)
    (x.clamp_max_(0.0) if upper else x.clamp_min_(0.0)).fill_diagonal_(0.0)
    return x


def expanded_sq_dists(zc: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(D, sq): ||z_i - z_j||^2 for centred rows zc (N, d) by the expanded form
    sq_i + sq_j - 2 z_i.z_j (one ``addmm`` and one broadcast add), clamped at 0, with an
    exactly zero diagonal, and sq = ||zc_i||^2 (N,). Every entry's absolute error is
    about (d + 2) eps * 2 max_i sq_i. No gradient; the caller owns the returned (N, N)
    buffer (the fused paths turn it into the kernel in place)."""
    if zc.requires_grad and torch.is_grad_enabled():
        with torch.no_grad():
            return expanded_sq_dists(zc)
    # (no grad-mode switch for the common detached input: it cost ~2 us a call)
    sq = torch.linalg.vecdot(zc, zc)
    d2 = clamp_with_zero_diagonal_(torch.addmm(sq.unsqueeze(1), zc, zc.T, alpha=-2.0).add_(sq))
    return d2, sq


# Order statistics of expanded-form distances are used directly when they exceed this
# fraction of the scale (relative error then at most about (d + 2) eps * 2^4, i.e.
# 2.5e-4 at d = 128 in float32, and typically ~1e-6); smaller ones, and every
# zero-median case, are recomputed by the exact route.
_ORDER_STAT_MIN_FRACTION = 2.0**-4


def order_stats_sq_dists(z: torch.Tensor, full_ranks, pair_ranks=()):
    """Order statistics of the squared distances of the rows of z (k, d): ``full_ranks``
    (0-based) of the full k x k matrix (zero diagonal and both triangles) and
    ``pair_ranks`` of the k (k - 1) / 2 pairs i < j, from one expanded-form matrix and
    one exact selection (``selection.kth_smallest``). Returns (full_values, pair_values,
    D), or None when any value is too small for the expanded form to be trusted (see
    ``_ORDER_STAT_MIN_FRACTION``); D is the (k, k) matrix, for reuse.

    The sorted full matrix is k zeros followed by every pair value twice, so pair
    rank r is full rank k + 2 r (up to rounding, within the error bound above)."""
    d2, sq = expanded_sq_dists(centre_rows(z))
    return order_stats_of(d2, sq, full_ranks, pair_ranks)


def order_stats_of(d2: torch.Tensor, sq: torch.Tensor, full_ranks, pair_ranks=(), sq_max: Optional[float] = None):
    """``order_stats_sq_dists`` on a given ``expanded_sq_dists`` result (d2, sq); ``sq_max``:
    ``float(sq.max())`` when the caller has read it back already.

    Up to ``_HALF_MAX_ROWS`` rows the selection runs on the k (k - 1) / 2 entries
    i < j only (one gather with cached indices; a full rank q maps to 0 below k,
    else to pair rank (q - k) // 2): half the values and no duplicates, several
    times faster than selecting in the full matrix; above, on the full matrix.

    The trust test comes first where it needs no selection: a full rank below k is a
    diagonal zero, which the expanded form cannot vouch for, and a zero spread trusts
    nothing; both give None before any gather."""
    k = d2.shape[0]
    scale = 2.0 * (float(sq.max()) if sq_max is None else sq_max)
    if scale <= 0.0:
        return None
    if k <= _HALF_MAX_ROWS:
        if any(q < k for q in full_ranks):
            return None
        pairs = d2.view(-1).index_select(0, _upper_linear_indices(k, d2.device))
        values = kth_smallest(pairs, [(q - k) // 2 for q in full_ranks] + list(pair_ranks))
    else:
        values = kth_smallest(d2, list(full_ranks) + [k + 2 * r for r in pair_ranks])
    if min(values) <= _ORDER_STAT_MIN_FRACTION * scale:
        return None
    return values[: len(full_ranks)], values[len(full_ranks) :], d2


# Rows up to which order statistics select among the pairs i < j (see ``order_stats_of``);
# the cached index of the largest is 4 MiB.
_HALF_MAX_ROWS = 1024


@functools.lru_cache(maxsize=4)
def _upper_linear_indices(k: int, device: torch.device) -> torch.Tensor:
    """Flat indices i * k + j of the entries i < j of a k x k matrix, row by row (int64)."""
    iu = torch.triu_indices(k, k, offset=1, device=device)
    return iu[0] * k + iu[1]


def median_sq_dist(z: torch.Tensor, max_points: int = 1024) -> float:
    """Median of ||z_i - z_j||^2 over pairs i < j (the lower middle value).

    Uses at most ``max_points`` rows, evenly strided, so the cost is bounded;
    when more than half the pairs coincide, the median of the positive
    distances; 1.0 when all rows coincide. No gradient. The selection runs on
    the expanded-form distances (``order_stats_sq_dists``: relative error
    below ~2.5e-4, typically ~1e-6, in float32) unless the median is small
    against the data's spread, then on ``pairwise_sq_dists``.
    """
    with torch.no_grad():
        n = z.shape[0]
        if n > max_points:
            z = z[torch.linspace(0, n - 1, max_points, device=z.device).round().long()]
            n = max_points
        if n < 2:
            return 1.0
        fast = order_stats_sq_dists(z, (), ((n * (n - 1) // 2 - 1) // 2,))
        if fast is not None:
            return fast[1][0]
        return exact_median_sq_dist(z)


def exact_median_sq_dist(z: torch.Tensor) -> float:
    """``median_sq_dist`` of all rows of z (n >= 2) from ``pairwise_sq_dists`` (the exact
    route: near-zero distances recomputed directly). No gradient."""
    with torch.no_grad():
        n = z.shape[0]
        d2 = pairwise_sq_dists(z)
        iu = torch.triu_indices(n, n, offset=1, device=z.device)
        vals = d2[iu[0], iu[1]]
        med = float(vals.median())
        if med <= 0.0:
            pos = vals[vals > 0]
            med = float(pos.median()) if pos.numel() else 1.0
    return med


# ---------------------------------------------------------------------------
# canonical row order
# ---------------------------------------------------------------------------
@functools.lru_cache(maxsize=64)
def _key_weights(d: int, device: torch.device) -> torch.Tensor:
    return 1.0 + torch.arange(d, device=device, dtype=torch.float64) * ((math.sqrt(5.0) - 1.0) / 2.0)


def canonical_order(z: torch.Tensor) -> torch.Tensor:
    """A permutation that puts the rows of z in an order depending only on the
    multiset of rows (lexicographic where a projection key ties), so that any
    function computed on ``z[canonical_order(z)]`` is bitwise invariant to how
    the rows were ordered. (N,) int64 on z's device.
    """
    return canonical_order_and_keys(z)[0]


def canonical_order_and_keys(z: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(perm, keys): ``canonical_order(z)`` and the rows' float64 projection keys in
    that order (a function of the multiset of rows too)."""
    n, d = z.shape
    # float64 key: distinct rows of float32 data almost never tie (a float32
    # key would tie somewhere among a few thousand rows by the birthday bound).
    key = torch.mv(z.double(), _key_weights(d, z.device))
    sk, perm = torch.sort(key, stable=True)
    if n > 1 and bool((sk[1:] == sk[:-1]).any()):
        perm = torch.arange(n, device=z.device)
        for k in range(d - 1, -1, -1):
            perm = perm[torch.argsort(z[perm, k], stable=True)]
        sk = key[perm]
    return perm, sk


@dataclass
class PooledPair:
    """Two samples as one pooled, canonically ordered matrix (see ``canonical_pooled``)."""

    z: torch.Tensor  # (n + m, d) detached rows of the canonical pair (a then b), compute dtype
    src: torch.Tensor  # (n + m,) int64: z[i] is row src[i] of cat([x, y])
    n_first: int  # rows of the first sample of the canonical pair
    identical: bool  # x and y are the same multiset


def canonical_pooled(x: torch.Tensor, y: torch.Tensor, dtype: torch.dtype, x_name: str = "x", y_name: str = "y") -> PooledPair:
    """The pair (x, y) in canonical order, pooled: the same result as sorting each sample
    with ``canonical_order`` and ordering the pair as ``mmd.canonical_pair`` does
    (smaller sample first; equal sizes by the sums of their sorted keys, then by their
    first differing element), in a few fused operations: one key product for both
    samples, one sort (equal sizes) and one read-back of the key sums and tie flags.

    Also checks finiteness: the float64 key of a float32 / bf16 / fp16 row is finite
    exactly when every entry of the row is (no overflow is possible), so a finite key
    sum proves the sample finite; a non-finite one falls back to ``check_finite``
    (ValueError naming the sample), which float64 inputs can pass (key overflow)."""
    n, m = x.shape[0], y.shape[0]
    identical = False
    z = torch.cat([x.detach(), y.detach()])
    if z.dtype != dtype:
        z = z.to(dtype)
    w = _key_weights(z.shape[1], z.device)
    keys = torch.mv(z if z.dtype == torch.float64 else z.double(), w)
    # Per sample: the sum of its sorted keys (a function of the multiset) and the smallest
    # gap between neighbouring keys (a tie when not > 0; NaN, e.g. inf - inf, counts as one).
    if n == m:
        sk, perm = keys.view(2, n).sort(dim=1, stable=True)
        stats = torch.cat([sk.sum(1), sk.diff(dim=1).amin(1)]) if n > 1 else torch.cat([sk.sum(1), sk.new_ones(2)])
        pa, pb = perm[0], perm[1]
    else:
        ska, pa = keys[:n].sort(stable=True)
        skb, pb = keys[n:].sort(stable=True)
        one = keys.new_ones(())
        stats = torch.stack([ska.sum(), skb.sum(), ska.diff().amin() if n > 1 else one, skb.diff().amin() if m > 1 else one])
        perm = None
    sa, sb, gap_a, gap_b = stats.tolist()
    tie_a, tie_b = not gap_a > 0, not gap_b > 0
    if not math.isfinite(sa):
        check_finite(x, x_name)
    if not math.isfinite(sb):
        check_finite(y, y_name)
    if tie_a:
        pa, perm = canonical_order(z[:n]), None
    if tie_b:
        pb, perm = canonical_order(z[n:]), None
    if n != m:
        swap = n > m
    elif sa != sb:
        swap = sb < sa
    else:
        a, b = z[:n].index_select(0, pa), z[n:].index_select(0, pb)
        identical = torch.equal(a, b)
        swap = False if identical else first_difference(a, b) > 0
    if perm is not None:
        src = (perm + _pair_offsets(n, z.device))
        src = (src.flip(0) if swap else src).reshape(-1)
    else:
        src = torch.cat([pb + n, pa]) if swap else torch.cat([pa, pb + n])
    return PooledPair(z.index_select(0, src), src, m if swap else n, identical)


@functools.lru_cache(maxsize=16)
def _pair_offsets(n: int, device: torch.device) -> torch.Tensor:
    return torch.tensor([[0], [n]], dtype=torch.int64, device=device)


def first_difference(a: torch.Tensor, b: torch.Tensor) -> int:
    """-1 if a < b at the first differing element (flattened), 1 if a > b, 0 if equal.

    Same shapes required.
    """
    ne = (a != b).reshape(-1)
    i = int(ne.to(torch.uint8).argmax())  # the first True, or 0 when all are False
    if not bool(ne[i]):
        return 0
    return -1 if bool(a.reshape(-1)[i] < b.reshape(-1)[i]) else 1


# ---------------------------------------------------------------------------
# tiled kernel engine
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class KernelSpec:
    """A sum of kernels of one family.

    rbf: k = sum_s exp(-r / (2 s^2)), scales s = sigma.
    imq: k = sum_s s / (s + r),        scales s = c.
    r = ||a - b||^2. Every term is 1 at r = 0, so k(z, z) = len(scales).
    """

    family: str
    scales: Tuple[float, ...]

    def __post_init__(self):
        if self.family not in ("rbf", "imq"):
            raise ValueError(f"unknown kernel {self.family!r}; use 'rbf' or 'imq'")
        if not self.scales:
            raise ValueError("a kernel needs at least one bandwidth")
        for s in self.scales:
            if not (math.isfinite(s) and s > 0):
                raise ValueError(f"bandwidths must be positive and finite, got {s!r}")

    @property
    def k0(self) -> float:
        return float(len(self.scales))


@dataclass
class SweepResult:
    total: Optional[torch.Tensor] = None  # 0-dim float64: sum_ij W[g(i), g(j)] K_ij
    grad: Optional[torch.Tensor] = None  # (N, d): gradient of sum_ij W_ij k(z_i, z_j)
    prod: Optional[torch.Tensor] = None  # (N, r): K @ rhs


def _tiles(group_sizes: Sequence[int], block: int) -> List[Tuple[int, int, int]]:
    out, start = [], 0
    for g, size in enumerate(group_sizes):
        for s in range(0, size, block):
            out.append((start + s, start + min(size, s + block), g))
        start += size
    return out


class _TileKernel:
    """Evaluates kernel tiles K[I, J] from one Gram product per tile.

    The squared norms and the kernel's scale ride in two extra columns of the
    factors, so a single matmul gives the exponent (or 1 + r/c) directly and
    no (B, B) temporaries are made beyond the tile buffers.
    """

    def __init__(self, zc: torch.Tensor, spec: KernelSpec, tile: int, want_e: bool):
        """tile: the largest number of rows (and columns) of a tile."""
        self.spec = spec
        self.want_e = want_e
        sq = zc.pow(2).sum(1, keepdim=True)
        one = torch.ones_like(sq)
        single = len(spec.scales) == 1
        if spec.family == "rbf":
            # single: factor . factor = -log2(e) r / (2 sigma^2), ready for exp2.
            s = _LOG2E / (2.0 * spec.scales[0] ** 2) if single else 1.0
            self.left = torch.cat([zc * (2.0 * s), sq * (-s), one * (-s)], 1)
            self.right = torch.cat([zc, one, sq], 1)
            self.diag_value = 0.0
        else:
            # single: factor . factor = 1 + r / c, ready for the reciprocal; else r.
            c = spec.scales[0] if single else None
            if single:
                self.left = torch.cat([zc * (-2.0 / c), sq / c + 1.0, one], 1)
                self.right = torch.cat([zc, one, sq / c], 1)
                self.diag_value = 1.0
            else:
                self.left = torch.cat([zc * -2.0, sq, one], 1)
                self.right = torch.cat([zc, one, sq], 1)
                self.diag_value = 0.0
        flat = tile * tile
        self.buf_g = zc.new_empty(flat)
        multi = not single
        self.buf_k = zc.new_empty(flat) if multi else None
        self.buf_t = zc.new_empty(flat) if multi else None
        self.buf_e = zc.new_empty(flat) if (want_e and (multi or spec.family == "imq")) else None

    @staticmethod
    def _view(buf, rows, cols):
        return buf[: rows * cols].view(rows, cols)

    def __call__(self, i0, i1, j0, j1) -> Tuple[torch.Tensor, Optional[torch.Tensor], float]:
        """(K, E, e_factor) for the tile; E * e_factor = -dk/dr (the weight of the gradient)."""
        spec = self.spec
        rows, cols = i1 - i0, j1 - j0
        g = self._view(self.buf_g, rows, cols)
        torch.mm(self.left[i0:i1], self.right[j0:j1].T, out=g)
        single = len(spec.scales) == 1
        if spec.family == "rbf":
            g.clamp_max_(0.0)  # r >= 0
        else:
            g.clamp_min_(1.0 if single else 0.0)
        if i0 == j0:
            g.diagonal().fill_(self.diag_value)  # r = 0 exactly on the diagonal
        if single:
            s = spec.scales[0]
            if spec.family == "rbf":
                g.exp2_()
                return g, g, 1.0 / (2.0 * s * s)
            g.reciprocal_()
            e = None
            if self.want_e:
                e = self._view(self.buf_e, rows, cols)
                torch.mul(g, g, out=e)
            return g, e, 1.0 / s
        k = self._view(self.buf_k, rows, cols)
        t = self._view(self.buf_t, rows, cols)
        e = self._view(self.buf_e, rows, cols) if self.want_e else None
        for idx, s in enumerate(spec.scales):
            if spec.family == "rbf":
                torch.mul(g, _LOG2E / (2.0 * s * s), out=t)
                t.exp2_()
                w = 1.0 / (2.0 * s * s)
            else:
                torch.mul(g, 1.0 / s, out=t)
                t.add_(1.0).reciprocal_()
                w = 1.0 / s
            if idx == 0:
                k.copy_(t)
            else:
                k.add_(t)
            if e is not None:
                if spec.family == "rbf":
                    if idx == 0:
                        torch.mul(t, w, out=e)
                    else:
                        e.add_(t, alpha=w)
                else:
                    if idx == 0:
                        torch.mul(t, t, out=e)
                        e.mul_(w)
                    else:
                        e.addcmul_(t, t, value=w)
        return k, e, 1.0


@torch.no_grad()
def kernel_sweep(
    z: torch.Tensor,
    group_sizes: Sequence[int],
    spec: KernelSpec,
    *,
    block: Optional[int] = None,
    sum_weights: Optional[Sequence[Sequence[float]]] = None,
    grad_weights: Optional[Sequence[Sequence[float]]] = None,
    rhs: Optional[torch.Tensor] = None,
    centred: bool = False,
) -> SweepResult:
    """One pass over the upper-triangular tiles of the symmetric kernel matrix
    K = k(z, z) (N x N), never holding more than a few (block x block) tiles.

    z is the pooled sample (N, d); rows are split into consecutive groups of
    ``group_sizes`` (e.g. [n, m] for x then y). Requested outputs:
    - ``sum_weights`` W (G x G, symmetric): sum_ij W[g(i), g(j)] K_ij, a
      float64 0-dim tensor (float32 row sums of each tile, added in float64).
    - ``grad_weights`` W (G x G, symmetric): the gradient w.r.t. z of
      sum_ij W[g(i), g(j)] K_ij, shape (N, d), from the same tiles
      (d/dz_i = -4 sum_j W_ij e_ij (z_i - z_j) with e = -dk/dr).
    - ``rhs`` (N, r): the product K @ rhs.
    Must run under no_grad; z in its compute dtype. Translation is removed
    (z is centred) unless ``centred`` says it already is.
    """
    n_total, d = z.shape
    if sum(group_sizes) != n_total:
        raise ValueError("group sizes must add up to the number of rows")
    block = int(block or default_block(z.device))
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    zc = z if centred else centre_rows(z)
    want_e = grad_weights is not None
    if n_total <= min(block, dense_max_rows(z.device)):
        return _dense_sweep(zc, group_sizes, spec, sum_weights, grad_weights, rhs)
    tiles = _tiles(group_sizes, block)
    kern = _TileKernel(zc, spec, max(i1 - i0 for i0, i1, _ in tiles), want_e)
    n_groups = len(group_sizes)

    acc_g = None
    if want_e:
        aug = torch.cat([zc, torch.ones_like(zc[:, :1])], 1)  # [z, 1]: K @ aug gives K z and the row sums
        acc_g = torch.zeros_like(aug)
    acc_p = torch.zeros(n_total, rhs.shape[1], dtype=zc.dtype, device=zc.device) if rhs is not None else None
    tile_sums: List[torch.Tensor] = []
    tile_coef: List[float] = []

    for a, (i0, i1, gi) in enumerate(tiles):
        for (j0, j1, gj) in tiles[a:]:
            k, e, efac = kern(i0, i1, j0, j1)
            off = j0 != i0
            if sum_weights is not None:
                coef = sum_weights[gi][gj] + (sum_weights[gj][gi] if off else 0.0)
                if coef != 0.0:
                    tile_sums.append(k.sum(1))
                    tile_coef.append(coef)
            if want_e:
                w = float(grad_weights[gi][gj]) * efac
                if w != 0.0:
                    acc_g[i0:i1].addmm_(e, aug[j0:j1], alpha=w)
                    if off:
                        acc_g[j0:j1].addmm_(e.T, aug[i0:i1], alpha=w)
            if acc_p is not None:
                acc_p[i0:i1].addmm_(k, rhs[j0:j1])
                if off:
                    acc_p[j0:j1].addmm_(k.T, rhs[i0:i1])

    out = SweepResult()
    if sum_weights is not None:
        if tile_sums:
            per_tile = torch.stack([t.double().sum() for t in tile_sums])
            out.total = torch.dot(per_tile, torch.tensor(tile_coef, dtype=torch.float64, device=z.device))
        else:
            out.total = torch.zeros((), dtype=torch.float64, device=z.device)
    if want_e:
        out.grad = -4.0 * (zc * acc_g[:, d:] - acc_g[:, :d])
    out.prod = acc_p
    return out


# Pooled rows up to which ``kernel_sweep`` evaluates the whole N x N kernel matrix at
# once (one Gram product, one exp, one product per group) instead of the upper-triangular
# tiles per pair of groups: below it the per-tile calls cost more than the entries the
# tiles skip (measured crossover on CPU between 512 and 1024 rows; the same bound on CUDA
# until measured there).
_DENSE_MAX_ROWS = {"cpu": 512, "cuda": 512}


def dense_max_rows(device: torch.device) -> int:
    return _DENSE_MAX_ROWS.get(device.type, 512)


# Right-hand widths below which a product K @ R of a symmetric (N, N) K with an (N, r) R
# runs as (R^T K)^T: on CPU the row-major product with a narrow right operand takes MKL's
# slow path (1.3-6x slower than the transposed one at N = 64-1024, r = 3-9; equal or faster
# from r = 16 on). Not measured on CUDA, so there the product is left as written.
_NARROW_RHS = {"cpu": 16}


def narrow_rhs(r: int, device: torch.device) -> bool:
    """True when ``sym_mm`` with an r-column right operand transposes the product on ``device``."""
    return r < _NARROW_RHS.get(device.type, 0)


def sym_mm(k: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """k @ rhs for a symmetric k (N, N) and rhs (N, r): an (N, r) tensor, a transposed
    (column-major) view when r is narrow (``narrow_rhs``), where it is computed as
    (rhs^T k)^T = k^T rhs. For a k symmetric only up to rounding (an expanded-form kernel
    matrix) that is the same product with k^T, for every column alike: as accurate."""
    if narrow_rhs(rhs.shape[1], k.device):
        return torch.mm(rhs.T, k).T
    return torch.mm(k, rhs)


def _dense_sweep(zc, group_sizes, spec, sum_weights, grad_weights, rhs) -> SweepResult:
    """``kernel_sweep`` on the whole kernel matrix at once (zc centred, N rows).

    One product of e with the block-diagonal [z, 1] per group (N x G (d + 1))
    gives, for every row, sum_j e_ij [z_j, 1] over each group's columns; the
    gradient weights W[g(i)][h] combine those per row. The block sums come
    from the same product when e is the kernel itself (one rbf bandwidth),
    else from a product with the group indicators: float32 row sums per
    block, weighted and added in float64, as in the tiles. The diagonal is
    r = 0 exactly (as in the tiles)."""
    n_total, d = zc.shape
    n_groups = len(group_sizes)
    want_e = grad_weights is not None
    kern = _TileKernel(zc, spec, n_total, want_e)
    k, e, efac = kern(0, n_total, 0, n_total)
    aug = torch.cat([zc, torch.ones_like(zc[:, :1])], 1)
    if n_groups > 1:
        blocks = torch.block_diag(*aug.split(list(group_sizes)))  # (N, G (d + 1))
    out = SweepResult()
    block_sums = None  # (N, G): row i's sum of K over the columns of each group
    if want_e:
        p = e @ (blocks if n_groups > 1 else aug)
        if n_groups > 1:
            p = p.view(n_total, n_groups, d + 1)
            if e is k:
                block_sums = p[:, :, d]
            w = _row_weights(tuple(group_sizes), _as_tuple(grad_weights), zc.dtype, zc.device)  # (N, G, 1)
            acc = (p * w).sum(1)
        else:
            if e is k:
                block_sums = p[:, d:]
            acc = p * float(grad_weights[0][0])
        acc = acc * efac if efac != 1.0 else acc
        out.grad = -4.0 * (zc * acc[:, d:] - acc[:, :d])
    if sum_weights is not None:
        if block_sums is None:
            block_sums = k @ (blocks[:, d :: d + 1] if n_groups > 1 else aug[:, d:])
        # float32 row sums per block, weighted and added in float64
        w64 = _row_weights(tuple(group_sizes), _as_tuple(sum_weights), torch.float64, zc.device)
        out.total = (block_sums.double() * w64.view(n_total, n_groups)).sum()
    if rhs is not None:
        out.prod = k @ rhs
    return out


def _as_tuple(weights) -> Tuple[Tuple[float, ...], ...]:
    return tuple(tuple(float(v) for v in row) for row in weights)


@functools.lru_cache(maxsize=64)
def _row_weights(group_sizes: Tuple[int, ...], weights, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(N, G, 1): entry [i, h] = W[g(i)][h] (cached: a function of the sizes and weights only)."""
    rows = torch.tensor(weights, dtype=dtype, device=device)
    gid = torch.repeat_interleave(torch.arange(len(group_sizes), device=device), torch.tensor(group_sizes, device=device))
    return rows[gid].unsqueeze(-1)
