"""Base types of the plugin contract.

A plugin does not have to inherit from these (duck typing is enough), but doing
so documents the contract and gives sensible defaults. Shapes: B = batch,
D = latent dimension, (C, H, W) = one example.
"""
from __future__ import annotations

from typing import Any, Dict, FrozenSet, Mapping, Optional

import torch
from torch import nn
from torch.distributions import Distribution, Independent, Normal

# Properties a divergence may claim; ``infovae.testing`` checks exactly the claimed ones
# on the divergence's two-sample form ``two_sample(x, y)``.
DIVERGENCE_PROPERTIES = frozenset(
    {
        "nonnegative",  # two_sample(x, y) >= 0
        "zero_on_identical",  # two_sample(x, P x) == 0 for any permutation P
        "positive_on_distinct",  # two_sample(x, y) > 0 when the multisets differ
        "symmetric",  # two_sample(x, y) == two_sample(y, x)
        "permutation_invariant",  # two_sample(P x, Q y) == two_sample(x, y)
        "translation_invariant",  # two_sample(x + c, y + c) == two_sample(x, y)
    }
)


class Divergence(nn.Module):
    """A regularizer D(q(z) || p(z)) estimated from a minibatch of codes.

    ``forward(z, posterior, prior)`` returns a 0-dim tensor to *minimize*:
    z is (B, D) reparameterized codes (gradients flow to the encoder),
    posterior is q(z|x) with batch shape (B,), prior has ``sample``, ``log_prob``, ``score``.

    Optional parts:
    - ``two_sample(x, y)``: the divergence between two samples x (n, D) and y (m, D);
      contract tests check ``properties`` on it. It must take unequal sizes (n != m, each
      from the kit's ``min_batch`` up to ``max_batch``), duplicate rows and x == y, and
      return a finite 0-dim float32 tensor with finite gradients w.r.t. both. It may be
      randomized (random features, subsampling) if it draws only from torch's global RNG:
      the kit builds a fresh instance right after ``torch.manual_seed(0)`` for every call, so
      every call sees the same draws, and a claimed property must hold for each draw.
    - ``has_value``: False when forward returns a surrogate whose value means
      nothing (Stein): the objective then uses only its gradient, never logs it
      as a term, and keeps it out of the logged loss (see ``infovae.Objective``).
    - Own trainable state (e.g. a discriminator): return an optimizer from
      ``configure_optimizer()`` and implement ``update(z, prior, optimizer)``;
      the trainer calls it after each model step, on that step's codes z
      (detached, the same z the model's loss used), keeps the optimizer in its
      state, and saves and restores both on resume. Parameters
      of such a divergence are never stepped by the model's optimizer.
    """

    properties: FrozenSet[str] = frozenset()
    has_value: bool = True

    def forward(self, z: torch.Tensor, posterior: Distribution, prior) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def configure_optimizer(self) -> Optional[torch.optim.Optimizer]:
        return None

    def update(self, z: torch.Tensor, prior, optimizer: torch.optim.Optimizer) -> Mapping[str, float]:
        return {}


