"""Importance sampling of log p(x) with proposals that need not be the encoder's q(z|x).

    log p(x) ~= logsumexp_k [log p(x|z_k) + log p(z_k) - log r(z_k|x)] - log K,   z_k ~ r(z|x)

The estimate is a stochastic lower bound on log p(x) whatever r is; its gap shrinks when r covers the
posterior p(z|x). The encoder's q(z|x) is often narrower than p(z|x) (an over-confident encoder),
which makes the weights heavy-tailed. Proposals here (composable, per example):

- ``gaussian_proposal(loc, scale)``: r = N(loc, diag(scale^2)); scale inflation is ``scale * c``;
- refinement (``refine_gaussian``): loc and log scale optimized per example by gradient ascent on the
  ELBO E_r[log p(x|z) + log p(z) - log r(z)] (the per-example optimum behind Cremer et al. 2018's
  "amortization gap"), started from q(z|x);
- a defensive mixture (Hesterberg 1995) r' = (1 - a) r + a p(z), whose weights are bounded by
  p(x|z) / a.

Shapes: K samples, B examples, D dims; samples (K, B, D), log densities (K, B).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import torch

LOG_2PI = math.log(2.0 * math.pi)


@dataclass
class GaussianProposal:
    """r(z|x_b) = N(loc_b, diag(scale_b^2)), optionally mixed with the prior N(0, I) with weight
    ``prior_weight``. loc, scale: (B, D)."""

    loc: torch.Tensor
    scale: torch.Tensor
    prior_weight: float = 0.0

    def sample(self, k: int, generator: Optional[torch.Generator]) -> torch.Tensor:
        """(k, B, D) draws in the dtype of loc."""
        b, d = self.loc.shape
        eps = torch.randn((k, b, d), generator=generator, device=self.loc.device, dtype=self.loc.dtype)
        z = self.loc + self.scale * eps
        if self.prior_weight > 0:
            u = torch.rand((k, b, 1), generator=generator, device=self.loc.device, dtype=self.loc.dtype)
            prior = torch.randn((k, b, d), generator=generator, device=self.loc.device, dtype=self.loc.dtype)
            z = torch.where(u < self.prior_weight, prior, z)
        return z

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """(k, B, D) -> (k, B) float64 nats."""
        z = z.double()
        d = z.shape[-1]
        loc, scale = self.loc.double(), self.scale.double()
        log_r = -0.5 * ((z - loc) / scale).pow(2).sum(-1) - torch.log(scale).sum(-1) - 0.5 * d * LOG_2PI
        a = self.prior_weight
        if a <= 0:
            return log_r
        log_p = -0.5 * z.pow(2).sum(-1) - 0.5 * d * LOG_2PI
        if a >= 1:
            return log_p
        return torch.logaddexp(log_r + math.log1p(-a), log_p + math.log(a))


def importance_sample(
    log_joint: Callable[[torch.Tensor], torch.Tensor],
    proposal: GaussianProposal,
    num_samples: int,
    *,
    chunk: int,
    generator: Optional[torch.Generator] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """log p(x) estimates (B,) and effective sample sizes (sum w)^2 / sum w^2 (B,), float64.

    log_joint: (k, B, D) -> (k, B) log p(x_b, z) (nats). Samples are drawn ``chunk`` at a time and
    combined with running log-sum-exps, so memory does not grow with ``num_samples``.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    b = proposal.loc.shape[0]
    dev = proposal.loc.device
    lse_w = torch.full((b,), -math.inf, dtype=torch.float64, device=dev)
    lse_w2 = lse_w.clone()
    for start in range(0, num_samples, chunk):
        k = min(chunk, num_samples - start)
        z = proposal.sample(k, generator)
        log_w = log_joint(z).double() - proposal.log_prob(z)
        lse_w = torch.logaddexp(lse_w, torch.logsumexp(log_w, 0))
        lse_w2 = torch.logaddexp(lse_w2, torch.logsumexp(2.0 * log_w, 0))
    return lse_w - math.log(num_samples), torch.exp(2.0 * lse_w - lse_w2)


def refine_gaussian(
    log_joint: Callable[[torch.Tensor], torch.Tensor],
    loc: torch.Tensor,
    scale: torch.Tensor,
    *,
    steps: int = 50,
    samples: int = 8,
    lr: float = 0.05,
    generator: Optional[torch.Generator] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-example Gaussian (loc, scale), each (B, D), fitted by ``steps`` Adam steps (learning rate
    ``lr``) on the reparameterized ELBO with ``samples`` draws per step, from the start (loc, scale).
    Examples are independent (the loss is a sum over them). Returns detached tensors in loc's dtype.
    """
    if steps < 0 or samples < 1:
        raise ValueError(f"refinement needs steps >= 0 and samples >= 1, got {steps} and {samples}")
    mu = loc.detach().clone().requires_grad_(True)
    log_s = torch.log(scale.detach()).clone().requires_grad_(True)
    opt = torch.optim.Adam([mu, log_s], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            eps = torch.randn((samples, *mu.shape), generator=generator, device=mu.device, dtype=mu.dtype)
            z = mu + torch.exp(log_s) * eps
            elbo = log_joint(z).mean(0) + log_s.sum(-1)  # entropy up to a constant
            # Gradients w.r.t. the proposal only: the model's own .grad stay untouched.
            mu.grad, log_s.grad = torch.autograd.grad(-elbo.sum(), [mu, log_s])
            opt.step()
            with torch.no_grad():
                log_s.clamp_(-10.0, 5.0)
    return mu.detach(), torch.exp(log_s.detach())
