"""Scaling figures: 1 vs 2 processes on CPU (gloo), and the cost of the global-batch gather.

    python benchmarks/distributed.py --steps 600 --repeats 3

1. Training: ``infovae train`` (digits, mlp / bernoulli-mlp, mmd=100, z = 8,
   global batch 64 and 256) as one process and as ``torchrun --standalone
   --nproc-per-node 2`` (gloo, one thread per process), alternating; reports the
   median loop time per step and examples/s (from the run's summary).
2. Gather: under torchrun (2 ranks, gloo) the time of one divergence forward +
   backward on the global batch -- all-gather of the codes with gradient, MMD or
   Stein on all B codes, backward through the gather -- against the same
   divergence on B codes in one process (no gather). The difference is what the
   global batch costs on this transport.

On GPUs (not measured here: no GPU in the session) the same training figure is
``torchrun --standalone --nproc-per-node 8 --no-python infovae train --device cuda
-b 512 --steps 2000 --json`` against ``infovae train --device cuda -b 512 --steps 2000 --json``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def train(nproc: int, batch: int, steps: int, out: Path) -> dict:
    args = ["train", "--device", "cpu", "-b", str(batch), "--steps", str(steps), "--log-every", str(steps // 4),
            "--out", str(out), "--overwrite", "--json", "-q"]
    if nproc == 1:
        cmd = [str(BIN / "infovae"), *args]
    else:
        cmd = [str(BIN / "torchrun"), "--standalone", "--nproc-per-node", str(nproc), "--no-python", str(BIN / "infovae"), *args]
    res = subprocess.run(cmd, capture_output=True, text=True, env=_env())
    if res.returncode:
        raise SystemExit(res.stderr[-3000:])
    s = json.loads(res.stdout[res.stdout.index("{"):])
    return {"examples_per_second": s["examples_per_second"], "ms_per_step": 1000 * batch / s["examples_per_second"]}


def gather_worker(batch: int, dim: int, repeats: int) -> None:
    """Run under torchrun: times divergence forward+backward with and without the gather."""
    import torch
    import torch.distributed as dist

    import infovae
    from infovae.distributed import GlobalBatch, init

    torch.set_num_threads(1)
    ctx = init("cpu")
    gb = GlobalBatch(ctx)
    reg = infovae.registry()
    prior = infovae.StandardNormalPrior(dim)
    out = {}
    for name in ("mmd", "stein"):
        div = reg.create("divergences", name, {})
        torch.manual_seed(0)
        z_local = torch.randn(batch // ctx.world, dim, requires_grad=True)
        z_full = torch.randn(batch, dim, requires_grad=True)

        def global_step():
            div(gb.gather(z_local), None, prior).backward()

        def gather_only():
            gb.gather(z_local).sum().backward()

        def single_step():
            div(z_full, None, prior).backward()

        times = {}
        for label, fn in (("global", global_step), ("gather_only", gather_only), ("single_process", single_step)):
            for _ in range(5):
                fn()
            samples = []
            for _ in range(repeats):
                dist.barrier()
                t0 = time.perf_counter()
                for _ in range(20):
                    fn()
                samples.append((time.perf_counter() - t0) / 20 * 1000)
            times[label + "_ms"] = statistics.median(samples)
        out[name] = times
    if ctx.rank == 0:
        print(json.dumps(out))
    ctx.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dim", type=int, default=8)
    ap.add_argument("--gather-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=256, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.gather_worker:
        return gather_worker(args.batch, args.dim, args.repeats)
    result = {"training": {}, "gather": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for batch in (64, 256):
            runs = {1: [], 2: []}
            for _ in range(args.repeats):
                for nproc in (1, 2):
                    runs[nproc].append(train(nproc, batch, args.steps, Path(tmp) / f"run{nproc}"))
            med = {n: {k: statistics.median(r[k] for r in v) for k in ("examples_per_second", "ms_per_step")} for n, v in runs.items()}
            result["training"][f"batch {batch}"] = {"1 process": med[1], "2 processes": med[2],
                                                     "speedup": med[2]["examples_per_second"] / med[1]["examples_per_second"]}
    for batch in (64, 256, 1024):
        cmd = [str(BIN / "torchrun"), "--standalone", "--nproc-per-node", "2", __file__, "--gather-worker",
               "--batch", str(batch), "--dim", str(args.dim), "--repeats", str(args.repeats)]
        res = subprocess.run(cmd, capture_output=True, text=True, env=_env())
        if res.returncode:
            raise SystemExit(res.stderr[-3000:])
        result["gather"][f"B={batch}, D={args.dim}"] = json.loads(res.stdout.strip().splitlines()[-1])
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
