"""Shared pieces of the built-in data sets: lazy cached splits, seeded index splits, path checks.

Every loader follows the same pattern: the constructor checks that the files
exist and that their headers make sense (cheap, so the CLI can learn the data
spec and reject bad paths before anything heavy happens); the first call to
``split`` or ``labels`` reads everything once, validates it fully and caches it.
Errors about files are ``infovae.DataError`` and name the files expected.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterable, Optional, Sequence, Tuple

import numpy as np
import torch

from infovae import DataError, Dataset, DataSpec, PluginOptionError, split_error

SPLITS = ("train", "valid", "test")

Arrays = Tuple[np.ndarray, Optional[np.ndarray]]  # (uint8 images (N, C, H, W), int labels (N,) or None)


def derive_seed(seed: int, *stream: int) -> int:
    """An independent 63-bit seed for one random stream of a data set (e.g. the split, a binarization)."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFFFFFFFFFF, *stream]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def permutation(n: int, seed: int, stream: int = 0) -> np.ndarray:
    """A seeded permutation of range(n) (int64); the same on every platform for the same numpy."""
    return np.random.default_rng(derive_seed(seed, stream)).permutation(n)


def carve(n: int, sizes: Sequence[int], seed: int, stream: int = 0) -> Tuple[np.ndarray, ...]:
    """Split range(n) at random into parts of the given sizes plus the rest (returned first).

    ``carve(n, (a, b), seed)`` -> (rest, part_a, part_b); each part keeps its
    indices in increasing order so the data keep their original order inside a split.
    """
    if sum(sizes) > n:
        raise ValueError(f"cannot take {' + '.join(map(str, sizes))} examples out of {n}")
    perm = permutation(n, seed, stream)
    parts, start = [], 0
    for s in sizes:
        parts.append(np.sort(perm[start:start + s]))
        start += s
    return (np.sort(perm[start:]), *parts)


def require_path(path: str, plugin: str, expected: str) -> Path:
    """The ``path`` option as an existing Path, or a DataError saying what to pass."""
    if not path:
        raise DataError(
            f"data set {plugin!r} needs its files: pass the option path=... ({expected}). "
            "infovae never downloads data."
        )
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"data set {plugin!r}: {p} does not exist; expected {expected}.")
    return p


def read_bytes(path: Path, plugin: str) -> bytes:
    """All bytes of a file, transparently gunzipping ``*.gz``; unreadable files are DataErrors."""
    import gzip
    import zlib

    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"data set {plugin!r}: cannot read {path}: {exc}") from None


def to_tensor(x: np.ndarray, dtype=None) -> torch.Tensor:
    """A tensor that owns a contiguous, writable copy (or view) of x."""
    x = np.ascontiguousarray(x, dtype=dtype)
    if not x.flags.writeable:
        x = x.copy()
    return torch.from_numpy(x)


class SplitDataset(Dataset):
    """A data set of cached uint8 splits.

    Subclasses set ``spec`` and ``splits`` in ``__init__`` (after checking their
    files) and implement ``_load()`` -> {split: (images, labels or None)} with
    images uint8 (N, C, H, W) numpy arrays. ``split(name)`` returns the cached
    tensor itself: treat it as read-only.

    ``dynamic`` is True when ``split("train")`` returns a fresh random draw on
    every call (e.g. dynamically binarized MNIST); a trainer that wants a new
    draw each epoch calls ``split("train", generator=g)`` once per epoch.
    """

    name = "dataset"
    dynamic = False

    def __init__(self, spec: DataSpec, splits: Iterable[str]):
        self.spec = spec
        self.splits = tuple(s for s in SPLITS if s in set(splits))
        self._data: Optional[Dict[str, Tuple[torch.Tensor, Optional[torch.Tensor]]]] = None

    # -- subclass hook ------------------------------------------------------------------------
    def _load(self) -> Dict[str, Arrays]:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- public -------------------------------------------------------------------------------
    def load(self) -> "SplitDataset":
        """Read and validate every file now (otherwise done on first use); returns self."""
        self._cached()
        return self

    def split(self, name: str, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """uint8 tensor (N, C, H, W) of one split ({0, 1} for binary data, 0..255 for 8-bit)."""
        self._check(name)
        return self._cached()[name][0]

    def labels(self, name: str) -> Optional[torch.Tensor]:
        """int64 tensor (N,) of class labels of one split, or None when it has none."""
        self._check(name)
        return self._cached()[name][1]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} {self.spec.kind} {self.spec.shape} splits={self.splits}>"

    # -- internals ----------------------------------------------------------------------------
    def _check(self, name: str) -> None:
        if name not in self.splits:
            raise split_error(name, self.splits)

    def _cached(self) -> Dict[str, Tuple[torch.Tensor, Optional[torch.Tensor]]]:
        if self._data is None:
            raw = self._load()
            data = {}
            for s in self.splits:
                x, y = raw[s]
                if x.dtype != np.uint8 or x.ndim != 4 or tuple(x.shape[1:]) != self.spec.shape:
                    raise AssertionError(f"{self.name}: loader produced {x.dtype} {x.shape} for split {s!r}, spec {self.spec}")
                data[s] = (to_tensor(x), None if y is None else to_tensor(y, dtype=np.int64))
            self._data = data
        return self._data


def check_sizes(plugin: str, n: int, what: str, **sizes: int) -> None:
    """Option sizes that must fit in n examples, checked before loading."""
    for key, value in sizes.items():
        if value < 0:
            raise PluginOptionError(f"option {key!r} of dataset {plugin!r} must be >= 0, got {value}")
    total = sum(sizes.values())
    if total >= n:
        given = ", ".join(f"{k}={v}" for k, v in sizes.items())
        raise PluginOptionError(
            f"dataset {plugin!r}: {given} leaves no training examples out of the {n} in {what}; use smaller values"
        )
