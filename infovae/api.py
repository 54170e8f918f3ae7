"""High-level entry points: start, resume and load runs (what the CLI calls).

What a run directory guarantees (see the README, "What a run guarantees"):
one writer at a time (``RunLock``); nothing is written before every check passes;
``overwrite`` deletes only a run's own files, and only in a directory that is a run.
"""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Callable, Optional

from .errors import CapabilityError, PluginOptionError, RunError, StorageError
from .io import atomic_write_json, make_dir, remove_stale_temps
from .registry import Registry, registry as default_registry
from .runs import (
    CHECKPOINT_FILE, MODEL_FILE, SAMPLES_DIR, SPEC_FILE, TRAINER_FILES, RunLock, RunSpec, check_trainer_config,
    clear_run, is_run, load_spec, spec_is_valid,
)


def _retryable(out: Path) -> bool:
    """A run that never reached a checkpoint: a valid spec.json and no weights at all."""
    return spec_is_valid(out) and not os.path.lexists(out / CHECKPOINT_FILE) and not os.path.lexists(out / MODEL_FILE)


def check_out_dir(out, overwrite: bool) -> None:
    """Refuse an --out that cannot take a new run, before any work (writes nothing)."""
    out = Path(out)
    if os.path.lexists(out) and not out.is_dir():
        raise RunError(f"--out {out} exists and is not a directory")
    for parent in out.parents:
        if os.path.lexists(parent) and not parent.is_dir():
            raise StorageError(f"cannot create {out}: {parent} is a file, not a directory")
    if out.is_dir() and is_run(out):
        if not overwrite and not _retryable(out):
            raise RunError(f"{out} already holds a run. Continue it with --resume {out}, choose another --out, or pass --overwrite to replace it")
        clear_run(out, _why(overwrite), dry_run=True)


def _why(overwrite: bool) -> str:
    return "--overwrite" if overwrite else "a retry into a run that never reached a checkpoint"


def prepare_run_dir(out: Path, overwrite: bool) -> None:
    """Make ``out`` ready for a fresh run (the caller holds its lock).

    An existing run is cleared only with ``overwrite``, or when it never reached a checkpoint
    (a retry); either way only the run's own files are deleted, and foreign files make it refuse.
    """
    out = Path(out)
    check_out_dir(out, overwrite)
    if out.is_dir() and is_run(out):
        clear_run(out, _why(overwrite))
    refuse_links(out)
    _remove_own_temps(out)


def refuse_links(run_dir: Path) -> None:
    """The run's own names must not be symbolic links (a write would leave the run)."""
    for name in TRAINER_FILES + (SAMPLES_DIR,):
        if os.path.islink(Path(run_dir) / name):
            raise StorageError(f"{Path(run_dir) / name} is a symbolic link; infovae never writes through links in a run: remove it")


def _remove_own_temps(run_dir: Path) -> None:
    """Stale temporary files the trainer left when killed (only our own pattern, only its files)."""
    remove_stale_temps(run_dir, lambda name: name in TRAINER_FILES)
    remove_stale_temps(run_dir / SAMPLES_DIR, lambda name: name == "final.png" or (name.startswith("epoch_") and name.endswith(".png")))


