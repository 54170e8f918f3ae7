"""infovae: a plugin-based PyTorch toolkit for InfoVAE.

Importing ``infovae`` does not import torch: torch-backed names are loaded on
first access (PEP 562), so the CLI's listing commands stay fast.
"""
from __future__ import annotations

import importlib
from typing import Any

from .errors import (
    CapabilityError,
    DataError,
    DuplicatePluginError,
    InfovaeError,
    PluginError,
    PluginBuildError,
    PluginLoadError,
    PluginWarning,
    PluginOptionError,
    RunError,
    StorageError,
    TrainingError,
    UnknownPluginError,
)
from .hookspecs import hookimpl
from .options import ACTIVATION_NAMES, Opt, Option, bandwidth_option, check_options, float_list
from .registry import KINDS, PluginInfo, Registry, registry
from .spec import DATA_KINDS, DataSpec

__version__ = "0.1.0"

# name -> module that defines it; imported on first attribute access.
_LAZY = {
    "Divergence": "infovae.base",
    "Decoder": "infovae.base",
    "Dataset": "infovae.base",
    "Sampler": "infovae.base",
    "Metric": "infovae.base",
    "DIVERGENCE_PROPERTIES": "infovae.base",
    "diagonal_gaussian": "infovae.base",
    "check_reduction": "infovae.base",
    "split_error": "infovae.base",
    "StandardNormalPrior": "infovae.priors",
    "score_by_autograd": "infovae.priors",
    "to_model": "infovae.data",
    "from_model": "infovae.data",
    "to_levels": "infovae.data",
    "from_levels": "infovae.data",
    "layers": "infovae.layers",
    "InfoVAE": "infovae.model",
    "functional": "infovae.functional",
    "progress": "infovae.progress",
    "metrics": "infovae.metrics",
    "evaluate_metrics": "infovae.metrics",
    "METRICS": "infovae.metrics",
    "Objective": "infovae.objective",
    "TrainerConfig": "infovae.runs",
    "make_run_spec": "infovae.build",
    "start_training": "infovae.api",
    "resume_training": "infovae.api",
    "load_run": "infovae.api",
    "RunSpec": "infovae.runs",
    "Logger": "infovae.loggers",
    "require_extra": "infovae.loggers",
    "evaluation_scalars": "infovae.loggers",
    "atomic_write_json": "infovae.io",
    "append_text": "infovae.io",
}

__all__ = sorted(
    [
        "CapabilityError", "DataError", "DuplicatePluginError", "InfovaeError", "PluginError",
        "PluginBuildError", "PluginLoadError", "PluginWarning", "PluginOptionError", "RunError", "StorageError", "TrainingError", "UnknownPluginError",
        "hookimpl", "ACTIVATION_NAMES", "Opt", "Option", "bandwidth_option", "check_options", "float_list", "KINDS", "PluginInfo", "Registry", "registry",
        "DATA_KINDS", "DataSpec", "__version__",
    ]
    + list(_LAZY)
)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'infovae' has no attribute {name!r}")
    mod = importlib.import_module(module)
    value = mod if module.endswith("." + name) else getattr(mod, name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
