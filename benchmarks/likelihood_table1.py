"""Table 1 at equal budget on a CPU: one model (ELBO, MMD, Stein, Adversarial or L_AE; z = 5; conv
encoder; a small gated PixelCNN) trained for a fixed number of steps, then scored by the estimators
of ``infovae.estimators``, every phase resumable and written as it finishes.

Phases (each skipped when its result is already in the output JSON; later calls extend them; a run
trained further drops the evaluations of its earlier step):

1. train to ``--steps`` (resumable: an existing run continues; a larger ``--steps`` extends it);
   with ``--curve-every N`` the training stops every N steps and scores I_q(x;z) and the per-pixel
   NLL on the first ``--curve-examples`` validation images (the paper's Figure 1 curves);
2. codes on the ``--eval-limit`` seeded test images: reconstruction term, KL, I_q(x;z), active
   units, the encoder's σ;
3. NLL by importance sampling with the best proposal (q(z|x) refined per example by Adam on the
   ELBO, scale x1.5, mixed 80/20 with the prior), K = ``--k``, on the same images, in chunks whose
   per-example values are kept (so a stopped call loses at most one chunk); with ``--is-first N``
   on the first N images here and on the rest after phase 5;
4. AIS (``--ais T,S,L``) ``--ais-batch`` images at a time on the first ``--ais-limit`` images (the
   same seeded images for every model, so models pair per image);
5. NLL against K (``--ks``) on the first ``--ks-limit`` of them, with q(z|x) and with the best
   proposal, with ESS.

``--deadline HH:MM`` (UTC) stops starting new chunks after that time; everything done is kept.

    python benchmarks/likelihood_table1.py --data ../shared/data/binarized_mnist.npz --model mmd \\
        --steps 500 --pixelcnn 2x16 --eval-limit 1000 --k 32 --ks 1,10,100,1000 --ks-limit 20 \\
        --ais 100,4,5 --ais-limit 20
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import platform
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import infovae  # noqa: E402
from infovae.api import load_run, resume_training, start_training  # noqa: E402
from infovae.build import create_dataset, make_run_spec  # noqa: E402
from infovae.estimators import ais_log_likelihood, proposal_log_likelihood  # noqa: E402
from infovae.io import atomic_write_json  # noqa: E402
from infovae.metrics import evaluate_metrics  # noqa: E402
from infovae.runs import TrainerConfig, read_status  # noqa: E402

from paper_table1 import MODELS  # noqa: E402

PIXELS = 784


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def past(deadline) -> bool:
    return deadline is not None and utc_now() >= deadline


def parse_deadline(text: str):
    if not text:
        return None
    h, m = (int(v) for v in text.split(":"))
    now = utc_now()
    return now.replace(hour=h, minute=m, second=0, microsecond=0)


def model_spec(args, reg, name, steps=None):
    layers, channels = (int(v) for v in args.pixelcnn.split("x"))
    cfg = TrainerConfig(batch_size=args.batch_size, steps=steps or args.steps, device=args.device, seed=args.seed, log_every=50,
                        valid=False, checkpoint_every=args.curve_every or 100)
    return make_run_spec(dataset="binarized-mnist", dataset_options={"path": str(args.data)}, latent_dim=5,
                         encoder="conv", encoder_options={}, decoder="pixelcnn",
                         decoder_options={"layers": layers, "channels": channels},
                         divergences=[(d, w, {}) for d, w in MODELS[name]], trainer=cfg, reg=reg)


def best_proposal(model, x, k, args, generator):
    """Per-example (log p(x) (N,), ESS (N,)) with the refined x1.5 + 20 % prior proposal."""
    return proposal_log_likelihood(model, x, k, proposal="refined", scale_factor=1.5, prior_weight=0.2,
                                   refine_steps=args.refine_steps, refine_samples=args.refine_samples,
                                   generator=generator, batch_size=args.rows)


def curve_point(model, spec, step: int, args, x_valid) -> dict:
    """I_q(x;z) on the first ``--curve-mi-examples`` and the best-proposal NLL on the first
    ``--curve-examples`` validation images, for the model as it is at ``step``."""
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    g = torch.Generator(device=dev).manual_seed(args.seed)
    t0 = time.time()
    mi = evaluate_metrics(model, x_valid[: args.curve_mi_examples], ["mutual-information"], generator=g)["mutual-information"]
    xm = infovae.to_model(x_valid[: args.curve_examples], spec.data)
    lp, ess = best_proposal(model, xm.to(dev), args.curve_k, args, torch.Generator(device=dev).manual_seed(args.seed))
    model.train(was_training)
    nll = -lp
    return {"step": int(step), "mutual_information": mi["value"], "log_M": mi["log_M"],
            "nll": float(nll.mean()), "nll_std_err": float(nll.std() / math.sqrt(nll.numel())),
            "nll_per_pixel": float(nll.mean()) / PIXELS, "ess_mean": float(ess.mean()), "seconds": time.time() - t0}


def train(args, reg, name, res, save):
    run = args.runs / name
    ds = None
    x_valid = None
    if args.curve_every:
        spec, ds = model_spec(args, reg, name)
        x_valid = ds.split("valid")[: max(args.curve_examples, args.curve_mi_examples)]
    curve = res.setdefault("curve", [])
    t_total = res.get("train_seconds", 0.0)
    while True:
        done = int(read_status(run).get("step", 0)) if (run / "checkpoint.safetensors").exists() else 0
        if done >= args.steps or past(args.deadline):
            break
        target = min(args.steps, done + args.curve_every) if args.curve_every else args.steps
        t0 = time.time()
        if not (run / "checkpoint.safetensors").exists():
            spec, ds = model_spec(args, reg, name, steps=target)
            trainer = start_training(run, spec, ds, overwrite=run.exists())
            if args.curve_every and not any(p["step"] == 0 for p in curve):  # the untrained model
                curve.append(curve_point(trainer.model, spec, 0, args, x_valid))
                save()
        else:
            trainer = resume_training(run, steps=target)
        trainer.fit()
        if args.curve_every:
            curve.append(curve_point(trainer.model, trainer.spec, trainer.step, args, x_valid))
            print(f"[{name}] step {trainer.step}: MI {curve[-1]['mutual_information']:.3f}, NLL {curve[-1]['nll']:.2f}", flush=True)
        t_total += time.time() - t0
        res["train_seconds"] = t_total
        res["steps"] = int(read_status(run).get("step", 0))
        save()
        print(f"[{name}] trained to step {res['steps']} ({t_total:.0f} s)", flush=True)
        if read_status(run).get("status") == "interrupted":  # a signal stopped the fit: stop here too
            raise SystemExit(f"[{name}] training interrupted at step {res['steps']}; run the same command to continue")


def evaluate(args, reg, name, res, save):
    run = args.runs / name
    spec, model, _ = load_run(run, device=args.device, reg=reg, with_objective=False)
    model.eval()
    ds = create_dataset(reg, spec.dataset)
    x_all = ds.split("test")
    idx = torch.randperm(x_all.shape[0], generator=torch.Generator().manual_seed(0))[: args.eval_limit]
    x_raw = x_all[idx]
    x = infovae.to_model(x_raw, spec.data).to(model.device)
    gen = lambda seed: torch.Generator(device=model.device).manual_seed(seed)  # noqa: E731
    res["test_indices_seed"] = 0
    step = int(read_status(run).get("step", 0))
    if res.get("eval_step") != step:  # a longer-trained model: earlier evaluations are of another model
        for key in ("codes", "encoder_scale", "best_is", "k_curve", "ais"):
            res.pop(key, None)
        res["eval_step"] = step
    if "codes" not in res:
        t0 = time.time()
        base = evaluate_metrics(model, x_raw, "reconstruction,kl,active-units,mutual-information",
                                generator=gen(args.seed))
        with torch.no_grad():
            scales = torch.cat([model.posterior(x[i:i + 500]).base_dist.scale for i in range(0, x.shape[0], 500)])
        res["codes"] = {k: {kk: v[kk] for kk in ("value", "std_err", "log_M") if kk in v} for k, v in base.items()}
        res["encoder_scale"] = {"mean": float(scales.mean()), "median": float(scales.median()),
                                "geo_mean": float(scales.double().log().mean().exp())}
        res["codes_seconds"] = time.time() - t0
        save()
        print(f"[{name}] codes: " + ", ".join(f"{k} {v['value']:.3f}" for k, v in res["codes"].items())
              + f", σ geo-mean {res['encoder_scale']['geo_mean']:.3g}", flush=True)
    # 3. best proposal, chunked: first on --is-first images, the rest after AIS and the K curve.
    best = res.setdefault("best_is", {"K": args.k, "refine_steps": args.refine_steps, "refine_samples": args.refine_samples,
                                      "nll": [], "ess": [], "seconds": 0.0})
    if best["K"] != args.k or best["refine_steps"] != args.refine_steps:
        raise SystemExit(f"{name}: saved best_is used K={best['K']}, refine {best['refine_steps']}; use a new --out or the same settings")

    def best_is(limit):
        while len(best["nll"]) < limit and not past(args.deadline):
            i = len(best["nll"])
            t0 = time.time()
            lp, ess = best_proposal(model, x[i:min(i + args.chunk, limit)], args.k, args, gen(args.seed + i))
            best["nll"] += (-lp).tolist()
            best["ess"] += ess.tolist()
            best["seconds"] += time.time() - t0
            save()
            v = torch.tensor(best["nll"], dtype=torch.float64)
            print(f"[{name}] best IS K={args.k} on {v.numel()}: {float(v.mean()):.2f} ± {float(v.std() / math.sqrt(v.numel())):.2f}", flush=True)

    best_is(min(args.is_first or x.shape[0], x.shape[0]))
    # 4. AIS, --ais-batch images at a time, before the K curve: it is what says how tight the rest is.
    if args.ais:
        t, s, lf = (int(v) for v in args.ais.split(","))
        a = res.setdefault("ais", {"T": t, "S": s, "L": lf, "pilot_chains": args.pilot_chains, "nll": [], "mc_se": [],
                                   "accept_mean": [], "seconds": 0.0})
        if (a["T"], a["S"], a["L"]) != (t, s, lf):
            raise SystemExit(f"{name}: saved AIS used T,S,L = {a['T']},{a['S']},{a['L']}; use a new --out or the same settings")
        limit = min(args.ais_limit, x.shape[0])
        while len(a["nll"]) < limit and not past(args.deadline):
            i = len(a["nll"])
            j = min(i + args.ais_batch, limit)
            t0 = time.time()
            lp, se, info = ais_log_likelihood(model, x[i:j], steps=t, chains=s, leapfrog_steps=lf,
                                              pilot_chains=args.pilot_chains,
                                              generator=gen(args.seed + i), batch_size=max(args.rows, s * (j - i)))
            a["nll"] += (-lp).tolist()
            a["mc_se"] += se.tolist()
            a["accept_mean"] += [info["accept_mean"]] * (j - i)
            a["seconds"] += time.time() - t0
            save()
            print(f"[{name}] AIS images {i}-{j - 1}: {float(-lp.mean()):.2f} (best IS {sum(best['nll'][i:j]) / max(1, len(best['nll'][i:j])):.2f}, "
                  f"accept {info['accept_mean']:.2f}, {time.time() - t0:.0f} s)", flush=True)

    # 5. NLL against K on a subset.
    kc = res.setdefault("k_curve", {"n": args.ks_limit, "encoder": {}, "best": {}})
    xs = x[: args.ks_limit]
    for label in ("best", "encoder"):
        for k in args.ks:
            if str(k) in kc[label] or past(args.deadline):
                continue
            t0 = time.time()
            g = gen(args.seed)
            if label == "best":
                lp, ess = best_proposal(model, xs, k, args, g)
            else:
                lp, ess = proposal_log_likelihood(model, xs, k, generator=g, batch_size=args.rows)
            nll = -lp
            kc[label][str(k)] = {"value": float(nll.mean()), "std_err": float(nll.std() / math.sqrt(nll.numel())),
                                 "ess_mean": float(ess.mean()), "nll": nll.tolist(), "seconds": time.time() - t0}
            save()
            print(f"[{name}] {label} K={k} on {xs.shape[0]}: {float(nll.mean()):.2f} (ESS {float(ess.mean()):.1f})", flush=True)
    best_is(x.shape[0])

def _mean_se(values) -> tuple:
    v = torch.tensor(values, dtype=torch.float64)
    return float(v.mean()), (float(v.std() / math.sqrt(v.numel())) if v.numel() > 1 else float("nan")), int(v.numel())


def _paired(results, key, base, n) -> dict:
    """{model: (mean difference to ``base``, paired s.e.)} over the first n images of results[m][key]["nll"]."""
    b = torch.tensor(results[base][key]["nll"][:n], dtype=torch.float64)
    out = {}
    for m, r in results.items():
        d = torch.tensor(r[key]["nll"][:n], dtype=torch.float64) - b
        out[m] = (float(d.mean()), float(d.std() / math.sqrt(n)) if n > 1 else float("nan"))
    return out


def markdown(results) -> str:
    """Table 1 (codes, best-proposal IS, AIS, paired differences to the first model), then NLL against K.
    "train s" is wall time of training alone (the curve points' time subtracted)."""
    names = list(results)
    base = names[0]
    n_is = min(len(r.get("best_is", {}).get("nll", [])) for r in results.values())
    n_ais = min(len(r.get("ais", {}).get("nll", [])) for r in results.values())
    d_is = _paired(results, "best_is", base, n_is) if n_is else {}
    d_ais = _paired(results, "ais", base, n_ais) if n_ais > 0 else {}
    first = results[base]
    lines = [f"| model | steps | train s | recon. nats | KL nats | I_q(x;z) (log M) | active | enc. σ geo-mean | "
             f"best IS, {n_is} images (ESS of K={first.get('best_is', {}).get('K')}) | vs {base} (paired) | "
             f"AIS, {n_ais} images (accept) | vs {base} (paired) | best IS on the AIS images |",
             "| --- " * 13 + "|"]
    for m, r in results.items():
        c = r.get("codes", {})
        g = lambda k, f=".2f": format(c[k]["value"], f) if k in c else "—"  # noqa: E731
        mi = f"{c['mutual-information']['value']:.2f} ({c['mutual-information']['log_M']:.2f})" if "mutual-information" in c else "—"
        best = r.get("best_is", {})
        bm, bs, _ = _mean_se(best["nll"][:n_is]) if n_is else (float("nan"),) * 3
        ess = sum(best["ess"][:n_is]) / n_is if n_is else float("nan")
        a = r.get("ais", {})
        am, asd, _ = _mean_se(a["nll"][:n_ais]) if n_ais else (float("nan"),) * 3
        acc = sum(a["accept_mean"][:n_ais]) / n_ais if n_ais else float("nan")
        bam = _mean_se(best["nll"][:n_ais])[0] if n_ais and len(best.get("nll", [])) >= n_ais else float("nan")
        di = d_is.get(m, (float("nan"),) * 2)
        da = d_ais.get(m, (float("nan"),) * 2)
        lines.append(
            f"| {m} | {r.get('steps', '—')} | {r.get('train_seconds', float('nan')) - sum(p['seconds'] for p in r.get('curve', [])):.0f} | {g('reconstruction')} | {g('kl')} | {mi} | "
            f"{g('active-units', '.0f')} | {r.get('encoder_scale', {}).get('geo_mean', float('nan')):.3g} | "
            f"{bm:.2f} ± {bs:.2f} ({ess:.1f}) | {di[0]:+.2f} ± {di[1]:.2f} | {am:.2f} ± {asd:.2f} ({acc:.2f}) | "
            f"{da[0]:+.2f} ± {da[1]:.2f} | {bam:.2f} |")
    ks = sorted({int(k) for r in results.values() for k in r.get("k_curve", {}).get("encoder", {})})
    if ks:
        n = min(r["k_curve"]["n"] for r in results.values() if "k_curve" in r)
        lines += ["", f"NLL against K on the first {n} images (mean, ESS in brackets):", "",
                  "| model | proposal | " + " | ".join(f"K={k}" for k in ks) + " |", "| --- " * (2 + len(ks)) + "|"]
        for m, r in results.items():
            for label, text in (("encoder", "q(z\\|x)"), ("best", "refined x1.5 + prior 0.2")):
                cells = []
                for k in ks:
                    v = r.get("k_curve", {}).get(label, {}).get(str(k))
                    cells.append("—" if v is None else f"{v['value']:.2f} ({v['ess_mean']:.1f})")
                lines.append(f"| {m} | {text} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--model", default=None, choices=list(MODELS))
    ap.add_argument("--table", default="", help="print the Markdown table of these result JSONs (comma-separated; the first is the reference)")
    ap.add_argument("--runs", type=Path, default=Path("runs/table1_cpu"))
    ap.add_argument("--out", type=Path, default=None, help="results JSON (default RUNS/MODEL.json)")
    ap.add_argument("--phase", choices=("train", "evaluate", "both"), default="both")
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--pixelcnn", default="2x16", help="LAYERSxCHANNELS of the gated PixelCNN")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--curve-every", type=int, default=0, help="score MI and NLL every N training steps (Figure 1)")
    ap.add_argument("--curve-examples", type=int, default=100, help="validation images for the curve's NLL")
    ap.add_argument("--curve-mi-examples", type=int, default=500, help="validation images for the curve's MI")
    ap.add_argument("--curve-k", type=int, default=32)
    ap.add_argument("--eval-limit", type=int, default=1000)
    ap.add_argument("--k", type=int, default=32, help="importance samples of the best proposal on every image")
    ap.add_argument("--refine-steps", type=int, default=10)
    ap.add_argument("--refine-samples", type=int, default=2)
    ap.add_argument("--chunk", type=int, default=50, help="images per saved chunk")
    ap.add_argument("--is-first", type=int, default=0,
                    help="score the best proposal on the first N images, then AIS and the K curve, then the rest (0: all first)")
    ap.add_argument("--ks", default="1,10,100,1000")
    ap.add_argument("--ks-limit", type=int, default=20)
    ap.add_argument("--ais", default="", metavar="T,S,L")
    ap.add_argument("--ais-limit", type=int, default=20)
    ap.add_argument("--ais-batch", type=int, default=1, help="images per AIS call (1 on a CPU; hundreds on a GPU)")
    ap.add_argument("--pilot-chains", type=int, default=2)
    ap.add_argument("--rows", type=int, default=1024, help="decoder rows per call")
    ap.add_argument("--deadline", default="", help="HH:MM UTC: start no new chunk after it")
    args = ap.parse_args(argv)
    if args.table:
        results = {}
        for p in args.table.split(","):
            r = json.loads(Path(p).read_text())
            results[r["model"]] = r
        print(markdown(results))
        return 0
    if args.data is None or args.model is None:
        ap.error("give --data and --model (or --table FILES)")
    args.ks = [int(k) for k in args.ks.split(",") if k]
    args.deadline = parse_deadline(args.deadline)
    if args.device == "cpu":
        torch.set_num_threads(1)
    reg = infovae.registry()
    out = args.out or args.runs / f"{args.model}.json"
    res = json.loads(out.read_text()) if out.exists() else {}
    res["model"], res["divergences"], res["pixelcnn"] = args.model, MODELS[args.model], args.pixelcnn
    res["budget"] = {"steps": args.steps, "batch_size": args.batch_size}
    res["machine"] = f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}"
    out.parent.mkdir(parents=True, exist_ok=True)

    def save():
        atomic_write_json(out, res)

    if args.phase in ("train", "both"):
        train(args, reg, args.model, res, save)
    if args.phase in ("evaluate", "both") and not past(args.deadline):
        evaluate(args, reg, args.model, res, save)
    save()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
