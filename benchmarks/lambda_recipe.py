"""What the paper's lambda recipe gives: the weight that puts each divergence on the order of the
reconstruction term, lambda = reconstruction / D, measured on the first batches of a fresh model.

    python benchmarks/lambda_recipe.py --data ../shared/data/binarized_mnist.npz

Prints, per divergence and latent dimension, the mean reconstruction (nats), the mean divergence value
and their ratio over ``--batches`` batches of 100 training images (conv encoder, Bernoulli MLP decoder,
seed 0). Stein has no value (its term is a gradient surrogate), so it gets no ratio.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import infovae
from infovae.build import build_model, make_run_spec
from infovae.data import to_model
from infovae.runs import TrainerConfig


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--dims", default="2,5")
    ap.add_argument("--divergences", default="mmd,stein,adversarial,kl")
    ap.add_argument("--batches", type=int, default=10)
    args = ap.parse_args(argv)
    reg = infovae.registry()
    out = {}
    for z in (int(d) for d in args.dims.split(",")):
        for div in args.divergences.split(","):
            spec, ds = make_run_spec(dataset="binarized-mnist", dataset_options={"path": str(args.data)}, latent_dim=z, encoder="conv",
                                     encoder_options={}, decoder="bernoulli-mlp", decoder_options={}, divergences=[(div, 1.0, {})],
                                     trainer=TrainerConfig(batch_size=100, steps=1, device="cpu"), reg=reg)
            torch.manual_seed(0)
            model, objective = build_model(spec, reg)
            x = ds.split("train")[: 100 * args.batches]
            rec, val = [], []
            for i in range(args.batches):
                _, terms, _ = objective(model, to_model(x[i * 100:(i + 1) * 100], model.spec))
                rec.append(float(terms["reconstruction"]))
                val.append(float(terms[div]) if div in terms else float("nan"))
            r, v = sum(rec) / len(rec), sum(val) / len(val)
            out[f"{div}@z{z}"] = {"reconstruction": r, "divergence": v, "lambda": r / v if v == v and v > 0 else None}
            print(f"{div} z={z}: reconstruction {r:.1f} nats, divergence {v:.4g}, lambda {out[f'{div}@z{z}']['lambda']}", flush=True)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
