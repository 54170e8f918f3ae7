"""Ancestral sampling: z ~ p(z), x ~ p(x|z)."""
from __future__ import annotations

import inspect
from typing import Optional

import torch

from infovae import Sampler


def decode(model, z: torch.Tensor, generator: Optional[torch.Generator], fast: str = "auto") -> torch.Tensor:
    """x ~ p(x|z), passing ``fast`` to decoders whose ``sample`` accepts it."""
    sample = model.decoder.sample
    if fast != "auto" and "fast" in inspect.signature(sample).parameters:
        return sample(z, generator=generator, fast=(fast == "yes"))
    return sample(z, generator=generator)


class AncestralSampler(Sampler):
    """callable(model, n, generator=None, data=None) -> (n, C, H, W) model values."""

    grid_columns = None
    needs_data = False

    def __init__(self, fast: str = "auto"):
        self.fast = fast

    @torch.no_grad()
    def __call__(self, model, n: int, generator: Optional[torch.Generator] = None, data: Optional[torch.Tensor] = None) -> torch.Tensor:
        z = model.prior.sample(n, generator=generator)
        return decode(model, z, generator, self.fast)
