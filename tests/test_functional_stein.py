"""infovae.functional.stein_direction and the stein divergence plugin."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import infovae
from infovae.functional import stein_direction, svgd_median_bandwidth
from infovae.testing import DivergenceContract


def phi_loops(z, score, sigmas):
    """phi(z_i) = 1/n sum_j [k(z_j, z_i) s_j + grad_{z_j} k(z_j, z_i)] by explicit loops in float64."""
    z, score = z.tolist(), score.tolist()
    n, d = len(z), len(z[0])
    out = []
    for i in range(n):
        acc = [0.0] * d
        for j in range(n):
            r = sum((z[j][c] - z[i][c]) ** 2 for c in range(d))
            for s in sigmas:
                k = math.exp(-r / (2 * s * s))
                for c in range(d):
                    # d/dz_j exp(-|z_j - z_i|^2 / 2s^2) = -k (z_j - z_i) / s^2
                    acc[c] += k * score[j][c] - k * (z[j][c] - z[i][c]) / (s * s)
        out.append([a / n for a in acc])
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("sigmas", [(0.8,), (0.5, 2.0)])
@pytest.mark.parametrize("block", [None, 3])
def test_matches_loop_reference(sigmas, block):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(10, 3, generator=g, dtype=torch.float64)
    score = torch.randn(10, 3, generator=g, dtype=torch.float64)
    ref = phi_loops(z, score, sigmas)
    got64 = stein_direction(z, score, sigmas if len(sigmas) > 1 else sigmas[0], block_size=block)
    assert got64.dtype == torch.float64 and torch.allclose(got64, ref, atol=1e-12)
    got32 = stein_direction(z.float(), score.float(), sigmas, block_size=block)
    assert got32.dtype == torch.float32 and torch.allclose(got32.double(), ref, atol=2e-6)


def test_median_bandwidth_is_the_svgd_reference():
    """sigma^2 = 0.5 * median(full squared-distance matrix) / log(n + 1), numpy's median."""
    g = torch.Generator().manual_seed(1)
    for n in (7, 10):  # odd and even number of entries
        z = torch.randn(n, 2, generator=g, dtype=torch.float64)
        zn = z.numpy()
        sq = ((zn[:, None, :] - zn[None, :, :]) ** 2).sum(-1)
        h = math.sqrt(0.5 * np.median(sq) / math.log(n + 1))
        assert svgd_median_bandwidth(z) == pytest.approx(h, rel=1e-12)
        score = -z
        assert torch.allclose(stein_direction(z, score), stein_direction(z, score, h), atol=1e-14)


def test_median_bandwidth_degenerate_inputs():
    same = torch.ones(5, 2)
    assert svgd_median_bandwidth(same) == 1.0
    phi = stein_direction(same, -same)
    assert torch.isfinite(phi).all()
    assert torch.allclose(phi, -same)  # all kernel values 1, no repulsion: phi = mean score


def test_translation_safety():
    """Far from the origin the direction is still accurate (centred Gram, centred repulsion)."""
    g = torch.Generator().manual_seed(2)
    z = torch.randn(50, 3, generator=g)
    score = torch.randn(50, 3, generator=g)
    ref = phi_loops((z + 1e4).double(), score.double(), (1.0,))
    got = stein_direction(z + 1e4, score, 1.0)
    assert torch.allclose(got.double(), ref, atol=1e-5)


def test_particles_converge_to_a_correlated_gaussian():
    """SVGD with the median bandwidth moves 200 particles from N((3, -2), I) to N(mu, Sigma),
    correlation 0.65. (Finite-particle SVGD with the median heuristic settles a few percent
    short of the target variance, hence the covariance tolerance.)"""
    mu = torch.tensor([1.0, -1.0], dtype=torch.float64)
    cov = torch.tensor([[1.0, 0.8], [0.8, 1.5]], dtype=torch.float64)
    prec = torch.linalg.inv(cov)
    g = torch.Generator().manual_seed(3)
    z = torch.randn(200, 2, generator=g, dtype=torch.float64) + torch.tensor([3.0, -2.0], dtype=torch.float64)
    for _ in range(300):
        z = z + 0.5 * stein_direction(z, -(z - mu) @ prec)
    emp = torch.cov(z.T)
    corr = emp[0, 1] / (emp[0, 0] * emp[1, 1]).sqrt()
    assert (z.mean(0) - mu).abs().max() < 0.02, z.mean(0)
    assert (emp - cov).abs().max() < 0.1 * 1.5, emp
    assert abs(float(corr) - 0.8 / math.sqrt(1.5)) < 0.02, corr


def test_bf16_autocast_float32_result():
    g = torch.Generator().manual_seed(4)
    z = torch.randn(20, 3, generator=g)
    ref = stein_direction(z, -z)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = stein_direction(z, -z)
        got_b = stein_direction(z.bfloat16(), -z.bfloat16())
    assert got.dtype == torch.float32 and torch.equal(got, ref)
    zb = z.bfloat16().float()
    assert got_b.dtype == torch.float32 and torch.equal(got_b, stein_direction(zb, -zb))


