"""A self-contained HTML report of one or more runs.

One file that works offline: no scripts, no fonts, no style sheets or images from
anywhere else; every chart and image is an inline ``data:image/png;base64`` URI.
Per run it shows the spec and provenance, the evaluation table, the training curves
(every loss term, I_q(x;z) against log M, NLL), ancestral and Markov-chain sample
grids and q(z) against p(z) (a PCA of the test codes, coloured by label, over prior
draws). With several runs it starts with their comparison and overlaid curves.
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px auto; max-width: 1320px; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 2px solid #ddd; padding-bottom: 4px; margin-top: 2em; } h3 { margin-top: 1.4em; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.best { background: #e6f4ea; font-weight: bold; } td.missing { color: #999; }
figure { margin: 8px 0 20px; } figcaption { font-size: 0.88em; color: #555; max-width: 1000px; }
img.chart { max-width: 100%; border: 1px solid #eee; } img.grid { image-rendering: pixelated; border: 1px solid #eee; }
.row { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }
pre { background: #f7f7f7; padding: 8px; overflow-x: auto; font-size: 0.85em; max-height: 420px; }
.note { color: #666; font-size: 0.9em; } .scroll { overflow-x: auto; max-width: 100%; }
"""


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _img(png: bytes, alt: str, cls: str = "chart", width: Optional[int] = None) -> str:
    w = f' width="{width}"' if width else ""
    return f'<img class="{cls}" alt="{html.escape(alt)}" src="{data_uri(png)}"{w}>'


def _figure(png: bytes, alt: str, caption: str, cls: str = "chart", width: Optional[int] = None) -> str:
    return f"<figure>{_img(png, alt, cls, width)}<figcaption>{html.escape(caption)}</figcaption></figure>"


