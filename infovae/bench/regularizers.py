"""Speed and memory of the regularizers against baselines run in the same process.

For each method, each n (= m) and each dimension d it times forward+backward of:

- ``ours``: ``infovae.functional.mmd`` / ``stein_direction``;
- ``dense``: a plain dense implementation: the pooled squared distances in
  matmul form (one Gram product), the kernel by exp (or the imq reciprocal),
  block means, autograd for the gradient (MMD); for Stein the direction
  K s + (z K1 - K z) / sigma^2 from the same dense matrix; a median by
  ``torch.median`` / two ``torch.kthvalue`` over the same rows as ours;
- ``naive``: the n x m x d broadcast most published code uses, differentiated
  by autograd; skipped where its estimated memory exceeds a cap;
- ``geomloss``: ``SamplesLoss("gaussian", blur=sigma, backend="tensorized")``
  (rbf MMD only; it equals half our biased MMD^2), when geomloss is installed;
- ``floor``: what the unavoidable arithmetic would take at the matmul and
  exp throughputs measured in the same run: the distinct entries of the
  pooled kernel matrix ((n+m)^2 / 2 for MMD, n^2 / 2 for Stein) each need a
  2d-flop Gram entry and one exp (one reciprocal for imq) per bandwidth, and
  the gradient needs two products with a (d+1)-column matrix per entry.

Methods: ``mmd-{rbf,imq}`` with optional suffixes ``-sum`` (three bandwidths
s/2, s, 2s), ``-median`` (the median heuristic) and ``-unbiased`` (the
U-statistic; biased otherwise); ``stein`` (fixed sigma) and ``stein-median``.
``best_over_ours`` is the fastest baseline's time over ours (>= 1 means ours is
at least as fast as every baseline in that cell).

Times are medians (or, with stat="min", the fastest) of ``repeats`` runs after
one warm-up (CUDA synchronised), the contenders of a cell interleaved run by run.
Peak memory: CUDA ``max_memory_allocated`` above the inputs; CPU the rise of
the process's peak resident set (Linux VmHWM, reset through
/proc/self/clear_refs before each measured call), or None where that is not
available. Fixed bandwidths: rbf sigma = sqrt(d), imq c = 2d, Stein
sigma = sqrt(d).
"""
from __future__ import annotations

import math
import platform
import re
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch

from infovae.functional import mmd, native, stein_direction
from infovae.functional.distances import default_block, exact_float_math

METHODS = (
    "mmd-rbf", "mmd-imq", "mmd-rbf-sum", "mmd-imq-sum", "mmd-rbf-median", "mmd-imq-median",
    "mmd-rbf-unbiased", "mmd-imq-unbiased", "stein", "stein-median",
)
DEFAULT_SIZES = (64, 128, 256, 512, 1024, 2048, 4096)
GPU_EXTRA_SIZES = (16384, 32768, 65536)
DEFAULT_DIMS = (2, 8, 32, 128)
NAIVE_CAP_BYTES = 2 << 30
# A measured call slower than this is timed once more instead of ``repeats`` times.
SLOW_CALL_S = 5.0


# ---------------------------------------------------------------------------
# measurement helpers
# ---------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int = 1) -> float:
    """Median wall time (s) of fn over ``repeats`` runs after ``warmup`` runs."""
    first = None
    for _ in range(max(warmup, 0)):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        first = time.perf_counter() - t0
    runs = 1 if (first is not None and first > SLOW_CALL_S) else max(repeats, 1)
    times = []
    for _ in range(runs):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def time_interleaved(fns: Dict[str, Callable[[], Any]], device: torch.device, repeats: int,
                     stat: str = "median") -> Dict[str, float]:
    """Wall time (s) of each fn, run round-robin (one run of each per round, the order
    rotating) after one warm-up each, so that load changes hit all alike: the median of
    the runs, or with stat="min" the fastest (on a machine crowded with other jobs the
    median of a millisecond call mostly measures preemption). A contender whose warm-up
    takes over ``SLOW_CALL_S`` is timed once."""
    first = {}
    for name, fn in fns.items():
        t0 = time.perf_counter()
        fn()
        _sync(device)
        first[name] = time.perf_counter() - t0
    times: Dict[str, List[float]] = {name: [] for name in fns}
    names = list(fns)
    for r in range(max(repeats, 1)):
        for name in names[r % len(names):] + names[: r % len(names)]:
            if times[name] and first[name] > SLOW_CALL_S:
                continue
            _sync(device)
            t0 = time.perf_counter()
            fns[name]()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    pick = min if stat == "min" else statistics.median
    return {name: pick(v) for name, v in times.items()}


