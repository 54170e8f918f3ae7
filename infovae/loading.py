"""Training data that are not one in-memory tensor: memory-mapped arrays and other indexable sources.

A data set's split is either a uint8 tensor (N, C, H, W), which the trainer moves
to the device and indexes directly (the fast path), or any *indexable uint8
source*: an object with ``shape`` (N, C, H, W), a uint8 ``dtype`` and
``source[idx]`` for an int64 index array returning the rows (a numpy array or a
tensor) in that order; ``numpy.memmap`` and the built-in ``array`` data set's rows
are two. Sources are read through ``torch.utils.data.DataLoader``
with exactly the batches of the in-memory path: epoch e's permutation seeded by
(seed, e), rank r of W taking rows r*B/W .. (r+1)*B/W - 1 of each global batch.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Iterator

import numpy as np
import torch

from .spec import DataSpec


def is_tensor(x: Any) -> bool:
    return isinstance(x, torch.Tensor)


def _as_tensor(rows: Any) -> torch.Tensor:
    if isinstance(rows, torch.Tensor):
        return rows
    return torch.from_numpy(np.ascontiguousarray(rows))


def check_source(x: Any, spec: DataSpec, what: str) -> None:
    """Raise ValueError unless x is an indexable uint8 (N, *spec.shape) source (values checked on its first rows)."""
    shape = getattr(x, "shape", None)
    if shape is None or not hasattr(x, "__getitem__") or len(shape) != 4:
        raise ValueError(f"{what}: expected a uint8 tensor or an indexable source with shape (N, C, H, W), got {type(x).__name__}")
    dtype = getattr(x, "dtype", None)
    if dtype not in (torch.uint8, np.uint8, np.dtype(np.uint8)):
        raise ValueError(f"{what}: expected uint8 values, got {dtype}")
    if tuple(shape[1:]) != spec.shape:
        raise ValueError(f"{what}: expected examples of shape {spec.shape}, got {tuple(shape[1:])}")
    head = _as_tensor(x[np.arange(min(int(shape[0]), 256), dtype=np.int64)])
    if head.dtype != torch.uint8:
        raise ValueError(f"{what}: rows read as {head.dtype}, expected uint8")
    if spec.kind == "binary" and head.numel() and int(head.max()) > 1:
        raise ValueError(f"{what}: binary data must hold only 0 and 1, found {int(head.max())}")


def rows(x: Any, start: int, stop: int) -> torch.Tensor:
    """Rows start..stop-1 of a tensor or a source, as a uint8 tensor."""
    if is_tensor(x):
        return x[start:stop]
    return _as_tensor(x[np.arange(start, min(stop, int(x.shape[0])), dtype=np.int64)])


class StepBatches(torch.utils.data.Dataset):
    """Item k is this rank's uint8 batch of step ``start + k`` (the in-memory path's batch)."""

    def __init__(self, source: Any, epoch_seed: Callable[[int], int], batch_size: int, local_batch: int, rank: int,
                 steps_per_epoch: int, start: int, stop: int):
        self.source, self.epoch_seed = source, epoch_seed
        self.B, self.b, self.rank, self.spe = batch_size, local_batch, rank, steps_per_epoch
        self.start, self.stop = start, stop
        self._perm_epoch, self._perm = -1, None

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __getitem__(self, k: int) -> torch.Tensor:
        epoch, i = divmod(self.start + k, self.spe)
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(self.epoch_seed(epoch))
            self._perm = torch.randperm(int(self.source.shape[0]), generator=g).numpy()
            self._perm_epoch = epoch
        lo = i * self.B + self.rank * self.b
        return _as_tensor(self.source[self._perm[lo:lo + self.b]])


def loader_batches(batches: StepBatches, device: torch.device, workers: int = -1) -> Iterator[torch.Tensor]:
    """uint8 batches on ``device`` through a DataLoader with worker processes that read ahead
    (``workers`` -1: on CUDA min(4, CPUs per local rank) and pinned memory; on CPU one worker,
    so reading overlaps the model's step, or none on a single-core machine)."""
    cuda = device.type == "cuda"
    if workers < 0:
        local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        per_rank = max(1, (os.cpu_count() or 1) // local)
        workers = min(4, per_rank) if cuda else (1 if per_rank >= 2 else 0)
    kw = {"num_workers": workers, "pin_memory": cuda}
    if workers > 0:
        kw.update(prefetch_factor=4, persistent_workers=False)
    # Its own generator: a DataLoader otherwise draws its workers' base seed from torch's global
    # generator, which would shift the reparameterisation noise of every later step.
    dl = torch.utils.data.DataLoader(batches, batch_size=None, shuffle=False, generator=torch.Generator().manual_seed(0), **kw)
    for xb in dl:
        yield xb.to(device, non_blocking=cuda)
