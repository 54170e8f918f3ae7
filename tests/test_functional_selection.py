"""Exact order statistics (infovae.functional.selection) and the expanded-form medians built on them."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from infovae.functional import selection
from infovae.functional.distances import median_sq_dist, order_stats_sq_dists, pairwise_sq_dists
from infovae.functional.selection import kth_smallest
from infovae.functional.stein import svgd_median_bandwidth


@pytest.mark.parametrize("n", [10, 40_000, 300_000])
@pytest.mark.parametrize("dist", ["normal", "ties"])
def test_kth_smallest_equals_sorting(n, dist):
    g = torch.Generator().manual_seed(n)
    v = torch.randn(n, generator=g) if dist == "normal" else torch.randint(0, 7, (n,), generator=g).float()
    ranks = [0, n // 2 - 1, n // 2, n - 1, (7 * n) // 10]
    ref = v.sort().values
    assert kth_smallest(v, ranks) == [float(ref[r]) for r in ranks]


def test_kth_smallest_falls_back_when_the_bracket_misses(monkeypatch):
    """A bracket far too narrow (0 sample standard deviations) must still give exact answers."""
    monkeypatch.setattr(selection, "_SIGMAS", -50.0)
    v = torch.randn(300_000, generator=torch.Generator().manual_seed(1))
    ref = v.sort().values
    assert kth_smallest(v, [149_999, 150_000]) == [float(ref[149_999]), float(ref[150_000])]


def test_kth_smallest_rejects_bad_ranks():
    with pytest.raises(ValueError, match="out of range"):
        kth_smallest(torch.zeros(5), [5])


@pytest.mark.parametrize("n,d", [(300, 2), (600, 32), (200, 128)])
def test_svgd_median_matches_numpy_on_float64_distances(n, d):
    """The expanded-form selection stays within its stated bound (2.5e-4 relative) of numpy's
    median of the exact float64 distance matrix; in float64 within 1e-12."""
    g = torch.Generator().manual_seed(d)
    z = torch.randn(n, d, generator=g) * 3.0 + 50.0
    zn = z.double().numpy()
    sq = ((zn[:, None, :] - zn[None, :, :]) ** 2).sum(-1)
    ref = math.sqrt(0.5 * np.median(sq) / math.log(n + 1))
    assert svgd_median_bandwidth(z) == pytest.approx(ref, rel=2.5e-4 / 2)  # sigma ~ sqrt(median)
    assert svgd_median_bandwidth(z.double()) == pytest.approx(ref, rel=1e-12)


def test_mmd_pair_median_matches_the_exact_route():
    g = torch.Generator().manual_seed(7)
    z = torch.randn(700, 16, generator=g)
    exact = pairwise_sq_dists(z.double())
    iu = torch.triu_indices(700, 700, 1)
    ref = float(exact[iu[0], iu[1]].median())
    assert median_sq_dist(z) == pytest.approx(ref, rel=2.5e-4)


def test_small_medians_take_the_exact_route():
    """Mostly coincident rows: the median is 0 over the full matrix, so the fast route declines
    and the exact route's positive-median rule applies."""
    z = torch.zeros(50, 3)
    z[:5] = torch.randn(5, 3, generator=torch.Generator().manual_seed(3))
    assert order_stats_sq_dists(z, [50 * 50 // 2]) is None
    pos = pairwise_sq_dists(z.double())
    iu = torch.triu_indices(50, 50, 1)
    vals = pos[iu[0], iu[1]]
    assert median_sq_dist(z) == pytest.approx(float(vals[vals > 0].median()), rel=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
@pytest.mark.parametrize("n", [7, 2016, 40_000])
def test_several_ranks_at_once_equal_one_kthvalue_each(dtype, n):
    """Several distinct ranks (the numpy route on CPU float32 / float64, torch's selection
    otherwise), repeated and unsorted ranks included, give exactly ``torch.kthvalue``'s values."""
    g = torch.Generator().manual_seed(n)
    v = torch.randint(0, 50, (n,), generator=g).to(dtype) * 0.25 + torch.rand(n, generator=g).to(dtype)
    ranks = [n - 1, n // 2, 0, n // 2, max(n // 2 - 1, 0)]
    ref = [float(torch.kthvalue(v, r + 1).values) for r in ranks]
    assert kth_smallest(v, ranks) == ref
    assert kth_smallest(v.flip(0)[::1], ranks) == ref  # order of the input does not matter
