"""``infovae data``: data set utilities (``convert`` to memory-mapped shards)."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import click

from infovae.options import split_targeted

from .common import friendly_errors


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def data():
    """Data set utilities."""


@data.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("source")
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--option", "-o", "options", multiple=True, metavar="dataset.KEY=VALUE", help="Option of the SOURCE data set plugin, e.g. -o dataset.path=... (repeatable).")
@click.option("--shard-mib", type=click.IntRange(1), default=1024, show_default=True, help="Largest shard file, in MiB.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@friendly_errors
def convert(source, out, options, shard_mib, quiet):
    """Write any registered data set as memory-mapped .npy shards for the 'array' data set.

    \b
    OUT becomes a directory with manifest.json, <split>-NNNNN.npy shards (uint8 N x C x H x W)
    and <split>-labels.npy where the source has labels. It is written next to OUT and renamed
    into place when complete; an existing OUT is never touched.

    \b
    Examples:
      infovae data convert binarized-mnist data/bmnist -o dataset.path=data/binarized_mnist.npz
      infovae data convert cifar10 data/cifar -o dataset.path=data/cifar-10-batches-bin
      infovae train -d array -o dataset.path=data/bmnist -e conv -p pixelcnn
    """
    import numpy as np

    import infovae
    from infovae.build import create_dataset, resolve_choice
    from infovae.loading import rows

    if out.exists():
        raise click.ClickException(f"{out} already exists; choose a new OUT (convert never overwrites)")
    if not out.parent.is_dir():
        raise click.ClickException(f"the folder {out.parent} does not exist; create it first")
    reg = infovae.registry()
    opts = split_targeted(options, ["dataset"], "data convert", "-o dataset.path=data/binarized_mnist.npz")
    choice = resolve_choice(reg, "datasets", source, opts.get("dataset", {}))
    ds = create_dataset(reg, choice)
    spec = ds.spec
    row_bytes = int(np.prod(spec.shape))
    per_shard = max(1, (shard_mib << 20) // row_bytes)
    splits = {name: ds.split(name) for name in ds.splits}
    total = sum(int(x.shape[0]) for x in splits.values())
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    manifest = {"format": "infovae-array", "version": 1, "kind": spec.kind, "shape": list(spec.shape), "source": {"name": choice.name, "options": choice.options}, "splits": {}}
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    try:
        with Progress(TextColumn("[bold]convert"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), disable=quiet,
                      console=None, transient=False) as prog:
            task = prog.add_task("", total=total)
            for name, x in splits.items():
                n = int(x.shape[0])
                shards = []
                for k, lo in enumerate(range(0, max(n, 1), per_shard)):
                    hi = min(n, lo + per_shard)
                    fname = f"{name}-{k:05d}.npy"
                    mm = np.lib.format.open_memmap(tmp / fname, mode="w+", dtype=np.uint8, shape=(hi - lo, *spec.shape))
                    for a in range(lo, hi, 4096):
                        b = min(hi, a + 4096)
                        mm[a - lo:b - lo] = rows(x, a, b).cpu().numpy()
                        prog.advance(task, b - a)
                    mm.flush()
                    del mm
                    shards.append(fname)
                info = {"shards": shards, "count": n}
                labels = ds.labels(name)
                if labels is not None:
                    np.save(tmp / f"{name}-labels.npy", np.asarray(labels.cpu().numpy() if hasattr(labels, "cpu") else labels, dtype=np.int64), allow_pickle=False)
                    info["labels"] = f"{name}-labels.npy"
                manifest["splits"][name] = info
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        for f in tmp.iterdir():
            os.chmod(f, 0o666 & ~umask)
        os.rename(tmp, out)
    except BaseException:
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()
        raise
    click.echo(f"wrote {total} examples ({spec.kind} {spec.shape}) in {sum(len(i['shards']) for i in manifest['splits'].values())} shard(s) -> {out}")
