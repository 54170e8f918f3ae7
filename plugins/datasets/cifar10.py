"""CIFAR-10, binary version, from a directory: 8-bit RGB 32x32 images with labels 0..9.

Files expected in ``path`` (the contents of ``cifar-10-binary.tar.gz``, i.e. the
folder ``cifar-10-batches-bin``; pointing at its parent also works):
``data_batch_1.bin`` .. ``data_batch_5.bin`` and ``test_batch.bin``. Each
record is 3073 bytes: 1 label byte, then 1024 red, 1024 green and 1024 blue
bytes, each plane 32x32 row-major. The python version (``data_batch_1``,
``batches.meta``) is pickled and is refused: loading data never unpickles.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from infovae import DataError, DataSpec

from ._common import SplitDataset, carve, check_sizes, read_bytes, require_path

TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILE = "test_batch.bin"
RECORD = 1 + 3 * 32 * 32
BIN_DIR, PY_DIR = "cifar-10-batches-bin", "cifar-10-batches-py"
GET_BINARY = (
    "Download the binary version, cifar-10-binary.tar.gz, from https://www.cs.toronto.edu/~kriz/cifar.html, "
    f"extract it and pass path=.../{BIN_DIR}"
)
EXPECTED = f"a directory with {', '.join(TRAIN_FILES)} and {TEST_FILE} (the CIFAR-10 binary version)"


def _pickle_version(root: Path) -> bool:
    return (root / PY_DIR).is_dir() or (root / "batches.meta").is_file() or (root / "data_batch_1").is_file()


class CIFAR10(SplitDataset):
    """CIFAR-10 (binary version) at ``path``; kind rgb8, shape (3, 32, 32).

    Splits: "valid" is ``valid_size`` images carved at random (``seed``) out of
    the 50000 training images, "train" the rest, "test" the 10000 of test_batch.bin.
    """

    name = "cifar10"

    def __init__(self, path: str = "", valid_size: int = 5000, seed: int = 0):
        root = require_path(path, self.name, EXPECTED)
        if not root.is_dir():
            raise DataError(f"data set {self.name!r}: {root} is not a directory; expected {EXPECTED}. {GET_BINARY}.")
        if not (root / TEST_FILE).exists() and (root / BIN_DIR).is_dir():
            root = root / BIN_DIR
        files = [root / f for f in TRAIN_FILES + (TEST_FILE,)]
        missing = [f for f in files if not f.is_file()]
        if missing:
            if _pickle_version(root):
                raise DataError(
                    f"data set {self.name!r}: {root} holds the python (pickle) version of CIFAR-10, which infovae "
                    f"refuses to load because unpickling can execute code. {GET_BINARY}."
                )
            raise DataError(f"data set {self.name!r}: missing {', '.join(map(str, missing))}. Expected {EXPECTED}. {GET_BINARY}.")
        counts = []
        for f in files:
            size = f.stat().st_size
            if size == 0 or size % RECORD:
                raise DataError(
                    f"data set {self.name!r}: {f} has {size} bytes, not a positive multiple of the {RECORD}-byte "
                    "record (1 label byte + 3072 image bytes); the file is truncated or not CIFAR-10 binary"
                )
            counts.append(size // RECORD)
        check_sizes(self.name, sum(counts[:-1]), "the training batches", valid_size=valid_size)
        self.root, self.files, self.valid_size, self.seed = root, files, int(valid_size), int(seed)
        super().__init__(DataSpec("rgb8", (3, 32, 32)), ["train", "test"] + (["valid"] if valid_size else []))

    def _read(self, f: Path):
        raw = np.frombuffer(read_bytes(f, self.name), dtype=np.uint8)
        if raw.size == 0 or raw.size % RECORD:
            raise DataError(f"data set {self.name!r}: {f} changed size while loading ({raw.size} bytes)")
        records = raw.reshape(-1, RECORD)
        labels = records[:, 0].astype(np.int64)
        if labels.max() > 9:
            bad = int(np.argmax(labels > 9))
            raise DataError(
                f"data set {self.name!r}: {f} record {bad} has label {labels[bad]}; CIFAR-10 labels are 0..9 "
                "(is this the CIFAR-100 binary version, which has 2 label bytes?)"
            )
        return records[:, 1:].reshape(-1, 3, 32, 32), labels

    def _load(self):
        parts = [self._read(f) for f in self.files[:-1]]
        x = np.concatenate([p[0] for p in parts])
        y = np.concatenate([p[1] for p in parts])
        train, valid = carve(len(x), (self.valid_size,), self.seed)
        return {"train": (x[train], y[train]), "valid": (x[valid], y[valid]), "test": self._read(self.files[-1])}
