"""Side-by-side comparison of runs: what differs in their specs, and their evaluated metrics.

``compare_runs`` reads each run's spec.json, evaluation.json and metrics.jsonl (torch-free)
and returns a ``Comparison``: one row per run with the spec fields that differ between
the runs and every evaluated metric with its standard error. A column's best value is
marked only where it beats every other run by more than the combined standard error
sqrt(se_a² + se_b²); a metric without a standard error, or without a direction
(KL, log det), is never marked.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

# Which way is better, per metric; metrics not listed have no "best".
BETTER = {
    "nll": "lower",
    "reconstruction": "lower",
    "mmd-prior": "lower",
    "class-distribution": "lower",
    "mutual-information": "higher",
    "active-units": "higher",
    "semi-supervised": "higher",
}
UNITS = {
    "nll": "nats", "reconstruction": "nats", "kl": "nats", "mutual-information": "nats", "class-distribution": "nats",
    "logdet-cov": "nats/dim", "mmd-prior": "MMD²", "active-units": "units", "semi-supervised": "accuracy",
}
# Spec fields that always differ between runs and say nothing about the model.
IGNORED_FIELDS = ("trainer.device",)


@dataclass
class MetricCell:
    value: Optional[float]
    std_err: Optional[float] = None
    best: bool = False

    @property
    def missing(self) -> bool:
        return self.value is None

    def text(self, digits: int = 4) -> str:
        if self.value is None:
            return "missing"
        v = f"{self.value:.{digits}g}" if abs(self.value) < 1e5 else f"{self.value:.3e}"
        if self.std_err is not None:
            v += f" ± {self.std_err:.2g}"
        return v


@dataclass
class RunRow:
    run: str
    label: str
    spec_diff: Dict[str, Any]
    metrics: Dict[str, MetricCell]
    split: Optional[str] = None
    examples: Optional[int] = None
    step: Optional[int] = None


@dataclass
class Comparison:
    rows: List[RunRow]
    diff_fields: List[str]
    metrics: List[str]
    best: Dict[str, Optional[str]] = field(default_factory=dict)  # metric -> label of the best run, or None
    records: Dict[str, List[Dict[str, Any]]] = field(default_factory=dict)  # label -> metrics.jsonl records

    def to_json(self) -> Dict[str, Any]:
        return {
            "metrics": self.metrics,
            "spec_fields": self.diff_fields,
            "best": self.best,
            "better": {m: BETTER.get(m) for m in self.metrics},
            "runs": [
                {"run": r.run, "label": r.label, "split": r.split, "examples": r.examples, "step": r.step, "spec": r.spec_diff,
                 "metrics": {m: (None if c.missing else {"value": c.value, "std_err": c.std_err, "best": c.best}) for m, c in r.metrics.items()}}
                for r in self.rows
            ],
        }


def _flat_spec(run: Path) -> Dict[str, Any]:
    from .loggers import flatten_params
    from .runs import SPEC_FILE, read_json

    spec = read_json(run / SPEC_FILE)
    divs = spec.get("divergences") or []
    flat = flatten_params({k: v for k, v in spec.items() if k not in ("format", "format_version", "plugins", "divergences")})
    # Regularizers as one readable field ("mmd×100 + kl×1") and their options as "mmd.kernel".
    flat["regularizers"] = " + ".join(f"{d.get('name')}×{d.get('weight', 1.0):g}" for d in divs) or "none"
    for d in divs:
        flat.update(flatten_params(d.get("options") or {}, f"{d.get('name')}."))
    return flat


def _differs(values: Sequence[Any]) -> bool:
    """A field differs when the runs that have it disagree (a field only some runs have, such as
    an option of a regularizer only they use, is already told apart by another column)."""
    present = {repr(v) for v in values if v is not _ABSENT}
    return len(present) > 1


_ABSENT = object()


def std_err_of(name: str, result: Mapping[str, Any]) -> Optional[float]:
    """The standard error a metric reported; for the semi-supervised accuracy the binomial one,
    sqrt(p (1 - p) / n_test), from its own test-set size."""
    se = result.get("std_err")
    if isinstance(se, (int, float)) and math.isfinite(se):
        return float(se)
    if name == "semi-supervised" and isinstance(result.get("n_test"), int) and isinstance(result.get("value"), (int, float)):
        p = float(result["value"])
        return math.sqrt(max(p * (1 - p), 0.0) / max(1, result["n_test"]))
    return None


def mark_best(cells: Mapping[str, MetricCell], direction: Optional[str]) -> Optional[str]:
    """The key of the cell that beats every other by more than the combined standard error, else None."""
    present = {k: c for k, c in cells.items() if not c.missing}
    if direction is None or len(present) < 2 or any(c.std_err is None for c in present.values()):
        return None
    sign = 1.0 if direction == "lower" else -1.0
    best = min(present, key=lambda k: sign * present[k].value)
    b = present[best]
    for k, c in present.items():
        if k == best:
            continue
        if abs(c.value - b.value) <= math.sqrt(b.std_err ** 2 + c.std_err ** 2):
            return None
    return best


def _labels(runs: Sequence[Path]) -> List[str]:
    names = [p.resolve().name for p in runs]
    if len(set(names)) < len(names):
        names = [str(p) for p in runs]
    if len(set(names)) < len(names):  # the same run given twice
        names = [f"{n} #{i + 1}" for i, n in enumerate(names)]
    return names


def compare_runs(runs: Sequence, metrics: Optional[Sequence[str]] = None) -> Comparison:
    """Read the runs (directories) and build the comparison; ``metrics`` restricts and orders the columns."""
    from .evaluation import read_evaluation
    from .runs import load_spec, read_metrics

    paths = [Path(r) for r in runs]
    for p in paths:
        load_spec(p)  # a clear RunError for anything that is not a run
    labels = _labels(paths)
    flats = [_flat_spec(p) for p in paths]
    keys = list(dict.fromkeys(k for f in flats for k in f))
    diff = [k for k in keys if k not in IGNORED_FIELDS and _differs([f.get(k, _ABSENT) for f in flats])] if len(paths) > 1 else []
    evals = [read_evaluation(p) or {} for p in paths]
    if metrics is None:
        names = list(dict.fromkeys(m for e in evals for m in (e.get("metrics") or {})))
    else:
        names = list(dict.fromkeys(metrics))
    rows = []
    for p, label, flat, ev in zip(paths, labels, flats, evals):
        cells = {}
        for m in names:
            res = (ev.get("metrics") or {}).get(m)
            value = res.get("value") if isinstance(res, Mapping) else None
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                cells[m] = MetricCell(float(value), std_err_of(m, res))
            else:
                cells[m] = MetricCell(None)
        rows.append(RunRow(str(p), label, {k: flat.get(k, "—") for k in diff}, cells, ev.get("split"), ev.get("examples"), ev.get("step")))
    best = {}
    for m in names:
        winner = mark_best({r.label: r.metrics[m] for r in rows}, BETTER.get(m))
        best[m] = winner
        for r in rows:
            r.metrics[m].best = r.label == winner
    records = {label: [r for r in read_metrics(p) if "epoch" in r] for p, label in zip(paths, labels)}
    return Comparison(rows, diff, names, best, records)


def missing_metrics(comparison: Comparison) -> Dict[str, List[str]]:
    """run path -> metrics it lacks among the comparison's columns."""
    return {r.run: [m for m, c in r.metrics.items() if c.missing] for r in comparison.rows if any(c.missing for c in r.metrics.values())}


def column_title(metric: str) -> str:
    unit = UNITS.get(metric)
    arrow = {"lower": " ↓", "higher": " ↑"}.get(BETTER.get(metric, ""), "")
    return f"{metric}{f' ({unit})' if unit else ''}{arrow}"


def markdown_table(comparison: Comparison) -> str:
    """The comparison as a Markdown table (best values in bold with a ★)."""
    head = ["run"] + comparison.diff_fields + [column_title(m) for m in comparison.metrics]
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    for r in comparison.rows:
        cells = [r.label] + [str(r.spec_diff[k]) for k in comparison.diff_fields]
        for m in comparison.metrics:
            c = r.metrics[m]
            cells.append(f"**{c.text()} ★**" if c.best else ("—" if c.missing else c.text()))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("★ best in its column by more than the combined standard error sqrt(se_a² + se_b²) against every other run; "
                 "columns without a standard error or a direction (↓ lower is better, ↑ higher) are never marked; — not evaluated.")
    return "\n".join(lines)
