"""``infovae bench regularizers``: MMD and Stein forward+backward against baselines in the same run."""
from __future__ import annotations

import click

from .common import emit_benchmark


def _int_list(ctx, param, value):
    if value is None:
        return None
    try:
        out = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from None
    if not out or any(v < 1 for v in out):
        raise click.BadParameter(f"expected positive integers, got {value!r}")
    return out


@click.command("regularizers", context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--sizes", callback=_int_list, default=None, metavar="N[,N...]",
              help="Sample sizes n = m (default 64,128,...,4096; +16384,32768,65536 on cuda).")
@click.option("--dims", callback=_int_list, default="2,8,32,128", show_default=True, metavar="D[,D...]",
              help="Dimensions.")
@click.option("--methods", default=None, metavar="M[,M...]",
              help="Default: all of mmd-{rbf,imq}[-sum|-median|-unbiased], stein, stein-median.")
@click.option("--repeats", type=click.IntRange(min=1), default=5, show_default=True,
              help="Timed runs per entry (median reported) after one warm-up.")
@click.option("--naive-cap", type=click.FloatRange(min=0.0), default=2.0, show_default=True,
              help="GiB: skip the naive broadcast baseline where it would need more.")
@click.option("--no-geomloss", is_flag=True, help="Do not run geomloss even when it is installed.")
@click.option("--no-memory", is_flag=True, help="Skip the peak-memory measurements.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch CPU threads for the whole run (default: torch's choice).")
@click.option("--stat", type=click.Choice(["median", "min"]), default="median", show_default=True,
              help="Statistic of the repeats (min: the fastest run, robust to other jobs preempting ours).")
@click.option("--check", is_flag=True,
              help="Exit with status 1 when any baseline (dense, naive, geomloss) beats ours in some cell.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON on stdout instead of the table(s).")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Also write the results to this JSON file (atomically).")
def regularizers(device, sizes, dims, methods, repeats, naive_cap, no_geomloss, no_memory, threads, stat, check, as_json, out_path):
    """Time forward+backward of MMD (rbf, imq) and the Stein direction.

    Each entry runs ours, a plain dense implementation (matmul-form
    distances, exp, sums; autograd), the naive n x m x d broadcast baseline and
    (rbf MMD, when installed) geomloss's tensorized Gaussian MMD in the same
    process, interleaved, and prints each ratio, the ratio to the fastest
    baseline ("vs best"; --check fails when any is below 1) and a floor: the time of the Gram products, the kernel's exp and the
    gradient's products at the matmul and exp throughputs measured in this
    run. Peak memory is measured after all timings. The machine's load
    matters: compare ratios from one run, not times across runs.

    \b
    Examples:
      infovae bench regularizers --sizes 256,1024 --dims 8,32
      infovae bench regularizers --threads 1 --check   # a fair share of a busy machine
      infovae bench regularizers --sizes 4096 --dims 32 --methods mmd-rbf --out bench.json
      infovae bench regularizers --device cuda --out bench.json
    """
    import torch

    from infovae.bench.regularizers import run, table

    if threads is not None:
        torch.set_num_threads(threads)
    from infovae.bench.regularizers import METHODS, slower_cells

    chosen = METHODS if methods is None else tuple(m.strip() for m in methods.split(",") if m.strip())
    try:
        result = run(
            device=device, sizes=sizes, dims=dims, repeats=repeats, methods=chosen,
            naive_cap_bytes=int(naive_cap * 2**30), use_geomloss=not no_geomloss, measure_memory=not no_memory, stat=stat,
            progress=None if as_json else (lambda msg: click.echo(f"  {msg}", err=True)),
        )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    emit_benchmark(result, as_json, out_path, [table(result)])
    slow = slower_cells(result)
    if check and slow:
        cells = ", ".join(f"{r['method']} n={r['n']} d={r['d']} ({r['best_over_ours']:.2f}x)" for r in slow)
        raise click.ClickException(f"--check: a baseline was faster than ours in {len(slow)} cell(s): {cells}")
