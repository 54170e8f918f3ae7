"""``infovae plot``: the paper's Figure 1 for a run (samples and training curves)."""
from __future__ import annotations

from pathlib import Path

import click

from .common import echo_json, friendly_errors

# The paper's Figure 1 pairs ancestral samples with the Markov chain of Proposition 1.
DEFAULT_SAMPLERS = ("ancestral", "markov-chain")


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("run", type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", "-O", type=click.Path(dir_okay=False, path_type=Path), default=None, help="PNG to write (default RUN/figure.png).")
@click.option("--samples/--no-samples", default=True, show_default=True, help="Include sample grids (needs the model).")
@click.option("--sampler", "-s", "samplers", multiple=True, metavar="NAME", help="Sampler plugin of a grid (repeatable). Default: ancestral and markov-chain, the paper's Figure 1.")
@click.option("--option", "-o", "options", multiple=True, metavar="SAMPLER.KEY=VALUE", help="Sampler option, e.g. -o markov-chain.steps=20 (repeatable).")
@click.option("--n", "n", type=click.IntRange(1), default=64, show_default=True, help="Samples per grid.")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True)
@friendly_errors
def plot(run, out, samples, samplers, options, n, seed, device, as_json):
    """Draw a run's Figure 1: ancestral and Markov-chain samples, loss terms,
    mutual information and NLL per epoch (train with --track mutual-information,nll).

    \b
    Examples:
      infovae plot runs/default
      infovae plot runs/mmd --out mmd.png --no-samples
      infovae plot runs/ae -s markov-chain -o markov-chain.steps=50
    """
    from infovae.io import atomic_write_bytes
    from infovae.plotting import figure_one, png_bytes
    from infovae.runs import load_spec, read_metrics

    samplers = list(dict.fromkeys(samplers or DEFAULT_SAMPLERS))
    if samples:
        import infovae
        from infovae.options import split_targeted

        reg = infovae.registry()
        for name in samplers:
            reg.info("samplers", name)
        sampler_opts = split_targeted(options, samplers, "plot", "-o markov-chain.steps=20",
                                      add_hint="Add it with --sampler {target}.")
        built = {name: reg.create("samplers", name, sampler_opts.get(name, {})) for name in samplers}
        data_driven = [name for name, fn in built.items() if getattr(fn, "needs_data", False)]
        if data_driven:
            raise click.BadParameter(f"sampler(s) {', '.join(data_driven)} start from data; plot draws from the model alone "
                                     f"(use 'infovae sample' for them)", param_hint="--sampler")
    spec = load_spec(run)
    records = [r for r in read_metrics(run) if "epoch" in r]
    if not records:
        raise click.ClickException(f"{run} has no metrics yet; train it first")
    images = []
    if samples:
        import torch

        from infovae.api import load_run
        from infovae.images import grid_array

        _, model, _ = load_run(run, device=device, reg=reg, with_objective=False)
        for name, fn in built.items():
            g = torch.Generator(device=model.device).manual_seed(seed)
            x = fn(model, n, generator=g)
            cols = getattr(fn, "grid_columns", None) or 8
            images.append((f"{name} samples", grid_array(infovae.from_model(x, spec.data).cpu(), nrow=cols)))
    fig = figure_one(records, images)
    out = out or Path(run) / "figure.png"
    atomic_write_bytes(out, png_bytes(fig), root=run)
    size = [int(round(v)) for v in fig.get_size_inches() * fig.dpi]
    if as_json:
        echo_json({"out": str(out), "size": size, "samplers": [name for name, _ in built.items()] if samples else []})
    else:
        click.echo(f"wrote {out} ({size[0]}x{size[1]})")
