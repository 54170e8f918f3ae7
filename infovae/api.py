"""High-level entry points: start, resume and load runs (what the CLI calls)."""
from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Callable, Optional

from .errors import RunError
from .io import atomic_write_json
from .registry import Registry, registry as default_registry
from .runs import CHECKPOINT_FILE, MODEL_FILE, SPEC_FILE, RunSpec, is_run, load_spec


def prepare_run_dir(out: Path, overwrite: bool) -> None:
    """Refuse to clobber an existing run unless asked; never touch unrelated files."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunError(f"--out {out} exists and is not a directory")
    if is_run(out):
        if not overwrite:
            raise RunError(f"{out} already holds a run. Continue it with --resume {out}, choose another --out, or pass --overwrite to replace it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def start_training(out, spec: RunSpec, dataset, overwrite: bool = False, reg: Optional[Registry] = None, on_log: Optional[Callable] = None):
    """Create the run directory and a Trainer for a fresh run (nothing is written before all checks pass)."""
    from .trainer import Trainer

    out = Path(out)
    if is_run(out) and not overwrite:
        raise RunError(f"{out} already holds a run. Continue it with --resume {out}, choose another --out, or pass --overwrite to replace it")
    trainer = Trainer(out, spec, dataset, registry=reg, on_log=on_log)  # checks data and batch size first
    from .probe import probe_training

    probe_training(spec, trainer.model, trainer.objective, reg)  # every plugin runs once before the directory exists
    if trainer._is_writer():  # under torchrun rank 0 alone creates the run; the others wait for it
        prepare_run_dir(out, overwrite)
        atomic_write_json(out / SPEC_FILE, spec.to_json())
    trainer.ctx.barrier()
    return trainer


def resume_training(run_dir, steps: Optional[int] = None, epochs: Optional[int] = None, reg: Optional[Registry] = None, on_log: Optional[Callable] = None):
    """A Trainer positioned at the run's last checkpoint; ``steps``/``epochs`` may extend the budget."""
    from .build import create_dataset
    from .trainer import Trainer

    run_dir = Path(run_dir)
    spec = load_spec(run_dir)
    if not (run_dir / CHECKPOINT_FILE).exists():
        raise RunError(f"{run_dir} has no {CHECKPOINT_FILE}: it never reached a checkpoint. Start it again with --out {run_dir} --overwrite")
    reg = reg or default_registry()
    extended = steps is not None or epochs is not None
    if extended:
        spec = replace(spec, trainer=replace(spec.trainer, steps=steps, epochs=epochs if epochs is not None else spec.trainer.epochs))
    dataset = create_dataset(reg, spec.dataset)
    trainer = Trainer(run_dir, spec, dataset, registry=reg, on_log=on_log)
    if extended and trainer._is_writer():
        atomic_write_json(run_dir / SPEC_FILE, spec.to_json())
    trainer.load_checkpoint()
    return trainer


def load_run(run_dir, device: str = "auto", reg: Optional[Registry] = None, with_objective: bool = True):
    """(spec, model, objective) with trained weights, in eval mode, on ``device``.

    ``with_objective=False`` builds no divergence (objective None): sampling and evaluation
    need none, so a run whose training-only divergence is not installed still loads."""
    from .build import build_model, resolve_device
    from .io import read_safetensors
    from .trainer import load_weights

    run_dir = Path(run_dir)
    spec = load_spec(run_dir)
    path = run_dir / MODEL_FILE
    if not path.exists():
        raise RunError(f"{run_dir} has no {MODEL_FILE}: training never reached a checkpoint")
    try:
        tensors, _ = read_safetensors(path)
    except Exception as exc:  # noqa: BLE001
        raise RunError(f"{path} is corrupt ({type(exc).__name__}: {exc})") from None
    model, objective = build_model(spec, reg, divergences=with_objective)
    load_weights(model, objective, tensors, where=str(path))
    dev = resolve_device(device)
    return spec, model.to(dev).eval(), None if objective is None else objective.to(dev).eval()
