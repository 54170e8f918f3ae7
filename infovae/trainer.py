"""Training loop: exact resume, atomic checkpoints, Ctrl-C safety, JSON-lines metrics.

Determinism: the data order of epoch e is a permutation drawn from a generator
seeded by (seed, e); all other randomness (reparameterisation, prior samples,
dropout) comes from torch's global generators, whose states are checkpointed.
Validation and sample grids run under ``torch.random.fork_rng`` with their own
seeds, so they never change the training trajectory. On CPU, N steps + resume
+ N steps therefore gives bitwise the same weights as 2N steps.

Distributed training will need changes in three places only, kept together
here: device placement (``_setup``), the codes a divergence sees
(``_divergence_batch``) and rank-0-only writes (``_is_writer``).
"""
from __future__ import annotations

import json
import math
import signal
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import torch

from .build import build_model, resolve_device
from .data import check_uint8_images, from_model, to_model
from .errors import DataError, PluginOptionError, RunError, TrainingError
from .images import save_grid
from .io import atomic_save_safetensors, atomic_write_json, flatten_state, read_safetensors, unflatten_state
from .runs import CHECKPOINT_FILE, METRICS_FILE, MODEL_FILE, SAMPLES_DIR, STATUS_FILE, RunSpec

GRID_N = 64


def _epoch_seed(seed: int, epoch: int) -> int:
    return (int(seed) * 1_000_003 + int(epoch) * 7919 + 17) % (2**63 - 1)


@dataclass
class TrainSummary:
    run_dir: str
    status: str
    step: int
    total_steps: int
    epoch: int
    seconds: float
    examples_per_second: float
    overhead_fraction: float
    last: Dict[str, float] = field(default_factory=dict)


class _Interrupt:
    """First Ctrl-C asks the loop to stop after the current step; a second one aborts."""

    def __init__(self):
        self.requested = False
        self._old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.getsignal(signal.SIGINT)

            def handler(signum, frame):
                if self.requested:
                    raise KeyboardInterrupt
                self.requested = True

            signal.signal(signal.SIGINT, handler)
        return self

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False


