"""The C kernel behind ``mmd`` at training sizes (infovae.functional.native, _cpu_kernels.c):
float64 brute-force references, the guarantees bit for bit, where it serves and where it
declines, and its raw argument checks."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import types

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import require_native
from infovae.functional import mmd, resolve_bandwidth
from test_functional_mmd import mmd_autograd64

native = sys.modules["infovae.functional.native"]

# (the ``calls`` fixture is cleared per example)
SETTINGS = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def _spy_kernels(monkeypatch):
    """The C kernels, switched on, with every call recorded: (mmd results, (stein sigma argument,
    result) pairs)."""
    require_native()
    monkeypatch.setattr(native, "ENABLED", True)
    real = native._cpu_kernels
    mmd_seen, stein_seen = [], []

    def mmd_spy(*args):
        out = real.mmd_rbf_biased(*args)
        mmd_seen.append(out)
        return out

    def stein_spy(*args):
        out = real.stein_rbf(*args)
        stein_seen.append((args[4], out))
        return out

    monkeypatch.setattr(native, "_cpu_kernels", types.SimpleNamespace(mmd_rbf_biased=mmd_spy, stein_rbf=stein_spy))
    return mmd_seen, stein_seen


@pytest.fixture
def calls(monkeypatch):
    """Every MMD kernel call's result."""
    return _spy_kernels(monkeypatch)[0]


def _value_and_grads(x, y, bw):
    x = x.detach().clone().requires_grad_(True)
    y = y.detach().clone().requires_grad_(True)
    v = mmd(x, y, "rbf", bw)
    v.backward()
    return v.detach(), x.grad, y.grad


def _reference(x, y, scales):
    x64 = x.detach().double().requires_grad_(True)
    y64 = y.detach().double().requires_grad_(True)
    ref = mmd_autograd64(x64, y64, "rbf", scales, "biased")
    ref.backward()
    return float(ref.detach()), x64.grad, y64.grad


def _term_scale(x, y, scales):
    """Per gradient entry, the magnitudes of what the kernel adds up for it, in float64:
    4 |w_i| sum_{j != i} |w_j| E_ij (|c_jk| + |c_ik|) with E = sum_s c_s exp(-c_s r) and c the rows
    centred on the pooled mean (it forms sum_j a_ij c_j - c_i sum_j a_ij)."""
    z = torch.cat([x, y]).double()
    c = z - z.mean(0)
    n, m = x.shape[0], y.shape[0]
    w = torch.cat([torch.full((n,), 1.0 / n), torch.full((m,), 1.0 / m)]).double()
    r = ((z[:, None] - z[None]) ** 2).sum(-1)
    e = sum(torch.exp(-r / (2 * s * s)) / (2 * s * s) for s in scales)
    e.fill_diagonal_(0.0)
    t = 4 * w[:, None] * (w[None, :, None] * e[:, :, None] * (c[None].abs() + c[:, None].abs())).sum(1)
    return t[:n], t[n:]


def _assert_float64_accurate(v, gx, gy, ref, rgx, rgy, x, y, scales):
    """The kernel computes in float64 and rounds once to float32. The value: within half a float32
    ulp plus 1e-12 per bandwidth (the float64 cancellation of the reference and of the kernel, ~1e-16
    per kernel value). Each gradient entry: within one float32 ulp (or subnormal quantum) plus 1e-12 of the magnitudes the
    kernel adds up for it (float64 cancellation, ``_term_scale``; its exp is good to 1e-13).
    A float32-internal computation misses both by orders of magnitude."""
    assert abs(float(v) - ref) <= 2.0**-24 * abs(ref) + 1e-12 * len(scales)
    for g, r, t in zip((gx, gy), (rgx, rgy), _term_scale(x, y, scales)):
        err = (g.double() - r).abs()
        bound = 2.0**-23 * r.abs() + 2.0**-149 + 1e-12 * t  # (2^-149: float32's subnormal quantum)
        assert torch.all(err <= bound), (err / bound).max()


sizes = st.tuples(st.integers(1, 70), st.integers(1, 70), st.integers(1, 24))
sigmas = st.lists(st.floats(0.2, 8.0), min_size=1, max_size=4).map(tuple)


