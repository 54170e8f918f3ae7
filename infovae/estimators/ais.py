"""Annealed importance sampling (Neal 2001) from the prior p(z) to the posterior p(z|x), with
Hamiltonian Monte Carlo transitions in z (the estimator of Wu et al. 2017 for decoder-based models).

Intermediate targets: gamma_b(z) = p(z) p(x|z)^b for b on a schedule 0 = b_0 < ... < b_T = 1.
A chain starts at z_0 ~ gamma_{b_0} / Z_{b_0} and, for t = 1..T,

    log w += (b_t - b_{t-1}) log p(x|z_{t-1});   z_t ~ HMC kernel leaving gamma_{b_t} invariant.

Then E[w] = Z_{b_T} / Z_{b_0}: forward (prior -> posterior) that is p(x), and
log mean_s w_s is a stochastic lower bound on log p(x). Run backwards (b from 1 to 0) from an exact
posterior sample, the same recursion estimates 1 / p(x), which gives a stochastic upper bound
(bidirectional Monte Carlo, Grosse et al. 2015; see ``infovae.estimators.bdmc``).

Shapes: S chains, B examples, D latent dims; states are (S, B, D), per-chain values (S, B),
per-example values (B,). ``log_likelihood(z)`` maps (S, B, D) to (S, B) nats (log p(x_b|z_{s,b})),
``log_prior(z)`` maps (..., D) to (...). Everything stays on z's device; no value is read back to the
host inside the loop (the step-size adaptation is tensor arithmetic), so it runs asynchronously on CUDA.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import torch

LogDensity = Callable[[torch.Tensor], torch.Tensor]


def sigmoid_schedule(num_steps: int, sharpness: float = 4.0, dtype=torch.float64) -> torch.Tensor:
    """Inverse temperatures b_0 = 0 < ... < b_T = 1, T = ``num_steps`` (Grosse et al. 2015's sigmoidal
    schedule): b_t ∝ sigmoid(sharpness * (2t/T - 1)), rescaled to [0, 1]. Dense near both ends,
    where the targets change fastest for a Gaussian prior. Returns (T + 1,)."""
    if num_steps < 1:
        raise ValueError(f"the AIS schedule needs at least 1 step, got {num_steps}")
    if not sharpness > 0:
        raise ValueError(f"schedule sharpness must be > 0, got {sharpness}")
    s = torch.sigmoid(sharpness * torch.linspace(-1.0, 1.0, num_steps + 1, dtype=torch.float64))
    b = (s - s[0]) / (s[-1] - s[0])
    b[0], b[-1] = 0.0, 1.0
    return b.to(dtype)


def value_and_grad(fn: LogDensity, z: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """fn(z) (detached) and d fn / dz, for fn acting independently on each chain and example."""
    with torch.enable_grad():
        zz = z.detach().requires_grad_(True)
        v = fn(zz)
        (g,) = torch.autograd.grad(v.sum(), zz)
    return v.detach(), g


@dataclass
class AISResult:
    """log_w (S, B) float64: log importance weights of each chain; z (S, B, D): final states;
    step_sizes (T, B): the leapfrog step used at each temperature (the adapted schedule, reusable);
    accept (T, B) float64: mean HMC acceptance probability over the chains at each temperature."""

    log_w: torch.Tensor
    z: torch.Tensor
    step_sizes: torch.Tensor
    accept: torch.Tensor


def log_mean_exp_and_se(log_w: torch.Tensor, dim: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """log mean_s exp(log_w_s) along ``dim`` and its delta-method standard error
    sqrt(Var(w) / (S * mean(w)^2)) (sample variance, ddof=1; 0 for S = 1). float64."""
    log_w = log_w.double()
    s = log_w.shape[dim]
    lme = torch.logsumexp(log_w, dim) - math.log(s)
    if s < 2:
        return lme, torch.zeros_like(lme)
    rel = torch.exp(log_w - lme.unsqueeze(dim))  # w / mean(w)
    var = (rel - 1.0).pow(2).sum(dim) / (s - 1)
    return lme, torch.sqrt(var / s)


def ais(
    log_prior: LogDensity,
    log_likelihood: LogDensity,
    z0: torch.Tensor,
    betas: torch.Tensor,
    *,
    leapfrog_steps: int = 10,
    step_size: float = 0.1,
    step_sizes: Optional[torch.Tensor] = None,
    target_accept: float = 0.65,
    adapt_rate: float = 1.0,
    prior_score: Optional[LogDensity] = None,
    generator: Optional[torch.Generator] = None,
) -> AISResult:
    """Run AIS chains along ``betas`` (T + 1,) from exact samples z0 (S, B, D) of the normalized
    gamma_{betas[0]}; returns an ``AISResult`` (see the module docstring for the estimate).

    One HMC transition per temperature: momentum ~ N(0, I), ``leapfrog_steps`` leapfrog steps, a
    Metropolis test (a non-finite energy rejects). Step sizes are per example (shared by its S chains):
    - ``step_sizes`` (T, B) given: used as they are (no adaptation; e.g. a forward run's schedule
      reversed for the reverse chain, which keeps every kernel fixed in advance);
    - else adapted at every temperature from ``step_size``: multiplied by
      exp(adapt_rate * (a - target_accept)) where a is the mean acceptance probability of the
      example's chains at the previous temperature, clamped to [1e-4, 2]. The kernel then depends on
      the chains' past, which can bias the estimate slightly (as in Wu et al. 2017); the tests
      against quadrature measure that bias.
    ``prior_score`` (z -> grad log p(z), e.g. ``prior.score``) saves one backward pass per leapfrog
    step; without it the gradient is taken by autograd. ``generator`` (on z0's device) drives the
    momenta and the accept tests.
    """
    if z0.dim() != 3:
        raise ValueError(f"z0 must have shape (chains, examples, dim), got {tuple(z0.shape)}")
    if leapfrog_steps < 1:
        raise ValueError(f"leapfrog_steps must be >= 1, got {leapfrog_steps}")
    if not 0.0 < target_accept < 1.0:
        raise ValueError(f"target_accept must be in (0, 1), got {target_accept}")
    betas = betas.to(device=z0.device, dtype=torch.float64)
    T = betas.numel() - 1
    if T < 1:
        raise ValueError("the AIS schedule needs at least two temperatures")
    S, B, _ = z0.shape
    dev, dt = z0.device, z0.dtype
    if step_sizes is not None:
        if tuple(step_sizes.shape) != (T, B):
            raise ValueError(f"step_sizes must have shape ({T}, {B}), got {tuple(step_sizes.shape)}")
        fixed = step_sizes.to(device=dev, dtype=dt)
    else:
        fixed = None
        eps = torch.full((B,), float(step_size), device=dev, dtype=dt)
    used = torch.empty((T, B), device=dev, dtype=dt)
    accept_log = torch.empty((T, B), device=dev, dtype=torch.float64)

    z = z0.detach().clone()
    ll, g_ll = value_and_grad(log_likelihood, z)
    prior_vg = (lambda zz: (log_prior(zz), prior_score(zz))) if prior_score is not None else (
        lambda zz: value_and_grad(log_prior, zz))
    lp, g_lp = prior_vg(z)
    log_w = torch.zeros((S, B), device=dev, dtype=torch.float64)
    for t in range(1, T + 1):
        b_prev, b = betas[t - 1], betas[t]
        log_w = log_w + (b - b_prev) * ll.double()
        e = fixed[t - 1] if fixed is not None else eps
        used[t - 1] = e
        bt = b.to(dt)
        e3 = e.view(1, B, 1)

        # HMC on U(z) = -(log p(z) + b log p(x|z)).
        p0 = torch.randn(z.shape, generator=generator, device=dev, dtype=dt)
        energy0 = -(lp + bt * ll).double() + 0.5 * p0.double().pow(2).sum(-1)
        zn, p = z, p0 + 0.5 * e3 * (g_lp + bt * g_ll)
        for step in range(leapfrog_steps):
            zn = zn + e3 * p
            lln, g_lln = value_and_grad(log_likelihood, zn)
            lpn, g_lpn = prior_vg(zn)
            grad = g_lpn + bt * g_lln
            p = p + (e3 if step < leapfrog_steps - 1 else 0.5 * e3) * grad
        energy1 = -(lpn + bt * lln).double() + 0.5 * p.double().pow(2).sum(-1)
        log_ratio = energy0 - energy1
        log_ratio = torch.where(torch.isfinite(log_ratio), log_ratio, torch.full_like(log_ratio, -math.inf))
        u = torch.rand(log_ratio.shape, generator=generator, device=dev, dtype=torch.float64)
        acc = torch.log(u) < log_ratio  # (S, B)
        a3 = acc.unsqueeze(-1)
        z = torch.where(a3, zn, z)
        ll, lp = torch.where(acc, lln, ll), torch.where(acc, lpn, lp)
        g_ll, g_lp = torch.where(a3, g_lln, g_ll), torch.where(a3, g_lpn, g_lp)
        rate = torch.exp(log_ratio.clamp(max=0.0)).mean(0)  # (B,) mean acceptance probability
        accept_log[t - 1] = rate
        if fixed is None:
            eps = (eps * torch.exp(adapt_rate * (rate - target_accept)).to(dt)).clamp(1e-4, 2.0)
    return AISResult(log_w=log_w, z=z.detach(), step_sizes=used, accept=accept_log)
