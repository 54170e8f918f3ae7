"""The InfoVAE model: encoder q(z|x), decoder p(x|z), prior p(z).

It holds no loss: the objective (``infovae.objective``) combines the
reconstruction term with any registered divergences.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from torch.distributions import Distribution

from .priors import StandardNormalPrior
from .spec import DataSpec


class InfoVAE(nn.Module):
    """x (B, C, H, W) model values <-> z (B, latent_dim).

    encoder(x) -> q(z|x) with batch shape (B,), event shape (latent_dim,);
    decoder.log_prob(x, z) -> (B,) nats; decoder.sample(z) -> x.
    """

    def __init__(self, spec: DataSpec, latent_dim: int, encoder: nn.Module, decoder: nn.Module, prior: Optional[nn.Module] = None):
        super().__init__()
        if latent_dim < 1:
            raise ValueError(f"latent dimension must be >= 1, got {latent_dim}")
        self.spec = spec
        self.latent_dim = int(latent_dim)
        self.encoder = encoder
        self.decoder = decoder
        self.prior = prior if prior is not None else StandardNormalPrior(latent_dim)

    def posterior(self, x: torch.Tensor) -> Distribution:
        """q(z|x) for model values x (B, C, H, W)."""
        q = self.encoder(x)
        if tuple(q.batch_shape) != (x.shape[0],) or tuple(q.event_shape) != (self.latent_dim,):
            raise RuntimeError(
                f"encoder returned a distribution with batch shape {tuple(q.batch_shape)} and event shape "
                f"{tuple(q.event_shape)}; expected ({x.shape[0]},) and ({self.latent_dim},)"
            )
        return q

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
        """log p(x|z) in nats: (B,) or per subpixel (B, C, H, W)."""
        return self.decoder.log_prob(x, z, reduction=reduction)

    @torch.no_grad()
    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Ancestral samples: z ~ p(z), x ~ p(x|z); (n, C, H, W) model values."""
        z = self.prior.sample(n, generator=generator)
        return self.decoder.sample(z, generator=generator)

    @property
    def device(self) -> torch.device:
        return self.prior.loc.device
