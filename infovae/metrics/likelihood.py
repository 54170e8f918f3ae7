"""Likelihood metrics: importance-sampled NLL and the reconstruction term. Units: nats (and bits/dim)."""
from __future__ import annotations

import math
from typing import Callable, Dict, Optional, Tuple

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
    rows: Optional[Tuple[int, int]] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Importance-sampled log p(x) with q(z|x) as the proposal.

        log p(x) ~= logsumexp_k [log p(x|z_k) + log p(z_k) - log q(z_k|x)] - log K,   z_k ~ q(z|x)

    x: (N, C, H, W) model values. Returns (log_px, ess), each (N,) float64 on the model's device:
    log_px in nats per example, ess the effective sample size (sum w)^2 / sum w^2 in [1, K].
    The K samples are drawn in chunks and combined with a running log-sum-exp, so one decoder call
    sees at most ``batch_size`` (example, sample) pairs whatever K is.
    rows=(lo, hi): score only the examples lo..hi-1 of x (one rank's shard). The noise of every
    example is still drawn, in the order one process draws it, and the other examples' noise is
    discarded, so each example gets the same draws whatever the shard (drawing noise costs far less
    than the decoder calls that are skipped) and the generator ends in the same state.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    x = model_values(model, x)
    device = model_device(model)
    generator = make_generator(generator, device)
    k_chunk = min(num_samples, batch_size)
    b = max(1, batch_size // k_chunk)
    d = model.latent_dim
    lo, hi = (0, x.shape[0]) if rows is None else rows
    out, ess = [], []
    for s in batches(x.shape[0], b):
        a, e = max(lo, s.start), min(hi, s.stop)  # this batch's rows that are scored
        if a >= e:
            for start in range(0, num_samples, k_chunk):  # advance the generator as scoring would
                standard_normal((min(k_chunk, num_samples - start), s.stop - s.start, d), generator, device)
            continue
        xb = x[a:e].to(device)
        nb = xb.shape[0]
        loc, scale = gaussian_params(model.posterior(xb), "nll")
        lse_w = torch.full((nb,), -math.inf, dtype=torch.float64, device=device)
        lse_w2 = lse_w.clone()
        log_scale_sum = torch.log(scale.double()).sum(-1)  # (nb,)
        for start in range(0, num_samples, k_chunk):
            k = min(k_chunk, num_samples - start)
            eps = standard_normal((k, s.stop - s.start, d), generator, device)[:, a - s.start:e - s.start]  # float64
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


_NLL_DEFAULTS = dict(num_samples=None, estimator="is", proposal="encoder", scale_factor=1.0, prior_weight=0.0,
                    refine_steps=50, ais_steps=500, ais_chains=16, leapfrog_steps=10)
# refine_gaussian's default number of ELBO samples per step (infovae.estimators.proposal_log_likelihood).
_REFINE_SAMPLES = 8


def _check_rows_range(n: int, lo: int, hi: int) -> None:
    if not 0 <= lo < hi <= n:
        raise ValueError(f"rows {lo}..{hi} are not a non-empty range of the {n} examples")


def _block_seed(base: int, block: int) -> int:
    return (base + block * 0x9E3779B97F4A7C15) % 2**63


def blocked_rows(x: torch.Tensor, lo: int, hi: int, block: int, generator: torch.Generator,
                 fn: Callable[[torch.Tensor, torch.Generator], Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
    """Per-example values of rows lo..hi-1 of x computed in fixed blocks of ``block`` examples.

    Block j (examples j*block .. (j+1)*block - 1 of all of x) is scored by ``fn(x_block, g_j)``, where
    g_j is seeded from one seed drawn from ``generator`` and j: an example's random draws depend on
    its block alone, never on which rows (which rank's shard) are asked for. A block that straddles
    lo or hi is scored whole and trimmed. ``fn`` returns {name: (len(x_block), ...) tensor}.
    """
    base = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    n = x.shape[0]
    parts = []
    for j in range(lo // block, -(-hi // block)):
        s, e = j * block, min(n, (j + 1) * block)
        g = torch.Generator(device=generator.device).manual_seed(_block_seed(base, j))
        out = fn(x[s:e], g)
        a, b = max(lo, s) - s, min(hi, e) - s
        parts.append({k: v[a:b] for k, v in out.items()})
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def nll_rows(model, x: torch.Tensor, lo: int, hi: int, *, generator: Optional[torch.Generator] = None,
             batch_size: int = 1024, **options) -> Dict[str, torch.Tensor]:
    """Per-example pieces of ``nll`` for the examples lo..hi-1 of x (one rank's shard): each (hi - lo,)
    float64. "log_px" (nats) and, for IS, "ess"; for AIS "se" (its delta-method standard error) and
    the block's "accept_mean", "accept_min" and "step_size" (median final HMC step size).

    Random draws, so that an example's value does not depend on the shard: the plain IS estimator
    (q(z|x) proposal, scale 1, no prior mixture) draws every example's noise in the single-process
    order and keeps its rows (``importance_log_likelihood(rows=...)``), which keeps the values of
    one process as they were; the refined/scaled/mixture proposals and AIS score fixed blocks of
    examples (the estimator's own chunk: ``batch_size // max(min(K, batch_size), 8)`` examples for
    a refined proposal, ``batch_size // min(K, batch_size)`` otherwise, ``batch_size // ais_chains``
    for AIS), each block with its own generator (``blocked_rows``).
    """
    o = {**_NLL_DEFAULTS, **options}
    estimator, proposal = o["estimator"], o["proposal"]
    if estimator not in ("is", "ais"):
        raise ValueError(f"nll: unknown estimator {estimator!r}; choose is (importance sampling) or ais (annealed)")
    if proposal not in PROPOSALS:
        raise ValueError(f"nll: unknown proposal {proposal!r}; choose from {', '.join(PROPOSALS)}")
    x = model_values(model, x)
    _check_rows_range(x.shape[0], lo, hi)
    device = model_device(model)
    generator = make_generator(generator, device)
    if estimator == "ais":
        chains = int(o["ais_chains"])

        def score(xb, g):
            log_px, se, info = ais_log_likelihood(model, xb, steps=int(o["ais_steps"]), chains=chains,
                                                  leapfrog_steps=int(o["leapfrog_steps"]), generator=g,
                                                  batch_size=batch_size)
            full = lambda v: torch.full((xb.shape[0],), float(v), dtype=torch.float64, device=device)  # noqa: E731
            return {"log_px": log_px.double(), "se": se.double(), "accept_mean": full(info["accept_mean"]),
                    "accept_min": full(info["accept_min"]), "step_size": full(info["final_step_size_median"])}

        return blocked_rows(x, lo, hi, max(1, batch_size // chains), generator, score)
    k = default_num_samples(model.latent_dim) if o["num_samples"] is None else int(o["num_samples"])
    if proposal == "encoder" and o["scale_factor"] == 1.0 and o["prior_weight"] == 0.0:
        log_px, ess = importance_log_likelihood(model, x, k, generator=generator, batch_size=batch_size, rows=(lo, hi))
        return {"log_px": log_px, "ess": ess}

    def score_is(xb, g):
        log_px, ess = proposal_log_likelihood(model, xb, k, proposal=proposal, scale_factor=float(o["scale_factor"]),
                                              prior_weight=float(o["prior_weight"]), refine_steps=int(o["refine_steps"]),
                                              generator=g, batch_size=batch_size)
        return {"log_px": log_px.double(), "ess": ess.double()}

    k_chunk = min(k, batch_size)
    block = max(1, batch_size // max(k_chunk, _REFINE_SAMPLES if proposal == "refined" else 1))
    return blocked_rows(x, lo, hi, block, generator, score_is)


def nll_combine(model, rows: Dict[str, torch.Tensor], **options) -> Dict[str, object]:
    """The ``nll`` result from the rows of all N examples (``nll_rows``)."""
    o = {**_NLL_DEFAULTS, **options}
    log_px = rows["log_px"]
    n = int(log_px.numel())
    if o["estimator"] == "ais":
        ais_steps, ais_chains, leapfrog_steps = int(o["ais_steps"]), int(o["ais_chains"]), int(o["leapfrog_steps"])
        return {
            **_nats_summary(model, -log_px, "nll"),
            "n": n,
            "estimator": "ais",
            "estimator_std_err": float(rows["se"].pow(2).sum().sqrt()) / n,
            "ais_steps": ais_steps, "ais_chains": ais_chains, "leapfrog_steps": leapfrog_steps,
            "accept_mean": float(rows["accept_mean"].mean()),
            "accept_min": float(rows["accept_min"].min()),
            "final_step_size_median": float(rows["step_size"].median()),
            "description": f"-log p(x) by AIS, prior to posterior, {ais_steps} sigmoidal temperatures, "
                           f"{ais_chains} chains, HMC with {leapfrog_steps} leapfrog steps",
        }
    proposal, scale_factor, prior_weight, refine_steps = o["proposal"], o["scale_factor"], o["prior_weight"], o["refine_steps"]
    k = default_num_samples(model.latent_dim) if o["num_samples"] is None else int(o["num_samples"])
    ess = rows["ess"]
    if proposal == "encoder" and scale_factor == 1.0 and prior_weight == 0.0:
        what = "q(z|x) proposal"
    else:
        what = (f"{'q(z|x)' if proposal == 'encoder' else f'q(z|x) refined by {refine_steps} ELBO steps'}"
                f"{f' with scale x{scale_factor:g}' if scale_factor != 1.0 else ''}"
                f"{f', mixed with the prior (weight {prior_weight:g})' if prior_weight > 0 else ''} as proposal")
    se = torch.sqrt(torch.clamp(k / ess - 1.0, min=0.0) / k)  # delta-method s.e. of each log(mean w)
    return {
        **_nats_summary(model, -log_px, "nll"),
        "num_samples": k,
        "n": n,
        "estimator": "is",
        "proposal": proposal,
        "estimator_std_err": float(se.pow(2).sum().sqrt()) / n,
        "ess_mean": float(ess.mean()),
        "description": f"-log p(x) by importance sampling, {what}, K={k} samples per example",
    }


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
    ``ais_chains`` chains, HMC with ``leapfrog_steps`` leapfrog steps; reports acceptance rates
    (computed per block of ``batch_size // ais_chains`` examples: "accept_mean" over all examples
    and temperatures, "accept_min" the worst temperature of the worst block, and the median over
    examples of their block's median final step size).
    Both are stochastic upper bounds on the true NLL. Reported: the mean over the N examples in nats
    ("value") with its standard error across examples (std / sqrt(N)), the same in bits/dim
    (nats / (C*H*W * ln 2)), N, and "estimator_std_err": the Monte Carlo error of the mean itself.
    Computed as ``nll_combine(nll_rows(0, N))``, which is how it is sharded under torchrun.
    """
    options = dict(num_samples=num_samples, estimator=estimator, proposal=proposal, scale_factor=scale_factor,
                   prior_weight=prior_weight, refine_steps=refine_steps, ais_steps=ais_steps, ais_chains=ais_chains,
                   leapfrog_steps=leapfrog_steps)
    x = model_values(model, x)
    rows = nll_rows(model, x, 0, x.shape[0], generator=generator, batch_size=batch_size, **options)
    return nll_combine(model, rows, **options)


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
def reconstruction_rows(model, x: torch.Tensor, lo: int, hi: int, *, generator: Optional[torch.Generator] = None,
                        batch_size: int = 1024, **_ignored) -> Dict[str, torch.Tensor]:
    """-log p(x|z) (nats, (hi - lo,) float64) of the examples lo..hi-1, one z ~ q(z|x) each. The noise of
    every example is drawn in the single-process order and the other rows' noise discarded (as in
    ``importance_log_likelihood(rows=...)``), so an example's value does not depend on the shard."""
    x = model_values(model, x)
    _check_rows_range(x.shape[0], lo, hi)
    device = model_device(model)
    generator = make_generator(generator, device)
    d = model.latent_dim
    values = []
    for s in batches(x.shape[0], batch_size):
        eps = standard_normal((s.stop - s.start, d), generator, device)
        a, e = max(lo, s.start), min(hi, s.stop)
        if a >= e:
            continue
        xb = x[a:e].to(device)
        loc, scale = gaussian_params(model.posterior(xb), "reconstruction")
        z = (loc.double() + scale.double() * eps[a - s.start:e - s.start]).to(loc.dtype)
        values.append(-model.log_likelihood(xb, z).double())
    return {"nats": torch.cat(values)}


def reconstruction_combine(model, rows: Dict[str, torch.Tensor], **_ignored) -> Dict[str, object]:
    values = rows["nats"]
    return {
        **_nats_summary(model, values, "reconstruction"),
        "n": int(values.numel()),
        "description": "-log p(x|z), one z ~ q(z|x) per example",
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
    single sample); also in bits/dim. ``reconstruction_combine(reconstruction_rows(0, N))``.
    """
    x = model_values(model, x)
    return reconstruction_combine(model, reconstruction_rows(model, x, 0, x.shape[0], generator=generator,
                                                             batch_size=batch_size))
