"""infovae.functional.mmd / pairwise_sq_dists and the mmd divergence plugin."""
from __future__ import annotations

import math
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import infovae
from infovae.functional import mmd, pairwise_sq_dists, resolve_bandwidth
from infovae.testing import DivergenceContract, check_divergence
from infovae.testing import strategies as S

mmd_module = sys.modules["infovae.functional.mmd"]  # the package attribute `mmd` is the function
SETTINGS = settings(max_examples=30, deadline=None, derandomize=True, database=None)


# ---------------------------------------------------------------------------
# independent float64 references
# ---------------------------------------------------------------------------
def kernel_ref(a, b, kernel, scales):
    """k(a, b) for two 1-D float64 vectors, written out."""
    r = sum((float(ai) - float(bi)) ** 2 for ai, bi in zip(a, b))
    if kernel == "rbf":
        return sum(math.exp(-r / (2.0 * s * s)) for s in scales)
    return sum(s / (s + r) for s in scales)


def mmd_loops(x, y, kernel, scales, estimator):
    """MMD^2 by explicit double loops in float64 Python arithmetic."""
    n, m = len(x), len(y)
    sxx = sum(kernel_ref(x[i], x[j], kernel, scales) for i in range(n) for j in range(n) if estimator == "biased" or i != j)
    syy = sum(kernel_ref(y[i], y[j], kernel, scales) for i in range(m) for j in range(m) if estimator == "biased" or i != j)
    sxy = sum(kernel_ref(x[i], y[j], kernel, scales) for i in range(n) for j in range(m))
    if estimator == "biased":
        return sxx / n**2 + syy / m**2 - 2 * sxy / (n * m)
    return sxx / (n * (n - 1)) + syy / (m * (m - 1)) - 2 * sxy / (n * m)


def mmd_autograd64(x, y, kernel, scales, estimator):
    """MMD^2 by float64 broadcasting, differentiable by autograd (gradient reference)."""

    def k(a, b):
        r = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        return sum(torch.exp(-r / (2 * s * s)) if kernel == "rbf" else s / (s + r) for s in scales)

    n, m = x.shape[0], y.shape[0]
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    if estimator == "biased":
        return kxx.mean() + kyy.mean() - 2 * kxy.mean()
    off = lambda t: t.sum() - t.diagonal().sum()  # noqa: E731
    return off(kxx) / (n * (n - 1)) + off(kyy) / (m * (m - 1)) - 2 * kxy.mean()


CASES = [
    ("rbf", (1.3,), "biased"),
    ("rbf", (0.5, 2.0), "unbiased"),
    ("imq", (2.0,), "biased"),
    ("imq", (0.3, 1.0, 4.0), "unbiased"),
]


# ---------------------------------------------------------------------------
# values and gradients against the references
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("kernel,scales,estimator", CASES)
def test_matches_double_loop_reference(kernel, scales, estimator):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(9, 3, generator=g, dtype=torch.float64)
    y = torch.randn(6, 3, generator=g, dtype=torch.float64) * 1.5 + 0.4  # n != m
    ref = mmd_loops(x.tolist(), y.tolist(), kernel, scales, estimator)
    got64 = mmd(x, y, kernel, scales, estimator)
    assert got64.dtype == torch.float64
    assert abs(float(got64) - ref) <= 1e-12 * max(1.0, abs(ref))
    got32 = mmd(x.float(), y.float(), kernel, scales, estimator)
    assert got32.dtype == torch.float32
    assert abs(float(got32) - ref) <= 2e-6


@pytest.mark.parametrize("kernel,scales,estimator", CASES)
@pytest.mark.parametrize("block", [None, 4])
def test_gradients_match_autograd_reference(kernel, scales, estimator, block):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(11, 4, generator=g)
    y = torch.randn(7, 4, generator=g) + 0.3
    xr, yr = (t.double().requires_grad_(True) for t in (x, y))
    mmd_autograd64(xr, yr, kernel, scales, estimator).backward()
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-6)):
        xa, ya = (t.to(dtype).requires_grad_(True) for t in (x, y))
        mmd(xa, ya, kernel, scales, estimator, block_size=block).backward()
        assert torch.allclose(xa.grad.double(), xr.grad, rtol=1e-4, atol=tol)
        assert torch.allclose(ya.grad.double(), yr.grad, rtol=1e-4, atol=tol)


