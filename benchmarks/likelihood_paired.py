"""Paired AIS comparison of trained runs on the same test images: per-example -log p(x) by AIS for
each run, and the mean difference to the first run with its paired standard error.

    python benchmarks/likelihood_paired.py --runs runs/likelihood_gap --models elbo,mmd1,mmd10,mmd100 \\
        --limit 50 --ais 300,8,5 --out runs/likelihood_gap/paired.json
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

import infovae
from infovae.api import load_run
from infovae.build import create_dataset
from infovae.estimators import ais_log_likelihood
from infovae.io import atomic_write_json


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=Path, required=True)
    ap.add_argument("--models", required=True)
    ap.add_argument("--limit", type=int, default=50, help="the first N of the seeded random test subset")
    ap.add_argument("--ais", default="300,8,5", help="T,S,L")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    t, s, lf = (int(v) for v in args.ais.split(","))
    reg = infovae.registry()
    out = json.loads(args.out.read_text()) if args.out.exists() else {}
    for name in args.models.split(","):
        if name in out:
            continue
        spec, model, _ = load_run(args.runs / name, device=args.device, reg=reg)
        x = create_dataset(reg, spec.dataset).split("test")
        x = x[torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))[: args.limit]]
        x = infovae.to_model(x, spec.data)
        g = torch.Generator(device=model.device).manual_seed(0)
        model.eval()
        lp, se, info = ais_log_likelihood(model, x, steps=t, chains=s, leapfrog_steps=lf, generator=g, batch_size=2048)
        out[name] = {"nll": (-lp).tolist(), "mc_se": se.tolist(), **info}
        atomic_write_json(args.out, out)
        print(f"{name}: AIS NLL {float(-lp.mean()):.2f}", flush=True)
    names = args.models.split(",")
    base = torch.tensor(out[names[0]]["nll"], dtype=torch.float64)
    for name in names:
        v = torch.tensor(out[name]["nll"], dtype=torch.float64)
        d = v - base
        n = v.numel()
        print(f"| {name} | {float(v.mean()):.2f} ± {float(v.std() / math.sqrt(n)):.2f} | "
              f"{float(d.mean()):+.2f} ± {float(d.std() / math.sqrt(n)) if name != names[0] else 0.0:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
