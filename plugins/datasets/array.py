"""Memory-mapped uint8 arrays: data sets larger than memory.

Two on-disk forms, both plain ``.npy`` (loaded with ``allow_pickle=False``, memory-mapped):

- one ``.npy`` file, uint8, (N, C, H, W) or (N, H, W); ``valid_size`` and
  ``test_size`` carve seeded random valid/test splits out of it (the rest is train);
- a directory with ``manifest.json`` (what ``infovae data convert`` writes)::

      {"format": "infovae-array", "version": 1, "kind": "binary", "shape": [1, 28, 28],
       "splits": {"train": {"shards": ["train-00000.npy", ...], "count": 50000,
                            "labels": "train-labels.npy"}, ...}}

  each shard a uint8 (n_i, C, H, W) array; labels (optional) an int64 (N,) array.

A split is a ``MappedRows`` source, not a tensor: the trainer then reads it
through a DataLoader, and only the rows of each batch are read (see
``MappedRows`` for why with positioned reads rather than through a memory map;
``open_npy`` gives the memory map for other uses).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from infovae import DataError, Dataset, DataSpec, split_error

from ._common import SPLITS, carve

MANIFEST = "manifest.json"
FORMAT = "infovae-array"


def _npy_header(path: Path, plugin: str = "array"):
    """(shape, data offset in bytes) of a uint8 C-order .npy file; only the header is read (never unpickles)."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy version {version}")
            offset = f.tell()
            size = f.seek(0, 2)
    except (OSError, ValueError) as exc:
        raise DataError(f"data set {plugin!r}: cannot read {path} as .npy: {exc}") from None
    if dtype != np.uint8:
        raise DataError(f"data set {plugin!r}: {path} holds {dtype}; expected uint8 (convert with 'infovae data convert')")
    if fortran:
        raise DataError(f"data set {plugin!r}: {path} is in Fortran order; save it C-contiguous (numpy.ascontiguousarray)")
    if len(shape) == 3:
        shape = (shape[0], 1, *shape[1:])
    if len(shape) != 4:
        raise DataError(f"data set {plugin!r}: {path} has shape {shape}; expected (N, C, H, W) or (N, H, W)")
    if offset + int(np.prod(shape)) > size:
        raise DataError(f"data set {plugin!r}: {path} is truncated ({size} bytes for shape {shape})")
    return tuple(int(v) for v in shape), offset


def open_npy(path: Path, plugin: str = "array") -> np.ndarray:
    """A read-only memory map of a uint8 .npy file as (N, C, H, W)."""
    shape, offset = _npy_header(path, plugin)
    return np.memmap(path, dtype=np.uint8, mode="r", offset=offset, shape=shape)


def _read_into(fd: int, buf: np.ndarray, offset: int) -> None:
    view = memoryview(buf.reshape(-1))
    while len(view):
        n = os.preadv(fd, [view], offset)
        if n <= 0:
            raise DataError(f"data set 'array': unexpected end of file reading {len(view)} bytes at offset {offset}")
        view, offset = view[n:], offset + n


class MappedRows:
    """An indexable uint8 source of rows (N, C, H, W) over .npy shards, read in place.

    ``rows[idx]`` with an int64 index array returns a uint8 numpy array (len(idx), C, H, W)
    in the order of ``idx``; ``rows[a:b]`` a contiguous block. ``index`` restricts the
    source to some rows (a carved split). Picklable (DataLoader workers reopen the files).

    Rows are read with positioned reads (``os.preadv``), sorted and merged into runs of
    consecutive rows, not through a memory map: every page a map touches counts as this
    process's resident memory, and with the kernel's large page-cache folios one touched
    28x28 row maps up to 2 MiB, so a few hundred random batches made the whole file
    resident. Read this way, resident memory stays flat and the file lives in the page cache.
    """

    dtype = torch.uint8

    def __init__(self, paths: Sequence[Path], index: Optional[np.ndarray] = None):
        self.paths = [Path(p) for p in paths]
        self.index = None if index is None else np.asarray(index, dtype=np.int64)
        self._open()

    def _open(self) -> None:
        headers = [_npy_header(p) for p in self.paths]
        shapes = {h[0][1:] for h in headers}
        if len(shapes) > 1:
            raise DataError(f"data set 'array': shards {', '.join(map(str, self.paths))} hold different example shapes {sorted(shapes)}")
        self._row_shape = next(iter(shapes))
        self._row_bytes = int(np.prod(self._row_shape))
        self._offsets = [h[1] for h in headers]
        self._starts = np.concatenate([[0], np.cumsum([h[0][0] for h in headers])]).astype(np.int64)
        self._fds = [os.open(p, os.O_RDONLY) for p in self.paths]

    def __getstate__(self):
        return {"paths": self.paths, "index": self.index}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._open()

    def __del__(self):
        for fd in getattr(self, "_fds", ()):
            try:
                os.close(fd)
            except OSError:
                pass

    @property
    def shape(self):
        n = int(self._starts[-1]) if self.index is None else len(self.index)
        return (n, *self._row_shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, slice):
            key = np.arange(*key.indices(len(self)), dtype=np.int64)
        idx = np.asarray(key, dtype=np.int64).reshape(-1)
        if len(idx) and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError(f"row index out of range for {len(self)} rows")
        idx = np.where(idx < 0, idx + len(self), idx)
        if self.index is not None:
            idx = self.index[idx]
        order = np.argsort(idx, kind="stable")  # read in file order, return in the order asked
        sidx = idx[order]
        k = len(sidx)
        got = np.empty((k, *self._row_shape), dtype=np.uint8)
        if k:
            shard = np.searchsorted(self._starts, sidx, side="right") - 1
            breaks = np.flatnonzero((np.diff(sidx) != 1) | (np.diff(shard) != 0)) + 1
            for a, b in zip(np.concatenate([[0], breaks]), np.concatenate([breaks, [k]])):
                s = int(shard[a])
                row = int(sidx[a] - self._starts[s])
                _read_into(self._fds[s], got[a:b], self._offsets[s] + row * self._row_bytes)
        out = np.empty_like(got)
        out[order] = got
        return out


