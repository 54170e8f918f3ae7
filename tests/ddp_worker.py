"""Run under torchrun by tests/test_distributed.py: trains small runs on every rank.

    torchrun --standalone --nproc-per-node 2 tests/ddp_worker.py OUT_DIR

For each divergence in DIVERGENCES it trains STEPS steps into OUT_DIR/<name>
(rank 0 writes the run) and every rank saves its own copy of the model and
objective state to OUT_DIR/<name>.rank<R>.safetensors, so the test can check
that the ranks agree bit for bit, and its (sharded, reduced) validation result
to OUT_DIR/<name>.valid.rank<R>.json. It also trains the resume pair for mmd:
"full" (STEPS steps) and "part" (STEPS // 2, then resumed to STEPS).

Metrics under torchrun: it trains OUT_DIR/track with ``--track`` (TRACK, on 199
validation examples, so the ranks' shards differ in size), and scores the trained
mmd run with every case of METRIC_CASES through ``evaluate_metrics(ctx=...)``,
writing each rank's results to OUT_DIR/metrics.rank<R>.json (rank 0: the results;
the others: {}). Last, every rank runs the ``infovae evaluate`` command in process
(the code ``torchrun --no-python infovae evaluate`` runs): on a missing run (its
one-line error to OUT_DIR/bad.rank<R>.txt), then on the mmd run with EVALUATE_ARGS
(what it prints to OUT_DIR/evaluate.rank<R>.txt).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

import infovae
from infovae.api import load_run, resume_training, start_training
from infovae.build import create_dataset, make_run_spec
from infovae.metrics import evaluate_metrics
from infovae.runs import TrainerConfig

STEPS = 20
BATCH = 32
DIVERGENCES = {"mmd": 100.0, "stein": 1.0, "kl": 1.0, "adversarial": 1.0}


def spec(name: str, weight: float, steps: int = STEPS, seed: int = 0):
    """The spec the single-process reference uses too (see test_distributed.py)."""
    cfg = TrainerConfig(batch_size=BATCH, steps=steps, seed=seed, log_every=5, checkpoint_every=0, device="cpu", valid=True)
    opts = {"adversarial": {"hidden": 16, "lr": 1e-3}}.get(name, {})
    return make_run_spec(
        dataset="digits", dataset_options={}, latent_dim=3, encoder="mlp", encoder_options={"hidden": 16},
        decoder="bernoulli-mlp", decoder_options={"hidden": 16}, divergences=[(name, weight, opts)], trainer=cfg,
        reg=infovae.registry(),
    )


TRACK = "nll,mutual-information,mmd-prior,logdet-cov,kl,active-units,reconstruction"
TRACK_STEPS = 10  # two epoch ends: 1397 training digits, 5 steps of 256 per epoch

# Sharded metrics on 199 test examples (shards of 100 and 99) with batch_size 96, so that the plain
# IS batches (3 examples), the refined-proposal blocks (9) and the AIS blocks (24) straddle the shards.
EVAL_EXAMPLES, EVAL_BATCH, EVAL_SEED = 199, 96, 7
METRIC_CASES = {
    "nll-is": ("nll", {"num_samples": 30}),
    "nll-refined": ("nll", {"num_samples": 10, "proposal": "refined", "refine_steps": 3}),
    "nll-ais": ("nll", {"estimator": "ais", "ais_steps": 6, "ais_chains": 4, "leapfrog_steps": 2}),
    "mutual-information": ("mutual-information", {}),
    "mutual-information-50": ("mutual-information", {"mi_points": 50}),
    "mmd-prior": ("mmd-prior", {}),
    "logdet-cov": ("logdet-cov", {}),
    "kl": ("kl", {}),
    "active-units": ("active-units", {}),
    "reconstruction": ("reconstruction", {}),
    "semi-supervised": ("semi-supervised", {"num_labels": 40}),
    "class-distribution": ("class-distribution", {}),  # rank 0 alone
}


def track_spec(seed: int = 0):
    cfg = TrainerConfig(batch_size=256, steps=TRACK_STEPS, seed=seed, log_every=5, checkpoint_every=0, device="cpu", valid=True,
                        track=TRACK, track_examples=199, track_nll_samples=20)
    return make_run_spec(
        dataset="digits", dataset_options={}, latent_dim=3, encoder="mlp", encoder_options={"hidden": 16},
        decoder="bernoulli-mlp", decoder_options={"hidden": 16}, divergences=[("mmd", 100.0, {})], trainer=cfg,
        reg=infovae.registry(),
    )


def evaluate_cases(run: Path, ctx=None) -> dict:
    """Every METRIC_CASES entry on the run's first 199 test examples (ctx: under torchrun)."""
    reg = infovae.registry()
    spec, model, _ = load_run(run, device="cpu", reg=reg, with_objective=False)
    ds = create_dataset(reg, spec.dataset)
    x, labels = ds.split("test")[:EVAL_EXAMPLES], ds.labels("test")[:EVAL_EXAMPLES]
    out = {}
    for key, (name, options) in METRIC_CASES.items():
        res = evaluate_metrics(model, x, [name], labels=labels, generator=torch.Generator().manual_seed(EVAL_SEED),
                               batch_size=EVAL_BATCH, options={name: options}, reg=reg, ctx=ctx)
        if name in res:
            out[key] = res[name]
    return out


EVALUATE_METRICS = "nll,mutual-information,mmd-prior,logdet-cov,kl,active-units,reconstruction"
EVALUATE_ARGS = ["--metrics", EVALUATE_METRICS, "-o", "nll.num_samples=20", "--batch-size", "96", "--limit", "199",
                 "--device", "cpu", "--json"]


def run_cli(args) -> str:
    """``infovae ARGS`` in this process: what it prints, or its one-line error."""
    import contextlib
    import io

    import click

    from infovae.cli.main import cli

    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            cli.main(args, prog_name="infovae", standalone_mode=False)
    except click.ClickException as exc:
        return f"Error: {exc.format_message()}"
    return out.getvalue()


def state(trainer):
    tensors = {f"model.{k}": v.detach().clone().contiguous() for k, v in trainer.model.state_dict().items()}
    tensors.update({f"objective.{k}": v.detach().clone().contiguous() for k, v in trainer.objective.state_dict().items()})
    return tensors


def main(out: Path) -> None:
    torch.set_num_threads(1)
    for name, weight in DIVERGENCES.items():
        tr = start_training(out / name, *spec(name, weight))
        tr.fit()
        save_file(state(tr), str(out / f"{name}.rank{tr.ctx.rank}.safetensors"))
        (out / f"{name}.valid.rank{tr.ctx.rank}.json").write_text(json.dumps(tr.validate()))
    start_training(out / "part", *spec("mmd", 100.0, steps=STEPS // 2)).fit()
    tr = resume_training(out / "part", steps=STEPS)
    tr.fit()
    start_training(out / "track", *track_spec()).fit()
    rank = tr.ctx.rank
    (out / f"metrics.rank{rank}.json").write_text(json.dumps(evaluate_cases(out / "mmd", tr.ctx)))
    (out / f"bad.rank{rank}.txt").write_text(run_cli(["evaluate", str(out / "missing"), "--device", "cpu"]))
    (out / f"evaluate.rank{rank}.txt").write_text(run_cli(["evaluate", str(out / "mmd"), *EVALUATE_ARGS]))
    tr.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
