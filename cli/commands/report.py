"""``infovae report``: one self-contained HTML page for one or more runs."""
from __future__ import annotations

from pathlib import Path

import click

from .common import echo_json, friendly_errors


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("runs", nargs=-1, required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", "-O", type=click.Path(dir_okay=False, path_type=Path), default=None, help="HTML file to write (default RUN/report.html for one run; required for several).")
@click.option("--samples/--no-samples", default=True, show_default=True, help="Sample grids and the q(z)-vs-p(z) picture (need the model and data).")
@click.option("--chain-steps", type=click.IntRange(1), default=10, show_default=True, help="Markov-chain transitions.")
@click.option("--codes", type=click.IntRange(10), default=2000, show_default=True, help="Test examples encoded for the q(z) picture.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True)
@friendly_errors
def report(runs, out, samples, chain_steps, codes, seed, device, as_json):
    """Write a self-contained HTML report (works offline; images inline): spec and
    provenance, the evaluation table, every loss term, I_q(x;z) against log M, NLL,
    ancestral and Markov-chain samples, and q(z) against p(z). Several runs add
    their comparison (see 'infovae compare').

    \b
    Examples:
      infovae report runs/demo                       # writes runs/demo/report.html
      infovae report runs/elbo runs/mmd --out compare.html
    """
    from infovae.report import write_report
    from infovae.runs import load_spec

    for r in runs:
        load_spec(r)  # a clear error for anything that is not a run, before any work
    if out is None:
        if len(runs) > 1:
            raise click.UsageError("several runs need --out FILE.html (the report belongs to none of them)")
        out = Path(runs[0]) / "report.html"
    if out.suffix.lower() not in (".html", ".htm"):
        raise click.BadParameter(f"{out} should end in .html", param_hint="--out")
    path = write_report(runs, out, device=device, seed=seed, chain_steps=chain_steps, max_codes=codes, with_samples=samples)
    size = path.stat().st_size
    if as_json:
        echo_json({"out": str(path), "bytes": size, "runs": [str(r) for r in runs]})
    else:
        click.echo(f"wrote {path} ({size / 1024:.0f} KiB, self-contained)")