def _read_status_kib(field: str) -> Optional[int]:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    m = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) if m else None


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


_MALLOC_FIXED = None


def _fix_malloc() -> bool:
    """Make glibc serve every allocation >= 64 KiB by mmap and return it on free,
    so that the resident set follows live memory (glibc otherwise keeps freed
    blocks mapped and reuses them, hiding later peaks). Linux with glibc only;
    applied once, for the rest of the process (after all timings are taken)."""
    global _MALLOC_FIXED
    if _MALLOC_FIXED is None:
        try:
            import ctypes

            libc = ctypes.CDLL("libc.so.6")
            ok = bool(libc.mallopt(-3, 64 * 1024)) and bool(libc.mallopt(-1, 64 * 1024))  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD
            _MALLOC_FIXED = libc if ok else False
        except (OSError, AttributeError):
            _MALLOC_FIXED = False
    if _MALLOC_FIXED:
        _MALLOC_FIXED.malloc_trim(0)  # hand back what earlier calls freed, so it cannot hide this call's peak
    return bool(_MALLOC_FIXED)


def peak_memory(fn: Callable[[], Any], device: torch.device) -> Optional[int]:
    """Bytes by which one call of fn raises peak memory (see module doc); None if unmeasurable.

    On CPU this changes how glibc allocates for the rest of the process, so take
    all timings first.
    """
    if device.type == "cuda":
        _sync(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        _sync(device)
        return max(0, torch.cuda.max_memory_allocated(device) - base)
    if not _fix_malloc():
        return None
    before = _read_status_kib("VmRSS")
    if before is None or not _reset_peak_rss():
        return None
    fn()
    peak = _read_status_kib("VmHWM")
    return None if peak is None else max(0, (peak - before) * 1024)


def _best_time(fn: Callable[[], Any], device: torch.device, repeats: int = 10) -> float:
    fn()
    _sync(device)
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def throughputs(device: torch.device, d: int, block: int) -> Dict[str, float]:
    """Measured rates on tile-shaped work: Gram and product matmuls (flop/s), exp and
    reciprocal (elements/s); the best of 10 runs each (a floor takes the machine at its
    best). The faster of exp and exp2 counts as the exp rate."""
    g = torch.Generator(device="cpu").manual_seed(0)
    with exact_float_math(device):
        a = torch.randn(block, d, generator=g).to(device)
        b = torch.randn(block, d, generator=g).to(device)
        k = torch.rand(block, block, generator=g).to(device)
        v = torch.randn(block, d + 1, generator=g).to(device)
        out = torch.empty(block, block, device=device)
        args = -10.0 * torch.rand(block, block, generator=g).to(device)
        t_gram = _best_time(lambda: torch.mm(a, b.T, out=out), device)
        t_prod = _best_time(lambda: torch.mm(k, v), device)
        t_exp = min(
            _best_time(lambda: torch.exp(args, out=out), device),
            _best_time(lambda: torch.exp2(args, out=out), device),
        )
        t_rec = _best_time(lambda: torch.reciprocal(args, out=out), device)
    entries = block * block
    return {
        "gram_flops": 2.0 * entries * d / t_gram,
        "product_flops": 2.0 * entries * (d + 1) / t_prod,
        "exp_per_s": entries / t_exp,
        "reciprocal_per_s": entries / t_rec,
        "block": block,
    }


def floor_seconds(method: str, n: int, d: int, rates: Dict[str, float], scales: int = 1) -> float:
    """Time of the unavoidable arithmetic at the measured rates (see module doc)."""
    rows = 2 * n if method.startswith("mmd") else n
    entries = rows * rows / 2.0
    elementwise = rates["reciprocal_per_s"] if method.startswith("mmd-imq") else rates["exp_per_s"]
    return (
        2.0 * entries * d / rates["gram_flops"]
        + 2.0 * 2.0 * entries * (d + 1) / rates["product_flops"]
        + scales * entries / elementwise
    )


# ---------------------------------------------------------------------------
# the contenders
# ---------------------------------------------------------------------------
def parse_method(method: str) -> Dict[str, Any]:
    """{'kind': 'mmd' | 'stein', 'kernel', 'sum', 'median', 'estimator'} of a method name."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    parts = method.split("-")
    if parts[0] == "stein":
        return {"kind": "stein", "kernel": "rbf", "sum": False, "median": "median" in parts, "estimator": None}
    return {"kind": "mmd", "kernel": parts[1], "sum": "sum" in parts, "median": "median" in parts,
            "estimator": "unbiased" if "unbiased" in parts else "biased"}


def _bandwidth(method: str, d: int):
    """The bandwidth argument of a method at dimension d: a float, a tuple (sums) or 'median'."""
    p = parse_method(method)
    if p["median"]:
        return "median"
    s = 2.0 * d if p["kernel"] == "imq" else math.sqrt(d)
    return (s / 2.0, s, 2.0 * s) if p["sum"] else s


def _scales(bandwidth) -> Sequence[float]:
    return bandwidth if isinstance(bandwidth, tuple) else (bandwidth,)


def _kernel_of_r(r: torch.Tensor, kernel: str, scales: Sequence[float]) -> torch.Tensor:
    out = None
    for s in scales:
        t = torch.exp(r * (-0.5 / (s * s))) if kernel == "rbf" else s / (s + r)
        out = t if out is None else out + t
    return out


def _strided(z: torch.Tensor, max_points: int) -> torch.Tensor:
    n = z.shape[0]
    if n <= max_points:
        return z
    return z[torch.linspace(0, n - 1, max_points, device=z.device).round().long()]


def _dense_sq(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    sa, sb = (a * a).sum(1), (b * b).sum(1)
    return (sa[:, None] + sb[None, :] - 2.0 * (a @ b.T)).clamp_min(0.0)


def _pair_median(r: torch.Tensor) -> float:
    """Lower median of the entries i < j of a square distance matrix (plain: a gather, torch.median)."""
    k = r.shape[0]
    iu = torch.triu_indices(k, k, offset=1, device=r.device)
    return float(r[iu[0], iu[1]].median())


def _mmd_median_scales(kernel: str, z: torch.Tensor, sq_fn) -> tuple:
    sub = _strided(z.detach(), 1024)
    med = _pair_median(sq_fn(sub, sub))
    return (math.sqrt(med),) if kernel == "rbf" else (med,)


def _mmd_from_blocks(kxx, kyy, kxy, estimator: str) -> torch.Tensor:
    if estimator == "biased":
        return kxx.mean() + kyy.mean() - 2.0 * kxy.mean()
    n, m = kxx.shape[0], kyy.shape[0]
    off = lambda t: t.sum() - t.diagonal().sum()  # noqa: E731
    return off(kxx) / (n * (n - 1)) + off(kyy) / (m * (m - 1)) - 2.0 * kxy.mean()


def dense_mmd(x: torch.Tensor, y: torch.Tensor, kernel: str, bandwidth, estimator: str = "biased") -> torch.Tensor:
    """MMD^2 the plain dense way: pooled matmul-form distances, the kernel, block means; autograd."""
    n = x.shape[0]
    z = torch.cat([x, y])
    r = _dense_sq(z, z)
    scales = _mmd_median_scales(kernel, z, _dense_sq) if bandwidth == "median" else _scales(bandwidth)
    k = _kernel_of_r(r, kernel, scales)
    return _mmd_from_blocks(k[:n, :n], k[n:, n:], k[:n, n:], estimator)


def naive_mmd(x: torch.Tensor, y: torch.Tensor, kernel: str, bandwidth, estimator: str = "biased") -> torch.Tensor:
    """MMD^2 through (n, m, d) broadcasts, as in most published code."""

    def sq(a, b):
        return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)

    if bandwidth == "median":
        scales = _mmd_median_scales(kernel, torch.cat([x, y]), sq)
    else:
        scales = _scales(bandwidth)
    k = lambda a, b: _kernel_of_r(sq(a, b), kernel, scales)  # noqa: E731
    return _mmd_from_blocks(k(x, x), k(y, y), k(x, y), estimator)


def _svgd_sigma(r_full: torch.Tensor, n: int) -> float:
    """numpy-median of the full matrix (mean of the two middle values when even), plain kthvalue."""
    flat = r_full.reshape(-1)
    t = flat.numel()
    ranks = (t // 2 + 1,) if t % 2 else (t // 2, t // 2 + 1)
    med = sum(float(torch.kthvalue(flat, k).values) for k in ranks) / len(ranks)
    return math.sqrt(med / (2.0 * math.log(n + 1.0)))


def dense_stein(z: torch.Tensor, score: torch.Tensor, sigma) -> torch.Tensor:
    """SVGD direction from one dense kernel matrix in matmul form: (K s + (z K1 - K z) / sigma^2) / n."""
    n = z.shape[0]
    r = _dense_sq(z, z)
    if sigma == "median":
        sub = _strided(z, 2048)
        sigma = _svgd_sigma(r if sub is z else _dense_sq(sub, sub), n)
    k = torch.exp(r * (-0.5 / (sigma * sigma)))
    return (k @ score + (z * k.sum(1, keepdim=True) - k @ z) / (sigma * sigma)) / n


def naive_stein(z: torch.Tensor, score: torch.Tensor, sigma) -> torch.Tensor:
    """SVGD direction through an (n, n, d) broadcast, as in most published code."""
    diff = z[:, None, :] - z[None, :, :]  # z_i - z_j
    r = (diff**2).sum(-1)
    if sigma == "median":
        sub = _strided(z, 2048)
        sigma = _svgd_sigma(r if sub is z else ((sub[:, None] - sub[None]) ** 2).sum(-1), z.shape[0])
    k = torch.exp(-r / (2.0 * sigma**2))
    return (k @ score + (k[..., None] * diff).sum(1) / sigma**2) / z.shape[0]


def naive_bytes(method: str, n: int, d: int) -> int:
    """Rough peak of the naive baseline: the (n, n, d) tensors alive at once."""
    per = n * n * d * 4
    return 6 * per if method.startswith("mmd") else 3 * per


def _mmd_step(kernel: str, bw, estimator: str, x, y, impl):
    def step():
        x.grad = y.grad = None
        if impl == "ours":
            v = mmd(x, y, kernel=kernel, bandwidth=bw, estimator=estimator)
        elif impl == "dense":
            v = dense_mmd(x, y, kernel, bw, estimator)
        elif impl == "naive":
            v = naive_mmd(x, y, kernel, bw, estimator)
        else:
            v = impl(x, y)
        v.backward()

    return step


def _stein_step(bw, z, impl: str):
    fn = {"ours": stein_direction, "dense": dense_stein, "naive": naive_stein}[impl]

    def step():
        z.grad = None
        score = -z.detach()
        phi = fn(z.detach(), score, bw)
        (-(z * (phi / z.shape[0])).sum()).backward()

    return step


def _geomloss():
    try:
        import geomloss  # noqa: F401
        from geomloss import SamplesLoss
    except Exception:  # noqa: BLE001 - optional; any import failure means "not available"
        return None, None
    return SamplesLoss, getattr(geomloss, "__version__", "unknown")


# ---------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------
def run(
    device: str = "cpu",
    sizes: Optional[Sequence[int]] = None,
    dims: Sequence[int] = DEFAULT_DIMS,
    repeats: int = 5,
    methods: Sequence[str] = METHODS,
    naive_cap_bytes: int = NAIVE_CAP_BYTES,
    use_geomloss: bool = True,
    progress: Optional[Callable[[str], None]] = None,
    measure_memory: bool = True,
    stat: str = "median",
) -> Dict[str, Any]:
    """Run the grid; returns a JSON-ready dict (``rows``: one entry per method, n, d).

    measure_memory=False leaves the *_peak_bytes entries None (and glibc's
    allocation policy untouched, see ``peak_memory``).
    """
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda but CUDA is not available on this machine")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    if not methods:
        raise ValueError("no methods given")
    if stat not in ("median", "min"):
        raise ValueError(f"stat must be 'median' or 'min', got {stat!r}")
    if sizes is None:
        sizes = DEFAULT_SIZES + (GPU_EXTRA_SIZES if dev.type == "cuda" else ())
    if any(int(s) < 2 for s in sizes) or any(int(d) < 1 for d in dims):
        raise ValueError("sizes must be >= 2 and dims >= 1")
    SamplesLoss, geomloss_version = _geomloss() if use_geomloss else (None, None)
    say = progress or (lambda msg: None)

    rates_by_d = {}
    rows: List[Dict[str, Any]] = []
    memory_jobs = []  # (row, key, step): memory is measured after every timing (see peak_memory)
    gen = torch.Generator(device="cpu").manual_seed(0)
    for d in dims:
        block = min(default_block(dev), 2 * max(sizes))
        rates_by_d[d] = throughputs(dev, d, block)
        for n in sizes:
            x = torch.randn(n, d, generator=gen).to(dev).requires_grad_(True)
            y = (torch.randn(n, d, generator=gen) + 0.5).to(dev).requires_grad_(True)
            for method in methods:
                spec = parse_method(method)
                bw = _bandwidth(method, d)
                say(f"{method} n={n} d={d}")
                if spec["kind"] == "stein":
                    steps = {impl: _stein_step(bw, x, impl) for impl in ("ours", "dense", "naive")}
                else:
                    kernel, est = spec["kernel"], spec["estimator"]
                    steps = {impl: _mmd_step(kernel, bw, est, x, y, impl) for impl in ("ours", "dense", "naive")}
                    if SamplesLoss is not None and method == "mmd-rbf":
                        steps["geomloss"] = _mmd_step(
                            kernel, bw, est, x, y, SamplesLoss("gaussian", blur=bw, backend="tensorized"))
                row: Dict[str, Any] = {"method": method, "n": n, "m": None if spec["kind"] == "stein" else n, "d": d,
                                       "bandwidth": bw if isinstance(bw, (str, float)) else list(bw)}
                need = naive_bytes(method, n, d)
                row["naive_note"] = None
                if need > naive_cap_bytes:
                    row["naive_note"] = f"skipped: needs ~{need / 2**30:.1f} GiB > cap {naive_cap_bytes / 2**30:.1f} GiB"
                    del steps["naive"]
                if method == "mmd-rbf":
                    row["geomloss_note"] = None if "geomloss" in steps else (
                        "geomloss not installed" if use_geomloss else "not run")
                else:
                    row["geomloss_note"] = "n/a"
                try:
                    timed = time_interleaved(steps, dev, repeats, stat)
                except RuntimeError as exc:  # a baseline out of memory at the largest sizes
                    if "geomloss" not in steps:
                        raise
                    row["geomloss_note"] = f"failed: {str(exc).splitlines()[0][:80]}"
                    del steps["geomloss"]
                    timed = time_interleaved(steps, dev, repeats, stat)
                for impl in ("ours", "dense", "naive", "geomloss"):
                    row[f"{impl}_s"] = timed.get(impl)
                    row[f"{impl}_peak_bytes"] = None
                    if impl in steps:
                        memory_jobs.append((row, f"{impl}_peak_bytes", steps[impl]))
                scales = len(_scales(bw)) if bw != "median" else 1
                row["floor_s"] = floor_seconds(method, n, d, rates_by_d[d], scales)
                pooled = n if spec["kind"] == "stein" else 2 * n
                row["kernel_evals_per_s"] = pooled * pooled / row["ours_s"]
                for impl in ("dense", "naive", "geomloss"):
                    row[f"{impl}_over_ours"] = None if row[f"{impl}_s"] is None else row[f"{impl}_s"] / row["ours_s"]
                best = min(row[f"{impl}_s"] for impl in ("dense", "naive", "geomloss") if row[f"{impl}_s"] is not None)
                row["best_over_ours"] = best / row["ours_s"]
                row["ours_over_floor"] = row["ours_s"] / row["floor_s"]
                rows.append(row)
    if measure_memory:
        say("peak memory")
        for row, key, step in memory_jobs:
            row[key] = peak_memory(step, dev)
    return {
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "native_kernels": native.state(),
        "threads": torch.get_num_threads(),
        "geomloss": geomloss_version,
        "repeats": repeats,
        "stat": stat,
        "naive_cap_bytes": naive_cap_bytes,
        "throughputs": {str(d): r for d, r in rates_by_d.items()},
        "rows": rows,
    }


def _fmt_ratio(v: Optional[float]) -> str:
    return "-" if v is None else (f"{v:.1f}x" if v >= 10 else f"{v:.2f}x")


def _fmt_mib(b: Optional[int]) -> str:
    return "n/a" if b is None else f"{b / 2**20:.1f}"


def table(result: Dict[str, Any]):
    """A rich Table of the result."""
    from rich.table import Table

    t = Table(title=f"regularizers on {result['device']} ({result['threads']} threads, torch {result['torch']}, C kernels {result.get('native_kernels', '?')})")
    for col, just in (
        ("method", "left"), ("n", "right"), ("d", "right"), ("ms", "right"), ("MiB", "right"),
        ("dense ms", "right"), ("dense MiB", "right"), ("dense", "right"), ("naive", "right"),
        ("geomloss", "right"), ("vs best", "right"), ("vs floor", "right"),
    ):
        t.add_column(col, justify=just, no_wrap=True)
    for r in result["rows"]:
        naive = _fmt_ratio(r["naive_over_ours"]) if r["naive_s"] is not None else "skipped"
        geo = _fmt_ratio(r["geomloss_over_ours"]) if r["geomloss_s"] is not None else (
            "-" if r["geomloss_note"] == "n/a" else "n/a")
        best = _fmt_ratio(r["best_over_ours"])
        if r["best_over_ours"] < 1.0:
            best = f"[bold red]{best}[/]"
        t.add_row(
            r["method"], str(r["n"]), str(r["d"]), f"{1e3 * r['ours_s']:.2f}", _fmt_mib(r["ours_peak_bytes"]),
            f"{1e3 * r['dense_s']:.2f}", _fmt_mib(r["dense_peak_bytes"]), _fmt_ratio(r["dense_over_ours"]),
            naive, geo, best, _fmt_ratio(r["ours_over_floor"]),
        )
    caption = [
        f"ms, MiB: ours, forward+backward time ({result['stat']}) and peak memory; dense ms, dense MiB: the plain dense baseline",
        "dense, naive, geomloss: their time / ours (higher is better for us); vs best: the fastest baseline / ours",
        "vs floor: ours / floor",
    ]
    if any(r["naive_note"] for r in result["rows"]):
        caption.append("naive skipped where its (n, n, d) broadcasts exceed the memory cap")
    t.caption = "\n".join(caption)
    return t


def slower_cells(result: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The rows where some baseline was faster than ours (best_over_ours < 1)."""
    return [r for r in result["rows"] if r["best_over_ours"] < 1.0]
