"""Shared machinery of the encoder, sampler, dataset and metric kits: a named set of checks,
each ``check(cfg)`` raising AssertionError (a broken contract) or ContractSkip (does not apply),
run all at once (``run_checks``) or one per test method (``make_contract``)."""
from __future__ import annotations

import json
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

import torch
from torch import nn

import infovae
from infovae import DataSpec

from .divergences import ContractSkip, _skip


class KitFailure(AssertionError):
    pass


def fail(kind: str, name: str, check: str, message: str) -> None:
    raise KitFailure(f"{kind} {name!r} fails {check!r}: {message}")


def resolve(kind: str, factory: Any, context: int = 0):
    """(display name, factory callable(*context, **options)) from a callable or a registered name."""
    if isinstance(factory, str):
        name = factory
        reg = infovae.registry()
        reg.info(kind, name)  # unknown names fail here, with the registry's suggestion
        return name, (lambda *ctx, **opts: reg.create(kind, name, opts, *ctx))
    if not callable(factory):
        raise TypeError(f"factory must be a callable or a registered {kind[:-1]} name, got {factory!r}")
    return getattr(factory, "__qualname__", repr(factory)), factory


def run_checks(kind: str, cfg: Any, checks: Mapping[str, Callable], chosen: Optional[Sequence[str]]) -> Dict[str, str]:
    """Run the chosen checks; one AssertionError lists every failure, else {check: "passed" | "skipped: why"}."""
    chosen = tuple(checks if chosen is None else chosen)
    unknown = [c for c in chosen if c not in checks]
    if unknown:
        raise ValueError(f"unknown check(s) {unknown}; checks are {', '.join(checks)}")
    report, failures = {}, []
    for check in chosen:
        try:
            with torch.random.fork_rng(devices=[]):
                checks[check](cfg)
            report[check] = "passed"
        except ContractSkip as skip:
            report[check] = f"skipped: {skip}"
        except Exception as exc:  # noqa: BLE001 - collected into one report
            failures.append(f"- {check}: {exc if isinstance(exc, AssertionError) else f'raised {type(exc).__name__}: {exc}'}")
    if failures:
        raise AssertionError(f"{kind} {cfg.name!r} failed {len(failures)} contract check(s):\n" + "\n".join(failures))
    return report


def make_contract(kind: str, checks: Mapping[str, Callable], config: Callable[[Any], Any], doc: str) -> type:
    """A base class with one ``test_<check>`` method per check (pytest collects subclasses named Test*)."""

    def run_contract_check(self, check: str) -> None:
        try:
            with torch.random.fork_rng(devices=[]):
                checks[check](config(self))
        except ContractSkip as skip:
            _skip(str(skip))

    body: Dict[str, Any] = {"__doc__": doc, "factory": None, "options": {}, "run_contract_check": run_contract_check}
    for check in checks:
        body[f"test_{check}"] = (lambda c: lambda self: self.run_contract_check(c))(check)
    return type(f"{kind.capitalize()}Contract", (), body)


def static_factory(obj) -> Any:
    import inspect

    factory = inspect.getattr_static(obj, "factory")
    if isinstance(factory, (staticmethod, classmethod)):
        factory = factory.__func__
    if factory is None:
        raise TypeError(f"{type(obj).__name__} must set factory = <callable or registered name>")
    return factory


def jsonable(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
        return True
    except (TypeError, ValueError):
        return False


# -- a tiny reference model for the sampler and metric kits --------------------------------------------
class _Encoder(nn.Module):
    def __init__(self, spec: DataSpec, latent_dim: int):
        super().__init__()
        self.net = nn.Linear(spec.num_dims, 2 * latent_dim)

    def forward(self, x):
        loc, log_scale = self.net(x.flatten(1)).chunk(2, dim=-1)
        return infovae.diagonal_gaussian(loc, log_scale)


class _Decoder(nn.Module):
    """Factorized Bernoulli p(x|z) (binary data)."""

    def __init__(self, spec: DataSpec, latent_dim: int):
        super().__init__()
        self.spec = spec
        self.net = nn.Linear(latent_dim, spec.num_dims)

    def log_prob(self, x, z, reduction="sum"):
        infovae.check_reduction(reduction)
        logits = self.net(z).view(-1, *self.spec.shape)
        terms = -nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none")
        return terms if reduction == "none" else terms.flatten(1).sum(1)

    def sample(self, z, generator=None):
        p = torch.sigmoid(self.net(z).view(-1, *self.spec.shape))
        return torch.bernoulli(p, generator=generator)


REFERENCE_SPEC = DataSpec("binary", (1, 4, 4))


def reference_model(latent_dim: int = 2, seed: int = 0):
    """A small seeded InfoVAE on binary (1, 4, 4) data, in eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = infovae.InfoVAE(REFERENCE_SPEC, latent_dim, _Encoder(REFERENCE_SPEC, latent_dim), _Decoder(REFERENCE_SPEC, latent_dim))
    return model.eval()


def reference_data(n: int, seed: int = 1) -> torch.Tensor:
    """n binary examples (n, 1, 4, 4) as float model values, with labels = number of lit pixels in the first row."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, *REFERENCE_SPEC.shape, generator=g) < 0.4).float()


def reference_labels(x: torch.Tensor) -> torch.Tensor:
    return (x[:, 0, 0, :2].sum(-1)).long()


def state(module: nn.Module) -> Dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}
