"""Do denormal floats slow training down, where, and does flushing them help?

For each model, train twice in fresh processes (one thread each, alternating
order), once with ``--flush-denormal`` (infovae's default on the CPU) and once
with ``--no-flush-denormal``, and record per logging window:

- examples/s of the window;
- how many float32 values of the Adam state (exp_avg, exp_avg_sq) and of the
  parameters are denormal (0 < |v| < 1.18e-38) at the window's end.

Models:
- ``mlp-mnist``: the issue's MLP VAE on binarized MNIST (784-512-512-(16+16),
  16-512-512-784, ELBO, batch 64, Adam 1e-3), ``--mnist-epochs`` epochs;
- ``digits``: infovae's default model (digits, z = 8, mmd=100), ``--digits-epochs``;
- ``pixelcnn``: the gated PixelCNN decoder with the conv encoder on binarized
  MNIST 28x28 (ELBO, z = 16, batch ``--pixelcnn-batch``), ``--pixelcnn-steps`` steps.

Run: ``python benchmarks/denormals.py --data ../shared/data/binarized_mnist.npz --json denormals.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

HERE = Path(__file__).resolve().parent
TINY = 1.1754943508222875e-38  # smallest normal float32


def model_spec(model: str, data: str, a) -> Dict:
    if model == "mlp-mnist":
        return dict(dataset="binarized-mnist", dataset_options={"path": data}, latent_dim=16, encoder="mlp",
                    encoder_options={"hidden": 512}, decoder="bernoulli-mlp", decoder_options={"hidden": 512},
                    divergences=[("kl", 1.0, {})], batch_size=64, epochs=a.mnist_epochs, steps=None)
    if model == "digits":
        return dict(dataset="digits", dataset_options={}, latent_dim=8, encoder="mlp", encoder_options={},
                    decoder="bernoulli-mlp", decoder_options={}, divergences=[("mmd", 100.0, {})], batch_size=64,
                    epochs=a.digits_epochs, steps=None)
    if model == "pixelcnn":
        return dict(dataset="binarized-mnist", dataset_options={"path": data}, latent_dim=16, encoder="conv",
                    encoder_options={}, decoder="pixelcnn", decoder_options={}, divergences=[("kl", 1.0, {})],
                    batch_size=a.pixelcnn_batch, epochs=1, steps=a.pixelcnn_steps)
    raise SystemExit(f"unknown model {model!r}; choose mlp-mnist, digits, pixelcnn")


def count_denormals(tensors) -> int:
    import torch

    n = 0
    for t in tensors:
        if torch.is_tensor(t) and t.dtype == torch.float32 and t.numel() > 1:
            a = t.detach().abs()
            n += int(((a > 0) & (a < TINY)).sum())
    return n


def worker(a) -> None:
    """One training in this process; prints one JSON line with the per-window records."""
    import torch

    torch.set_num_threads(1)
    import infovae
    from infovae.api import start_training
    from infovae.build import make_run_spec
    from infovae.runs import TrainerConfig

    m = model_spec(a.model, a.data, a)
    cfg = TrainerConfig(batch_size=m.pop("batch_size"), epochs=m.pop("epochs"), steps=m.pop("steps"), lr=1e-3, seed=a.seed,
                        device="cpu", log_every=a.log_every, flush_denormal=a.flush == "on", valid=False)
    spec, ds = make_run_spec(trainer=cfg, reg=infovae.registry(), **m)
    windows: List[Dict] = []
    trainer = None

    def on_log(rec):
        state = [v for s in trainer.optimizer.state.values() for k, v in s.items() if k in ("exp_avg", "exp_avg_sq")]
        windows.append({"step": rec["step"], "examples_per_second": rec["examples_per_second"],
                        "denormal_adam_state": count_denormals(state),
                        "denormal_params": count_denormals(trainer.model.parameters())})

    trainer = start_training(Path(a.out), spec, ds, overwrite=True, on_log=on_log)
    summary = trainer.fit()
    print(json.dumps({"windows": windows, "examples_per_second": summary.examples_per_second,
                      "flush_denormal": summary.flush_denormal, "steps_per_epoch": trainer.steps_per_epoch,
                      "adam_state_values": sum(p.numel() for p in trainer.model.parameters()) * 2}))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(HERE.parent.parent / "shared" / "data" / "binarized_mnist.npz"))
    ap.add_argument("--models", default="mlp-mnist,digits,pixelcnn")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--mnist-epochs", type=int, default=3)
    ap.add_argument("--digits-epochs", type=int, default=100)
    ap.add_argument("--pixelcnn-steps", type=int, default=1200)
    ap.add_argument("--pixelcnn-batch", type=int, default=16)
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", dest="json_out")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--flush", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        worker(a)
        return 0
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    results: Dict[str, Dict] = {}
    with tempfile.TemporaryDirectory(prefix="denormals_") as tmp:
        for model in [m for m in a.models.split(",") if m]:
            runs: Dict[str, List[Dict]] = {"on": [], "off": []}
            for r in range(a.rounds):
                for flush in (("on", "off") if r % 2 == 0 else ("off", "on")):
                    cmd = [sys.executable, __file__, "--worker", "--model", model, "--flush", flush, "--out", f"{tmp}/{model}-{flush}",
                           "--data", a.data, "--mnist-epochs", str(a.mnist_epochs), "--digits-epochs", str(a.digits_epochs),
                           "--pixelcnn-steps", str(a.pixelcnn_steps), "--pixelcnn-batch", str(a.pixelcnn_batch),
                           "--log-every", str(a.log_every), "--seed", str(a.seed)]
                    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
                    if proc.returncode != 0:
                        raise SystemExit(f"{model} flush={flush} failed:\n{proc.stderr[-3000:]}")
                    res = json.loads(proc.stdout.strip().splitlines()[-1])
                    runs[flush].append(res)
                    w = res["windows"]
                    worst = max(x["denormal_adam_state"] for x in w)
                    print(f"{model:10} flush {flush:3} round {r + 1}: {res['examples_per_second']:8.0f} ex/s over the loop, "
                          f"most denormal Adam values {worst:,} of {res['adam_state_values']:,}", flush=True)
            results[model] = runs
            if a.json_out:  # after each model, so a long study keeps what it measured
                Path(a.json_out).write_text(json.dumps(results, indent=1))
    print()
    print("| model | flush | loop ex/s median | most denormal Adam values | ratio on/off |")
    print("| --- | --- | --- | --- | --- |")
    for model, runs in results.items():
        med = {f: statistics.median(r["examples_per_second"] for r in runs[f]) for f in runs}
        for f in ("on", "off"):
            worst = max(x["denormal_adam_state"] for r in runs[f] for x in r["windows"])
            print(f"| {model} | {f} | {med[f]:,.0f} | {worst:,} | {med['on'] / med['off']:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
