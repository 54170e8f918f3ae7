"""Factories of the built-in metrics: each wraps a pure function of ``infovae.metrics``
(where the computation and its documentation live) with its checked options."""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional

import torch

import infovae
from infovae import Metric, check_options
from infovae.plugins.metrics import OPTIONS


class FunctionMetric(Metric):
    """A metric function ``fn(model, x, *, [labels,] [generator,] [batch_size,] **options)`` with fixed options."""

    def __init__(self, name: str, fn: Callable[..., Dict[str, Any]], options: Dict[str, Any], needs_labels: bool = False,
                 uses_generator: bool = True):
        self.name, self.fn, self.options = name, fn, check_options(OPTIONS[name], options, f"metric {name!r}")
        self.needs_labels, self.uses_generator = needs_labels, uses_generator

    def __call__(self, model, x: torch.Tensor, *, labels=None, generator: Optional[torch.Generator] = None, batch_size: int = 1024):
        kwargs = dict(self.options, batch_size=batch_size)
        if self.uses_generator:
            kwargs["generator"] = generator
        if self.needs_labels:
            kwargs["labels"] = labels
        return self.fn(model, x, **kwargs)

    def __repr__(self) -> str:
        return f"FunctionMetric({self.name!r}, {self.options})"


def nll(num_samples: Optional[int] = None, estimator: str = "is", proposal: str = "encoder", scale_factor: float = 1.0,
        prior_weight: float = 0.0, refine_steps: int = 50, ais_steps: int = 500, ais_chains: int = 16,
        leapfrog_steps: int = 10) -> Metric:
    """Negative log-likelihood by importance sampling or AIS (``infovae.metrics.nll``)."""
    return FunctionMetric("nll", infovae.metrics.nll, {
        "num_samples": num_samples, "estimator": estimator, "proposal": proposal, "scale_factor": scale_factor,
        "prior_weight": prior_weight, "refine_steps": refine_steps, "ais_steps": ais_steps, "ais_chains": ais_chains,
        "leapfrog_steps": leapfrog_steps})


def mutual_information(mi_points: Optional[int] = None, split_seed: int = 0) -> Metric:
    return FunctionMetric("mutual-information", infovae.metrics.mutual_information, {"mi_points": mi_points, "split_seed": split_seed})


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
    metric = FunctionMetric("mmd-prior", infovae.metrics.mmd_prior, opts)
    metric.options["bandwidth"] = value
    return metric


def logdet_cov() -> Metric:
    return FunctionMetric("logdet-cov", infovae.metrics.logdet_cov, {})


def kl() -> Metric:
    return FunctionMetric("kl", infovae.metrics.kl, {}, uses_generator=False)


def active_units(threshold: float = 0.01) -> Metric:
    return FunctionMetric("active-units", infovae.metrics.active_units, {"threshold": threshold}, uses_generator=False)


def reconstruction() -> Metric:
    return FunctionMetric("reconstruction", infovae.metrics.reconstruction, {})


def class_distribution(num_generated: Optional[int] = None, pseudo_count: float = 1.0, classifier_test_fraction: float = 0.2,
                       split_seed: int = 0, classifier_cache: str = "") -> Metric:
    return FunctionMetric("class-distribution", infovae.metrics.class_distribution,
                          {"num_generated": num_generated, "pseudo_count": pseudo_count,
                           "classifier_test_fraction": classifier_test_fraction, "split_seed": split_seed,
                           "classifier_cache": classifier_cache}, needs_labels=True)


def semi_supervised(num_labels: int = 1000, svm_c: float = 1.0, split_seed: int = 0) -> Metric:
    return FunctionMetric("semi-supervised", infovae.metrics.semi_supervised,
                          {"num_labels": num_labels, "svm_c": svm_c, "split_seed": split_seed}, needs_labels=True, uses_generator=False)