def format_value(v: Any) -> str:
    """How numbers appear in the metrics table: 6 significant digits (the browser test reads them back)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return html.escape(str(v))
    if isinstance(v, int):
        return str(v)
    return format(v, ".6g") if math.isfinite(v) else str(v)


def metrics_table(evaluation: Optional[Mapping[str, Any]], run_label: str) -> str:
    if not evaluation:
        return (f'<p class="note">No evaluation yet: run <code>infovae evaluate {html.escape(run_label)}</code> '
                f'(or <code>infovae report --evaluate</code>).</p>')
    from .compare import std_err_of

    rows = []
    for name, res in evaluation.get("metrics", {}).items():
        if not isinstance(res, Mapping):
            continue
        se = std_err_of(name, res)
        rows.append(
            f'<tr data-metric="{html.escape(name)}"><td>{html.escape(name)}</td>'
            f'<td class="num value">{format_value(res.get("value"))}</td>'
            f'<td class="num std-err">{"" if se is None else format_value(se)}</td>'
            f'<td>{html.escape(str(res.get("units", "")))}</td>'
            f'<td>{html.escape(str(res.get("description", "")))}</td></tr>'
        )
    head = (f'<p class="note">Split <b>{html.escape(str(evaluation.get("split")))}</b>, {evaluation.get("examples")} examples, '
            f'model at step {evaluation.get("step", "?")}.</p>')
    return head + ('<table class="metrics"><thead><tr><th>metric</th><th>value</th><th>std. error</th><th>units</th>'
                   '<th>what it is</th></tr></thead><tbody>' + "".join(rows) + "</tbody></table>")


def comparison_table(comparison) -> str:
    from .compare import column_title

    head = "".join(f"<th>{html.escape(h)}</th>" for h in ["run"] + comparison.diff_fields + [column_title(m) for m in comparison.metrics])
    body = []
    for r in comparison.rows:
        cells = [f"<td>{html.escape(r.label)}</td>"] + [f"<td>{html.escape(str(r.spec_diff[k]))}</td>" for k in comparison.diff_fields]
        for m in comparison.metrics:
            c = r.metrics[m]
            cls = "num best" if c.best else ("num missing" if c.missing else "num")
            cells.append(f'<td class="{cls}">{html.escape(c.text())}{" ★" if c.best else ""}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<div class="scroll"><table class="comparison"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'
            '<p class="note">★ best in its column by more than the combined standard error against every other run; '
            "↓ lower / ↑ higher is better; columns without a standard error are never marked; missing: not evaluated.</p>")


def _provenance(run: Path, spec_json: Mapping[str, Any], status: Mapping[str, Any]) -> str:
    plugins = spec_json.get("plugins") or {}
    items = [
        ("run directory", str(run)),
        ("status", f"{status.get('status', 'unknown')} at step {status.get('step', '?')} of {status.get('total_steps', '?')}"),
        ("trained with infovae", spec_json.get("infovae_version") or "?"),
        ("data", f"{spec_json.get('dataset', {}).get('name')} ({spec_json.get('data', {}).get('kind')}, shape {spec_json.get('data', {}).get('shape')})"),
        ("model", f"encoder {spec_json.get('encoder', {}).get('name')}, decoder {spec_json.get('decoder', {}).get('name')}, "
                  f"latent dim {spec_json.get('latent_dim')}"),
        ("regularizers", ", ".join(f"{d['name']} × {d['weight']:g}" for d in spec_json.get("divergences", [])) or "none (L_AE)"),
    ]
    for name, src in plugins.items():
        if isinstance(src, Mapping):
            items.append((f"plugin {name}", " ".join(str(v) for v in src.values() if v)))
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in items)
    return (f'<table class="provenance">{rows}</table><details><summary>spec.json</summary>'
            f"<pre>{html.escape(json.dumps(spec_json, indent=2))}</pre></details>")


def _samples_and_codes(run: Path, device: str, seed: int, chain_steps: int, max_codes: int) -> Dict[str, bytes]:
    """PNG bytes of the sample-grid figure and the q(z)-vs-p(z) figure of one run."""
    import torch

    import infovae
    from .api import load_run
    from .build import create_dataset
    from .images import grid_array
    from .plotting import image_panels, latent_projection, png_bytes

    reg = infovae.registry()
    spec, model, _ = load_run(run, device=device, reg=reg)
    g = torch.Generator(device=model.device).manual_seed(seed)
    out: Dict[str, bytes] = {}
    with torch.no_grad():
        anc = reg.create("samplers", "ancestral")(model, 64, generator=g)
        mc = reg.create("samplers", "markov-chain", {"steps": chain_steps, "start": "noise"})(model, 64, generator=g)
    grids = [("ancestral samples  x ~ p(x|z), z ~ p(z)", grid_array(infovae.from_model(anc, spec.data).cpu(), nrow=8)),
             (f"Markov chain x → z → x, {chain_steps} steps from noise", grid_array(infovae.from_model(mc, spec.data).cpu(), nrow=8))]
    out["samples"] = png_bytes(image_panels(grids, width_inches=4.0))
    ds = create_dataset(reg, spec.dataset)
    split = "test" if "test" in ds.splits else ds.splits[-1]
    x = ds.split(split)
    labels = ds.labels(split)
    n = min(max_codes, x.shape[0])
    idx = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
    x = x[idx]
    labels = labels[idx].numpy() if labels is not None else None
    locs = []
    with torch.no_grad():
        for i in range(0, n, 512):
            xb = infovae.to_model(x[i:i + 512].to(model.device), spec.data)
            locs.append(model.posterior(xb).mean.double().cpu())
    codes = torch.cat(locs).numpy()
    prior = model.prior.sample(n, generator=torch.Generator(device=model.device).manual_seed(seed + 1)).double().cpu().numpy()
    title = f"q(z) (posterior means of {n} {split} images) against p(z) = N(0, I)"
    out["latent"] = png_bytes(latent_projection(codes, prior, labels, title=title))
    out["latent_split"] = split.encode()
    return out


def build_report(runs: Sequence, device: str = "auto", seed: int = 0, chain_steps: int = 10, max_codes: int = 2000,
                 with_samples: bool = True) -> str:
    """The HTML text of the report of ``runs`` (run directories)."""
    from . import __version__
    from .compare import compare_runs
    from .evaluation import read_evaluation
    from .plotting import png_bytes, training_curves
    from .runs import SPEC_FILE, read_json, read_status

    paths = [Path(r) for r in runs]
    comparison = compare_runs(paths)
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    title = "infovae report: " + ", ".join(r.label for r in comparison.rows)
    parts: List[str] = [
        f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>",
        f"<meta name=\"generator\" content=\"infovae {__version__}\"><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="note">Written {now} by infovae {__version__}. Self-contained: every image is embedded; the page loads nothing else.</p>',
    ]
    if len(paths) > 1:
        parts.append("<h2>Comparison</h2>")
        parts.append(comparison_table(comparison))
        parts.append(_figure(png_bytes(training_curves(comparison.records)), "training curves of all runs",
                             "Training curves, one panel per quantity, runs overlaid (solid: training window means; dashed: "
                             "validation at epoch ends; dotted: log M, the upper bound of the mutual-information estimate)."))
    for path, row in zip(paths, comparison.rows):
        spec_json = read_json(path / SPEC_FILE)
        records = comparison.records[row.label]
        parts.append(f'<section class="run"><h2>Run {html.escape(row.label)}</h2>')
        parts.append("<h3>Spec and provenance</h3>" + _provenance(path, spec_json, read_status(path)))
        parts.append("<h3>Metrics</h3>" + metrics_table(read_evaluation(path), str(path)))
        parts.append("<h3>Training curves</h3>")
        if records:
            has_nll = any("track/nll" in r for r in records)
            has_mi = any("track/mutual-information" in r for r in records)
            missing = [n for n, ok in (("mutual-information", has_mi), ("nll", has_nll)) if not ok]
            caption = ("Every loss term on its own axes, in nats (divergences unweighted). Solid: training window means; "
                       "dashed: validation at epoch ends.")
            if has_mi:
                caption += " Mutual information I_q(x;z) (appendix B.2 estimator) with its bound log M dotted."
            if missing:
                caption += f" Not tracked during training: {', '.join(missing)} (train with --track {','.join(missing)})."
            parts.append(_figure(png_bytes(training_curves({row.label: records})), f"training curves of {row.label}", caption))
        else:
            parts.append('<p class="note">No metrics logged yet.</p>')
        if with_samples:
            pics = _samples_and_codes(path, device, seed, chain_steps, max_codes)
            parts.append("<h3>Samples</h3>")
            parts.append(_figure(pics["samples"], f"sample grids of {row.label}",
                                 "Left: ancestral sampling. Right: the Markov chain of the autoencoder, started from noise "
                                 "(how the plain autoencoder L_AE must sample). 64 samples each."))
            parts.append("<h3>q(z) against p(z)</h3>")
            parts.append(_figure(pics["latent"], f"latent projection of {row.label}",
                                 "The aggregate posterior q(z) against the prior p(z): a 2-D PCA fitted to the codes of "
                                 f"{pics['latent_split'].decode()} images (coloured by label where the data has labels), "
                                 "with prior draws projected by the same map in grey. InfoVAE aims to make the two clouds match.",
                                 ))
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(runs: Sequence, out, **kwargs) -> Path:
    """Build the report and write it atomically; inside a run directory never through a symlink."""
    from .io import atomic_write_bytes

    text = build_report(runs, **kwargs)
    atomic_write_bytes(out, text.encode("utf-8"), root=runs[0] if len(runs) == 1 else None)
    return Path(out)
