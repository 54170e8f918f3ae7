"""The energy distance between q(z) and p(z) as an evaluation metric (``infovae evaluate``).

The codes z_n ~ q(z|x_n) of the N examples (one each) against ``prior_samples``
draws of the prior (0: N), scored with ``energy_distance`` in float32. Units: those
of z. Deterministic given the generator infovae hands every metric.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch

from infovae import Metric, PluginOptionError

from .energy import energy_distance


class EnergyToPrior(Metric):
    """Energy distance between codes z ~ q(z|x) of the examples and prior draws."""

    def __init__(self, prior_samples: int = 0):
        if isinstance(prior_samples, bool) or not isinstance(prior_samples, int) or prior_samples < 0:
            raise PluginOptionError(f"metric 'energy-prior': prior_samples must be an integer >= 0, got {prior_samples!r}")
        self.prior_samples = prior_samples

    @torch.no_grad()
    def __call__(self, model, x: torch.Tensor, *, labels=None, generator: Optional[torch.Generator] = None,
                 batch_size: int = 1024) -> Dict[str, Any]:
        device = model.device
        if generator is None:
            generator = torch.Generator(device=device).manual_seed(0)
        codes = []
        for start in range(0, x.shape[0], batch_size):
            q = model.posterior(x[start:start + batch_size].to(device))
            eps = torch.randn(q.mean.shape, generator=generator, device=generator.device).to(device)
            codes.append(q.mean + q.stddev * eps)
        z = torch.cat(codes)
        m = self.prior_samples or z.shape[0]
        zp = model.prior.sample(m, generator=generator).to(device)
        return {
            "value": float(energy_distance(z, zp)),
            "n": int(z.shape[0]),
            "prior_samples": int(m),
            "units": "units of z",
            "description": "energy distance between z ~ q(z|x) over the examples and prior draws",
        }
