"""Why does MMD-VAE score worse than the ELBO by likelihood here, and better in the paper?
Separates the estimator from the model: for each regularizer trained at the same budget, the NLL by
importance sampling with q(z|x) at several K, with better proposals, and by AIS, beside the encoder's
scale, the mutual information, the reconstruction term, KL and active units.

    # train (resumable: finished runs are kept; --epochs extends) then evaluate, binarized MNIST, CPU:
    python benchmarks/likelihood_gap.py --data ../shared/data/binarized_mnist.npz --epochs 10 \\
        --models elbo,mmd100,mmd10 --eval-limit 200 --ks 1,10,100,1000,5000 --ais-limit 100
    # the same at the paper's scale on a GPU (conv encoder, all 10,000 test images):
    python benchmarks/likelihood_gap.py --data ../shared/data/binarized_mnist.npz --device cuda \\
        --encoder conv --epochs 100 --models elbo,mmd100,mmd10,stein,adversarial \\
        --eval-limit 10000 --ais-limit 10000 --ais-steps 1000 --ais-chains 16

Writes RUNS/likelihood_gap.json (every number) and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import torch

import infovae
from infovae.api import load_run, resume_training, start_training
from infovae.build import create_dataset, make_run_spec
from infovae.estimators import ais_log_likelihood
from infovae.estimators.bdmc import bdmc, simulate
from infovae.io import atomic_write_json
from infovae.metrics import evaluate_metrics
from infovae.runs import TrainerConfig, read_status

MODELS = {
    "elbo": [("kl", 1.0)],
    "mmd100": [("mmd", 100.0)],
    "mmd10": [("mmd", 10.0)],
    "mmd1": [("mmd", 1.0)],
    "stein": [("stein", 10.0)],
    "adversarial": [("adversarial", 1.0)],
    "l_ae": [],
}


def train(args, reg, name):
    run = args.runs / name
    cfg = TrainerConfig(batch_size=args.batch_size, epochs=args.epochs, device=args.device, log_every=500,
                        seed=args.seed, track="mutual-information,active-units", track_examples=1000)
    t0 = time.time()
    if run.exists() and read_status(run).get("status") == "complete" and read_status(run).get("step", 0) >= 0:
        trainer = resume_training(run, epochs=args.epochs) if _needs_more(run, args) else None
    elif run.exists():
        trainer = resume_training(run)
    else:
        spec, ds = make_run_spec(dataset="binarized-mnist", dataset_options={"path": str(args.data)},
                                 latent_dim=args.latent_dim, encoder=args.encoder, encoder_options={},
                                 decoder="bernoulli-mlp", decoder_options={},
                                 divergences=[(d, w, {}) for d, w in MODELS[name]], trainer=cfg, reg=reg)
        trainer = start_training(run, spec, ds)
    if trainer is not None:
        print(f"[{name}] training to step {trainer.total_steps}", flush=True)
        trainer.fit()
    return time.time() - t0


def _needs_more(run: Path, args) -> bool:
    spec = json.loads((run / "spec.json").read_text())
    return int(spec["trainer"]["epochs"]) < args.epochs


def evaluate(args, reg, name):
    run = args.runs / name
    spec, model, _ = load_run(run, device=args.device, reg=reg)
    ds = create_dataset(reg, spec.dataset)
    x = ds.split("test")
    idx = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))[: args.eval_limit]
    x = x[idx]
    g = lambda: torch.Generator(device=model.device).manual_seed(args.seed)  # noqa: E731
    out = {"run": str(run), "examples": int(x.shape[0]), "spec_trainer": spec.trainer.__dict__}
    t0 = time.time()
    base = evaluate_metrics(model, x, "reconstruction,kl,active-units,mutual-information", generator=g())
    out["codes"] = {k: {kk: v[kk] for kk in ("value", "std_err", "log_M") if kk in v} for k, v in base.items()}
    with torch.no_grad():
        scales = torch.cat([model.posterior(infovae.to_model(x[i:i + 500], spec.data).to(model.device)).base_dist.scale
                            for i in range(0, x.shape[0], 500)])
    out["encoder_scale"] = {"mean": float(scales.mean()), "median": float(scales.median()),
                            "geo_mean": float(scales.double().log().mean().exp())}
    out["is_encoder"] = {}
    for k in args.ks:
        t1 = time.time()
        r = evaluate_metrics(model, x, ["nll"], generator=g(), batch_size=args.batch_eval, num_samples=k)["nll"]
        out["is_encoder"][k] = _keep(r, time.time() - t1)
        print(f"  [{name}] IS q(z|x) K={k}: {r['value']:.2f} ± {r['std_err']:.2f} (ESS {r['ess_mean']:.1f})", flush=True)
    out["proposals"] = {}
    kp = args.proposal_k
    for label, opts in (("inflated x2", {"scale_factor": 2.0}),
                        ("prior mix 0.2", {"prior_weight": 0.2}),
                        ("refined", {"proposal": "refined", "refine_steps": args.refine_steps}),
                        ("refined x1.5 + prior mix 0.2", {"proposal": "refined", "refine_steps": args.refine_steps,
                                                          "scale_factor": 1.5, "prior_weight": 0.2})):
        t1 = time.time()
        r = evaluate_metrics(model, x, ["nll"], generator=g(), batch_size=args.batch_eval, num_samples=kp, **opts)["nll"]
        out["proposals"][label] = _keep(r, time.time() - t1)
        print(f"  [{name}] IS {label} K={kp}: {r['value']:.2f} ± {r['std_err']:.2f} (ESS {r['ess_mean']:.1f})", flush=True)
    xa = x[: args.ais_limit]
    t1 = time.time()
    # AIS per example (kept, so models pair per image: the subset is the same seeded images for every model).
    lp, se, info = ais_log_likelihood(model, infovae.to_model(xa, spec.data).to(model.device), steps=args.ais_steps,
                                      chains=args.ais_chains, leapfrog_steps=args.leapfrog, generator=g(),
                                      batch_size=args.batch_eval)
    nll = (-lp).double()
    r = {"value": float(nll.mean()), "std_err": float(nll.std() / math.sqrt(nll.numel())),
         "estimator_std_err": float(se.pow(2).sum().sqrt() / nll.numel()), "n": int(nll.numel()), **info}
    out["ais"] = {**_keep(r, time.time() - t1), "per_example": nll.tolist(), "pilot_adapted": True}
    # The IS estimates on the same AIS subset, for a paired comparison.
    out["paired"] = {}
    for label, opts in (("is_encoder", {"num_samples": max(args.ks)}),
                        ("refined", {"proposal": "refined", "refine_steps": args.refine_steps, "num_samples": kp})):
        rr = evaluate_metrics(model, xa, ["nll"], generator=g(), batch_size=args.batch_eval, **opts)["nll"]
        out["paired"][label] = _keep(rr, 0.0)
    print(f"  [{name}] AIS T={args.ais_steps} S={args.ais_chains} L={args.leapfrog} on {xa.shape[0]}: "
          f"{r['value']:.2f} ± {r['std_err']:.2f} (accept {r['accept_mean']:.2f}); IS q K={max(args.ks)} same subset "
          f"{out['paired']['is_encoder']['value']:.2f}", flush=True)
    # BDMC on data simulated from this model, same AIS settings: how far from log p(x) is AIS here?
    t1 = time.time()
    gb = torch.Generator(device=model.device).manual_seed(args.seed + 1)
    zs, xs = simulate(model, args.bdmc_examples, gb)
    res = bdmc(model, xs, zs, steps=args.ais_steps, chains=args.ais_chains, leapfrog_steps=args.leapfrog, generator=gb)
    out["bdmc"] = {k: float(v.mean()) for k, v in res.items()}
    out["bdmc"]["gap_max"] = float(res["gap"].max())
    out["bdmc"]["examples"] = args.bdmc_examples
    out["bdmc"]["seconds"] = time.time() - t1
    print(f"  [{name}] BDMC on {args.bdmc_examples} simulated: lower {-out['bdmc']['lower']:.2f} upper "
          f"{-out['bdmc']['upper']:.2f} nats NLL, mean gap {out['bdmc']['gap']:.3f} (max {out['bdmc']['gap_max']:.3f})", flush=True)
    out["eval_seconds"] = time.time() - t0
    return out


def _keep(r, seconds):
    keys = ("value", "std_err", "estimator_std_err", "ess_mean", "accept_mean", "accept_min", "n", "description")
    return {**{k: r[k] for k in keys if k in r}, "seconds": seconds}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--models", default="elbo,mmd100,mmd10")
    ap.add_argument("--phase", choices=("train", "evaluate", "both", "table"), default="both",
                    help="table: print the Markdown table of the saved results (--out files, comma-separated)")
    ap.add_argument("--encoder", default="mlp")
    ap.add_argument("--latent-dim", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--runs", type=Path, default=Path("runs/likelihood_gap"))
    ap.add_argument("--eval-limit", type=int, default=200)
    ap.add_argument("--ks", default="1,10,100,1000,5000")
    ap.add_argument("--proposal-k", type=int, default=1000)
    ap.add_argument("--refine-steps", type=int, default=50)
    ap.add_argument("--ais-limit", type=int, default=100)
    ap.add_argument("--ais-steps", type=int, default=500)
    ap.add_argument("--ais-chains", type=int, default=16)
    ap.add_argument("--leapfrog", type=int, default=10)
    ap.add_argument("--bdmc-examples", type=int, default=50)
    ap.add_argument("--out", default=None, help="results JSON (default RUNS/likelihood_gap.json)")
    ap.add_argument("--batch-eval", type=int, default=2048)
    args = ap.parse_args(argv)
    args.ks = [int(k) for k in args.ks.split(",")]
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    bad = [m for m in models if m not in MODELS]
    if bad:
        ap.error(f"unknown model(s) {bad}; choose from {list(MODELS)}")
    if args.phase == "table":
        merged = {}
        for p in str(args.out).split(","):
            merged.update({k: v for k, v in json.loads(Path(p).read_text()).items() if k != "_meta"})
        print(markdown(merged, [m for m in models if m in merged]))
        print()
        print(paired(merged, [m for m in models if m in merged]))
        return 0
    reg = infovae.registry()
    path = Path(args.out) if args.out else args.runs / "likelihood_gap.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    for name in models:
        if args.phase in ("train", "both"):
            secs = train(args, reg, name)
            print(f"[{name}] trained ({secs:.0f} s this call)", flush=True)
        if args.phase in ("evaluate", "both"):
            results[name] = evaluate(args, reg, name)
            results["_meta"] = {"argv": argv, "machine": f"{platform.machine()} {torch.__version__}, "
                                f"{torch.get_num_threads()} threads"}
            atomic_write_json(path, results)
    if args.phase != "train":
        print(markdown(results, models))
    return 0


def paired(results, models) -> str:
    """AIS per image against the first model, on the images every listed model has (mean difference and
    its paired standard error)."""
    have = [m for m in models if "per_example" in results[m].get("ais", {})]
    if len(have) < 2:
        return ""
    n = min(len(results[m]["ais"]["per_example"]) for m in have)
    base = torch.tensor(results[have[0]]["ais"]["per_example"][:n], dtype=torch.float64)
    rows = [f"Paired AIS on the same first {n} images:", "", f"| model | AIS NLL ({n} images, ± s.e.) | difference to {have[0]} (± paired s.e.) |",
            "| --- | --- | --- |"]
    for m in have:
        v = torch.tensor(results[m]["ais"]["per_example"][:n], dtype=torch.float64)
        d = v - base
        rows.append(f"| {m} | {float(v.mean()):.2f} ± {float(v.std() / math.sqrt(n)):.2f} | "
                    f"{float(d.mean()):+.2f} ± {float(d.std() / math.sqrt(n)) if m != have[0] else 0.0:.2f} |")
    return "\n".join(rows)


def markdown(results, models) -> str:
    rows = ["| model | recon. nats | KL nats | MI nats (log M) | active | enc. σ geo-mean | "
            + " | ".join(f"IS q K={k}" for k in results[models[0]]["is_encoder"]) + " | best IS proposal | AIS (subset) | IS q same subset | BDMC gap (simulated) |",
            "| --- " * (10 + len(results[models[0]]["is_encoder"])) + "|"]
    for m in models:
        r = results[m]
        c = r["codes"]
        best = min(r["proposals"].items(), key=lambda kv: kv[1]["value"])
        rows.append(
            f"| {m} | {c['reconstruction']['value']:.2f} | {c['kl']['value']:.2f} | "
            f"{c['mutual-information']['value']:.2f} ({c['mutual-information']['log_M']:.2f}) | {c['active-units']['value']} | "
            f"{r['encoder_scale']['geo_mean']:.3g} | "
            + " | ".join(f"{v['value']:.2f} ± {v['std_err']:.2f}" for v in r["is_encoder"].values())
            + f" | {best[1]['value']:.2f} ± {best[1]['std_err']:.2f} ({best[0]}, ESS {best[1]['ess_mean']:.0f}) | "
            f"{r['ais']['value']:.2f} ± {r['ais']['std_err']:.2f} | {r['paired']['is_encoder']['value']:.2f} | "
            f"{r['bdmc']['gap']:.3f} (max {r['bdmc']['gap_max']:.3f}) |")
    return "\n".join(rows)


if __name__ == "__main__":
    raise SystemExit(main())
