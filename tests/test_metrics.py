"""Tests of infovae.metrics against independent references: quadrature, closed forms, numpy."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.distributions import Independent, Laplace, Normal

from infovae import DataSpec, InfoVAE, PluginOptionError, UnknownPluginError, diagonal_gaussian
from infovae.metrics import (
    METRICS,
    class_cross_entropy,
    evaluate_metrics,
    importance_log_likelihood,
    metric_options,
)
from infovae.metrics import latent as latent_mod


# ---------------------------------------------------------------- toy models (plain nn.Modules)
class LinearEncoder(nn.Module):
    """q(z|x) = N(A x_flat + b, diag(scale^2)) with fixed A, b, scale."""

    def __init__(self, A, b, scale):
        super().__init__()
        self.register_buffer("A", torch.as_tensor(A, dtype=torch.float64))
        self.register_buffer("b", torch.as_tensor(b, dtype=torch.float64))
        self.register_buffer("log_scale", torch.log(torch.as_tensor(scale, dtype=torch.float64)))

    def forward(self, x):
        loc = x.reshape(x.shape[0], -1).to(self.A.dtype) @ self.A.T + self.b
        return diagonal_gaussian(loc, self.log_scale.expand_as(loc))


class BernoulliLinearDecoder(nn.Module):
    """p(x|z) = prod_i Bernoulli(x_i; sigmoid(W z + c)_i)."""

    def __init__(self, W, c, shape):
        super().__init__()
        self.register_buffer("W", torch.as_tensor(W, dtype=torch.float64))
        self.register_buffer("c", torch.as_tensor(c, dtype=torch.float64))
        self.shape = shape

    def logits(self, z):
        return (z.to(self.W.dtype) @ self.W.T + self.c).reshape(z.shape[0], *self.shape)

    def log_prob(self, x, z, reduction="sum"):
        lp = -nn.functional.binary_cross_entropy_with_logits(self.logits(z), x.to(self.W.dtype), reduction="none")
        return lp.flatten(1).sum(1) if reduction == "sum" else lp

    def sample(self, z, generator=None):
        p = torch.sigmoid(self.logits(z))
        return (torch.rand(p.shape, generator=generator, dtype=p.dtype) < p).to(p.dtype)


class GaussianLinearDecoder(nn.Module):
    """p(x|z) = N(W z + c, sigma^2 I) (a continuous toy for closed forms)."""

    def __init__(self, W, c, sigma, shape):
        super().__init__()
        self.register_buffer("W", torch.as_tensor(W, dtype=torch.float64))
        self.register_buffer("c", torch.as_tensor(c, dtype=torch.float64))
        self.sigma = sigma
        self.shape = shape

    def log_prob(self, x, z, reduction="sum"):
        mean = (z.to(self.W.dtype) @ self.W.T + self.c).reshape(z.shape[0], *self.shape)
        lp = Normal(mean, self.sigma).log_prob(x.to(self.W.dtype))
        return lp.flatten(1).sum(1) if reduction == "sum" else lp

    def sample(self, z, generator=None):
        mean = (z.to(self.W.dtype) @ self.W.T + self.c).reshape(z.shape[0], *self.shape)
        return mean + self.sigma * torch.randn(mean.shape, generator=generator, dtype=mean.dtype)


class PatternDecoder(nn.Module):
    """Ancestral samples are exact: class k = the prior quantile bin of z_0 (probabilities ``probs``),
    x = patterns[k]. log_prob is a placeholder Bernoulli (unused by the class metric)."""

    def __init__(self, patterns, probs, shape):
        super().__init__()
        self.register_buffer("patterns", torch.as_tensor(patterns, dtype=torch.float64))
        self.register_buffer("edges", torch.cumsum(torch.as_tensor(probs, dtype=torch.float64), 0)[:-1])
        self.shape = shape

    def log_prob(self, x, z, reduction="sum"):
        lp = torch.full(x.shape, math.log(0.5), dtype=torch.float64)
        return lp.flatten(1).sum(1) if reduction == "sum" else lp

    def sample(self, z, generator=None):
        u = torch.special.ndtr(z[:, 0].double())
        k = torch.bucketize(u, self.edges)
        return self.patterns[k].reshape(z.shape[0], *self.shape)


class NonGaussianEncoder(nn.Module):
    def forward(self, x):
        loc = torch.zeros(x.shape[0], 2)
        return Independent(Laplace(loc, torch.ones_like(loc)), 1)


def gauss_model(A, b, scale, shape, W=None, c=None, sigma=1.0):
    A = np.asarray(A, dtype=np.float64)
    d = A.shape[0]
    n = int(np.prod(shape))
    W = np.zeros((n, d)) if W is None else W
    c = np.zeros(n) if c is None else c
    spec = DataSpec("gray8", shape)
    return InfoVAE(spec, d, LinearEncoder(A, b, scale), GaussianLinearDecoder(W, c, sigma, shape)).double()


def bits(n):
    """All 2^n binary vectors, (2^n, n)."""
    return torch.tensor([[(i >> j) & 1 for j in range(n)] for i in range(2**n)], dtype=torch.float64)


# ---------------------------------------------------------------- nll
# Bernoulli decoder, 1-D latent: p(x) by quadrature on a fine grid in float64.
W1 = np.array([[2.0], [-1.5], [1.0], [0.5]])
C1 = np.array([0.3, -0.2, 0.0, 0.4])
A1 = np.array([[0.8, -0.6, 0.5, 0.3]])
B1 = np.array([-0.4])
S1 = np.array([0.9])


def quadrature(x, log_q):
    """For each x (N, 4): log p(x) and chi2 = E_q[w^2]/p(x)^2 - 1 of the IS weights, by quadrature."""
    z = np.linspace(-12.0, 12.0, 48001)
    dz = z[1] - z[0]
    logits = z[:, None] * W1[:, 0][None] + C1[None]  # (G, 4)
    lp_x_z = (x[:, None, :] * logits[None] - np.logaddexp(0.0, logits)[None]).sum(-1)  # (N, G)
    log_joint = lp_x_z - 0.5 * z[None] ** 2 - 0.5 * math.log(2 * math.pi)
    log_px = np.log(np.trapezoid(np.exp(log_joint), dx=dz, axis=1))
    second = np.trapezoid(np.exp(2 * log_joint - log_q(z)), dx=dz, axis=1)
    return log_px, second / np.exp(2 * log_px) - 1.0


def test_nll_matches_quadrature_within_importance_sampling_error():
    x = bits(4)  # all 16 images of a (1, 2, 2) binary space
    spec = DataSpec("binary", (1, 2, 2))
    model = InfoVAE(spec, 1, LinearEncoder(A1, B1, S1), BernoulliLinearDecoder(W1, C1, (1, 2, 2))).double()
    K = 1000
    est, ess = importance_log_likelihood(model, x.view(16, 1, 2, 2), K, torch.Generator().manual_seed(3), batch_size=700)
    xn = x.numpy()
    loc = xn @ A1[0] + B1[0]

    def log_q(z):
        return -0.5 * ((z[None] - loc[:, None]) / S1[0]) ** 2 - math.log(S1[0]) - 0.5 * math.log(2 * math.pi)

    exact, chi2 = quadrature(xn, log_q)
    assert np.all(chi2 < 3), chi2  # the delta-method error model below needs K >> chi2
    sd = np.sqrt(chi2 / K)  # sd of log(mean w) by the delta method
    bias = chi2 / (2 * K)  # E log mean w ~ log p(x) - chi2 / (2K)
    err = est.numpy() - exact
    assert np.all(np.abs(err + bias) < 4 * sd + 1e-9), (err, sd)
    # The mean over examples, as the metric reports it.
    assert abs(err.mean() + bias.mean()) < 4 * math.sqrt((sd**2).sum()) / len(sd)
    assert torch.all((ess >= 1) & (ess <= K))
    res = METRICS["nll"](model, x.view(16, 1, 2, 2), num_samples=K, generator=torch.Generator().manual_seed(4))
    assert abs(res["value"] - (-exact.mean())) < 4 * math.sqrt((sd**2).sum()) / 16 + bias.mean()
    assert res["std_err"] == pytest.approx(np.std(-exact, ddof=1) / 4, rel=0.05)
    assert res["bits_per_dim"] == pytest.approx(res["value"] / (4 * math.log(2)))
    assert (res["num_samples"], res["n"]) == (K, 16)


def linear_gaussian_exact_posterior():
    """z ~ N(0, I_2), x | z ~ N(W z + c, s^2 I_4) with W^T W diagonal, so p(z|x) is factored Gaussian."""
    W = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 0.0], [0.0, -2.0]])
    c = np.array([0.5, -1.0, 0.0, 2.0])
    s2 = 0.5
    prec = 1.0 + np.diag(W.T @ W) / s2  # posterior precision (diagonal)
    A = (W / s2 / prec[None]).T  # posterior mean = A (x - c)
    model = gauss_model(A, -A @ c, 1.0 / np.sqrt(prec), (1, 2, 2), W=W, c=c, sigma=math.sqrt(s2))
    cov = W @ W.T + s2 * np.eye(4)
    return model, c, cov


def log_normal(x, mean, cov):
    d = x - mean
    _, logdet = np.linalg.slogdet(cov)
    return -0.5 * (np.einsum("ni,ij,nj->n", d, np.linalg.inv(cov), d) + logdet + len(mean) * math.log(2 * math.pi))


@pytest.mark.parametrize("K,batch_size", [(1, 64), (7, 5), (50, 1024)])
def test_nll_with_true_posterior_as_proposal_is_exact(K, batch_size):
    model, c, cov = linear_gaussian_exact_posterior()
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(30, 4)) * 2.0)
    est, ess = importance_log_likelihood(model, x.view(30, 1, 2, 2), K, torch.Generator().manual_seed(0), batch_size)
    np.testing.assert_allclose(est.numpy(), log_normal(x.numpy(), c, cov), rtol=0, atol=1e-9)
    np.testing.assert_allclose(ess.numpy(), K, rtol=1e-9)


def test_nll_default_num_samples_and_rejects_non_gaussian_posterior():
    model, _, _ = linear_gaussian_exact_posterior()
    x = torch.zeros(3, 1, 2, 2, dtype=torch.float64)
    assert METRICS["nll"](model, x)["num_samples"] == 1000
    bad = InfoVAE(DataSpec("gray8", (1, 2, 2)), 2, NonGaussianEncoder(), model.decoder)
    with pytest.raises(TypeError, match="factored Gaussian"):
        METRICS["nll"](bad, x.float(), num_samples=2)


def test_reconstruction_matches_closed_form_expectation():
    # Gaussian decoder: -E_q log N(x; W z + c, s^2) has a closed form; one sample per example.
    model, c, _ = linear_gaussian_exact_posterior()
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4000, 4))
    A = model.encoder.A.numpy()
    W = model.decoder.W.numpy()
    s = model.decoder.sigma
    scale = np.exp(model.encoder.log_scale.numpy())
    mu = (x @ A.T + model.encoder.b.numpy()) @ W.T + c
    trace = (W**2 * scale[None] ** 2).sum()  # E||W (z - m)||^2
    expected = (0.5 * (((x - mu) ** 2).sum(1) + trace) / s**2 + 2 * math.log(2 * math.pi * s**2)).mean()
    res = METRICS["reconstruction"](model, torch.from_numpy(x).view(-1, 1, 2, 2))
    assert abs(res["value"] - expected) < 4 * res["std_err"]


# ---------------------------------------------------------------- mutual information
def test_mixture_log_density_matches_brute_force_and_tiles(monkeypatch):
    g = torch.Generator().manual_seed(0)
    loc = torch.randn(37, 3, generator=g, dtype=torch.float64)
    scale = torch.rand(37, 3, generator=g, dtype=torch.float64) + 0.2
    z = torch.randn(11, 3, generator=g, dtype=torch.float64)
    dens = Independent(Normal(loc, scale), 1).log_prob(z[:, None, :]).exp()  # (11, 37)
    ref = torch.log(dens.mean(1))
    torch.testing.assert_close(latent_mod.mixture_log_density(z, loc, scale), ref, rtol=0, atol=1e-12)
    monkeypatch.setattr(latent_mod, "_TILE_ELEMENTS", 100)  # 100 // (37*3) -> one row per tile
    torch.testing.assert_close(latent_mod.mixture_log_density(z, loc, scale), ref, rtol=0, atol=1e-12)


def test_mutual_information_matches_linear_gaussian_closed_form():
    # x ~ N(0, Sx) in R^2, q(z|x) = N(A x, diag(s^2)): q(z) = N(0, A Sx A^T + S),
    # I = 0.5 [log det(A Sx A^T + S) - log det S].
    Lx = np.array([[1.0, 0.0], [0.6, 0.8]])
    A = np.array([[1.2, -0.3], [0.4, 0.9]])
    s = np.array([0.5, 0.8])
    Sz = A @ Lx @ Lx.T @ A.T + np.diag(s**2)
    exact = 0.5 * (np.linalg.slogdet(Sz)[1] - np.log(s**2).sum())
    M = 3000
    x = np.random.default_rng(2).normal(size=(M, 2)) @ Lx.T
    model = gauss_model(A, [0.0, 0.0], s, (1, 1, 2))
    res = METRICS["mutual-information"](model, torch.from_numpy(x).view(M, 1, 1, 2), generator=torch.Generator().manual_seed(0))
    assert res["M"] == M and res["log_M"] == pytest.approx(math.log(M))
    assert res["value"] <= res["log_M"]
    # The terms log q(z|x)/q(z) have sd ~ 1 nat (var of a log ratio of Gaussians here < 2), so the Monte
    # Carlo sd of the mean is < 0.03; the mixture's O(E[q(z|x)/q(z)] / M) bias is < 0.01 for I ~ 1.3.
    assert 1.0 < exact < 2.0
    assert abs(res["value"] - exact) < 0.1, (res["value"], exact)


def test_mutual_information_never_exceeds_log_m_and_subsets():
    # Nearly deterministic encoder: I is huge, the estimate saturates at log M.
    x = torch.from_numpy(np.random.default_rng(3).normal(size=(400, 2))).view(400, 1, 1, 2)
    model = gauss_model(np.eye(2), [0.0, 0.0], [1e-3, 1e-3], (1, 1, 2))
    res = METRICS["mutual-information"](model, x, mi_points=100)
    assert res["M"] == 100
    assert res["value"] <= math.log(100) + 1e-12
    assert res["value"] > math.log(100) - 0.01
    with pytest.raises(ValueError, match="mi_points"):
        METRICS["mutual-information"](model, x, mi_points=401)


# ---------------------------------------------------------------- kl, active units, logdet
def test_kl_matches_closed_form():
    rng = np.random.default_rng(4)
    A = rng.normal(size=(3, 2))
    b = rng.normal(size=3)
    s = np.array([0.3, 1.0, 1.7])
    x = rng.normal(size=(50, 2))
    mu = x @ A.T + b
    expected = 0.5 * (mu**2 + s**2 - 1 - 2 * np.log(s)).sum(1)
    res = METRICS["kl"](gauss_model(A, b, s, (1, 1, 2)), torch.from_numpy(x).view(50, 1, 1, 2), batch_size=7)
    assert res["value"] == pytest.approx(expected.mean(), rel=1e-10)
    assert res["std_err"] == pytest.approx(expected.std(ddof=1) / math.sqrt(50), rel=1e-8)


def test_active_units_on_known_dead_dimensions():
    # Units 0, 1 follow x (variance ~1); unit 2 moves with variance 0.0025 < 0.01; unit 3 is constant.
    A = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 0.05], [0, 0, 0]])
    x = np.random.default_rng(5).normal(size=(500, 3))
    model = gauss_model(A, [0, 0, 0, 3.0], [1.0] * 4, (1, 1, 3))
    res = METRICS["active-units"](model, torch.from_numpy(x).view(500, 1, 1, 3))
    assert res["value"] == 2 and res["active"] == [0, 1] and res["dim"] == 4
    np.testing.assert_allclose(res["variances"], (x @ A.T).var(0, ddof=1), rtol=1e-10, atol=1e-14)
    assert METRICS["active-units"](model, torch.from_numpy(x).view(500, 1, 1, 3), threshold=1e-4)["value"] == 3


@pytest.mark.parametrize("c", [1.0, 2.0])
def test_logdet_cov_of_standard_and_scaled_normal_codes(c):
    # x ~ N(0, I_3), q(z|x) = N(c sqrt(1 - s^2) x, c^2 s^2 I): q(z) = N(0, c^2 I), so the value is 2 log c.
    D, N, s = 3, 20000, 0.5
    x = np.random.default_rng(6).normal(size=(N, D))
    model = gauss_model(c * math.sqrt(1 - s**2) * np.eye(D), np.zeros(D), [c * s] * D, (1, 1, D))
    res = METRICS["logdet-cov"](model, torch.from_numpy(x).view(N, 1, 1, D), generator=torch.Generator().manual_seed(1))
    sd = math.sqrt(2.0 / (D * N))  # sd of log det(sample cov) / D
    assert abs(res["value"] - 2 * math.log(c)) < 4 * sd + D * (D + 1) / (2 * N * D)
    assert res["logdet"] == pytest.approx(res["value"] * D)


def test_logdet_cov_needs_more_examples_than_dims():
    model = gauss_model(np.eye(3), np.zeros(3), [1.0] * 3, (1, 1, 3))
    with pytest.raises(ValueError, match="more examples than latent dimensions"):
        METRICS["logdet-cov"](model, torch.zeros(3, 1, 1, 3, dtype=torch.float64))


# ---------------------------------------------------------------- mmd-prior
def test_mmd_prior_matches_gaussian_closed_forms():
    pytest.importorskip("infovae.functional.mmd")
    # q(z) = N(0, I) ("good") or N(3 * 1, I) ("bad") in D = 2; default rbf sigma^2 = 2 D.
    # For x, x' ~ N(a, I), y ~ N(b, I): E k(x, x') = e = (1 + 2 / sigma^2)^(-D/2) and
    # E k(x, y) = e exp(-||a - b||^2 / (2 (sigma^2 + 2))); the biased (V) estimate from n and n rows has
    # expectation 2 e (1 - exp(...)) + (2 / n) (1 - e).
    D, N, s = 2, 600, 0.5
    x = torch.from_numpy(np.random.default_rng(7).normal(size=(N, D))).view(N, 1, 1, D)
    good = gauss_model(math.sqrt(1 - s**2) * np.eye(D), np.zeros(D), [s] * D, (1, 1, D))
    bad = gauss_model(math.sqrt(1 - s**2) * np.eye(D), 3.0 * np.ones(D), [s] * D, (1, 1, D))
    sigma2 = 2 * D
    e = (1 + 2 / sigma2) ** (-D / 2)
    r_good = METRICS["mmd-prior"](good, x)
    assert r_good["bandwidth"] == pytest.approx(math.sqrt(sigma2)) and r_good["n"] == N
    # Under q = p the value is >= 0 with mean 2 (1 - e) / N = 0.0011; 0.01 is 9 times that.
    assert 0 <= r_good["value"] < 0.01
    r_bad = METRICS["mmd-prior"](bad, x)
    expected = 2 * e * (1 - math.exp(-18 / (2 * (sigma2 + 2)))) + 2 * (1 - e) / N
    # sd of the estimate over seeds, measured: 0.014
    assert abs(r_bad["value"] - expected) < 0.06, (r_bad["value"], expected)


# ---------------------------------------------------------------- labelled metrics
@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=1, max_size=60), st.lists(st.integers(0, 4), min_size=1, max_size=60))
def test_class_cross_entropy_formula_and_gibbs_inequality(data, samples):
    res = class_cross_entropy(data, samples, 5, pseudo_count=0.5)
    p = np.bincount(data, minlength=5) / len(data)
    q = (np.bincount(samples, minlength=5) + 0.5) / (len(samples) + 2.5)
    assert res["cross_entropy"] == pytest.approx(-(p[p > 0] * np.log(q[p > 0])).sum(), rel=1e-12)
    assert res["cross_entropy"] >= res["entropy"] - 1e-12
    same = class_cross_entropy(data, data * 3, 5)  # each label repeated: the same histogram
    assert same["cross_entropy"] == pytest.approx(same["entropy"], rel=1e-12, abs=1e-15)
    assert abs(same["kl"]) < 1e-12
    assert res["kl"] == pytest.approx(res["cross_entropy"] - res["entropy"], rel=1e-9, abs=1e-12)


def test_class_histograms_in_closed_form_paper_l_ce():
    """The paper's l_ce(c, c_hat) = -c^T (log c_hat - log c) = KL(c || c_hat), on histograms known exactly."""
    uniform = list(range(10)) * 7
    res = class_cross_entropy(uniform, list(range(10)) * 3, 10)
    assert res["kl"] == 0.0  # matched histograms: the paper reads 0 ...
    assert res["cross_entropy"] == pytest.approx(math.log(10), rel=1e-12)  # ... the cross entropy reads log 10 = 2.3026
    # c = (1/2, 1/2), c_hat = (1/4, 3/4): KL = 1/2 log 2 + 1/2 log(2/3) = 1/2 log(4/3)
    res = class_cross_entropy([0, 1], [0, 1, 1, 1], 2)
    assert res["kl"] == pytest.approx(0.5 * math.log(4 / 3), rel=1e-12)
    assert res["entropy"] == pytest.approx(math.log(2), rel=1e-12)
    # c = (1, 0, 0), c_hat = (1/2, 1/4, 1/4): KL = log 2; classes absent from the data do not count
    res = class_cross_entropy([0, 0, 0], [0, 0, 1, 2], 3)
    assert res["kl"] == pytest.approx(math.log(2), rel=1e-12) and res["entropy"] == 0.0


