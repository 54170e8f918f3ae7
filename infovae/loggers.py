"""Experiment loggers (the ``loggers`` plugin kind) and the guard that keeps them harmless.

A logger mirrors a run into an experiment tracker. Its factory is
``factory(run_dir: Path, **options)`` and the object it returns has the methods of
``Logger`` (each may be left as the no-op default):

    log_params(params)          the run's spec, flattened to {"decoder.name": "pixelcnn", ...}
    log_scalars(step, scalars)  {"train/loss": 93.1, "valid/mmd": 0.002, ...} at an optimiser step
    log_image(step, tag, image) a uint8 array (H, W) gray or (H, W, 3) RGB, e.g. a sample grid
    log_evaluation(report)      the dict ``infovae evaluate`` writes to evaluation.json
    close()

The built-in ``jsonl`` logger writes the run's own metrics.jsonl and is always on;
its errors are the run's errors. Every other logger runs inside ``LoggerSet``: the
first exception a logger raises (full disk, unreachable server, bad credentials) is
reported once as a warning and that logger is switched off, so training continues and
the run's own files (which never depend on a logger) stay complete.

The loggers a run was trained with are recorded in ``loggers.json`` in the run, so
``infovae evaluate`` can send its results to the same trackers.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Tuple

from .errors import PluginError
from .runs import LOGGERS_FILE
ALWAYS_ON = "jsonl"


class LoggerWarning(RuntimeWarning):
    """A logger failed and was switched off; the run itself is unaffected."""


class Logger:
    """Base class with no-op methods; subclass and override what your tracker supports."""

    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def log_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        pass

    def log_image(self, step: int, tag: str, image) -> None:
        pass

    def log_evaluation(self, report: Mapping[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


def require_extra(module: str, extra: str, what: str) -> Any:
    """Import ``module`` or raise a PluginError naming the pip command that installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise PluginError(
            f"the {what} logger needs the optional package {module.split('.')[0]!r} ({type(exc).__name__}: {exc}); "
            f"install it with: pip install 'infovae[{extra}]'"
        ) from None


def flatten_params(obj: Any, prefix: str = "") -> Dict[str, Any]:
    """A nested spec -> {"a.b.c": scalar}; lists become "a.0.b" keys, None becomes "none"."""
    out: Dict[str, Any] = {}
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            out.update(flatten_params(v, f"{prefix}{k}."))
        return out
    if isinstance(obj, (list, tuple)):
        if all(not isinstance(v, (Mapping, list, tuple)) for v in obj):
            return {prefix.rstrip("."): ",".join(str(v) for v in obj)}
        for i, v in enumerate(obj):
            out.update(flatten_params(v, f"{prefix}{i}."))
        return out
    key = prefix.rstrip(".")
    out[key] = "none" if obj is None else obj
    return out


def evaluation_scalars(report: Mapping[str, Any]) -> Dict[str, float]:
    """{"eval/<metric>": value, "eval/<metric>/std_err": s.e.} from an evaluation.json report."""
    out: Dict[str, float] = {}
    for name, res in (report.get("metrics") or {}).items():
        if not isinstance(res, Mapping):
            continue
        for key in ("value", "std_err"):
            v = res.get(key)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out[f"eval/{name}" + ("" if key == "value" else "/std_err")] = float(v)
    return out


class LoggerSet:
    """Several loggers behind one interface; a failing optional logger warns once and is dropped."""

    def __init__(self, loggers: Sequence[Tuple[str, Any]] = (), strict: Sequence[str] = (ALWAYS_ON,)):
        self.loggers: List[Tuple[str, Any]] = list(loggers)
        self.strict = set(strict)
        self.failed: Dict[str, str] = {}

    def _call(self, method: str, *args) -> None:
        for name, logger in list(self.loggers):
            fn = getattr(logger, method, None)
            if fn is None:
                continue
            if name in self.strict:
                fn(*args)
                continue
            try:
                fn(*args)
            except Exception as exc:  # noqa: BLE001 - a tracker must never stop training
                self.fail(name, exc)

    def fail(self, name: str, exc: BaseException) -> None:
        self.failed[name] = f"{type(exc).__name__}: {exc}"
        self.loggers = [(n, lg) for n, lg in self.loggers if n != name]
        warnings.warn(
            f"infovae: logger {name!r} failed ({self.failed[name]}) and is switched off for the rest of this run; "
            f"training continues and the run's own files are unaffected",
            LoggerWarning,
            stacklevel=3,
        )

    def log_params(self, params):
        self._call("log_params", params)

    def log_scalars(self, step, scalars):
        self._call("log_scalars", step, scalars)

    def log_image(self, step, tag, image):
        self._call("log_image", step, tag, image)

    def log_evaluation(self, report):
        self._call("log_evaluation", report)

    def close(self):
        self._call("close")
        self.loggers = []

    def names(self) -> List[str]:
        return [n for n, _ in self.loggers]


def resolve_loggers(reg, names: Sequence[str], options: Mapping[str, Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """Check logger names and options (and that their packages are installed) before any work.

    Returns [{"name": ..., "options": {...resolved}}] without ``jsonl`` (always on).
    """
    out = []
    for name in dict.fromkeys(n for n in names if n != ALWAYS_ON):
        resolved = reg.resolve_options("loggers", name, options.get(name, {}))
        check = getattr(reg.info("loggers", name).load(), "check_installed", None)
        if check is not None:
            check()
        out.append({"name": name, "options": _jsonable(resolved)})
    return out


def _jsonable(opts: Mapping[str, Any]) -> Dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in opts.items()}


def write_loggers_file(run_dir, choices: Sequence[Mapping[str, Any]]) -> None:
    from .io import atomic_write_json

    atomic_write_json(Path(run_dir) / LOGGERS_FILE, {"loggers": list(choices)}, root=run_dir)


def read_loggers_file(run_dir) -> List[Dict[str, Any]]:
    p = Path(run_dir) / LOGGERS_FILE
    if not p.exists():
        return []
    try:
        data = json.loads(p.read_text())
        return [{"name": str(c["name"]), "options": dict(c.get("options") or {})} for c in data.get("loggers", [])]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        warnings.warn(f"infovae: {p} is malformed ({exc}); no experiment logger will be used", LoggerWarning, stacklevel=2)
        return []


def open_loggers(reg, run_dir, choices: Sequence[Mapping[str, Any]], include_jsonl: bool = True) -> LoggerSet:
    """Build the loggers (``jsonl`` first when asked); a logger that fails to open is warned about and skipped."""
    run_dir = Path(run_dir)
    out = LoggerSet()
    if include_jsonl:
        out.loggers.append((ALWAYS_ON, reg.create("loggers", ALWAYS_ON, {}, run_dir)))
    for c in choices:
        try:
            logger = reg.create("loggers", c["name"], dict(c.get("options") or {}), run_dir)
        except Exception as exc:  # noqa: BLE001
            out.fail(c["name"], exc)
            continue
        out.loggers.append((c["name"], logger))
    return out
