"""Speed of the autoregressive decoders: training throughput and naive vs fast sampling.

Cases (default): ``pixelcnn`` on binary 28x28 and 32x32 images, ``pixelcnnpp`` on
gray 28x28 and RGB 32x32 images, each built from the registry with its default
options (``preset`` picks the PixelCNN++ configuration: "small" or "paper").

- Training: images/s of one optimizer step (forward, backward, Adam) on random data
  and codes, for each mode that runs: ``eager`` (float32), ``bf16`` (autocast
  bfloat16; the likelihood stays float32) and ``compile`` (``torch.compile`` of the
  loss, float32; its compile time is reported separately). Ratios are against
  ``eager`` measured in the same run.
- Sampling: seconds to draw a batch (16 by default) with the naive loop (one full
  network pass per pixel) and with the fast cached sampler, from the same seed;
  the speed-up and whether the samples are identical. ``naive_rows`` limits the
  naive loop to the first rows (every naive step costs the same full pass, so its
  time is scaled up to the whole image and marked as extrapolated; the comparison
  of samples then covers those rows).

Times are wall-clock with CUDA synchronised; on a machine shared with other work
compare ratios within one run, not times across runs.
"""
from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

import infovae
from infovae import DataSpec

MODES = ("eager", "bf16", "compile")
DECODERS = ("pixelcnn", "pixelcnnpp")
KINDS = {("pixelcnn", 28): "binary", ("pixelcnn", 32): "binary", ("pixelcnnpp", 28): "gray8", ("pixelcnnpp", 32): "rgb8"}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def case_spec(decoder: str, size: int) -> DataSpec:
    """The data of a case: pixelcnn binary; pixelcnnpp gray8 at 28 and rgb8 otherwise."""
    kind = KINDS.get((decoder, size), "binary" if decoder == "pixelcnn" else "rgb8")
    return DataSpec(kind, (3 if kind == "rgb8" else 1, size, size))


def random_data(spec: DataSpec, n: int, device: torch.device, generator: torch.Generator) -> torch.Tensor:
    """(n, C, H, W) model values of the spec's kind, uniformly random."""
    levels = spec.num_levels
    v = torch.randint(0, levels, (n, *spec.shape), generator=generator).to(torch.uint8)
    return infovae.to_model(v, spec).to(device)


def build(decoder: str, spec: DataSpec, latent_dim: int, preset: str, device: torch.device, seed: int):
    options = {"preset": preset} if decoder == "pixelcnnpp" else {}
    torch.manual_seed(seed)
    return infovae.registry().create("decoders", decoder, options, spec, latent_dim).to(device)


def _train_steps(dec, x: torch.Tensor, z: torch.Tensor, mode: str) -> Tuple[Callable[[], None], Optional[float]]:
    """A callable doing one optimizer step in ``mode``; and the compile time (s) for "compile"."""
    opt = torch.optim.Adam(dec.parameters(), lr=1e-4)
    dims = float(x[0].numel())
    device_type = x.device.type

    def loss_fn(xx, zz):
        return -dec.log_prob(xx, zz).mean() / dims

    compiled_s = None
    if mode == "compile":
        loss_fn = torch.compile(loss_fn)

    def step():
        opt.zero_grad(set_to_none=True)
        if mode == "bf16":
            with torch.autocast(device_type=device_type, dtype=torch.bfloat16):
                loss = loss_fn(x, z)
        else:
            loss = loss_fn(x, z)
        loss.backward()
        opt.step()

    if mode == "compile":
        t0 = time.perf_counter()
        step()  # compiles forward and backward
        _sync(x.device)
        compiled_s = time.perf_counter() - t0
    return step, compiled_s


