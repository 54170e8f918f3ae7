"""``infovae two-sample A B``: MMD^2 between two sample files and its permutation p-value."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Tuple

import click

from infovae import bandwidth_option

SUFFIXES = (".npy", ".npz", ".csv", ".safetensors")


class SampleFileError(click.ClickException):
    """A sample file that cannot be used (missing, bad key, bad contents)."""


def split_spec(spec: str) -> Tuple[Path, Optional[str]]:
    """'file' or 'file:key' -> (path, key). A path that exists as given wins over a key split."""
    if os.path.exists(spec):
        return Path(spec), None
    path, sep, key = spec.rpartition(":")
    if sep and path and os.path.exists(path):
        if not key:
            raise SampleFileError(f"{spec}: empty key after ':'; write FILE:KEY or just FILE")
        return Path(path), key
    if sep and path:
        raise SampleFileError(f"{spec}: no such file (nor {path}, reading ':{key}' as a key)")
    raise SampleFileError(f"{spec}: no such file")


def _pick(names, key: Optional[str], path: Path, what: str) -> str:
    names = list(names)
    if key is not None:
        if key not in names:
            raise SampleFileError(f"{path}: no {what} named {key!r}; it has {', '.join(map(repr, names)) or 'none'}")
        return key
    if len(names) == 1:
        return names[0]
    if not names:
        raise SampleFileError(f"{path}: holds no {what}s")
    raise SampleFileError(f"{path}: holds {len(names)} {what}s ({', '.join(map(repr, names))}); choose one with {path}:KEY")


def read_array(spec: str):
    """The samples in ``spec`` (FILE or FILE:KEY) as a 2-D torch tensor (rows = samples).

    .npy (one array), .npz (FILE:KEY, or its only array), .csv (comma separated
    numbers, an optional header line), .safetensors (FILE:KEY, or its only
    tensor). Never unpickles. 1-D arrays are one column; trailing dimensions of
    N-D arrays are flattened. Integer and boolean data become float32; float64
    stays float64.
    """
    import numpy as np
    import torch

    path, key = split_spec(spec)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise SampleFileError(f"{path}: unsupported file type {suffix or '(none)'!r}; use one of {', '.join(SUFFIXES)}")
    if key is not None and suffix in (".npy", ".csv"):
        raise SampleFileError(f"{path}: a {suffix} file holds one array; drop ':{key}'")
    try:
        if suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                arr = npz[_pick(npz.files, key, path, "array")]
        elif suffix == ".csv":
            arr = _read_csv(path)
        else:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as fh:
                tensor = fh.get_tensor(_pick(fh.keys(), key, path, "tensor"))
            return _as_samples(tensor, spec)
    except SampleFileError:
        raise
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "Object arrays" in str(exc):
            raise SampleFileError(f"{path}: holds Python objects, which would need unpickling; save a numeric array") from None
        raise SampleFileError(f"{path}: cannot read: {exc}") from None
    except (OSError, EOFError, KeyError) as exc:
        raise SampleFileError(f"{path}: cannot read: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - e.g. safetensors' own header errors
        raise SampleFileError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from None
    if arr.dtype.kind not in "biuf":
        raise SampleFileError(f"{spec}: holds {arr.dtype} data; numbers are needed")
    return _as_samples(torch.from_numpy(np.ascontiguousarray(arr)), spec)


def _read_csv(path: Path):
    import numpy as np

    text = path.read_text()
    if not text.strip():
        raise SampleFileError(f"{path}: the file is empty")
    try:
        return np.loadtxt(path, delimiter=",", ndmin=2, dtype=np.float64)
    except ValueError:
        pass
    try:  # a header line
        return np.loadtxt(path, delimiter=",", ndmin=2, dtype=np.float64, skiprows=1)
    except ValueError as exc:
        raise SampleFileError(f"{path}: not a CSV of numbers (one sample per line, comma separated): {exc}") from None


def _as_samples(t, spec: str):
    import torch

    if t.dim() == 0:
        raise SampleFileError(f"{spec}: holds a scalar; samples need one row each")
    if t.is_complex():
        raise SampleFileError(f"{spec}: holds complex numbers")
    if t.dtype != torch.float64:
        t = t.to(torch.float32)
    t = t.reshape(t.shape[0], -1) if t.dim() > 1 else t.reshape(-1, 1)
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise SampleFileError(f"{spec}: holds no samples (shape {tuple(t.shape)})")
    bad = int((~torch.isfinite(t)).sum())
    if bad:
        raise SampleFileError(f"{spec}: {bad} non-finite value(s) (NaN or infinite); clean the data first")
    return t


@click.command("two-sample", context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("a", metavar="A")
@click.argument("b", metavar="B")
@click.option("--kernel", type=click.Choice(["rbf", "imq"]), default="rbf", show_default=True,
              help="rbf exp(-r/(2 sigma^2)) or imq c/(c+r), r the squared distance.")
@click.option("--bandwidth", default="median", show_default=True, metavar="median|FLOAT[,FLOAT...]",
              help="sigma (rbf) or c (imq); a comma list sums kernels; median: median heuristic on the pooled samples.")
@click.option("--estimator", type=click.Choice(["biased", "unbiased"]), default="biased", show_default=True,
              help="V-statistic (>= 0) or U-statistic.")
@click.option("--permutations", "-p", type=click.IntRange(min=0), default=1000, show_default=True,
              help="Relabellings for the p-value (0: statistic only).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the permutations.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="auto: CUDA when available.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
def two_sample(a, b, kernel, bandwidth, estimator, permutations, seed, device, as_json):
    """MMD^2 between the samples in files A and B, with a permutation p-value.

    A and B hold one sample per row: .npy, .npz (FILE:KEY or its only array),
    .csv (numbers, optional header line) or .safetensors (FILE:KEY or its only
    tensor). Pickled data is never loaded. Both need the same number of
    columns. Computed in float32 (float64 if a file holds float64).

    \b
    Examples:
      infovae two-sample codes.npy prior.npy
      infovae two-sample run.npz:z prior.csv --kernel imq --bandwidth 1,2,4 --json
      infovae two-sample a.safetensors:codes b.safetensors -p 5000 --seed 1
    """
    import torch

    from infovae.functional import mmd, mmd_permutation_test, resolve_bandwidth

    try:
        bw = bandwidth_option(bandwidth)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--bandwidth") from None
    x, y = read_array(a), read_array(b)
    if x.shape[1] != y.shape[1]:
        raise click.ClickException(
            f"the samples differ in dimension: {a} has {x.shape[1]} column(s), {b} has {y.shape[1]}"
        )
    need = 2 if estimator == "unbiased" else 1
    for spec, t in ((a, x), (b, y)):
        if t.shape[0] < need:
            raise click.ClickException(f"{spec}: the {estimator} estimator needs at least {need} samples, got {t.shape[0]}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device == "cuda" and not torch.cuda.is_available():
        raise click.ClickException("--device cuda but CUDA is not available")
    x, y = x.to(device), y.to(device)
    scales = resolve_bandwidth(x, y, kernel, bw)
    if permutations:
        gen = torch.Generator(device=device).manual_seed(seed)
        res = mmd_permutation_test(x, y, kernel, scales, estimator, n_permutations=permutations, generator=gen)
        stat, p_value = float(res.statistic), float(res.p_value)
    else:
        with torch.no_grad():
            stat, p_value = float(mmd(x, y, kernel, scales, estimator)), None
    out = {
        "a": a, "b": b, "n": x.shape[0], "m": y.shape[0], "dim": x.shape[1],
        "dtype": str(torch.promote_types(x.dtype, y.dtype)).replace("torch.", ""),
        "kernel": kernel, "bandwidth": list(scales), "bandwidth_rule": "median" if bw == "median" else "given",
        "estimator": estimator, "mmd2": stat, "p_value": p_value, "permutations": permutations,
        "seed": seed, "device": device,
    }
    if as_json:
        from .common import echo_json

        echo_json(out)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="MMD two-sample test", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("A", f"{a}  ({out['n']} x {out['dim']})")
    table.add_row("B", f"{b}  ({out['m']} x {out['dim']})")
    name = "sigma" if kernel == "rbf" else "c"
    table.add_row("kernel", f"{kernel}, {name} = {', '.join(f'{s:.4g}' for s in scales)} ({out['bandwidth_rule']})")
    table.add_row("estimator", f"{estimator} ({out['dtype']})")
    table.add_row("MMD^2", f"{stat:.6g}")
    if p_value is None:
        table.add_row("p-value", "not computed (--permutations 0)")
    else:
        table.add_row("p-value", f"{p_value:.4g}  ({permutations} permutations, seed {seed})")
    Console().print(table)
