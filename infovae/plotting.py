"""Line charts and figure panels drawn with Pillow (no plotting dependency).

Used by ``infovae plot`` for the paper's Figure 1: sample grids beside the
training curves of the loss terms, the mutual information and the NLL.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

from PIL import Image, ImageDraw, ImageFont

COLORS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75), (227, 119, 194), (127, 127, 127)]
Series = Dict[str, Tuple[Sequence[float], Sequence[float]]]


def _font():
    return ImageFont.load_default()


def _nice_ticks(lo: float, hi: float, n: int = 5) -> List[float]:
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / max(1, n - 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=raw)
    start = math.ceil(lo / step) * step
    ticks = []
    v = start
    while v <= hi + 1e-12 * abs(hi):
        ticks.append(round(v, 12))
        v += step
    return ticks


def _fmt(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.2e}"


def line_chart(series: Series, title: str, xlabel: str = "step", ylabel: str = "", size: Tuple[int, int] = (520, 340),
               hlines: Optional[Dict[str, float]] = None) -> Image.Image:
    """A chart of named (xs, ys) series with axes, ticks and a legend; non-finite points are skipped."""
    w, h = size
    left, right, top, bottom = 64, 16, 28, 44
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    font = _font()
    d.text((left, 6), title, fill="black", font=font)
    pts = [(x, y) for xs, ys in series.values() for x, y in zip(xs, ys) if math.isfinite(x) and math.isfinite(y)]
    ys_extra = list((hlines or {}).values())
    if not pts:
        d.text((left, h // 2), "no data", fill="gray", font=font)
        return img
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min([p[1] for p in pts] + ys_extra), max([p[1] for p in pts] + ys_extra)
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y0, y1 = y0 - 1, y1 + 1
    pad = 0.05 * (y1 - y0)
    y0, y1 = y0 - pad, y1 + pad

    def px(x, y):
        return (left + (x - x0) / (x1 - x0) * (w - left - right), top + (1 - (y - y0) / (y1 - y0)) * (h - top - bottom))

    d.rectangle([left, top, w - right, h - bottom], outline="black")
    for t in _nice_ticks(y0, y1):
        _, yy = px(x0, t)
        d.line([left - 4, yy, left, yy], fill="black")
        d.line([left, yy, w - right, yy], fill=(235, 235, 235))
        d.text((4, yy - 5), _fmt(t), fill="black", font=font)
    for t in _nice_ticks(x0, x1):
        xx, _ = px(t, y0)
        d.line([xx, h - bottom, xx, h - bottom + 4], fill="black")
        d.text((xx - 10, h - bottom + 6), _fmt(t), fill="black", font=font)
    d.text(((w - left) // 2, h - 16), xlabel, fill="black", font=font)
    if ylabel:
        d.text((4, top - 16), ylabel, fill="black", font=font)
    for i, (name, value) in enumerate((hlines or {}).items()):
        _, yy = px(x0, value)
        for xs in range(left, w - right, 8):
            d.line([xs, yy, min(xs + 4, w - right), yy], fill="gray")
        d.text((w - right - 120, yy - 12), f"{name} = {_fmt(value)}", fill="gray", font=font)
    for i, (name, (xs, ys)) in enumerate(series.items()):
        color = COLORS[i % len(COLORS)]
        line = [px(x, y) for x, y in zip(xs, ys) if math.isfinite(x) and math.isfinite(y)]
        if len(line) > 1:
            d.line(line, fill=color, width=2)
        elif line:
            d.ellipse([line[0][0] - 2, line[0][1] - 2, line[0][0] + 2, line[0][1] + 2], fill=color)
        d.text((left + 8, top + 6 + 12 * i), name, fill=color, font=font)
    return img


def titled(img: Image.Image, title: str) -> Image.Image:
    out = Image.new("RGB", (img.width, img.height + 20), "white")
    out.paste(img.convert("RGB"), (0, 20))
    ImageDraw.Draw(out).text((4, 4), title, fill="black", font=_font())
    return out


def hstack(images: Sequence[Image.Image], gap: int = 8) -> Image.Image:
    """Panels side by side, top-aligned, on white."""
    w = sum(i.width for i in images) + gap * (len(images) - 1)
    h = max(i.height for i in images)
    out = Image.new("RGB", (w, h), "white")
    x = 0
    for im in images:
        out.paste(im.convert("RGB"), (x, 0))
        x += im.width + gap
    return out


def vstack(images: Sequence[Image.Image], gap: int = 8) -> Image.Image:
    w = max(i.width for i in images)
    h = sum(i.height for i in images) + gap * (len(images) - 1)
    out = Image.new("RGB", (w, h), "white")
    y = 0
    for im in images:
        out.paste(im.convert("RGB"), (0, y))
        y += im.height + gap
    return out
