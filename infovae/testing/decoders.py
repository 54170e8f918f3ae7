"""Contract checks for decoder plugins p(x|z).

Two forms, same checks, as for divergences::

    from infovae import DataSpec
    from infovae.testing import DecoderContract, check_decoder

    class TestMyDecoder(DecoderContract):
        factory = MyDecoder                  # factory(spec, latent_dim, **options), or a registered name
        options = {"hidden": 32}
        specs = (DataSpec("binary", (1, 8, 8)),)

    check_decoder(MyDecoder, {"hidden": 32}, specs=[DataSpec("binary", (1, 8, 8))])

Checks, for every spec in ``specs`` (default: one small shape per supported
data kind; supported kinds come from the registration's ``supports`` or the
factory's ``supports`` attribute). Values are checked in eval mode (no dropout):

- ``metadata``: an ``nn.Module`` with ``log_prob`` and ``sample``; building it
  for a data kind it does not support raises CapabilityError or ValueError.
- ``log_prob``: ``log_prob(x, z)`` is (B,) float32, finite and <= 0 (a
  probability of discrete data); ``reduction="none"`` gives (B, C, H, W)
  terms <= 0 that sum to it; the default reduction is "sum".
- ``gradients``: finite gradients w.r.t. z and the parameters, non-zero w.r.t. z.
- ``batch_independence``: an example's log-likelihood does not depend on the
  rest of the batch.
- ``sample``: ``sample(z, generator)`` is (B, C, H, W) on the data's grid
  ({0, 1}, or v / 127.5 - 1 for v in 0..255), the same for the same generator
  seed, leaves the global RNG alone when given a generator, and has finite
  log-likelihood.
- ``bad_input``: x of the wrong shape, z of the wrong dimension and an unknown
  reduction raise ValueError.
- ``normalization``: for tiny shapes (``normalization_specs``, default binary
  (1, 2, 3) and gray8 (1, 1, 1)) the probabilities of all possible images sum
  to 1 (float64 log-sum-exp within 1e-4), for several codes.
"""
from __future__ import annotations

import inspect
import itertools
import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

import infovae
from infovae import CapabilityError, DataSpec, to_model

from .divergences import ContractSkip, _skip

__all__ = ["DECODER_CHECKS", "DecoderContract", "check_decoder"]

DECODER_CHECKS: Tuple[str, ...] = (
    "metadata",
    "log_prob",
    "gradients",
    "batch_independence",
    "sample",
    "bad_input",
    "normalization",
)
DEFAULT_SHAPES = {"binary": (1, 4, 4), "gray8": (1, 4, 4), "rgb8": (3, 4, 4)}
DEFAULT_NORMALIZATION_SHAPES = {"binary": (1, 2, 3), "gray8": (1, 1, 1)}
MAX_ENUMERATION = 1 << 16  # images enumerated by the normalization check, at most
NORMALIZATION_ATOL = 1e-4


@dataclass(frozen=True)
class _Config:
    name: str
    factory: Callable[..., Any]
    options: Mapping[str, Any]
    specs: Tuple[DataSpec, ...]
    normalization_specs: Tuple[DataSpec, ...]
    latent_dim: int
    batch: int
    supports: Tuple[str, ...]

    def make(self, spec: DataSpec, seed: int = 0) -> nn.Module:
        torch.manual_seed(seed)
        dec = self.factory(spec, self.latent_dim, **dict(self.options))
        if isinstance(dec, nn.Module):
            dec.eval()
        return dec


def _fail(cfg: _Config, check: str, message: str) -> None:
    raise AssertionError(f"decoder {cfg.name!r} fails {check!r}: {message}")


def _data(spec: DataSpec, batch: int, seed: int) -> torch.Tensor:
    """Random valid model values (B, C, H, W) for ``spec``."""
    g = torch.Generator().manual_seed(seed)
    raw = torch.randint(0, spec.num_levels, (batch, *spec.shape), generator=g, dtype=torch.uint8)
    return to_model(raw, spec)