def bench_training(decoder: str, spec: DataSpec, device: torch.device, modes: Sequence[str], batch_size: int,
                   steps: int, warmup: int, latent_dim: int, preset: str, seed: int) -> List[Dict[str, Any]]:
    rows: List[Dict[str, Any]] = []
    g = torch.Generator().manual_seed(seed)
    x = random_data(spec, batch_size, device, g)
    z = torch.randn(batch_size, latent_dim, generator=g).to(device)
    eager = None
    for mode in modes:
        row: Dict[str, Any] = {"decoder": decoder, "data": f"{spec.kind} {spec.shape[1]}x{spec.shape[2]}", "mode": mode,
                               "batch_size": batch_size}
        try:
            dec = build(decoder, spec, latent_dim, preset, device, seed).train()
            step, compile_s = _train_steps(dec, x, z, mode)
            for _ in range(warmup):
                step()
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(steps):
                step()
            _sync(device)
            seconds = (time.perf_counter() - t0) / steps
            row.update(status="ok", step_s=seconds, images_per_s=batch_size / seconds, compile_s=compile_s)
            if mode == "eager":
                eager = row["images_per_s"]
            row["vs_eager"] = None if eager is None else row["images_per_s"] / eager
        except Exception as exc:  # noqa: BLE001 - a mode that does not run here is reported, not fatal
            row.update(status=f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}",
                       images_per_s=None, vs_eager=None)
        rows.append(row)
    return rows


def bench_sampling(decoder: str, spec: DataSpec, device: torch.device, batch: int, latent_dim: int, preset: str,
                   seed: int, naive_rows: Optional[int], rounds: int = 1) -> Dict[str, Any]:
    """Naive vs fast sampling, ``rounds`` times alternated (fast first in even rounds, naive first in odd
    ones), medians of wall and of process CPU seconds (CPU time is less affected by other jobs on a
    shared machine; on CUDA it is not meaningful and wall time is the figure)."""
    dec = build(decoder, spec, latent_dim, preset, device, seed).eval()
    z = torch.randn(batch, latent_dim, generator=torch.Generator().manual_seed(seed)).to(device)
    _, h, _ = spec.shape
    rows = h if naive_rows is None else max(1, min(naive_rows, h))

    def draw(fast: bool, nrows: Optional[int]):
        g = torch.Generator(device=device).manual_seed(seed)
        _sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        x = dec.sample(z, generator=g, fast=fast, rows=nrows)
        _sync(device)
        return x, time.perf_counter() - t0, time.process_time() - c0

    wall: Dict[bool, List[float]] = {True: [], False: []}
    cpu: Dict[bool, List[float]] = {True: [], False: []}
    for r in range(rounds):
        for fast in ((True, False) if r % 2 == 0 else (False, True)):
            x, w, c = draw(fast, None if fast or rows == h else rows)
            wall[fast].append(w if fast else w * h / rows)
            cpu[fast].append(c if fast else c * h / rows)
            if fast:
                fast_x = x
            else:
                naive_x = x
    naive_total, fast_s = statistics.median(wall[False]), statistics.median(wall[True])
    naive_cpu, fast_cpu = statistics.median(cpu[False]), statistics.median(cpu[True])
    same = (naive_x[:, :, :rows] == fast_x[:, :, :rows]).flatten(1)
    return {
        "decoder": decoder,
        "data": f"{spec.kind} {spec.shape[1]}x{spec.shape[2]}",
        "batch": batch,
        "dtype": str(next(dec.parameters()).dtype).replace("torch.", ""),
        "rounds": rounds,
        "naive_s": naive_total,
        "naive_extrapolated_from_rows": None if rows == h else rows,
        "fast_s": fast_s,
        "speedup": naive_total / fast_s,
        "naive_cpu_s": naive_cpu,
        "fast_cpu_s": fast_cpu,
        "speedup_cpu": naive_cpu / fast_cpu,
        "wall_s_per_round": {"naive": wall[False], "fast": wall[True]},
        "cpu_s_per_round": {"naive": cpu[False], "fast": cpu[True]},  # process CPU seconds (naive scaled too)
        "identical": bool(same.all()),
        "images_identical": float(same.all(1).float().mean()),
        "subpixels_identical": float(same.float().mean()),
        "compared_rows": rows,
    }


