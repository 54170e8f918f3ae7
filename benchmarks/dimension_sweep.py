"""The paper's Figure 3 (panels A-E): how the latent dimension changes what each regularizer does.

    python benchmarks/dimension_sweep.py --data ../shared/data/binarized_mnist.npz            # CPU budget
    python benchmarks/dimension_sweep.py --data ../shared/data/binarized_mnist.npz --device cuda \\
        --steps 50000 --stages 20 --seeds 0,1,2 --decoder bernoulli-conv                    # paper scale (GPU)
    python benchmarks/dimension_sweep.py --quick                                                # digits, minutes
    python benchmarks/dimension_sweep.py --data ... --replot                                    # redraw from the JSON

Every cell (regularizer x latent dimension x seed) trains a conv encoder and a Bernoulli decoder on the
whole training split for the same number of optimiser steps (``--steps``, batch ``--batch-size``), in
``--stages`` equal parts: after each part the run is checkpointed (it is an ordinary run directory under
``--runs``; a stopped sweep resumes where it stopped) and q(z)-p(z) MMD, I(x;z) and active units are measured
on a fixed validation subset (panel D and the collapse study). At the end of a cell, on the whole test split:
  A  mmd-prior    MMD^2 between the codes z ~ q(z|x) and as many prior draws (rbf, bandwidth sqrt(2D))
  B  logdet-cov   log det Cov[q(z)] / dim
  C  class-distribution  KL(data class histogram || histogram of a CNN's labels for model samples)
     (the CNN of ``infovae.classifier``: fit once on a seeded 80% of the labelled test split, its accuracy
     measured on the other 20%, cached in ``--runs``)
  E  semi-supervised  RBF-SVM accuracy on posterior means, fit on a seeded 1,000 labelled test images and
     scored on the other 9,000
plus mutual information (on 2,000 seeded test images, so at most log 2000 = 7.6 nats), active units,
reconstruction, KL and the encoder's geometric-mean sigma. Standard errors are over test examples
(one seed per cell unless ``--seeds`` gives more, then across seeds): A and B from 10 disjoint blocks of
1,000 test images (sd / sqrt 10), C by bootstrap over the generated samples, E binomial.
Each cell's numbers are written to ``--runs/<cell>.json`` as soon as they exist; the JSON and PNG
beside this script collect them.
"""
from __future__ import annotations

import argparse
import json
import math
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import infovae
from infovae.api import load_run, resume_training, start_training
from infovae.build import make_run_spec
from infovae.collapse import MI_NEAR_ZERO, CodeCollapseWarning
from infovae.io import atomic_write_bytes, atomic_write_json
from infovae.metrics import evaluate_metrics
from infovae.metrics._common import encode, model_values
from infovae.plotting import png_bytes, series_panels
from infovae.runs import TrainerConfig

# The paper's four regularizers at the project's default weights (kl 1, mmd 100 is `infovae train`'s
# default, stein and adversarial 1), and the plain autoencoder L_AE. Extra weights for the lambda
# study are the `mmd<W>` names.
MODELS = {"ELBO": [("kl", 1.0)], "MMD": [("mmd", 100.0)], "Stein": [("stein", 1.0)], "Adversarial": [("adversarial", 1.0)], "L_AE": []}
FIGURE_MODELS = ("ELBO", "MMD", "Stein", "Adversarial", "L_AE")
TEST_METRICS = ("mmd-prior", "logdet-cov", "semi-supervised", "class-distribution", "mutual-information", "active-units",
                "reconstruction", "kl", "encoder-sigma")
BLOCKS = 10


def model_divergences(name: str):
    if name in MODELS:
        return MODELS[name]
    if name.startswith("mmd") and name[3:].replace(".", "", 1).isdigit():
        return [("mmd", float(name[3:]))]
    raise SystemExit(f"unknown model {name!r}: choose from {', '.join(MODELS)} or mmd<WEIGHT> (e.g. mmd10)")


def _status_step(run: Path) -> int:
    try:
        return int(json.loads((run / "status.json").read_text()).get("step", 0))
    except (OSError, ValueError):
        return 0