def test_tiled_equals_dense_values_and_gradients():
    """Many small tiles (block 5: partial tiles at both group ends) vs one tile."""
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(37, 6, generator=g)
    y0 = torch.randn(23, 6, generator=g) * 0.8
    out = {}
    for block in (5, 1024):
        x, y = x0.clone().requires_grad_(True), y0.clone().requires_grad_(True)
        v = mmd(x, y, "imq", (1.0, 3.0), "unbiased", block_size=block)
        v.backward()
        out[block] = (v.detach(), x.grad, y.grad)
    (v1, gx1, gy1), (v2, gx2, gy2) = out[5], out[1024]
    # Only the order of float32 additions differs: a few eps of the O(k0 = 2) kernel terms that cancel.
    assert abs(float(v1 - v2)) <= 4 * torch.finfo(torch.float32).eps * 2
    assert torch.allclose(gx1, gx2, rtol=1e-5, atol=1e-8)
    assert torch.allclose(gy1, gy2, rtol=1e-5, atol=1e-8)


def test_median_bandwidth_definition():
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(20, 3, generator=g), torch.randn(15, 3, generator=g) + 1.0
    pooled = torch.cat([x, y]).double()
    r = ((pooled[:, None] - pooled[None]) ** 2).sum(-1)
    iu = torch.triu_indices(35, 35, 1)
    med = float(r[iu[0], iu[1]].median())  # lower median over pairs i < j
    (sigma,) = resolve_bandwidth(x, y, "rbf", "median")
    (c,) = resolve_bandwidth(x, y, "imq", "median")
    assert sigma == pytest.approx(math.sqrt(med), rel=1e-5)
    assert c == pytest.approx(med, rel=1e-5)
    assert float(mmd(x, y, "rbf", "median")) == float(mmd(x, y, "rbf", sigma))


def test_geomloss_gaussian_is_half_the_biased_mmd():
    geomloss = pytest.importorskip("geomloss")
    g = torch.Generator().manual_seed(5)
    x = torch.randn(50, 4, generator=g, dtype=torch.float64)
    y = torch.randn(40, 4, generator=g, dtype=torch.float64) + 0.5
    for sigma in (0.5, 1.0, 3.0):
        loss = geomloss.SamplesLoss("gaussian", blur=sigma, backend="tensorized")(x, y)
        assert float(loss) == pytest.approx(0.5 * float(mmd(x, y, "rbf", sigma)), rel=1e-10)


# ---------------------------------------------------------------------------
# properties (Hypothesis, float32 on the kit's 2^-8 grid)
# ---------------------------------------------------------------------------
KERNELS = st.sampled_from([("rbf", "median"), ("rbf", (0.7,)), ("imq", "median"), ("imq", (0.5, 2.0))])


@SETTINGS
@given(pair=S.sample_pairs(n=(1, 12), d=(1, 4)), kb=KERNELS)
def test_biased_nonnegative_symmetric_and_permutation_invariant_exactly(pair, kb):
    x, y = pair
    kernel, bw = kb
    v = mmd(x, y, kernel, bw)
    assert float(v) >= 0.0
    assert torch.equal(v, mmd(y, x, kernel, bw))  # bitwise: the pair is put in a canonical order
    px, py = torch.randperm(x.shape[0]), torch.randperm(y.shape[0])
    assert torch.equal(v, mmd(x[px], y[py], kernel, bw))  # bitwise: rows are sorted canonically


@SETTINGS
@given(x=S.sample_sets(n=(1, 14), d=(1, 4)), kb=KERNELS, seed=st.integers(0, 100))
def test_identical_multisets_give_exactly_zero(x, kb, seed):
    kernel, bw = kb
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    xa, ya = x.clone().requires_grad_(True), x[perm].clone().requires_grad_(True)
    v = mmd(xa, ya, kernel, bw)
    assert float(v.detach()) == 0.0
    v.backward()
    assert torch.equal(xa.grad, torch.zeros_like(x)) and torch.equal(ya.grad, torch.zeros_like(x))


@SETTINGS
@given(pair=S.distinct_pairs(n=(1, 12), d=(1, 4)), kb=KERNELS)
def test_positive_on_distinct_samples(pair, kb):
    x, y = pair
    kernel, bw = kb
    assert float(mmd(x, y, kernel, bw)) > 0.0


