"""Bidirectional Monte Carlo (Grosse et al. 2015; Wu et al. 2017): sandwich log p(x) on data simulated
from the model, so the gap of the AIS estimator is measured rather than assumed.

For (z*, x) ~ p(z) p(x|z), z* is an exact sample of the posterior p(z|x). Forward AIS (prior ->
posterior) gives log mean w, a stochastic lower bound on log p(x); AIS run backwards from z* (posterior
-> prior, the same temperatures in reverse) estimates 1/p(x), and -log mean w_rev is a stochastic upper
bound. The true log p(x) lies between them (in expectation), so upper - lower bounds the error of
the forward estimate on such data. Both chains use step sizes adapted by a separate pilot run, so
their kernels are fixed in advance.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch

from . import _device, _dtype, conditional_log_likelihood
from .ais import ais, log_mean_exp_and_se, sigmoid_schedule


def simulate(model, n: int, generator: Optional[torch.Generator] = None):
    """(z, x): z (n, D) ~ p(z), x (n, C, H, W) ~ p(x|z) model values."""
    with torch.no_grad():
        z = model.prior.sample(n, generator=generator).to(_dtype(model))
        x = model.decoder.sample(z, generator=generator)
    return z, x


def bdmc(
    model,
    x: torch.Tensor,
    z_exact: torch.Tensor,
    *,
    steps: int = 500,
    chains: int = 16,
    leapfrog_steps: int = 10,
    target_accept: float = 0.65,
    generator: Optional[torch.Generator] = None,
) -> Dict[str, torch.Tensor]:
    """Forward and reverse AIS on examples x (B, C, H, W) whose posterior samples z_exact (B, D) are
    exact (e.g. from ``simulate``). Returns per-example float64 tensors (B,): "lower" and "upper"
    (nats, log p(x) bounds), their delta-method standard errors "lower_se", "upper_se", and "gap"
    = upper - lower. All chains of an example start from its one exact sample (as in Grosse et al.)."""
    device, dtype = _device(model), _dtype(model)
    x, z_exact = x.to(device), z_exact.to(device=device, dtype=dtype)
    b, d = z_exact.shape
    betas = sigmoid_schedule(steps)
    ll = conditional_log_likelihood(model, x)
    z0 = model.prior.sample(chains * b, generator=generator).view(chains, b, d).to(dtype)
    # Step sizes adapted by a pilot run, then fixed for both directions (see ais_log_likelihood).
    zp = model.prior.sample(min(chains, 4) * b, generator=generator).view(-1, b, d).to(dtype)
    pilot = ais(model.prior.log_prob, ll, zp, betas, leapfrog_steps=leapfrog_steps,
                target_accept=target_accept, prior_score=model.prior.score, generator=generator)
    fwd = ais(model.prior.log_prob, ll, z0, betas, leapfrog_steps=leapfrog_steps, step_sizes=pilot.step_sizes,
              prior_score=model.prior.score, generator=generator)
    # Reverse transition t targets betas[T - t]; forward used step_sizes[j - 1] at betas[j]. At b = 0,
    # which the forward chain never visits, reuse the step of betas[1].
    rev_steps = torch.cat([fwd.step_sizes.flip(0)[1:], fwd.step_sizes[:1]])
    zr = z_exact.unsqueeze(0).expand(chains, b, d).contiguous()
    rev = ais(model.prior.log_prob, ll, zr, betas.flip(0), leapfrog_steps=leapfrog_steps,
              step_sizes=rev_steps,
              prior_score=model.prior.score, generator=generator)
    lower, lower_se = log_mean_exp_and_se(fwd.log_w)
    inv, upper_se = log_mean_exp_and_se(rev.log_w)  # estimates log(1 / p(x))
    upper = -inv
    return {"lower": lower, "upper": upper, "lower_se": lower_se, "upper_se": upper_se, "gap": upper - lower}
