"""Evaluate a run and keep its results: RUN/evaluation.json, shared by ``infovae evaluate``,
``compare --evaluate`` and ``report``.

evaluation.json::

    {"run": "runs/mmd", "split": "test", "examples": 10000, "step": 9400,
     "metrics": {"nll": {"value": 81.2, "std_err": 0.3, ...}, ...}}

Metrics already in the file for the same split, number of examples and training step are
kept when others are added, so a run can be scored metric by metric.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

EVALUATION_FILE = "evaluation.json"


def read_evaluation(run_dir) -> Optional[Dict[str, Any]]:
    """The run's evaluation.json, or None when it has none (a malformed file is a RunError)."""
    from .runs import read_json

    p = Path(run_dir) / EVALUATION_FILE
    if not p.exists():
        return None
    report = read_json(p)
    if not isinstance(report, dict) or not isinstance(report.get("metrics"), dict):
        from .errors import RunError

        raise RunError(f"{p} is not an infovae evaluation (no 'metrics' table); re-create it with 'infovae evaluate {run_dir}'")
    return report


def run_metrics(model, x, names: Sequence[str], labels=None, seed: int = 0, batch_size: int = 1024,
                options: Optional[Mapping[str, Mapping[str, Any]]] = None, reg=None,
                on_metric: Optional[Callable[[str], None]] = None,
                on_progress: Optional[Callable[[int, int], None]] = None, ctx=None) -> Dict[str, Any]:
    """``evaluate_metrics`` one metric at a time (each with a generator seeded from ``seed``, so the
    values equal those of one call with all of them), reporting which metric runs and its progress.
    ctx: the torchrun context (``infovae.distributed``): every rank calls this, rank 0 gets the results."""
    import torch

    from .metrics import evaluate_metrics
    from .progress import report_progress_to

    options = options or {}
    results: Dict[str, Any] = {}
    for name in names:
        if on_metric is not None:
            on_metric(name)
        gen = torch.Generator(device=model.device).manual_seed(seed)
        with report_progress_to(on_progress):
            results.update(evaluate_metrics(model, x, [name], labels=labels, generator=gen, batch_size=batch_size,
                                            options={name: dict(options.get(name, {}))}, reg=reg, ctx=ctx))
    return results


def save_evaluation(run_dir, report: Dict[str, Any]) -> Dict[str, Any]:
    """Write evaluation.json, keeping the metrics already there for the same split, examples and step."""
    from .io import atomic_write_json

    try:
        old = read_evaluation(run_dir)
    except Exception:  # noqa: BLE001 - a corrupt old file is simply replaced
        old = None
    key = ("split", "examples", "step", "subset")
    if old and all(old.get(k) == report.get(k) for k in key):
        report = {**report, "metrics": {**{k: v for k, v in old["metrics"].items() if k not in report["metrics"]}, **report["metrics"]}}
    atomic_write_json(Path(run_dir) / EVALUATION_FILE, report, root=run_dir)
    return report


def evaluate_run(run_dir, metrics: Sequence[str], options: Optional[Mapping[str, Mapping[str, Any]]] = None, split: str = "test",
                 batch_size: int = 1024, seed: int = 0, device: str = "auto", save: bool = True, reg=None,
                 on_metric: Optional[Callable[[str], None]] = None, on_progress: Optional[Callable[[int, int], None]] = None) -> Dict[str, Any]:
    """Score a run's model on the whole ``split``; returns the report (merged and saved when ``save``).

    options: {metric: {key: value}}. Names and options are checked before the model is loaded.
    """
    from .api import load_run
    from .build import create_dataset
    from .metrics import build_metrics, parse_names
    from .registry import registry as default_registry
    from .runs import read_status

    reg = reg or default_registry()
    names = parse_names(list(metrics))
    build_metrics(names, options or {}, reg=reg)
    spec, model, _ = load_run(run_dir, device=device, reg=reg, with_objective=False)
    ds = create_dataset(reg, spec.dataset)
    if split not in ds.splits:
        raise ValueError(f"the data set has no split {split!r}; it has {', '.join(ds.splits)}")
    x, labels = ds.split(split), ds.labels(split)
    results = run_metrics(model, x, names, labels, seed, batch_size, options, reg, on_metric, on_progress)
    report = {"run": str(run_dir), "split": split, "examples": int(x.shape[0]), "split_examples": int(x.shape[0]),
              "step": int(read_status(run_dir).get("step", 0)), "metrics": results}
    return save_evaluation(run_dir, report) if save else report


def log_evaluation(run_dir, report: Mapping[str, Any], reg=None) -> list:
    """Send an evaluation to the trackers the run was trained with (its loggers.json); returns their names."""
    from .loggers import open_loggers, read_loggers_file
    from .registry import registry as default_registry

    choices = read_loggers_file(run_dir)
    if not choices:
        return []
    loggers = open_loggers(reg or default_registry(), run_dir, choices, include_jsonl=False)
    loggers.log_evaluation(json.loads(json.dumps(report)))
    names = loggers.names()
    loggers.close()
    return names
