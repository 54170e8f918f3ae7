"""Speed and memory of the regularizers against baselines run in the same process.

For each method (MMD with the rbf and imq kernels, the Stein direction), each
n (= m) and each dimension d it times forward+backward of:

- ``ours``: ``infovae.functional.mmd`` / ``stein_direction`` (tiled sweep);
- ``naive``: the n x m x d broadcast most published code uses, differentiated
  by autograd; skipped where its estimated memory exceeds a cap;
- ``geomloss``: ``SamplesLoss("gaussian", blur=sigma, backend="tensorized")``
  (rbf MMD only; it equals half our biased MMD^2), when geomloss is installed;
- ``floor``: what the unavoidable arithmetic would take at the matmul and
  exp throughputs measured in the same run: the distinct entries of the
  pooled kernel matrix ((n+m)^2 / 2 for MMD, n^2 / 2 for Stein) each need a
  2d-flop Gram entry and one exp (one reciprocal for imq) per bandwidth, and
  the gradient needs two products with a (d+1)-column matrix per entry.

Times are medians over ``repeats`` runs after one warm-up (CUDA synchronised).
Peak memory: CUDA ``max_memory_allocated`` above the inputs; CPU the rise of
the process's peak resident set (Linux VmHWM, reset through
/proc/self/clear_refs before each measured call), or None where that is not
available. Bandwidths are fixed (rbf sigma = sqrt(d), imq c = 2d, Stein
sigma = sqrt(d)), so no run includes the median heuristic.
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

from infovae.functional import mmd, stein_direction
from infovae.functional.distances import default_block, exact_float_math

METHODS = ("mmd-rbf", "mmd-imq", "stein")
DEFAULT_SIZES = (64, 256, 1024, 4096)
GPU_EXTRA_SIZES = (16384,)
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
    elementwise = rates["reciprocal_per_s"] if method == "mmd-imq" else rates["exp_per_s"]
    return (
        2.0 * entries * d / rates["gram_flops"]
        + 2.0 * 2.0 * entries * (d + 1) / rates["product_flops"]
        + scales * entries / elementwise
    )


# ---------------------------------------------------------------------------
# the contenders
# ---------------------------------------------------------------------------
def _bandwidth(method: str, d: int) -> float:
    return 2.0 * d if method == "mmd-imq" else math.sqrt(d)


def naive_mmd(x: torch.Tensor, y: torch.Tensor, kernel: str, bandwidth: float) -> torch.Tensor:
    """Biased MMD^2 through (n, m, d) broadcasts, as in most published code."""

    def k(a, b):
        r = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        return torch.exp(-r / (2.0 * bandwidth**2)) if kernel == "rbf" else bandwidth / (bandwidth + r)

    return k(x, x).mean() + k(y, y).mean() - 2.0 * k(x, y).mean()


def naive_stein(z: torch.Tensor, score: torch.Tensor, sigma: float) -> torch.Tensor:
    """SVGD direction through an (n, n, d) broadcast, as in most published code."""
    diff = z[:, None, :] - z[None, :, :]  # z_i - z_j
    k = torch.exp(-(diff**2).sum(-1) / (2.0 * sigma**2))
    return (k @ score + (k[..., None] * diff).sum(1) / sigma**2) / z.shape[0]


def naive_bytes(method: str, n: int, d: int) -> int:
    """Rough peak of the naive baseline: the (n, n, d) tensors alive at once."""
    per = n * n * d * 4
    return 6 * per if method.startswith("mmd") else 3 * per


def _mmd_step(kernel: str, bw: float, x, y, impl: str):
    def step():
        x.grad = y.grad = None
        if impl == "ours":
            v = mmd(x, y, kernel=kernel, bandwidth=bw)
        elif impl == "naive":
            v = naive_mmd(x, y, kernel, bw)
        else:
            v = impl(x, y)
        v.backward()

    return step


def _stein_step(bw: float, z, impl: str):
    def step():
        z.grad = None
        score = -z.detach()
        phi = stein_direction(z, score, bw) if impl == "ours" else naive_stein(z.detach(), score, bw)
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
                bw = _bandwidth(method, d)
                say(f"{method} n={n} d={d}")
                if method == "stein":
                    ours, naive, geo = _stein_step(bw, x, "ours"), _stein_step(bw, x, "naive"), None
                else:
                    kernel = method.split("-")[1]
                    ours = _mmd_step(kernel, bw, x, y, "ours")
                    naive = _mmd_step(kernel, bw, x, y, "naive")
                    geo = None
                    if SamplesLoss is not None and kernel == "rbf":
                        geo = _mmd_step(kernel, bw, x, y, SamplesLoss("gaussian", blur=bw, backend="tensorized"))
                row: Dict[str, Any] = {"method": method, "n": n, "m": None if method == "stein" else n, "d": d, "bandwidth": bw}
                row["ours_s"] = time_call(ours, dev, repeats)
                row["ours_peak_bytes"] = None
                memory_jobs.append((row, "ours_peak_bytes", ours))
                row["floor_s"] = floor_seconds(method, n, d, rates_by_d[d])
                pooled = n if method == "stein" else 2 * n
                row["kernel_evals_per_s"] = pooled * pooled / row["ours_s"]
                need = naive_bytes(method, n, d)
                row["naive_s"] = row["naive_peak_bytes"] = None
                row["naive_note"] = None
                if need > naive_cap_bytes:
                    row["naive_note"] = f"skipped: needs ~{need / 2**30:.1f} GiB > cap {naive_cap_bytes / 2**30:.1f} GiB"
                else:
                    row["naive_s"] = time_call(naive, dev, repeats)
                    memory_jobs.append((row, "naive_peak_bytes", naive))
                row["geomloss_s"] = row["geomloss_peak_bytes"] = None
                if geo is None:
                    row["geomloss_note"] = "geomloss not installed" if (method == "mmd-rbf" and use_geomloss) else "n/a"
                else:
                    row["geomloss_note"] = None
                    try:
                        row["geomloss_s"] = time_call(geo, dev, repeats)
                        memory_jobs.append((row, "geomloss_peak_bytes", geo))
                    except RuntimeError as exc:  # out of memory at the largest sizes
                        row["geomloss_note"] = f"failed: {str(exc).splitlines()[0][:80]}"
                row["naive_over_ours"] = None if row["naive_s"] is None else row["naive_s"] / row["ours_s"]
                row["geomloss_over_ours"] = None if row["geomloss_s"] is None else row["geomloss_s"] / row["ours_s"]
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
        "threads": torch.get_num_threads(),
        "geomloss": geomloss_version,
        "repeats": repeats,
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

    t = Table(title=f"regularizers on {result['device']} ({result['threads']} threads, torch {result['torch']})")
    for col, just in (
        ("method", "left"), ("n", "right"), ("d", "right"), ("ms", "right"), ("MiB", "right"),
        ("naive", "right"), ("geomloss", "right"), ("vs floor", "right"), ("floor ms", "right"),
    ):
        t.add_column(col, justify=just, no_wrap=True)
    for r in result["rows"]:
        naive = _fmt_ratio(r["naive_over_ours"]) if r["naive_s"] is not None else "skipped"
        geo = _fmt_ratio(r["geomloss_over_ours"]) if r["geomloss_s"] is not None else (
            "-" if r["geomloss_note"] == "n/a" else "n/a")
        t.add_row(
            r["method"], str(r["n"]), str(r["d"]), f"{1e3 * r['ours_s']:.2f}", _fmt_mib(r["ours_peak_bytes"]),
            naive, geo, _fmt_ratio(r["ours_over_floor"]), f"{1e3 * r['floor_s']:.2f}",
        )
    caption = [
        "ms, MiB: ours, forward+backward time (median) and peak memory",
        "naive, geomloss: their time / ours (higher is better for us); vs floor: ours / floor",
    ]
    if any(r["naive_note"] for r in result["rows"]):
        caption.append("naive skipped where its (n, n, d) broadcasts exceed the memory cap")
    t.caption = "\n".join(caption)
    return t
