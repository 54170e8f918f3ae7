"""Contract checks for metric plugins: ``factory(**options)`` -> ``metric(model, x, *, labels, generator, batch_size) -> dict``.

    from infovae.testing import MetricContract, check_metric

    class TestMyMetric(MetricContract):
        factory = MyMetric           # or a registered name
        options = {"num_samples": 10}

The kit runs the metric on a small seeded reference model (binary (1, 4, 4) data) and 40
examples (with labels when ``needs_labels``). Checks:

- ``result``: a dict, JSON-able without NaN or infinity (``json.dumps(allow_nan=False)``),
  with a finite number under "value"; ``needs_labels`` is a bool.
- ``generator``: the same generator seed gives the same result; the global RNG is left alone
  (all randomness from the given generator); a batch_size of 7 works too (its value may
  differ: chunked random draws need not match unchunked ones).
- ``no_side_effects``: the model's parameters and buffers and the examples are unchanged.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

import torch

from ._kit import (fail, jsonable, make_contract, reference_data, reference_labels, reference_model, resolve, run_checks, state,
                   static_factory)

__all__ = ["METRIC_CHECKS", "MetricContract", "check_metric"]

N = 40


@dataclass(frozen=True)
class _Config:
    name: str
    factory: Callable[..., Any]
    options: Mapping[str, Any]

    def make(self):
        return self.factory(**dict(self.options))


def _fail(cfg, check, msg):
    fail("metric", cfg.name, check, msg)


def _call(metric, model, x, seed: int, batch_size: int = 1024):
    labels = reference_labels(x) if getattr(metric, "needs_labels", False) else None
    with torch.no_grad():
        return metric(model, x, labels=labels, generator=torch.Generator().manual_seed(seed), batch_size=batch_size)


def _check_result(cfg: _Config) -> None:
    c = "result"
    m = cfg.make()
    if not callable(m):
        _fail(cfg, c, f"the factory returned {type(m).__name__}, expected a callable metric")
    if not isinstance(getattr(m, "needs_labels", False), bool):
        _fail(cfg, c, f"needs_labels must be a bool, got {getattr(m, 'needs_labels', None)!r}")
    res = _call(m, reference_model(), reference_data(N), 0)
    if not isinstance(res, dict) or "value" not in res:
        _fail(cfg, c, f"returned {type(res).__name__}{' without a value key' if isinstance(res, dict) else ''}; return a dict with 'value'")
    v = res["value"]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        _fail(cfg, c, f"'value' is {v!r}; expected a finite Python number (float(tensor), not a tensor)")
    if not jsonable(res):
        _fail(cfg, c, "the result is not JSON-able without NaN/inf (tensors, numpy scalars or non-finite floats inside)")


def _check_generator(cfg: _Config) -> None:
    c = "generator"
    model, x = reference_model(), reference_data(N)
    torch.manual_seed(5)
    before = torch.get_rng_state()
    a = _call(cfg.make(), model, x, 3)
    if not torch.equal(before, torch.get_rng_state()):
        _fail(cfg, c, "it drew from torch's global RNG; draw every random number from the generator it is given")
    b = _call(cfg.make(), model, x, 3)
    if a != b:
        _fail(cfg, c, f"the same generator seed gave different results ({a.get('value')!r} vs {b.get('value')!r})")
    small = _call(cfg.make(), model, x, 3, batch_size=7)
    if not isinstance(small, dict) or not math.isfinite(float(small.get("value", math.nan))):
        _fail(cfg, c, f"with batch_size=7 the result is {small!r}; expected a finite 'value'")


def _check_no_side_effects(cfg: _Config) -> None:
    c = "no_side_effects"
    model, x = reference_model(), reference_data(N)
    before, copy = state(model), x.clone()
    _call(cfg.make(), model, x, 0)
    if any(not torch.equal(before[k], v) for k, v in state(model).items()):
        _fail(cfg, c, "evaluating changed the model's parameters or buffers")
    if not torch.equal(copy, x):
        _fail(cfg, c, "evaluating modified the examples in place")


_CHECKS = {"result": _check_result, "generator": _check_generator, "no_side_effects": _check_no_side_effects}
METRIC_CHECKS: Tuple[str, ...] = tuple(_CHECKS)


def _config(factory, options) -> _Config:
    name, fac = resolve("metrics", factory)
    return _Config(name, fac, dict(options or {}))


def check_metric(factory: Any, options: Optional[Mapping[str, Any]] = None, *, checks: Optional[Sequence[str]] = None) -> Dict[str, str]:
    """Run the metric contract; raise AssertionError listing every failed check, else return the report."""
    return run_checks("metric", _config(factory, options), _CHECKS, checks)


MetricContract = make_contract(
    "metric", _CHECKS, lambda self: _config(static_factory(self), self.options),
    "Base class of a metric's contract tests: set factory and options.",
)
