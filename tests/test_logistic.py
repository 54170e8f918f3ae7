"""Discretized logistic mixture likelihood and sampler (infovae.functional.logistic), against float64 references."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chi2

from infovae.functional import discretized_logistic_mixture_log_prob as dlm_log_prob
from infovae.functional import sample_discretized_logistic_mixture as dlm_sample
from infovae.functional.logistic import MAX_LOG_SCALE, MIN_LOG_SCALE, logistic_mixture_params

LEVELS = torch.arange(256, dtype=torch.float64) / 127.5 - 1.0


def random_params(seed: int, k: int, c: int, n: int = 1, log_scale=(-4.0, 1.0), spread: float = 1.2):
    """Parameters of one pixel (1, K, ...) or n pixels, float64, with log-scales uniform in ``log_scale``."""
    g = torch.Generator().manual_seed(seed)
    lp = torch.randn(n, k, 1, 1, generator=g, dtype=torch.float64) * 2
    mu = (torch.rand(n, k, c, 1, 1, generator=g, dtype=torch.float64) * 2 - 1) * spread
    lo, hi = log_scale
    ls = lo + (hi - lo) * torch.rand(n, k, c, 1, 1, generator=g, dtype=torch.float64)
    co = torch.randn(n, k, 3, 1, 1, generator=g, dtype=torch.float64) * 1.5 if c == 3 else None
    return lp, mu, ls, co


def expand(params, n):
    return [None if p is None else p.expand(n, *p.shape[1:]) for p in params]


def pixels(values):
    """(N, C) float64 values -> (N, C, 1, 1) images of one pixel."""
    return values[:, :, None, None]


# -- normalization ------------------------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10**6), k=st.integers(1, 5), lo=st.floats(-7.0, 2.0))
def test_gray_probabilities_over_256_values_sum_to_one(seed, k, lo):
    params = random_params(seed, k, 1, log_scale=(lo, lo + 1.0))
    lp = dlm_log_prob(pixels(LEVELS[:, None]), *expand(params, 256), reduction="none")
    assert abs(float(lp.exp().sum()) - 1.0) < 1e-5


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10**6), k=st.integers(1, 4), r=st.integers(0, 255), g=st.integers(0, 255))
def test_rgb_each_channel_given_the_earlier_ones_sums_to_one(seed, k, r, g):
    params = expand(random_params(seed, k, 3), 256)
    # R: its term must not depend on G and B, so any G, B will do
    x = torch.stack((LEVELS, torch.full((256,), 0.3, dtype=torch.float64), torch.full((256,), -0.7, dtype=torch.float64)), 1)
    terms = dlm_log_prob(pixels(x), *params, reduction="none")[:, :, 0, 0]
    assert abs(float(terms[:, 0].exp().sum()) - 1.0) < 1e-5
    # G given R = r (B arbitrary), B given R = r, G = g
    x = torch.stack((LEVELS.new_full((256,), float(LEVELS[r])), LEVELS, LEVELS.new_full((256,), 0.1)), 1)
    assert abs(float(dlm_log_prob(pixels(x), *params, reduction="none")[:, 1].exp().sum()) - 1.0) < 1e-5
    x = torch.stack((LEVELS.new_full((256,), float(LEVELS[r])), LEVELS.new_full((256,), float(LEVELS[g])), LEVELS), 1)
    assert abs(float(dlm_log_prob(pixels(x), *params, reduction="none")[:, 2].exp().sum()) - 1.0) < 1e-5


def test_rgb_joint_over_all_256_cubed_values_sums_to_one():
    """Brute force over the 16.7M colours of one pixel, through reduction="sum" (no chain-rule terms)."""
    params = random_params(7, 2, 3)
    g, b = torch.meshgrid(LEVELS, LEVELS, indexing="ij")
    gb = torch.stack((g.flatten(), b.flatten()), 1)  # (65536, 2)
    total = torch.zeros((), dtype=torch.float64)
    chunk = 4
    for r0 in range(0, 256, chunk):
        r = LEVELS[r0 : r0 + chunk].repeat_interleave(gb.shape[0])[:, None]
        x = torch.cat((r, gb.repeat(chunk, 1)), 1)
        total += dlm_log_prob(pixels(x), *expand(params, x.shape[0]), reduction="sum").exp().sum()
    assert abs(float(total) - 1.0) < 1e-5


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10**6), k=st.integers(1, 4), c=st.sampled_from([1, 3]))
def test_chain_rule_terms_sum_to_the_total(seed, k, c):
    g = torch.Generator().manual_seed(seed)
    b, h, w = 2, 3, 4
    x = torch.randint(0, 256, (b, c, h, w), generator=g).double() / 127.5 - 1
    lp = torch.randn(b, k, h, w, generator=g, dtype=torch.float64)
    mu = torch.randn(b, k, c, h, w, generator=g, dtype=torch.float64)
    ls = torch.randn(b, k, c, h, w, generator=g, dtype=torch.float64) - 2
    co = torch.randn(b, k, 3, h, w, generator=g, dtype=torch.float64) if c == 3 else None
    terms = dlm_log_prob(x, lp, mu, ls, co, reduction="none")
    assert terms.shape == (b, c, h, w)
    torch.testing.assert_close(terms.flatten(1).sum(1), dlm_log_prob(x, lp, mu, ls, co), rtol=1e-12, atol=1e-9)
    assert (terms <= 1e-12).all()


def test_channel_terms_do_not_depend_on_later_channels():
    """Exact zeros in float64: R's term ignores G and B, G's ignores B; G's does use R (coefficients)."""
    params = random_params(3, 3, 3)
    x = torch.tensor([[0.2, -0.4, 0.6]], dtype=torch.float64).requires_grad_()
    terms = dlm_log_prob(pixels(x), *params, reduction="none")[0, :, 0, 0]
    jac = torch.stack([torch.autograd.grad(terms[c], x, retain_graph=True)[0][0] for c in range(3)])
    later = torch.ones(3, 3, dtype=torch.bool).triu(1)
    assert (jac[later] == 0).all()
    assert (jac[~later] != 0).all()


