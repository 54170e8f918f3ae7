"""Shared plumbing of the metrics: input checks, devices, generators, batched encoding.

Shapes: N examples, B a batch, D = latent dimension, (C, H, W) one example.
Metric arithmetic is done in float64; the model itself runs in its own dtype.
"""
from __future__ import annotations

import math
from typing import Iterator, Optional, Tuple

import torch
from torch.distributions import Distribution, Independent, Normal

from ..data import to_model

LOG_2PI = math.log(2.0 * math.pi)


def model_device(model) -> torch.device:
    """The device the model lives on (its ``device`` attribute, else its first parameter or buffer)."""
    dev = getattr(model, "device", None)
    if isinstance(dev, torch.device):
        return dev
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device("cpu")


def model_values(model, x: torch.Tensor, what: str = "x") -> torch.Tensor:
    """Check x against ``model.spec`` and return model values (N, C, H, W).

    uint8 input is taken as stored values and converted with ``infovae.to_model``;
    floating input is taken as model values already. The result stays on x's device
    (batches are moved to the model's device as they are used).
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor of shape (N, C, H, W), got {type(x).__name__}")
    spec = model.spec
    if x.dim() != 4 or tuple(x.shape[1:]) != tuple(spec.shape):
        raise ValueError(
            f"{what} has shape {tuple(x.shape)}; this model expects (N, {', '.join(map(str, spec.shape))}) "
            f"({spec.kind} data)"
        )
    if x.shape[0] < 1:
        raise ValueError(f"{what} holds no examples")
    if x.dtype == torch.uint8:
        return to_model(x, spec)
    if not torch.is_floating_point(x):
        raise TypeError(
            f"{what} has dtype {x.dtype}; pass stored uint8 values or float model values "
            f"(infovae.to_model(x_uint8, spec))"
        )
    return x


def check_labels(labels, n: int) -> torch.Tensor:
    """labels -> int64 CPU tensor (N,), checked against N examples."""
    if labels is None:
        raise ValueError("this metric needs class labels; pass labels=(N,) integer tensor for the examples")
    labels = torch.as_tensor(labels)
    if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.dtype.is_complex:
        raise TypeError(f"labels must be integers, got {labels.dtype}")
    if tuple(labels.shape) != (n,):
        raise ValueError(f"labels have shape {tuple(labels.shape)}; expected ({n},), one per example")
    if n and int(labels.min()) < 0:
        raise ValueError("labels must be >= 0")
    return labels.to(device="cpu", dtype=torch.int64)


def make_generator(generator: Optional[torch.Generator], device: torch.device) -> torch.Generator:
    """A generator on ``device``: the given one if it lives there, else one seeded from it.

    None gives a generator seeded with 0, so every metric is deterministic by default.
    """
    device = torch.device(device)
    if generator is None:
        return torch.Generator(device=device).manual_seed(0)
    gdev = torch.device(generator.device)
    if gdev.type == device.type and (device.type == "cpu" or (gdev.index or 0) == (device.index or 0)):
        return generator
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=gdev))
    return torch.Generator(device=device).manual_seed(seed)


def cpu_generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def batches(n: int, batch_size: int) -> Iterator[slice]:
    """Consecutive slices covering range(n), each at most ``batch_size`` long."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    from ..progress import advance

    for start in range(0, n, batch_size):
        yield slice(start, min(n, start + batch_size))
        advance(min(n, start + batch_size), n)


def gaussian_params(q: Distribution, metric: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """(loc, scale), each (B, D), of a factored-Gaussian posterior Independent(Normal(loc, scale), 1)."""
    if not (isinstance(q, Independent) and isinstance(q.base_dist, Normal) and q.reinterpreted_batch_ndims == 1):
        raise TypeError(
            f"metric {metric!r} needs a factored Gaussian posterior q(z|x) = Independent(Normal(loc, scale), 1) "
            f"(see infovae.diagonal_gaussian); the encoder returned {q!r}"
        )
    return q.base_dist.loc, q.base_dist.scale


@torch.no_grad()
def encode(model, x: torch.Tensor, batch_size: int, metric: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """Posterior parameters of every example: (loc, scale), each (N, D) float64 on the model's device."""
    device = model_device(model)
    locs, scales = [], []
    for s in batches(x.shape[0], batch_size):
        loc, scale = gaussian_params(model.posterior(x[s].to(device)), metric)
        locs.append(loc.double())
        scales.append(scale.double())
    return torch.cat(locs), torch.cat(scales)


def standard_normal(shape, generator: torch.Generator, device: torch.device, dtype=torch.float64) -> torch.Tensor:
    """N(0, 1) noise drawn from ``generator`` (on its own device), returned on ``device``."""
    eps = torch.randn(shape, generator=generator, device=generator.device, dtype=dtype)
    return eps.to(device)


def mean_and_se(values: torch.Tensor, metric: str, what: str) -> Tuple[float, Optional[float]]:
    """Mean of per-example values (N,) and its standard error std(ddof=1)/sqrt(N) (None when N == 1)."""
    values = values.double()
    bad = int((~torch.isfinite(values)).sum())
    if bad:
        raise FloatingPointError(f"metric {metric!r}: {bad} of {values.numel()} examples gave a non-finite {what}")
    n = values.numel()
    mean = float(values.mean())
    se = float(values.std(unbiased=True) / math.sqrt(n)) if n > 1 else None
    return mean, se
