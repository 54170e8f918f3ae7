"""The paper's Figure 1: mutual information I_q(x;z) and per-pixel NLL against training steps, ELBO
(kl=1) against L_AE (no divergence: the InfoVAE objective with only the reconstruction term), both
with a PixelCNN decoder on binarized MNIST.

The curves come from ``benchmarks/likelihood_table1.py --curve-every N`` (its JSON's "curve": at
each point, I_q(x;z) on the first validation images and the NLL by importance sampling with the
refined + prior-mixture proposal). This script only draws them (through ``infovae.plotting``) and
writes the numbers beside the PNG:

    python benchmarks/figure1.py --results runs/table1_cpu/elbo.json,runs/table1_cpu/l_ae.json \\
        --out benchmarks/figure1_cpu.png
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from infovae.io import atomic_write_bytes, atomic_write_json
from infovae.plotting import png_bytes, series_panels

LABELS = {"elbo": "ELBO (kl=1)", "l_ae": "L_AE (reconstruction only)"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", required=True, help="comma-separated likelihood_table1.py JSON files")
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("figure1_cpu.png"))
    args = ap.parse_args(argv)
    runs = {}
    for p in args.results.split(","):
        r = json.loads(Path(p).read_text())
        if not r.get("curve"):
            raise SystemExit(f"{p} has no curve: train it with likelihood_table1.py --curve-every N")
        runs[r["model"]] = r
    mi, nll = {}, {}
    for name, r in runs.items():
        pts = sorted(r["curve"], key=lambda p: p["step"])
        label = LABELS.get(name, name)
        mi[label] = ([p["step"] for p in pts], [p["mutual_information"] for p in pts])
        nll[label] = ([p["step"] for p in pts], [p["nll_per_pixel"] for p in pts])
    log_m = next(iter(runs.values()))["curve"][0]["log_M"]
    fig = series_panels([
        (f"I_q(x;z) (ceiling log M = {log_m:.2f})", "training step", "nats", mi),
        ("per-pixel NLL (IS, refined proposal)", "training step", "nats / pixel", nll),
    ])
    atomic_write_bytes(args.out, png_bytes(fig))
    atomic_write_json(args.out.with_suffix(".json"), {
        name: {"divergences": r["divergences"], "pixelcnn": r["pixelcnn"], "budget": r["budget"],
               "curve": sorted(r["curve"], key=lambda p: p["step"])} for name, r in runs.items()})
    print(f"wrote {args.out} and {args.out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
