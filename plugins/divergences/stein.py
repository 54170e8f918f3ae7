"""Stein regularizer: the SVGD direction as a gradient, with no divergence value.

With phi = ``infovae.functional.stein_direction(z, score_p(z))`` the surrogate

    L = -(1/n) sum_i z_i . stop_grad(phi(z_i))

has gradient dL/dz_i = -phi(z_i)/n, so gradient *descent* on L moves every
code along +phi, the direction that decreases KL(q(z) || p(z)) fastest in the
kernel's RKHS (the InfoVAE paper writes the same update for ascent). The
value of L means nothing (``has_value = False``).
"""
from __future__ import annotations

from typing import Sequence, Union

import torch

from infovae import Divergence, bandwidth_option, score_by_autograd
from infovae.functional import stein_direction


class SteinDivergence(Divergence):
    """Surrogate loss whose gradient w.r.t. z is -phi/n (phi: Stein variational direction).

    bandwidth: sigma of the rbf kernel, a sequence (sum of kernels), or
    "median" (sigma^2 = median squared distance / (2 log(n + 1)), the SVGD
    reference's heuristic). The prior's score comes from ``prior.score`` (the
    closed form for N(0, I)), or by autograd of ``prior.log_prob`` when the
    prior has no ``score``.
    """

    properties = frozenset()
    has_value = False

    def __init__(self, bandwidth: Union[str, float, Sequence[float]] = "median"):
        super().__init__()
        self.bandwidth = bandwidth_option(bandwidth)

    @staticmethod
    def score(prior, z: torch.Tensor) -> torch.Tensor:
        fn = getattr(prior, "score", None)
        if callable(fn):
            return fn(z)
        return score_by_autograd(prior.log_prob, z)

    def forward(self, z: torch.Tensor, posterior, prior) -> torch.Tensor:
        """-(z * stop_grad(phi / n)).sum() for codes z (B, D); 0-dim float32."""
        zd = z.detach()
        if zd.dtype != torch.float64:
            zd = zd.float()  # bf16 / fp16 codes (autocast): work in float32
        with torch.no_grad():
            score = self.score(prior, zd)
        phi = stein_direction(zd, score, self.bandwidth)
        # Written so that autograd gives exactly -phi/n: the gradient of
        # -(z * c).sum() w.r.t. z is -c, with c = phi / n already rounded.
        return -(z.to(phi.dtype) * (phi / z.shape[0])).sum()

    def extra_repr(self) -> str:
        return f"bandwidth={self.bandwidth!r}"
