"""Factories of the built-in metrics: each wraps a pure function of ``infovae.metrics``
(where the computation and its documentation live) with its checked options."""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional

import torch

import infovae
from infovae import Metric, check_options
from infovae.plugins.metrics import OPTIONS


class FunctionMetric(Metric):
    """A metric function ``fn(model, x, *, [labels,] [generator,] [batch_size,] **options)`` with fixed options.

    With ``rows``/``combine`` functions (``fn`` computes ``combine(rows(0, N))``) the metric is
    ``distributed = "sharded"``: under torchrun each rank computes the rows of its shard and rank 0
    combines them (``infovae.metrics.sharding``); without, it runs on rank 0.
    """

    def __init__(self, name: str, fn: Callable[..., Dict[str, Any]], options: Dict[str, Any], needs_labels: bool = False,
                 uses_generator: bool = True, rows: Optional[Callable[..., Dict[str, torch.Tensor]]] = None,
                 combine: Optional[Callable[..., Dict[str, Any]]] = None):
        self.name, self.fn, self.options = name, fn, check_options(OPTIONS[name], options, f"metric {name!r}")
        self.needs_labels, self.uses_generator = needs_labels, uses_generator
        self._rows, self._combine = rows, combine
        self.distributed = "sharded" if rows is not None and combine is not None else "rank0"

    def _kwargs(self, labels, generator, batch_size):
        kwargs = dict(self.options, batch_size=batch_size)
        if self.uses_generator:
            kwargs["generator"] = generator
        if self.needs_labels:
            kwargs["labels"] = labels
        return kwargs

    def __call__(self, model, x: torch.Tensor, *, labels=None, generator: Optional[torch.Generator] = None, batch_size: int = 1024):
        return self.fn(model, x, **self._kwargs(labels, generator, batch_size))

    def rows(self, model, x: torch.Tensor, lo: int, hi: int, *, generator: Optional[torch.Generator] = None,
             batch_size: int = 1024) -> Dict[str, torch.Tensor]:
        """Per-example rows of the examples lo..hi-1 (see ``infovae.metrics.sharding``)."""
        if self._rows is None:
            raise AttributeError(f"metric {self.name!r} is not sharded")
        return self._rows(model, x, lo, hi, metric=self.name, **self._kwargs(None, generator, batch_size))

    def combine(self, model, rows: Dict[str, torch.Tensor], *, labels=None, generator: Optional[torch.Generator] = None,
                batch_size: int = 1024) -> Dict[str, Any]:
        """The result from the rows of all N examples, in order."""
        if self._combine is None:
            raise AttributeError(f"metric {self.name!r} is not sharded")
        kwargs = self._kwargs(labels, generator, batch_size)
        kwargs.pop("batch_size")
        return self._combine(model, rows, **kwargs)

    def __repr__(self) -> str:
        return f"FunctionMetric({self.name!r}, {self.options})"


_M = infovae.metrics


def nll(num_samples: Optional[int] = None, estimator: str = "is", proposal: str = "encoder", scale_factor: float = 1.0,
        prior_weight: float = 0.0, refine_steps: int = 50, ais_steps: int = 500, ais_chains: int = 16,
        leapfrog_steps: int = 10) -> Metric:
    """Negative log-likelihood by importance sampling or AIS (``infovae.metrics.nll``)."""
    return FunctionMetric("nll", _M.nll, {
        "num_samples": num_samples, "estimator": estimator, "proposal": proposal, "scale_factor": scale_factor,
        "prior_weight": prior_weight, "refine_steps": refine_steps, "ais_steps": ais_steps, "ais_chains": ais_chains,
        "leapfrog_steps": leapfrog_steps}, rows=_M.likelihood.nll_rows, combine=_M.likelihood.nll_combine)


def mutual_information(mi_points: Optional[int] = None, split_seed: int = 0) -> Metric:
    return FunctionMetric("mutual-information", _M.mutual_information, {"mi_points": mi_points, "split_seed": split_seed},
                          rows=_M.latent.codes_rows, combine=_M.latent.mutual_information_combine)


def mmd_prior(kernel: str = "rbf", bandwidth: str = "", estimator: str = "biased") -> Metric:
    opts = check_options(OPTIONS["mmd-prior"], {"kernel": kernel, "bandwidth": bandwidth, "estimator": estimator}, "metric 'mmd-prior'")
    bw = opts["bandwidth"].strip()
    if bw == "":
        value = None
    elif bw.lower() == "median":
        value = "median"
    else:
        try:
            value = float(bw)
        except ValueError:
            value = -1.0
        if not value > 0:
            raise infovae.PluginOptionError(f"option 'bandwidth' of metric 'mmd-prior': use a positive number, median, or nothing; got {bandwidth!r}")
    metric = FunctionMetric("mmd-prior", _M.mmd_prior, opts, rows=_M.latent.codes_rows, combine=_M.latent.mmd_prior_combine)
    metric.options["bandwidth"] = value
    return metric


def logdet_cov() -> Metric:
    return FunctionMetric("logdet-cov", _M.logdet_cov, {}, rows=_M.latent.codes_rows, combine=_M.latent.logdet_cov_combine)


def kl() -> Metric:
    return FunctionMetric("kl", _M.kl, {}, uses_generator=False, rows=_M.latent.kl_rows, combine=_M.latent.kl_combine)


def active_units(threshold: float = 0.01) -> Metric:
    return FunctionMetric("active-units", _M.active_units, {"threshold": threshold}, uses_generator=False,
                          rows=_M.latent.codes_rows, combine=_M.latent.active_units_combine)


def reconstruction() -> Metric:
    return FunctionMetric("reconstruction", _M.reconstruction, {}, rows=_M.likelihood.reconstruction_rows,
                          combine=_M.likelihood.reconstruction_combine)


def _check_cache_dir(path: str) -> None:
    """Make the classifier cache directory now, so a path that cannot hold it is refused in one line
    before the classifier is fitted (minutes on MNIST) rather than after."""
    import os
    from pathlib import Path

    target = Path(path).expanduser()
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        problem = exc.strerror or str(exc)
    else:
        if os.access(target, os.W_OK | os.X_OK):
            return
        problem = "not writable"
    raise infovae.PluginOptionError(f"option 'classifier_cache' of metric 'class-distribution': cannot use {path!r} as a "
                                    f"directory ({problem}); name a directory you can write in")


def class_distribution(num_generated: Optional[int] = None, pseudo_count: float = 1.0, classifier_test_fraction: float = 0.2,
                       split_seed: int = 0, classifier_cache: str = "") -> Metric:
    if classifier_cache:
        _check_cache_dir(classifier_cache)
    return FunctionMetric("class-distribution", _M.class_distribution,
                          {"num_generated": num_generated, "pseudo_count": pseudo_count,
                           "classifier_test_fraction": classifier_test_fraction, "split_seed": split_seed,
                           "classifier_cache": classifier_cache}, needs_labels=True)


def semi_supervised(num_labels: int = 1000, svm_c: float = 1.0, split_seed: int = 0) -> Metric:
    return FunctionMetric("semi-supervised", _M.semi_supervised,
                          {"num_labels": num_labels, "svm_c": svm_c, "split_seed": split_seed}, needs_labels=True, uses_generator=False,
                          rows=_M.latent.codes_rows, combine=_M.labels.semi_supervised_combine)
