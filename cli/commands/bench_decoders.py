"""``infovae bench decoders``: PixelCNN / PixelCNN++ training throughput and naive vs fast sampling."""
from __future__ import annotations

import click

from .common import emit_benchmark


def _list(kind):
    def parse(ctx, param, value):
        if value is None:
            return None
        items = tuple(v.strip() for v in value.split(",") if v.strip())
        try:
            out = tuple(kind(v) for v in items)
        except ValueError:
            raise click.BadParameter(f"expected a comma-separated list, got {value!r}") from None
        if not out:
            raise click.BadParameter("empty list")
        return out

    return parse


@click.command("decoders", context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--decoders", "decoders", callback=_list(str), default="pixelcnn,pixelcnnpp", show_default=True,
              metavar="NAME[,NAME]", help="Decoders to time.")
@click.option("--sizes", callback=_list(int), default="28,32", show_default=True, metavar="N[,N]",
              help="Image sizes (pixelcnn: binary; pixelcnnpp: gray8 at 28, rgb8 at 32 and other sizes).")
@click.option("--modes", callback=_list(str), default="eager,bf16,compile", show_default=True, metavar="M[,M]",
              help="Training modes: eager (float32), bf16 (autocast), compile (torch.compile).")
@click.option("--preset", type=click.Choice(["small", "paper"]), default="small", show_default=True,
              help="PixelCNN++ configuration (paper = 5 blocks, 160 filters, 10 logistics).")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True, help="Training batch.")
@click.option("--steps", type=click.IntRange(min=1), default=5, show_default=True, help="Timed training steps.")
@click.option("--warmup", type=click.IntRange(min=0), default=2, show_default=True, help="Untimed training steps first.")
@click.option("--sample-batch", type=click.IntRange(min=1), default=16, show_default=True, help="Images per sampling run.")
@click.option("--naive-rows", type=click.IntRange(min=1), default=None,
              help="Run the naive sampler on this many rows only and scale its time (default: whole image).")
@click.option("--rounds", type=click.IntRange(min=1), default=None,
              help="Alternated repeats, medians reported: naive and fast sampling (default 1), ours and the "
                   "port with --peer-path (default 5).")
@click.option("--latent-dim", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch CPU threads (default: torch's choice).")
@click.option("--no-training", is_flag=True, help="Skip the training throughput.")
@click.option("--no-sampling", is_flag=True, help="Skip the sampling comparison.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--peer-path", type=click.Path(file_okay=False), default=None,
              help="A checkout of pclucas14/pixel-cnn-pp: compare PixelCNN++ training with it instead "
                   "(rgb8 32x32, --batch-size, --preset or the small configuration with dropout 0.5); ours "
                   "runs twice, with element dropout (the authors') and channel dropout (the port's Dropout2d).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON on stdout instead of the table(s).")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Also write the results to this JSON file (atomically).")
def decoders(device, decoders, sizes, modes, preset, batch_size, steps, warmup, sample_batch, naive_rows, latent_dim,
             threads, no_training, no_sampling, seed, peer_path, as_json, out_path, rounds):
    """Time the autoregressive decoders: training images/s and sampling time.

    Training: one Adam step on random data, eager vs bf16 autocast vs
    torch.compile (modes that fail on this machine are reported as such),
    ratios against eager from the same run. Sampling: a batch drawn with the
    naive loop (one network pass per pixel) and with the fast cached sampler
    from the same seed, the speed-up, and whether the samples are identical.
    On a shared machine compare ratios from one run, not times across runs.

    \b
    Examples:
      infovae bench decoders
      infovae bench decoders --decoders pixelcnnpp --sizes 32 --no-training --json --out sampling.json
      infovae bench decoders --sizes 28 --modes eager,bf16 --naive-rows 4
      infovae bench decoders --device cuda --preset paper --batch-size 64 --out gpu.json
      infovae bench decoders --peer-path /tmp/pixelcnnpp-port --batch-size 16 --modes eager --threads 1
    """
    import torch

    from infovae.bench.decoders import run, tables

    if threads:
        torch.set_num_threads(threads)
    if peer_path is not None:
        from infovae.bench.pixelcnnpp_peer import run as run_peer, table as peer_table

        nr_resnet, nr_filters, nr_mix = (5, 160, 10) if preset == "paper" else (1, 32, 5)
        try:
            result = run_peer(peer_path, batch_size=batch_size, nr_resnet=nr_resnet, nr_filters=nr_filters, nr_mix=nr_mix,
                              steps=steps, warmup=warmup, compile_="compile" in modes, rounds=rounds or 5,
                              progress=None if as_json else (lambda msg: click.echo(f"  {msg}", err=True)))
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
        emit_benchmark(result, as_json, out_path, [peer_table(result)])
        return
    try:
        result = run(
            device=device, decoders=decoders, sizes=sizes, modes=modes, batch_size=batch_size, steps=steps,
            warmup=warmup, sample_batch=sample_batch, naive_rows=naive_rows, latent_dim=latent_dim, preset=preset,
            seed=seed, training=not no_training, sampling=not no_sampling, rounds=rounds or 1,
            progress=None if as_json else (lambda msg: click.echo(f"  {msg}", err=True)),
        )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    emit_benchmark(result, as_json, out_path, tables(result))
