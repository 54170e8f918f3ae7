"""The InfoVAE objective.

    loss = -E_q(z|x)[log p(x|z)] + sum_k lambda_k D_k(q(z) || p(z))

The ELBO's beta * KL(q(z|x) || p(z)) is the ``kl`` divergence with weight beta;
with no divergence the model is the plain probabilistic autoencoder L_AE.
All terms are means over the batch, in nats.
"""
from __future__ import annotations

import math
from typing import Dict, Sequence, Tuple

import torch
from torch import nn

from .errors import PluginOptionError


def check_weight(name: str, weight: float) -> float:
    weight = float(weight)
    if not math.isfinite(weight):
        raise PluginOptionError(f"divergence {name!r}: weight must be finite, got {weight}")
    if weight < 0:
        raise PluginOptionError(
            f"divergence {name!r}: weight {weight} is negative. A negative weight rewards q(z) for moving "
            f"AWAY from the prior p(z) (the bug in some published InfoVAE code); use a weight >= 0 "
            f"(InfoVAE uses lambda > 0 for the marginal divergence and beta in [0, 1] for kl)."
        )
    return weight


class Objective(nn.Module):
    """Reconstruction plus weighted divergences. Divergences are submodules so their
    own state (e.g. a discriminator) is saved with the model."""

    def __init__(self, divergences: Sequence[Tuple[str, float, nn.Module]]):
        super().__init__()
        names = [n for n, _, _ in divergences]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise PluginOptionError(f"divergence(s) {', '.join(sorted(dup))} given more than once; give each once with its total weight")
        self.divergences = nn.ModuleDict({n: m for n, _, m in divergences})
        self.weights: Dict[str, float] = {n: check_weight(n, w) for n, w, _ in divergences}

    def forward(self, model: nn.Module, x: torch.Tensor, batch=None) -> Tuple[torch.Tensor, Dict[str, torch.Tensor], torch.Tensor]:
        """x (B, C, H, W) model values -> (loss, terms, z).

        terms: "reconstruction" and each divergence's unweighted value (0-dim,
        detached); z: (B, D) the codes the divergences saw.

        A divergence with ``has_value = False`` (Stein's surrogate) contributes its gradient
        but no value: it is not among the terms, and it enters the loss as
        ``weight * (s - s.detach())``, which is 0 in value and has the surrogate's gradient,
        so the logged loss is the sum of the terms that mean something.

        ``batch``: an ``infovae.distributed.GlobalBatch`` when x is this rank's
        share of a global batch. The reconstruction stays this rank's mean (DDP
        averages it); the divergences get the codes (and a diagonal-Gaussian
        posterior) of the whole global batch, and z is then (B_global, D).
        """
        q = model.posterior(x)
        z = q.rsample() if batch is None else batch.rsample(q)
        recon = -model.log_likelihood(x, z).mean()
        loss = recon
        terms: Dict[str, torch.Tensor] = {"reconstruction": recon.detach()}
        if batch is not None:
            q = batch.gather_posterior(q) or q
            z = batch.gather(z)
        for name, div in self.divergences.items():
            value = div(z, q, model.prior)
            if value.dim() != 0:
                raise RuntimeError(f"divergence {name!r} returned shape {tuple(value.shape)}; divergences return a 0-dim tensor")
            if getattr(div, "has_value", True):
                loss = loss + self.weights[name] * value.float()
                terms[name] = value.detach()
            else:
                loss = loss + self.weights[name] * (value.float() - value.float().detach())
        return loss, terms, z
