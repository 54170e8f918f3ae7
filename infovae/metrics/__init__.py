"""The paper's evaluation metrics (InfoVAE section 4.2.1 and appendix B.2) as pure functions,
and ``evaluate_metrics``, which runs metric plugins by name.

Every function here is ``metric(model, x, *, [labels,] [generator,] batch_size, **options) -> dict``
on an ``InfoVAE``-like model (``posterior``, ``log_likelihood``, ``prior``, ``spec``, ``latent_dim``,
``sample``) and examples x (N, C, H, W): float model values, or stored uint8 values (converted with
``infovae.to_model``). Results are JSON-able dicts with the headline number under "value", its units,
and what it was computed from (standard errors, bounds, sample sizes, a short "description").
All work runs under ``torch.no_grad`` on the model's device, in batches of ``batch_size`` model
evaluations, and is deterministic given the generator (None means seed 0).

Metrics are the plugin kind ``metrics`` (hook ``register_metrics``): the built-ins register these
functions with typed options (``infovae plugins --kind metrics``), and outside packages add their
own. ``evaluate_metrics`` runs registered metrics by name; ``METRICS`` maps the built-in names to
the functions above (for direct use).
"""
from __future__ import annotations

import zlib
from typing import Any, Dict, Iterable, Mapping, Optional, Union

import torch

from ..errors import PluginBuildError, PluginOptionError
from ._common import check_labels, model_device, model_values
from .labels import class_cross_entropy, class_distribution, semi_supervised
from .latent import active_units, kl, logdet_cov, mmd_prior, mixture_log_density, mutual_information
from .likelihood import default_num_samples, importance_log_likelihood, nll, reconstruction
from .sharding import DISTRIBUTED_MODES, distributed_mode, run_distributed, shard_bounds

