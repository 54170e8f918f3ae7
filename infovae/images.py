"""Sample grids as PNG (Pillow), written atomically."""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .io import atomic_write_bytes


def grid_array(x: torch.Tensor, nrow: Optional[int] = None, pad: int = 1, scale: Optional[int] = None) -> np.ndarray:
    """uint8 (N, C, H, W) stored values -> (rows*H', cols*W'[, 3]) uint8 image.

    Binary values are shown as black/white (0 -> 0, 1 -> 255). Small images are
    enlarged by an integer ``scale`` (default: to at least 28 pixels) so 8x8 digits
    are visible.
    """
    if x.dtype != torch.uint8 or x.dim() != 4:
        raise ValueError(f"expected uint8 (N, C, H, W), got {x.dtype} {tuple(x.shape)}")
    arr = x.cpu().numpy()
    if arr.size and arr.max() <= 1:
        arr = arr * 255
    n, c, h, w = arr.shape
    if scale is None:
        scale = max(1, math.ceil(28 / max(h, w)))
    if scale > 1:
        arr = arr.repeat(scale, axis=2).repeat(scale, axis=3)
        h, w = h * scale, w * scale
    cols = nrow or max(1, int(math.ceil(math.sqrt(n))))
    rows = max(1, int(math.ceil(n / cols)))
    out = np.full((c, rows * (h + pad) + pad, cols * (w + pad) + pad), 128, dtype=np.uint8)
    for i in range(n):
        r, k = divmod(i, cols)
        out[:, pad + r * (h + pad): pad + r * (h + pad) + h, pad + k * (w + pad): pad + k * (w + pad) + w] = arr[i]
    return out[0] if c == 1 else out.transpose(1, 2, 0)


def save_grid(x: torch.Tensor, path, nrow: Optional[int] = None, root=None) -> Path:
    """Write a PNG grid of uint8 (N, C, H, W) images atomically; returns the path.

    ``root``: the run directory when ``path`` lies inside one (no symlink below it is followed).
    """
    from PIL import Image

    img = Image.fromarray(grid_array(x, nrow=nrow))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue(), root=root)
    return Path(path)
