"""Charts for runs, drawn with matplotlib's object-oriented API on the Agg canvas.

No pyplot and no display: every function builds a ``matplotlib.figure.Figure``
and ``png_bytes`` renders it, so ``infovae plot``, ``compare`` and ``report``
work on a headless machine. Each quantity gets its own axes (a loss term of
~100 nats and an MMD of ~0.001 never share a y axis); every axis says its unit.

Curves come from a run's metrics.jsonl records (dicts with "epoch" and keys
such as "train/reconstruction", "valid/mmd", "track/mutual-information").
"""
from __future__ import annotations

import io
import math
from typing import List, Mapping, Optional, Sequence, Tuple

import numpy as np

Curve = Tuple[List[float], List[float]]
# One colour per run (matplotlib's tab10), so a run keeps its colour across panels.
RUN_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
# Units of the per-epoch quantities; loss terms are batch means in nats.
UNITS = {"mutual-information": "nats", "nll": "nats", "mmd-prior": "MMD², unitless", "logdet-cov": "nats / dim", "kl": "nats", "reconstruction": "nats"}


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def png_bytes(fig, dpi: int = 100) -> bytes:
    """Render a Figure to PNG bytes (Agg canvas; no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    return buf.getvalue()


def curve(records: Sequence[Mapping], key: str) -> Curve:
    """(epochs, values) of one metrics key; records without it, or with a non-finite value, are skipped."""
    xs, ys = [], []
    for r in records:
        v = r.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and "epoch" in r:
            xs.append(float(r["epoch"]))
            ys.append(float(v))
    return xs, ys


def loss_terms(records: Sequence[Mapping]) -> List[str]:
    """Loss-term names logged as train/NAME (the total "loss" first, then the rest sorted)."""
    names = {k.split("/", 1)[1] for r in records for k in r if k.startswith("train/") and k.count("/") == 1}
    return sorted(names, key=lambda n: (n != "loss", n != "reconstruction", n))


def term_unit(term: str) -> str:
    """The y-axis label of a loss term: nats for likelihood terms and KL, MMD² for MMD, else the estimate's own scale."""
    if term in ("loss", "reconstruction", "kl"):
        return "nats"
    if term.startswith("mmd"):
        return "MMD² (unitless)"
    if term.startswith("stein"):
        return "surrogate loss (gradient only)"
    return UNITS.get(term, "divergence estimate")


def _finish(ax, title: str, ylabel: str, xlabel: str = "epoch", legend: bool = True) -> None:
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if legend and ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best")


def _panels(runs: Mapping[str, Sequence[Mapping]]) -> List[Tuple[str, str]]:
    """(kind, name) of every panel the runs have data for: loss terms, then MI, then NLL."""
    terms: List[str] = []
    for recs in runs.values():
        for t in loss_terms(recs):
            if t not in terms:
                terms.append(t)
    terms.sort(key=lambda n: (n != "loss", n != "reconstruction", n))
    panels = [("term", t) for t in terms]
    for name in ("mutual-information", "nll"):
        if any(curve(recs, f"track/{name}")[0] for recs in runs.values()):
            panels.append(("track", name))
    return panels