class ArrayDataset(Dataset):
    """uint8 arrays on disk, memory-mapped (see the module docstring).

    kind: binary, gray8 or rgb8; ``auto`` takes the manifest's kind, or for a single
    file gray8 (1 channel) / rgb8 (3 channels). Binary data must say kind=binary.
    """

    name = "array"
    dynamic = False

    def __init__(self, path: str = "", kind: str = "auto", valid_size: int = 0, test_size: int = 0, seed: int = 0):
        if not path:
            raise DataError("data set 'array' needs path=... (a .npy file, or a directory written by 'infovae data convert')")
        p = Path(path).expanduser()
        if not p.exists():
            raise DataError(f"data set 'array': {p} does not exist; expected a uint8 .npy file or a directory with {MANIFEST}")
        self._labels: Dict[str, Optional[np.ndarray]] = {}
        if p.is_dir():
            self._sources = self._from_manifest(p, kind)
        else:
            self._sources = self._from_file(p, kind, int(valid_size), int(test_size), int(seed))
        self.splits = tuple(s for s in SPLITS if s in self._sources)
        first = self._sources["train"] if "train" in self._sources else next(iter(self._sources.values()))
        try:
            self.spec = DataSpec(self._kind, tuple(first.shape[1:]))
        except ValueError as exc:
            raise DataError(f"data set 'array' at {p}: {exc}") from None
        if self._kind == "binary":
            head = first[np.arange(min(len(first), 256))]
            if head.size and int(head.max()) > 1:
                raise DataError(f"data set 'array' at {p}: kind binary but the data hold values up to {int(head.max())}; use kind=gray8")

    def _from_file(self, p: Path, kind: str, valid_size: int, test_size: int, seed: int):
        (n, c, _, _), _ = _npy_header(p)
        self._kind = kind if kind != "auto" else ("rgb8" if c == 3 else "gray8")
        if valid_size + test_size >= n:
            raise DataError(f"data set 'array': valid_size {valid_size} + test_size {test_size} leave no training examples out of {n}")
        if valid_size == 0 and test_size == 0:
            return {"train": MappedRows([p])}
        rest, valid, test = carve(n, (valid_size, test_size), seed)
        out = {"train": MappedRows([p], rest)}
        if valid_size:
            out["valid"] = MappedRows([p], valid)
        if test_size:
            out["test"] = MappedRows([p], test)
        return out

    def _from_manifest(self, p: Path, kind: str):
        mf = p / MANIFEST
        if not mf.is_file():
            raise DataError(f"data set 'array': {p} has no {MANIFEST}; write one with 'infovae data convert SOURCE {p}' or pass a .npy file")
        try:
            meta = json.loads(mf.read_text())
            if meta.get("format") != FORMAT:
                raise ValueError(f"format is {meta.get('format')!r}, expected {FORMAT!r}")
            self._kind = meta["kind"] if kind == "auto" else kind
            out = {}
            for split, info in meta["splits"].items():
                if split not in SPLITS:
                    raise ValueError(f"unknown split {split!r}")
                shards: List[Path] = []
                for name in info["shards"]:
                    f = (p / name)
                    if Path(name).is_absolute() or ".." in Path(name).parts:
                        raise ValueError(f"shard {name!r} is not a file inside {p}")
                    shards.append(f)
                rows = MappedRows(shards)
                if len(rows) != int(info["count"]):
                    raise ValueError(f"split {split!r} holds {len(rows)} examples but the manifest says {info['count']}")
                out[split] = rows
                if info.get("labels"):
                    lab = np.load(p / info["labels"], allow_pickle=False)
                    if lab.shape != (len(rows),):
                        raise ValueError(f"labels of split {split!r} have shape {lab.shape}, expected ({len(rows)},)")
                    self._labels[split] = lab.astype(np.int64)
        except DataError:
            raise
        except (ValueError, KeyError, TypeError, OSError) as exc:
            raise DataError(f"data set 'array': {mf} is malformed ({type(exc).__name__}: {exc})") from None
        return out

    def split(self, name: str, generator: Optional[torch.Generator] = None) -> MappedRows:
        if name not in self.splits:
            raise split_error(name, self.splits)
        return self._sources[name]

    def labels(self, name: str) -> Optional[torch.Tensor]:
        if name not in self.splits:
            raise split_error(name, self.splits)
        lab = self._labels.get(name)
        return None if lab is None else torch.from_numpy(lab)
