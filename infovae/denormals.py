"""Flush-to-zero for denormal floats on the CPU, scoped to a block.

Denormal (subnormal) float32 values, below 1.2e-38 in magnitude, take the
slow path on x86 CPUs: arithmetic on them costs tens to hundreds of cycles.
Adam's moment estimates for weights whose gradient is exactly zero for many
steps (weights of always-off pixels, dead ReLU units) decay geometrically
into that range, and a training step that touches them slows down (about
45% at the end of the first epoch of an MLP VAE on binarized MNIST; see
benchmarks/RESULTS.md). Flushing treats such values as 0, which changes an
Adam update by far less than its ``eps`` (1e-8) does.

``torch.set_flush_denormal`` sets the FTZ/DAZ bits of the calling thread's
MXCSR register; threads started later inherit them, threads already running
(an OpenMP pool created before) do not. torch cannot report the current
setting, so ``denormals_flushed`` measures it.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

_SMALLEST_NORMAL = torch.finfo(torch.float32).tiny  # 1.1754944e-38


def denormals_flushed() -> bool:
    """True when float32 arithmetic on this thread flushes denormals to zero."""
    x = torch.full((1,), _SMALLEST_NORMAL, dtype=torch.float32)
    return float(x.mul(0.5)) == 0.0  # 2**-127 is denormal: kept unless flushed


@contextmanager
def flush_denormal(on: bool) -> Iterator[bool]:
    """Within the block, float32 arithmetic on the calling thread flushes denormals to
    zero when ``on`` and keeps them when not; the previous setting comes back on exit,
    exceptions included. Yields whether denormals are flushed inside the block (False
    on a CPU without the DAZ bit, whatever ``on`` asked)."""
    before = denormals_flushed()
    if bool(on) == before:
        yield before
        return
    supported = torch.set_flush_denormal(bool(on))
    try:
        yield bool(on) and bool(supported)
    finally:
        torch.set_flush_denormal(before)