@SETTINGS
@given(sizes=sizes, bw=sigmas, seed=st.integers(0, 2**31 - 1), spread=st.floats(0.1, 4.0), shift=st.floats(-3, 3))
def test_value_and_gradient_match_float64_brute_force(calls, sizes, bw, seed, spread, shift):
    n, m, d = sizes
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g) * spread
    y = torch.randn(m, d, generator=g) + shift
    calls.clear()
    v, gx, gy = _value_and_grads(x, y, bw)
    assert len(calls) == 1 and calls[0] is not None  # the kernel served this call
    _assert_float64_accurate(v, gx, gy, *_reference(x, y, bw), x, y, bw)


def test_the_default_regularizer_is_served_and_accurate(calls):
    """The MMD plugin's default (rbf, sigma 1, 2, 4, biased) on a training-size batch."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 8, generator=g) * 0.7 + 0.2, torch.randn(64, 8, generator=g)
    v, gx, gy = _value_and_grads(x, y, (1.0, 2.0, 4.0))
    assert len(calls) == 1 and calls[0] is not None
    _assert_float64_accurate(v, gx, gy, *_reference(x, y, (1.0, 2.0, 4.0)), x, y, (1.0, 2.0, 4.0))


def test_symmetry_and_permutation_invariance_bit_for_bit(calls):
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(48, 5, generator=g), torch.randn(48, 5, generator=g) * 1.5
    bw = (0.8, 2.0)
    v, gx, gy = _value_and_grads(x, y, bw)
    vs, gys, gxs = _value_and_grads(y, x, bw)
    assert torch.equal(v, vs) and torch.equal(gx, gxs) and torch.equal(gy, gys)
    px, py = torch.randperm(48, generator=g), torch.randperm(48, generator=g)
    vp, gxp, gyp = _value_and_grads(x[px], y[py], bw)
    assert torch.equal(v, vp) and torch.equal(gxp, gx[px]) and torch.equal(gyp, gy[py])
    assert all(c is not None for c in calls)


def test_value_without_a_gradient_is_the_value_with_one(calls):
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(30, 4, generator=g), torch.randn(41, 4, generator=g) + 0.5
    v, _, _ = _value_and_grads(x, y, (1.5,))
    with torch.no_grad():
        assert torch.equal(mmd(x, y, "rbf", (1.5,)), v)
    assert len(calls) == 2 and None not in calls


def test_translation_safety(calls):
    """Rows far from the origin: centred in float64 before any distance, so the value is that of
    the same float32 rows in float64, not the expanded form's cancellation."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(40, 3, generator=g) * 0.01 + 3.0e4
    y = torch.randn(40, 3, generator=g) * 0.01 + 3.0e4 + 0.01
    v, gx, gy = _value_and_grads(x, y, (0.01,))
    assert calls[-1] is not None
    _assert_float64_accurate(v, gx, gy, *_reference(x, y, (0.01,)), x, y, (0.01,))


def test_far_apart_samples_underflow_to_zero_cross_terms(calls):
    x = torch.randn(20, 2)
    y = torch.randn(20, 2) + 500.0
    v, gx, gy = _value_and_grads(x, y, (0.05,))
    assert calls[-1] is not None and torch.isfinite(v)
    _assert_float64_accurate(v, gx, gy, *_reference(x, y, (0.05,)), x, y, (0.05,))


def test_the_same_multiset_is_declined_and_exactly_zero(calls):
    g = torch.Generator().manual_seed(4)
    x = torch.randn(32, 6, generator=g)
    v, gx, gy = _value_and_grads(x, x[torch.randperm(32, generator=g)], (1.0, 2.0))
    assert calls == [None]  # declined: the eager path gives the exact zero
    assert float(v) == 0.0 and not gx.any() and not gy.any()


