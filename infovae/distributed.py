"""Training on several processes: torchrun, DistributedDataParallel and the global batch.

PyTorch's launcher (``torchrun`` / ``torch.distributed.run``) starts the
processes and sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT;
``init`` joins the process group it describes (gloo on CPU, NCCL on CUDA with
each rank bound to ``cuda:LOCAL_RANK``). Without those variables, or with
WORLD_SIZE=1, everything here is a no-op and training is one process as before.

The global batch. ``--batch-size B`` is global: rank r of W holds the rows
r*B/W .. (r+1)*B/W - 1 of the single-process batch. ``GlobalBatch`` is what the
objective uses so that W ranks train the model one process trains:

- reparameterisation noise: every rank holds the same global RNG state (same
  seed, same draws), draws the noise of the *whole* batch with
  ``q.rsample((W,))`` (W*B/W*D normals in one call, i.e. the same numbers in the
  same order as one process drawing (B, D)) and keeps its own slice;
- codes: ``gather`` concatenates every rank's codes in rank order with
  ``torch.distributed.nn.functional.all_gather``, whose backward sums the
  gradients of the W (identical) copies of the divergence into each rank's own
  codes. Each rank's divergence gradient is therefore W times its share, and
  DDP's mean over ranks gives exactly the single-process gradient;
- prior draws inside a divergence come from the global RNG, which is the same
  on every rank, so every rank draws the same prior sample;
- the posterior q(z|x) is gathered too when it is a diagonal Gaussian (every
  built-in encoder), so a divergence that reads it (``kl``) sees the global
  batch like one that reads z.

Per-example terms (the reconstruction) stay local means; DDP averages them.
A divergence with its own state (the adversarial discriminator) gets the same
gathered codes and the same prior draws on every rank, so its updates are
identical and it stays bitwise equal across ranks without being synchronised.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, List, Optional, Sequence

import torch

from .errors import PluginOptionError

DEFAULT_TIMEOUT_S = 1800.0
TIMEOUT_ENV = "INFOVAE_DIST_TIMEOUT"


def env_world_size() -> int:
    """WORLD_SIZE as torchrun set it (1 when absent)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


