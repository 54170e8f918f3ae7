"""Hypothesis strategies for contract tests of divergences (and your own tests).

Every sample set is a float32 tensor (n, d) whose values are multiples of
``GRID`` = 2**-8 and bounded by ``scale``. That makes the translation checks
exact: for |x| <= 1024, ``x + c`` with |c| <= 1e4 is representable in float32
without rounding (the float32 spacing near 1e4 is 2**-10), so any change of a
divergence's value under a shift is the divergence's own cancellation error,
never the test's. The grid also makes duplicate rows (zero distances) common,
which is where NaN gradients of ``||x - y||`` and zero median bandwidths hide.

Strategies draw torch tensors:

- ``sample_sets(n, d, scale)``          one set, (n, d)
- ``sample_pairs(n, m, d, scale)``      two sets (x, y) with the same d and independent sizes
- ``distinct_pairs(n, m, d, scale)``    two sets whose empirical distributions surely differ
- ``permutations(n)``                   an int64 permutation of range(n)
- ``shifts(d, magnitudes)``             a (d,) shift with entries +-magnitude
- ``posteriors(n, d)``                  (loc, log_scale) for ``infovae.diagonal_gaussian``

Size arguments take an int (fixed) or an inclusive ``(low, high)`` range.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

__all__ = [
    "GRID",
    "MAX_SCALE",
    "TRANSLATIONS",
    "sizes",
    "sample_sets",
    "sample_pairs",
    "distinct_pairs",
    "permutations",
    "shifts",
    "posteriors",
]

GRID = 2.0**-8
# Largest |value| for which x + c stays exact in float32 for every shift in TRANSLATIONS.
MAX_SCALE = 1024.0
# The shift magnitudes of the translation-invariance check.
TRANSLATIONS: Tuple[float, ...] = (100.0, 1e4)

Size = Union[int, Tuple[int, int]]


def sizes(size: Size) -> st.SearchStrategy[int]:
    """An int or an inclusive (low, high) range as a strategy of ints >= 1."""
    if isinstance(size, int):
        if size < 1:
            raise ValueError(f"sizes must be >= 1, got {size}")
        return st.just(size)
    low, high = size
    if not 1 <= low <= high:
        raise ValueError(f"size range must satisfy 1 <= low <= high, got {size!r}")
    return st.integers(low, high)


def _check_scale(scale: float) -> int:
    if not 0 < scale <= MAX_SCALE:
        raise ValueError(f"scale must be in (0, {MAX_SCALE}] so that shifted samples stay exact in float32, got {scale!r}")
    return int(scale / GRID)


def _grid_array(n: int, d: int, k: int) -> st.SearchStrategy[torch.Tensor]:
    ints = hnp.arrays(np.int64, (n, d), elements=st.integers(-k, k))
    return ints.map(lambda a: torch.from_numpy(a.astype(np.float32) * np.float32(GRID)))


def sample_sets(n: Size = (2, 16), d: Size = (1, 5), scale: float = 4.0) -> st.SearchStrategy[torch.Tensor]:
    """(n, d) float32 on the 2**-8 grid with |values| <= scale."""
    k, ns, ds = _check_scale(scale), sizes(n), sizes(d)

    @st.composite
    def _draw(draw) -> torch.Tensor:
        return draw(_grid_array(draw(ns), draw(ds), k))

    return _draw()


def sample_pairs(n: Size = (2, 16), m: Optional[Size] = None, d: Size = (1, 5), scale: float = 4.0) -> st.SearchStrategy[Tuple[torch.Tensor, torch.Tensor]]:
    """(x, y): (n, d) and (m, d) on the grid; m defaults to the same range as n, drawn independently."""
    k, ns, ms, ds = _check_scale(scale), sizes(n), sizes(n if m is None else m), sizes(d)

    @st.composite
    def _draw(draw) -> Tuple[torch.Tensor, torch.Tensor]:
        dd = draw(ds)
        return draw(_grid_array(draw(ns), dd, k)), draw(_grid_array(draw(ms), dd, k))

    return _draw()


def distinct_pairs(
    n: Size = (2, 16), m: Optional[Size] = None, d: Size = (1, 5), scale: float = 4.0, gap: float = 0.5
) -> st.SearchStrategy[Tuple[torch.Tensor, torch.Tensor]]:
    """(x, y) whose empirical distributions differ for sure.

    y[0] is moved beyond the bounding box of x by gap to 2 * gap in every
    coordinate, so it is not a row of x: y puts mass where x puts none. (Sizes
    alone do not make samples distinct: {a} and {a, a} are the same distribution.)
    Values stay within scale + 2 * gap.
    """
    if not gap > 0:
        raise ValueError(f"gap must be > 0, got {gap!r}")
    _check_scale(scale + 2 * gap)
    pairs = sample_pairs(n=n, m=m, d=d, scale=scale)
    lo, hi = max(int(gap / GRID), 1), max(int(2 * gap / GRID), 1)

    @st.composite
    def _draw(draw) -> Tuple[torch.Tensor, torch.Tensor]:
        x, y = draw(pairs)
        steps = draw(hnp.arrays(np.int64, (x.shape[1],), elements=st.integers(lo, hi)))
        y = y.clone()
        y[0] = x.max(0).values + torch.from_numpy(steps.astype(np.float32) * np.float32(GRID))
        return x, y

    return _draw()


def permutations(n: int) -> st.SearchStrategy[torch.Tensor]:
    """An int64 tensor holding a permutation of range(n)."""
    return st.permutations(list(range(n))).map(lambda p: torch.tensor(p, dtype=torch.int64))


def shifts(d: int, magnitudes: Sequence[float] = TRANSLATIONS) -> st.SearchStrategy[torch.Tensor]:
    """A (d,) float32 shift whose entries are +-magnitude for one magnitude of ``magnitudes``."""
    for mag in magnitudes:
        if float(np.float32(mag)) != float(mag) or float(mag) % GRID:
            raise ValueError(f"shift magnitude {mag!r} must be a float32-exact multiple of the grid {GRID}")

    @st.composite
    def _shift(draw) -> torch.Tensor:
        mag = draw(st.sampled_from(tuple(magnitudes)))
        signs = draw(hnp.arrays(np.int64, (d,), elements=st.sampled_from((-1, 1))))
        return torch.from_numpy((signs * mag).astype(np.float32))

    return _shift()


def posteriors(
    n: Size = (2, 16),
    d: Size = (1, 5),
    loc_bound: float = 3.0,
    log_scale_range: Tuple[float, float] = (-2.0, 1.0),
) -> st.SearchStrategy[Tuple[torch.Tensor, torch.Tensor]]:
    """(loc, log_scale), both (n, d) float32: parameters of q(z|x) for ``infovae.diagonal_gaussian``."""
    ns, ds = sizes(n), sizes(d)
    lo, hi = log_scale_range
    if not (loc_bound > 0 and lo <= hi):
        raise ValueError(f"need loc_bound > 0 and log_scale_range low <= high, got {loc_bound!r}, {log_scale_range!r}")
    locs, scales = st.floats(-loc_bound, loc_bound, width=32), st.floats(lo, hi, width=32)

    @st.composite
    def _draw(draw) -> Tuple[torch.Tensor, torch.Tensor]:
        nn_, dd = draw(ns), draw(ds)
        loc = draw(hnp.arrays(np.float32, (nn_, dd), elements=locs))
        log_scale = draw(hnp.arrays(np.float32, (nn_, dd), elements=scales))
        return torch.from_numpy(loc.copy()), torch.from_numpy(log_scale.copy())

    return _draw()