# -- edge bins and numerics ---------------------------------------------------------------------
def logistic_cdf(y, mu, s):
    return torch.sigmoid((y - mu) / s)


@pytest.mark.parametrize("mu,log_s", [(-0.9, -3.0), (0.0, -1.0), (0.8, -5.0), (-3.0, -2.0), (3.0, 0.5)])
def test_edge_and_middle_bins_match_the_logistic_cdf(mu, log_s):
    s = math.exp(log_s)
    lp = torch.zeros(256, 1, 1, 1, dtype=torch.float64)
    m = torch.full((256, 1, 1, 1, 1), mu, dtype=torch.float64)
    ls = torch.full((256, 1, 1, 1, 1), log_s, dtype=torch.float64)
    got = dlm_log_prob(pixels(LEVELS[:, None]), lp, m, ls, reduction="none")[:, 0, 0, 0]
    a = (LEVELS + 1 / 255 - mu) / s  # standardized upper bin edge
    b = (LEVELS - 1 / 255 - mu) / s  # lower edge
    # float64 reference: difference of the cdfs below the mean, of the survival functions above it
    want = torch.where(LEVELS < mu, torch.sigmoid(a) - torch.sigmoid(b), torch.sigmoid(-b) - torch.sigmoid(-a)).log()
    want[0] = torch.sigmoid(a[0]).log()  # v = 0 takes everything below
    want[255] = torch.sigmoid(-b[255]).log()  # v = 255 takes everything above
    ok = want > -700  # where float64 itself has not underflowed
    assert ok.sum() > 20
    torch.testing.assert_close(got[ok], want[ok], rtol=1e-8, atol=1e-10)


def test_edge_bins_collect_the_tails():
    """A component far below the range puts (almost) all mass on level 0, far above on 255."""
    lp = torch.zeros(2, 1, 1, 1, dtype=torch.float64)
    mu = torch.tensor([-40.0, 40.0], dtype=torch.float64).view(2, 1, 1, 1, 1)
    ls = torch.full((2, 1, 1, 1, 1), -2.0, dtype=torch.float64)
    x = torch.tensor([-1.0, 1.0], dtype=torch.float64).view(2, 1, 1, 1)
    torch.testing.assert_close(dlm_log_prob(x, lp, mu, ls), torch.zeros(2, dtype=torch.float64), atol=1e-12, rtol=0)


