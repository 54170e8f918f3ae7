"""MNIST (or any data set in the same IDX files, e.g. Fashion-MNIST) from a directory.

Files expected in ``path`` (each may also be gzipped, ``<name>.gz``):
``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``.

IDX format: a 4-byte magic number ``00 00 <type> <ndim>`` (type 0x08 =
unsigned byte; images have ndim 3, i.e. magic 2051, labels ndim 1, magic
2049), then ``ndim`` big-endian uint32 sizes, then the values row-major.
"""
from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import torch

from infovae import DataError, DataSpec, PluginOptionError

from ._common import SplitDataset, carve, check_sizes, derive_seed, read_bytes, require_path, to_tensor

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
EXPECTED = "a directory with " + ", ".join(FILES.values()) + " (each optionally .gz), the files of yann.lecun.com/exdb/mnist"
BINARIZE = ("none", "static", "dynamic", "threshold")
IDX_UBYTE = 0x08
IDX_TYPES = {0x08: "unsigned byte", 0x09: "signed byte", 0x0B: "short", 0x0C: "int", 0x0D: "float", 0x0E: "double"}


def find_file(root: Path, base: str) -> Optional[Path]:
    """``base`` or ``base.gz`` in root; also the dotted spelling ``train-images.idx3-ubyte`` some mirrors use."""
    dotted = base.replace("-idx", ".idx")
    for name in (base, base + ".gz", dotted, dotted + ".gz"):
        if (root / name).is_file():
            return root / name
    return None


