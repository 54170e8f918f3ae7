"""``infovae sample``: draw samples from a trained run with any sampler plugin."""
from __future__ import annotations

from pathlib import Path

import click

from .common import echo_json, friendly_errors


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("run", type=click.Path(file_okay=False, path_type=Path))
@click.option("--sampler", "-s", default="ancestral", show_default=True, help="Sampler plugin.")
@click.option("--option", "-o", "options", multiple=True, metavar="SAMPLER.KEY=VALUE", help="Sampler option, e.g. -o markov-chain.steps=20 (repeatable).")
@click.option("--n", "-n", "n", type=click.IntRange(1), default=64, show_default=True, help="Number of samples (chains, pairs).")
@click.option("--fast/--no-fast", default=None, help="Samplers with a 'fast' option (autoregressive decoders): cached fast sampling or the naive loop.")
@click.option("--split", default="test", show_default=True, help="Data split that data-driven samplers start from.")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--out", "-O", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Output: .png grid (default RUN/samples/<sampler>.png), or .npy / .safetensors with the uint8 samples.")
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON.")
@friendly_errors
def sample(run, sampler, options, n, fast, split, seed, device, out, as_json):
    """Draw samples from a trained run.

    \b
    Examples:
      infovae sample runs/default
      infovae sample runs/default --sampler markov-chain -o markov-chain.steps=20 -o markov-chain.return_chain=true -n 8
      infovae sample runs/default --sampler reconstruct -n 16 --out recon.png
      infovae sample runs/pixelcnn --no-fast --out slow.png
      infovae sample runs/default -n 1000 --out samples.npy     # for 'infovae two-sample'
    """
    import torch

    import infovae
    from infovae.api import load_run
    from infovae.build import create_dataset
    from infovae.images import save_grid

    from infovae.options import split_targeted

    reg = infovae.registry()
    info = reg.info("samplers", sampler)
    opts = split_targeted(options, [sampler], "sample", f"-o {sampler}.KEY=VALUE",
                          add_hint="Choose that sampler with --sampler {target}.").get(sampler, {})
    if fast is not None:
        if "fast" not in {o.name for o in info.options}:
            raise click.BadParameter(f"sampler {sampler!r} has no 'fast' option", param_hint="--fast/--no-fast")
        opts["fast"] = "yes" if fast else "no"
    sampler_fn = reg.create("samplers", sampler, opts)
    if not callable(sampler_fn):
        from infovae.registry import describe_plugin

        raise infovae.PluginBuildError(f"{describe_plugin(info)}: its factory returned {type(sampler_fn).__name__}, expected a callable sampler(model, n, generator, data)")
    spec, model, _ = load_run(run, device=device, reg=reg, with_objective=False)
    data = None
    if getattr(sampler_fn, "needs_data", False):
        ds = create_dataset(reg, spec.dataset)
        if split not in ds.splits:
            raise click.BadParameter(f"data set has no split {split!r}; it has {', '.join(ds.splits)}", param_hint="--split")
        data = infovae.to_model(ds.split(split)[:n], spec.data).to(model.device)
    gen = torch.Generator(device=model.device).manual_seed(seed)
    from infovae.progress import report_progress_to

    from .progress import task_progress

    try:
        with task_progress(f"sampling ({sampler})", enabled=not as_json) as on_progress, report_progress_to(on_progress):
            x = sampler_fn(model, n, generator=gen, data=data)
    except ValueError as exc:
        raise click.ClickException(f"sampler {sampler!r}: {exc}") from None
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or tuple(x.shape[1:]) != tuple(spec.data.shape):
        from infovae.registry import describe_plugin

        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise infovae.PluginBuildError(f"{describe_plugin(info)} returned {got}; a sampler returns (n, {', '.join(map(str, spec.data.shape))}) model values")
    images = infovae.from_model(x, spec.data).cpu()
    out = out or Path(run) / "samples" / f"{sampler}.png"
    suffix = out.suffix.lower()
    if suffix == ".png":
        save_grid(images, out, nrow=getattr(sampler_fn, "grid_columns", None), root=run)
    elif suffix == ".npy":
        import io

        import numpy as np

        from infovae.io import atomic_write_bytes

        buf = io.BytesIO()
        np.save(buf, images.numpy(), allow_pickle=False)
        atomic_write_bytes(out, buf.getvalue(), root=run)
    elif suffix == ".safetensors":
        from infovae.io import atomic_save_safetensors

        atomic_save_safetensors(out, {"samples": images}, root=run)
    else:
        raise click.BadParameter(f"{out}: use a .png, .npy or .safetensors file name", param_hint="--out")
    result = {"out": str(out), "sampler": sampler, "shape": list(images.shape)}
    if as_json:
        echo_json(result)
    else:
        click.echo(f"wrote {images.shape[0]} images {tuple(images.shape[1:])} to {out}")