def test_a_tie_inside_a_sample_is_declined_and_still_right(calls):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(30, 4, generator=g)
    x[7] = x[3]  # two rows with the same canonical key
    y = torch.randn(30, 4, generator=g) + 0.2
    v, gx, gy = _value_and_grads(x, y, (1.3,))
    assert calls == [None]
    ref, rgx, rgy = _reference(x, y, (1.3,))
    assert float(v) == pytest.approx(ref, rel=1e-5, abs=1e-7)
    assert torch.allclose(gx.double(), rgx, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_rows_get_the_eager_error(calls, bad):
    x, y = torch.randn(10, 3), torch.randn(10, 3)
    y[4, 1] = bad
    with pytest.raises(ValueError, match="y"):
        mmd(x, y, "rbf", 1.0)
    assert calls == [None]


def test_median_heuristic_scale_is_the_eager_selection(calls):
    """With bandwidth "median" the scale comes from the eager path's selection and the kernel
    evaluates: the same bits as passing that scale explicitly."""
    g = torch.Generator().manual_seed(6)
    x, y = torch.randn(50, 7, generator=g), torch.randn(45, 7, generator=g) * 2
    scales = resolve_bandwidth(x, y, "rbf", "median")
    assert torch.equal(mmd(x, y, "rbf", "median"), mmd(x, y, "rbf", scales))
    assert len(calls) == 2 and None not in calls


@pytest.mark.parametrize(
    "case",
    ["float64", "imq", "unbiased", "large", "switched-off"],
)
def test_it_serves_only_where_it_claims(calls, monkeypatch, case):
    x, y = torch.randn(40, 4), torch.randn(40, 4)
    kernel, estimator = "rbf", "biased"
    if case == "float64":
        x, y = x.double(), y.double()
    elif case == "imq":
        kernel = "imq"
    elif case == "unbiased":
        estimator = "unbiased"
    elif case == "large":
        x, y = torch.randn(200, 16), torch.randn(200, 16)  # N^2 d = 2.56e6 > MAX_WORK
    else:
        monkeypatch.setattr(native, "ENABLED", False)
    mmd(x, y, kernel, 1.0, estimator)
    assert calls == []


def test_the_environment_switch_turns_it_off():
    code = "import infovae.functional.native as n; print(n.ENABLED)"
    env = dict(os.environ, INFOVAE_NATIVE="0")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_without_the_extension_the_eager_path_serves(monkeypatch):
    monkeypatch.setattr(native, "_cpu_kernels", None)
    assert not native.available() and not native.enabled()
    x, y = torch.randn(20, 3), torch.randn(20, 3)
    ref, _, _ = _reference(x, y, (1.0,))
    assert float(mmd(x, y, "rbf", 1.0)) == pytest.approx(ref, rel=1e-5, abs=1e-7)


def test_concurrent_calls_agree():
    """The kernel releases the GIL and keeps its buffers per call."""
    require_native()
    g = torch.Generator().manual_seed(7)
    pairs = [(torch.randn(64, 8, generator=g), torch.randn(64, 8, generator=g)) for _ in range(4)]
    want = [native.mmd_rbf_biased(x, y, (1.0, 2.0)) for x, y in pairs]
    got = [None] * 4

    def work(i):
        for _ in range(50):
            got[i] = native.mmd_rbf_biased(*pairs[i], (1.0, 2.0))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(torch.equal(a, b) for a, b in zip(got, want))


def test_raw_kernel_rejects_bad_arguments():
    require_native()
    k = native._cpu_kernels
    x = torch.randn(4, 2)
    p = x.data_ptr()
    with pytest.raises(ValueError, match="out of range"):
        k.mmd_rbf_biased(p, p, 0, 4, 2, (1.0,), 0, 0)
    with pytest.raises(ValueError, match="sigmas"):
        k.mmd_rbf_biased(p, p, 4, 4, 2, (), 0, 0)
    with pytest.raises(ValueError, match="positive"):
        k.mmd_rbf_biased(p, p, 4, 4, 2, (0.0,), 0, 0)
    with pytest.raises(ValueError, match="gradient address"):
        k.mmd_rbf_biased(p, p, 4, 4, 2, (1.0,), p, 0)
    with pytest.raises(TypeError):
        k.mmd_rbf_biased(p, p, 4, 4, 2, ("a",), 0, 0)


# ---------------------------------------------------------------------------
# the SVGD direction
# ---------------------------------------------------------------------------
from infovae.functional import stein_direction, svgd_median_bandwidth  # noqa: E402
from test_functional_stein import phi_loops  # noqa: E402


@pytest.fixture
def stein_calls(monkeypatch):
    """Every Stein kernel call's sigma argument and result."""
    return _spy_kernels(monkeypatch)[1]


def _median_sigma64(z):
    """numpy's median of the full n x n matrix of float64 squared distances, / (2 log(n + 1)), sqrt."""
    import numpy as np

    z = z.double()
    r = ((z[:, None] - z[None]) ** 2).sum(-1).numpy()
    return float(np.sqrt(np.median(r) / (2.0 * np.log(z.shape[0] + 1.0))))


def _assert_direction_accurate(phi, z, s, sigma):
    """float64 inside, rounded once: each entry within one float32 ulp (or subnormal quantum) plus
    1e-12 of the magnitudes it adds up, (1/n) sum_j K_ij (|s_j| + (|c_i| + |c_j|) / sigma^2)."""
    ref = phi_loops(z.double(), s.double(), (sigma,))
    z64, s64 = z.double(), s.double()
    c = z64 - z64.mean(0)
    k = torch.exp(-((z64[:, None] - z64[None]) ** 2).sum(-1) / (2 * sigma * sigma))
    scale = (k[:, :, None] * (s64.abs()[None] + (c.abs()[None] + c.abs()[:, None]) / sigma**2)).sum(1) / z.shape[0]
    bound = 2.0**-23 * ref.abs() + 2.0**-149 + 1e-12 * scale
    err = (phi.double() - ref).abs()
    assert torch.all(err <= bound), (err / bound).max()


@SETTINGS
@given(n=st.integers(1, 60), d=st.integers(1, 12), seed=st.integers(0, 2**31 - 1), spread=st.floats(0.1, 4.0),
       median=st.booleans(), sigma=st.floats(0.2, 6.0))
def test_stein_direction_matches_float64_loops(stein_calls, n, d, seed, spread, median, sigma):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, d, generator=g) * spread + 1.0
    s = torch.randn(n, d, generator=g)
    stein_calls.clear()
    phi = stein_direction(z, s, "median" if median else sigma)
    if median and n < 2:
        assert stein_calls == [(0.0, None)]  # declined: the eager path's rule for one particle
        return
    assert len(stein_calls) == 1 and stein_calls[0][1] is not None
    used = stein_calls[0][1]
    if median:
        assert used == pytest.approx(_median_sigma64(z), rel=1e-12)
    else:
        assert used == sigma
    _assert_direction_accurate(phi, z, s, used)


