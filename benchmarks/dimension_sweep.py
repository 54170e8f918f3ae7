"""The paper's Figure 3 (A, B, E): how the latent dimension changes q(z)-p(z)
MMD, log det Cov[q(z)] / dim and semi-supervised accuracy, for ELBO and MMD-VAE.

    python benchmarks/dimension_sweep.py --quick                       # digits, MLP, minutes on a CPU
    python benchmarks/dimension_sweep.py --data ../shared/data/binarized_mnist.npz --device cuda

Writes a PNG with three panels and a JSON file with every number.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import infovae
from infovae.api import load_run, start_training
from infovae.build import make_run_spec
from infovae.io import atomic_write_bytes, atomic_write_json
from infovae.metrics import evaluate_metrics
from infovae.plotting import png_bytes, series_panels
from infovae.runs import TrainerConfig

MODELS = {"ELBO": [("kl", 1.0)], "MMD": [("mmd", 100.0)]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--dims", default="2,5,10,20,40")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--runs", type=Path, default=Path("runs/dimension_sweep"))
    ap.add_argument("--out", type=Path, default=None, help="PNG (default benchmarks/dimension_sweep[_quick].png)")
    ap.add_argument("--replot", action="store_true", help="redraw the PNG from the JSON beside it (no training)")
    args = ap.parse_args(argv)
    if args.replot:
        out = args.out or Path(__file__).with_name("dimension_sweep_quick.png" if args.quick else "dimension_sweep.png")
        saved = json.loads(out.with_suffix(".json").read_text())
        dims = saved["dims"]
        results = {m: {int(d): v for d, v in r.items()} for m, r in saved["results"].items()}
        atomic_write_bytes(out, png_bytes(figure(results, dims)))
        print(f"redrew {out} from {out.with_suffix('.json')}")
        return 0
    if not args.quick and args.data is None:
        ap.error("give --data PATH to binarized_mnist.npz, or --quick for digits")
    dims = [int(d) for d in args.dims.split(",")]
    if args.quick:
        dataset, ds_opts, encoder, decoder, epochs, batch = "digits", {}, "mlp", "bernoulli-mlp", args.epochs or 60, 64
    else:
        dataset, ds_opts, encoder, decoder, epochs, batch = "binarized-mnist", {"path": str(args.data)}, "conv", "bernoulli-conv", args.epochs or 20, 100
    out = args.out or Path(__file__).with_name("dimension_sweep_quick.png" if args.quick else "dimension_sweep.png")
    reg = infovae.registry()
    results = {m: {} for m in MODELS}
    t0 = time.time()
    for model_name, divs in MODELS.items():
        for d in dims:
            run = args.runs / f"{model_name.lower()}_z{d}"
            spec, ds = make_run_spec(dataset=dataset, dataset_options=ds_opts, latent_dim=d, encoder=encoder, encoder_options={},
                                     decoder=decoder, decoder_options={}, divergences=[(n, w, {}) for n, w in divs],
                                     trainer=TrainerConfig(batch_size=batch, epochs=epochs, device=args.device, log_every=1000), reg=reg)
            start_training(run, spec, ds, overwrite=True).fit()
            spec, model, _ = load_run(run, device=args.device, reg=reg)
            x, y = ds.split("test"), ds.labels("test")
            res = evaluate_metrics(model, x, "mmd-prior,logdet-cov,semi-supervised", labels=y,
                                   generator=torch.Generator(device=model.device).manual_seed(0))
            results[model_name][d] = {k: v["value"] for k, v in res.items()}
            print(f"{model_name} z={d}: {results[model_name][d]}", flush=True)
    atomic_write_bytes(out, png_bytes(figure(results, dims)))
    atomic_write_json(out.with_suffix(".json"), {"dataset": dataset, "epochs": epochs, "dims": dims, "seconds": time.time() - t0,
                                                 "results": {m: {str(d): v for d, v in r.items()} for m, r in results.items()}})
    print(f"wrote {out} and {out.with_suffix('.json')}")
    return 0


def figure(results, dims):
    """Three panels (MMD², log det / dim, SVM accuracy) against the latent dimension, one line per model."""
    panels = []
    for metric, title, unit in (("mmd-prior", "MMD²(q(z), p(z))", "MMD², unitless"), ("logdet-cov", "log det Cov[q(z)] / dim", "nats / dim"),
                                ("semi-supervised", "semi-supervised accuracy", "fraction correct")):
        series = {m: (dims, [results[m][d][metric] for d in dims]) for m in results}
        panels.append((title, "latent dimension", unit, series))
    return series_panels(panels, log_x=True)


if __name__ == "__main__":
    raise SystemExit(main())
