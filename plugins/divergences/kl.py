"""The analytic KL term of the ELBO as a divergence plugin."""
from __future__ import annotations

import torch
from torch.distributions import kl_divergence

from infovae import Divergence


class KLDivergence(Divergence):
    """Mean over the batch of KL(q(z|x_i) || p(z)) in nats, in closed form.

    Unlike the marginal divergences it does not look at z at all, only at the
    posterior parameters; ``two_sample`` is therefore not defined.
    """

    def forward(self, z: torch.Tensor, posterior, prior) -> torch.Tensor:
        return kl_divergence(posterior, prior.distribution()).mean()
