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
    evaluation.json      written by 'infovae evaluate'; figure.png by 'infovae plot'
    .infovae.lock        the writer's lock (fcntl.flock) and its pid

Only these names (their temporary files ``.<name>.<8 chars>.tmp``, and PNGs in
samples/) belong to a run: ``--overwrite`` deletes nothing else and refuses a
directory that holds anything else.

Every file is written atomically; ``checkpoint.safetensors`` is one file so a
resume never sees a half-written state. Loading never executes code from files.
"""
from __future__ import annotations

import json
import math
import os
import stat
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from .errors import RunError, StorageError
from .spec import DataSpec

FORMAT = "infovae-run"
FORMAT_VERSION = 1
SPEC_FILE = "spec.json"
MODEL_FILE = "model.safetensors"
CHECKPOINT_FILE = "checkpoint.safetensors"
METRICS_FILE = "metrics.jsonl"
STATUS_FILE = "status.json"
SAMPLES_DIR = "samples"
EVALUATION_FILE = "evaluation.json"
FIGURE_FILE = "figure.png"
REPORT_FILE = "report.html"  # 'infovae report RUN' writes it here by default
LOCK_FILE = ".infovae.lock"
LOGGERS_FILE = "loggers.json"  # the optional trackers a run logs to (see infovae.loggers)
# Files the trainer writes (under the lock); their stale temporary files are removed on the next start.
TRAINER_FILES = (SPEC_FILE, MODEL_FILE, CHECKPOINT_FILE, METRICS_FILE, STATUS_FILE, LOGGERS_FILE)
RUN_FILES = TRAINER_FILES + (EVALUATION_FILE, FIGURE_FILE, REPORT_FILE, LOCK_FILE)
MAX_SEED = 2**63 - 1


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
    def from_json(cls, obj: Any, where: str = "spec.json") -> "RunSpec":
        """Rebuild a spec from its JSON, checking every field's type; a bad file is a RunError "corrupt: ..."."""
        def corrupt(what: str):
            return RunError(f"{where} is corrupt: {what}; it was not written by this version of infovae or was edited")

        if not isinstance(obj, dict):
            raise corrupt(f"it holds a JSON {type(obj).__name__}, not an object")
        if obj.get("format") != FORMAT:
            raise RunError(f"{where} is not an infovae run spec (format {obj.get('format')!r})")
        if obj.get("format_version") != FORMAT_VERSION:
            raise RunError(f"{where} has format version {obj.get('format_version')!r}; this infovae reads {FORMAT_VERSION}")
        try:
            def choice(key: str, value: Any, kind=PluginChoice) -> PluginChoice:
                if not isinstance(value, dict):
                    raise ValueError(f"{key} must be an object with name and options, got {_short(value)}")
                extra = set(value) - {f.name for f in fields(kind)}
                if extra:
                    raise ValueError(f"{key} has unknown field(s) {', '.join(sorted(map(str, extra)))}")
                if not isinstance(value.get("name"), str) or not value.get("name"):
                    raise ValueError(f"{key}.name must be a plugin name, got {_short(value.get('name'))}")
                options = value.get("options", {})
                if not isinstance(options, dict) or not all(isinstance(k, str) for k in options):
                    raise ValueError(f"{key}.options must be an object of option values, got {_short(options)}")
                if kind is DivergenceChoice:
                    w = value.get("weight", 1.0)
                    if not _is_real(w) or not math.isfinite(w) or w < 0:
                        raise ValueError(f"{key}.weight must be a finite number >= 0, got {_short(w)}")
                    return DivergenceChoice(value["name"], dict(options), float(w))
                return PluginChoice(value["name"], dict(options))

            for key in ("dataset", "data", "latent_dim", "encoder", "decoder", "divergences", "trainer"):
                if key not in obj:
                    raise ValueError(f"the field {key!r} is missing")
            data = obj["data"]
            if not isinstance(data, dict) or not isinstance(data.get("kind"), str) or not isinstance(data.get("shape"), list) \
                    or len(data["shape"]) != 3 or not all(_is_int(v) and 1 <= v <= 2**20 for v in data["shape"]):
                raise ValueError(f"data must be {{kind, shape: [C, H, W]}} with sizes in 1..2**20, got {_short(data)}")
            latent_dim = obj["latent_dim"]
            if not _is_int(latent_dim) or latent_dim < 1:
                raise ValueError(f"latent_dim must be an integer >= 1, got {_short(latent_dim)}")
            if not isinstance(obj["divergences"], list):
                raise ValueError(f"divergences must be a list, got {_short(obj['divergences'])}")
            t = obj["trainer"]
            if not isinstance(t, dict):
                raise ValueError(f"trainer must be an object, got {_short(t)}")
            t = {**t}
            t.setdefault("flush_denormal", False)  # runs written before the setting existed kept denormals
            known = {f.name for f in fields(TrainerConfig)}
            trainer = TrainerConfig(**{k: v for k, v in t.items() if k in known})
            if isinstance(trainer.betas, list):
                trainer.betas = tuple(trainer.betas)
            check_trainer_config(trainer)
            plugins = obj.get("plugins", {})
            if not isinstance(plugins, dict):
                raise ValueError(f"plugins must be an object, got {_short(plugins)}")
            return cls(
                dataset=choice("dataset", obj["dataset"]),
                data=DataSpec.from_json(data),
                latent_dim=int(latent_dim),
                encoder=choice("encoder", obj["encoder"]),
                decoder=choice("decoder", obj["decoder"]),
                divergences=[choice(f"divergences[{i}]", d, DivergenceChoice) for i, d in enumerate(obj["divergences"])],
                trainer=trainer,
                plugins=dict(plugins),
                infovae_version=str(obj.get("infovae_version", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise corrupt(str(exc)) from None


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_trainer_config(t: TrainerConfig) -> None:
    """Types and ranges of every trainer setting; ValueError naming the first bad one.

    Shared by the CLI (before any work) and the spec loader (a crafted spec.json).
    """
    def need(ok: bool, what: str, value: Any) -> None:
        if not ok:
            raise ValueError(f"{what}, got {_short(value)}")

    def integer(name: str, low: int, high: Optional[int] = None) -> None:
        v = getattr(t, name)
        ok = _is_int(v) and v >= low and (high is None or v <= high)
        need(ok, f"{name} must be an integer in [{low}, {high}]" if high is not None else f"{name} must be an integer >= {low}", v)

    def real(name: str, low: float, low_open: bool = False) -> None:
        v = getattr(t, name)
        ok = _is_real(v) and math.isfinite(v) and (v > low if low_open else v >= low)
        need(ok, f"{name} must be a finite number {'>' if low_open else '>='} {low:g}", v)

    integer("batch_size", 1)
    need(t.steps is None or (_is_int(t.steps) and t.steps >= 1), "steps must be an integer >= 1 (or unset)", t.steps)
    integer("epochs", 1 if t.steps is None else 0)
    real("lr", 0.0, low_open=True)
    betas = t.betas
    need(isinstance(betas, (list, tuple)) and len(betas) == 2 and all(_is_real(b) and 0 <= b < 1 for b in betas),
         "betas must be two numbers in [0, 1)", betas)
    real("weight_decay", 0.0)
    integer("seed", 0, MAX_SEED)
    need(isinstance(t.device, str), "device must be a string", t.device)
    need(t.amp in ("none", "bf16"), "amp must be 'none' or 'bf16'", t.amp)
    need(isinstance(t.compile, bool), "compile must be true or false", t.compile)
    need(isinstance(t.valid, bool), "valid must be true or false", t.valid)
    for name in ("log_every", "sample_every", "checkpoint_every"):
        integer(name, 0)
    real("checkpoint_seconds", 0.0)
    need(isinstance(t.track, str), "track must be a comma-separated string", t.track)
    integer("track_examples", 1)
    integer("track_nll_samples", 1)


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise RunError(f"{path} is missing") from None
    except IsADirectoryError:
        raise RunError(f"{path} is corrupt: it is a directory, not a file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunError(f"{path} is corrupt: not valid JSON or not UTF-8 ({exc})") from None
    except RecursionError:
        raise RunError(f"{path} is corrupt: its JSON is nested too deeply") from None
    except OSError as exc:
        from .io import os_reason

        raise RunError(f"cannot read {path}: {os_reason(exc)}") from None


def is_run(path: Path) -> bool:
    """True when ``path`` already holds (part of) a run."""
    path = Path(path)
    return any(os.path.lexists(path / f) for f in (SPEC_FILE, MODEL_FILE, CHECKPOINT_FILE, METRICS_FILE))


def _is_our_temp(name: str, owns) -> bool:
    from .io import TMP_RE

    m = TMP_RE.match(name)
    return bool(m) and owns(m.group("name"))


def _is_sample_name(name: str) -> bool:
    return name.endswith(".png") and not name.startswith(".")


def run_inventory(run_dir: Path) -> Tuple[List[Path], List[str]]:
    """(files of the run, names of foreign entries) in ``run_dir``.

    A run's files: RUN_FILES, our temporary files of them, and in samples/ the PNG
    grids and their temporary files. Symlinks and anything else are foreign.
    """
    run_dir = Path(run_dir)
    ours: List[Path] = []
    foreign: List[str] = []
    for entry in sorted(os.scandir(run_dir), key=lambda e: e.name):
        st = entry.stat(follow_symlinks=False)
        regular = stat.S_ISREG(st.st_mode)
        if regular and (entry.name in RUN_FILES or _is_our_temp(entry.name, lambda n: n in RUN_FILES)):
            ours.append(Path(entry.path))
        elif entry.name == SAMPLES_DIR and stat.S_ISDIR(st.st_mode):
            for sub in sorted(os.scandir(entry.path), key=lambda e: e.name):
                if sub.is_file(follow_symlinks=False) and (_is_sample_name(sub.name) or _is_our_temp(sub.name, _is_sample_name)):
                    ours.append(Path(sub.path))
                else:
                    foreign.append(f"{SAMPLES_DIR}/{sub.name}")
        else:
            foreign.append(entry.name + ("/" if stat.S_ISDIR(st.st_mode) else " (symlink)" if stat.S_ISLNK(st.st_mode) else ""))
    return ours, foreign


def spec_is_valid(run_dir: Path) -> bool:
    """True when run_dir/spec.json is a regular file holding an infovae run spec."""
    p = Path(run_dir) / SPEC_FILE
    try:
        if not stat.S_ISREG(os.lstat(p).st_mode):
            return False
        obj = json.loads(p.read_bytes().decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(obj, dict) and obj.get("format") == FORMAT


def clear_run(run_dir: Path, why: str, dry_run: bool = False) -> None:
    """Delete the files of the run in ``run_dir`` (never anything else; never the lock file).

    Refuses, deleting nothing, when ``run_dir`` is not a run or holds foreign entries.
    ``dry_run``: only these checks.
    """
    run_dir = Path(run_dir)
    if not spec_is_valid(run_dir):
        raise RunError(f"{run_dir} is not an infovae run (no valid {SPEC_FILE}); {why} only replaces runs. Choose another --out or empty it yourself")
    ours, foreign = run_inventory(run_dir)
    if foreign:
        shown = ", ".join(foreign[:8]) + (f" and {len(foreign) - 8} more" if len(foreign) > 8 else "")
        raise RunError(f"{run_dir} holds files that are not part of a run ({shown}); {why} deletes only a run's own files. Move them away or choose another --out")
    if dry_run:
        return
    for p in ours:
        if p.name == LOCK_FILE:
            continue
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass
        except OSError as exc:
            from .io import os_reason

            raise StorageError(f"cannot delete {p}: {os_reason(exc)}") from None
    samples = run_dir / SAMPLES_DIR
    if samples.is_dir() and not samples.is_symlink():
        try:
            samples.rmdir()
        except OSError:
            pass


class RunLock:
    """An exclusive lock on a run: ``fcntl.flock`` on RUN/.infovae.lock, holding the writer's pid.

    The kernel drops the lock when the process dies (even by kill -9), so a stale lock never
    blocks a later writer. Readers (evaluate, sample, plot) do not take it.
    """

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.fd: Optional[int] = None

    @property
    def held(self) -> bool:
        return self.fd is not None

    def acquire(self) -> "RunLock":
        import fcntl

        from .io import make_dir, os_reason

        if self.fd is not None:
            return self
        make_dir(self.run_dir)
        path = self.run_dir / LOCK_FILE
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
        except OSError as exc:
            raise StorageError(f"cannot create the lock file {path}: {os_reason(exc)}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            finally:
                os.close(fd)
            raise RunError(f"{self.run_dir} is being written by another infovae process (pid {holder}); "
                           "wait for it to finish or stop it, then try again") from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass  # the lock itself holds; only the pid note is missing
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None

    def __del__(self):
        self.release()


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
