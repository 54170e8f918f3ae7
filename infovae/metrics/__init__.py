"""The paper's evaluation metrics (InfoVAE section 4.2.1 and appendix B.2).

Every metric is a function ``metric(model, x, *, [labels,] [generator,] batch_size, **options) -> dict``
on an ``InfoVAE``-like model (``posterior``, ``log_likelihood``, ``prior``, ``spec``, ``latent_dim``,
``sample``) and examples x (N, C, H, W): float model values, or stored uint8 values (converted with
``infovae.to_model``). Results are JSON-able dicts with the headline number under "value", its units,
and what it was computed from (standard errors, bounds, sample sizes, a short "description").
All work runs under ``torch.no_grad`` on the model's device, in batches of ``batch_size`` model
evaluations, and is deterministic given the generator (None means seed 0).

``evaluate_metrics`` runs several by name; ``METRICS`` maps names to functions.
"""
from __future__ import annotations

import difflib
import inspect
import zlib
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Union

import torch

from ._common import check_labels, model_device, model_values
from .labels import class_cross_entropy, class_distribution, semi_supervised
from .latent import active_units, kl, logdet_cov, mmd_prior, mixture_log_density, mutual_information
from .likelihood import default_num_samples, importance_log_likelihood, nll, reconstruction

METRICS: Mapping[str, Callable[..., Dict[str, Any]]] = {
    "nll": nll,
    "mutual-information": mutual_information,
    "mmd-prior": mmd_prior,
    "logdet-cov": logdet_cov,
    "kl": kl,
    "active-units": active_units,
    "reconstruction": reconstruction,
    "class-distribution": class_distribution,
    "semi-supervised": semi_supervised,
}

#: Metrics that need class labels for the examples.
LABELLED_METRICS = frozenset({"class-distribution", "semi-supervised"})

_COMMON = ("labels", "generator", "batch_size")


def metric_options(name: str) -> Dict[str, Any]:
    """The options a metric takes beyond labels/generator/batch_size: name -> default."""
    fn = _lookup(name)
    return {
        p.name: p.default
        for p in inspect.signature(fn).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in _COMMON
    }


def _lookup(name: str) -> Callable[..., Dict[str, Any]]:
    try:
        return METRICS[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(METRICS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown metric {name!r}{hint} Available: {', '.join(METRICS)}") from None


def _metric_seed(base: int, name: str) -> int:
    return (base + zlib.crc32(name.encode())) % 2**63


def evaluate_metrics(
    model,
    x: torch.Tensor,
    names: Union[str, Iterable[str]],
    labels=None,
    generator: Optional[torch.Generator] = None,
    batch_size: int = 1024,
    **options: Any,
) -> Dict[str, Dict[str, Any]]:
    """Compute the named metrics on examples x (N, C, H, W); returns {name: result dict}.

    names: metric names (see ``METRICS``), as a list or one comma-separated string.
    labels: (N,) integer class labels; required by class-distribution and semi-supervised.
    generator: one seed is drawn from it and each metric gets its own generator seeded from that
    seed and its name, so a metric's value does not depend on which other metrics run with it.
    options: passed to every requested metric that takes an option of that name
    (e.g. ``num_samples`` for nll, ``mi_points`` for mutual-information; see ``metric_options``).
    Every name, option and the labels are checked before any work starts. The model is put in eval
    mode for the duration and restored afterwards.
    """
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    names = list(dict.fromkeys(names))
    if not names:
        raise ValueError(f"no metric named; choose from {', '.join(METRICS)}")
    fns = {name: _lookup(name) for name in names}
    accepted = {name: metric_options(name) for name in names}
    for key in options:
        if not any(key in acc for acc in accepted.values()):
            takes = "; ".join(f"{n}: {', '.join(acc) or '(none)'}" for n, acc in accepted.items())
            raise ValueError(f"option {key!r} is not taken by any requested metric. Options by metric: {takes}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    x = model_values(model, x)
    needs = [n for n in names if n in LABELLED_METRICS]
    if needs:
        if labels is None:
            raise ValueError(f"metric(s) {', '.join(needs)} need class labels, and none were given for this data")
        labels = check_labels(labels, x.shape[0])

    device = model_device(model)
    base = 0 if generator is None else int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    was_training = model.training
    model.eval()
    results: Dict[str, Dict[str, Any]] = {}
    try:
        for name, fn in fns.items():
            params = inspect.signature(fn).parameters
            kwargs = {k: v for k, v in options.items() if k in accepted[name]}
            if "batch_size" in params:
                kwargs["batch_size"] = batch_size
            if "generator" in params:
                kwargs["generator"] = torch.Generator(device=device).manual_seed(_metric_seed(base, name))
            if "labels" in params:
                kwargs["labels"] = labels
            results[name] = fn(model, x, **kwargs)
    finally:
        model.train(was_training)
    return results


__all__ = [
    "METRICS",
    "LABELLED_METRICS",
    "evaluate_metrics",
    "metric_options",
    "nll",
    "mutual_information",
    "mmd_prior",
    "logdet_cov",
    "kl",
    "active_units",
    "reconstruction",
    "class_distribution",
    "semi_supervised",
    "importance_log_likelihood",
    "default_num_samples",
    "mixture_log_density",
    "class_cross_entropy",
]