def _codes(batch: int, d: int, seed: int) -> torch.Tensor:
    return torch.randn(batch, d, generator=torch.Generator().manual_seed(seed))


def _on_grid(x: torch.Tensor, spec: DataSpec) -> bool:
    if spec.kind == "binary":
        return bool(((x == 0) | (x == 1)).all())
    v = (x.double() + 1.0) * 127.5
    return bool(((v - v.round()).abs() < 1e-3).all() and (v.round() >= 0).all() and (v.round() <= 255).all())


def _per_spec(cfg: _Config, body: Callable[[DataSpec], None]) -> None:
    for spec in cfg.specs:
        body(spec)


def _check_metadata(cfg: _Config) -> None:
    c = "metadata"
    for spec in cfg.specs:
        dec = cfg.make(spec)
        if not isinstance(dec, nn.Module):
            _fail(cfg, c, f"the factory returned {type(dec).__name__}, expected a torch.nn.Module")
        for method in ("log_prob", "sample"):
            if not callable(getattr(dec, method, None)):
                _fail(cfg, c, f"it has no {method}() method")
        if "reduction" not in inspect.signature(dec.log_prob).parameters:
            _fail(cfg, c, "log_prob(x, z, reduction='sum') must take a reduction argument")
    for kind in infovae.DATA_KINDS:
        if kind in cfg.supports:
            continue
        try:
            cfg.make(DataSpec(kind, DEFAULT_SHAPES[kind]))
        except (CapabilityError, ValueError):
            continue
        except Exception as exc:  # noqa: BLE001 - which error is the point
            _fail(cfg, c, f"building it for unsupported {kind} data raised {type(exc).__name__}: {exc}; "
                          f"raise infovae.CapabilityError naming what it supports")
        _fail(cfg, c, f"it declares supports={cfg.supports} but builds for {kind} data without an error")


def _check_log_prob(cfg: _Config) -> None:
    c = "log_prob"

    def body(spec: DataSpec) -> None:
        dec = cfg.make(spec)
        x, z = _data(spec, cfg.batch, 1), _codes(cfg.batch, cfg.latent_dim, 2)
        with torch.no_grad():
            total = dec.log_prob(x, z)
            explicit = dec.log_prob(x, z, reduction="sum")
            terms = dec.log_prob(x, z, reduction="none")
        where = f"for {spec.kind} {spec.shape}"
        if not isinstance(total, torch.Tensor) or tuple(total.shape) != (cfg.batch,):
            _fail(cfg, c, f"log_prob(x, z) {where} returned shape {tuple(getattr(total, 'shape', ()))}, expected ({cfg.batch},)")
        if total.dtype != torch.float32 or not torch.isfinite(total).all():
            _fail(cfg, c, f"log_prob {where} must be finite float32, got {total.dtype} {total.tolist()}")
        if float(total.max()) > 1e-5:
            _fail(cfg, c, f"log_prob {where} is positive ({float(total.max())!r}): log-probabilities of discrete data are <= 0")
        if not torch.equal(total, explicit):
            _fail(cfg, c, "the default reduction differs from reduction='sum'")
        if tuple(terms.shape) != (cfg.batch, *spec.shape):
            _fail(cfg, c, f"reduction='none' {where} returned shape {tuple(terms.shape)}, expected {(cfg.batch, *spec.shape)}")
        if not torch.isfinite(terms).all() or float(terms.max()) > 1e-5:
            _fail(cfg, c, f"reduction='none' {where} has non-finite or positive terms (max {float(terms.max())!r})")
        summed = terms.double().flatten(1).sum(1)
        tol = 1e-5 * terms.double().abs().flatten(1).sum(1) + 1e-4
        if ((summed - total.double()).abs() > tol).any():
            _fail(cfg, c, f"reduction='none' terms {where} sum to {summed.tolist()} but reduction='sum' gives {total.tolist()}")

    _per_spec(cfg, body)


