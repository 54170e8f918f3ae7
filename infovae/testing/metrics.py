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
- ``sharding``: ``distributed`` is "rank0" (the default: nothing more to check) or "sharded"
  (``infovae.metrics.sharding``). A sharded metric has ``rows`` and ``combine``; for batch sizes
  64 and 7 and shard boundaries k = 1 and 17, rows(0, k) then rows(k, N) (each from a copy of the
  same generator, as two ranks hold) equal rows(0, N): same names, shapes and dtypes, values to
  1e-5 relative (floating-point reassociation: a shard's examples are evaluated in smaller
  batches), and every copy of the generator ends in the same state (so ``combine`` draws on
  rank 0 what one process draws); ``combine`` of the rows gives the "value" of calling the metric.
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


def _rows(cfg, m, model, x, lo, hi, seed, batch_size):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        rows = m.rows(model, x, lo, hi, generator=g, batch_size=batch_size)
    from ..metrics.sharding import check_rows

    try:
        return check_rows(rows, hi - lo, f"rows({lo}, {hi})"), g
    except TypeError as exc:
        _fail(cfg, "sharding", str(exc))


def _check_sharding(cfg: _Config) -> None:
    from ..metrics.sharding import DISTRIBUTED_MODES, distributed_mode

    c = "sharding"
    m = cfg.make()
    mode = distributed_mode(m)
    if mode not in DISTRIBUTED_MODES:
        _fail(cfg, c, f"distributed={mode!r}; declare one of {', '.join(DISTRIBUTED_MODES)} (or nothing: rank0)")
    if mode == "rank0":
        return
    if not (callable(getattr(m, "rows", None)) and callable(getattr(m, "combine", None))):
        _fail(cfg, c, "declares distributed='sharded' but lacks rows(model, x, lo, hi, *, generator, batch_size) "
                      "or combine(model, rows, *, labels, generator, batch_size)")
    model, x = reference_model(), reference_data(N)
    labels = reference_labels(x) if getattr(m, "needs_labels", False) else None
    for batch_size in (64, 7):
        full, g_full = _rows(cfg, m, model, x, 0, N, 3, batch_size)
        for k in (1, 17):
            a, g_a = _rows(cfg, m, model, x, 0, k, 3, batch_size)
            b, g_b = _rows(cfg, m, model, x, k, N, 3, batch_size)
            if set(a) != set(full) or set(b) != set(full):
                _fail(cfg, c, f"rows(0, {k}) and rows({k}, {N}) hold {sorted(a)} and {sorted(b)}, rows(0, {N}) {sorted(full)}")
            for key, whole in full.items():
                joined = torch.cat([a[key], b[key]])
                if joined.shape != whole.shape or joined.dtype != whole.dtype:
                    _fail(cfg, c, f"rows[{key!r}] of two shards join to {tuple(joined.shape)} {joined.dtype}, "
                                  f"the whole gives {tuple(whole.shape)} {whole.dtype}")
                if not torch.allclose(joined.double(), whole.double(), rtol=1e-5, atol=1e-6, equal_nan=False):
                    worst = float((joined.double() - whole.double()).abs().max())
                    _fail(cfg, c, f"rows[{key!r}] of shards 0..{k} and {k}..{N} differ from the rows of 0..{N} by up to {worst:.3g} "
                                  f"(batch_size={batch_size}): an example's value must not depend on the shard it is in "
                                  f"(draw every example's random numbers as one process does, or per fixed block)")
            if not (torch.equal(g_a.get_state(), g_full.get_state()) and torch.equal(g_b.get_state(), g_full.get_state())):
                _fail(cfg, c, f"rows(0, {k}), rows({k}, {N}) and rows(0, {N}) leave the generator in different states "
                              f"(batch_size={batch_size}); draw the same numbers whatever the shard")
        with torch.no_grad():
            res = m.combine(model, full, labels=labels, generator=g_full, batch_size=batch_size)
        direct = _call(cfg.make(), model, x, 3, batch_size=batch_size)
        if not isinstance(res, dict) or "value" not in res or not jsonable(res):
            _fail(cfg, c, f"combine returned {type(res).__name__}; return the metric's JSON-able result dict with 'value'")
        if not math.isclose(float(res["value"]), float(direct["value"]), rel_tol=1e-6, abs_tol=1e-9):
            _fail(cfg, c, f"combine(rows(0, N)) gives {res['value']!r} but the metric gives {direct['value']!r} "
                          f"(batch_size={batch_size}); the metric must compute combine(rows(0, N))")


_CHECKS = {"result": _check_result, "generator": _check_generator, "no_side_effects": _check_no_side_effects,
           "sharding": _check_sharding}
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