METRICS = {
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

#: Built-in metrics that need class labels (a metric plugin says so with ``needs_labels``).
LABELLED_METRICS = frozenset({"class-distribution", "semi-supervised"})


def _registry(reg=None):
    from ..registry import registry

    return reg or registry()


def metric_options(name: str, reg=None) -> Dict[str, Any]:
    """The options a registered metric takes: name -> default."""
    return {o.name: o.default for o in _registry(reg).info("metrics", name).options}


def _metric_seed(base: int, name: str) -> int:
    return (base + zlib.crc32(name.encode())) % 2**63


def parse_names(names: Union[str, Iterable[str]]) -> list:
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    return list(dict.fromkeys(names))


def build_metrics(names: Union[str, Iterable[str]], options: Optional[Mapping[str, Mapping[str, Any]]] = None,
                  shared: Optional[Mapping[str, Any]] = None, reg=None) -> Dict[str, Any]:
    """Metric objects by name, every name and option checked (did-you-mean on both).

    options: {metric: {key: value}}; shared: {key: value} given to every requested metric that
    declares that key (an error when none does).
    """
    reg = _registry(reg)
    names = parse_names(names)
    if not names:
        raise PluginOptionError(f"no metric named; choose from {', '.join(reg.names('metrics'))}")
    infos = {name: reg.info("metrics", name) for name in names}
    options = {k: dict(v) for k, v in (options or {}).items()}
    stray = [t for t in options if t not in infos]
    if stray:
        raise PluginOptionError(f"options given for metric(s) {', '.join(stray)} that are not requested ({', '.join(names)})")
    for key, value in (shared or {}).items():
        takers = [n for n, i in infos.items() if key in {o.name for o in i.options}]
        if not takers:
            takes = "; ".join(f"{n}: {', '.join(o.name for o in i.options) or '(none)'}" for n, i in infos.items())
            raise PluginOptionError(f"option {key!r} is not taken by any requested metric. Options by metric: {takes}")
        for n in takers:
            options.setdefault(n, {}).setdefault(key, value)
    built = {}
    for name in names:
        metric = reg.create("metrics", name, options.get(name, {}))
        if not callable(metric):
            from ..registry import describe_plugin

            raise PluginBuildError(f"{describe_plugin(infos[name])}: its factory returned {type(metric).__name__}, "
                                   f"expected a callable metric(model, x, *, labels, generator, batch_size) -> dict")
        mode = distributed_mode(metric)
        if mode not in DISTRIBUTED_MODES or (mode == "sharded" and not (callable(getattr(metric, "rows", None))
                                                                          and callable(getattr(metric, "combine", None)))):
            from ..registry import describe_plugin

            raise PluginBuildError(f"{describe_plugin(infos[name])}: distributed={mode!r}; declare 'rank0' (the default) or "
                                   f"'sharded' with rows() and combine() methods (see infovae.metrics.sharding)")
        built[name] = metric
    return built


def evaluate_metrics(
    model,
    x: torch.Tensor,
    names: Union[str, Iterable[str]],
    labels=None,
    generator: Optional[torch.Generator] = None,
    batch_size: int = 1024,
    *,
    options: Optional[Mapping[str, Mapping[str, Any]]] = None,
    reg=None,
    ctx=None,
    **shared: Any,
) -> Dict[str, Dict[str, Any]]:
    """Compute the named metrics on examples x (N, C, H, W); returns {name: result dict}.

    names: registered metric names (``infovae plugins --kind metrics``), a list or one comma-separated string.
    labels: (N,) integer class labels; required by metrics with ``needs_labels`` (class-distribution, semi-supervised).
    generator: one seed is drawn from it and each metric gets its own generator seeded from that
    seed and its name, so a metric's value does not depend on which other metrics run with it.
    options: per metric, ``{"nll": {"num_samples": 5000}}``.
    shared (keyword arguments): given to every requested metric that takes an option of that name
    (e.g. ``num_samples=`` for nll, ``mi_points=`` for mutual-information; see ``metric_options``).
    Every name, option and the labels are checked before any work starts. The model is put in eval
    mode for the duration and restored afterwards.
    ctx: an ``infovae.distributed.Context`` under torchrun (every rank calls this with the same
    examples and generator): each metric runs as it declares (``infovae.metrics.sharding``) and the
    results are returned on rank 0; the other ranks get {}. None or one process: as before.
    """
    metrics = build_metrics(names, options, shared, reg)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    x = model_values(model, x)
    needs = [n for n, m in metrics.items() if getattr(m, "needs_labels", False)]
    if needs:
        if labels is None:
            raise ValueError(f"metric(s) {', '.join(needs)} need class labels, and none were given for this data")
        labels = check_labels(labels, x.shape[0])

    device = model_device(model)
    distributed = ctx is not None and ctx.distributed
    base = 0 if generator is None else int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    was_training = model.training
    model.eval()
    results: Dict[str, Dict[str, Any]] = {}
    try:
        for name, metric in metrics.items():
            gen = torch.Generator(device=device).manual_seed(_metric_seed(base, name))
            with torch.no_grad():
                if distributed:
                    res = run_distributed(ctx, name, metric, model, x, labels=labels if name in needs else None,
                                          generator=gen, batch_size=batch_size)
                    if res is None:  # not rank 0: rank 0 alone holds (and writes) the results
                        continue
                else:
                    res = metric(model, x, labels=labels if name in needs else None, generator=gen, batch_size=batch_size)
            if not isinstance(res, dict) or "value" not in res:
                from ..registry import describe_plugin

                what = "a dict without a 'value' key" if isinstance(res, dict) else type(res).__name__
                raise PluginBuildError(f"{describe_plugin(_registry(reg).info('metrics', name))} returned {what}; "
                                       f"a metric returns a dict with its headline number under 'value'")
            results[name] = res
    finally:
        model.train(was_training)
    return results


__all__ = [
    "METRICS",
    "build_metrics",
    "parse_names",
    "LABELLED_METRICS",
    "DISTRIBUTED_MODES",
    "distributed_mode",
    "shard_bounds",
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
