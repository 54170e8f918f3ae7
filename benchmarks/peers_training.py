"""End-to-end training speed of infovae against pythae 0.1.2 (a peer VAE library).

Two configurations, each for the ELBO (kl=1) and for MMD-InfoVAE (mmd x100, one
rbf kernel with the same bandwidth in both tools):

- ``mnist``: binarized MNIST (50k train), MLP encoder 784-512-512-(mu, log-scale)
  with z = 16 and MLP Bernoulli decoder 16-512-512-784, 1,354,544 parameters in
  both tools, batch 64, Adam lr 1e-3, one epoch;
- ``digits``: infovae's default model (embedded 8x8 digits, 1,397 train, MLP
  64-256-256-(8 + 8) and 8-256-256-64, z = 8, batch 64, Adam 1e-3), ``--digits-epochs``.

Every measurement is a fresh process pinned to one thread (OMP_NUM_THREADS=1,
torch.set_num_threads(1)); the contenders run in alternating order, round after
round, so load on a shared machine hits them alike. Reported per contender: the
median and min examples/s of the training loop (infovae: ``examples_per_second``
of ``infovae train --json``, the steps with their batch indexing and logging;
pythae: the time of ``BaseTrainer.train_step``, its whole epoch loop with its
DataLoader) and of the whole command (process start to exit, imports and data
loading included; infovae's command also validates on the held-out split and
writes a sample grid, pythae's saves its model), and the mean training loss of the
last epoch each reached. ``infovae-keep-denormals`` is infovae with
``--no-flush-denormal``, to show what flushing denormals buys.

pythae is not a dependency of infovae. Install it for this benchmark only (its
declared requirements would reinstall torch; these are what it imports)::

    make bench-peers-setup     # or, by hand:
    .venv/bin/pip install pydantic cloudpickle imageio scipy tqdm typing-extensions
    .venv/bin/pip install --no-deps pythae==0.1.2

Run: ``python benchmarks/peers_training.py --data ../shared/data/binarized_mnist.npz``
(``--rounds``, ``--configs``, ``--losses``, ``--json out.json``).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

HERE = Path(__file__).resolve().parent
CONFIGS = {
    "mnist": {"latent_dim": 16, "hidden": 512, "layers": 2, "batch_size": 64, "lr": 1e-3, "params": 1_354_544},
    "digits": {"latent_dim": 8, "hidden": 256, "layers": 2, "batch_size": 64, "lr": 1e-3, "params": None},
}
MMD_WEIGHT = 100.0
CONTENDERS = ("infovae", "pythae", "infovae-keep-denormals")


def one_thread_env() -> Dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", INFOVAE_STRICT_PLUGINS="0", PYTHONWARNINGS="ignore")
    return env


# -- pythae side (runs in its own process) --------------------------------------------------------------------------
def pythae_model(config: str, loss: str, shape, d_in: int):
    """pythae VAE / INFOVAE_MMD with the same MLP shapes as infovae's mlp / bernoulli-mlp."""
    import torch
    from torch import nn
    from pythae.models import INFOVAE_MMD, INFOVAE_MMD_Config, VAE, VAEConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder

    c = CONFIGS[config]
    h, z = c["hidden"], c["latent_dim"]

    def trunk(width_in):
        mods, w = [], width_in
        for _ in range(c["layers"]):
            mods += [nn.Linear(w, h), nn.ReLU()]
            w = h
        return nn.Sequential(*mods)

    class Encoder(BaseEncoder):
        def __init__(self):
            super().__init__()
            self.net, self.mu, self.log_var = trunk(d_in), nn.Linear(h, z), nn.Linear(h, z)

        def forward(self, x):
            t = self.net(x.flatten(1))
            return ModelOutput(embedding=self.mu(t), log_covariance=self.log_var(t))

    class Decoder(BaseDecoder):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(trunk(z), nn.Linear(h, d_in))

        def forward(self, zz):
            return ModelOutput(reconstruction=torch.sigmoid(self.net(zz)).view(zz.shape[0], *shape))

    if loss == "elbo":
        cfg = VAEConfig(input_dim=tuple(shape), latent_dim=z, reconstruction_loss="bce")
        return VAE(cfg, encoder=Encoder(), decoder=Decoder())
    # loss = recon + (1 - alpha) KL + (alpha + lbd - 1) MMD: alpha = 1, lbd = 100 is InfoVAE with beta 0, lambda 100.
    # pythae's rbf kernel is exp(-r / (2 z bandwidth^2)): bandwidth 1 is infovae's sigma = sqrt(z).
    cfg = INFOVAE_MMD_Config(input_dim=tuple(shape), latent_dim=z, reconstruction_loss="bce", kernel_choice="rbf",
                             alpha=1.0, lbd=MMD_WEIGHT, kernel_bandwidth=1.0)
    return INFOVAE_MMD(cfg, encoder=Encoder(), decoder=Decoder())