PATTERNS = [[1, 0, 0, 0], [0, 1, 1, 0], [1, 1, 1, 1]]
PROBS = [0.5, 0.3, 0.2]


def pattern_model():
    spec = DataSpec("binary", (1, 2, 2))
    enc = LinearEncoder(np.ones((1, 4)), [0.0], [1.0])
    return InfoVAE(spec, 1, enc, PatternDecoder(PATTERNS, PROBS, (1, 2, 2))).double()


def pattern_data(n=1000):
    labels = torch.cat([torch.full((int(n * p),), k) for k, p in enumerate(PROBS)])
    x = torch.tensor(PATTERNS, dtype=torch.float64)[labels].view(-1, 1, 2, 2)
    return x, labels


def test_class_distribution_is_near_zero_when_samples_match_the_data():
    x, labels = pattern_data()
    n_gen = 30000
    res = METRICS["class-distribution"](pattern_model(), x, labels=labels, num_generated=n_gen, pseudo_count=0.0)
    H = -sum(p * math.log(p) for p in PROBS)
    assert res["entropy"] == pytest.approx(H, rel=1e-12)
    assert res["classifier_accuracy"] == 1.0
    # value = l_ce = KL(p || p_hat) with 2 n KL ~ chi^2(2) (mean 2): 0.002 is 60 times its mean.
    assert 0.0 <= res["value"] < 0.002
    assert res["cross_entropy"] == pytest.approx(res["value"] + H, rel=1e-9)
    assert res["num_generated"] == n_gen and res["classifier_train"] + res["classifier_test"] == 1000