def test_stein_median_sigma_is_the_direction_s(stein_calls):
    """svgd_median_bandwidth gives the kernel's sigma: passing it explicitly gives the same bits."""
    g = torch.Generator().manual_seed(8)
    z, s = torch.randn(64, 8, generator=g), torch.randn(64, 8, generator=g)
    sigma = svgd_median_bandwidth(z)
    assert sigma == pytest.approx(_median_sigma64(z), rel=1e-12)
    assert torch.equal(stein_direction(z, s, "median"), stein_direction(z, s, sigma))
    assert all(out is not None for _, out in stein_calls) and len(stein_calls) == 3


def test_stein_low_precision_inputs_give_their_float32_copy_s_direction(stein_calls):
    z = torch.randn(40, 3).bfloat16()
    s = (-z).bfloat16()
    assert torch.equal(stein_direction(z, s), stein_direction(z.float(), s.float()))
    assert stein_direction(z, s).dtype == torch.float32


def test_stein_declines_what_the_eager_path_must_decide(stein_calls):
    same = torch.ones(6, 3)
    assert torch.allclose(stein_direction(same, -same), -same)  # median 0: the eager path's sigma = 1
    assert stein_calls[-1] == (0.0, None)
    bad = torch.randn(8, 2)
    bad[2, 0] = float("nan")
    with pytest.raises(ValueError, match="z contains NaN"):
        stein_direction(bad, torch.zeros(8, 2), 1.0)
    with pytest.raises(ValueError, match="score contains NaN"):
        stein_direction(torch.randn(8, 2), bad, 1.0)
    assert stein_calls[-1][1] is None and stein_calls[-2][1] is None


@pytest.mark.parametrize("case", ["float64", "sum", "block", "large", "switched-off"])
def test_stein_is_served_only_where_it_claims(stein_calls, monkeypatch, case):
    z = torch.randn(40, 4)
    bw, kw = 1.0, {}
    if case == "float64":
        z = z.double()
    elif case == "sum":
        bw = (1.0, 2.0)
    elif case == "block":
        kw = {"block_size": 16}
    elif case == "large":
        z = torch.randn(128, 16)  # n^2 d = 262144 > STEIN_MAX_WORK
    else:
        monkeypatch.setattr(native, "ENABLED", False)
    stein_direction(z, -z, bw, **kw)
    assert stein_calls == []


def test_raw_stein_kernel_rejects_bad_arguments():
    require_native()
    k = native._cpu_kernels
    z = torch.randn(4, 2)
    p = z.data_ptr()
    with pytest.raises(ValueError, match="out of range"):
        k.stein_rbf(p, p, 0, 2, 1.0, p)
    with pytest.raises(ValueError, match="without scores"):
        k.stein_rbf(p, 0, 4, 2, 1.0, p)
    with pytest.raises(ValueError, match="positive"):
        k.stein_rbf(p, p, 4, 2, -1.0, p)
    with pytest.raises(ValueError, match="positive"):
        k.stein_rbf(p, p, 4, 2, float("inf"), p)