def run(device: str = "cpu", decoders: Sequence[str] = DECODERS, sizes: Sequence[int] = (28, 32), modes: Sequence[str] = MODES,
        batch_size: int = 32, steps: int = 5, warmup: int = 2, sample_batch: int = 16, naive_rows: Optional[int] = None,
        latent_dim: int = 8, preset: str = "small", seed: int = 0, training: bool = True, sampling: bool = True,
        rounds: int = 1, progress: Optional[Callable[[str], None]] = None) -> Dict[str, Any]:
    """All cases; returns a JSON-able dict with ``training`` and ``sampling`` rows (see the module docstring)."""
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for, but torch sees no CUDA device")
    for d in decoders:
        if d not in DECODERS:
            raise ValueError(f"unknown decoder {d!r}; choose from {', '.join(DECODERS)}")
    for m in modes:
        if m not in MODES:
            raise ValueError(f"unknown mode {m!r}; choose from {', '.join(MODES)}")
    say = progress or (lambda msg: None)
    result: Dict[str, Any] = {
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu ({platform.processor() or platform.machine()})",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
        "preset": preset,
        "latent_dim": latent_dim,
        "training": [],
        "sampling": [],
    }
    for decoder in decoders:
        for size in sizes:
            spec = case_spec(decoder, size)
            if training:
                say(f"training {decoder} {spec.kind} {size}x{size}: {', '.join(modes)}")
                result["training"] += bench_training(decoder, spec, dev, modes, batch_size, steps, warmup, latent_dim, preset, seed)
            if sampling:
                say(f"sampling {decoder} {spec.kind} {size}x{size}: naive and fast, batch {sample_batch}")
                result["sampling"].append(bench_sampling(decoder, spec, dev, sample_batch, latent_dim, preset, seed, naive_rows,
                                                         rounds))
    return result


def _f(v: Optional[float], fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def tables(result: Dict[str, Any]) -> list:
    """rich Tables of a result (training, sampling)."""
    from rich.table import Table

    title = f"on {result['device']} ({result['threads']} threads, torch {result['torch']}, pixelcnnpp preset {result['preset']})"
    out = []
    if result["training"]:
        t = Table(title=f"decoder training step (forward + backward + Adam) {title}")
        for col in ("decoder", "data", "mode", "batch", "images/s", "vs eager", "compile s", "status"):
            t.add_column(col, justify="right" if col in ("batch", "images/s", "vs eager", "compile s") else "left")
        for r in result["training"]:
            t.add_row(r["decoder"], r["data"], r["mode"], str(r["batch_size"]), _f(r.get("images_per_s"), ".1f"),
                      _f(r.get("vs_eager"), ".2f"), _f(r.get("compile_s"), ".1f"), r["status"])
        out.append(t)
    if result["sampling"]:
        t = Table(title=f"sampling, naive loop vs fast cached sampler {title}")
        for col in ("decoder", "data", "batch", "naive s", "fast s", "speed-up", "speed-up (CPU s)", "identical"):
            t.add_column(col, justify="left" if col in ("decoder", "data", "identical") else "right")
        for r in result["sampling"]:
            naive = _f(r["naive_s"], ".2f") + ("*" if r["naive_extrapolated_from_rows"] else "")
            ident = "yes" if r["identical"] else f"no ({100 * r['images_identical']:.0f}% of images)"
            if r["naive_extrapolated_from_rows"]:
                ident += f" (first {r['compared_rows']} rows)"
            t.add_row(r["decoder"], r["data"], str(r["batch"]), naive, _f(r["fast_s"], ".2f"), _f(r["speedup"], ".1f") + "x",
                      _f(r.get("speedup_cpu"), ".1f") + "x", ident)
        if any(r["naive_extrapolated_from_rows"] for r in result["sampling"]):
            t.caption = "* naive time measured on the first rows and scaled to the whole image"
        out.append(t)
    return out
