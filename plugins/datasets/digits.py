"""scikit-learn's 8x8 handwritten digits: the embedded default data set (no files, no download)."""
from __future__ import annotations

import numpy as np

from infovae import DataSpec, PluginOptionError

from ._common import SplitDataset, carve


class Digits(SplitDataset):
    """The 1797 8x8 digits of ``sklearn.datasets.load_digits`` (values 0..16), with labels.

    kind="binary": pixel = 1 where value >= ``threshold`` (default 8, half of 16).
    kind="gray8":  value * 255 / 16 rounded, so 0 -> 0 and 16 -> 255.
    Splits: a seeded random partition into train (the rest, 1397 by default),
    valid (``valid_size``) and test (``test_size``); the same for the same seed.
    """

    name = "digits"

    def __init__(self, kind: str = "binary", threshold: int = 8, valid_size: int = 200, test_size: int = 200, seed: int = 0):
        if kind not in ("binary", "gray8"):
            raise PluginOptionError(f"dataset 'digits': kind must be 'binary' or 'gray8', got {kind!r}")
        if not 1 <= threshold <= 16:
            raise PluginOptionError(f"dataset 'digits': threshold must be in 1..16 (pixel values are 0..16), got {threshold}")
        if valid_size < 0 or test_size < 0 or valid_size + test_size >= 1797:
            raise PluginOptionError(
                f"dataset 'digits': valid_size={valid_size} and test_size={test_size} must be >= 0 "
                "and leave training examples out of 1797"
            )
        self.kind, self.threshold = kind, int(threshold)
        self.valid_size, self.test_size, self.seed = int(valid_size), int(test_size), int(seed)
        splits = ["train"] + (["valid"] if valid_size else []) + (["test"] if test_size else [])
        super().__init__(DataSpec(kind, (1, 8, 8)), splits)

    def _load(self):
        from sklearn.datasets import load_digits  # bundled with scikit-learn; never downloads

        bunch = load_digits()
        values = np.asarray(bunch.images).reshape(-1, 1, 8, 8)  # float64 in 0..16
        if self.kind == "binary":
            x = (values >= self.threshold).astype(np.uint8)
        else:
            x = np.rint(values * (255.0 / 16.0)).astype(np.uint8)
        y = np.asarray(bunch.target, dtype=np.int64)
        train, valid, test = carve(len(x), (self.valid_size, self.test_size), self.seed)
        return {"train": (x[train], y[train]), "valid": (x[valid], y[valid]), "test": (x[test], y[test])}