class Decoder(nn.Module):
    """p(x|z). x are model values (see ``infovae.data``), z is (B, D).

    - ``log_prob(x, z, reduction="sum")`` -> (B,) log-likelihood in nats;
      ``reduction="none"`` -> (B, C, H, W) per-subpixel terms that sum to it.
    - ``sample(z, generator=None)`` -> (B, C, H, W) model values on the data's
      grid ({0., 1.} for binary, the 256 levels for 8-bit).
    """

    def log_prob(self, x: torch.Tensor, z: torch.Tensor, reduction: str = "sum") -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def sample(self, z: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


def check_reduction(reduction: str) -> None:
    """Raise ValueError unless ``reduction`` is "sum" or "none", the two that ``Decoder.log_prob`` takes.

    Call it first in a decoder's ``log_prob`` so a typo fails with the allowed values named.
    """
    if reduction not in ("sum", "none"):
        raise ValueError(f"reduction must be 'sum' or 'none', got {reduction!r}")


def diagonal_gaussian(loc: torch.Tensor, log_scale: torch.Tensor) -> Independent:
    """q(z|x) = N(loc, diag(exp(log_scale))^2) with batch shape (B,), event shape (D,).

    log_scale is clamped to [-10, 5] so an untrained encoder cannot produce
    zero or overflowing scales. Half-precision parameters (bf16 autocast) are
    cast to float32 so the codes and every divergence stay in float32; float64
    stays float64.
    """
    if loc.dtype in (torch.float16, torch.bfloat16):
        loc = loc.float()
    if log_scale.dtype in (torch.float16, torch.bfloat16):
        log_scale = log_scale.float()
    return Independent(Normal(loc, torch.exp(log_scale.clamp(-10.0, 5.0))), 1)


class Dataset:
    """What a dataset factory returns.

    ``spec``: DataSpec. ``split(name, generator=None)`` -> uint8 tensor (N, C, H, W)
    for name in ``splits`` (a tuple drawn from "train", "valid", "test"); treat it
    as read-only. ``labels(name)`` -> int64 tensor (N,) or None when that split has
    no labels. A data set with ``dynamic = True`` returns a fresh random draw of
    its train split for each call (dynamic binarization), drawn from ``generator``;
    the trainer asks for one per epoch with a generator seeded by (seed, epoch).
    """

    spec = None
    splits = ("train", "valid", "test")
    dynamic = False

    def split(self, name: str, generator: Optional[torch.Generator] = None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def labels(self, name: str) -> Optional[torch.Tensor]:
        return None


def split_error(name: str, splits) -> ValueError:
    """The error a data set's ``split(name)`` raises for a name not in ``splits``
    (``raise split_error(name, self.splits)``): it names the splits that exist."""
    return ValueError(f"unknown split {name!r}; this data set has {', '.join(splits)}")


class Sampler:
    """What a sampler factory returns: ``sampler(model, n, generator=None, data=None)``
    -> (n', C, H, W) model values on the data's grid (n' = n unless documented, e.g. whole chains).

    Class attributes the CLI reads (the sampler contract; the CLI knows no sampler by name):

    - ``needs_data``: True when the sampler starts from data; the CLI then passes ``data``,
      n examples (N, C, H, W) of model values on the model's device; otherwise ``data`` is None.
    - ``grid_columns``: columns of the PNG grid (None: a square-ish grid), e.g. 2 for
      (data, reconstruction) pairs or steps + 1 for one chain per row.

    An option named ``fast`` ("yes" / "no" / "auto") is what ``--fast/--no-fast`` sets.
    """

    needs_data: bool = False
    grid_columns: Optional[int] = None

    def __call__(self, model, n: int, generator: Optional[torch.Generator] = None, data: Optional[torch.Tensor] = None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


class Metric:
    """What a metric factory returns: ``metric(model, x, *, labels=None, generator=None, batch_size=1024)``
    -> dict, JSON-able, with the headline number under "value" (and its "units", a
    "description", and whatever else explains it: standard errors, sample sizes).

    x: (N, C, H, W) model values. ``needs_labels``: True when the metric needs ``labels``,
    (N,) int64 class labels of the examples (``infovae evaluate`` refuses data without them).
    ``generator`` is the metric's own, seeded from the run seed and the metric's name, so a
    metric's value does not depend on which others run with it. Run under ``torch.no_grad``.

    ``distributed``: how the metric runs under torchrun. "rank0" (the default): rank 0 calls it
    on all examples, the other ranks wait. "sharded": the metric also has ``rows(model, x, lo, hi,
    *, generator, batch_size)`` (per-example values or codes of the examples lo..hi-1, a dict of
    (hi - lo, ...) tensors) and ``combine(model, rows, *, labels, generator, batch_size)`` (the
    result from the rows of all N examples); each rank computes the rows of its shard and rank 0
    combines them. An example's rows must not depend on the shard it is in, and ``rows`` must
    leave the generator in the same state whatever the shard (``infovae.metrics.sharding``).
    """

    needs_labels: bool = False
    distributed: str = "rank0"

    def __call__(self, model, x: torch.Tensor, *, labels: Optional[torch.Tensor] = None,
                 generator: Optional[torch.Generator] = None, batch_size: int = 1024) -> Dict[str, Any]:  # pragma: no cover
        raise NotImplementedError


Logs = Dict[str, float]