def test_far_tail_middle_bins_stay_accurate_in_float32():
    """Where sigmoid(a) - sigmoid(b) underflows in float32 the result must still be the float64 value."""
    mu, log_s = 0.9, -5.0  # x = 0 is 134 scales below the mean: cdf ~ 1e-58
    x = torch.zeros(1, 1, 1, 1)
    lp = torch.zeros(1, 1, 1, 1)
    m = torch.full((1, 1, 1, 1, 1), mu)
    ls = torch.full((1, 1, 1, 1, 1), log_s)
    got = dlm_log_prob(x, lp, m, ls)
    naive = torch.log(logistic_cdf(x + 1 / 255, m[:, 0], math.exp(log_s)) - logistic_cdf(x - 1 / 255, m[:, 0], math.exp(log_s)))
    assert not torch.isfinite(naive).all()  # the textbook formula fails here in float32 ...
    want = dlm_log_prob(x.double(), lp.double(), m.double(), ls.double())
    torch.testing.assert_close(got.double(), want, rtol=1e-6, atol=0)  # ... ours does not


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_no_nan_or_inf_at_extreme_parameters(dtype):
    ls_values = torch.tensor([-1e4, -100.0, -7.0, 0.0, 10.0, 50.0, 200.0, 1e4], dtype=dtype)
    mu_values = torch.tensor([-1e6, -30.0, -1.0, 0.0, 1.0, 30.0, 1e6], dtype=dtype)
    ls, mu, v = torch.meshgrid(ls_values, mu_values, LEVELS[[0, 1, 127, 254, 255]].to(dtype), indexing="ij")
    n = ls.numel()
    ls = ls.reshape(n, 1, 1, 1, 1).repeat(1, 2, 3, 1, 1).requires_grad_()
    mu = mu.reshape(n, 1, 1, 1, 1).repeat(1, 2, 3, 1, 1).requires_grad_()
    lp = torch.tensor([[50.0, -50.0]], dtype=dtype).repeat(n, 1)[:, :, None, None].requires_grad_()
    co = torch.full((n, 2, 3, 1, 1), 30.0, dtype=dtype, requires_grad=True)
    x = v.reshape(n, 1, 1, 1).repeat(1, 3, 1, 1)
    out = dlm_log_prob(x, lp, mu, ls, co, reduction="none")
    assert torch.isfinite(out).all()
    out.sum().backward()
    for t in (ls, mu, lp, co):
        assert torch.isfinite(t.grad).all()


def test_log_scales_are_clamped():
    x = torch.zeros(1, 1, 1, 1, dtype=torch.float64)
    lp = torch.zeros(1, 1, 1, 1, dtype=torch.float64)
    mu = torch.zeros(1, 1, 1, 1, 1, dtype=torch.float64)
    at_min = dlm_log_prob(x, lp, mu, torch.full_like(mu, MIN_LOG_SCALE))
    assert torch.equal(dlm_log_prob(x, lp, mu, torch.full_like(mu, -50.0)), at_min)
    at_max = dlm_log_prob(x, lp, mu, torch.full_like(mu, MAX_LOG_SCALE))
    assert torch.equal(dlm_log_prob(x, lp, mu, torch.full_like(mu, 1e4)), at_max)
    assert torch.isfinite(at_max) and at_max < -30


def test_bf16_autocast_computes_in_float32():
    params = [p.float() for p in random_params(11, 3, 3, n=4)]
    x = (torch.randint(0, 256, (4, 3, 1, 1)).float() / 127.5 - 1)
    bf = [p.to(torch.bfloat16) for p in params]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = dlm_log_prob(x, *bf)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, dlm_log_prob(x, *[p.float() for p in bf]), rtol=0, atol=0)


def test_clear_errors_for_bad_shapes():
    lp, mu, ls, co = random_params(0, 2, 3)
    x = torch.zeros(1, 3, 1, 1, dtype=torch.float64)
    with pytest.raises(ValueError, match="coeffs"):
        dlm_log_prob(x[:, :1], lp, mu[:, :, :1], ls[:, :, :1], co)
    with pytest.raises(ValueError, match="means must have shape"):
        dlm_log_prob(x, lp, mu[:, :1], ls, co)
    with pytest.raises(ValueError, match="reduction"):
        dlm_log_prob(x, lp, mu, ls, co, reduction="mean")
    with pytest.raises(ValueError, match=r"\(B, 30, H, W\)"):
        logistic_mixture_params(torch.zeros(1, 29, 2, 2), 3, 3)


