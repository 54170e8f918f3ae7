"""Contract checks for sampler plugins: ``factory(**options)`` -> ``sampler(model, n, generator=None, data=None)``.

    from infovae.testing import SamplerContract, check_sampler

    class TestMySampler(SamplerContract):
        factory = MySampler          # or a registered name
        options = {"steps": 3}

The kit runs the sampler on a small seeded reference model (binary (1, 4, 4) data, a linear
Gaussian encoder and a Bernoulli decoder). Checks:

- ``attributes``: ``needs_data`` is a bool and ``grid_columns`` None or a positive int (what the
  CLI reads, see ``infovae.Sampler``).
- ``output``: a (n', 1, 4, 4) tensor on the data's grid ({0., 1.}) with n' = n, or a multiple of
  ``grid_columns`` (whole rows); with ``needs_data`` it is given n examples, and without data it
  raises ValueError (never a confusing error deeper down).
- ``generator``: the same generator seed gives the same samples, another seed different ones, and
  the global RNG is left alone (all randomness comes from the generator).
- ``no_side_effects``: the model's parameters and the data passed in are unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

import torch

from ._kit import fail, make_contract, reference_data, reference_model, resolve, run_checks, state, static_factory

__all__ = ["SAMPLER_CHECKS", "SamplerContract", "check_sampler"]


@dataclass(frozen=True)
class _Config:
    name: str
    factory: Callable[..., Any]
    options: Mapping[str, Any]
    n: int

    def make(self):
        return self.factory(**dict(self.options))


def _fail(cfg, check, msg):
    fail("sampler", cfg.name, check, msg)


def _call(cfg, sampler, model, seed: int, data=None):
    g = torch.Generator().manual_seed(seed)
    if data is None and getattr(sampler, "needs_data", False):
        data = reference_data(cfg.n, seed=5)
    return sampler(model, cfg.n, generator=g, data=data)


def _check_attributes(cfg: _Config) -> None:
    c = "attributes"
    s = cfg.make()
    if not callable(s):
        _fail(cfg, c, f"the factory returned {type(s).__name__}, expected a callable sampler(model, n, generator=None, data=None)")
    nd = getattr(s, "needs_data", False)
    if not isinstance(nd, bool):
        _fail(cfg, c, f"needs_data must be a bool, got {nd!r}")
    gc = getattr(s, "grid_columns", None)
    if gc is not None and (isinstance(gc, bool) or not isinstance(gc, int) or gc < 1):
        _fail(cfg, c, f"grid_columns must be None or a positive int, got {gc!r}")


def _check_output(cfg: _Config) -> None:
    c = "output"
    s = cfg.make()
    model = reference_model()
    x = _call(cfg, s, model, 0)
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or tuple(x.shape[1:]) != (1, 4, 4):
        _fail(cfg, c, f"returned {tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}; expected (n, 1, 4, 4) model values")
    cols = getattr(s, "grid_columns", None)
    if x.shape[0] != cfg.n and not (cols and x.shape[0] % cols == 0 and x.shape[0] >= cfg.n):
        _fail(cfg, c, f"returned {x.shape[0]} images for n={cfg.n}; return n, or whole rows of grid_columns={cols}")
    if not x.is_floating_point() or not bool(((x == 0) | (x == 1)).all()):
        _fail(cfg, c, "the samples are not on the data's grid ({0., 1.} for binary data); sample the decoder, do not return probabilities")
    if getattr(s, "needs_data", False):
        try:
            s(model, cfg.n, generator=torch.Generator().manual_seed(0), data=None)
        except ValueError:
            pass
        except Exception as exc:  # noqa: BLE001
            _fail(cfg, c, f"needs_data is True but data=None raised {type(exc).__name__}: {exc}; raise ValueError saying it needs data")
        else:
            _fail(cfg, c, "needs_data is True but data=None did not raise ValueError")


def _check_generator(cfg: _Config) -> None:
    c = "generator"
    s = cfg.make()
    model = reference_model()
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = _call(cfg, s, model, 7)
    if not torch.equal(before, torch.get_rng_state()):
        _fail(cfg, c, "it drew from torch's global RNG although a generator was given; pass generator= to every random call")
    b = _call(cfg, cfg.make(), model, 7)
    if not torch.equal(a, b):
        _fail(cfg, c, "the same generator seed gave different samples")
    d = _call(cfg, cfg.make(), model, 8)
    if torch.equal(a, d):
        _fail(cfg, c, "two generator seeds gave identical samples: the generator is ignored")


def _check_no_side_effects(cfg: _Config) -> None:
    c = "no_side_effects"
    s = cfg.make()
    model = reference_model()
    before = state(model)
    data = reference_data(cfg.n, seed=5)
    copy = data.clone()
    _call(cfg, s, model, 0, data=data if getattr(s, "needs_data", False) else None)
    if any(not torch.equal(before[k], v) for k, v in state(model).items()):
        _fail(cfg, c, "sampling changed the model's parameters or buffers")
    if not torch.equal(copy, data):
        _fail(cfg, c, "sampling modified the data it was given in place")


_CHECKS = {"attributes": _check_attributes, "output": _check_output, "generator": _check_generator, "no_side_effects": _check_no_side_effects}
SAMPLER_CHECKS: Tuple[str, ...] = tuple(_CHECKS)


def _config(factory, options, n) -> _Config:
    name, fac = resolve("samplers", factory)
    return _Config(name, fac, dict(options or {}), int(n))


def check_sampler(factory: Any, options: Optional[Mapping[str, Any]] = None, *, n: int = 6, checks: Optional[Sequence[str]] = None) -> Dict[str, str]:
    """Run the sampler contract; raise AssertionError listing every failed check, else return the report."""
    return run_checks("sampler", _config(factory, options, n), _CHECKS, checks)


SamplerContract = make_contract(
    "sampler", _CHECKS, lambda self: _config(static_factory(self), self.options, getattr(self, "n", 6)),
    "Base class of a sampler's contract tests: set factory and options.",
)