def pythae_worker(args) -> None:
    """Train with pythae's BaseTrainer; print one JSON line with the loop time and the last epoch's loss."""
    import numpy as np
    import torch

    torch.set_num_threads(1)
    from pythae.data.datasets import BaseDataset
    from pythae.trainers import BaseTrainer, BaseTrainerConfig

    with np.load(args.npz, allow_pickle=False) as f:
        x = torch.from_numpy(f["x_train"].astype(np.float32))
    shape = (1, 28, 28) if x.shape[1] == 784 else (1, 8, 8)
    x = x.view(-1, *shape)
    model = pythae_model(args.config, args.loss, shape, x[0].numel())
    c = CONFIGS[args.config]
    tcfg = BaseTrainerConfig(output_dir=args.out, num_epochs=args.epochs, per_device_train_batch_size=c["batch_size"],
                             learning_rate=c["lr"], optimizer_cls="Adam", no_cuda=True, seed=args.seed)
    trainer = BaseTrainer(model, train_dataset=BaseDataset(x, torch.zeros(len(x))), training_config=tcfg)
    loop = {"seconds": 0.0, "losses": []}
    step = trainer.train_step

    def timed_step(epoch):
        t0 = time.perf_counter()
        out = step(epoch)
        loop["seconds"] += time.perf_counter() - t0
        loop["losses"].append(float(out))
        return out

    trainer.train_step = timed_step
    trainer.train()
    n = len(x) * args.epochs
    print(json.dumps({"examples": n, "loop_seconds": loop["seconds"], "examples_per_second": n / loop["seconds"],
                      "loss": loop["losses"][-1], "params": sum(p.numel() for p in model.parameters())}))


# -- infovae side ---------------------------------------------------------------------------------------------------
def infovae_args(config: str, loss: str, data: str, epochs: int, out: str, flush: bool) -> List[str]:
    c = CONFIGS[config]
    z = c["latent_dim"]
    args = ["train", "-z", str(z), "-b", str(c["batch_size"]), "--lr", str(c["lr"]), "--epochs", str(epochs),
            "-o", f"encoder.hidden={c['hidden']}", "-o", f"encoder.layers={c['layers']}",
            "-o", f"decoder.hidden={c['hidden']}", "-o", f"decoder.layers={c['layers']}",
            "--out", out, "--overwrite", "--json", "--quiet", "--device", "cpu"]
    if config == "mnist":
        args += ["-d", "binarized-mnist", "-o", f"dataset.path={data}"]
    if loss == "elbo":
        args += ["-r", "kl=1"]
    else:
        args += ["-r", f"mmd={MMD_WEIGHT:g}", "-o", "mmd.kernel=rbf", "-o", f"mmd.bandwidth={math.sqrt(z)!r}",
                 "-o", "mmd.estimator=unbiased"]
    if not flush:
        args.append("--no-flush-denormal")
    return args


def last_epoch_loss(run_dir: Path, steps_per_epoch: int) -> float:
    """Mean train/loss over the last epoch's logging windows, weighted by their steps."""
    recs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    end = recs[-1]["step"]
    total, weight, prev = 0.0, 0, 0
    for r in recs:
        n = r["step"] - prev
        if r["step"] > end - steps_per_epoch and "train/loss" in r:
            total, weight = total + r["train/loss"] * n, weight + n
        prev = r["step"]
    return total / weight


def infovae_param_count(config: str, loss: str, data: str) -> int:
    import infovae
    from infovae.build import build_model, make_run_spec
    from infovae.runs import TrainerConfig

    c = CONFIGS[config]
    ds_name, ds_opts = ("binarized-mnist", {"path": data}) if config == "mnist" else ("digits", {})
    opts = {"hidden": c["hidden"], "layers": c["layers"]}
    div = ("kl", 1.0, {}) if loss == "elbo" else ("mmd", MMD_WEIGHT, {"kernel": "rbf", "bandwidth": math.sqrt(c["latent_dim"])})
    spec, _ = make_run_spec(dataset=ds_name, dataset_options=ds_opts, latent_dim=c["latent_dim"], encoder="mlp",
                            encoder_options=opts, decoder="bernoulli-mlp", decoder_options=opts, divergences=[div],
                            trainer=TrainerConfig(), reg=infovae.registry())
    model, objective = build_model(spec, infovae.registry())
    return sum(p.numel() for p in model.parameters()) + sum(p.numel() for p in objective.parameters())


def pythae_param_count(config: str, loss: str) -> int:
    shape = (1, 28, 28) if config == "mnist" else (1, 8, 8)
    model = pythae_model(config, loss, shape, shape[1] * shape[2])
    return sum(p.numel() for p in model.parameters())


# -- driver -----------------------------------------------------------------------------------------------------------
def run_one(contender: str, config: str, loss: str, data: str, npz: str, epochs: int, tmp: Path, seed: int) -> Dict:
    out = str(tmp / f"{contender}-{config}-{loss}")
    if contender == "pythae":
        cmd = [sys.executable, __file__, "--pythae-worker", "--config", config, "--loss", loss, "--npz", npz,
               "--epochs", str(epochs), "--out", out, "--seed", str(seed)]
    else:
        exe = Path(sys.executable).with_name("infovae")
        cmd = [str(exe)] + infovae_args(config, loss, data, epochs, out, flush=contender == "infovae")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=one_thread_env())
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{contender} {config} {loss} failed:\n{proc.stderr[-3000:]}")
    res = json.loads(proc.stdout[proc.stdout.index("{"):]) if contender != "pythae" else json.loads(proc.stdout.strip().splitlines()[-1])
    if contender != "pythae":
        spe = res["examples"] // (CONFIGS[config]["batch_size"] * epochs)
        res["loss"] = last_epoch_loss(Path(out), spe)
    return {"loop": res["examples_per_second"], "command": res["examples"] / wall, "loss": res["loss"],
            "examples": res["examples"], "wall": wall}


