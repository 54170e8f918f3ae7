"""The one place where stored values and model values are converted.

Stored data are uint8 tensors of shape (N, C, H, W): {0, 1} for binary data,
0..255 for 8-bit data. The model sees float32:

- binary: {0., 1.}
- gray8 / rgb8: v / 127.5 - 1, i.e. 256 levels in [-1, 1], bin half-width 1/255.

Plugins never convert on their own; they receive and return model values.
"""
from __future__ import annotations

import torch

from .spec import DataSpec


def to_model(x: torch.Tensor, spec: DataSpec, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float model values (same shape)."""
    if x.dtype != torch.uint8:
        raise TypeError(f"stored data must be uint8, got {x.dtype}")
    if spec.kind == "binary":
        return x.to(dtype)
    return x.to(dtype) / 127.5 - 1.0


def from_model(x: torch.Tensor, spec: DataSpec) -> torch.Tensor:
    """float model values -> uint8 stored values, rounding to the nearest level."""
    if spec.kind == "binary":
        return (x > 0.5).to(torch.uint8)
    return torch.clamp(torch.round((x.float() + 1.0) * 127.5), 0, 255).to(torch.uint8)


def to_levels(x: torch.Tensor, spec: DataSpec) -> torch.Tensor:
    """Model values -> int64 level indices 0..num_levels-1 (same shape): the class index of
    each subpixel for a categorical output (rounded to the nearest level, clamped)."""
    if spec.kind == "binary":
        return (x > 0.5).long()
    return torch.round((x + 1.0) * 127.5).long().clamp(0, 255)


def from_levels(levels: torch.Tensor, spec: DataSpec, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Level indices 0..num_levels-1 (any integer or float dtype) -> model values in ``dtype``."""
    x = levels.to(dtype)
    return x if spec.kind == "binary" else x / 127.5 - 1.0


def check_uint8_images(x: torch.Tensor, spec: DataSpec, what: str) -> None:
    """Raise ValueError unless x is a uint8 (N, *spec.shape) tensor with valid values."""
    if x.dtype != torch.uint8:
        raise ValueError(f"{what}: expected uint8 values, got {x.dtype}")
    if tuple(x.shape[1:]) != spec.shape:
        raise ValueError(f"{what}: expected examples of shape {spec.shape}, got {tuple(x.shape[1:])}")
    if spec.kind == "binary" and x.numel() and int(x.max()) > 1:
        raise ValueError(f"{what}: binary data must hold only 0 and 1, found {int(x.max())}")
