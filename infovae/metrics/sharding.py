"""Metrics under torchrun: how a metric declares its distributed behaviour, and the driver.

A metric object declares ``distributed``:

- ``"rank0"`` (the default, and what a metric without the attribute gets): rank 0 computes the
  metric on all examples, exactly as one process would; the other ranks wait at the next
  collective. Always correct, never faster.
- ``"sharded"``: the metric is split into two methods,

      rows(model, x, lo, hi, *, generator, batch_size) -> {name: tensor (hi - lo, ...)}
      combine(model, rows, *, labels, generator, batch_size) -> result dict

  ``rows`` computes per-example quantities of the examples ``lo .. hi-1`` of x (x holds *all*
  examples, so a metric whose random draws come in blocks may read its neighbours); under
  torchrun each rank computes the rows of its contiguous shard, the rows are gathered (padded
  tensor all-gathers, no pickling) and rank 0 calls ``combine`` on the rows of all N examples
  in order. Per-example values (NLL, KL, reconstruction: "shard and sum") and per-example codes
  (mutual information, MMD to the prior, log det Cov, active units: "gather the codes") are both
  rows; ``combine`` then sees exactly what one process sees, so a standard error is the one over
  all N examples.

  The contract that makes the result independent of the world size (checked by
  ``infovae.testing.check_metric``): rows of [0, k) followed by rows of [k, N) equal the rows of
  [0, N) (up to floating-point reassociation), and ``rows`` leaves the generator in the same
  state whatever the shard (draw the same numbers on every rank and keep yours, or draw one seed
  and derive per-block generators from it), so ``combine`` draws the same numbers on rank 0 as
  one process does. One process computes ``combine(rows(0, N))``.

With fewer examples than ranks a sharded metric runs on rank 0 like a "rank0" one.
Results exist on rank 0 only (``evaluate_metrics`` returns {} on the other ranks): rank 0 alone
writes. A failure on any rank is agreed on before the next collective, so every rank raises and
none waits for a gather that never comes.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Tuple

import torch

from ..errors import InfovaeError

DISTRIBUTED_MODES = ("rank0", "sharded")


class MetricRankError(InfovaeError):
    """A metric failed on another rank; that rank reports why."""


def distributed_mode(metric) -> str:
    """The metric's declared mode ("rank0" when it declares none)."""
    return getattr(metric, "distributed", "rank0")


def shard_bounds(n: int, rank: int, world: int) -> Tuple[int, int]:
    """Rank ``rank``'s contiguous rows [lo, hi) of n examples: the first n % world ranks hold one more."""
    base, extra = divmod(n, world)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)


def check_rows(rows: Any, n: int, where: str) -> Dict[str, torch.Tensor]:
    """``rows`` must map names to tensors whose first dimension is n."""
    if not isinstance(rows, Mapping) or not rows:
        raise TypeError(f"{where}: rows() returned {type(rows).__name__}; return a non-empty dict of tensors (n, ...)")
    out = {}
    for k, v in rows.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor) or v.dim() < 1 or v.shape[0] != n:
            what = f"shape {tuple(v.shape)}" if isinstance(v, torch.Tensor) else type(v).__name__
            raise TypeError(f"{where}: rows()[{k!r}] is {what}; expected a tensor with {n} rows (one per example)")
        out[k] = v
    return out


def gather_rows(ctx, rows: Dict[str, torch.Tensor], n: int) -> Dict[str, torch.Tensor]:
    """Every rank's rows of n examples, concatenated in rank order (so in example order).

    Shards differ in size by at most one (``shard_bounds``); each is padded to the largest and
    trimmed after ``torch.distributed.all_gather`` (sizes follow from n and the world size, so
    nothing but the tensors travels). Keys are taken in sorted order on every rank.
    """
    import torch.distributed as dist

    sizes = [hi - lo for lo, hi in (shard_bounds(n, r, ctx.world) for r in range(ctx.world))]
    top = max(sizes)
    out = {}
    for key in sorted(rows):
        t = rows[key].detach().to(ctx.device).contiguous()
        if t.shape[0] < top:
            t = torch.cat([t, t.new_zeros((top - t.shape[0], *t.shape[1:]))])
        parts = [torch.empty_like(t) for _ in range(ctx.world)]
        dist.all_gather(parts, t, group=ctx.gather_group)
        out[key] = torch.cat([p[:s] for p, s in zip(parts, sizes)])
    return out


def _agree_failure(ctx, failed: bool, name: str, exc: Optional[BaseException]) -> None:
    """All ranks learn whether any failed; every rank then raises (its own error, or MetricRankError)."""
    worst = ctx.agree_max([float(ctx.rank) + 1.0 if failed else 0.0])[0]
    if exc is not None:
        raise exc
    if worst:
        raise MetricRankError(f"metric {name!r} failed on rank {int(worst) - 1} (its own message says why)")


def run_distributed(ctx, name: str, metric, model, x: torch.Tensor, *, labels, generator: torch.Generator,
                    batch_size: int) -> Optional[Dict[str, Any]]:
    """One metric under torchrun: its result on rank 0, None on the other ranks (see the module docstring)."""
    exc = None
    res = None
    n = int(x.shape[0])
    if distributed_mode(metric) == "sharded" and n >= ctx.world:
        lo, hi = shard_bounds(n, ctx.rank, ctx.world)
        try:
            part = check_rows(metric.rows(model, x, lo, hi, generator=generator, batch_size=batch_size), hi - lo,
                              f"metric {name!r}")
        except Exception as e:  # noqa: BLE001 - re-raised after the ranks agree
            exc = e
        _agree_failure(ctx, exc is not None, name, exc)
        full = gather_rows(ctx, part, n)
        if ctx.rank == 0:
            try:
                res = metric.combine(model, full, labels=labels, generator=generator, batch_size=batch_size)
            except Exception as e:  # noqa: BLE001
                exc = e
    elif ctx.rank == 0:
        try:
            res = metric(model, x, labels=labels, generator=generator, batch_size=batch_size)
        except Exception as e:  # noqa: BLE001
            exc = e
    _agree_failure(ctx, exc is not None, name, exc)
    return res