def _quiet_fit(trainer):
    """fit(), collecting the CodeCollapseWarning messages instead of printing them."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit()
    return [str(w.message) for w in caught if issubclass(w.category, CodeCollapseWarning)]


def train_cell(run: Path, state: dict, make_spec, ds, x_probe, steps: int, stages: int, device: str, save) -> None:
    """Train ``run`` to ``steps`` in ``stages`` parts, measuring the probe metrics after each part (resumable)."""
    reg = infovae.registry()
    done = {p["step"] for p in state["curve"]}
    for k in range(1, stages + 1):
        target = steps * k // stages
        if target in done:
            continue
        at = _status_step(run) if (run / "checkpoint.safetensors").exists() else 0
        t0 = time.time()
        if at == 0:
            warned = _quiet_fit(start_training(run, make_spec(target), ds, overwrite=True, reg=reg))
        elif at < target:
            warned = _quiet_fit(resume_training(run, steps=target, reg=reg))
        else:
            warned = []
        state["train_seconds"] = state.get("train_seconds", 0.0) + time.time() - t0
        state.setdefault("collapse_warnings", []).extend(warned)
        _, model, _ = load_run(run, device=device, reg=reg, with_objective=False)
        g = torch.Generator(device=model.device).manual_seed(0)
        res = evaluate_metrics(model, x_probe, "mmd-prior,mutual-information,active-units", generator=g)
        point = {n: float(r["value"]) for n, r in res.items()}
        # the collapse rule of infovae.collapse.collapse_message, on the probe's numbers
        collapsed = point["active-units"] == 0 or point["mutual-information"] < MI_NEAR_ZERO
        state["curve"].append({"step": target, **point, "collapsed": collapsed})
        save()


def _block_se(model, x, name, g_seed=0):
    vals = []
    for b in range(BLOCKS):
        xb = x[b::BLOCKS]
        g = torch.Generator(device=model.device).manual_seed(g_seed + b)
        vals.append(float(evaluate_metrics(model, xb, name, generator=g)[name]["value"]))
    return float(np.std(vals, ddof=1) / math.sqrt(BLOCKS)), vals


def _class_se(res, rng_seed=0, reps=2000):
    """Bootstrap s.e. of l_ce over the generated samples (their counts are recovered from the histogram)."""
    p = np.asarray(res["data_histogram"], dtype=np.float64)
    q = np.asarray(res["sample_histogram"], dtype=np.float64)
    n, pc, c = res["num_generated"], res["pseudo_count"], len(q)
    counts = np.rint(q * (n + pc * c) - pc).clip(0)
    rng = np.random.default_rng(rng_seed)
    boot = rng.multinomial(int(counts.sum()), counts / counts.sum(), size=reps)
    qb = (boot + pc) / (boot.sum(1, keepdims=True) + pc * c)
    sup = p > 0
    kl = (p[sup] * (np.log(p[sup]) - np.log(qb[:, sup]))).sum(1)
    return float(kl.std(ddof=1))


def test_metrics(run: Path, state: dict, x, y, device: str, wanted, classifier_cache: Path, save) -> None:
    reg = infovae.registry()
    todo = [m for m in wanted if m not in state["test"]]
    if not todo:
        return
    _, model, _ = load_run(run, device=device, reg=reg, with_objective=False)
    g = lambda: torch.Generator(device=model.device).manual_seed(0)  # noqa: E731
    for name in todo:
        t0 = time.time()
        if name == "encoder-sigma":
            _, scale = encode(model, model_values(model, x), 1024, "encoder-sigma")
            out = {"value": float(scale.log().mean().exp()), "units": "geometric mean of sigma over examples and units"}
        elif name in ("mmd-prior", "logdet-cov"):
            out = evaluate_metrics(model, x, name, generator=g())[name]
            out["std_err"], out["blocks"] = _block_se(model, x, name)
        elif name == "semi-supervised":
            out = evaluate_metrics(model, x, name, labels=y, generator=g())[name]
            out["std_err"] = math.sqrt(out["value"] * (1 - out["value"]) / out["n_test"])
        elif name == "class-distribution":
            out = evaluate_metrics(model, x, name, labels=y, generator=g(),
                                   options={name: {"classifier_cache": str(classifier_cache)}})[name]
            out["std_err"] = _class_se(out)
        elif name == "mutual-information":
            out = evaluate_metrics(model, x, name, generator=g(), options={name: {"mi_points": min(2000, x.shape[0])}})[name]
        else:
            out = evaluate_metrics(model, x, name, generator=g())[name]
        out["seconds"] = time.time() - t0
        state["test"][name] = out
        save()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=None, help="binarized_mnist.npz")
    ap.add_argument("--quick", action="store_true", help="digits (8x8, 200 test images): a smoke run in minutes")
    ap.add_argument("--dims", default="2,5,10,20,40")
    ap.add_argument("--models", default=",".join(FIGURE_MODELS), help=f"of {', '.join(MODELS)}, or mmd<WEIGHT>")
    ap.add_argument("--extra", default="", help="more cells MODEL@DIM (e.g. mmd10@2,mmd1000@5), run after the sweep")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--steps", type=int, default=None, help="optimiser steps per cell (equal budget)")
    ap.add_argument("--stages", type=int, default=4, help="checkpoints per cell at which panel D is measured")
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--encoder", default="conv")
    ap.add_argument("--decoder", default="bernoulli-mlp")
    ap.add_argument("--metrics", default=",".join(TEST_METRICS), help="test metrics to compute (missing ones are added on a rerun)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--runs", type=Path, default=None, help="run directories and per-cell JSON (default runs/dimension_sweep[_quick])")
    ap.add_argument("--out", type=Path, default=None, help="PNG (default benchmarks/dimension_sweep[_quick].png); the JSON goes beside it")
    ap.add_argument("--replot", action="store_true", help="collect the per-cell JSON files and redraw (no training)")
    ap.add_argument("--panel-d-dim", type=int, default=10, help="latent dimension whose training curves panel D shows")
    args = ap.parse_args(argv)
    if not args.quick and args.data is None:
        ap.error("give --data PATH to binarized_mnist.npz, or --quick for digits")
    if args.quick:
        dataset, ds_opts, steps = "digits", {}, args.steps or 1200
        runs = args.runs or Path("runs/dimension_sweep_quick")
    else:
        dataset, ds_opts, steps = "binarized-mnist", {"path": str(args.data)}, args.steps or 1200
        runs = args.runs or Path("runs/dimension_sweep")
    out = args.out or Path(__file__).with_name("dimension_sweep_quick.png" if args.quick else "dimension_sweep.png")
    dims = [int(d) for d in args.dims.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    cells = [(m, d) for d in dims for m in args.models.split(",") if m]
    cells += [(c.split("@")[0], int(c.split("@")[1])) for c in args.extra.split(",") if c]
    for m, _ in cells:
        model_divergences(m)
    wanted = [m for m in args.metrics.split(",") if m]
    settings = {"dataset": dataset, "encoder": args.encoder, "decoder": args.decoder, "steps": steps, "stages": args.stages,
                "batch_size": args.batch_size, "seeds": seeds}
    runs.mkdir(parents=True, exist_ok=True)

    if not args.replot:
        reg = infovae.registry()
        t_all = time.time()
        for model_name, d in cells:
            for seed in seeds:
                cell = f"{model_name.lower()}_z{d}_s{seed}"
                run, path = runs / cell, runs / f"{cell}.json"
                divs = model_divergences(model_name)
                state = json.loads(path.read_text()) if path.exists() else {}
                if state.get("settings") != {**settings, "seeds": None}:
                    state = {"settings": {**settings, "seeds": None}, "model": model_name, "dim": d, "seed": seed,
                             "divergences": [[n, w] for n, w in divs], "curve": [], "test": {}}

                def save(state=state, path=path):
                    atomic_write_json(path, state)

                def make_spec(target, d=d, divs=divs, seed=seed):
                    spec, _ = make_run_spec(dataset=dataset, dataset_options=ds_opts, latent_dim=d, encoder=args.encoder,
                                            encoder_options={}, decoder=args.decoder, decoder_options={},
                                            divergences=[(n, w, {}) for n, w in divs],
                                            trainer=TrainerConfig(batch_size=args.batch_size, steps=target, seed=seed, device=args.device,
                                                                  log_every=1000, valid=False), reg=reg)
                    return spec

                _, ds = make_run_spec(dataset=dataset, dataset_options=ds_opts, latent_dim=d, encoder=args.encoder, encoder_options={},
                                      decoder=args.decoder, decoder_options={}, divergences=[(n, w, {}) for n, w in divs],
                                      trainer=TrainerConfig(batch_size=args.batch_size, steps=1, device=args.device), reg=reg)
                x_probe = ds.split("valid")[:1000]
                t0 = time.time()
                train_cell(run, state, make_spec, ds, x_probe, steps, args.stages, args.device, save)
                test_metrics(run, state, ds.split("test"), ds.labels("test"), args.device, wanted, runs, save)
                t = state["test"]
                print(f"{cell}: {time.time() - t0:.0f} s; " + ", ".join(f"{k} {v['value']:.4g}" for k, v in t.items()), flush=True)
        print(f"sweep: {time.time() - t_all:.0f} s", flush=True)

    collected = collect(runs, settings)
    if not collected["results"]:
        found = sorted({json.dumps(json.loads(p.read_text()).get("settings")) for p in runs.glob("*.json")})
        raise SystemExit(f"no cell in {runs} was trained with these settings ({json.dumps(settings)}); "
                         f"give the same --steps/--stages/--batch-size/--encoder/--decoder as the sweep. Found: {'; '.join(found) or 'none'}")
    atomic_write_json(out.with_suffix(".json"), collected)
    atomic_write_bytes(out, png_bytes(figure(collected, args.panel_d_dim)))
    print(f"wrote {out} and {out.with_suffix('.json')}")
    return 0


def collect(runs: Path, settings: dict) -> dict:
    """Every per-cell JSON under ``runs`` with these settings -> {model: {dim: {metric: {value, std_err}}, curve}}."""
    cells = {}
    for path in sorted(runs.glob("*.json")):
        s = json.loads(path.read_text())
        if s.get("settings") != {**settings, "seeds": None}:
            continue
        cells.setdefault(s["model"], {}).setdefault(str(s["dim"]), []).append(s)
    results = {}
    for model, by_dim in cells.items():
        for d, states in by_dim.items():
            row = {"seeds": [s["seed"] for s in states], "divergences": states[0]["divergences"],
                   "train_seconds": [round(s.get("train_seconds", 0.0), 1) for s in states],
                   "collapse_warnings": sum(len(s.get("collapse_warnings", [])) for s in states)}
            for name in TEST_METRICS:
                vals = [s["test"][name] for s in states if name in s["test"]]
                if not vals:
                    continue
                v = [r["value"] for r in vals]
                if len(v) > 1:
                    row[name] = {"value": float(np.mean(v)), "std_err": float(np.std(v, ddof=1) / math.sqrt(len(v))), "se_over": "seeds"}
                else:
                    row[name] = {"value": v[0], "std_err": vals[0].get("std_err"), "se_over": "test examples"}
                if name == "class-distribution":
                    row[name]["classifier_accuracy"] = vals[0].get("classifier_accuracy")
                    row[name]["classifier"] = vals[0].get("classifier")
                if name == "mutual-information":
                    row[name]["log_M"] = vals[0].get("log_M")
            row["curve"] = states[0]["curve"]
            results.setdefault(model, {})[d] = row
    return {"settings": settings, "results": results}


def figure(collected: dict, panel_d_dim: int):
    """Panels A-E like the paper's Figure 3: A, B, C, E against the latent dimension (log scale, error bars =
    one s.e.), D = MMD against training iterations at one latent dimension; MMD (A, D) on a log scale."""
    res = collected["results"]
    models = [m for m in FIGURE_MODELS if m in res]
    panels = []
    for metric, title, unit in (("mmd-prior", "A: MMD²(q(z), p(z))", "MMD², unitless"),
                                ("logdet-cov", "B: log det Cov[q(z)] / dim", "nats / dim"),
                                ("class-distribution", "C: class distribution l_ce", "nats")):
        series = {}
        for m in models:
            dims = sorted(int(d) for d, r in res[m].items() if metric in r)
            if dims:
                series[m] = (dims, [res[m][str(d)][metric]["value"] for d in dims],
                             [res[m][str(d)][metric]["std_err"] or 0.0 for d in dims])
        panels.append((title, "latent dimension", unit, series, True))
    series = {}
    for m in models:
        row = res[m].get(str(panel_d_dim))
        if row and row["curve"]:
            series[m] = ([p["step"] for p in row["curve"]], [p["mmd-prior"] for p in row["curve"]])
    panels.append((f"D: MMD² during training (z = {panel_d_dim})", "training iteration", "MMD², unitless (1,000 valid.)", series, False))
    series = {}
    for m in models:
        dims = sorted(int(d) for d, r in res[m].items() if "semi-supervised" in r)
        if dims:
            series[m] = (dims, [res[m][str(d)]["semi-supervised"]["value"] for d in dims],
                         [res[m][str(d)]["semi-supervised"]["std_err"] for d in dims])
    panels.append(("E: SVM accuracy, 1,000 labels", "latent dimension", "fraction correct", series, True))
    return series_panels([p[:4] for p in panels], log_x=[p[4] for p in panels], log_y=[True, False, False, True, False])


if __name__ == "__main__":
    raise SystemExit(main())