def test_params_layout_round_trips():
    out = torch.arange(2 * 30 * 2 * 2, dtype=torch.float64).view(2, 30, 2, 2)
    lp, mu, ls, co = logistic_mixture_params(out, 3, 3)
    assert lp.shape == (2, 3, 2, 2) and mu.shape == ls.shape == co.shape == (2, 3, 3, 2, 2)
    assert torch.equal(torch.cat((lp, mu.flatten(1, 2), ls.flatten(1, 2), co.flatten(1, 2)), 1), out)


# -- sampler ------------------------------------------------------------------------------------
def chi_square_pvalue(counts: torch.Tensor, probs: torch.Tensor, min_expected: float = 5.0) -> float:
    """Pearson's test; cells with expected count < min_expected are pooled into one cell."""
    n = float(counts.sum())
    expected = probs * n
    keep = expected >= min_expected
    obs = torch.cat((counts[keep].double(), counts[~keep].double().sum().view(1)))
    exp = torch.cat((expected[keep], (n - expected[keep].sum()).clamp(min=0).view(1)))
    if exp[-1] < min_expected:  # pooled cell too small: fold it into the last kept cell
        obs, exp = torch.cat((obs[:-2], (obs[-2] + obs[-1]).view(1))), torch.cat((exp[:-2], (exp[-2] + exp[-1]).view(1)))
    stat = float(((obs - exp) ** 2 / exp).sum())
    return float(chi2.sf(stat, df=len(obs) - 1))


# Thresholds: with the fixed seeds these are single deterministic checks; under a correct sampler a
# p-value below 1e-3 would occur with probability 0.001, while the wrong variants checked alongside
# (a mean off by one level) give p-values below 1e-12, so 1e-3 separates the two by a wide margin.
P_MIN = 1e-3


def test_gray_samples_match_the_probabilities():
    n = 200_000
    lp = torch.tensor([0.2, -0.3, 0.5], dtype=torch.float64).view(1, 3, 1, 1)
    mu = torch.tensor([-0.5, 0.1, 0.97], dtype=torch.float64).view(1, 3, 1, 1, 1)  # the last one feeds level 255
    ls = torch.tensor([-3.5, -3.0, -3.2], dtype=torch.float64).view(1, 3, 1, 1, 1)
    params = (lp, mu, ls, None)
    x = dlm_sample(*expand(params, n), generator=torch.Generator().manual_seed(0))
    assert x.shape == (n, 1, 1, 1)
    levels = torch.round((x.flatten() + 1) * 127.5).long()
    assert torch.equal(levels.double() / 127.5 - 1, x.flatten())  # on the grid
    counts = torch.bincount(levels, minlength=256)
    probs = dlm_log_prob(pixels(LEVELS[:, None]), *expand(params, 256)).exp()
    assert chi_square_pvalue(counts, probs) > P_MIN
    shifted = dlm_log_prob(pixels(LEVELS[:, None]), *expand((lp, mu + 2 / 255, ls, None), 256)).exp()
    assert chi_square_pvalue(counts, shifted) < 1e-12  # the test can tell a one-level error


def test_rgb_samples_match_the_joint_probabilities():
    """Histogram of whole (R, G, B) samples against the joint, on a box that holds nearly all the mass."""
    n = 200_000
    lp = torch.tensor([[0.3, -0.2]], dtype=torch.float64)[:, :, None, None]
    mu = torch.tensor([[[0.1, -0.2, 0.3], [0.15, -0.1, 0.25]]], dtype=torch.float64)[..., None, None]
    ls = torch.tensor([[[-4.4, -4.6, -4.2], [-4.7, -4.3, -4.5]]], dtype=torch.float64)[..., None, None]
    co = torch.tensor([[[0.8, -0.5, 0.6], [-0.4, 0.9, 0.3]]], dtype=torch.float64)[..., None, None]
    params = (lp, mu, ls, co)
    x = dlm_sample(*expand(params, n), generator=torch.Generator().manual_seed(1))
    v = torch.round((x[:, :, 0, 0] + 1) * 127.5).long()
    lo, hi = v.min(0).values - 3, v.max(0).values + 4  # box: observed range plus a margin on each side
    sizes = (hi - lo).tolist()
    grids = torch.meshgrid(*[torch.arange(int(a), int(b)) for a, b in zip(lo, hi)], indexing="ij")
    cells = torch.stack([gr.flatten() for gr in grids], 1)
    probs = dlm_log_prob(pixels(LEVELS[cells]), *expand(params, cells.shape[0])).exp()
    assert 1 - float(probs.sum()) < 1e-3  # the box holds nearly all the mass; the rest is pooled
    idx = ((v - lo) * torch.tensor([sizes[1] * sizes[2], sizes[2], 1])).sum(1)
    counts = torch.bincount(idx, minlength=cells.shape[0])
    assert chi_square_pvalue(counts, probs) > P_MIN
    wrong = dlm_log_prob(pixels(LEVELS[cells]), *expand((lp, mu, ls, -co), cells.shape[0]))  # flipped dependence
    assert chi_square_pvalue(counts, wrong.exp()) < 1e-12


