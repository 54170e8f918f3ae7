"""How close is the training loop to this core's fp32 limit? A figure: achieved GFLOP/s against the measured peak.

- Peak: the best of repeated 2048 x 2048 x 2048 float32 matmuls on one thread
  (``torch.utils.benchmark``, ``blocked_autorange``), 2 n^3 FLOP each.
- FLOP per training example: ``torch.utils.flop_counter.FlopCounterMode`` over
  one forward + backward of the model at batch 64 (matmuls; Adam's and the
  elementwise work are not counted, so achieved figures are a slight
  underestimate of the work done), divided by 64.
- Achieved: examples/s x FLOP/example, from ``benchmarks/peers_training.py --json``
  (median of the rounds, whiskers min..max) and, when given, per logging window
  from ``benchmarks/denormals.py --json`` (the late-epoch denormal dip).

Run: ``python benchmarks/training_gflops.py --peers peers.json [more.json ...] --denormals denormals.json --out benchmarks/training_gflops.png``.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def peak_gflops(n: int = 2048, repeats: int = 5) -> float:
    import torch
    import torch.utils.benchmark as tb

    torch.set_num_threads(1)
    a, b = torch.randn(n, n), torch.randn(n, n)
    timer = tb.Timer("a @ b", globals={"a": a, "b": b}, num_threads=1)
    best = math.inf
    for _ in range(repeats):
        best = min(best, min(timer.blocked_autorange(min_run_time=1.0).times))
    return 2 * n**3 / best / 1e9


def flop_per_example(config: str, loss: str, data: str, batch: int = 64) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    import infovae
    from infovae.build import build_model, make_run_spec
    from infovae.runs import TrainerConfig
    from peers_training import CONFIGS, MMD_WEIGHT

    c = CONFIGS[config]
    opts = {"hidden": c["hidden"], "layers": c["layers"]}
    div = ("kl", 1.0, {}) if loss == "elbo" else ("mmd", MMD_WEIGHT, {"kernel": "rbf", "bandwidth": math.sqrt(c["latent_dim"]), "estimator": "unbiased"})
    ds_name, ds_opts = ("binarized-mnist", {"path": data}) if config == "mnist" else ("digits", {})
    spec, ds = make_run_spec(dataset=ds_name, dataset_options=ds_opts, latent_dim=c["latent_dim"], encoder="mlp", encoder_options=opts,
                             decoder="bernoulli-mlp", decoder_options=opts, divergences=[div], trainer=TrainerConfig(), reg=infovae.registry())
    model, objective = build_model(spec, infovae.registry())
    x = infovae.to_model(ds.split("train")[:batch], spec.data)
    with FlopCounterMode(display=False) as fc:
        loss_value, _, _ = objective(model, x)
        loss_value.backward()
    return fc.get_total_flops() / batch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--peers", required=True, nargs="+", help="JSON file(s) from benchmarks/peers_training.py --json")
    ap.add_argument("--denormals", help="JSON from benchmarks/denormals.py --json (optional second panel)")
    ap.add_argument("--data", default=str(HERE.parent.parent / "shared" / "data" / "binarized_mnist.npz"))
    ap.add_argument("--out", default=str(HERE / "training_gflops.png"))
    ap.add_argument("--json", dest="json_out")
    a = ap.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    peers = {}
    for path in a.peers:
        peers.update(json.loads(Path(path).read_text())["results"])
    peak = peak_gflops()
    print(f"fp32 peak, one thread, 2048^3 matmul: {peak:.1f} GFLOP/s")
    rows = []
    for key, res in peers.items():
        config, loss = key.split("/")
        fpe = flop_per_example(config, loss, a.data)
        for contender in ("infovae", "pythae", "infovae-keep-denormals"):
            if contender not in res:
                continue
            s = res[contender]
            g = [v * fpe / 1e9 for v in (s["loop_min"], s["loop_median"], s["loop_max"])]
            rows.append({"config": config, "loss": loss, "contender": contender, "mflop_per_example": fpe / 1e6,
                         "gflops_min": g[0], "gflops_median": g[1], "gflops_max": g[2], "fraction_of_peak": g[1] / peak})
            print(f"{config:6} {loss:4} {contender:24} {fpe / 1e6:6.2f} MFLOP/example  {g[1]:6.1f} GFLOP/s median "
                  f"({g[0]:.1f}..{g[2]:.1f}), {100 * g[1] / peak:.0f}% of peak")
    panels = 2 if a.denormals else 1
    fig, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 4.2), squeeze=False)
    ax = axes[0][0]
    labels = [f"{r['config']} {r['loss']}\n{r['contender']}" for r in rows]
    med = [r["gflops_median"] for r in rows]
    err = [[r["gflops_median"] - r["gflops_min"] for r in rows], [r["gflops_max"] - r["gflops_median"] for r in rows]]
    colors = ["tab:blue" if r["contender"] == "infovae" else ("tab:orange" if r["contender"] == "pythae" else "tab:gray") for r in rows]
    ax.bar(range(len(rows)), med, yerr=err, color=colors, capsize=3)
    ax.axhline(peak, color="k", ls="--", lw=1)
    ax.text(len(rows) - 0.5, peak, f"fp32 matmul peak {peak:.0f}", ha="right", va="bottom", fontsize=8)
    ax.set_xticks(range(len(rows)), labels, fontsize=6.5)
    ax.set_ylabel("GFLOP/s (matmul FLOP, training loop)")
    ax.set_title("Training loop, one thread (median, min..max of rounds)", fontsize=9)
    if a.denormals:
        ax2 = axes[0][1]
        den = json.loads(Path(a.denormals).read_text())
        if "mlp-mnist" in den:
            fpe = flop_per_example("mnist", "elbo", a.data)
            for flush, color in (("on", "tab:blue"), ("off", "tab:red")):
                for i, run in enumerate(den["mlp-mnist"][flush]):
                    w = run["windows"]
                    ax2.plot([x["step"] for x in w], [x["examples_per_second"] * fpe / 1e9 for x in w], color=color, lw=0.8,
                             label=f"flush denormals {flush}" if i == 0 else None)
                    spe = run["steps_per_epoch"]
            for e in range(1, 1 + max(x["step"] for x in w) // spe):
                ax2.axvline(e * spe, color="0.8", lw=0.6)
            ax2.axhline(peak, color="k", ls="--", lw=1)
            ax2.set_xlabel("step (grey: epoch ends)")
            ax2.set_ylabel("GFLOP/s per logging window")
            ax2.set_title("MLP VAE, binarized MNIST, ELBO: per window", fontsize=9)
            ax2.legend(fontsize=8)
    fig.suptitle("Achieved fp32 GFLOP/s against this core's measured peak (shared 2-vCPU machine)", fontsize=10)
    fig.tight_layout()
    fig.savefig(a.out, dpi=110)
    print(f"wrote {a.out}")
    if a.json_out:
        Path(a.json_out).write_text(json.dumps({"peak_gflops": peak, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
