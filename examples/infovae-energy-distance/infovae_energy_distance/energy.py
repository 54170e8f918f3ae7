"""The energy distance as an InfoVAE divergence D(q(z) || p(z)).

For samples x (n, d) and y (m, d) the energy distance (Szekely & Rizzo) is the
V-statistic

    E(x, y) = 2/(n m) sum_ij ||x_i - y_j|| - 1/n^2 sum_ij ||x_i - x_j|| - 1/m^2 sum_ij ||y_i - y_j||,

the energy distance between the two empirical distributions. Euclidean distance
is conditionally negative definite, so E >= 0 with equality iff the empirical
distributions are equal; it is symmetric and invariant to permutations and
translations. Units: those of z (it is not in nats).

Numerics: distances are computed from the differences x_i - y_j directly
(``torch.cdist`` without the matmul expansion ||a||^2 + ||b||^2 - 2 a.b, which
cancels catastrophically once the codes sit far from the origin), in float32
even under bf16 autocast. The gradient of ||a - b|| at a = b is taken as 0
(torch.cdist's convention, a valid subgradient), so duplicate codes never give
NaN gradients. Memory is O(n m).
"""
from __future__ import annotations

import torch

from infovae import Divergence


def _distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(n, d), (m, d) -> (n, m) Euclidean distances from explicit differences."""
    return torch.cdist(a, b, p=2.0, compute_mode="donot_use_mm_for_euclid_dist")


def energy_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Energy distance between x (n, d) and y (m, d) as a 0-dim float32 tensor (V-statistic)."""
    if x.dim() != 2 or y.dim() != 2:
        raise ValueError(f"energy distance takes x (n, d) and y (m, d), got shapes {tuple(x.shape)} and {tuple(y.shape)}")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension, got {x.shape[1]} and {y.shape[1]}")
    if x.shape[0] < 1 or y.shape[0] < 1:
        raise ValueError(f"energy distance needs at least one row in each sample, got {x.shape[0]} and {y.shape[0]}")
    if not (x.is_floating_point() and y.is_floating_point()):
        raise ValueError(f"energy distance takes floating-point samples, got {x.dtype} and {y.dtype}")
    with torch.autocast(device_type=x.device.type, enabled=False):
        x, y = x.float(), y.float()
        return 2.0 * _distances(x, y).mean() - _distances(x, x).mean() - _distances(y, y).mean()


class EnergyDistance(Divergence):
    """D(q(z) || p(z)) estimated by the energy distance between the codes z (B, D)
    and ``prior_samples`` draws from the prior (0: B draws)."""

    properties = frozenset(
        {"nonnegative", "zero_on_identical", "positive_on_distinct", "symmetric", "permutation_invariant", "translation_invariant"}
    )

    def __init__(self, prior_samples: int = 0):
        super().__init__()
        if prior_samples < 0:
            raise ValueError(f"prior_samples must be >= 0 (0 means one per code), got {prior_samples}")
        self.prior_samples = int(prior_samples)

    def forward(self, z: torch.Tensor, posterior, prior) -> torch.Tensor:
        m = self.prior_samples or z.shape[0]
        y = prior.sample(m).to(device=z.device)
        return energy_distance(z, y)

    def two_sample(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return energy_distance(x, y)

    def extra_repr(self) -> str:
        return f"prior_samples={self.prior_samples}"
