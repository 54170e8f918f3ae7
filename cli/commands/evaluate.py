"""``infovae evaluate``: metric plugins (the paper's metrics and any installed ones) on a trained run."""
from __future__ import annotations

import os
from pathlib import Path

import click

from .common import echo_json, friendly_errors

DEFAULT_METRICS = "reconstruction,kl,mmd-prior,logdet-cov,mutual-information,active-units"


def choose_subset(n: int, limit, first: bool, seed: int):
    """Indices of the examples to score: all (None), the first ``limit``, or a seeded random
    ``limit`` of them (sorted), drawn with ``torch.randperm`` from a generator seeded with ``seed``."""
    import torch

    if limit is None or limit >= n:
        return None
    if first:
        return torch.arange(limit)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:limit].sort().values


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("run", type=click.Path(file_okay=False, path_type=Path))
@click.option("--metrics", "-m", default=DEFAULT_METRICS, show_default=True, help="Comma-separated metric plugins (also: nll, class-distribution, semi-supervised; 'infovae plugins --kind metrics').")
@click.option("--option", "-o", "options", multiple=True, metavar="METRIC.KEY=VALUE", help="Metric option, e.g. -o nll.num_samples=5000 (repeatable; 'infovae plugins show nll' lists them).")
@click.option("--split", default="test", show_default=True, help="Data split to score.")
@click.option("--limit", type=click.IntRange(1), default=None, help="Score N examples of the split: a random subset drawn with --seed (recorded in evaluation.json), or the first N with --first.")
@click.option("--first", is_flag=True, help="With --limit: take the first N examples instead of a random subset (sorted splits give skewed subsets).")
@click.option("--batch-size", type=click.IntRange(1), default=1024, show_default=True)
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=0, show_default=True, help="Seeds the metrics' randomness and the --limit subset.")
@click.option("--device", default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--save/--no-save", default=True, show_default=True, help="Also write RUN/evaluation.json (merged with the metrics already there for the same split and step) and send it to the run's loggers.")
@friendly_errors
def evaluate(run, metrics, options, split, limit, first, batch_size, seed, device, as_json, save):
    """Score a trained run with metric plugins (nats unless stated).

    \b
    Default metrics: -E_q log p(x|z) (reconstruction), mean KL(q(z|x)||p(z)),
    MMD^2 between q(z) and p(z) over the whole split, log det Cov[q(z)] / dim,
    the mutual information I_q(x; z) (appendix B.2 estimator, bounded by log M),
    and the number of active units. class-distribution reports the paper's
    l_ce = KL(c || c_hat) (0 when the class histograms match); the cross entropy
    and the data's entropy are details.

    \b
    Examples:
      infovae evaluate runs/default
      infovae evaluate runs/default --metrics nll -o nll.num_samples=5000 --json
      infovae evaluate runs/mnist --metrics semi-supervised,class-distribution
      infovae evaluate runs/mnist --limit 1000            # a seeded random 1000 of the test split
      torchrun --standalone --nproc-per-node 8 --no-python infovae evaluate runs/mnist --device cuda
                                     # sharded over 8 GPUs; rank 0 prints and writes
    """
    import infovae
    from infovae.api import load_run
    from infovae.build import create_dataset
    from infovae.evaluation import log_evaluation, run_metrics, save_evaluation
    from infovae.metrics import build_metrics, parse_names
    from infovae.options import split_targeted
    from infovae.runs import read_status

    from .progress import metric_progress

    if first and limit is None:
        raise click.BadParameter("--first takes the first N examples of --limit N; give --limit too", param_hint="--first")
    from infovae.distributed import env_world_size, rank_device

    # Under torchrun every rank runs this command: each checks the input (one line each, before any
    # collective), loads the run and the data, and takes part in the sharded metrics; rank 0 alone
    # prints and writes evaluation.json.
    world = env_world_size()
    writer = world <= 1 or os.environ.get("RANK", "0") == "0"
    if world > 1:
        device = str(rank_device(device)[0])
    if save and Path(run).is_dir() and not os.access(run, os.W_OK):
        raise click.ClickException(f"cannot write {Path(run) / 'evaluation.json'}: the run directory is not writable (read-only?); pass --no-save")
    reg = infovae.registry()
    names = parse_names(metrics)
    per_metric = split_targeted(options, names, "evaluate", "-o nll.num_samples=5000",
                                add_hint="Add it to --metrics first (e.g. --metrics {target}), or see 'infovae plugins --kind metrics'.")
    build_metrics(names, per_metric, reg=reg)  # names and options checked before the run is loaded
    spec, model, _ = load_run(run, device=device, reg=reg, with_objective=False)
    ds = create_dataset(reg, spec.dataset)
    if split not in ds.splits:
        raise click.BadParameter(f"data set has no split {split!r}; it has {', '.join(ds.splits)}", param_hint="--split")
    x = ds.split(split)
    labels = ds.labels(split)
    n_split = int(x.shape[0])
    subset = choose_subset(n_split, limit, first, seed)
    if subset is not None:
        x = x[subset]
        labels = labels[subset] if labels is not None else None
    ctx = None
    if world > 1:
        from infovae.distributed import init as init_distributed

        ctx = init_distributed(device)
    try:
        with metric_progress(enabled=not as_json and writer) as (on_metric, on_progress):
            results = run_metrics(model, x, names, labels, seed, batch_size, per_metric, reg, on_metric, on_progress, ctx=ctx)
    except (ValueError, TypeError, FloatingPointError) as exc:
        raise click.ClickException(f"cannot evaluate {run}: {exc}") from None
    finally:
        if ctx is not None:
            ctx.shutdown()
    if not writer:
        return
    report = {"run": str(run), "split": split, "examples": int(x.shape[0]), "split_examples": n_split,
              "step": int(read_status(run).get("step", 0))}
    if subset is not None:
        report["subset"] = {"method": "first" if first else "random", "seed": None if first else seed,
                            "indices": subset.tolist()}
    report["metrics"] = results
    if save:
        report = save_evaluation(run, report)
        log_evaluation(run, report)
    if as_json:
        echo_json(report)
        return
    from rich.console import Console
    from rich.table import Table

    how = "" if subset is None else f", {'first' if first else 'random'} {x.shape[0]} of {n_split}"
    table = Table(title=f"{run} ({split}, {x.shape[0]} examples{how})", title_justify="left")
    table.add_column("metric", style="bold")
    table.add_column("value", justify="right")
    table.add_column("details")
    for name, res in results.items():
        value = res.get("value")
        details = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in res.items()
                            if k not in ("value", "description") and not isinstance(v, (dict, list)))
        table.add_row(name, f"{value:.4f}" if isinstance(value, float) else str(value), details)
    Console().print(table)