def summarize(samples: List[Dict]) -> Dict:
    loop = [s["loop"] for s in samples]
    cmd = [s["command"] for s in samples]
    return {"loop_median": statistics.median(loop), "loop_min": min(loop), "loop_max": max(loop),
            "command_median": statistics.median(cmd), "command_min": min(cmd),
            "loss_median": statistics.median(s["loss"] for s in samples), "rounds": len(samples), "samples": samples}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(HERE.parent.parent / "shared" / "data" / "binarized_mnist.npz"),
                    help="binarized MNIST .npz (x_train (N, 784) 0/1)")
    ap.add_argument("--configs", default="mnist,digits")
    ap.add_argument("--losses", default="elbo,mmd")
    ap.add_argument("--contenders", default=",".join(CONTENDERS))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--digits-epochs", type=int, default=100, help="epochs of the digits model (infovae's default: 100)")
    ap.add_argument("--json", dest="json_out", help="write every sample and the summary here")
    ap.add_argument("--seed", type=int, default=0)
    # internal: one pythae training in this process
    ap.add_argument("--pythae-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--config", help=argparse.SUPPRESS)
    ap.add_argument("--loss", help=argparse.SUPPRESS)
    ap.add_argument("--npz", help=argparse.SUPPRESS)
    ap.add_argument("--epochs", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.pythae_worker:
        pythae_worker(args)
        return 0

    try:
        import pythae  # noqa: F401
    except ImportError:
        raise SystemExit("pythae is not installed: run 'make bench-peers-setup' (pythae 0.1.2 with --no-deps plus what it imports)")
    import numpy as np
    import torch

    torch.set_num_threads(1)
    configs = [c for c in args.configs.split(",") if c]
    losses = [x for x in args.losses.split(",") if x]
    contenders = [c for c in args.contenders.split(",") if c]
    if "mnist" in configs and not Path(args.data).is_file():
        raise SystemExit(f"binarized MNIST not found at {args.data}; pass --data PATH (or --configs digits)")
    results: Dict[str, Dict] = {}
    with tempfile.TemporaryDirectory(prefix="peers_training_") as tmpdir:
        tmp = Path(tmpdir)
        digits_npz = tmp / "digits.npz"
        if "digits" in configs:
            import infovae

            ds = infovae.registry().create("datasets", "digits")
            np.savez(digits_npz, x_train=ds.split("train").reshape(-1, 64).numpy())
        for config in configs:
            for loss in losses:
                ours, theirs = infovae_param_count(config, loss, args.data), pythae_param_count(config, loss)
                expected = CONFIGS[config]["params"]
                assert ours == theirs and (expected is None or ours == expected), (config, loss, ours, theirs, expected)
                npz = args.data if config == "mnist" else str(digits_npz)
                epochs = 1 if config == "mnist" else args.digits_epochs
                samples: Dict[str, List[Dict]] = {c: [] for c in contenders}
                for r in range(args.rounds):
                    order = contenders[r % len(contenders):] + contenders[: r % len(contenders)]
                    for c in order:
                        s = run_one(c, config, loss, args.data, npz, epochs, tmp, args.seed)
                        samples[c].append(s)
                        print(f"{config:6} {loss:4} round {r + 1}/{args.rounds} {c:24} loop {s['loop']:8.0f} ex/s  "
                              f"command {s['command']:7.0f} ex/s  loss {s['loss']:.3f}", flush=True)
                key = f"{config}/{loss}"
                results[key] = {"params": ours, **{c: summarize(v) for c, v in samples.items()}}
                if args.json_out:  # after each configuration, so a long run keeps what it measured
                    meta = {"torch": torch.__version__, "threads": 1, "rounds": args.rounds, "digits_epochs": args.digits_epochs,
                            "machine": os.uname().machine, "cpu_count": os.cpu_count()}
                    Path(args.json_out).write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    print()
    print("| config | loss | contender | loop ex/s median (min) | command ex/s median (min) | last-epoch loss | loop vs pythae | command vs pythae |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for key, res in results.items():
        config, loss = key.split("/")
        base = res.get("pythae")
        for c in contenders:
            s = res[c]
            rl = f"{s['loop_median'] / base['loop_median']:.2f}x" if base else "-"
            rc = f"{s['command_median'] / base['command_median']:.2f}x" if base else "-"
            print(f"| {config} | {loss} | {c} | {s['loop_median']:,.0f} ({s['loop_min']:,.0f}) | "
                  f"{s['command_median']:,.0f} ({s['command_min']:,.0f}) | {s['loss_median']:.2f} | {rl} | {rc} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
