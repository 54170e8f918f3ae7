"""Training loop: exact resume, atomic checkpoints, Ctrl-C safety, JSON-lines metrics.

Determinism: the data order of epoch e is a permutation drawn from a generator
seeded by (seed, e); all other randomness (reparameterisation, prior samples,
dropout) comes from torch's global generators, whose states are checkpointed.
Validation and sample grids run under ``torch.random.fork_rng`` with their own
seeds, so they never change the training trajectory. On CPU, N steps + resume
+ N steps therefore gives bitwise the same weights as 2N steps.

Under torchrun (``infovae.distributed``) the same loop runs on every rank:
``_setup`` joins the process group and wraps the model in DistributedDataParallel,
the batch source hands each rank its share of the global batch, the objective
gathers the codes of the global batch for the divergences, a stop flag is agreed
each step, and rank 0 alone writes (``_is_writer``) while the others wait.
"""
from __future__ import annotations

import functools
import json
import math
import signal
import threading
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import torch

from .build import build_model, resolve_device
from .distributed import GlobalBatch, check_batch, env_world_size, init as init_distributed
from .data import check_uint8_images, from_model, to_model
from .denormals import flush_denormal
from .errors import DataError, PluginOptionError, RunError, TrainingError
from .images import save_grid
from .loading import StepBatches, check_source, is_tensor, loader_batches, rows
from .io import append_text, atomic_save_safetensors, atomic_write_json, flatten_state, read_safetensors, unflatten_state
from .runs import CHECKPOINT_FILE, METRICS_FILE, MODEL_FILE, SAMPLES_DIR, STATUS_FILE, RunLock, RunSpec

GRID_N = 64


def _epoch_seed(seed: int, epoch: int) -> int:
    return (int(seed) * 1_000_003 + int(epoch) * 7919 + 17) % (2**63 - 1)


@dataclass
class TrainSummary:
    """What one ``Trainer.fit`` call did. Times in seconds, rates in examples per second.

    examples_per_second is the whole run's training-loop rate: ``examples`` (steps
    taken in this call x batch size) over ``loop_seconds``, the time of the steps
    themselves with their batch indexing and logging, but not validation, tracked
    metrics, sample grids or checkpoints. ``fit_examples_per_second`` divides by
    ``seconds``, everything ``fit`` did; ``window_examples_per_second`` is the last
    logging window alone (a detail: it moves with whatever the machine did then).
    """

    run_dir: str
    status: str
    step: int
    total_steps: int
    epoch: int
    seconds: float
    examples_per_second: float
    overhead_fraction: float
    last: Dict[str, float] = field(default_factory=dict)
    examples: int = 0
    loop_seconds: float = math.nan
    fit_examples_per_second: float = math.nan
    window_examples_per_second: float = math.nan
    flush_denormal: bool = False


def _aside(method):
    """Counts the wall time of a Trainer method as outside the training loop (``Trainer._aside_seconds``)."""

    @functools.wraps(method)
    def timed(self, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return method(self, *args, **kwargs)
        finally:
            self._aside_seconds += time.perf_counter() - t0

    return timed


# Signals that stop training gracefully: finish the step, checkpoint, status "interrupted".
STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n))


class _Interrupt:
    """SIGINT, SIGTERM and SIGHUP ask the loop to stop after the current step; a second one
    aborts (KeyboardInterrupt), except during the final write (``finishing``), which always completes.

    ``signum`` is the first signal received (the CLI exits with 128 + signum).
    """

    def __init__(self):
        self.requested = False
        self.finishing = False
        self.signum: Optional[int] = None
        self._old: Dict[int, Any] = {}
        self.abort_on_second = True  # False under torchrun: its agent forwards signals and kills workers itself
        self._depth = 0  # re-entrant: only the outermost ``with`` installs and restores handlers

    def __enter__(self):
        self._depth += 1
        if self._depth == 1 and threading.current_thread() is threading.main_thread():
            def handler(signum, frame):
                if self.signum is None:
                    self.signum = signum
                if self.requested and not self.finishing:
                    if not self.abort_on_second:
                        return
                    raise KeyboardInterrupt
                self.requested = True
                self.signum = signum

            for sig in STOP_SIGNALS:
                self._old[sig] = signal.getsignal(sig)
                signal.signal(sig, handler)
        return self

    def __exit__(self, *exc):
        self._depth -= 1
        if self._depth > 0:
            return False
        for sig, old in self._old.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)
        self._old = {}
        return False


