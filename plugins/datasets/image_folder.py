"""A folder of PNG/JPEG images (searched recursively), read with Pillow.

Labels: when every image lies inside a sub-folder of ``path``, the name of that
immediate sub-folder is its class (classes sorted by name -> 0, 1, ...; see
``classes``); when any image lies directly in ``path``, there are no labels.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from infovae import DataError, DataSpec, PluginOptionError

from ._common import SplitDataset, carve, require_path

EXTENSIONS = (".png", ".jpg", ".jpeg")
MODES = ("gray8", "rgb8", "binary")
EXPECTED = "a directory of .png/.jpg/.jpeg images (optionally one sub-folder per class)"


def parse_size(size: str) -> Optional[Tuple[int, int]]:
    """"" -> None (keep the images' own size); "28" -> (28, 28); "32x48" -> (H=32, W=48)."""
    text = str(size).strip().lower()
    if not text:
        return None
    m = re.fullmatch(r"(\d+)(?:\s*x\s*(\d+))?", text)
    if not m or int(m.group(1)) < 1 or (m.group(2) is not None and int(m.group(2)) < 1):
        raise PluginOptionError(f"dataset 'image-folder': size must be HxW or a single int (e.g. 28 or 32x48), got {size!r}")
    h = int(m.group(1))
    return h, int(m.group(2)) if m.group(2) else h


class ImageFolder(SplitDataset):
    """Images under ``path`` as one data set.

    mode:      "gray8" (Pillow's "L" conversion, ITU-R 601-2 luma), "rgb8" (R, G, B)
               or "binary" (gray >= ``threshold`` -> 1). Alpha channels are dropped.
    size:      "" to require all images to share one size, else "HxW" or an int:
               every image is resized (Pillow bilinear, antialiased) to it.
    Broken:    a file that is not a decodable image, or whose header claims more pixels than
               Pillow's decompression-bomb limit, is refused (DataError naming it), never skipped.
    Splits:    files sorted by relative path, then a seeded random partition:
               ``valid_fraction`` and ``test_fraction`` of them (rounded down) form
               "valid" and "test", the rest "train"; empty splits are left out.
    """

    name = "image-folder"

    def __init__(
        self,
        path: str = "",
        mode: str = "gray8",
        threshold: int = 128,
        size: str = "",
        valid_fraction: float = 0.1,
        test_fraction: float = 0.1,
        seed: int = 0,
    ):
        from PIL import Image, UnidentifiedImageError

        if mode not in MODES:
            raise PluginOptionError(f"dataset 'image-folder': mode must be one of {', '.join(MODES)}, got {mode!r}")
        if not 1 <= threshold <= 255:
            raise PluginOptionError(f"dataset 'image-folder': threshold must be in 1..255, got {threshold}")
        for key, frac in (("valid_fraction", valid_fraction), ("test_fraction", test_fraction)):
            if not 0.0 <= frac < 1.0:
                raise PluginOptionError(f"dataset 'image-folder': {key} must be in [0, 1), got {frac}")
        self.resize = parse_size(size)
        root = require_path(path, self.name, EXPECTED)
        if not root.is_dir():
            raise DataError(f"data set {self.name!r}: {root} is not a directory; expected {EXPECTED}")
        files = sorted(
            (p for p in root.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file()),
            key=lambda p: p.relative_to(root).as_posix(),
        )
        if not files:
            raise DataError(f"data set {self.name!r}: no .png, .jpg or .jpeg files under {root}; expected {EXPECTED}")
        # Headers only (Pillow reads pixels lazily): every file must be an image, sizes must agree.
        first_size = None
        for f in files:
            try:
                with Image.open(f) as img:
                    wh = img.size
                    img_mode = img.mode
            except Image.DecompressionBombError as exc:
                raise DataError(f"data set {self.name!r}: {f} is refused as a decompression bomb ({exc}); remove it or shrink it") from None
            except (OSError, UnidentifiedImageError, SyntaxError, ValueError, EOFError) as exc:
                raise DataError(f"data set {self.name!r}: {f} is not a readable image: {exc}") from None
            if img_mode.startswith("I") or img_mode == "F":
                raise DataError(f"data set {self.name!r}: {f} has {img_mode} pixels (16-bit or float); save it as 8-bit")
            if self.resize is None:
                if first_size is None:
                    first_size = (wh, f)
                elif wh != first_size[0]:
                    (w0, h0), f0 = first_size
                    raise DataError(
                        f"data set {self.name!r}: {f} is {wh[1]}x{wh[0]} but {f0} is {h0}x{w0} (HxW); "
                        "give the option size=HxW to resize every image"
                    )
        h, w = self.resize if self.resize is not None else (first_size[0][1], first_size[0][0])
        n = len(files)
        n_valid, n_test = int(valid_fraction * n), int(test_fraction * n)
        if n_valid + n_test >= n:
            raise PluginOptionError(
                f"dataset 'image-folder': valid_fraction={valid_fraction} and test_fraction={test_fraction} leave "
                f"no training images out of the {n} under {root}"
            )
        rel = [f.relative_to(root).parts for f in files]
        if all(len(parts) > 1 for parts in rel):
            self.classes: Optional[List[str]] = sorted({parts[0] for parts in rel})
            index = {c: i for i, c in enumerate(self.classes)}
            self._labels = np.array([index[parts[0]] for parts in rel], dtype=np.int64)
        else:
            self.classes, self._labels = None, None
        self.root, self.files, self.mode, self.threshold = root, files, mode, int(threshold)
        self.n_valid, self.n_test, self.seed = n_valid, n_test, int(seed)
        super().__init__(
            DataSpec(mode, (3 if mode == "rgb8" else 1, h, w)),
            ["train"] + (["valid"] if n_valid else []) + (["test"] if n_test else []),
        )

    def _read(self, f: Path) -> np.ndarray:
        from PIL import Image

        c, h, w = self.spec.shape
        try:
            with Image.open(f) as img:
                img = img.convert("RGB" if c == 3 else "L")
                if img.size != (w, h):
                    if self.resize is None:
                        raise DataError(f"data set {self.name!r}: {f} changed size while loading")
                    img = img.resize((w, h), Image.Resampling.BILINEAR)
                a = np.asarray(img, dtype=np.uint8)
        except Image.DecompressionBombError as exc:
            raise DataError(f"data set {self.name!r}: {f} is refused as a decompression bomb ({exc}); remove it or shrink it") from None
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            # Pillow reports a damaged PNG as SyntaxError("broken PNG file") when it decodes the pixels.
            raise DataError(f"data set {self.name!r}: cannot decode {f} ({type(exc).__name__}: {exc}); remove or repair the file") from None
        return a.transpose(2, 0, 1) if c == 3 else a[None]

    def _load(self):
        x = np.stack([self._read(f) for f in self.files])
        if self.mode == "binary":
            x = (x >= self.threshold).astype(np.uint8)
        y = self._labels
        train, valid, test = carve(len(x), (self.n_valid, self.n_test), self.seed)
        pick = lambda idx: (x[idx], None if y is None else y[idx])  # noqa: E731
        return {"train": pick(train), "valid": pick(valid), "test": pick(test)}