class Trainer:
    """Trains the model a RunSpec describes, writing into ``run_dir``.

    ``on_log(record)`` is called with every metrics record (for progress displays).
    """

    def __init__(self, run_dir, spec: RunSpec, dataset, registry=None, on_log: Optional[Callable[[Dict[str, Any]], None]] = None):
        self.run_dir = Path(run_dir)
        self.spec = spec
        self.dataset = dataset
        self.registry = registry
        self.on_log = on_log
        self.interrupt = _Interrupt()
        self._setup()

    # -- set-up ---------------------------------------------------------------------------------
    def _setup(self) -> None:
        t = self.spec.trainer
        self.device = resolve_device(t.device)
        torch.manual_seed(t.seed)
        model, objective = build_model(self.spec, self.registry)
        self.model = model.to(self.device)
        self.objective = objective.to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=t.lr, betas=tuple(t.betas), weight_decay=t.weight_decay, foreach=True)
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
        self._loss_fn = self._loss
        if t.compile:
            self._loss_fn = torch.compile(self._loss)

    def _load_split(self, name: str) -> torch.Tensor:
        x = self.dataset.split(name)
        try:
            check_uint8_images(x, self.spec.data, f"data set {self.spec.dataset.name!r}, split {name!r}")
        except ValueError as exc:
            raise DataError(str(exc)) from None
        if x.shape[0] == 0:
            raise DataError(f"data set {self.spec.dataset.name!r} has an empty {name!r} split")
        return x.to(self.device)

    def _is_writer(self) -> bool:
        return True  # rank 0 only, once distributed training exists

    def _divergence_batch(self, z: torch.Tensor) -> torch.Tensor:
        return z  # gathered across ranks, once distributed training exists

    def _loss(self, x):
        return self.objective(self.model, x)

    # -- state ----------------------------------------------------------------------------------
    def _state_tensors(self):
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        tensors.update({f"objective.{k}": v for k, v in self.objective.state_dict().items()})
        return tensors

    def save_checkpoint(self, status: str = "training") -> None:
        if not self._is_writer():
            return
        weights = self._state_tensors()
        optim = {"model": self.optimizer.state_dict(), **{f"divergence:{n}": o.state_dict() for n, o in self.div_optimizers.items()}}
        opt_tensors, skeleton = flatten_state(optim, prefix="optim")
        rng = {"rng.cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["rng.cuda"] = torch.cuda.get_rng_state(self.device)
        meta = {"step": str(self.step), "optim": json.dumps(skeleton), "format": "infovae-checkpoint", "version": "1"}
        atomic_save_safetensors(self.run_dir / CHECKPOINT_FILE, {**weights, **opt_tensors, **rng}, metadata=meta)
        atomic_save_safetensors(self.run_dir / MODEL_FILE, weights, metadata={"step": str(self.step)})
        self._write_status(status)

    def load_checkpoint(self) -> None:
        path = self.run_dir / CHECKPOINT_FILE
        if not path.exists():
            raise RunError(f"{self.run_dir} has no {CHECKPOINT_FILE}; it cannot be resumed (start again with --overwrite)")
        try:
            tensors, meta = read_safetensors(path)
            step = int(meta["step"])
            skeleton = json.loads(meta["optim"])
        except Exception as exc:  # noqa: BLE001 - any failure here means a corrupt file
            raise RunError(f"{path} is corrupt ({type(exc).__name__}: {exc}); resume is impossible, retrain with --overwrite") from None
        load_weights(self.model, self.objective, tensors, where=str(path))
        optim = unflatten_state(skeleton, tensors)
        self.optimizer.load_state_dict(optim["model"])
        for n, o in self.div_optimizers.items():
            o.load_state_dict(optim[f"divergence:{n}"])
        torch.set_rng_state(tensors["rng.cpu"])
        if self.device.type == "cuda" and "rng.cuda" in tensors:
            torch.cuda.set_rng_state(tensors["rng.cuda"], self.device)
        self.step = step
        self._truncate_metrics(step)

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

        atomic_write_bytes(p, ("\n".join(keep) + "\n").encode() if keep else b"")

    def _write_status(self, status: str, **extra) -> None:
        atomic_write_json(self.run_dir / STATUS_FILE, {"status": status, "step": self.step, "total_steps": self.total_steps, **extra})

    def _log(self, record: Dict[str, Any]) -> None:
        if self._is_writer():
            with open(self.run_dir / METRICS_FILE, "a") as fh:
                fh.write(json.dumps(record) + "\n")
        if self.on_log is not None:
            self.on_log(record)

    # -- evaluation helpers ----------------------------------------------------------------------
    @torch.no_grad()
    def validate(self) -> Dict[str, float]:
        """Mean loss terms on the validation split (one z sample per example)."""
        if self.x_valid is None:
            return {}
        self.model.eval()
        sums: Dict[str, torch.Tensor] = {}
        n_total = 0
        bs = max(self.spec.trainer.batch_size, 256)
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(_epoch_seed(self.spec.trainer.seed, -1))
            for i in range(0, self.x_valid.shape[0], bs):
                x = to_model(self.x_valid[i: i + bs], self.spec.data)
                with self.amp:
                    loss, terms, _ = self.objective(self.model, x)
                k = x.shape[0]
                for name, v in {"loss": loss.detach(), **terms}.items():
                    sums[name] = sums.get(name, 0) + v.float() * k
                n_total += k
        self.model.train()
        return {f"valid/{k}": float(v) / n_total for k, v in sums.items()}

    @torch.no_grad()
    def track(self) -> Dict[str, float]:
        """The tracked metrics (the paper's Figure 1 curves) on a fixed validation subset."""
        t = self.spec.trainer
        names = [n.strip() for n in t.track.split(",") if n.strip()]
        if not names:
            return {}
        from .metrics import evaluate_metrics

        x = self.x_valid if self.x_valid is not None else self.x_train
        x = x[: t.track_examples]
        options = {"num_samples": t.track_nll_samples} if "nll" in names else {}
        g = torch.Generator(device=self.device).manual_seed(t.seed + 2)
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            results = evaluate_metrics(self.model, x, names, generator=g, batch_size=1024, reg=self.registry, **options)
        self.model.train()
        out = {}
        for name, res in results.items():
            out[f"track/{name}"] = float(res["value"])
            if "log_M" in res:
                out[f"track/{name}/log_M"] = float(res["log_M"])
        return out

    @torch.no_grad()
    def write_samples(self, name: str) -> Path:
        self.model.eval()
        g = torch.Generator(device=self.device).manual_seed(self.spec.trainer.seed + 1)
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            x = self.model.sample(GRID_N, generator=g)
        self.model.train()
        return save_grid(from_model(x, self.spec.data), self.run_dir / SAMPLES_DIR / f"{name}.png", nrow=8)

    # -- the loop -----------------------------------------------------------------------------------
    def fit(self, progress: Optional[Any] = None) -> TrainSummary:
        """Train until ``total_steps``; returns a summary. Checkpoints each epoch (or every
        ``checkpoint_every`` steps), on Ctrl-C and on a non-finite loss."""
        t = self.spec.trainer
        B = t.batch_size
        spe = self.steps_per_epoch
        log_every = max(1, t.log_every)
        last_ckpt = time.perf_counter()
        self.model.train()
        self.objective.train()
        if self._is_writer():
            self._write_status("training")
        perm = None
        perm_epoch = -1
        sums: Dict[str, torch.Tensor] = {}
        window_steps = 0
        compute_time = 0.0
        window_start = time.perf_counter()
        run_start = window_start
        total_compute = 0.0
        last: Dict[str, float] = {}
        status = "complete"
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        with self.interrupt:
            while self.step < self.total_steps:
                epoch, i = divmod(self.step, spe)
                if perm_epoch != epoch:
                    if getattr(self.dataset, "dynamic", False):
                        # A fresh draw of the data (dynamic binarization), reproducible per epoch.
                        gd = torch.Generator().manual_seed(_epoch_seed(t.seed, epoch) ^ 0x5EED)
                        self.x_train = self.dataset.split("train", generator=gd).to(self.device)
                    g = torch.Generator().manual_seed(_epoch_seed(t.seed, epoch))
                    perm = torch.randperm(self.x_train.shape[0], generator=g).to(self.device)
                    perm_epoch = epoch
                x = to_model(self.x_train[perm[i * B:(i + 1) * B]], self.spec.data)
                sync()
                c0 = time.perf_counter()
                with self.amp:
                    loss, terms, z = self._loss_fn(x)
                if not torch.isfinite(loss):
                    bad = [k for k, v in terms.items() if not torch.isfinite(v).all()] or ["loss"]
                    self.save_checkpoint(status="failed")
                    self._write_status("failed", error=f"non-finite {', '.join(bad)} at step {self.step}")
                    raise TrainingError(
                        f"the loss became non-finite at step {self.step} (epoch {epoch}): bad term(s) {', '.join(bad)}. "
                        f"The last good state (step {self.step}) is saved in {self.run_dir}. Lower the learning rate or "
                        f"the weight of {bad[0]!r}, or check the data."
                    )
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                div_logs: Dict[str, float] = {}
                if self.div_optimizers:
                    zd = self._divergence_batch(z.detach())
                    for name, opt in self.div_optimizers.items():
                        out = self.objective.divergences[name].update(zd, self.model.prior, opt) or {}
                        div_logs.update({f"{name}/{k}": float(v) for k, v in out.items()})
                sync()
                compute_time += time.perf_counter() - c0
                self.step += 1
                window_steps += 1
                for k, v in {"loss": loss.detach(), **terms}.items():
                    sums[k] = sums.get(k, 0) + v.float()
                end_of_epoch = self.step % spe == 0
                if self.step % log_every == 0 or end_of_epoch or self.step == self.total_steps or self.interrupt.requested:
                    now = time.perf_counter()
                    wall = now - window_start
                    rec = {"step": self.step, "epoch": self.step / spe, **{f"train/{k}": float(v) / window_steps for k, v in sums.items()}, **div_logs}
                    rec["examples_per_second"] = window_steps * B / wall if wall > 0 else math.nan
                    rec["overhead_fraction"] = max(0.0, 1.0 - compute_time / wall) if wall > 0 else 0.0
                    total_compute += compute_time
                    last = rec
                    if end_of_epoch:
                        rec.update(self.validate())
                        rec.update(self.track())
                    self._log(rec)
                    sums, window_steps, compute_time = {}, 0, 0.0
                    window_start = time.perf_counter()
                if progress is not None:
                    progress(self.step, self.total_steps, last)
                if end_of_epoch and t.sample_every > 0 and (self.step // spe) % t.sample_every == 0:
                    self.write_samples(f"epoch_{self.step // spe:04d}")
                if self.interrupt.requested:
                    status = "interrupted"
                    break
                if t.checkpoint_every > 0:
                    due = self.step % t.checkpoint_every == 0
                else:
                    due = end_of_epoch and time.perf_counter() - last_ckpt >= t.checkpoint_seconds
                if due and self.step < self.total_steps:
                    self.save_checkpoint()
                    last_ckpt = time.perf_counter()
        if status == "complete":
            self.write_samples("final")
        self.save_checkpoint(status=status)
        seconds = time.perf_counter() - run_start
        return TrainSummary(
            run_dir=str(self.run_dir), status=status, step=self.step, total_steps=self.total_steps,
            epoch=self.step // spe, seconds=seconds,
            examples_per_second=last.get("examples_per_second", math.nan),
            overhead_fraction=max(0.0, 1.0 - total_compute / seconds) if seconds > 0 else 0.0,
            last={k: v for k, v in last.items() if isinstance(v, float)},
        )


def load_weights(model, objective, tensors: Dict[str, torch.Tensor], where: str) -> None:
    """Load ``model.*`` and ``objective.*`` tensors strictly; a mismatch is a RunError."""
    msd = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    osd = {k[len("objective."):]: v for k, v in tensors.items() if k.startswith("objective.")}
    try:
        model.load_state_dict(msd, strict=True)
        if objective is not None:
            objective.load_state_dict(osd, strict=True)
    except RuntimeError as exc:
        raise RunError(f"{where} does not match the model its spec describes ({str(exc).splitlines()[0]}); the run is corrupt or its plugins changed") from None