def test_sampler_is_a_function_of_its_uniforms():
    params = random_params(2, 4, 3, n=64)
    u = torch.rand(64, 4, 1, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    a = dlm_sample(*params, uniforms=u)
    assert torch.equal(a, dlm_sample(*params, uniforms=u.clone()))
    assert ((a >= -1) & (a <= 1)).all()
    u[:, 0] = 0.0  # u = 0 for the logistic draws lands in the lowest level, no NaN
    u[:, 1:] = 0.0
    assert torch.equal(dlm_sample(*params, uniforms=u), torch.full_like(a, -1.0))
    with pytest.raises(ValueError, match="uniforms must have shape"):
        dlm_sample(*params, uniforms=u[:, :2])


def _packed_output(seed: int, b: int, c: int, k: int, h: int = 3, w: int = 4, dtype=torch.float64):
    """Data on the 8-bit grid with both edge values, and a packed output whose log-scales also cross both clamps."""
    g = torch.Generator().manual_seed(seed)
    v = torch.randint(0, 256, (b, c, h, w), generator=g)
    v[0, :, 0, 0], v[-1, :, -1, -1] = 0, 255
    x = (v.to(dtype) / 127.5 - 1.0)
    p = k * (10 if c == 3 else 3)
    out = torch.randn(b, p, h, w, generator=g, dtype=dtype) * 1.5
    _, _, ls, _ = logistic_mixture_params(out, c, k)
    ls.mul_(2.5).sub_(2.0)  # log-scales around -2, spread over a few units
    ls[0, 0, :, 0, 1] = MIN_LOG_SCALE - 1.0  # clamped from below
    ls[-1, -1, :, -1, 0] = MAX_LOG_SCALE + 1.0  # clamped from above
    return x, out


@pytest.mark.parametrize("c,k", [(3, 5), (3, 1), (1, 4)])
def test_packed_log_prob_and_its_analytic_gradient_match_float64_autograd(c, k):
    from infovae.functional.logistic import discretized_logistic_mixture_log_prob_packed as packed

    x, out = _packed_output(10 + c + k, 3, c, k)
    out.requires_grad_(True)
    ref = dlm_log_prob(x, *logistic_mixture_params(out, c, k), reduction="sum")
    got = packed(x, out, k)
    torch.testing.assert_close(got, ref, rtol=1e-13, atol=0)
    wts = torch.randn(got.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    (g_ref,) = torch.autograd.grad((ref * wts).sum(), out)
    (g_got,) = torch.autograd.grad((got * wts).sum(), out)
    torch.testing.assert_close(g_got, g_ref, rtol=1e-10, atol=1e-12)
    assert (g_got[0, :, 0, 1].abs() > 0).any()  # the clamped pixel still gets gradients elsewhere


def test_packed_log_prob_gradcheck():
    from infovae.functional.logistic import _PackedLogProb

    x, out = _packed_output(3, 2, 3, 2, h=2, w=2)
    _, _, ls, _ = logistic_mixture_params(out, 3, 2)
    ls.clamp_(MIN_LOG_SCALE + 1.0, 2.0)  # away from the clamp's kinks, where finite differences are meaningless
    assert torch.autograd.gradcheck(lambda o: _PackedLogProb.apply(x, o, 2), (out.requires_grad_(True),))


def test_packed_log_prob_float32_matches_float64():
    from infovae.functional.logistic import discretized_logistic_mixture_log_prob_packed as packed

    x, out = _packed_output(4, 2, 3, 5, h=8, w=8)
    out32 = out.float().requires_grad_(True)
    out64 = out.clone().requires_grad_(True)
    got, ref = packed(x.float(), out32, 5), packed(x, out64, 5)
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-3)
    got.sum().backward()
    ref.sum().backward()
    torch.testing.assert_close(out32.grad.double(), out64.grad, rtol=1e-3, atol=1e-4)
