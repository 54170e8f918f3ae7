"""Data specifications: what kind of values a data set holds and its shape.

Torch-free on purpose: the CLI checks specs before anything heavy is imported.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Tuple

DataKind = Literal["binary", "gray8", "rgb8"]
DATA_KINDS: Tuple[str, ...] = ("binary", "gray8", "rgb8")


@dataclass(frozen=True)
class DataSpec:
    """What a data set holds.

    kind:  "binary" (values {0, 1}, C == 1), "gray8" (0..255, C == 1) or
           "rgb8" (0..255, C == 3, channel order R, G, B).
    shape: (C, H, W) of one example.

    The model sees binary data as float {0., 1.} and 8-bit data as floats in
    [-1, 1] on the 256-level grid v / 127.5 - 1 (see ``infovae.data``).
    """

    kind: str
    shape: Tuple[int, int, int]

    def __post_init__(self) -> None:
        if self.kind not in DATA_KINDS:
            raise ValueError(f"unknown data kind {self.kind!r}; expected one of {', '.join(DATA_KINDS)}")
        shape = tuple(int(s) for s in self.shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"data shape must be (C, H, W) with positive sizes, got {self.shape!r}")
        object.__setattr__(self, "shape", shape)
        expected_c = 3 if self.kind == "rgb8" else 1
        if shape[0] != expected_c:
            raise ValueError(f"{self.kind} data has {expected_c} channel(s), got shape {shape}")

    @property
    def channels(self) -> int:
        return self.shape[0]

    @property
    def num_dims(self) -> int:
        """Number of subpixels per example (C * H * W), for bits/dim."""
        c, h, w = self.shape
        return c * h * w

    @property
    def num_levels(self) -> int:
        """Number of distinct values per subpixel: 2 or 256."""
        return 2 if self.kind == "binary" else 256

    def to_json(self) -> dict:
        return {"kind": self.kind, "shape": list(self.shape)}

    @classmethod
    def from_json(cls, obj: dict) -> "DataSpec":
        return cls(kind=obj["kind"], shape=tuple(obj["shape"]))