class _GlobalLoss(torch.nn.Module):
    """What DistributedDataParallel wraps: the objective on this rank's share of the global batch.

    Only the model's parameters are DDP's; the objective (and a discriminator in it) is
    held outside the module tree, so DDP neither averages nor broadcasts it."""

    def __init__(self, model, objective, batch: GlobalBatch):
        super().__init__()
        self.model = model
        self.__dict__["objective"] = objective
        self.batch = batch

    def forward(self, x):
        return self.objective(self.model, x, batch=self.batch)


class Trainer:
    """Trains the model a RunSpec describes, writing into ``run_dir``.

    ``on_log(record)`` is called with every metrics record (for progress displays).
    """

    _aside_seconds = 0.0  # validation, tracked metrics, sample grids, checkpoints in the current fit()

    def __init__(self, run_dir, spec: RunSpec, dataset, registry=None, on_log: Optional[Callable[[Dict[str, Any]], None]] = None):
        self.run_dir = Path(run_dir)
        self.spec = spec
        self.dataset = dataset
        self.registry = registry
        self.on_log = on_log
        self.interrupt = _Interrupt()
        self.stop_signal = 0
        self.run_lock: Optional[RunLock] = None  # set by infovae.api; fit takes it when missing
        self.checkpoint_step: Optional[int] = None  # step of the checkpoint on disk, if any
        self.logger_choices: list = []  # [{"name", "options"}] of the optional loggers (see infovae.loggers)
        self.loggers = None
        self._setup()

    # -- set-up ---------------------------------------------------------------------------------
    def _setup(self) -> None:
        t = self.spec.trainer
        # Batch checks need only WORLD_SIZE: they fail before any rendezvous or data loading.
        self.local_batch_size = check_batch(t.batch_size, env_world_size())
        self.ctx = init_distributed(t.device)
        self.interrupt.abort_on_second = not self.ctx.distributed
        self.device = self.ctx.device
        torch.manual_seed(t.seed)  # the same seed on every rank: the same init and the same draws
        model, objective = build_model(self.spec, self.registry)
        self.model = model.to(self.device)
        self.objective = objective.to(self.device)
        # The fused kernel updates each tensor in one pass: on one CPU core the foreach path's eight passes
        # over the parameters took 38% of an MLP VAE's step (benchmarks/RESULTS.md, issue 16).
        # A checkpoint keeps its optimizer's implementation: load_state_dict restores the saved group flags.
        fused = {"fused": True} if self.device.type in ("cpu", "cuda") else {"foreach": True}
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=t.lr, betas=tuple(t.betas), weight_decay=t.weight_decay, **fused)
        # Divergences with their own state (e.g. a discriminator) bring their own optimizer.
        self.div_optimizers: Dict[str, torch.optim.Optimizer] = {}
        for name, div in self.objective.divergences.items():
            opt = div.configure_optimizer() if hasattr(div, "configure_optimizer") else None
            if opt is not None:
                self.div_optimizers[name] = opt
        self.x_train = self._load_split("train")
        self.x_valid = self._load_split("valid") if ("valid" in self.dataset.splits and t.valid) else None
        n = self.x_train.shape[0]
        if t.batch_size > n:
            raise PluginOptionError(f"batch size {t.batch_size} is larger than the training split ({n} examples); use --batch-size {n} or less")
        self.steps_per_epoch = n // t.batch_size
        self.total_steps = t.steps if t.steps is not None else t.epochs * self.steps_per_epoch
        self.step = 0
        if t.track:
            from .metrics import build_metrics

            tracked = build_metrics(t.track, reg=self.registry)  # unknown names fail here, with a did-you-mean
            labelled = [n for n, m in tracked.items() if getattr(m, "needs_labels", False)]
            if labelled:
                raise PluginOptionError(f"metric(s) {', '.join(labelled)} need labels and cannot be tracked during training; use 'infovae evaluate'")
        self.amp = torch.autocast(self.device.type, dtype=torch.bfloat16) if t.amp == "bf16" else nullcontext()
        self._ddp = None
        if self.ctx.distributed:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self._ddp = DistributedDataParallel(_GlobalLoss(self.model, self.objective, GlobalBatch(self.ctx)), device_ids=ids)
        self._loss_fn = self._loss
        if t.compile:
            self._loss_fn = torch.compile(self._loss)

    def _load_split(self, name: str):
        """A split on the device (a tensor), or left where it is (a memory-mapped / indexable source)."""
        x = self.dataset.split(name)
        what = f"data set {self.spec.dataset.name!r}, split {name!r}"
        try:
            if is_tensor(x):
                check_uint8_images(x, self.spec.data, what)
            else:
                check_source(x, self.spec.data, what)
        except ValueError as exc:
            raise DataError(str(exc)) from None
        if x.shape[0] == 0:
            raise DataError(f"data set {self.spec.dataset.name!r} has an empty {name!r} split")
        return x.to(self.device) if is_tensor(x) else x

    def _is_writer(self) -> bool:
        return self.ctx.is_writer  # rank 0 (always, for one process)

    def _divergence_batch(self, z: torch.Tensor) -> torch.Tensor:
        return z  # under torchrun the objective already returns the global batch's codes

    def _loss(self, x):
        if self._ddp is not None:
            return self._ddp(x)
        return self.objective(self.model, x)

    # -- state ----------------------------------------------------------------------------------
    def _state_tensors(self):
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        tensors.update({f"objective.{k}": v for k, v in self.objective.state_dict().items()})
        return tensors

    @_aside
    def save_checkpoint(self, status: str = "training") -> None:
        """Rank 0 writes the (global) state; under torchrun the other ranks wait for it."""
        if self._is_writer():
            self._save_checkpoint(status)
        self.ctx.barrier()

    def _save_checkpoint(self, status: str) -> None:
        """model.safetensors, then checkpoint.safetensors, then status.json, each atomic: if a
        write fails (e.g. disk full), the files on disk are a complete earlier state."""
        if not self._parameters_finite():  # never replace a good checkpoint with NaN weights
            self._stop_non_finite(["parameters"], self.step // self.steps_per_epoch)
        weights = self._state_tensors()
        optim = {"model": self.optimizer.state_dict(), **{f"divergence:{n}": o.state_dict() for n, o in self.div_optimizers.items()}}
        opt_tensors, skeleton = flatten_state(optim, prefix="optim")
        rng = {"rng.cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["rng.cuda"] = torch.cuda.get_rng_state(self.device)
        meta = {"step": str(self.step), "optim": json.dumps(skeleton), "format": "infovae-checkpoint", "version": "1"}
        atomic_save_safetensors(self.run_dir / MODEL_FILE, weights, metadata={"step": str(self.step)}, root=self.run_dir)
        atomic_save_safetensors(self.run_dir / CHECKPOINT_FILE, {**weights, **opt_tensors, **rng}, metadata=meta, root=self.run_dir)
        self.checkpoint_step = self.step
        self._write_status(status)

    def load_checkpoint(self) -> None:
        """Restore weights, optimizers, RNG states and the step; validates everything first.

        Writes nothing: a corrupt checkpoint is a RunError "corrupt: <what>" and leaves the
        trainer unusable but the run untouched.
        """
        path = self.run_dir / CHECKPOINT_FILE
        if not path.exists():
            raise RunError(f"{self.run_dir} has no {CHECKPOINT_FILE}; it cannot be resumed (start again with --overwrite)")

        def corrupt(what: str) -> RunError:
            return RunError(f"{path} is corrupt: {what}; resume is impossible, retrain with --overwrite")

        try:
            tensors, meta = read_safetensors(path)
        except Exception as exc:  # noqa: BLE001 - any failure to parse means a corrupt file
            raise corrupt(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
        load_weights(self.model, self.objective, tensors, where=str(path))  # first: names a changed plugin set
        try:
            step = int(meta["step"])
            if step < 0:
                raise ValueError(f"negative step {step}")
            skeleton = json.loads(meta["optim"])
            optim = unflatten_state(skeleton, tensors)
            if not isinstance(optim, dict) or "model" not in optim:
                raise ValueError("the optimizer state has no 'model' entry")
            missing = [f"divergence:{n}" for n in self.div_optimizers if f"divergence:{n}" not in optim]
            if missing:
                raise ValueError(f"no optimizer state for {', '.join(missing)}")
            rng = tensors.get("rng.cpu")
            ref = torch.get_rng_state()
            if rng is None or rng.dtype != torch.uint8 or rng.shape != ref.shape:
                raise ValueError("the CPU RNG state is missing or not a uint8 tensor of the right size"
                                 + ("" if rng is None else f" (got {rng.dtype} {tuple(rng.shape)})"))
        except (KeyError, ValueError, TypeError, RecursionError) as exc:
            what = f"missing entry {exc}" if isinstance(exc, KeyError) else str(exc) or type(exc).__name__
            raise corrupt(what) from None
        try:
            _load_optimizer(self.optimizer, optim["model"])
            for n, o in self.div_optimizers.items():
                _load_optimizer(o, optim[f"divergence:{n}"])
            torch.set_rng_state(rng)
            if self.device.type == "cuda" and "rng.cuda" in tensors:
                torch.cuda.set_rng_state(tensors["rng.cuda"], self.device)
        except (KeyError, ValueError, TypeError, RuntimeError, IndexError) as exc:
            raise corrupt(f"optimizer or RNG state does not fit the model ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
        self.step = step
        self.checkpoint_step = step
        self.ctx.barrier()

    def _truncate_metrics(self, step: int) -> None:
        p = self.run_dir / METRICS_FILE
        if not p.exists():
            return
        keep = []
        for line in p.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if rec.get("step", 0) <= step:
                keep.append(line)
        from .io import atomic_write_bytes

        atomic_write_bytes(p, ("\n".join(keep) + "\n").encode() if keep else b"", root=self.run_dir)

    def _write_status(self, status: str, step: Optional[int] = None, **extra) -> None:
        if not self._is_writer():
            return
        atomic_write_json(self.run_dir / STATUS_FILE, {"status": status, "step": self.step if step is None else step,
                                                        "total_steps": self.total_steps, **extra}, root=self.run_dir)

    def _open_loggers(self):
        """The jsonl logger (the run's metrics.jsonl) and the chosen trackers, opened on first use."""
        if self.loggers is None:
            from .loggers import open_loggers
            from .registry import registry as default_registry

            self.loggers = open_loggers(self.registry or default_registry(), self.run_dir, self.logger_choices)
        return self.loggers

    def close_loggers(self) -> None:
        if self.loggers is not None:
            self.loggers.close()
            self.loggers = None

    def _log(self, record: Dict[str, Any]) -> None:
        if self._is_writer():
            self._open_loggers().log_scalars(record["step"], {k: v for k, v in record.items() if k != "step"})
        if self.on_log is not None:
            self.on_log(record)

    # -- evaluation helpers ----------------------------------------------------------------------
    @_aside
    @torch.no_grad()
    def validate(self) -> Dict[str, float]:
        """Mean loss terms on the validation split (one z sample per example).

        Chunks of max(batch, 256) examples (a multiple of the world size under torchrun);
        under torchrun each chunk is sharded over the ranks with the divergences on the whole
        chunk (as in training), a last chunk that does not divide is scored by rank 0, and
        the sums are reduced over ranks."""
        if self.x_valid is None:
            return {}
        self.model.eval()
        sums: Dict[str, torch.Tensor] = {}
        n_total = int(self.x_valid.shape[0])
        W, r = self.ctx.world, self.ctx.rank
        bs = -(-max(self.spec.trainer.batch_size, 256) // W) * W
        batch = GlobalBatch(self.ctx) if self.ctx.distributed else None
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(_epoch_seed(self.spec.trainer.seed, -1))
            for i in range(0, n_total, bs):
                k = min(bs, n_total - i)
                if batch is not None and k % W == 0:
                    lo, k = i + r * (k // W), k // W
                    x = to_model(rows(self.x_valid, lo, lo + k).to(self.device), self.spec.data)
                    with self.amp:
                        loss, terms, _ = self.objective(self.model, x, batch=batch)
                elif r == 0:
                    x = to_model(rows(self.x_valid, i, i + k).to(self.device), self.spec.data)
                    with self.amp:
                        loss, terms, _ = self.objective(self.model, x)
                else:
                    continue
                for name, v in {"loss": loss.detach(), **terms}.items():
                    sums[name] = sums.get(name, 0) + v.float() * k
        self.model.train()
        if self.ctx.distributed:
            # The terms every rank reports (a rank may have scored no chunk): divergences with a value.
            names = ["loss", "reconstruction"] + [n for n, d in self.objective.divergences.items() if getattr(d, "has_value", True)]
            local = torch.stack([torch.as_tensor(sums.get(n, 0.0), dtype=torch.float64, device=self.device) for n in names])
            sums = dict(zip(names, self.ctx.all_sum(local)))
        return {f"valid/{k}": float(v) / n_total for k, v in sums.items()}

    @_aside
    @torch.no_grad()
    def track(self) -> Dict[str, float]:
        """The tracked metrics (the paper's Figure 1 curves) on a fixed validation subset.

        Under torchrun every rank takes part: sharded metrics split the examples over the ranks and
        rank 0 combines the gathered rows, others run on rank 0 (``infovae.metrics.sharding``);
        rank 0 returns the values (it alone logs), the other ranks {}."""
        t = self.spec.trainer
        names = [n.strip() for n in t.track.split(",") if n.strip()]
        if not names:
            return {}
        from .metrics import evaluate_metrics

        x = self.x_valid if self.x_valid is not None else self.x_train
        x = rows(x, 0, t.track_examples).to(self.device)
        options = {"num_samples": t.track_nll_samples} if "nll" in names else {}
        g = torch.Generator(device=self.device).manual_seed(t.seed + 2)
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            results = evaluate_metrics(self.model, x, names, generator=g, batch_size=1024, reg=self.registry, ctx=self.ctx,
                                       **options)
        self.model.train()
        out = {}
        for name, res in results.items():
            out[f"track/{name}"] = float(res["value"])
            if "log_M" in res:
                out[f"track/{name}/log_M"] = float(res["log_M"])
        return out

    @_aside
    def _warn_if_collapsed(self) -> None:
        """Warn once per Trainer when the code is collapsed on validation data at two consecutive epoch
        ends past ``COLLAPSE_MIN_STEPS`` steps (a young encoder also carries almost no information)."""
        from .collapse import CHECK_EXAMPLES, COLLAPSE_MIN_STEPS, CodeCollapseWarning, collapse_message

        if (getattr(self, "_collapse_warned", False) or self.x_valid is None or self.step < COLLAPSE_MIN_STEPS
                or not self._is_writer()):
            return

        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            x = rows(self.x_valid, 0, CHECK_EXAMPLES).to(self.device)
            msg = collapse_message(self.model, x, self.objective.weights, seed=self.spec.trainer.seed + 3)
        self.model.train()
        self._collapsed_epochs = getattr(self, "_collapsed_epochs", 0) + 1 if msg is not None else 0
        if self._collapsed_epochs >= 2:
            self._collapse_warned = True
            warnings.warn(f"epoch {self.step // self.steps_per_epoch}: {msg}", CodeCollapseWarning, stacklevel=2)

    @_aside
    @torch.no_grad()
    def write_samples(self, name: str) -> Optional[Path]:
        if not self._is_writer():
            return None
        self.model.eval()
        g = torch.Generator(device=self.device).manual_seed(self.spec.trainer.seed + 1)
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            x = self.model.sample(GRID_N, generator=g)
        self.model.train()
        x = from_model(x, self.spec.data)
        path = save_grid(x, self.run_dir / SAMPLES_DIR / f"{name}.png", nrow=8, root=self.run_dir)
        if self._is_writer():
            from .images import grid_array

            self._open_loggers().log_image(self.step, f"samples/{name}", grid_array(x.cpu(), nrow=8))
        return path

    # -- failures -------------------------------------------------------------------------------------
    def fit(self, progress: Optional[Any] = None) -> TrainSummary:
        """Train until ``total_steps``; returns a summary. Checkpoints each epoch (or every
        ``checkpoint_every`` steps), on Ctrl-C / SIGTERM and on a non-finite loss. On the CPU,
        denormal floats are flushed to zero meanwhile when the spec asks (``flush_denormal``),
        and the process's previous setting comes back afterwards.

        The loop is four parts: the batch source (``_batches``), one optimisation step
        (``_train_step``), the logging window (``_LogWindow``) and the checkpoint policy
        (``_CheckpointPolicy``)."""
        on = bool(getattr(self.spec.trainer, "flush_denormal", False)) and self.device.type == "cpu"
        with flush_denormal(on) as flushed:
            summary = self._fit_guarded(progress)
        summary.flush_denormal = flushed
        return summary

    def _fit_guarded(self, progress: Optional[Any] = None) -> TrainSummary:
        """Holds the run's lock throughout. Any exception that escapes marks status.json
        "failed" with the error (the last checkpoint stays as it was) and is re-raised.
        """
        if self._is_writer() and (self.run_lock is None or not self.run_lock.held):
            self.run_lock = RunLock(self.run_dir).acquire()
        try:
            with self.interrupt:  # also covers the final write after the loop
                return self._fit(progress)
        except TrainingError:
            raise  # its status is already written
        except KeyboardInterrupt:
            self._record_failure("interrupted" if self.checkpoint_step is not None else "failed",
                                 "aborted by a second signal; the progress after the last checkpoint was lost")
            raise
        except BaseException as exc:
            self._record_failure("failed", f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            raise
        finally:
            if self.run_lock is not None:
                self.run_lock.release()

    def _record_failure(self, status: str, error: str) -> None:
        """Best-effort status.json for a run that stopped abnormally, at the checkpoint's step."""
        if not self._is_writer():
            return
        try:
            self._write_status(status, step=self.checkpoint_step or 0, error=error)
        except Exception:  # noqa: BLE001 - e.g. the disk is still full; the exception itself is reported
            pass

    def _parameters_finite(self) -> bool:
        return all(bool(torch.isfinite(p).all()) for p in self.model.parameters())

    def _stop_non_finite(self, bad, epoch: int) -> None:
        """Stop on a non-finite loss: checkpoint the current state when its weights are still
        finite (else keep the last checkpoint), status "failed", TrainingError."""
        where = f"at step {self.step}"
        if self._parameters_finite():
            self.save_checkpoint(status="failed")
            kept = f"The last good state (step {self.step}) is saved in {self.run_dir}."
        else:
            bad = ["parameters"] + [b for b in bad if b != "loss"]
            kept = (f"The weights themselves became non-finite; the last checkpoint (step {self.checkpoint_step}) is kept in {self.run_dir}."
                    if self.checkpoint_step is not None else "No checkpoint was reached.")
        self._write_status("failed", step=self.checkpoint_step or 0, error=f"non-finite {', '.join(bad)} {where}")
        self.close_loggers()
        raise TrainingError(
            f"the loss became non-finite {where} (epoch {epoch}): bad term(s) {', '.join(bad)}. {kept} "
            + (f"Lower the learning rate or the weight of {bad[0]!r}, or check the data." if bad[0] in self.objective.divergences
               else "Lower the learning rate, or check the data.")
        )

    # -- the loop -----------------------------------------------------------------------------------
    def _fit(self, progress: Optional[Any] = None) -> TrainSummary:
        t = self.spec.trainer
        spe = self.steps_per_epoch
        self.model.train()
        self.objective.train()
        if self._is_writer():
            self._write_status("training")
            if self.step == 0:
                from .loggers import flatten_params

                self._open_loggers().log_params(flatten_params({k: v for k, v in self.spec.to_json().items() if k not in ("format", "format_version")}))
        batches = self._batches()
        window = _LogWindow(self)
        policy = _CheckpointPolicy(t)
        last: Dict[str, float] = {}
        status = "complete"
        run_start = time.perf_counter()
        start_step, self._aside_seconds = self.step, 0.0
        with self.interrupt:
            while self.step < self.total_steps:
                x = next(batches)
                terms, div_logs, seconds = self._train_step(x)
                self.step += 1
                window.add(terms, div_logs, seconds)
                end_of_epoch = self.step % spe == 0
                stop, ckpt_elapsed = self._agree(policy.elapsed())
                if window.due(self.step, end_of_epoch, stop):
                    rec = last = window.close(self.step)
                    if end_of_epoch:
                        rec.update(self.validate())
                        rec.update(self.track())
                        self._warn_if_collapsed()
                    self._log(rec)
                if progress is not None:
                    progress(self.step, self.total_steps, last)
                if end_of_epoch and t.sample_every > 0 and (self.step // spe) % t.sample_every == 0:
                    self.write_samples(f"epoch_{self.step // spe:04d}")
                if (stop or (not self.ctx.distributed and self.interrupt.requested)) and self.step < self.total_steps:
                    status = "interrupted"
                    self.stop_signal = stop or int(getattr(self.interrupt, "signum", None) or signal.SIGINT)
                    break
                if policy.due(self.step, end_of_epoch, ckpt_elapsed) and self.step < self.total_steps:
                    self.save_checkpoint()
                    policy.saved()
        self.interrupt.finishing = True  # a signal now cannot abort the final write
        if not self._parameters_finite():
            self._stop_non_finite(["parameters"], self.step // spe)
        if status == "complete":
            self.write_samples("final")
        self.save_checkpoint(status=status)
        self.close_loggers()
        seconds = time.perf_counter() - run_start
        examples = (self.step - start_step) * t.batch_size  # global batch under torchrun
        loop_seconds = max(seconds - self._aside_seconds, 0.0)
        return TrainSummary(
            run_dir=str(self.run_dir), status=status, step=self.step, total_steps=self.total_steps,
            epoch=self.step // spe, seconds=seconds,
            examples_per_second=examples / loop_seconds if loop_seconds > 0 else math.nan,
            overhead_fraction=max(0.0, 1.0 - window.total_compute / seconds) if seconds > 0 else 0.0,
            last={k: v for k, v in last.items() if isinstance(v, float)},
            examples=examples, loop_seconds=loop_seconds,
            fit_examples_per_second=examples / seconds if seconds > 0 else math.nan,
            window_examples_per_second=last.get("examples_per_second", math.nan),
        )

    def _agree(self, ckpt_elapsed: float):
        """(stop signal number or 0, seconds since the last checkpoint), the same on every rank.

        One process: the interrupt flag as it is now. Under torchrun: one all-reduce (max)
        per step, so a signal on any rank stops every rank after the same step and the
        time-based checkpoint decision is shared."""
        signum = 0
        if self.interrupt.requested:
            signum = int(getattr(self.interrupt, "signum", None) or signal.SIGINT)
        if not self.ctx.distributed:
            return signum, ckpt_elapsed
        signum, ckpt_elapsed = self.ctx.agree_max([signum, ckpt_elapsed])
        return int(signum), ckpt_elapsed

    def _batches(self):
        """This rank's share of the global batch for each step from ``self.step`` on (model values).

        The data order of epoch e is one permutation seeded by (seed, e), the same on every
        rank; rank r of W takes rows r*B/W .. (r+1)*B/W - 1 of each global batch of B."""
        t = self.spec.trainer
        B, b, r = t.batch_size, self.local_batch_size, self.ctx.rank
        spe = self.steps_per_epoch
        if not is_tensor(self.x_train) and not getattr(self.dataset, "dynamic", False):
            source = StepBatches(self.x_train, functools.partial(_epoch_seed, t.seed), B, b, r, spe, self.step, self.total_steps)
            for xb in loader_batches(source, self.device):
                yield to_model(xb, self.spec.data)
            return
        perm, perm_epoch = None, -1
        while True:
            epoch, i = divmod(self.step, spe)
            if perm_epoch != epoch:
                if getattr(self.dataset, "dynamic", False):
                    # A fresh draw of the data (dynamic binarization), reproducible per epoch.
                    gd = torch.Generator().manual_seed(_epoch_seed(t.seed, epoch) ^ 0x5EED)
                    self.x_train = self.dataset.split("train", generator=gd).to(self.device)
                g = torch.Generator().manual_seed(_epoch_seed(t.seed, epoch))
                perm = torch.randperm(self.x_train.shape[0], generator=g).to(self.device)
                perm_epoch = epoch
            start = i * B + r * b
            yield to_model(self.x_train[perm[start:start + b]], self.spec.data)

    def _train_step(self, x: torch.Tensor):
        """One optimisation step on this rank's batch x: (terms, divergence logs, compute seconds).

        A non-finite loss on any rank stops every rank with the last good state saved."""
        self._sync()
        c0 = time.perf_counter()
        epoch = self.step // self.steps_per_epoch
        try:
            with self.amp:
                loss, terms, z = self._loss_fn(x)
        except ValueError as exc:
            # torch.distributions rejects non-finite parameters (e.g. an overflowing encoder
            # output after a huge learning rate) before any loss exists.
            if self._parameters_finite() and "invalid values" not in str(exc):
                raise
            self._stop_non_finite(["distribution parameters"], epoch)
        finite = bool(torch.isfinite(loss))
        if self.ctx.distributed:
            finite = self.ctx.agree_max([0.0 if finite else 1.0])[0] == 0.0
        if not finite:
            self._stop_non_finite([k for k, v in terms.items() if not torch.isfinite(v).all()] or ["loss"], epoch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        div_logs: Dict[str, float] = {}
        if self.div_optimizers:
            zd = self._divergence_batch(z.detach())
            for name, opt in self.div_optimizers.items():
                out = self.objective.divergences[name].update(zd, self.model.prior, opt) or {}
                div_logs.update({f"{name}/{k}": float(v) for k, v in out.items()})
        self._sync()
        return {"loss": loss.detach(), **terms}, div_logs, time.perf_counter() - c0

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def close(self) -> None:
        """Leave the process group (under torchrun); a no-op for one process."""
        self.ctx.shutdown()


class _LogWindow:
    """Mean loss terms, throughput and overhead over the steps since the last metrics line.

    Under torchrun the terms are averaged over ranks when the window closes (one
    all-reduce per line): the reconstruction is each rank's mean over its share, so
    the average is the global batch's mean; divergences are already global."""

    def __init__(self, trainer: "Trainer"):
        self.trainer = trainer
        self.log_every = max(1, trainer.spec.trainer.log_every)
        self.total_compute = 0.0
        self._reset()

    def _reset(self) -> None:
        self.sums: Dict[str, torch.Tensor] = {}
        self.div_logs: Dict[str, float] = {}
        self.steps = 0
        self.compute = 0.0
        self.start = time.perf_counter()

    def add(self, terms: Dict[str, torch.Tensor], div_logs: Dict[str, float], seconds: float) -> None:
        for k, v in terms.items():
            self.sums[k] = self.sums.get(k, 0) + v.float()
        self.div_logs = div_logs
        self.steps += 1
        self.compute += seconds

    def due(self, step: int, end_of_epoch: bool, stop: bool) -> bool:
        return step % self.log_every == 0 or end_of_epoch or step == self.trainer.total_steps or bool(stop)

    def close(self, step: int) -> Dict[str, Any]:
        tr = self.trainer
        wall = time.perf_counter() - self.start
        names = list(self.sums)
        means = torch.stack([torch.as_tensor(self.sums[k], dtype=torch.float64) for k in names]) / self.steps
        if tr.ctx.distributed:
            means = tr.ctx.all_sum(means) / tr.ctx.world
        values = means.tolist()
        rec = {"step": step, "epoch": step / tr.steps_per_epoch, **{f"train/{k}": float(v) for k, v in zip(names, values)}, **self.div_logs}
        rec["examples_per_second"] = self.steps * tr.spec.trainer.batch_size / wall if wall > 0 else math.nan
        rec["overhead_fraction"] = max(0.0, 1.0 - self.compute / wall) if wall > 0 else 0.0
        self.total_compute += self.compute
        self._reset()
        return rec


class _CheckpointPolicy:
    """When to checkpoint between the always-saved end / stop / failure states:
    every ``checkpoint_every`` steps, or else at an epoch end once ``checkpoint_seconds``
    have passed since the last save (the elapsed time is agreed over ranks)."""

    def __init__(self, t):
        self.every = t.checkpoint_every
        self.seconds = t.checkpoint_seconds
        self.last = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.last

    def due(self, step: int, end_of_epoch: bool, elapsed: float) -> bool:
        if self.every > 0:
            return step % self.every == 0
        return end_of_epoch and elapsed >= self.seconds

    def saved(self) -> None:
        self.last = time.perf_counter()


def load_weights(model, objective, tensors: Dict[str, torch.Tensor], where: str) -> None:
    """Load ``model.*`` and ``objective.*`` tensors strictly; a mismatch is a RunError."""
    msd = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    osd = {k[len("objective."):]: v for k, v in tensors.items() if k.startswith("objective.")}
    bad = [k for k, v in tensors.items() if (k.startswith(("model.", "objective."))) and v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise RunError(f"{where} is corrupt: non-finite values in {', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}")
    try:
        model.load_state_dict(msd, strict=True)
        if objective is not None:
            objective.load_state_dict(osd, strict=True)
    except RuntimeError as exc:
        raise RunError(f"{where} is corrupt: it does not match the model its spec describes ({str(exc).splitlines()[0]}); "
                       "the run was edited or its plugins changed") from None


def _load_optimizer(opt: torch.optim.Optimizer, state: Dict[str, Any]) -> None:
    """``opt.load_state_dict(state)`` after checking that every state tensor fits its parameter."""
    if not isinstance(state, dict) or not isinstance(state.get("param_groups"), list) or not isinstance(state.get("state"), dict):
        raise ValueError("optimizer state must hold param_groups and state")
    opt.load_state_dict(state)
    for p, st in opt.state.items():
        for name, v in st.items():
            if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape != p.shape:
                raise ValueError(f"optimizer state {name!r} has shape {tuple(v.shape)} for a parameter of shape {tuple(p.shape)}")