def _human_bytes(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover


def machine_memory_bytes() -> Optional[int]:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return None


def check_memory(spec: RunSpec, reg: Optional[Registry] = None, training: bool = True, divergences: bool = True) -> Optional[int]:
    """Refuse a model whose parameters clearly cannot fit in this machine's memory.

    The model is built on torch's "meta" device (shapes only, nothing allocated). Training
    needs at least 16 bytes per float32 parameter (weights, gradients, Adam's two moments);
    loading needs 4. Returns the estimate in bytes (None when a plugin cannot be built on
    the meta device; then no estimate is made).
    """
    import torch

    from .build import build_model
    from .errors import InfovaeError

    try:
        with torch.device("meta"):
            model, objective = build_model(spec, reg, divergences=divergences)
    except InfovaeError:
        raise
    except Exception:  # noqa: BLE001 - some plugins compute at construction; no estimate then
        return None
    from torch.nn.parameter import is_lazy

    params = [t for m in (model, objective) if m is not None for t in list(m.parameters()) + list(m.buffers()) if not is_lazy(t)]
    n = sum(t.numel() for t in params)
    per = 16 if training else 4
    need = sum(t.numel() * t.element_size() for t in params) * per // 4
    have = machine_memory_bytes()
    if have is not None and need > have:
        what = "train" if training else "load"
        raise PluginOptionError(
            f"this model has {n:,} parameters and needs about {_human_bytes(need)} of memory to {what} "
            f"({per} bytes per parameter), more than this machine's {_human_bytes(have)}; "
            f"choose a smaller latent dimension (now {spec.latent_dim}) or smaller networks"
        )
    return need


def start_training(out, spec: RunSpec, dataset, overwrite: bool = False, reg: Optional[Registry] = None, on_log: Optional[Callable] = None):
    """Create the run directory and a Trainer for a fresh run (nothing is written before all checks pass).

    Takes the run's lock (held by the Trainer until ``fit`` ends); a run held by another process
    is refused, naming its pid.
    """
    from .trainer import Trainer

    out = Path(out)
    check_out_dir(out, overwrite)
    try:
        check_trainer_config(spec.trainer)
    except ValueError as exc:
        raise PluginOptionError(str(exc)) from None
    check_memory(spec, reg)
    trainer = Trainer(out, spec, dataset, registry=reg, on_log=on_log)  # checks data and batch size first
    from .probe import probe_training

    probe_training(spec, trainer.model, trainer.objective, reg)  # every plugin runs once before the directory exists
    if trainer._is_writer():  # under torchrun rank 0 alone creates the run (under its lock); the others wait
        make_dir(out)
        lock = RunLock(out).acquire()
        try:
            prepare_run_dir(out, overwrite)
            atomic_write_json(out / SPEC_FILE, spec.to_json(), root=out)
        except BaseException:
            lock.release()
            raise
        trainer.run_lock = lock
    trainer.ctx.barrier()
    return trainer


def resume_training(run_dir, steps: Optional[int] = None, epochs: Optional[int] = None, reg: Optional[Registry] = None, on_log: Optional[Callable] = None):
    """A Trainer positioned at the run's last checkpoint; ``steps``/``epochs`` may extend the budget.

    Everything is checked (values, lock, checkpoint, that the new budget lies beyond the
    checkpoint) before spec.json is rewritten.
    """
    from .build import create_dataset
    from .trainer import Trainer

    run_dir = Path(run_dir)
    spec = load_spec(run_dir)
    for flag, value in (("--steps", steps), ("--epochs", epochs)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise PluginOptionError(f"{flag} must be an integer >= 1, got {value!r}")
    if not os.path.lexists(run_dir / CHECKPOINT_FILE):
        raise RunError(f"{run_dir} has no {CHECKPOINT_FILE}: it never reached a checkpoint. Start it again with --out {run_dir} "
                       "(a run without a checkpoint is replaced without --overwrite)")
    reg = reg or default_registry()
    changed = steps is not None or epochs is not None
    if changed:
        spec = replace(spec, trainer=replace(spec.trainer, steps=steps, epochs=epochs if epochs is not None else spec.trainer.epochs))
    try:
        check_memory(spec, reg)
        dataset = create_dataset(reg, spec.dataset)
        trainer = Trainer(run_dir, spec, dataset, registry=reg, on_log=on_log)
    except (PluginOptionError, CapabilityError) as exc:  # options read from spec.json
        raise RunError(f"{run_dir / SPEC_FILE} is corrupt: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    lock = RunLock(run_dir).acquire() if trainer._is_writer() else None
    try:
        trainer.load_checkpoint()
        if trainer.step >= trainer.total_steps:
            if changed:
                raise RunError(f"{run_dir} is already at step {trainer.step}; the budget asked for ({trainer.total_steps} steps) "
                               f"would end before it: give --steps larger than {trainer.step} (nothing was changed)")
            raise RunError(f"{run_dir} already finished its {trainer.total_steps} steps; give a larger --steps or --epochs to continue it")
        if lock is not None:
            refuse_links(run_dir)
            _remove_own_temps(run_dir)
            if changed:
                atomic_write_json(run_dir / SPEC_FILE, spec.to_json(), root=run_dir)
            trainer._truncate_metrics(trainer.step)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    trainer.run_lock = lock
    return trainer


def load_run(run_dir, device: str = "auto", reg: Optional[Registry] = None, with_objective: bool = True):
    """(spec, model, objective) with trained weights, in eval mode, on ``device``.

    ``with_objective=False`` builds no divergence (objective None): sampling and evaluation
    need none, so a run whose training-only divergence is not installed still loads.
    Reads model.safetensors (or, when only the checkpoint was written, the weights in
    checkpoint.safetensors). Every file is validated; loading never executes code.
    """
    from .build import build_model, resolve_device
    from .io import read_safetensors
    from .trainer import load_weights

    run_dir = Path(run_dir)
    spec = load_spec(run_dir)
    path = run_dir / MODEL_FILE
    if not path.exists():
        path = run_dir / CHECKPOINT_FILE
        if not path.exists():
            raise RunError(f"{run_dir} has no {MODEL_FILE}: training never reached a checkpoint")
    try:
        tensors, _ = read_safetensors(path)
    except Exception as exc:  # noqa: BLE001
        raise RunError(f"{path} is corrupt: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    reg = reg or default_registry()
    try:
        check_memory(spec, reg, training=False, divergences=with_objective)
        model, objective = build_model(spec, reg, divergences=with_objective)
    except (PluginOptionError, CapabilityError, TypeError, ValueError) as exc:
        raise RunError(f"{run_dir / SPEC_FILE} is corrupt: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    load_weights(model, objective, tensors, where=str(path))
    dev = resolve_device(device)
    return spec, model.to(dev).eval(), None if objective is None else objective.to(dev).eval()
