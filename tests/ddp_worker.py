"""Run under torchrun by tests/test_distributed.py: trains small runs on every rank.

    torchrun --standalone --nproc-per-node 2 tests/ddp_worker.py OUT_DIR

For each divergence in DIVERGENCES it trains STEPS steps into OUT_DIR/<name>
(rank 0 writes the run) and every rank saves its own copy of the model and
objective state to OUT_DIR/<name>.rank<R>.safetensors, so the test can check
that the ranks agree bit for bit, and its (sharded, reduced) validation result
to OUT_DIR/<name>.valid.rank<R>.json. It also trains the resume pair for mmd:
"full" (STEPS steps) and "part" (STEPS // 2, then resumed to STEPS).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

import infovae
from infovae.api import resume_training, start_training
from infovae.build import make_run_spec
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


def state(trainer):
    tensors = {f"model.{k}": v.detach().clone().contiguous() for k, v in trainer.model.state_dict().items()}
    tensors.update({f"objective.{k}": v.detach().clone().contiguous() for k, v in trainer.objective.state_dict().items()})
    return tensors


def main(out: Path) -> None:
    torch.set_num_threads(1)
    last = None
    for name, weight in DIVERGENCES.items():
        tr = start_training(out / name, *spec(name, weight))
        tr.fit()
        save_file(state(tr), str(out / f"{name}.rank{tr.ctx.rank}.safetensors"))
        (out / f"{name}.valid.rank{tr.ctx.rank}.json").write_text(json.dumps(tr.validate()))
        last = tr
    start_training(out / "part", *spec("mmd", 100.0, steps=STEPS // 2)).fit()
    tr = resume_training(out / "part", steps=STEPS)
    tr.fit()
    last = tr
    last.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
