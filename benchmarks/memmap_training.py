"""Training from a memory-mapped file larger than memory budgets vs. from an in-memory tensor.

    python benchmarks/memmap_training.py --data ../shared/data/binarized_mnist.npz --gib 2.05 --steps 400 --repeats 3

Builds a uint8 (N, 1, 28, 28) .npy of at least ``--gib`` GiB by tiling the
binarized MNIST training images (in a scratch directory, deleted at the end),
then trains the default model (mlp encoder, bernoulli-mlp decoder, mmd=100,
z = 8, batch 64, CPU) for ``--steps`` steps, alternating:

- baseline: the binarized-mnist data set (50k images, an in-memory tensor, the fast path);
- ours: the ``array`` data set on the big file (memory-mapped, read through the DataLoader path).

CPU: each trial also reports the CPU time per step of the whole process and its
children (a DataLoader worker process included), which a loaded machine inflates far
less than wall time.

Memory: each trial is a fresh process training ``--steps`` steps that reports its
resident memory: RSS after imports (before the data set is opened) and the peak RSS
(VmHWM) at the end; "added" = peak - after-imports.

Throughput: the machine is shared, so whole-run examples/s of separate processes
swing by 2x with the load. Instead one process holds both trainers and alternates
them step by step (each step = fetching its batch + the optimisation step), for
``--steps`` steps after a warm-up; the ratio of the median step times is the figure.
Prints medians and ratios as JSON, with the load average before and after.

``--baseline-tree DIR`` also runs every memmap trial with the infovae package found in
DIR (e.g. ``git archive`` of an earlier commit, with ``plugins`` copied to
``infovae/plugins``), interleaved with the current code, for before/after figures.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

TRIAL = r"""
import json, sys, time
def status(key):
    for line in open('/proc/self/status'):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
import torch
torch.set_num_threads(1)
import infovae
from infovae.api import start_training
from infovae.build import make_run_spec
from infovae.runs import TrainerConfig
dataset, options, steps, out = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
rss0 = status('VmRSS:')
cfg = TrainerConfig(batch_size=64, steps=steps, seed=0, log_every=10**9, checkpoint_every=0, device='cpu', valid=False)
spec, ds = make_run_spec(dataset=dataset, dataset_options=options, latent_dim=8, encoder='mlp', encoder_options={},
                         decoder='bernoulli-mlp', decoder_options={}, divergences=[('mmd', 100.0, {})], trainer=cfg)
tr = start_training(out, spec, ds, overwrite=True)
import os, gc
c0, t0 = os.times(), time.perf_counter()
s = tr.fit()
gc.collect()  # the batch source is closed: a DataLoader worker process has exited and been waited for
loop, c1 = time.perf_counter() - t0, os.times()
cpu = sum(getattr(c1, k) - getattr(c0, k) for k in ("user", "system", "children_user", "children_system"))
print(json.dumps({"examples_per_second": steps * 64 / loop, "cpu_ms_per_step": cpu / steps * 1000, "rss_after_imports_mib": rss0,
                  "peak_rss_mib": status('VmHWM:'), "in_memory": torch.is_tensor(tr.x_train)}))