def test_result_is_detached_and_errors_are_clear():
    z = torch.randn(5, 2, requires_grad=True)
    assert not stein_direction(z, -z).requires_grad
    with pytest.raises(ValueError, match="shape of z"):
        stein_direction(torch.zeros(5, 2), torch.zeros(5, 3))
    with pytest.raises(ValueError, match="NaN"):
        stein_direction(torch.tensor([[0.0, float("inf")]]), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="positive"):
        stein_direction(torch.zeros(3, 2), torch.zeros(3, 2), 0.0)


# ---------------------------------------------------------------------------
# the plugin
# ---------------------------------------------------------------------------
class TestSteinContract(DivergenceContract):
    factory = "stein"
    min_batch = 1


def _stein(options=None):
    return infovae.registry().create("divergences", "stein", options or {})


def test_surrogate_gradient_is_exactly_minus_phi_over_n():
    g = torch.Generator().manual_seed(5)
    prior = infovae.StandardNormalPrior(4)
    for n in (7, 32):
        z = (torch.randn(n, 4, generator=g) * 0.3 + 2.0).requires_grad_(True)
        div = _stein()
        assert div.has_value is False and div.properties == frozenset()
        div(z, None, prior).backward()
        phi = stein_direction(z.detach(), prior.score(z.detach()))
        assert torch.equal(z.grad, -phi / n)


def test_gradient_descent_moves_codes_towards_the_prior():
    """One descent step z <- z - lr * grad is z + lr * phi / n, and it raises log p(z)."""
    g = torch.Generator().manual_seed(6)
    prior = infovae.StandardNormalPrior(2)
    z = (torch.randn(64, 2, generator=g) * 0.2 + torch.tensor([3.0, -1.0])).requires_grad_(True)
    opt = torch.optim.SGD([z], lr=20.0)
    before = z.detach().clone()
    phi = stein_direction(before, prior.score(before))
    _stein()(z, None, prior).backward()
    opt.step()
    assert torch.allclose(z.detach() - before, 20.0 * phi / 64, atol=1e-6)
    assert float(prior.log_prob(z.detach()).mean()) > float(prior.log_prob(before).mean())
    assert float(z.detach().mean(0).norm()) < float(before.mean(0).norm())


def test_score_by_autograd_for_priors_without_a_closed_form():
    class LogProbOnly(torch.nn.Module):
        def log_prob(self, z):
            return -0.5 * (z**2).sum(-1)

        def sample(self, n, generator=None):  # pragma: no cover - not used by stein
            return torch.randn(n, 3, generator=generator)

    g = torch.Generator().manual_seed(7)
    z = torch.randn(12, 3, generator=g).requires_grad_(True)
    _stein()(z, None, LogProbOnly()).backward()
    z2 = z.detach().clone().requires_grad_(True)
    _stein()(z2, None, infovae.StandardNormalPrior(3)).backward()
    assert torch.allclose(z.grad, z2.grad, atol=1e-7)


def test_plugin_bandwidth_option():
    assert _stein({"bandwidth": "0.5,1"}).bandwidth == (0.5, 1.0)
    with pytest.raises(infovae.PluginOptionError):
        _stein({"bandwidth": "-2"})


def test_objective_uses_only_the_surrogate_gradient_never_its_value():
    """has_value = False: not a logged term, not in the loss's value, but its gradient is applied in full."""
    from infovae.objective import Objective

    torch.manual_seed(0)
    reg = infovae.registry()
    spec = infovae.DataSpec("binary", (1, 2, 2))
    enc = reg.create("encoders", "mlp", {"hidden": 8}, spec, 2)
    dec = reg.create("decoders", "bernoulli-mlp", {"hidden": 8}, spec, 2)
    model = infovae.InfoVAE(spec, 2, enc, dec)
    x = (torch.rand(16, 1, 2, 2, generator=torch.Generator().manual_seed(1)) < 0.5).float()
    stein = _stein()
    obj = Objective([("stein", 3.0, stein), ("kl", 0.5, reg.create("divergences", "kl"))])
    torch.manual_seed(2)
    loss, terms, z = obj(model, x)
    assert set(terms) == {"reconstruction", "kl"}
    assert torch.equal(loss.detach(), terms["reconstruction"] + 0.5 * terms["kl"])
    loss.backward()
    got = [p.grad.clone() for p in model.parameters()]
    # reference: the same step with the surrogate's value added in full
    model.zero_grad()
    torch.manual_seed(2)
    q = model.posterior(x)
    z2 = q.rsample()
    ref = -model.log_likelihood(x, z2).mean() + 3.0 * stein(z2, q, model.prior) + 0.5 * reg.create("divergences", "kl")(z2, q, model.prior)
    ref.backward()
    for a, p in zip(got, model.parameters()):
        assert torch.allclose(a, p.grad, rtol=1e-5, atol=1e-7)


def test_surrogate_gradient_keeps_the_dtype_of_bf16_codes():
    """Codes from autocast (bf16) get a bf16 gradient, -phi / n rounded once."""
    prior = infovae.StandardNormalPrior(3)
    z = (torch.randn(16, 3) * 0.5).bfloat16().requires_grad_(True)
    _stein()(z, None, prior).backward()
    zf = z.detach().float()
    phi = stein_direction(zf, prior.score(zf))
    assert z.grad.dtype == torch.bfloat16 and torch.equal(z.grad, (-phi / 16).bfloat16())