@SETTINGS
@given(pair=S.sample_pairs(n=(2, 12), d=(1, 4)), kb=KERNELS, shift=st.data())
def test_translation_invariance_float32(pair, kb, shift):
    """Shifts of +-100 and +-1e4 (exact in float32 on the grid) change the value by < 1e-4 relative."""
    x, y = pair
    kernel, bw = kb
    c = shift.draw(S.shifts(x.shape[1]))
    for est in ("biased", "unbiased"):
        a = float(mmd(x, y, kernel, bw, est))
        b = float(mmd(x + c, y + c, kernel, bw, est))
        assert abs(a - b) <= 1e-4 * max(abs(a), abs(b)) + 1e-7, (a, b)


def test_translation_invariance_against_float64_reference():
    """Gaussian data shifted by 1e4 in float32 (the shift's rounding is part of the data):
    our float32 value matches float64 on the same float32 numbers to 1e-4 relative."""
    g = torch.Generator().manual_seed(6)
    x = torch.randn(40, 5, generator=g)
    y = torch.randn(30, 5, generator=g) + 0.5
    for shift in (100.0, 1e4):
        xs, ys = x + shift, y + shift
        ref = float(mmd_autograd64(xs.double(), ys.double(), "rbf", (2.0,), "biased"))
        got = float(mmd(xs, ys, "rbf", 2.0))
        assert abs(got - ref) <= 1e-4 * abs(ref)


def test_unbiased_averages_to_zero_under_the_null_and_biased_does_not():
    g = torch.Generator().manual_seed(7)
    draws = 400
    xs = torch.randn(draws, 8, 2, generator=g)
    ys = torch.randn(draws, 8, 2, generator=g)
    u = torch.stack([mmd(x, y, "rbf", 1.0, "unbiased") for x, y in zip(xs, ys)]).double()
    b = torch.stack([mmd(x, y, "rbf", 1.0, "biased") for x, y in zip(xs, ys)]).double()
    se_u = float(u.std()) / math.sqrt(draws)
    se_b = float(b.std()) / math.sqrt(draws)
    assert abs(float(u.mean())) < 4 * se_u
    assert float(b.mean()) > 10 * se_b  # the V-statistic is biased upwards: the check can fail
    assert float(u.min()) < 0  # and the U-statistic does go negative


def test_gradients_finite_at_zero_distance():
    x = torch.tensor([[0.0, 1.0], [0.0, 1.0], [2.0, -1.0], [2.0, -1.0]])
    y = torch.tensor([[0.0, 1.0], [3.0, 3.0], [3.0, 3.0]])
    for kernel in ("rbf", "imq"):
        for est in ("biased", "unbiased"):
            xa, ya = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
            v = mmd(xa, ya, kernel, "median", est)
            v.backward()
            assert torch.isfinite(v) and torch.isfinite(xa.grad).all() and torch.isfinite(ya.grad).all()
            xb = x.clone().requires_grad_(True)
            mmd(xb, xb, kernel, 1.0, est).backward()
            assert torch.isfinite(xb.grad).all()


def test_bf16_autocast_gives_the_float32_result():
    g = torch.Generator().manual_seed(8)
    x, y = torch.randn(30, 4, generator=g), torch.randn(20, 4, generator=g) + 0.2
    ref = mmd(x, y, "rbf", "median")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = mmd(x, y, "rbf", "median")
        got_bf16_inputs = mmd(x.bfloat16(), y.bfloat16(), "imq", 1.0)
    assert got.dtype == torch.float32 and torch.equal(got, ref)
    assert got_bf16_inputs.dtype == torch.float32
    assert torch.equal(got_bf16_inputs, mmd(x.bfloat16().float(), y.bfloat16().float(), "imq", 1.0))
    xb = x.bfloat16().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mmd(xb, y, "rbf", 1.0).backward()
    assert xb.grad.dtype == torch.bfloat16 and torch.isfinite(xb.grad.float()).all()


def test_matmul_precision_settings_are_forced_and_restored():
    mk = torch.backends.mkldnn.matmul
    if not hasattr(mk, "fp32_precision"):
        pytest.skip("torch without the fp32_precision API")
    g = torch.Generator().manual_seed(9)
    x, y = torch.randn(64, 8, generator=g), torch.randn(64, 8, generator=g)
    ref = mmd(x, y, "rbf", 2.0)
    old = mk.fp32_precision
    try:
        mk.fp32_precision = "bf16"
        torch.backends.cuda.matmul.fp32_precision = "tf32"
        assert torch.equal(mmd(x, y, "rbf", 2.0), ref)
        assert mk.fp32_precision == "bf16" and torch.backends.cuda.matmul.fp32_precision == "tf32"
    finally:
        mk.fp32_precision = old
        torch.backends.cuda.matmul.fp32_precision = "ieee"


