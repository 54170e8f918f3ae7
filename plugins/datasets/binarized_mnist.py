"""The standard binarized MNIST (Larochelle & Murray 2011): 50k train / 10k valid / 10k test, 28x28 {0, 1}.

Two on-disk forms are read, never downloaded:

- an ``.npz`` archive with arrays ``x_train``, ``x_valid``, ``x_test`` of shape
  (N, 784) (or (N, 28, 28)) holding 0/1, and optional labels ``y_train``,
  ``y_valid``, ``y_test`` of shape (N,); loaded with ``allow_pickle=False``;
- a directory with the classic text files ``binarized_mnist_train.amat``,
  ``binarized_mnist_valid.amat`` and ``binarized_mnist_test.amat`` (one image
  per line, 784 space-separated 0/1 values, row-major).

A directory that holds ``binarized_mnist.npz`` (and no .amat files) is read as that archive.
"""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Dict

import numpy as np

from infovae import DataError, DataSpec

from ._common import SPLITS, SplitDataset, read_bytes, require_path

AMAT = {s: f"binarized_mnist_{s}.amat" for s in SPLITS}
NPZ_NAME = "binarized_mnist.npz"
EXPECTED = (
    f"an .npz file with x_train, x_valid, x_test (N, 784) 0/1 arrays (e.g. {NPZ_NAME}), or a directory holding "
    + ", ".join(AMAT.values())
)
D = 28 * 28


class BinarizedMNIST(SplitDataset):
    """Binarized MNIST from ``path`` (an .npz file or a directory of .amat files); kind binary, shape (1, 28, 28).

    Labels: ``y_<split>`` from the .npz when present (the usual files have only
    ``y_test`` or none), else None; the .amat files carry no labels.
    """

    name = "binarized-mnist"

    def __init__(self, path: str = ""):
        p = require_path(path, self.name, EXPECTED)
        if p.is_dir():
            amat = {s: p / f for s, f in AMAT.items()}
            if not any(f.exists() for f in amat.values()) and (p / NPZ_NAME).is_file():
                p = p / NPZ_NAME
            else:
                missing = [str(f) for f in amat.values() if not f.is_file()]
                if missing:
                    raise DataError(
                        f"data set {self.name!r}: missing {', '.join(missing)}. Expected {EXPECTED}."
                    )
        self.source = p
        self._npz_labels = ()
        if p.is_file():
            self._npz_labels = self._check_npz(p)
        super().__init__(DataSpec("binary", (1, 28, 28)), SPLITS)

    # -- .npz -----------------------------------------------------------------------------------
    def _open_npz(self, p: Path):
        try:
            obj = np.load(p, allow_pickle=False)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise DataError(f"data set {self.name!r}: {p} is not a readable .npz archive ({exc}). Expected {EXPECTED}.") from None
        if not isinstance(obj, np.lib.npyio.NpzFile):
            raise DataError(f"data set {self.name!r}: {p} holds a single array, not an .npz archive. Expected {EXPECTED}.")
        return obj

    def _check_npz(self, p: Path):
        with self._open_npz(p) as z:
            keys = set(z.files)
        missing = [f"x_{s}" for s in SPLITS if f"x_{s}" not in keys]
        if missing:
            raise DataError(
                f"data set {self.name!r}: {p} lacks array(s) {', '.join(missing)} (it has {', '.join(sorted(keys)) or 'none'}). "
                f"Expected {EXPECTED}."
            )
        return tuple(s for s in SPLITS if f"y_{s}" in keys)

    def _read_npz(self) -> Dict[str, tuple]:
        p = self.source
        out = {}
        with self._open_npz(p) as z:
            for s in SPLITS:
                x = self._array(z, f"x_{s}")
                y = self._array(z, f"y_{s}") if s in self._npz_labels else None
                out[s] = (self._images(x, f"{p}[x_{s}]"), None if y is None else self._labels(y, len(x), f"{p}[y_{s}]"))
        return out

    def _array(self, z, key: str) -> np.ndarray:
        try:
            return z[key]
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise DataError(f"data set {self.name!r}: cannot read {key} from {self.source}: {exc}") from None

    def _images(self, x: np.ndarray, where: str) -> np.ndarray:
        if tuple(x.shape[1:]) not in ((D,), (28, 28), (1, 28, 28)):
            raise DataError(f"data set {self.name!r}: {where} has shape {x.shape}; expected (N, 784) or (N, 28, 28)")
        if x.dtype.kind not in "biuf":
            raise DataError(f"data set {self.name!r}: {where} has dtype {x.dtype}; expected 0/1 integers")
        if x.size and not np.all((x == 0) | (x == 1)):
            raise DataError(f"data set {self.name!r}: {where} holds values other than 0 and 1 (binarized MNIST is 0/1)")
        if len(x) == 0:
            raise DataError(f"data set {self.name!r}: {where} is empty")
        return x.astype(np.uint8).reshape(-1, 1, 28, 28)

    def _labels(self, y: np.ndarray, n: int, where: str) -> np.ndarray:
        if y.shape != (n,) or y.dtype.kind not in "iu" or (y.size and y.min() < 0):
            raise DataError(
                f"data set {self.name!r}: {where} has shape {y.shape} and dtype {y.dtype}; expected ({n},) non-negative integers"
            )
        return y.astype(np.int64)

    # -- .amat ----------------------------------------------------------------------------------
    def _read_amat(self, f: Path) -> np.ndarray:
        raw = read_bytes(f, self.name)
        # The classic files are exactly "v v ... v\n" per line, v in {0, 1}: view them as a byte matrix.
        width = 2 * D  # 784 digits, 783 spaces, 1 newline
        if raw and len(raw) % width == 0:
            m = np.frombuffer(raw, dtype=np.uint8).reshape(-1, width)
            digits = m[:, 0::2]
            if np.all(m[:, 1:-1:2] == ord(" ")) and np.all(m[:, -1] == ord("\n")) and np.all((digits == ord("0")) | (digits == ord("1"))):
                return (digits - ord("0")).astype(np.uint8).reshape(-1, 1, 28, 28)
        lines = [line for line in raw.splitlines() if line.strip()]
        if not lines:
            raise DataError(f"data set {self.name!r}: {f} is empty; expected one image per line of {D} 0/1 values")
        # Any other whitespace layout or number spelling ("1.0", tabs, trailing spaces): numpy's C text parser.
        try:
            values = np.loadtxt(lines, dtype=np.float64, ndmin=2, encoding="latin-1")
        except ValueError as exc:
            raise DataError(f"data set {self.name!r}: {f} is not a matrix of numbers: {exc}") from None
        if values.shape[1] != D:
            raise DataError(f"data set {self.name!r}: {f} has {values.shape[1]} values per line; expected {D}")
        if not np.all((values == 0) | (values == 1)):
            bad = int(np.nonzero(~np.all((values == 0) | (values == 1), axis=1))[0][0]) + 1
            raise DataError(f"data set {self.name!r}: {f} line {bad} holds values other than 0 and 1")
        return values.astype(np.uint8).reshape(-1, 1, 28, 28)

    def _load(self):
        if self.source.is_file():
            return self._read_npz()
        return {s: (self._read_amat(self.source / AMAT[s]), None) for s in SPLITS}