@dataclass
class Context:
    """This process's place in the job: rank, world size, device and the groups.

    ``group`` carries the training collectives (DDP, flags, metrics);
    ``gather_group`` is a second group used only for the codes' all-gather, so the
    gather's backward never interleaves with DDP's bucketed all-reduce on one group.
    """

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: Optional[str] = None
    gather_group: Any = None

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def is_writer(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            if self.backend == "nccl":
                dist.barrier(device_ids=[self.device.index])
            else:
                dist.barrier()

    def agree_max(self, values: Sequence[float]) -> List[float]:
        """The element-wise maximum of ``values`` over all ranks (one small all-reduce)."""
        if not self.distributed:
            return [float(v) for v in values]
        import torch.distributed as dist

        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return t.tolist()

    def all_sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum of ``t`` over all ranks (in place on a copy; float64 for sums of metrics)."""
        if not self.distributed:
            return t
        import torch.distributed as dist

        t = t.detach().to(device=self.device, dtype=torch.float64).clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def gather_rows(self, t: torch.Tensor) -> torch.Tensor:
        """Concatenate equally sized (n, ...) tensors of all ranks in rank order, without gradient."""
        if not self.distributed:
            return t
        import torch.distributed as dist

        t = t.detach().contiguous()
        parts = [torch.empty_like(t) for _ in range(self.world)]
        dist.all_gather(parts, t, group=self.gather_group)
        return torch.cat(parts, 0)

    def shutdown(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


SINGLE = Context()


def timeout_seconds() -> float:
    raw = os.environ.get(TIMEOUT_ENV, "")
    if not raw:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        raise PluginOptionError(f"{TIMEOUT_ENV}={raw!r} is not a number of seconds") from None
    if not value > 0:
        raise PluginOptionError(f"{TIMEOUT_ENV} must be positive seconds, got {raw!r}")
    return value


def rank_device(device_name: str):
    """(device, backend) of this rank under torchrun, checked without any collective.

    ``cuda``/``auto`` with CUDA present: ``cuda:LOCAL_RANK`` and NCCL; ``cpu``: gloo."""
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    wants_cuda = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
    if not wants_cuda:
        return torch.device("cpu"), "gloo"
    if not torch.cuda.is_available():
        raise PluginOptionError(f"device {device_name!r} was asked for but CUDA is not available; use --device cpu")
    if device_name.startswith("cuda:"):
        raise PluginOptionError(
            f"--device {device_name} names one GPU, but under torchrun each rank binds cuda:LOCAL_RANK; use --device cuda"
        )
    n = torch.cuda.device_count()
    if local_rank >= n:
        raise PluginOptionError(
            f"rank {rank} has LOCAL_RANK {local_rank} but this machine has {n} GPU(s); start at most {n} processes per node "
            f"(--nproc-per-node {n}) or use --device cpu"
        )
    return torch.device("cuda", local_rank), "nccl"


def init(device_name: str) -> Context:
    """Join the process group torchrun describes, or return the single-process context.

    device_name: the trainer's --device (auto, cpu, cuda, cuda:N). Under torchrun
    ``cuda``/``auto`` with CUDA present bind ``cuda:LOCAL_RANK`` and use NCCL;
    ``cpu`` uses gloo. Collectives time out after INFOVAE_DIST_TIMEOUT seconds
    (default 1800), so a dead rank ends the others with an error instead of a hang.
    """
    from .build import resolve_device

    world = env_world_size()
    if world <= 1:
        return Context(device=resolve_device(device_name))
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device, backend = rank_device(device_name)
    if backend == "nccl":
        torch.cuda.set_device(device)
    timeout = timedelta(seconds=timeout_seconds())
    if not dist.is_initialized():
        kwargs = {"device_id": device} if backend == "nccl" else {}
        dist.init_process_group(backend=backend, timeout=timeout, **kwargs)
    gather_group = dist.new_group(backend=backend, timeout=timeout)
    return Context(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local_rank, device=device,
                   backend=backend, gather_group=gather_group)


def check_batch(batch_size: int, world: int) -> int:
    """The per-rank batch B/W, or a PluginOptionError naming the fix (before any work)."""
    if world > batch_size:
        raise PluginOptionError(
            f"{world} processes cannot share a global batch of {batch_size}: every rank needs at least one example; "
            f"use --batch-size {world} or more (a multiple of {world}), or fewer processes"
        )
    if batch_size % world:
        lo = batch_size - batch_size % world
        raise PluginOptionError(
            f"--batch-size {batch_size} is the global batch and does not divide over {world} processes; "
            f"use a multiple of {world} (e.g. {lo} or {lo + world})"
        )
    return batch_size // world


class _ContiguousGrad(torch.autograd.Function):
    """The identity, whose backward hands on the incoming gradient contiguous. torch's autograd
    ``all_gather`` (2.13, gloo) sums wrong values into the ranks' rows when the gradient reaching
    it is strided (e.g. column-major, from a transposed product): measured on 2 gloo ranks, see
    ``tests/test_distributed_strided_grad.py``."""

    @staticmethod
    def forward(ctx, t):
        return t.view_as(t)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        return g.contiguous()


class GlobalBatch:
    """The objective's view of the global batch (see the module docstring)."""

    def __init__(self, ctx: Context):
        self.ctx = ctx

    def rsample(self, q) -> torch.Tensor:
        """This rank's codes with the noise of its slice of the global batch: (B/W, D)."""
        return q.rsample((self.ctx.world,))[self.ctx.rank]

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        """(B/W, ...) on every rank -> (B, ...) in rank order, gradients flowing back to each rank's rows."""
        from torch.distributed.nn.functional import all_gather

        with warnings.catch_warnings():
            # The autograd all_gather is the documented tool; torch marks it deprecated in favour
            # of a private functional API with the same backward (a sum over ranks).
            warnings.simplefilter("ignore", FutureWarning)
            parts = all_gather(t.contiguous(), group=self.ctx.gather_group)
        # cat's backward slices the gradient along dim 0: contiguous slices only if it is
        return _ContiguousGrad.apply(torch.cat(parts, 0))

    def gather_posterior(self, q):
        """q(z|x) over the global batch when q is a diagonal Gaussian, else None."""
        from torch.distributions import Independent, Normal

        if isinstance(q, Independent) and isinstance(q.base_dist, Normal) and q.reinterpreted_batch_ndims == 1:
            return Independent(Normal(self.gather(q.base_dist.loc), self.gather(q.base_dist.scale), validate_args=False), 1)
        if isinstance(q, Normal):
            return Normal(self.gather(q.loc), self.gather(q.scale), validate_args=False)
        return None
