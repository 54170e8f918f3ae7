"""The fused small-sample path of mmd (infovae.functional.fused) and the pooled canonical
order it uses (distances.canonical_pooled), against float64 brute force and the tiled path."""
from __future__ import annotations

import math
import sys

import pytest
import torch

from infovae.functional import mmd, stein_direction
from infovae.functional.distances import canonical_pooled
from infovae.functional.fused import fused_max_rows
from test_functional_mmd import mmd_autograd64 as brute_mmd64  # the MMD tests' float64 autograd reference

# every test here on both routes: the C kernel where it serves, and the eager fused path alone
pytestmark = pytest.mark.usefixtures("native_route")

mmd_module = sys.modules["infovae.functional.mmd"]


def median_pairs64(z):
    """Lower median of ||z_i - z_j||^2 over i < j, float64, by sorting."""
    z = z.double()
    r = ((z[:, None] - z[None]) ** 2).sum(-1)
    iu = torch.triu_indices(len(z), len(z), 1)
    vals = r[iu[0], iu[1]].sort().values
    return float(vals[(len(vals) - 1) // 2])


CASES = [
    ("rbf", (1.7,), "biased"),
    ("rbf", (0.8, 1.6, 3.2), "biased"),
    ("rbf", (1.7,), "unbiased"),
    ("imq", (2.0,), "biased"),
    ("imq", (1.0, 4.0), "unbiased"),
    ("rbf", "median", "biased"),
    ("imq", "median", "unbiased"),
]


@pytest.mark.parametrize("kernel,bw,estimator", CASES)
@pytest.mark.parametrize("n,m,d", [(64, 64, 8), (40, 27, 3), (128, 128, 32)])
def test_fused_matches_float64_brute_force(kernel, bw, estimator, n, m, d):
    assert n + m <= fused_max_rows(torch.device("cpu"))  # these sizes take the fused path
    g = torch.Generator().manual_seed(n + 7 * m + d)
    x = torch.randn(n, d, generator=g)
    y = torch.randn(m, d, generator=g) * 1.2 + 0.3
    if bw == "median":
        med = median_pairs64(torch.cat([x, y]))
        scales = (math.sqrt(med),) if kernel == "rbf" else (med,)
        got_scales = mmd_module.resolve_bandwidth(x, y, kernel, "median")
        assert got_scales[0] == pytest.approx(scales[0], rel=1e-5)
    else:
        scales = bw
    xr, yr = x.double().requires_grad_(True), y.double().requires_grad_(True)
    ref_t = brute_mmd64(xr, yr, kernel, scales, estimator)
    ref_t.backward()
    ref = float(ref_t.detach())
    for dtype, vtol in ((torch.float32, 2e-6), (torch.float64, 1e-12)):
        xa, ya = x.to(dtype).clone().requires_grad_(True), y.to(dtype).clone().requires_grad_(True)
        v = mmd(xa, ya, kernel, bw, estimator)
        assert v.dtype == dtype
        # a median resolved in float32 moves the value by its relative error (~1e-6)
        tol = vtol if bw != "median" or dtype == torch.float64 else vtol + 1e-5 * abs(ref)
        assert abs(float(v.detach()) - ref) <= tol * max(1.0, abs(ref))
        v.backward()
        gtol = 1e-12 if dtype == torch.float64 else 1e-6
        assert torch.allclose(xa.grad.double(), xr.grad, rtol=1e-4, atol=gtol)
        assert torch.allclose(ya.grad.double(), yr.grad, rtol=1e-4, atol=gtol)


@pytest.mark.parametrize("kernel,bw,estimator", CASES)
def test_fused_agrees_with_the_tiled_path(kernel, bw, estimator):
    """block_size=16 forces the tiled sweep; both give the same value and gradient up
    to float32 rounding (and exactly the same median bandwidth)."""
    g = torch.Generator().manual_seed(11)
    x0, y0 = torch.randn(50, 6, generator=g), torch.randn(50, 6, generator=g) + 0.4
    out = {}
    for block in (None, 16):
        x, y = x0.clone().requires_grad_(True), y0.clone().requires_grad_(True)
        v = mmd(x, y, kernel, bw, estimator, block_size=block)
        v.backward()
        out[block] = (float(v), x.grad, y.grad)
    (v1, gx1, gy1), (v2, gx2, gy2) = out[None], out[16]
    assert abs(v1 - v2) <= 1e-6
    assert torch.allclose(gx1, gx2, rtol=1e-4, atol=1e-7) and torch.allclose(gy1, gy2, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("n,m", [(30, 30), (30, 20), (20, 30), (1, 1), (1, 5)])
def test_canonical_pooled_is_the_reference_canonical_pair(n, m):
    """Same rows, same order, same first sample as sorting each sample with canonical_order
    and ordering the pair as mmd.canonical_pair does, with duplicate rows (key ties)."""
    g = torch.Generator().manual_seed(n * 100 + m)
    x = torch.randint(-2, 3, (n, 3), generator=g).float()  # few distinct rows: ties
    y = torch.randint(-2, 3, (m, 3), generator=g).float() * 0.5
    for a_in, b_in in ((x, y), (y, x)):
        pair = canonical_pooled(a_in, b_in, torch.float32)
        a, b, identical = mmd_module.canonical_pair(a_in, b_in)
        assert torch.equal(pair.z, torch.cat([a, b])) and pair.n_first == a.shape[0]
        assert pair.identical == identical
        assert torch.equal(torch.cat([a_in, b_in])[pair.src], pair.z)
        perm_a, perm_b = torch.randperm(a_in.shape[0], generator=g), torch.randperm(b_in.shape[0], generator=g)
        again = canonical_pooled(a_in[perm_a], b_in[perm_b], torch.float32)
        assert torch.equal(again.z, pair.z)  # permutation invariant, bitwise


def test_fused_identical_multisets_and_one_sided_gradients():
    g = torch.Generator().manual_seed(12)
    x = torch.randn(64, 5, generator=g)
    xa, ya = x.clone().requires_grad_(True), x[torch.randperm(64, generator=g)].clone().requires_grad_(True)
    v = mmd(xa, ya, "rbf", 1.0)
    v.backward()
    assert float(v) == 0.0 and not xa.grad.any() and not ya.grad.any()
    u = mmd(x, x[torch.randperm(64, generator=g)], "rbf", 1.0, "unbiased")  # U-statistic: not 0, finite
    assert math.isfinite(float(u))
    # only y requires grad: its gradient equals the brute-force one
    y = (torch.randn(64, 5, generator=g) + 1.0).requires_grad_(True)
    mmd(x, y, "imq", (1.0, 2.0)).backward()
    yr = y.detach().double().requires_grad_(True)
    brute_mmd64(x.double(), yr, "imq", (1.0, 2.0), "biased").backward()
    assert torch.allclose(y.grad.double(), yr.grad, rtol=1e-4, atol=1e-7)


def test_fused_bad_values_are_named_before_any_result():
    x, y = torch.randn(20, 3), torch.randn(20, 3)
    for bad in (float("nan"), float("inf")):
        xb = x.clone()
        xb[3, 1] = bad
        with pytest.raises(ValueError, match="^x contains NaN or infinite values"):
            mmd(xb, y, "rbf", 1.0)
        with pytest.raises(ValueError, match="^y contains NaN or infinite values"):
            mmd(x, xb, "rbf", "median")
    # float64 values whose keys overflow are finite: no error, a finite result
    big = torch.randn(10, 2, dtype=torch.float64) * 1e306
    assert math.isfinite(float(mmd(big, big.flip(0) * 0.5, "rbf", 1e306)))


def test_stein_median_shares_one_matrix_and_matches_float64():
    """stein_direction's median and kernel come from one distance matrix: the result equals
    the float64 SVGD direction at the numpy-median bandwidth."""
    g = torch.Generator().manual_seed(13)
    z = torch.randn(96, 4, generator=g) * 1.5 + 2.0
    s = -z
    phi = stein_direction(z, s, "median")
    z64 = z.double()
    r = ((z64[:, None] - z64[None]) ** 2).sum(-1)
    sigma = math.sqrt(float(r.reshape(-1).median() + r.reshape(-1).sort().values[r.numel() // 2]) / 2.0 / (2 * math.log(97)))
    k = torch.exp(-r / (2 * sigma**2))
    ref = (k @ s.double() + (z64 * k.sum(1, keepdim=True) - k @ z64) / sigma**2) / 96
    assert torch.allclose(phi.double(), ref, rtol=1e-4, atol=1e-5)