def test_class_distribution_penalises_a_collapsed_sampler():
    x, labels = pattern_data()
    model = pattern_model()
    model.decoder.edges.fill_(2.0)  # every sample lands in class 0
    n = 5000
    res = METRICS["class-distribution"](model, x, labels=labels, num_generated=n)  # pseudo_count 1
    q, c = np.array([n + 1, 1, 1]) / (n + 3), np.array(PROBS)
    assert res["value"] == pytest.approx((c * (np.log(c) - np.log(q))).sum(), rel=1e-12)
    assert res["cross_entropy"] == pytest.approx(-(c * np.log(q)).sum(), rel=1e-12)
    with pytest.raises(FloatingPointError, match="never appears"):
        METRICS["class-distribution"](model, x, labels=labels, num_generated=100, pseudo_count=0.0)


def test_semi_supervised_separable_codes_and_random_codes():
    rng = np.random.default_rng(8)
    ident = gauss_model(np.eye(2), [0.0, 0.0], [1.0, 1.0], (1, 1, 2))
    y = rng.integers(0, 4, size=1200)
    centers = np.array([[0, 0], [5, 0], [0, 5], [5, 5]], dtype=np.float64)
    x = centers[y] + 0.4 * rng.normal(size=(1200, 2))
    res = METRICS["semi-supervised"](ident, torch.from_numpy(x).view(-1, 1, 1, 2), labels=torch.from_numpy(y))
    assert (res["n_train"], res["n_test"]) == (600, 600)  # min(1000, N // 2)
    assert res["value"] > 0.98
    # Codes independent of labels drawn uniformly from 10 classes: accuracy ~ Binomial(n_test, 0.1) / n_test.
    y = rng.integers(0, 10, size=3000)
    x = rng.normal(size=(3000, 2))
    res = METRICS["semi-supervised"](ident, torch.from_numpy(x).view(-1, 1, 1, 2), labels=torch.from_numpy(y))
    assert (res["n_train"], res["n_test"]) == (1000, 2000)
    assert abs(res["value"] - 0.1) < 4 * math.sqrt(0.09 / 2000)


