"""``infovae compare``: runs side by side (spec differences, metrics with standard errors, curves)."""
from __future__ import annotations

from pathlib import Path

import click

from .common import echo_json, friendly_errors


def _metric_list(text):
    return None if text is None else [m.strip() for m in text.split(",") if m.strip()]


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("runs", nargs=-1, required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--metrics", "-m", default=None, help="Comma-separated metric columns, in order (default: every metric any run has evaluated).")
@click.option("--evaluate", "evaluate_missing", is_flag=True, help="Compute the metrics a run lacks (test split, written to its evaluation.json).")
@click.option("--option", "-o", "options", multiple=True, metavar="METRIC.KEY=VALUE", help="Metric option for --evaluate, e.g. -o nll.num_samples=1000 (repeatable).")
@click.option("--device", default="auto", show_default=True, help="Device for --evaluate.")
@click.option("--out", "-O", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Also write the overlaid training curves to this PNG.")
@click.option("--markdown", is_flag=True, help="Print the table as Markdown.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@friendly_errors
def compare(runs, metrics, evaluate_missing, options, device, out, markdown, as_json):
    """Compare runs: one row per run, the spec fields that differ, every evaluated
    metric with its standard error. A column's best value is marked (★) only when it
    beats every other run by more than the combined standard error.

    \b
    Examples:
      infovae compare runs/elbo runs/mmd runs/stein
      infovae compare runs/* --metrics nll,mutual-information --evaluate -o nll.num_samples=1000
      infovae compare runs/elbo runs/mmd --out curves.png --json
    """
    from infovae.compare import compare_runs, missing_metrics

    wanted = _metric_list(metrics)
    if options and not evaluate_missing:
        raise click.UsageError("-o/--option sets metric options for --evaluate; add --evaluate or drop it")
    comparison = compare_runs(runs, wanted)
    if evaluate_missing:
        from infovae.evaluation import evaluate_run, log_evaluation
        from infovae.options import split_targeted

        from .evaluate import DEFAULT_METRICS
        from .progress import metric_progress, stderr_console

        if not comparison.metrics:
            comparison = compare_runs(runs, DEFAULT_METRICS.split(","))
        per_metric = split_targeted(options, comparison.metrics, "compare", "-o nll.num_samples=1000",
                                    add_hint="Add it to --metrics first (e.g. --metrics {target}).")
        todo = missing_metrics(comparison)
        console = stderr_console()
        for run, names in todo.items():
            if not as_json:
                console.print(f"evaluating {run}: {', '.join(names)}", highlight=False)
            try:
                with metric_progress(enabled=not as_json) as (on_metric, on_progress):
                    report = evaluate_run(run, names, {n: per_metric.get(n, {}) for n in names}, device=device,
                                          on_metric=on_metric, on_progress=on_progress)
            except (ValueError, TypeError, FloatingPointError) as exc:
                raise click.ClickException(f"cannot evaluate {run}: {exc}") from None
            log_evaluation(run, report)
        comparison = compare_runs(runs, comparison.metrics)
    if out is not None:
        from infovae.io import atomic_write_bytes
        from infovae.plotting import png_bytes, training_curves

        atomic_write_bytes(out, png_bytes(training_curves(comparison.records)))  # a file the user names, outside any run
    if as_json:
        result = comparison.to_json()
        if out is not None:
            result["figure"] = str(out)
        echo_json(result)
        return
    if markdown:
        from infovae.compare import markdown_table

        click.echo(markdown_table(comparison))
    else:
        print_table(comparison)
    if out is not None:
        click.echo(f"wrote {out}")


def print_table(comparison) -> None:
    from rich.console import Console
    from rich.table import Table

    from infovae.compare import column_title

    table = Table(title="runs compared", title_justify="left",
                  caption="★ best by more than the combined standard error; ↓/↑ lower/higher is better; missing: not evaluated "
                          "(infovae compare --evaluate)", caption_justify="left")
    table.add_column("run", style="bold")
    for k in comparison.diff_fields:
        table.add_column(k, style="cyan")
    for m in comparison.metrics:
        table.add_column(column_title(m), justify="right")
    for r in comparison.rows:
        cells = [r.label] + [str(r.spec_diff[k]) for k in comparison.diff_fields]
        for m in comparison.metrics:
            c = r.metrics[m]
            cells.append("[dim]missing[/dim]" if c.missing else (f"[bold green]{c.text()} ★[/bold green]" if c.best else c.text()))
        table.add_row(*cells)
    console = Console()
    if not console.is_terminal:
        console = Console(width=1000, soft_wrap=True)  # files and pipes get the whole table, unwrapped
    console.print(table)
