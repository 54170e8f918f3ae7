"""The Markov chain of the InfoVAE paper's Proposition 1.

x_0 from the data or from noise; then z_t ~ q(z|x_{t-1}), x_t ~ p(x|z_t). When
q(z|x) and p(x|z) are consistent (L_AE at its optimum), the chain's stationary
distribution is the data distribution, so it samples even when q(z) does not
match p(z).
"""
from __future__ import annotations

from typing import Optional

import torch

import infovae
from infovae import Sampler

from .ancestral import decode


def noise_like(model, n: int, generator: Optional[torch.Generator]) -> torch.Tensor:
    """Uniform random values on the data's grid: (n, C, H, W) model values."""
    spec = model.spec
    device = model.device
    u = torch.randint(0, spec.num_levels, (n, *spec.shape), generator=generator, device=device)
    return infovae.from_levels(u, spec)


class MarkovChainSampler(Sampler):
    """callable(model, n, generator=None, data=None) -> x.

    Returns the last state (n, C, H, W), or with ``return_chain`` every state
    (n * (steps + 1), C, H, W) ordered chain by chain (``grid_columns`` = steps + 1).
    """

    def __init__(self, steps: int = 10, start: str = "noise", return_chain: bool = False):
        self.steps = steps
        self.start = start
        self.return_chain = return_chain
        self.grid_columns = steps + 1 if return_chain else None
        self.needs_data = start == "data"

    @torch.no_grad()
    def __call__(self, model, n: int, generator: Optional[torch.Generator] = None, data: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.start == "data":
            if data is None:
                raise ValueError("markov-chain with start=data needs data; pass data= or use start=noise")
            if data.shape[0] < n:
                raise ValueError(f"markov-chain needs {n} starting examples, got {data.shape[0]}")
            x = data[:n].to(model.device)
        else:
            x = noise_like(model, n, generator)
        states = [x]
        for t in range(self.steps):
            q = model.posterior(x)
            eps = torch.randn(q.mean.shape, generator=generator, device=x.device, dtype=q.mean.dtype)
            z = q.mean + q.stddev * eps
            with infovae.progress.report_progress_to(None):  # the chain reports steps, not the decoder's pixels
                x = decode(model, z, generator)
            states.append(x)
            infovae.progress.advance(t + 1, self.steps)
        if self.return_chain:
            return torch.stack(states, dim=1).flatten(0, 1)
        return x