# ---------------------------------------------------------------- evaluate_metrics
def small_setup():
    spec = DataSpec("binary", (1, 2, 2))
    model = InfoVAE(spec, 1, LinearEncoder(A1, B1, S1), BernoulliLinearDecoder(W1, C1, (1, 2, 2))).double()
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(200, 1, 2, 2, generator=gen) < 0.5).to(torch.uint8)
    labels = x.flatten(1)[:, 0].long() + 2 * x.flatten(1)[:, 1].long()
    return model, x, labels


def test_evaluate_metrics_json_deterministic_and_independent_of_other_metrics():
    model, x, labels = small_setup()
    names = ["nll", "mutual-information", "mmd-prior", "logdet-cov", "kl", "active-units", "reconstruction",
             "class-distribution", "semi-supervised"]
    model.train()
    a = evaluate_metrics(model, x, names, labels=labels, generator=torch.Generator().manual_seed(1), num_samples=50)
    assert model.training  # mode restored
    json.dumps(a, allow_nan=False)
    b = evaluate_metrics(model, x, ",".join(names), labels=labels, generator=torch.Generator().manual_seed(1), num_samples=50)
    assert a == b
    alone = evaluate_metrics(model, x, ["reconstruction"], generator=torch.Generator().manual_seed(1))
    assert alone["reconstruction"] == a["reconstruction"]
    other = evaluate_metrics(model, x, ["reconstruction"], generator=torch.Generator().manual_seed(2))
    assert other["reconstruction"]["value"] != a["reconstruction"]["value"]
    # uint8 stored values and float model values give the same numbers.
    c = evaluate_metrics(model, x.double(), ["nll"], generator=torch.Generator().manual_seed(1), num_samples=50)
    assert c["nll"] == a["nll"]


