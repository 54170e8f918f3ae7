"""Contract checks for encoder plugins q(z|x): ``factory(spec, latent_dim, **options)``.

    from infovae.testing import EncoderContract, check_encoder

    class TestMyEncoder(EncoderContract):
        factory = MyEncoder          # or a registered name
        options = {"hidden": 32}

    check_encoder(MyEncoder, {"hidden": 32})

Checks, for each spec in ``specs`` (default binary (1, 8, 8) and gray8 (1, 8, 8)):

- ``distribution``: an ``nn.Module`` whose ``forward(x)`` returns a distribution with batch
  shape (B,) and event shape (latent_dim,), whose ``rsample()`` is (B, latent_dim) float32 and
  finite, with a finite ``log_prob`` of its own samples.
- ``gradients``: gradients of the codes reach the parameters, finite and not all zero.
- ``batch_independence``: in eval mode an example's posterior does not depend on the rest of
  the batch (batch statistics in eval mode are a bug), and a batch of 1 works.
- ``deterministic``: in eval mode the same input gives the same posterior parameters.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from infovae import DataSpec, to_model

from ._kit import fail, make_contract, resolve, run_checks, static_factory

__all__ = ["ENCODER_CHECKS", "EncoderContract", "check_encoder"]

DEFAULT_SPECS = (DataSpec("binary", (1, 8, 8)), DataSpec("gray8", (1, 8, 8)))


@dataclass(frozen=True)
class _Config:
    name: str
    factory: Callable[..., Any]
    options: Mapping[str, Any]
    specs: Tuple[DataSpec, ...]
    latent_dim: int

    def make(self, spec: DataSpec, seed: int = 0) -> nn.Module:
        torch.manual_seed(seed)
        return self.factory(spec, self.latent_dim, **dict(self.options))


def _fail(cfg, check, msg):
    fail("encoder", cfg.name, check, msg)


def _data(spec: DataSpec, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return to_model(torch.randint(0, spec.num_levels, (n, *spec.shape), generator=g, dtype=torch.uint8), spec)


def _params(q) -> torch.Tensor:
    return torch.cat([q.mean.detach().flatten(), q.stddev.detach().flatten()])


def _check_distribution(cfg: _Config) -> None:
    c = "distribution"
    for spec in cfg.specs:
        enc = cfg.make(spec)
        if not isinstance(enc, nn.Module):
            _fail(cfg, c, f"the factory returned {type(enc).__name__}, expected a torch.nn.Module")
        x = _data(spec, 5, 0)
        q = enc(x)
        if tuple(getattr(q, "batch_shape", ())) != (5,) or tuple(getattr(q, "event_shape", ())) != (cfg.latent_dim,):
            _fail(cfg, c, f"for {spec.kind} {spec.shape} and B=5 it returned batch shape {tuple(getattr(q, 'batch_shape', ()))} and "
                          f"event shape {tuple(getattr(q, 'event_shape', ()))}; expected (5,) and ({cfg.latent_dim},) "
                          f"(use infovae.diagonal_gaussian(loc, log_scale))")
        z = q.rsample()
        if tuple(z.shape) != (5, cfg.latent_dim) or z.dtype != torch.float32 or not torch.isfinite(z).all():
            _fail(cfg, c, f"rsample() gave {tuple(z.shape)} {z.dtype} (finite: {bool(torch.isfinite(z).all())}); expected finite float32 (5, {cfg.latent_dim})")
        lp = q.log_prob(z)
        if tuple(lp.shape) != (5,) or not torch.isfinite(lp).all():
            _fail(cfg, c, f"log_prob of its own samples is {lp}; expected (5,) finite values")


def _check_gradients(cfg: _Config) -> None:
    c = "gradients"
    for spec in cfg.specs:
        enc = cfg.make(spec).train()
        enc(_data(spec, 6, 1)).rsample().pow(2).sum().backward()
        grads = [p.grad for p in enc.parameters() if p.requires_grad]
        if not grads or all(g is None for g in grads):
            _fail(cfg, c, "no parameter received a gradient from the codes (detached output, or torch.no_grad in forward)")
        if any(g is not None and not torch.isfinite(g).all() for g in grads):
            _fail(cfg, c, "a parameter gradient is not finite")
        if all(g is None or float(g.abs().max()) == 0.0 for g in grads):
            _fail(cfg, c, "every parameter gradient is exactly zero")


def _check_batch_independence(cfg: _Config) -> None:
    c = "batch_independence"
    for spec in cfg.specs:
        enc = cfg.make(spec).eval()
        x = _data(spec, 7, 2)
        with torch.no_grad():
            whole = enc(x)
            one = enc(x[3:4])
            other = enc(torch.cat([x[3:4], _data(spec, 4, 9)]))
        for what, q in (("a batch of 1", one), ("another batch", other)):
            if not torch.isfinite(_params(q)).all():
                _fail(cfg, c, f"the posterior of {what} is not finite")
        if not (torch.allclose(whole.mean[3], one.mean[0], rtol=1e-4, atol=1e-5)
                and torch.allclose(whole.mean[3], other.mean[0], rtol=1e-4, atol=1e-5)
                and torch.allclose(whole.stddev[3], one.stddev[0], rtol=1e-4, atol=1e-5)):
            _fail(cfg, c, "in eval mode an example's posterior changed with the rest of its batch (or alone); use running "
                          "statistics in eval mode and never mix examples")


def _check_deterministic(cfg: _Config) -> None:
    c = "deterministic"
    for spec in cfg.specs:
        enc = cfg.make(spec).eval()
        x = _data(spec, 4, 3)
        with torch.no_grad():
            torch.manual_seed(1)
            a = _params(enc(x))
            torch.manual_seed(2)
            b = _params(enc(x))
        if not torch.equal(a, b):
            _fail(cfg, c, "in eval mode two calls on the same input gave different posterior parameters (randomness in "
                          "forward outside training mode)")


_CHECKS = {
    "distribution": _check_distribution,
    "gradients": _check_gradients,
    "batch_independence": _check_batch_independence,
    "deterministic": _check_deterministic,
}
ENCODER_CHECKS: Tuple[str, ...] = tuple(_CHECKS)


def _config(factory, options, specs, latent_dim) -> _Config:
    name, fac = resolve("encoders", factory)
    return _Config(name, fac, dict(options or {}), tuple(specs or DEFAULT_SPECS), int(latent_dim))


def check_encoder(factory: Any, options: Optional[Mapping[str, Any]] = None, *, specs: Optional[Sequence[DataSpec]] = None,
                  latent_dim: int = 3, checks: Optional[Sequence[str]] = None) -> Dict[str, str]:
    """Run the encoder contract; raise AssertionError listing every failed check, else return the report."""
    return run_checks("encoder", _config(factory, options, specs, latent_dim), _CHECKS, checks)


EncoderContract = make_contract(
    "encoder", _CHECKS,
    lambda self: _config(static_factory(self), self.options, getattr(self, "specs", None), getattr(self, "latent_dim", 3)),
    "Base class of an encoder's contract tests: set factory, options, and optionally specs and latent_dim.",
)
