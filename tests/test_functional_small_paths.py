"""The small-n code paths of stein_direction and the fused mmd (issue 13, round 3): the fast
fixed-bandwidth Stein function, the transposed products for narrow right-hand sides, the one-call
clamp with an exact zero diagonal and the cached-weight centring, each against float64 brute
force or the plain operations it replaces, and selected exactly where it claims to be."""
from __future__ import annotations

import math
import sys

import pytest
import torch

from infovae.functional import mmd, stein_direction
from infovae.functional.distances import (
    _BOUNDS_MAX_ROWS,
    centre_rows,
    clamp_with_zero_diagonal_,
    expanded_sq_dists,
    narrow_rhs,
    sym_mm,
)
from test_functional_mmd import mmd_autograd64
from test_functional_stein import phi_loops

stein_module = sys.modules["infovae.functional.stein"]


def phi64(z, score, sigma):
    """The SVGD direction in float64 by the dense formula (an independent reference for larger n)."""
    z, s = z.double(), score.double()
    r = ((z[:, None] - z[None]) ** 2).sum(-1)
    k = torch.exp(-r / (2 * sigma**2))
    return (k @ s + (z * k.sum(1, keepdim=True) - k @ z) / sigma**2) / z.shape[0]


@pytest.mark.usefixtures("native_route")
@pytest.mark.parametrize("n,d", [(1, 3), (7, 2), (64, 8), (128, 2), (128, 32), (200, 8), (64, 128)])
def test_fast_fixed_stein_matches_float64(n, d):
    """Covers both product orientations (n >= 128 with d < 16 transposed) and both clamp routes."""
    g = torch.Generator().manual_seed(n * 1000 + d)
    z = torch.randn(n, d, generator=g) * 1.3 + 0.5
    s = torch.randn(n, d, generator=g)
    sigma = 0.9 * math.sqrt(d)
    phi = stein_direction(z, s, sigma)
    assert phi.shape == (n, d) and phi.dtype == torch.float32 and phi.is_contiguous()
    ref = phi_loops(z.double(), s.double(), (sigma,)) if n <= 7 else phi64(z, s, sigma)
    assert torch.allclose(phi.double(), ref, rtol=1e-5, atol=2e-6)
    got64 = stein_direction(z.double(), s.double(), sigma)
    assert got64.dtype == torch.float64 and torch.allclose(got64, ref, rtol=1e-12, atol=1e-13)


@pytest.mark.usefixtures("native_route")
def test_fast_fixed_stein_float_and_one_element_tuple_agree():
    """The plugins pass a fixed sigma as a one-element tuple: same path, same bits; a sum of
    kernels whose other term is negligible is the same direction up to rounding."""
    g = torch.Generator().manual_seed(21)
    for n, d in ((64, 8), (128, 4), (96, 40)):
        z, s = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
        assert torch.equal(stein_direction(z, s, 1.7), stein_direction(z, s, (1.7,)))
        assert torch.equal(stein_direction(z, s, 1.7), stein_direction(z, s, [1.7]))


def test_fast_fixed_stein_is_selected_only_where_it_claims(monkeypatch):
    monkeypatch.setattr(sys.modules["infovae.functional.native"], "ENABLED", False)  # the eager fast function
    calls = []
    real = stein_module._small_direction
    monkeypatch.setattr(stein_module, "_small_direction", lambda *a: calls.append(a[2]) or real(*a))
    z = torch.randn(32, 3, requires_grad=True)
    stein_direction(z, -z.detach(), 1.5)
    stein_direction(z.double(), -z.detach().double(), 1.5)
    stein_direction(z, -z.detach(), "median")
    stein_direction(z, -z.detach(), (1.5,))
    assert calls == [1.5, 1.5, None, 1.5]
    stein_direction(z, -z.detach(), (1.5, 3.0))
    stein_direction(z, -z.detach(), 2)  # an int: parsed by the general path
    stein_direction(z, -z.detach(), 1.5, block_size=8)
    stein_direction(z.half(), -z.detach().half(), 1.5)
    stein_direction(z.double(), -z.detach(), 1.5)  # mixed dtypes are converted by the general path
    stein_direction(torch.randn(600, 2), torch.randn(600, 2), 1.5)  # above dense_max_rows
    assert len(calls) == 4