def training_curves(runs: Mapping[str, Sequence[Mapping]], columns: int = 3, fig=None):
    """A Figure (or draws into the given figure / subfigure) of training curves, one axes per quantity, every run overlaid in its own colour.

    runs: {label: metrics records}. Loss terms: solid = training (window means), dashed =
    validation (epoch ends). Mutual information is drawn with its bound log M (dotted, the
    same colour). NLL is the importance-sampled validation NLL that ``--track nll`` logs.
    """
    panels = _panels(runs)
    if not panels:
        fig = fig if fig is not None else _figure(5, 2)
        fig.text(0.5, 0.5, "no training curves logged yet", ha="center", va="center")
        return fig
    cols = min(columns, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = fig if fig is not None else _figure(4.2 * cols, 3.2 * rows)
    axes = fig.subplots(rows, cols, squeeze=False)
    several = len(runs) > 1
    for i, (kind, name) in enumerate(panels):
        ax = axes[i // cols][i % cols]
        for j, (label, recs) in enumerate(runs.items()):
            color = RUN_COLORS[j % len(RUN_COLORS)]
            prefix = f"{label}: " if several else ""
            if kind == "term":
                xs, ys = curve(recs, f"train/{name}")
                if xs:
                    ax.plot(xs, ys, color=color, lw=1.5, label=f"{prefix}train")
                xs, ys = curve(recs, f"valid/{name}")
                if xs:
                    ax.plot(xs, ys, color=color, lw=1.5, ls="--", marker="o", ms=3, label=f"{prefix}validation")
            else:
                xs, ys = curve(recs, f"track/{name}")
                if xs:
                    ax.plot(xs, ys, color=color, lw=1.5, marker="o", ms=3, label=f"{prefix}{'I_q(x;z)' if name == 'mutual-information' else 'NLL'}")
                if name == "mutual-information":
                    bx, by = curve(recs, "track/mutual-information/log_M")
                    if bx:
                        ax.plot(bx, by, color=color, lw=1, ls=":", label=f"{prefix}log M (upper bound)")
        if kind == "term":
            title = "total loss" if name == "loss" else ("reconstruction  −E log p(x|z)" if name == "reconstruction" else f"divergence: {name} (unweighted)")
            _finish(ax, title, term_unit(name))
        elif name == "mutual-information":
            _finish(ax, "mutual information I_q(x;z) vs log M", "nats")
        else:
            _finish(ax, "validation NLL (importance sampled)", "nats")
        if kind == "term" and name not in ("loss", "reconstruction", "kl"):
            # Divergences near 0 span decades; a log axis keeps them readable when all positive.
            vals = [v for recs in runs.values() for k in (f"train/{name}", f"valid/{name}") for v in curve(recs, k)[1]]
            if vals and min(vals) > 0 and max(vals) / min(vals) > 50:
                ax.set_yscale("log")
    for k in range(len(panels), rows * cols):
        axes[k // cols][k % cols].set_visible(False)
    return fig


def curve_grid_shape(runs: Mapping[str, Sequence[Mapping]], columns: int = 3) -> Tuple[int, int]:
    """(rows, columns) of the axes ``training_curves`` draws."""
    n = max(1, len(_panels(runs)))
    cols = min(columns, n)
    return math.ceil(n / cols), cols


def image_panels(images: Sequence[Tuple[str, np.ndarray]], width_inches: float = 4.2, fig=None):
    """A Figure (or the given subfigure) of titled images side by side (uint8 (H, W) gray or (H, W, 3) RGB), no ticks."""
    fig = fig if fig is not None else _figure(width_inches * len(images), width_inches * 1.05)
    axes = fig.subplots(1, len(images), squeeze=False)[0]
    for ax, (title, arr) in zip(axes, images):
        ax.imshow(arr, cmap="gray" if arr.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    return fig


def latent_projection(codes: np.ndarray, prior: np.ndarray, labels: Optional[np.ndarray] = None, title: str = "q(z) against p(z)"):
    """q(z) against p(z) in 2-D: PCA fitted on the codes, prior draws projected with the same map.

    codes: (N, D) posterior means of test examples; prior: (M, D) draws from p(z);
    labels: (N,) integer classes or None. Prior draws are grey, under the coloured codes.
    D = 1 is drawn against a zero second axis; D = 2 is drawn as is.
    """
    codes = np.asarray(codes, dtype=np.float64)
    prior = np.asarray(prior, dtype=np.float64)
    d = codes.shape[1]
    if d > 2:
        from sklearn.decomposition import PCA

        pca = PCA(n_components=2).fit(codes)
        c2, p2 = pca.transform(codes), pca.transform(prior)
        ratio = pca.explained_variance_ratio_
        xl, yl = f"PC 1 ({100 * ratio[0]:.0f}% of q(z) variance)", f"PC 2 ({100 * ratio[1]:.0f}%)"
    elif d == 2:
        c2, p2, xl, yl = codes, prior, "z₁", "z₂"
    else:
        c2 = np.concatenate([codes, np.zeros_like(codes)], 1)
        p2 = np.concatenate([prior, np.zeros_like(prior)], 1)
        xl, yl = "z", ""
    fig = _figure(5.6, 4.8)
    ax = fig.subplots()
    ax.scatter(p2[:, 0], p2[:, 1], s=6, c="#b0b0b0", alpha=0.6, label="p(z) = N(0, I) draws", rasterized=True)
    if labels is not None:
        labels = np.asarray(labels)
        classes = np.unique(labels)
        cmap = _class_cmap(len(classes))
        for k, cls in enumerate(classes):
            m = labels == cls
            ax.scatter(c2[m, 0], c2[m, 1], s=7, color=cmap[k], alpha=0.85, label=f"q(z|x), class {cls}", rasterized=True)
    else:
        ax.scatter(c2[:, 0], c2[:, 1], s=7, color="#1f77b4", alpha=0.8, label="q(z|x) means", rasterized=True)
    ax.set_aspect("equal", adjustable="datalim")
    _finish(ax, title, yl, xlabel=xl, legend=False)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), markerscale=2, frameon=False)
    return fig


def series_panels(panels: Sequence[Tuple[str, str, str, Mapping[str, Sequence]]], log_x=False, log_y=False):
    """A row of axes, one per (title, xlabel, ylabel, {series name: (xs, ys) or (xs, ys, std_errs)}), each
    with a legend; a series with std_errs gets error bars of one standard error. ``log_x``: one bool for
    every panel, or one per panel (base-2 log x axis ticked at the data's x values); ``log_y`` likewise
    (log10 y axis, for positive quantities spanning decades)."""
    fig = _figure(4.2 * len(panels), 3.4)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    logs = [bool(log_x)] * len(panels) if isinstance(log_x, bool) else [bool(v) for v in log_x]
    logys = [bool(log_y)] * len(panels) if isinstance(log_y, bool) else [bool(v) for v in log_y]
    for ax, (title, xlabel, ylabel, series), log, logy in zip(axes, panels, logs, logys):
        for j, (name, xy) in enumerate(series.items()):
            color = RUN_COLORS[j % len(RUN_COLORS)]
            if len(xy) == 3:
                ax.errorbar(xy[0], xy[1], yerr=xy[2], color=color, marker="o", ms=4, lw=1.5, capsize=3, label=name)
            else:
                ax.plot(xy[0], xy[1], color=color, marker="o", ms=4, lw=1.5, label=name)
        if log:
            ticks = sorted({x for xy in series.values() for x in xy[0]})
            ax.set_xscale("log", base=2)
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
            ax.minorticks_off()
        if logy:
            ax.set_yscale("log")
        _finish(ax, title, ylabel, xlabel=xlabel)
    return fig


def figure_one(records: Sequence[Mapping], images: Sequence[Tuple[str, np.ndarray]] = (), columns: int = 3):
    """The paper's Figure 1 for one run: sample grids (top row) over its training curves."""
    rows, cols = curve_grid_shape({"run": records}, columns)
    width = max(4.2 * cols, 4.2 * len(images))
    curves_h = 3.2 * rows
    if not images:
        return training_curves({"run": records}, columns, fig=_figure(width, curves_h))
    fig = _figure(width, curves_h + 4.4)
    top, bottom = fig.subfigures(2, 1, height_ratios=[4.4, curves_h])
    image_panels(images, fig=top)
    training_curves({"run": records}, columns, fig=bottom)
    return fig


def _class_cmap(n: int) -> List:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]
