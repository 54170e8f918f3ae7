"""Run directories: the JSON spec that rebuilds a model through the registry,
weights and resumable trainer state in safetensors, metrics as JSON lines.

Layout of a run directory::

    spec.json            every plugin and option, data spec, trainer settings
    model.safetensors    model and divergence weights (also the final weights)
    checkpoint.safetensors  everything for an exact resume (weights, optimizers,
                         RNG states) with its JSON skeleton in the header
    metrics.jsonl        one JSON object per logged step / epoch
    samples/             PNG grids
    status.json          state: "training", "interrupted", "complete", "failed"

Every file is written atomically; ``checkpoint.safetensors`` is one file so a
resume never sees a half-written state. Loading never executes code from files.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from .errors import RunError
from .spec import DataSpec

FORMAT = "infovae-run"
FORMAT_VERSION = 1
SPEC_FILE = "spec.json"
MODEL_FILE = "model.safetensors"
CHECKPOINT_FILE = "checkpoint.safetensors"
METRICS_FILE = "metrics.jsonl"
STATUS_FILE = "status.json"
SAMPLES_DIR = "samples"


@dataclass
class PluginChoice:
    """A plugin by name with its fully resolved options."""

    name: str
    options: Dict[str, Any] = field(default_factory=dict)


@dataclass
class DivergenceChoice(PluginChoice):
    weight: float = 1.0


@dataclass
class TrainerConfig:
    """Optimisation settings. Units: lr per step, batch in examples."""

    batch_size: int = 64
    epochs: int = 100  # the CLI's --epochs default reads this
    steps: Optional[int] = None  # when set, overrides epochs: total optimiser steps
    lr: float = 1e-3
    betas: Tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "auto"
    amp: str = "none"  # "none" or "bf16"
    compile: bool = False
    log_every: int = 50  # steps between metric lines
    sample_every: int = 0  # epochs between sample grids; 0: only at the end
    checkpoint_every: int = 0  # steps between checkpoints; 0: at the end of an epoch once checkpoint_seconds have passed
    checkpoint_seconds: float = 60.0
    valid: bool = True  # validation pass each epoch
    track: str = ""  # comma-separated metrics logged each epoch on the validation split (e.g. "mutual-information,nll")
    track_examples: int = 500  # validation examples the tracked metrics use
    track_nll_samples: int = 100  # importance samples K for a tracked "nll"
    flush_denormal: bool = True  # CPU only: denormal floats count as 0 during fit (see infovae.denormals)


@dataclass
class RunSpec:
    """Everything needed to rebuild the model and continue training."""

    dataset: PluginChoice
    data: DataSpec
    latent_dim: int
    encoder: PluginChoice
    decoder: PluginChoice
    divergences: List[DivergenceChoice]
    trainer: TrainerConfig
    plugins: Dict[str, Dict[str, Optional[str]]] = field(default_factory=dict)
    infovae_version: str = ""

    def to_json(self) -> Dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "infovae_version": self.infovae_version,
            "dataset": asdict(self.dataset),
            "data": self.data.to_json(),
            "latent_dim": self.latent_dim,
            "encoder": asdict(self.encoder),
            "decoder": asdict(self.decoder),
            "divergences": [asdict(d) for d in self.divergences],
            "trainer": {**asdict(self.trainer), "betas": list(self.trainer.betas)},
            "plugins": self.plugins,
        }

    @classmethod
    def from_json(cls, obj: Dict[str, Any], where: str = "spec.json") -> "RunSpec":
        if obj.get("format") != FORMAT:
            raise RunError(f"{where} is not an infovae run spec (format {obj.get('format')!r})")
        if obj.get("format_version") != FORMAT_VERSION:
            raise RunError(f"{where} has format version {obj.get('format_version')!r}; this infovae reads {FORMAT_VERSION}")
        try:
            trainer = dict(obj["trainer"])
            trainer["betas"] = tuple(trainer["betas"])
            trainer.setdefault("flush_denormal", False)  # runs written before the setting existed kept denormals
            known = set(TrainerConfig.__dataclass_fields__)
            return cls(
                dataset=PluginChoice(**obj["dataset"]),
                data=DataSpec.from_json(obj["data"]),
                latent_dim=int(obj["latent_dim"]),
                encoder=PluginChoice(**obj["encoder"]),
                decoder=PluginChoice(**obj["decoder"]),
                divergences=[DivergenceChoice(**d) for d in obj["divergences"]],
                trainer=TrainerConfig(**{k: v for k, v in trainer.items() if k in known}),
                plugins=dict(obj.get("plugins", {})),
                infovae_version=str(obj.get("infovae_version", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise RunError(f"{where} is malformed ({type(exc).__name__}: {exc}); it was not written by this version of infovae or was edited") from None


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise RunError(f"{path} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunError(f"{path} is not valid JSON ({exc}); the run is corrupt") from None


def is_run(path: Path) -> bool:
    """True when ``path`` already holds (part of) a run."""
    path = Path(path)
    return any((path / f).exists() for f in (SPEC_FILE, MODEL_FILE, CHECKPOINT_FILE, METRICS_FILE))


def load_spec(run_dir: Path) -> RunSpec:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"run directory {run_dir} does not exist")
    if not (run_dir / SPEC_FILE).exists():
        raise RunError(f"{run_dir} is not an infovae run: {SPEC_FILE} is missing (create one with 'infovae train --out {run_dir}')")
    return RunSpec.from_json(read_json(run_dir / SPEC_FILE), where=str(run_dir / SPEC_FILE))


def read_status(run_dir: Path) -> Dict[str, Any]:
    p = Path(run_dir) / STATUS_FILE
    return read_json(p) if p.exists() else {}


def read_metrics(run_dir: Path) -> List[Dict[str, Any]]:
    """All metric lines of a run (a torn last line from a crash is ignored)."""
    p = Path(run_dir) / METRICS_FILE
    if not p.exists():
        return []
    out = []
    for line in p.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out