def _check_gradients(cfg: _Config) -> None:
    c = "gradients"

    def body(spec: DataSpec) -> None:
        dec = cfg.make(spec)
        x = _data(spec, cfg.batch, 3)
        z = _codes(cfg.batch, cfg.latent_dim, 4).requires_grad_(True)
        dec.log_prob(x, z).sum().backward()
        if z.grad is None:
            _fail(cfg, c, "log_prob does not depend on z (no gradient reaches it): the decoder ignores its code")
        if not torch.isfinite(z.grad).all():
            _fail(cfg, c, f"the gradient w.r.t. z for {spec.kind} {spec.shape} is not finite")
        if float(z.grad.abs().max()) == 0.0:
            _fail(cfg, c, "the gradient w.r.t. z is exactly zero: the decoder ignores its code")
        bad = [n for n, p in dec.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
        if bad:
            _fail(cfg, c, f"non-finite gradients for parameters {bad[:5]}")

    _per_spec(cfg, body)


def _check_batch_independence(cfg: _Config) -> None:
    c = "batch_independence"

    def body(spec: DataSpec) -> None:
        dec = cfg.make(spec)
        x, z = _data(spec, cfg.batch, 5), _codes(cfg.batch, cfg.latent_dim, 6)
        with torch.no_grad():
            together = dec.log_prob(x, z)
            alone = torch.cat([dec.log_prob(x[i : i + 1], z[i : i + 1]) for i in range(cfg.batch)])
        if not torch.allclose(together, alone, rtol=1e-4, atol=1e-3):
            _fail(cfg, c, f"log_prob of each example depends on the rest of the batch ({spec.kind} {spec.shape}): "
                          f"{together.tolist()} in a batch, {alone.tolist()} one at a time")

    _per_spec(cfg, body)


def _check_sample(cfg: _Config) -> None:
    c = "sample"

    def body(spec: DataSpec) -> None:
        dec = cfg.make(spec)
        z = _codes(cfg.batch, cfg.latent_dim, 7)
        rng = torch.get_rng_state()
        with torch.no_grad():
            a = dec.sample(z, generator=torch.Generator().manual_seed(3))
        if not torch.equal(rng, torch.get_rng_state()):
            _fail(cfg, c, "sample(z, generator) consumed the global RNG: draw from the generator it is given")
        with torch.no_grad():
            b = dec.sample(z, generator=torch.Generator().manual_seed(3))
            dec.sample(z)  # generator=None must work too
        if not isinstance(a, torch.Tensor) or tuple(a.shape) != (cfg.batch, *spec.shape):
            _fail(cfg, c, f"sample returned shape {tuple(getattr(a, 'shape', ()))}, expected {(cfg.batch, *spec.shape)}")
        if not a.is_floating_point():
            _fail(cfg, c, f"sample must return model values (floating point), got {a.dtype}")
        if not _on_grid(a, spec):
            _fail(cfg, c, f"samples for {spec.kind} data are not on the data's grid "
                          f"({'{0, 1}' if spec.kind == 'binary' else 'v / 127.5 - 1, v in 0..255'})")
        if not torch.equal(a, b):
            _fail(cfg, c, "two calls with generators of the same seed gave different samples")
        with torch.no_grad():
            lp = dec.log_prob(a, z)
        if not torch.isfinite(lp).all():
            _fail(cfg, c, f"the decoder's own samples have non-finite log-likelihood {lp.tolist()}")

    _per_spec(cfg, body)


def _check_bad_input(cfg: _Config) -> None:
    c = "bad_input"
    spec = cfg.specs[0]
    dec = cfg.make(spec)
    x, z = _data(spec, cfg.batch, 8), _codes(cfg.batch, cfg.latent_dim, 9)
    cases = [
        ("x with a wrong shape", lambda: dec.log_prob(x[..., :-1] if spec.shape[2] > 1 else x[:, :, :0], z)),
        ("x and z with different batch sizes", lambda: dec.log_prob(x, z[:-1] if cfg.batch > 1 else torch.cat([z, z]))),
        ("z of the wrong dimension", lambda: dec.log_prob(x, torch.zeros(cfg.batch, cfg.latent_dim + 1))),
        ("reduction='mean'", lambda: dec.log_prob(x, z, reduction="mean")),
    ]
    for what, call in cases:
        try:
            with torch.no_grad():
                call()
        except ValueError:
            continue
        except Exception as exc:  # noqa: BLE001
            _fail(cfg, c, f"{what} raised {type(exc).__name__}: {exc}; raise ValueError naming the expected shape")
        _fail(cfg, c, f"{what} was accepted; raise ValueError before computing")


def _enumerate(spec: DataSpec) -> torch.Tensor:
    """Every possible image of ``spec`` as model values (N, C, H, W)."""
    levels = spec.num_levels
    count = levels ** spec.num_dims
    if count > MAX_ENUMERATION:
        raise ContractSkip(f"{spec.kind} {spec.shape} has {count} possible images (limit {MAX_ENUMERATION})")
    grid = torch.tensor(list(itertools.product(range(levels), repeat=spec.num_dims)), dtype=torch.uint8)
    return to_model(grid.view(count, *spec.shape), spec)


def _check_normalization(cfg: _Config) -> None:
    c = "normalization"
    specs = [s for s in cfg.normalization_specs if s.kind in cfg.supports]
    if not specs:
        raise ContractSkip("no normalization spec for the data kinds it supports (set normalization_specs)")
    for spec in specs:
        try:
            dec = cfg.make(spec)
        except (CapabilityError, ValueError) as exc:
            raise ContractSkip(f"does not build for the tiny shape {spec.shape} ({exc}); set normalization_specs") from None
        xs = _enumerate(spec)
        for seed in (10, 11, 12):
            z1 = _codes(1, cfg.latent_dim, seed) * 1.5
            parts = []
            with torch.no_grad():
                for chunk in xs.split(4096):
                    parts.append(dec.log_prob(chunk, z1.expand(chunk.shape[0], -1)).double())
            total = float(torch.logsumexp(torch.cat(parts), 0))
            if not math.isfinite(total) or abs(total) > NORMALIZATION_ATOL:
                _fail(cfg, c, f"over all {xs.shape[0]} images of {spec.kind} {spec.shape} the probabilities sum to "
                              f"exp({total!r}) for one code, not 1 (tolerance {NORMALIZATION_ATOL} in log space)")


_CHECKS: Dict[str, Callable[[_Config], None]] = {
    "metadata": _check_metadata,
    "log_prob": _check_log_prob,
    "gradients": _check_gradients,
    "batch_independence": _check_batch_independence,
    "sample": _check_sample,
    "bad_input": _check_bad_input,
    "normalization": _check_normalization,
}
assert tuple(_CHECKS) == DECODER_CHECKS


def _config(factory, options, specs, normalization_specs, latent_dim, batch) -> _Config:
    options = dict(options or {})
    if isinstance(factory, str):
        name = factory
        reg = infovae.registry()
        info = reg.info("decoders", name)
        supports = tuple(info.supports or ())
        fac = lambda spec, latent_dim, **opts: reg.create("decoders", name, opts, spec, latent_dim)  # noqa: E731
    elif callable(factory):
        name = getattr(factory, "__qualname__", repr(factory))
        supports = tuple(getattr(factory, "supports", ()) or ())
        fac = factory
    else:
        raise TypeError(f"factory must be a callable(spec, latent_dim, **options) or a registered decoder name, got {factory!r}")
    if specs is None:
        if not supports:
            raise ValueError(f"decoder {name!r} declares no supported data kinds; pass specs=[DataSpec(...)]")
        specs = [DataSpec(k, DEFAULT_SHAPES[k]) for k in supports]
    specs = tuple(specs)
    if not specs or not all(isinstance(s, DataSpec) for s in specs):
        raise ValueError(f"specs must be a non-empty sequence of infovae.DataSpec, got {specs!r}")
    if not supports:
        supports = tuple(sorted({s.kind for s in specs}))
    if normalization_specs is None:
        normalization_specs = [DataSpec(k, s) for k, s in DEFAULT_NORMALIZATION_SHAPES.items()]
    if latent_dim < 1 or batch < 2:
        raise ValueError(f"need latent_dim >= 1 and batch >= 2, got {latent_dim} and {batch}")
    return _Config(name, fac, options, specs, tuple(normalization_specs), int(latent_dim), int(batch), supports)


def _run(cfg: _Config, check: str) -> None:
    with torch.random.fork_rng(devices=[]):
        _CHECKS[check](cfg)


def check_decoder(
    factory: Any,
    options: Optional[Mapping[str, Any]] = None,
    *,
    specs: Optional[Sequence[DataSpec]] = None,
    normalization_specs: Optional[Sequence[DataSpec]] = None,
    latent_dim: int = 3,
    batch: int = 4,
    checks: Optional[Sequence[str]] = None,
) -> Dict[str, str]:
    """Run the decoder contract; raise AssertionError listing every failed check.

    Returns {check: "passed" | "skipped: <reason>"}.
    """
    chosen = tuple(DECODER_CHECKS if checks is None else checks)
    unknown = [ch for ch in chosen if ch not in _CHECKS]
    if unknown:
        raise ValueError(f"unknown check(s) {unknown}; checks are {', '.join(DECODER_CHECKS)}")
    cfg = _config(factory, options, specs, normalization_specs, latent_dim, batch)
    report: Dict[str, str] = {}
    failures = []
    for check in chosen:
        try:
            _run(cfg, check)
            report[check] = "passed"
        except ContractSkip as skip:
            report[check] = f"skipped: {skip}"
        except Exception as exc:  # noqa: BLE001 - collected into one report
            text = str(exc) if isinstance(exc, AssertionError) else f"raised {type(exc).__name__}: {exc}"
            failures.append(f"- {check}: {text}")
    if failures:
        raise AssertionError(f"decoder {cfg.name!r} failed {len(failures)} contract check(s):\n" + "\n".join(failures))
    return report


class DecoderContract:
    """Base class of a decoder's contract tests (pytest collects subclasses named ``Test*``).

    Set on the subclass: ``factory`` (callable(spec, latent_dim, **options) or a
    registered name), ``options``, and optionally ``specs``, ``normalization_specs``
    (None: defaults), ``latent_dim`` (3), ``batch`` (4).
    """

    factory: Any = None
    options: Mapping[str, Any] = {}
    specs: Optional[Sequence[DataSpec]] = None
    normalization_specs: Optional[Sequence[DataSpec]] = None
    latent_dim: int = 3
    batch: int = 4

    def contract_config(self) -> _Config:
        factory = inspect.getattr_static(self, "factory")
        if isinstance(factory, (staticmethod, classmethod)):
            factory = factory.__func__
        if factory is None:
            raise TypeError(f"{type(self).__name__} must set factory = <callable or registered decoder name>")
        return _config(factory, self.options, self.specs, self.normalization_specs, self.latent_dim, self.batch)

    def run_contract_check(self, check: str) -> None:
        try:
            _run(self.contract_config(), check)
        except ContractSkip as skip:
            _skip(str(skip))

    def test_metadata(self):
        self.run_contract_check("metadata")

    def test_log_prob(self):
        self.run_contract_check("log_prob")

    def test_gradients(self):
        self.run_contract_check("gradients")

    def test_batch_independence(self):
        self.run_contract_check("batch_independence")

    def test_sample(self):
        self.run_contract_check("sample")

    def test_bad_input(self):
        self.run_contract_check("bad_input")

    def test_normalization(self):
        self.run_contract_check("normalization")