def read_idx_header(path: Path, ndim: int, plugin: str) -> Tuple[Tuple[int, ...], int]:
    """(sizes, header length) of an IDX file of unsigned bytes with ``ndim`` dimensions; DataError otherwise."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            head = f.read(4 + 4 * ndim)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"data set {plugin!r}: cannot read {path}: {exc}") from None
    if len(head) < 4:
        raise DataError(f"data set {plugin!r}: {path} is too short for an IDX header")
    magic = int.from_bytes(head[:4], "big")
    if head[0] != 0 or head[1] != 0 or head[2] not in IDX_TYPES:
        raise DataError(f"data set {plugin!r}: {path} is not an IDX file (magic number {magic:#010x})")
    if head[2] != IDX_UBYTE:
        raise DataError(f"data set {plugin!r}: {path} holds {IDX_TYPES[head[2]]} values; MNIST IDX files hold unsigned bytes (type 0x08)")
    if head[3] != ndim:
        want = (IDX_UBYTE << 8) | ndim
        raise DataError(
            f"data set {plugin!r}: {path} has {head[3]} dimension(s) (magic {magic}); expected {ndim} (magic {want}). "
            "Are the image and label files swapped?"
        )
    if len(head) < 4 + 4 * ndim:
        raise DataError(f"data set {plugin!r}: {path} is truncated inside its IDX header")
    sizes = tuple(int.from_bytes(head[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if min(sizes) < 1:
        raise DataError(f"data set {plugin!r}: {path} declares sizes {sizes}; every size must be >= 1")
    offset = 4 + 4 * ndim
    if path.suffix != ".gz":  # uncompressed: the length is known without reading the data
        check_length(path, path.stat().st_size - offset, sizes, plugin)
    return sizes, offset


def check_length(path: Path, have: int, sizes: Tuple[int, ...], plugin: str) -> None:
    count = int(np.prod(sizes))
    if have != count:
        raise DataError(
            f"data set {plugin!r}: {path} holds {have} value bytes but its header declares "
            f"{' x '.join(map(str, sizes))} = {count}; the file is truncated or corrupt"
        )


def read_idx(path: Path, ndim: int, plugin: str) -> np.ndarray:
    """The uint8 array of an IDX file, its length checked against its header."""
    sizes, offset = read_idx_header(path, ndim, plugin)
    raw = read_bytes(path, plugin)
    check_length(path, len(raw) - offset, sizes, plugin)
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(sizes)


class MNIST(SplitDataset):
    """MNIST from IDX files at ``path``.

    binarize:
      "none"      -> 8-bit gray (kind gray8), values 0..255 as stored.
      "static"    -> one Bernoulli draw per pixel with p = value / 255, fixed by
                     ``seed`` (the stochastic binarization of Salakhutdinov & Murray 2008
                     done once): every call returns the same {0, 1} data.
      "dynamic"   -> ``split("train")`` returns a fresh Bernoulli draw (p = value / 255)
                     on every call: a trainer calls it once per epoch, passing its own
                     ``generator`` for reproducible (resumable) draws; without one the data
                     set's own generator (seeded by ``seed``) advances. "valid" and "test"
                     are drawn once with a fixed seed, so evaluations stay comparable.
      "threshold" -> pixel = 1 where value >= 128 (value / 255 >= 0.5).
    Splits: "valid" is ``valid_size`` images carved at random (``seed``) out of the
    60000 training images, "train" the rest, "test" the 10000 t10k images. Labels: int64 digits.
    """

    name = "mnist"

    def __init__(self, path: str = "", binarize: str = "static", valid_size: int = 10000, seed: int = 0):
        if binarize not in BINARIZE:
            raise PluginOptionError(f"dataset 'mnist': binarize must be one of {', '.join(BINARIZE)}, got {binarize!r}")
        root = require_path(path, self.name, EXPECTED)
        if not root.is_dir():
            raise DataError(f"data set {self.name!r}: {root} is not a directory; expected {EXPECTED}")
        files = {k: find_file(root, base) for k, base in FILES.items()}
        missing = [str(root / FILES[k]) + "[.gz]" for k, f in files.items() if f is None]
        if missing:
            raise DataError(f"data set {self.name!r}: missing {', '.join(missing)}. Expected {EXPECTED}.")
        self.files = files
        sizes = {k: read_idx_header(f, 3 if k.endswith("images") else 1, self.name)[0] for k, f in files.items()}
        for s in ("train", "test"):
            if sizes[f"{s}_images"][0] != sizes[f"{s}_labels"][0]:
                raise DataError(
                    f"data set {self.name!r}: {files[s + '_images']} has {sizes[s + '_images'][0]} images but "
                    f"{files[s + '_labels']} has {sizes[s + '_labels'][0]} labels"
                )
        if sizes["train_images"][1:] != sizes["test_images"][1:]:
            raise DataError(
                f"data set {self.name!r}: train images are {sizes['train_images'][1:]} but test images are "
                f"{sizes['test_images'][1:]} ({files['train_images']}, {files['test_images']})"
            )
        check_sizes(self.name, sizes["train_images"][0], str(files["train_images"]), valid_size=valid_size)
        self.binarize, self.valid_size, self.seed = binarize, int(valid_size), int(seed)
        self.dynamic = binarize == "dynamic"
        h, w = sizes["train_images"][1:]
        kind = "gray8" if binarize == "none" else "binary"
        super().__init__(DataSpec(kind, (1, h, w)), ["train", "test"] + (["valid"] if valid_size else []))
        self._draws = torch.Generator().manual_seed(derive_seed(self.seed, 2))

    def _load(self):
        x_train = read_idx(self.files["train_images"], 3, self.name)[:, None]
        y_train = read_idx(self.files["train_labels"], 1, self.name)
        x_test = read_idx(self.files["test_images"], 3, self.name)[:, None]
        y_test = read_idx(self.files["test_labels"], 1, self.name)
        train, valid = carve(len(x_train), (self.valid_size,), self.seed)
        out = {"train": (x_train[train], y_train[train]), "valid": (x_train[valid], y_train[valid]), "test": (x_test, y_test)}
        if self.binarize != "none":
            for stream, s in enumerate(("train", "valid", "test"), start=3):
                if s == "train" and self.dynamic:
                    continue  # the cache keeps the gray levels; split() draws from them
                gray, labels = out[s]
                if self.binarize == "threshold":
                    binary = (gray >= 128).astype(np.uint8)
                else:
                    g = torch.Generator().manual_seed(derive_seed(self.seed, stream))
                    binary = bernoulli_uint8(to_tensor(gray), g).numpy()
                out[s] = (binary, labels)
        return out

    def split(self, name: str, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """uint8 (N, 1, H, W); with binarize="dynamic", "train" is a fresh draw on every call (see class doc)."""
        x = super().split(name)
        if self.dynamic and name == "train":
            return bernoulli_uint8(x, generator if generator is not None else self._draws)
        return x


def bernoulli_uint8(gray: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """{0, 1} uint8 draws with P(1) = gray / 255 exactly: u uniform on {0..254}, pixel = u < gray."""
    u = torch.randint(0, 255, gray.shape, dtype=torch.uint8, generator=generator, device=gray.device)
    return (u < gray).to(torch.uint8)
