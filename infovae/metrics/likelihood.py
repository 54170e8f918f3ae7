"""Likelihood metrics: importance-sampled NLL and the reconstruction term. Units: nats (and bits/dim)."""
from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

import torch

from ..estimators import PROPOSALS, ais_log_likelihood, proposal_log_likelihood
from ._common import (
    LOG_2PI,
    batches,
    gaussian_params,
    make_generator,
    mean_and_se,
    model_device,
    model_values,
    standard_normal,
)


def default_num_samples(latent_dim: int) -> int:
    """K for ``nll`` when none is given: 1000 for dim z <= 10, 5000 above.

    The importance-sampling estimate is biased upward (by Jensen, E log mean w <= log p(x)) by about
    Var(w) / (2 K p(x)^2), and the variance of the weights grows with the latent dimension; 5000 is
    the K of Burda et al. (IWAE) for their evaluations.
    """
    return 1000 if latent_dim <= 10 else 5000


@torch.no_grad()
def importance_log_likelihood(
    model,
    x: torch.Tensor,
    num_samples: int,
    generator: Optional[torch.Generator] = None,
    batch_size: int = 1024,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Importance-sampled log p(x) with q(z|x) as the proposal.

        log p(x) ~= logsumexp_k [log p(x|z_k) + log p(z_k) - log q(z_k|x)] - log K,   z_k ~ q(z|x)

    x: (N, C, H, W) model values. Returns (log_px, ess), each (N,) float64 on the model's device:
    log_px in nats per example, ess the effective sample size (sum w)^2 / sum w^2 in [1, K].
    The K samples are drawn in chunks and combined with a running log-sum-exp, so one decoder call
    sees at most ``batch_size`` (example, sample) pairs whatever K is.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    x = model_values(model, x)
    device = model_device(model)
    generator = make_generator(generator, device)
    k_chunk = min(num_samples, batch_size)
    b = max(1, batch_size // k_chunk)
    d = model.latent_dim
    out, ess = [], []
    for s in batches(x.shape[0], b):
        xb = x[s].to(device)
        nb = xb.shape[0]
        loc, scale = gaussian_params(model.posterior(xb), "nll")
        lse_w = torch.full((nb,), -math.inf, dtype=torch.float64, device=device)
        lse_w2 = lse_w.clone()
        log_scale_sum = torch.log(scale.double()).sum(-1)  # (nb,)
        for start in range(0, num_samples, k_chunk):
            k = min(k_chunk, num_samples - start)
            eps = standard_normal((k, nb, d), generator, device)  # float64
            z = (loc.double() + scale.double() * eps).to(loc.dtype)  # (k, nb, D)
            zf = z.reshape(k * nb, d)
            xr = xb.unsqueeze(0).expand(k, *xb.shape).reshape(k * nb, *xb.shape[1:])
            log_px_z = model.log_likelihood(xr, zf).double().view(k, nb)
            log_pz = model.prior.log_prob(zf).double().view(k, nb)
            log_qz = -0.5 * eps.pow(2).sum(-1) - log_scale_sum - 0.5 * d * LOG_2PI  # (k, nb)
            log_w = log_px_z + log_pz - log_qz
            lse_w = torch.logaddexp(lse_w, torch.logsumexp(log_w, 0))
            lse_w2 = torch.logaddexp(lse_w2, torch.logsumexp(2.0 * log_w, 0))
        out.append(lse_w - math.log(num_samples))
        ess.append(torch.exp(2.0 * lse_w - lse_w2))
    return torch.cat(out), torch.cat(ess)


def nll(
    model,
    x: torch.Tensor,
    *,
    generator: Optional[torch.Generator] = None,
    batch_size: int = 1024,
    num_samples: Optional[int] = None,
    estimator: str = "is",
    proposal: str = "encoder",
    scale_factor: float = 1.0,
    prior_weight: float = 0.0,
    refine_steps: int = 50,
    ais_steps: int = 500,
    ais_chains: int = 16,
    leapfrog_steps: int = 10,
) -> Dict[str, object]:
    """Negative log-likelihood -log p(x) in nats, by importance sampling or AIS.

    estimator="is": -[logsumexp_k (log p(x|z_k) + log p(z_k) - log r(z_k|x)) - log K], z_k ~ r(z|x),
    K = ``num_samples`` (default 1000 for dim z <= 10, else 5000). The proposal r is q(z|x)
    (``proposal="encoder"``) or q(z|x) refined per example by ``refine_steps`` gradient steps on the
    ELBO (``"refined"``); its scale is multiplied by ``scale_factor`` and it is mixed with the prior
    with weight ``prior_weight`` (see ``infovae.estimators``). Reports the mean effective sample size.
    estimator="ais": annealed importance sampling from p(z) to p(z|x), ``ais_steps`` temperatures,
    ``ais_chains`` chains, HMC with ``leapfrog_steps`` leapfrog steps; reports acceptance rates.
    Both are stochastic upper bounds on the true NLL. Reported: the mean over the N examples in nats
    ("value") with its standard error across examples (std / sqrt(N)), the same in bits/dim
    (nats / (C*H*W * ln 2)), N, and "estimator_std_err": the Monte Carlo error of the mean itself.
    """
    if estimator not in ("is", "ais"):
        raise ValueError(f"nll: unknown estimator {estimator!r}; choose is (importance sampling) or ais (annealed)")
    if proposal not in PROPOSALS:
        raise ValueError(f"nll: unknown proposal {proposal!r}; choose from {', '.join(PROPOSALS)}")
    d = model.latent_dim
    x = model_values(model, x)
    generator = make_generator(generator, model_device(model))
    if estimator == "ais":
        log_px, se, info = ais_log_likelihood(model, x, steps=int(ais_steps), chains=int(ais_chains),
                                              leapfrog_steps=int(leapfrog_steps), generator=generator,
                                              batch_size=batch_size)
        return {
            **_nats_summary(model, -log_px, "nll"),
            "n": int(log_px.numel()),
            "estimator": "ais",
            "estimator_std_err": float(se.pow(2).sum().sqrt()) / log_px.numel(),
            "ais_steps": int(ais_steps), "ais_chains": int(ais_chains), "leapfrog_steps": int(leapfrog_steps),
            **info,
            "description": f"-log p(x) by AIS, prior to posterior, {ais_steps} sigmoidal temperatures, "
                           f"{ais_chains} chains, HMC with {leapfrog_steps} leapfrog steps",
        }
    k = default_num_samples(d) if num_samples is None else int(num_samples)
    plain = proposal == "encoder" and scale_factor == 1.0 and prior_weight == 0.0
    if plain:
        log_px, ess = importance_log_likelihood(model, x, k, generator=generator, batch_size=batch_size)
        what = "q(z|x) proposal"
    else:
        log_px, ess = proposal_log_likelihood(model, x, k, proposal=proposal, scale_factor=float(scale_factor),
                                              prior_weight=float(prior_weight), refine_steps=int(refine_steps),
                                              generator=generator, batch_size=batch_size)
        what = (f"{'q(z|x)' if proposal == 'encoder' else f'q(z|x) refined by {refine_steps} ELBO steps'}"
                f"{f' with scale x{scale_factor:g}' if scale_factor != 1.0 else ''}"
                f"{f', mixed with the prior (weight {prior_weight:g})' if prior_weight > 0 else ''} as proposal")
    se = torch.sqrt(torch.clamp(k / ess - 1.0, min=0.0) / k)  # delta-method s.e. of each log(mean w)
    return {
        **_nats_summary(model, -log_px, "nll"),
        "num_samples": k,
        "n": int(log_px.numel()),
        "estimator": "is",
        "proposal": proposal,
        "estimator_std_err": float(se.pow(2).sum().sqrt()) / log_px.numel(),
        "ess_mean": float(ess.mean()),
        "description": f"-log p(x) by importance sampling, {what}, K={k} samples per example",
    }


def _nats_summary(model, values: torch.Tensor, metric: str) -> Dict[str, object]:
    """Mean of per-example nats with its standard error, also in bits per dimension."""
    mean, se = mean_and_se(values, metric, "log-likelihood")
    per_dim = model.spec.num_dims * math.log(2.0)
    return {
        "value": mean,
        "std_err": se,
        "units": "nats per example",
        "bits_per_dim": mean / per_dim,
        "bits_per_dim_std_err": None if se is None else se / per_dim,
    }


@torch.no_grad()
def reconstruction(
    model,
    x: torch.Tensor,
    *,
    generator: Optional[torch.Generator] = None,
    batch_size: int = 1024,
) -> Dict[str, object]:
    """Reconstruction term -E_q(z|x)[log p(x|z)] with one z ~ q(z|x) per example (the trainer's term).

    Mean over examples in nats, with standard error across examples (which includes the noise of the
    single sample); also in bits/dim.
    """
    x = model_values(model, x)
    device = model_device(model)
    generator = make_generator(generator, device)
    values = []
    for s in batches(x.shape[0], batch_size):
        xb = x[s].to(device)
        loc, scale = gaussian_params(model.posterior(xb), "reconstruction")
        eps = standard_normal(loc.shape, generator, device)
        z = (loc.double() + scale.double() * eps).to(loc.dtype)
        values.append(-model.log_likelihood(xb, z).double())
    values = torch.cat(values)
    return {
        **_nats_summary(model, values, "reconstruction"),
        "n": int(values.numel()),
        "description": "-log p(x|z), one z ~ q(z|x) per example",
    }