_MEMORY_PROBE = """
import torch
from infovae.bench.regularizers import peak_memory
from infovae.functional import mmd
g = torch.Generator().manual_seed(10)
x = torch.randn(4096, 8, generator=g).requires_grad_(True)
y = torch.randn(4096, 8, generator=g).requires_grad_(True)
def step():
    x.grad = y.grad = None
    mmd(x, y, "rbf", 3.0).backward()
step()
print(peak_memory(step, torch.device("cpu")))
"""


def test_memory_stays_tiled():
    """n = m = 4096, d = 8: one dense kernel block alone is 64 MiB; the tiled
    forward+backward must stay far below (tiles of 1024 x 1024 floats). In a
    subprocess: measuring changes how glibc allocates for the rest of the process."""
    import subprocess

    out = subprocess.run([sys.executable, "-c", _MEMORY_PROBE], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    peak = out.stdout.strip().splitlines()[-1]
    if peak == "None":
        pytest.skip("peak resident memory is not measurable here (needs Linux /proc and glibc)")
    assert int(peak) < 32 * 2**20, f"peak {int(peak) / 2**20:.1f} MiB"


# ---------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args,kwargs,match",
    [
        ((torch.zeros(3, 2), torch.zeros(3, 3)), {}, "same dimension"),
        ((torch.zeros(3), torch.zeros(3, 1)), {}, r"shape \(rows, dim\)"),
        ((torch.zeros(3, 2), torch.tensor([[0.0, float("nan")]])), {}, "NaN or infinite"),
        ((torch.zeros(3, 2, dtype=torch.long), torch.zeros(3, 2)), {}, "floating"),
        ((torch.zeros(3, 2), torch.zeros(3, 2)), {"kernel": "gauss"}, "unknown kernel"),
        ((torch.zeros(3, 2), torch.zeros(3, 2)), {"estimator": "v"}, "unknown estimator"),
        ((torch.zeros(3, 2), torch.zeros(3, 2)), {"bandwidth": -1.0}, "positive"),
        ((torch.zeros(3, 2), torch.zeros(3, 2)), {"bandwidth": []}, "empty"),
        ((torch.zeros(3, 2), torch.zeros(3, 2)), {"bandwidth": "mean"}, "median"),
        ((torch.zeros(1, 2), torch.zeros(3, 2)), {"estimator": "unbiased"}, "at least 2"),
    ],
)
def test_bad_inputs_raise_clear_errors(args, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        mmd(*args, **kwargs)


# ---------------------------------------------------------------------------
# pairwise_sq_dists
# ---------------------------------------------------------------------------
def test_pairwise_sq_dists_accuracy_and_exact_zeros():
    g = torch.Generator().manual_seed(11)
    x = torch.randn(30, 5, generator=g) + 1e4  # uncentred data: the expanded form alone would lose everything
    y = torch.cat([x[:7], torch.randn(10, 5, generator=g) + 1e4])
    d = pairwise_sq_dists(x, y)
    ref = ((x.double()[:, None] - y.double()[None]) ** 2).sum(-1)
    assert torch.allclose(d.double(), ref, rtol=1e-5, atol=1e-6)
    assert torch.equal(d[torch.arange(7), torch.arange(7)], torch.zeros(7))  # identical rows: exactly 0
    assert torch.equal(pairwise_sq_dists(x).diagonal(), torch.zeros(30))
    assert (d >= 0).all()


def test_pairwise_sq_dists_relative_accuracy_on_clustered_data():
    """Clusters far from the shared mean with near-duplicates at every scale: the
    expanded form alone would be off by 100% on the close pairs."""
    g = torch.Generator().manual_seed(14)
    centres = torch.randn(5, 8, generator=g) * 100
    x = centres[torch.randint(0, 5, (200,), generator=g)] + torch.randn(200, 8, generator=g) * torch.logspace(-3, 1, 200)[:, None]
    y = torch.cat([x[:50] + 1e-3 * torch.randn(50, 8, generator=g), x[50:60]])
    for a, b in ((x, y), (x, x)):
        d = pairwise_sq_dists(a, b).double()
        ref = ((a.double()[:, None] - b.double()[None]) ** 2).sum(-1)
        pos = ref > 0
        assert ((d - ref).abs()[pos] / ref[pos]).max() < 5e-4
        assert torch.equal(d[~pos], torch.zeros_like(d[~pos]))


def test_pairwise_sq_dists_gradient_finite_and_correct():
    g = torch.Generator().manual_seed(12)
    x = torch.randn(6, 3, generator=g, dtype=torch.float64)
    x = torch.cat([x, x[:2]]).requires_grad_(True)  # duplicate rows: zero distances off the diagonal
    w = torch.randn(8, 8, generator=g, dtype=torch.float64)
    (pairwise_sq_dists(x) * w).sum().backward()
    xr = x.detach().clone().requires_grad_(True)
    (((xr[:, None] - xr[None]) ** 2).sum(-1) * w).sum().backward()
    assert torch.allclose(x.grad, xr.grad, atol=1e-10)


# ---------------------------------------------------------------------------
# the plugin
# ---------------------------------------------------------------------------
class TestMMDContract(DivergenceContract):
    factory = "mmd"
    options = {}
    min_batch = 1


class TestUnbiasedRBFContract(DivergenceContract):
    factory = "mmd"
    options = {"kernel": "rbf", "estimator": "unbiased", "bandwidth": "0.5,2"}


def test_rbf_biased_passes_the_contract_too():
    report = check_divergence("mmd", {"kernel": "rbf", "bandwidth": "median"}, examples=10, min_batch=1)
    assert all(v == "passed" for k, v in report.items() if k != "own_state"), report


def test_plugin_registration_and_properties():
    reg = infovae.registry()
    info = reg.info("divergences", "mmd")
    assert [o.name for o in info.options] == ["kernel", "bandwidth", "estimator", "prior_samples"]
    div = reg.create("divergences", "mmd", {"bandwidth": "1,2.5", "prior_samples": "7", "estimator": "unbiased"})
    assert div.bandwidth == (1.0, 2.5) and div.prior_samples == 7
    assert div.properties == frozenset({"symmetric", "permutation_invariant", "translation_invariant"})
    assert reg.create("divergences", "mmd", {}).properties == infovae.DIVERGENCE_PROPERTIES
    with pytest.raises(infovae.PluginOptionError):
        reg.create("divergences", "mmd", {"bandwidth": "0"})


def test_plugin_forward_draws_prior_samples_and_matches_mmd():
    reg = infovae.registry()
    prior = infovae.StandardNormalPrior(3)
    z = torch.randn(10, 3, generator=torch.Generator().manual_seed(13)) + 1.0
    for k in (0, 25):
        div = reg.create("divergences", "mmd", {"kernel": "rbf", "bandwidth": "median", "prior_samples": k})
        torch.manual_seed(0)
        got = div(z, None, prior)
        torch.manual_seed(0)
        zp = prior.sample(k or 10)
        assert zp.shape == (k or 10, 3)
        assert torch.equal(got, mmd(z, zp, "rbf", "median"))


@pytest.mark.gpu
def test_cuda_agrees_with_cpu():
    from infovae.functional import mmd_permutation_test, stein_direction

    g = torch.Generator().manual_seed(15)
    x = torch.randn(3000, 16, generator=g)  # 3000 + 2500 rows: several tiles on either device
    y = torch.randn(2500, 16, generator=g) + 0.1
    for kernel, bw, est in (("rbf", "median", "biased"), ("imq", (0.5, 4.0), "unbiased")):
        out = {}
        for dev in ("cpu", "cuda"):
            xa, ya = x.to(dev).requires_grad_(True), y.to(dev).requires_grad_(True)
            v = mmd(xa, ya, kernel, bw, est)
            v.backward()
            out[dev] = (float(v), xa.grad.cpu(), ya.grad.cpu())
        (vc, gxc, gyc), (vg, gxg, gyg) = out["cpu"], out["cuda"]
        assert abs(vc - vg) <= 1e-5 * abs(vc) + 1e-7
        assert torch.allclose(gxc, gxg, rtol=1e-4, atol=1e-9) and torch.allclose(gyc, gyg, rtol=1e-4, atol=1e-9)
    z = torch.randn(2000, 8, generator=g)
    assert torch.allclose(stein_direction(z, -z), stein_direction(z.cuda(), -z.cuda()).cpu(), rtol=1e-4, atol=1e-6)
    xs, ys = x[:200], y[:200]
    pc = mmd_permutation_test(xs, ys, n_permutations=300, generator=torch.Generator().manual_seed(1)).p_value
    pg = mmd_permutation_test(xs.cuda(), ys.cuda(), n_permutations=300, generator=torch.Generator().manual_seed(1)).p_value
    assert float(pc) == pytest.approx(float(pg), abs=2 / 301)
