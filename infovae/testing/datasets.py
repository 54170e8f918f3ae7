"""Contract checks for data-set plugins: ``factory(**options)`` -> an ``infovae.Dataset``-like object.

    from infovae.testing import DatasetContract, check_dataset

    class TestMyData(DatasetContract):
        factory = MyData             # or a registered name
        options = {"path": "tests/data/tiny"}

Checks:

- ``spec``: ``spec`` is an ``infovae.DataSpec``; ``splits`` a non-empty tuple of distinct names
  from "train", "valid", "test" that includes "train".
- ``splits``: every split is a uint8 tensor (N, C, H, W) with N >= 1 and (C, H, W) = spec.shape,
  holding only the kind's values (0/1 for binary); ``labels(split)`` is None or int64 (N,) >= 0.
- ``unknown_split``: ``split("no-such-split")`` raises ValueError naming the splits that exist
  (``raise infovae.split_error(name, self.splits)``).
- ``deterministic``: two objects built with the same options give equal splits and labels
  (seeded randomness only); a ``dynamic`` data set gives the same train draw for the same
  generator seed and another one for another seed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

import torch

from infovae import DataSpec

from ._kit import fail, make_contract, resolve, run_checks, static_factory

__all__ = ["DATASET_CHECKS", "DatasetContract", "check_dataset"]

SPLIT_NAMES = ("train", "valid", "test")


@dataclass(frozen=True)
class _Config:
    name: str
    factory: Callable[..., Any]
    options: Mapping[str, Any]

    def make(self):
        return self.factory(**dict(self.options))


def _fail(cfg, check, msg):
    fail("dataset", cfg.name, check, msg)


def _check_spec(cfg: _Config) -> None:
    c = "spec"
    ds = cfg.make()
    if not isinstance(getattr(ds, "spec", None), DataSpec):
        _fail(cfg, c, f"spec must be an infovae.DataSpec, got {getattr(ds, 'spec', None)!r}")
    splits = getattr(ds, "splits", None)
    if not isinstance(splits, tuple) or not splits or len(set(splits)) != len(splits) or not set(splits) <= set(SPLIT_NAMES) or "train" not in splits:
        _fail(cfg, c, f"splits must be a tuple of distinct names from {SPLIT_NAMES} including 'train', got {splits!r}")


def _check_splits(cfg: _Config) -> None:
    c = "splits"
    ds = cfg.make()
    spec = ds.spec
    for name in ds.splits:
        x = ds.split(name)
        if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8:
            _fail(cfg, c, f"split {name!r} is {getattr(x, 'dtype', type(x).__name__)}; expected a uint8 tensor of stored values")
        if x.dim() != 4 or tuple(x.shape[1:]) != tuple(spec.shape) or x.shape[0] < 1:
            _fail(cfg, c, f"split {name!r} has shape {tuple(x.shape)}; expected (N >= 1, {', '.join(map(str, spec.shape))})")
        if spec.kind == "binary" and int(x.max()) > 1:
            _fail(cfg, c, f"split {name!r} of binary data holds the value {int(x.max())}; binary data are 0 or 1")
        y = ds.labels(name)
        if y is not None:
            if not isinstance(y, torch.Tensor) or y.dtype != torch.int64 or tuple(y.shape) != (x.shape[0],):
                _fail(cfg, c, f"labels({name!r}) is {getattr(y, 'dtype', type(y).__name__)} {tuple(getattr(y, 'shape', ()))}; "
                              f"expected int64 ({x.shape[0]},) or None")
            if y.numel() and int(y.min()) < 0:
                _fail(cfg, c, f"labels({name!r}) holds negative classes")


def _check_unknown_split(cfg: _Config) -> None:
    c = "unknown_split"
    ds = cfg.make()
    try:
        ds.split("no-such-split")
    except ValueError as exc:
        if not all(s in str(exc) for s in ds.splits):
            _fail(cfg, c, f"the ValueError does not name the splits that exist ({', '.join(ds.splits)}): {exc}")
        return
    except Exception as exc:  # noqa: BLE001
        _fail(cfg, c, f"split('no-such-split') raised {type(exc).__name__}: {exc}; raise infovae.split_error(name, self.splits)")
    _fail(cfg, c, "split('no-such-split') returned instead of raising ValueError")


def _check_deterministic(cfg: _Config) -> None:
    c = "deterministic"
    torch.manual_seed(1)
    a = cfg.make()
    torch.manual_seed(2)
    b = cfg.make()
    for name in a.splits:
        if not torch.equal(a.split(name), b.split(name)):
            _fail(cfg, c, f"two objects built with the same options give different {name!r} splits; seed every random choice")
        la, lb = a.labels(name), b.labels(name)
        if (la is None) != (lb is None) or (la is not None and not torch.equal(la, lb)):
            _fail(cfg, c, f"two objects built with the same options give different labels for {name!r}")
    if getattr(a, "dynamic", False):
        d1 = a.split("train", generator=torch.Generator().manual_seed(3))
        d2 = a.split("train", generator=torch.Generator().manual_seed(3))
        d3 = a.split("train", generator=torch.Generator().manual_seed(4))
        if not torch.equal(d1, d2):
            _fail(cfg, c, "a dynamic data set gave two train draws for the same generator seed")
        if torch.equal(d1, d3):
            _fail(cfg, c, "a dynamic data set gave the same train draw for two generator seeds")


_CHECKS = {"spec": _check_spec, "splits": _check_splits, "unknown_split": _check_unknown_split, "deterministic": _check_deterministic}
DATASET_CHECKS: Tuple[str, ...] = tuple(_CHECKS)


def _config(factory, options) -> _Config:
    name, fac = resolve("datasets", factory)
    return _Config(name, fac, dict(options or {}))


def check_dataset(factory: Any, options: Optional[Mapping[str, Any]] = None, *, checks: Optional[Sequence[str]] = None) -> Dict[str, str]:
    """Run the dataset contract; raise AssertionError listing every failed check, else return the report."""
    return run_checks("dataset", _config(factory, options), _CHECKS, checks)


DatasetContract = make_contract(
    "dataset", _CHECKS, lambda self: _config(static_factory(self), self.options),
    "Base class of a data set's contract tests: set factory and options.",
)
