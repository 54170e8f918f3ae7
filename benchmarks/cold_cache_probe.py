"""Diagnostic (issue 13, round 3 reg): what makes every contender slow after a naive step?

One process, ``torch.set_num_threads(1)``; for a cell (method, n, d) of the regularizer
bench it times one step of ours and of dense right after each of these preceding actions,
interleaved round by round (the fastest of ``--repeats`` runs, as ``--stat min``):

- ``same``: the same contender's own step (back to back: the warmest case);
- ``other``: the other contender's step (ours after dense, dense after ours);
- ``naive``: the bench's naive step (its (n, n, d) broadcasts: ~12-20 MB of temporaries at d = 128);
- ``sweepXMB``: ``buf.mul_(1.0)`` over a preallocated X MB float32 buffer: no allocation, no
  page fault, no system call, only memory traffic (evicts caches of that size);
- ``mmap20MB``: ``torch.empty`` of 20 MB, never touched, freed (glibc mmap + munmap only);
- ``fault20MB``: ``torch.zeros`` of 20 MB, freed (fresh zero-filled pages from the kernel, then
  unmapped: what a naive step does to the allocator);
- ``sleep10ms``: ``time.sleep(0.01)``.

and the minor page faults (``getrusage``) counted in the measured step. Usage:

    python benchmarks/cold_cache_probe.py [--method mmd-rbf] [--n 64] [--d 128] [--repeats 31]
"""
from __future__ import annotations

import argparse
import math
import resource
import time

import torch

from infovae.bench.regularizers import METHODS, _bandwidth, _mmd_step, _stein_step, parse_method


def _positive(text: str) -> int:
    """argparse type: a positive integer, else argparse's one-line usage error."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1")
    return value


def main() -> None:
    ap = argparse.ArgumentParser(description="what makes every contender slow after a naive step (see the module doc)")
    ap.add_argument("--method", default="mmd-rbf", choices=METHODS)
    ap.add_argument("--n", type=_positive, default=64, help="rows per sample (>= 2)")
    ap.add_argument("--d", type=_positive, default=128, help="dimension (>= 1)")
    ap.add_argument("--repeats", type=_positive, default=31)
    a = ap.parse_args()
    if a.n < 2:
        ap.error("--n must be >= 2")
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    p = parse_method(a.method)
    bw = _bandwidth(a.method, a.d)
    if p["kind"] == "mmd":
        x = torch.randn(a.n, a.d, generator=g).requires_grad_()
        y = (torch.randn(a.n, a.d, generator=g) + 0.5).requires_grad_()
        steps = {k: _mmd_step(p["kernel"], bw, p["estimator"], x, y, k) for k in ("ours", "dense", "naive")}
    else:
        z = torch.randn(a.n, a.d, generator=g).requires_grad_()
        steps = {k: _stein_step(bw, z, k) for k in ("ours", "dense", "naive")}
    bufs = {mb: torch.ones(mb * 262144) for mb in (2, 8, 40)}
    big = 20 * 262144

    def sleep():
        time.sleep(0.01)

    pre = {
        "same": None, "other": None, "naive": steps["naive"],
        **{f"sweep{mb}MB": (lambda b=b: b.mul_(1.0)) for mb, b in bufs.items()},
        "mmap20MB": lambda: torch.empty(big), "fault20MB": lambda: torch.zeros(big), "sleep10ms": sleep,
    }
    for _ in range(10):
        for f in steps.values():
            f()
    res = {}
    for _ in range(a.repeats):
        for pn, pf in pre.items():
            for name in ("ours", "dense"):
                if pn == "same":
                    steps[name]()
                elif pn == "other":
                    steps["dense" if name == "ours" else "ours"]()
                else:
                    pf()
                f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                t0 = time.perf_counter()
                steps[name]()
                t = time.perf_counter() - t0
                f1 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                res.setdefault((pn, name), []).append((t, f1 - f0))
    print(f"{a.method} n={a.n} d={a.d}: fastest of {a.repeats} (us), mean minor faults in the measured step")
    print(f"{'before':>10s} {'ours':>7s} {'flt':>5s} {'dense':>7s} {'flt':>5s} {'dense/ours':>10s}")
    for pn in pre:
        o, de = res[(pn, "ours")], res[(pn, "dense")]
        to, td = min(t for t, _ in o) * 1e6, min(t for t, _ in de) * 1e6
        fo, fd = sum(f for _, f in o) / len(o), sum(f for _, f in de) / len(de)
        print(f"{pn:>10s} {to:7.0f} {fo:5.1f} {td:7.0f} {fd:5.1f} {td / to:10.2f}")


if __name__ == "__main__":
    main()
