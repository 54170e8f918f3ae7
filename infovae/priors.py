"""Priors p(z). The engine needs log_prob, the score grad_z log p(z), and sampling."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from torch.distributions import Independent, Normal


class StandardNormalPrior(nn.Module):
    """p(z) = N(0, I) over ``dim`` dimensions.

    A module (with a zero-size-cost buffer) so that ``.to(device)`` moves it with the model.
    """

    def __init__(self, dim: int):
        super().__init__()
        if dim < 1:
            raise ValueError(f"latent dimension must be >= 1, got {dim}")
        self.dim = int(dim)
        self.register_buffer("loc", torch.zeros(self.dim), persistent=False)

    def distribution(self) -> Independent:
        """torch.distributions object with batch shape () and event shape (dim,)."""
        return Independent(Normal(self.loc, torch.ones_like(self.loc)), 1)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """(..., dim) -> (...) log density in nats."""
        return -0.5 * (z.pow(2).sum(-1) + self.dim * torch.log(torch.tensor(2 * torch.pi, dtype=z.dtype, device=z.device)))

    def score(self, z: torch.Tensor) -> torch.Tensor:
        """grad_z log p(z) = -z, shape (..., dim)."""
        return -z

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """(n, dim) draws on the prior's device."""
        return torch.randn(n, self.dim, generator=generator, device=self.loc.device, dtype=self.loc.dtype)


def score_by_autograd(log_prob, z: torch.Tensor) -> torch.Tensor:
    """grad_z log p(z) for any differentiable log density; used for priors without a closed form."""
    with torch.enable_grad():
        zz = z.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(log_prob(zz).sum(), zz)
    return g
