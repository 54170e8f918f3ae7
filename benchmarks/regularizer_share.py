"""Each regularizer's share of a training step (mmd, stein, adversarial, kl), printed as a table.

    python benchmarks/regularizer_share.py [--repeats 21] [--batch-size 64] [--threads 1] [--json out.json]

Logic in ``infovae.bench.step_share`` (see its docstring for what is timed).
"""
from __future__ import annotations

import argparse
import json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default="default,conv-pixelcnn", help="default (digits, mlp / bernoulli-mlp), conv-pixelcnn (28x28)")
    ap.add_argument("--divergences", default="mmd,stein,adversarial,kl")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=21)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--stat", choices=("median", "min"), default="median")
    ap.add_argument("--json", default=None, help="also write the result to this file")
    args = ap.parse_args()
    import torch
    from rich.console import Console

    from infovae.bench.step_share import run, table
    from infovae.io import atomic_write_bytes

    if args.threads:
        torch.set_num_threads(args.threads)
    res = run(cases=[c for c in args.cases.split(",") if c], divergences=[d for d in args.divergences.split(",") if d],
              batch_size=args.batch_size, repeats=args.repeats, stat=args.stat, progress=lambda m: print("  " + m, flush=True))
    Console().print(table(res))
    if args.json:
        atomic_write_bytes(args.json, (json.dumps(res, indent=2) + "\n").encode())


if __name__ == "__main__":
    main()
