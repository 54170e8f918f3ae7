"""Reconstructions: each data example beside x' ~ p(x|z), z ~ q(z|x)."""
from __future__ import annotations

from typing import Optional

import torch

from infovae import Sampler

from .ancestral import decode


class ReconstructSampler(Sampler):
    """callable(model, n, generator=None, data=None) -> (2n, C, H, W): pairs (x, x')."""

    grid_columns = 2
    needs_data = True

    def __init__(self, use_mean: bool = False):
        self.use_mean = use_mean

    @torch.no_grad()
    def __call__(self, model, n: int, generator: Optional[torch.Generator] = None, data: Optional[torch.Tensor] = None) -> torch.Tensor:
        if data is None:
            raise ValueError("reconstruct needs data to reconstruct")
        if data.shape[0] < n:
            raise ValueError(f"reconstruct needs {n} examples, got {data.shape[0]}")
        x = data[:n].to(model.device)
        q = model.posterior(x)
        if self.use_mean:
            z = q.mean
        else:
            z = q.mean + q.stddev * torch.randn(q.mean.shape, generator=generator, device=x.device, dtype=q.mean.dtype)
        xr = decode(model, z, generator)
        return torch.stack([x, xr], dim=1).flatten(0, 1)