"""

INTERLEAVED = r"""
import json, statistics, sys, time
import torch
torch.set_num_threads(1)
from infovae.api import start_training
from infovae.build import make_run_spec
from infovae.runs import TrainerConfig
mem_opts, map_opts, steps, out = json.loads(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
def trainer(dataset, options, name):
    cfg = TrainerConfig(batch_size=64, steps=10**7, seed=0, log_every=10**9, checkpoint_every=0, device='cpu', valid=False)
    spec, ds = make_run_spec(dataset=dataset, dataset_options=options, latent_dim=8, encoder='mlp', encoder_options={},
                             decoder='bernoulli-mlp', decoder_options={}, divergences=[('mmd', 100.0, {})], trainer=cfg)
    tr = start_training(out + name, spec, ds, overwrite=True)
    tr.model.train(); tr.objective.train()
    return tr, tr._batches()
paths = {"in-memory": trainer('binarized-mnist', mem_opts, 'mem'), "memmap": trainer('array', map_opts, 'map')}
times = {k: [] for k in paths}
for i in range(steps + 50):
    for k, (tr, batches) in paths.items():
        t0 = time.perf_counter()
        x = next(batches)
        tr._train_step(x)
        tr.step += 1
        if i >= 50:
            times[k].append(time.perf_counter() - t0)
print(json.dumps({k: statistics.median(v) * 1000 for k, v in times.items()}))
"""


def make_big(src_npz: Path, path: Path, gib: float) -> int:
    import numpy as np

    with np.load(src_npz, allow_pickle=False) as z:
        base = z["x_train"].reshape(-1, 1, 28, 28).astype(np.uint8)
    n = int(-(-gib * 2**30 // base[0].nbytes))
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, 1, 28, 28))
    for lo in range(0, n, base.shape[0]):
        hi = min(n, lo + base.shape[0])
        mm[lo:hi] = base[: hi - lo]
    mm.flush()
    del mm
    return n


def _env(tree) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    return env


def trial(dataset: str, options: dict, steps: int, out: Path, tree=None) -> dict:
    env = _env(tree)
    res = subprocess.run([sys.executable, "-c", TRIAL, dataset, json.dumps(options), str(steps), str(out)],
                         capture_output=True, text=True, env=env, check=False)
    if res.returncode:
        raise SystemExit(res.stderr[-3000:])
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "binarized_mnist.npz")
    ap.add_argument("--gib", type=float, default=2.05)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--scratch", type=Path, default=None, help="directory for the big file (default: a temporary one)")
    ap.add_argument("--baseline-tree", type=Path, default=None, help="also run the memmap trials with the infovae in this directory")
    args = ap.parse_args()
    load_before = os.getloadavg()
    scratch = Path(tempfile.mkdtemp(prefix="infovae-memmap-", dir=args.scratch))
    try:
        big = scratch / "big.npy"
        n = make_big(args.data, big, args.gib)
        size_gib = big.stat().st_size / 2**30
        mem_opts, map_opts = {"path": str(args.data)}, {"path": str(big), "kind": "binary"}
        rows = {"in-memory": [], "memmap": []}
        if args.baseline_tree is not None:
            rows["memmap-baseline-tree"] = []
        for r in range(args.repeats):
            rows["in-memory"].append(trial("binarized-mnist", mem_opts, args.steps, scratch / "run-mem"))
            rows["memmap"].append(trial("array", map_opts, args.steps, scratch / "run-map"))
            if args.baseline_tree is not None:
                rows["memmap-baseline-tree"].append(trial("array", map_opts, args.steps, scratch / "run-old", args.baseline_tree))
        med = {k: {m: statistics.median(t[m] for t in v) for m in ("rss_after_imports_mib", "peak_rss_mib")} for k, v in rows.items()}
        for v in med.values():
            v["added_rss_mib"] = v["peak_rss_mib"] - v["rss_after_imports_mib"]
        step_ms, step_ms_old = [], []
        for r in range(args.repeats):
            for tree, into in ((None, step_ms), (args.baseline_tree, step_ms_old)):
                if into is step_ms_old and tree is None:
                    continue
                res = subprocess.run([sys.executable, "-c", INTERLEAVED, json.dumps(mem_opts), json.dumps(map_opts), str(args.steps), str(scratch / "inter-")],
                                     capture_output=True, text=True, env=_env(tree))
                if res.returncode:
                    raise SystemExit(res.stderr[-3000:])
                into.append(json.loads(res.stdout.strip().splitlines()[-1]))
        ratios = [s["in-memory"] / s["memmap"] for s in step_ms]
        eps = {k: statistics.median(t["examples_per_second"] for t in v) for k, v in rows.items()}
        cpu = {k: statistics.median(t["cpu_ms_per_step"] for t in v) for k, v in rows.items()}
        result = {
            "load_average_before": load_before, "load_average_after": os.getloadavg(),
            "whole_run_examples_per_second_medians": eps,
            "whole_run_ratio_memmap_over_in_memory": eps["memmap"] / eps["in-memory"],
            "whole_run_cpu_ms_per_step_medians": cpu,
            **({"whole_run_ratio_baseline_tree_over_in_memory": eps["memmap-baseline-tree"] / eps["in-memory"],
                "median_step_ms_baseline_tree": step_ms_old,
                "throughput_ratio_baseline_tree": statistics.median(s["in-memory"] / s["memmap"] for s in step_ms_old)}
               if args.baseline_tree is not None else {}),
            "file_gib": round(size_gib, 3), "examples": n, "steps": args.steps, "repeats": args.repeats, "memory_medians": med,
            "median_step_ms": step_ms, "throughput_ratio_memmap_over_in_memory": statistics.median(ratios), "ratios": ratios,
            "memory_trials": rows,
        }
        print(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(scratch)


if __name__ == "__main__":
    main()