@pytest.mark.usefixtures("native_route")
def test_fast_fixed_stein_keeps_the_guarantees():
    """Detached result, float32 under bf16 autocast, matmul precision forced and restored,
    translation safety and clear errors, as the general path."""
    g = torch.Generator().manual_seed(22)
    z = torch.randn(64, 5, generator=g)
    s = torch.randn(64, 5, generator=g)
    ref = stein_direction(z, s, 1.2)
    assert not stein_direction(z.requires_grad_(True), s, 1.2).requires_grad
    z = z.detach()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(stein_direction(z, s, 1.2), ref)
    mk = torch.backends.mkldnn.matmul
    if hasattr(mk, "fp32_precision"):
        old = mk.fp32_precision
        try:
            mk.fp32_precision = "bf16"
            assert torch.equal(stein_direction(z, s, 1.2), ref)
            assert mk.fp32_precision == "bf16"
        finally:
            mk.fp32_precision = old
    far = stein_direction(z + 1e4, s, 1.2)
    assert torch.allclose(far.double(), phi64(z + 1e4, s, 1.2), atol=1e-5)
    bad = z.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match="z contains NaN"):
        stein_direction(bad, s, 1.2)
    with pytest.raises(ValueError, match="score contains NaN"):
        stein_direction(z, torch.where(bad.isnan(), math.inf, s), 1.2)
    with pytest.raises(ValueError, match="positive"):
        stein_direction(z, s, float("nan"))
    with pytest.raises(ValueError, match="shape of z"):
        stein_direction(z, s[:, :4], 1.2)


@pytest.mark.parametrize("n", [1, 5, _BOUNDS_MAX_ROWS, _BOUNDS_MAX_ROWS + 1, 300])
@pytest.mark.parametrize("upper", [False, True])
def test_clamp_with_zero_diagonal_is_clamp_and_fill(n, upper):
    g = torch.Generator().manual_seed(n)
    x = torch.randn(n, n, generator=g)
    if n > 1:
        x[0, -1] = float("nan")  # off the diagonal: stays NaN on both routes
    ref = (x.clamp_max(0.0) if upper else x.clamp_min(0.0))
    ref.fill_diagonal_(0.0)
    got = clamp_with_zero_diagonal_(x.clone(), upper=upper)
    assert torch.equal(got.nan_to_num(7.0), ref.nan_to_num(7.0))
    assert n == 1 or bool(got[0, -1].isnan())
    assert torch.equal(got.diagonal(), torch.zeros(n))


@pytest.mark.parametrize("r", [1, 3, 9, 15, 16, 40])
def test_sym_mm_is_the_product(r):
    g = torch.Generator().manual_seed(r)
    a = torch.randn(70, 70, generator=g, dtype=torch.float64)
    k = a + a.T
    rhs = torch.randn(70, r, generator=g, dtype=torch.float64)
    got = sym_mm(k, rhs)
    assert got.shape == (70, r)
    assert torch.allclose(got, k @ rhs, rtol=1e-12, atol=1e-12)
    assert narrow_rhs(r, k.device) == (r < 16)
    if r > 1:  # the narrow route returns the transposed (column-major) view
        assert got.is_contiguous() == (r >= 16)


def test_centre_rows_shifts_every_row_alike():
    """Identical rows stay identical and, on a 2^-8 grid far from the origin (where every row is
    within a factor 2 of the centre: Sterbenz), differences of rows are exact: the rounding of
    the mean only moves the common shift."""
    g = torch.Generator().manual_seed(23)
    base = torch.randint(-256, 256, (37, 3), generator=g).float() / 256
    for shift in (0.0, 100.0, -1e4):
        z = torch.cat([base, base[:5]]) + shift
        zc = centre_rows(z)
        assert torch.equal(zc[:5], zc[37:])
        # the centre is the mean up to float32 summation rounding: a few ulp of the data
        assert float(zc.mean(0).abs().max()) <= 8 * torch.finfo(torch.float32).eps * max(abs(shift), 1.0)
        if shift:
            assert torch.equal(zc[1:] - zc[:-1], z[1:] - z[:-1])


