"""``infovae evaluate``: the paper's metrics on a trained run."""
from __future__ import annotations

from pathlib import Path

import click

from infovae.options import parse_assignments

from .common import echo_json, friendly_errors

DEFAULT_METRICS = "reconstruction,kl,mmd-prior,logdet-cov,mutual-information,active-units"


def _coerce(value: str):
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(value.lower(), value)


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("run", type=click.Path(file_okay=False, path_type=Path))
@click.option("--metrics", "-m", default=DEFAULT_METRICS, show_default=True, help="Comma-separated metric names (also: nll, class-distribution, semi-supervised).")
@click.option("--option", "-o", "options", multiple=True, metavar="KEY=VALUE", help="Metric option, e.g. num_samples=1000 for nll (repeatable).")
@click.option("--split", default="test", show_default=True, help="Data split to score.")
@click.option("--limit", type=click.IntRange(1), default=None, help="Score only the first N examples of the split.")
@click.option("--batch-size", type=click.IntRange(1), default=1024, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--save/--no-save", default=True, show_default=True, help="Also write RUN/evaluation.json.")
@friendly_errors
def evaluate(run, metrics, options, split, limit, batch_size, seed, device, as_json, save):
    """Score a trained run with the paper's metrics (nats unless stated).

    \b
    Default metrics: -E_q log p(x|z) (reconstruction), mean KL(q(z|x)||p(z)),
    MMD^2 between q(z) and p(z) over the whole split, log det Cov[q(z)] / dim,
    the mutual information I_q(x; z) (appendix B.2 estimator, bounded by log M),
    and the number of active units.

    \b
    Examples:
      infovae evaluate runs/default
      infovae evaluate runs/default --metrics nll -o num_samples=1000 --json
      infovae evaluate runs/mnist --metrics semi-supervised,class-distribution
    """
    import torch

    import infovae
    from infovae.api import load_run
    from infovae.build import create_dataset
    from infovae.io import atomic_write_json
    from infovae.metrics import evaluate_metrics

    opts = {k: _coerce(v) for k, v in parse_assignments(options, what="metric option").items()}
    reg = infovae.registry()
    spec, model, _ = load_run(run, device=device, reg=reg)
    ds = create_dataset(reg, spec.dataset)
    if split not in ds.splits:
        raise click.BadParameter(f"data set has no split {split!r}; it has {', '.join(ds.splits)}", param_hint="--split")
    x = ds.split(split)
    labels = ds.labels(split)
    if limit is not None:
        x = x[:limit]
        labels = labels[:limit] if labels is not None else None
    gen = torch.Generator(device=model.device).manual_seed(seed)
    try:
        results = evaluate_metrics(model, x, metrics, labels=labels, generator=gen, batch_size=batch_size, **opts)
    except (ValueError, TypeError, FloatingPointError) as exc:
        raise click.ClickException(f"cannot evaluate {run}: {exc}") from None
    report = {"run": str(run), "split": split, "examples": int(x.shape[0]), "metrics": results}
    if save:
        atomic_write_json(Path(run) / "evaluation.json", report)
    if as_json:
        echo_json(report)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{run} ({split}, {x.shape[0]} examples)", title_justify="left")
    table.add_column("metric", style="bold")
    table.add_column("value", justify="right")
    table.add_column("details")
    for name, res in results.items():
        value = res.get("value")
        details = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in res.items()
                            if k not in ("value", "description") and not isinstance(v, (dict, list)))
        table.add_row(name, f"{value:.4f}" if isinstance(value, float) else str(value), details)
    Console().print(table)