def test_evaluate_metrics_errors_before_work():
    model, x, labels = small_setup()
    with pytest.raises(UnknownPluginError, match="Did you mean 'nll'"):
        evaluate_metrics(model, x, ["nl"])
    with pytest.raises(PluginOptionError, match="below the minimum"):
        evaluate_metrics(model, x, ["nll"], options={"nll": {"num_samples": 0}})
    with pytest.raises(PluginOptionError, match="no option 'num_sample'.*Did you mean 'num_samples'"):
        evaluate_metrics(model, x, ["nll"], options={"nll": {"num_sample": 5}})
    with pytest.raises(ValueError, match="need class labels"):
        evaluate_metrics(model, x, ["kl", "semi-supervised"])
    with pytest.raises(ValueError, match="labels have shape"):
        evaluate_metrics(model, x, ["semi-supervised"], labels=labels[:10])
    with pytest.raises(ValueError, match="not taken by any requested metric"):
        evaluate_metrics(model, x, ["kl"], num_samples=10)
    with pytest.raises(ValueError, match="expects"):
        evaluate_metrics(model, x.view(200, 1, 1, 4), ["kl"])
    with pytest.raises(TypeError, match="dtype"):
        evaluate_metrics(model, x.long(), ["kl"])
    with pytest.raises(ValueError, match="no metric"):
        evaluate_metrics(model, x, "")


def test_metric_options_table():
    assert metric_options("nll") == {
        "num_samples": None, "estimator": "is", "proposal": "encoder", "scale_factor": 1.0, "prior_weight": 0.0,
        "refine_steps": 50, "ais_steps": 500, "ais_chains": 16, "leapfrog_steps": 10,
    }
    assert metric_options("active-units") == {"threshold": 0.01}
    assert set(metric_options("semi-supervised")) == {"num_labels", "svm_c", "split_seed"}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_metrics_on_cuda_with_a_cpu_generator():
    model, c, cov = linear_gaussian_exact_posterior()
    model = model.cuda()
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(300, 4))).view(300, 1, 2, 2)
    res = evaluate_metrics(model, x, ["nll", "mutual-information", "logdet-cov", "kl", "active-units", "reconstruction"],
                           generator=torch.Generator().manual_seed(0), num_samples=20)
    json.dumps(res, allow_nan=False)
    assert res["nll"]["value"] == pytest.approx(-log_normal(x.view(300, 4).numpy(), c, cov).mean(), abs=1e-9)
    again = METRICS["nll"](model, x, num_samples=20, generator=torch.Generator().manual_seed(0))
    assert again["value"] == pytest.approx(res["nll"]["value"], abs=1e-9)