def test_expanded_sq_dists_both_clamp_routes_match_float64():
    g = torch.Generator().manual_seed(24)
    for n in (_BOUNDS_MAX_ROWS, _BOUNDS_MAX_ROWS + 30):
        z = torch.randn(n, 6, generator=g)
        z[1] = z[0]
        d2, sq = expanded_sq_dists(centre_rows(z))
        ref = ((z.double()[:, None] - z.double()[None]) ** 2).sum(-1)
        assert float(d2.min()) >= 0.0 and torch.equal(d2.diagonal(), torch.zeros(n))
        assert torch.allclose(d2.double(), ref, atol=1e-5)


@pytest.mark.usefixtures("native_route")
@pytest.mark.parametrize("d", [2, 8, 15, 16, 33])
@pytest.mark.parametrize("kernel,bw", [("rbf", 1.3), ("imq", 2.0), ("rbf", "median"), ("rbf", (0.7, 1.4))])
def test_fused_mmd_on_both_product_orientations_matches_float64(d, kernel, bw):
    g = torch.Generator().manual_seed(d)
    x = torch.randn(60, d, generator=g).requires_grad_(True)
    y = (torch.randn(50, d, generator=g) + 0.4).requires_grad_(True)
    v = mmd(x, y, kernel, bw)
    v.backward()
    x64, y64 = x.detach().double().requires_grad_(True), y.detach().double().requires_grad_(True)
    scales = bw if isinstance(bw, tuple) else ((bw,) if bw != "median" else None)
    if scales is None:
        from infovae.functional import resolve_bandwidth

        scales = resolve_bandwidth(x.detach(), y.detach(), kernel, bw)
    ref = mmd_autograd64(x64, y64, kernel, scales, "biased")
    ref.backward()
    assert float(v.detach()) == pytest.approx(float(ref.detach()), rel=1e-4, abs=1e-7)
    assert torch.allclose(x.grad.double(), x64.grad, rtol=1e-3, atol=1e-6)
    assert torch.allclose(y.grad.double(), y64.grad, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("bw", [1.1, "median"])
def test_fast_stein_equals_the_general_path_bitwise(monkeypatch, bw):
    """With the fast function disabled the general path runs the same arithmetic: same bits,
    for the fixed bandwidth and the median heuristic (both product orientations)."""
    g = torch.Generator().manual_seed(25)
    monkeypatch.setattr(sys.modules["infovae.functional.native"], "ENABLED", False)  # the eager fast function
    cases = [(torch.randn(n, d, generator=g) * 2 + 1, torch.randn(n, d, generator=g)) for n, d in ((2, 1), (64, 8), (130, 4), (96, 40))]
    fast = [stein_direction(z, s, bw) for z, s in cases]
    monkeypatch.setattr(stein_module, "_small_direction", lambda *a: None)
    for (z, s), got in zip(cases, fast):
        assert torch.equal(got, stein_direction(z, s, bw))


@pytest.mark.usefixtures("native_route")
def test_fast_stein_median_degenerate_and_non_finite():
    """Coinciding rows fall back to the general path's rule (sigma = 1 when all coincide);
    non-finite z is named before any selection."""
    same = torch.ones(6, 3)
    assert torch.allclose(stein_direction(same, -same), -same)
    half = torch.cat([torch.zeros(5, 2), torch.randn(3, 2)])
    assert torch.isfinite(stein_direction(half, -half)).all()
    bad = torch.randn(8, 2)
    bad[2, 0] = float("inf")
    with pytest.raises(ValueError, match="z contains NaN"):
        stein_direction(bad, torch.zeros(8, 2))


def test_run_exact_forces_and_restores_the_precision_even_on_errors():
    from infovae.functional.distances import run_exact

    mk = torch.backends.mkldnn.matmul
    if not hasattr(mk, "fp32_precision"):
        pytest.skip("torch without the fp32_precision API")
    old = mk.fp32_precision
    seen = []

    def probe(fail):
        seen.append((mk.fp32_precision, torch.is_autocast_enabled("cpu")))
        if fail:
            raise KeyError("boom")
        return 7

    try:
        mk.fp32_precision = "bf16"
        assert run_exact(torch.device("cpu"), probe, False) == 7
        with pytest.raises(KeyError):
            run_exact(torch.device("cpu"), probe, True)
        assert mk.fp32_precision == "bf16"
        with torch.autocast("cpu", dtype=torch.bfloat16):
            run_exact(torch.device("cpu"), probe, False)
            assert torch.is_autocast_enabled("cpu")
    finally:
        mk.fp32_precision = old
    assert seen == [("ieee", False)] * 3


@pytest.mark.usefixtures("native_route")
@pytest.mark.parametrize("d", [2, 8, 40])
def test_fused_mmd_gradients_are_contiguous_rows(d):
    """The transposed product gives a column-major gradient internally; what autograd hands
    on is contiguous (a strided gradient went wrong through the two-rank gather)."""
    x = torch.randn(64, d, requires_grad=True)
    y = torch.randn(64, d, requires_grad=True)
    (gx, gy) = torch.autograd.grad(mmd(x, y, "rbf", 1.5), (x, y))
    assert gx.is_contiguous() and gy.is_contiguous()


fused_module = sys.modules["infovae.functional.fused"]


@pytest.mark.parametrize("route", ["stacked", "combined"])
@pytest.mark.parametrize("bw", [(0.6, 1.2), (0.6, 1.2, 2.4)])
@pytest.mark.parametrize("n,m,d", [(64, 64, 8), (50, 70, 3), (100, 28, 20)])
def test_rank_one_rbf_routes_match_float64(monkeypatch, route, bw, n, m, d):
    """The biased rbf estimator with a sum of bandwidths takes its weights as w w^T in the right-hand
    side (issue 13, round 4): the sigmas as one stacked product, or combined into E and K first, each
    against float64 autograd; the value without a gradient is the value with one, bitwise."""
    monkeypatch.setattr(sys.modules["infovae.functional.native"], "ENABLED", False)  # the eager routes under test
    monkeypatch.setattr(fused_module, "_STACKED_MAX_WORK", 1 << 30 if route == "stacked" else 0)
    calls = []
    real = fused_module._rank_one_rbf
    monkeypatch.setattr(fused_module, "_rank_one_rbf", lambda *a: calls.append(1) or real(*a))
    g = torch.Generator().manual_seed(n + m + d)
    x = (torch.randn(n, d, generator=g) * 1.1).requires_grad_(True)
    y = (torch.randn(m, d, generator=g) + 0.3).requires_grad_(True)
    v = mmd(x, y, "rbf", bw)
    v.backward()
    with torch.no_grad():
        assert mmd(x, y, "rbf", bw).item() == v.item()
    assert len(calls) == 2  # the route under test ran, with and without a gradient
    x64, y64 = x.detach().double().requires_grad_(True), y.detach().double().requires_grad_(True)
    ref = mmd_autograd64(x64, y64, "rbf", bw, "biased")
    ref.backward()
    assert float(v.detach()) == pytest.approx(float(ref.detach()), rel=1e-5, abs=1e-7)
    assert torch.allclose(x.grad.double(), x64.grad, rtol=1e-4, atol=1e-7)
    assert torch.allclose(y.grad.double(), y64.grad, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("bw", [1e200, (1e200, 2e200)])
def test_rbf_with_an_underflowing_factor_is_finite_and_zero_gradient(bw):
    """sigma so large that 1 / (2 sigma^2) underflows to 0 in float64: every kernel value is 1, the
    value is 0 up to float64 rounding and the gradient exactly 0 (no division by the factor)."""
    x = torch.randn(30, 2, dtype=torch.float64, requires_grad=True)
    y = torch.randn(30, 2, dtype=torch.float64) + 1.0
    v = mmd(x, y, "rbf", bw)
    v.backward()
    assert abs(float(v)) <= 1e-12 and not x.grad.any()
