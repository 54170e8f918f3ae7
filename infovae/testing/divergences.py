"""Contract checks for divergence plugins.

Two ways to run them, same checks:

(a) subclass the pytest base class in your own test suite::

        from infovae.testing import DivergenceContract

        class TestEnergy(DivergenceContract):
            factory = EnergyDistance        # or a registered name: factory = "energy"
            options = {"prior_samples": 0}

    Each check is one test method; property checks the divergence does not
    claim are skipped with a reason.

(b) call ``check_divergence(factory, options)`` anywhere (no pytest needed): it
    raises one AssertionError listing every failed check, and returns
    ``{check: "passed" | "skipped: reason"}`` otherwise.

What every divergence must satisfy (checked always):

- ``metadata``: it is an ``nn.Module``; ``properties`` holds only names from
  ``infovae.DIVERGENCE_PROPERTIES``; ``has_value`` is a bool; claimed
  properties come with a ``two_sample(x, y)`` method.
- ``forward``: ``forward(z, posterior, prior)`` returns a finite 0-dim float32
  tensor for float32 inputs, with finite gradients w.r.t. z and the
  posterior's parameters (Hypothesis over batch sizes, dimensions, posteriors).
- ``gradient_signal``: when q(z|x) is far from p(z) the encoder gets a non-zero
  gradient (through z, or analytically through the posterior), and a
  divergence that uses z gives z itself a non-zero gradient.
- ``small_batches``: batches of ``min_batch`` codes (default 2) work; smaller
  ones either work or raise ValueError (never NaN, never an obscure error).
- ``deterministic``: same ``torch.manual_seed`` -> bitwise the same value, from
  the same instance or a freshly built one; after the first call, ``forward``
  does not change ``state_dict()`` (only ``update`` may).
- ``autocast``: under ``torch.autocast("cpu", torch.bfloat16)``, with float32
  or bfloat16 codes, the result is float32 and equals the float32 computation
  on the same values (rtol 1e-4): divergences compute in float32.
- ``own_state`` (divergences whose ``configure_optimizer()`` returns an
  optimizer; trainable parameters without one are an error): the optimizer
  steps only the module's parameters; ``update(z, prior, optimizer)`` returns
  finite float logs and changes the state; ``state_dict`` plus optimizer state
  restore exactly (a resumed run continues bit for bit).
- ``two_sample`` (when defined): finite 0-dim float32 value and finite
  gradients, duplicate rows and ``two_sample(x, x)`` included.

What ``two_sample(x, y)`` must support: x (n, D) and y (m, D) with n != m (sizes
drawn from min_batch..max_batch, D from latent_dims), duplicate rows and y = x; a
finite 0-dim float32 result with finite gradients. Randomized estimators are
allowed if they draw from torch's global RNG only: every property check calls a
fresh instance built right after ``torch.manual_seed(0)`` (see ``_Config.make``),
so all calls in one check see the same random draws, and each claimed property
must hold for that draw (e.g. a symmetric random-feature MMD uses the same
features for both arguments).

Claimed properties, checked on ``two_sample`` with Hypothesis (float32, values
on a 2**-8 grid, see ``infovae.testing.strategies``); tolerances are fixed,
not per plugin: ``|a - b| <= RTOL * max(|a|, |b|) + ATOL``:

- ``nonnegative``:  ``two_sample(x, y) >= -ATOL``
- ``zero_on_identical``: ``|two_sample(x, x[perm])| <= ATOL``
- ``positive_on_distinct``: ``two_sample(x, y) > 0`` for samples whose
  empirical distributions surely differ (an outlier beyond the other's bounding
  box, or a zero-mean skewed sample against its mirror image: same mean and
  covariance, so moment-matching "divergences" fail)
- ``symmetric``: ``two_sample(x, y) == two_sample(y, x)``
- ``permutation_invariant``: ``two_sample(x[p], y[q]) == two_sample(x, y)``
- ``translation_invariant``: ``two_sample(x + c, y + c) == two_sample(x, y)``
  for shifts with entries +-100 and +-1e4; the shifted samples are exact in
  float32, so a failure is the divergence's own cancellation (e.g. expanded
  ||a||^2 + ||b||^2 - 2 a.b on uncentred data).

Hypothesis settings: ``CONTRACT_SETTINGS`` (25 examples, no deadline,
``derandomize=True``): the same examples on every run and machine, so a
plugin's CI is reproducible and never flakes on a new draw; set
``hypothesis_settings`` on your subclass (e.g. ``settings(CONTRACT_SETTINGS,
derandomize=False, max_examples=500)``) to explore more widely.
"""
from __future__ import annotations

import copy
import inspect
import math
import unittest
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import infovae
from infovae import DIVERGENCE_PROPERTIES, StandardNormalPrior, diagonal_gaussian

from . import strategies as S

__all__ = [
    "ATOL",
    "RTOL",
    "CONTRACT_SETTINGS",
    "DIVERGENCE_CHECKS",
    "ContractSkip",
    "DivergenceContract",
    "check_divergence",
]

# Absolute floor for values near 0: float32 rounding of means over the kit's (at most 16 x 16) terms of size O(1).
ATOL = 1e-5
# Relative tolerance of every equality (symmetry, permutation, translation, autocast).
RTOL = 1e-4

CONTRACT_SETTINGS = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

GENERAL_CHECKS: Tuple[str, ...] = (
    "metadata",
    "forward",
    "gradient_signal",
    "small_batches",
    "deterministic",
    "autocast",
    "own_state",
    "two_sample",
)
PROPERTY_CHECKS: Tuple[str, ...] = (
    "nonnegative",
    "zero_on_identical",
    "positive_on_distinct",
    "symmetric",
    "permutation_invariant",
    "translation_invariant",
)
DIVERGENCE_CHECKS: Tuple[str, ...] = GENERAL_CHECKS + PROPERTY_CHECKS
assert set(PROPERTY_CHECKS) == set(DIVERGENCE_PROPERTIES), "kit and infovae.DIVERGENCE_PROPERTIES disagree"


class ContractSkip(Exception):
    """A check that does not apply to this divergence (the message says why)."""


@dataclass(frozen=True)
class _Config:
    name: str
    factory: Callable[..., Any]
    options: Mapping[str, Any]
    min_batch: int
    max_batch: int
    latent_dims: Tuple[int, int]
    hypothesis_settings: settings

    def make(self, seed: int = 0) -> nn.Module:
        """A fresh divergence, built right after ``torch.manual_seed(seed)``."""
        torch.manual_seed(seed)
        return self.factory(**dict(self.options))


def _resolve_factory(factory: Any, options: Optional[Mapping[str, Any]]) -> Tuple[str, Callable[..., Any], Dict[str, Any]]:
    options = dict(options or {})
    if isinstance(factory, str):
        name = factory
        reg = infovae.registry()
        reg.info("divergences", name)  # unknown names fail here, with the registry's suggestion
        return name, (lambda **opts: reg.create("divergences", name, opts)), options
    if not callable(factory):
        raise TypeError(f"factory must be a callable(**options) or a registered divergence name, got {factory!r}")
    return getattr(factory, "__qualname__", repr(factory)), factory, options


# -- helpers ----------------------------------------------------------------------------------
def _fail(cfg: _Config, check: str, message: str) -> None:
    raise AssertionError(f"divergence {cfg.name!r} fails {check!r}: {message}")


def _scalar(cfg: _Config, check: str, value: Any, what: str, dtype: torch.dtype = torch.float32) -> float:
    if not isinstance(value, torch.Tensor):
        _fail(cfg, check, f"{what} returned {type(value).__name__}, expected a 0-dim torch.Tensor")
    if value.dim() != 0:
        _fail(cfg, check, f"{what} returned shape {tuple(value.shape)}, expected a 0-dim tensor (reduce to a scalar)")
    if value.dtype != dtype:
        _fail(cfg, check, f"{what} returned dtype {value.dtype}, expected {dtype}")
    out = float(value.detach())
    if not math.isfinite(out):
        _fail(cfg, check, f"{what} returned {out}")
    return out


def _finite_grad(cfg: _Config, check: str, t: torch.Tensor, what: str) -> None:
    if t.grad is not None and not torch.isfinite(t.grad).all():
        bad = (~torch.isfinite(t.grad)).sum().item()
        _fail(cfg, check, f"the gradient w.r.t. {what} has {bad} non-finite entries (NaN/inf); "
                          f"guard norms and square roots at zero distance")


def _close(a: float, b: float, rtol: float = RTOL, atol: float = ATOL) -> bool:
    return abs(a - b) <= rtol * max(abs(a), abs(b)) + atol


def _shape(t: torch.Tensor) -> str:
    return "x".join(map(str, t.shape))


def _two_sample(cfg: _Config, div: nn.Module, check: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    fn = getattr(div, "two_sample", None)
    if not callable(fn):
        _fail(cfg, check, f"it claims {check!r} but defines no two_sample(x, y) to check it on")
    return fn


def _run_given(cfg: _Config, strategy: st.SearchStrategy, body: Callable[[Any], None]) -> None:
    """Run ``body(example)`` for Hypothesis examples of ``strategy`` under the contract's settings."""

    @cfg.hypothesis_settings
    @given(strategy)
    def contract_example(example):
        torch.manual_seed(0)
        body(example)

    contract_example()


def _inputs(n: int, d: int, seed: int, loc_shift: float = 0.0, log_scale: Optional[float] = None):
    g = torch.Generator().manual_seed(seed)
    loc = torch.randn(n, d, generator=g) + loc_shift
    ls = torch.full((n, d), log_scale) if log_scale is not None else 0.5 * torch.randn(n, d, generator=g) - 0.5
    return loc, ls


def _forward(div: nn.Module, loc: torch.Tensor, log_scale: torch.Tensor, seed: int = 0):
    """(value, z, loc leaf, log_scale leaf) with gradients enabled; z is seeded."""
    loc = loc.clone().requires_grad_(True)
    log_scale = log_scale.clone().requires_grad_(True)
    q = diagonal_gaussian(loc, log_scale)
    torch.manual_seed(seed)
    z = q.rsample()
    z.retain_grad()
    prior = StandardNormalPrior(loc.shape[1])
    value = div(z, q, prior)
    return value, z, loc, log_scale


# -- general checks ---------------------------------------------------------------------------
def _check_metadata(cfg: _Config) -> None:
    c = "metadata"
    div = cfg.make()
    if not isinstance(div, nn.Module):
        _fail(cfg, c, f"the factory returned {type(div).__name__}, expected a torch.nn.Module (so .to(device) and state_dict work)")
    props = getattr(div, "properties", None)
    if not isinstance(props, (set, frozenset)) or not all(isinstance(p, str) for p in props):
        _fail(cfg, c, f"properties must be a frozenset of strings, got {props!r}")
    unknown = sorted(set(props) - DIVERGENCE_PROPERTIES)
    if unknown:
        _fail(cfg, c, f"unknown properties {unknown}; known: {', '.join(sorted(DIVERGENCE_PROPERTIES))}")
    if not isinstance(getattr(div, "has_value", None), bool):
        _fail(cfg, c, f"has_value must be a bool, got {getattr(div, 'has_value', None)!r}")
    if props and not callable(getattr(div, "two_sample", None)):
        _fail(cfg, c, f"it claims {sorted(props)} but defines no two_sample(x, y) to check them on")


def _check_forward(cfg: _Config) -> None:
    c = "forward"
    lo, hi = cfg.latent_dims

    def body(params):
        loc, log_scale = params
        value, z, loc, log_scale = _forward(cfg.make(), loc, log_scale)
        _scalar(cfg, c, value, f"forward(z {_shape(z)}, posterior, prior)")
        if not value.requires_grad:
            _fail(cfg, c, "the result does not depend on z or the posterior's parameters: no gradient reaches the encoder")
        value.backward()
        _finite_grad(cfg, c, z, "z")
        _finite_grad(cfg, c, loc, "the posterior's loc")
        _finite_grad(cfg, c, log_scale, "the posterior's log_scale")

    _run_given(cfg, S.posteriors(n=(cfg.min_batch, cfg.max_batch), d=(lo, hi)), body)


def _check_gradient_signal(cfg: _Config) -> None:
    c = "gradient_signal"
    n = max(cfg.min_batch, 16)
    d = min(max(3, cfg.latent_dims[0]), cfg.latent_dims[1])
    for seed in (0, 1):
        div = cfg.make(seed)
        loc, ls = _inputs(n, d, seed, loc_shift=2.0, log_scale=-1.0)
        value, z, loc, ls = _forward(div, loc, ls, seed)
        _scalar(cfg, c, value, "forward")
        value.backward()
        for t, what in ((z, "z"), (loc, "the posterior's loc"), (ls, "the posterior's log_scale")):
            _finite_grad(cfg, c, t, what)
        enc = [g for g in (loc.grad, ls.grad) if g is not None]
        if not enc or all(float(g.abs().max()) == 0.0 for g in enc):
            _fail(cfg, c, f"with q(z|x) = N(2, e^-2) far from p(z) = N(0, I) ({n} codes, dim {d}) the gradient "
                          f"w.r.t. the posterior's parameters is exactly zero: the encoder would get no signal")
        if z.grad is not None and float(z.grad.abs().max()) == 0.0:
            _fail(cfg, c, f"with codes far from the prior ({n} codes, dim {d}) the gradient w.r.t. z is exactly zero")


def _check_small_batches(cfg: _Config) -> None:
    c = "small_batches"
    d = min(max(2, cfg.latent_dims[0]), cfg.latent_dims[1])
    for n in range(1, cfg.min_batch + 1):
        div = cfg.make()
        loc, ls = _inputs(n, d, seed=n)
        try:
            value, z, loc, ls = _forward(div, loc, ls, seed=n)
        except ValueError:
            if n >= cfg.min_batch:
                raise AssertionError(
                    f"divergence {cfg.name!r} fails {c!r}: a batch of {n} codes (min_batch = {cfg.min_batch}) raised ValueError; "
                    f"set min_batch on the contract if it needs more"
                )
            continue  # a clear refusal below min_batch is allowed
        except Exception as exc:  # noqa: BLE001 - the point is which error
            raise AssertionError(
                f"divergence {cfg.name!r} fails {c!r}: a batch of {n} codes raised {type(exc).__name__}: {exc}; "
                + ("it must work" if n >= cfg.min_batch else "below min_batch raise ValueError naming the minimum, or work")
            ) from exc
        _scalar(cfg, c, value, f"forward with a batch of {n} code(s)")
        value.backward()
        for t, what in ((z, "z"), (loc, "the posterior's loc"), (ls, "the posterior's log_scale")):
            _finite_grad(cfg, c, t, f"{what} (batch of {n})")


def _snapshot(module: nn.Module) -> Dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items() if isinstance(v, torch.Tensor)}


def _same_state(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor]) -> Optional[str]:
    if a.keys() != b.keys():
        return f"keys changed: {sorted(set(a) ^ set(b))}"
    for k in a:
        if a[k].shape != b[k].shape or not torch.equal(a[k], b[k]):
            return f"entry {k!r} changed"
    return None


def _check_deterministic(cfg: _Config) -> None:
    c = "deterministic"
    loc, ls = _inputs(8, 3, seed=5, loc_shift=0.5)
    div = cfg.make(11)
    v1, *_ = _forward(div, loc, ls, seed=7)
    state = _snapshot(div)
    v2, *_ = _forward(div, loc, ls, seed=7)
    changed = _same_state(state, _snapshot(div))
    if changed:
        _fail(cfg, c, f"forward() changed the module's state_dict ({changed}); only update() may change state")
    a, b = _scalar(cfg, c, v1, "forward"), _scalar(cfg, c, v2, "forward")
    if not torch.equal(v1.detach(), v2.detach()):
        _fail(cfg, c, f"two calls under the same torch.manual_seed gave {a!r} and {b!r}; draw randomness from torch's "
                      f"global generator (or one you are given), never from an unseeded source")
    v3, *_ = _forward(cfg.make(11), loc, ls, seed=7)
    if not torch.equal(v1.detach(), v3.detach()):
        _fail(cfg, c, f"two instances built and called under the same seeds gave {a!r} and {float(v3.detach())!r}")


def _check_autocast(cfg: _Config) -> None:
    c = "autocast"
    loc, ls = _inputs(12, 3, seed=3, loc_shift=0.5)
    div = cfg.make(3)
    ref, *_ = _forward(div, loc, ls, seed=4)
    ref_v = _scalar(cfg, c, ref, "forward")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, *_ = _forward(div, loc, ls, seed=4)
    got = _scalar(cfg, c, out, "forward under bf16 autocast (float32 codes)")
    if not _close(got, ref_v):
        _fail(cfg, c, f"under bf16 autocast the value is {got!r} but {ref_v!r} in float32: compute in float32 "
                      f"(e.g. inside torch.autocast(device_type, enabled=False) on z.float())")

    # bfloat16 codes and posterior, as an encoder running under autocast produces them
    lb, lsb = loc.bfloat16(), ls.bfloat16()
    torch.manual_seed(4)
    zb = diagonal_gaussian(loc, ls).rsample().bfloat16()
    prior = StandardNormalPrior(3)
    torch.manual_seed(5)
    ref32 = div(zb.float(), diagonal_gaussian(lb.float(), lsb.float()), prior)
    ref_v = _scalar(cfg, c, ref32, "forward")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.manual_seed(5)
        out = div(zb, diagonal_gaussian(lb, lsb), prior)
    got = _scalar(cfg, c, out, "forward under bf16 autocast with bfloat16 codes and posterior")
    if not _close(got, ref_v):
        _fail(cfg, c, f"with bfloat16 inputs the value is {got!r} but {ref_v!r} on the same values in float32: "
                      f"upcast the inputs (z.float(), posterior parameters) before computing")


def _check_own_state(cfg: _Config) -> None:
    c = "own_state"
    div = cfg.make(0)
    opt = div.configure_optimizer()
    trainable = [p for p in div.parameters() if p.requires_grad]
    if opt is None:
        if trainable:
            _fail(cfg, c, f"it has {len(trainable)} trainable parameter tensor(s) but configure_optimizer() returns None: "
                          f"nothing would train them (the model's optimizer never steps a divergence); return an "
                          f"optimizer and implement update(), or register them as buffers")
        raise ContractSkip("no own trainable state: configure_optimizer() returns None")
    if not isinstance(opt, torch.optim.Optimizer):
        _fail(cfg, c, f"configure_optimizer() returned {type(opt).__name__}, expected a torch.optim.Optimizer")
    own = {id(p) for p in div.parameters()}
    foreign = sum(1 for g in opt.param_groups for p in g["params"] if id(p) not in own)
    if foreign:
        _fail(cfg, c, f"its optimizer steps {foreign} tensor(s) that are not parameters of the divergence")

    prior = StandardNormalPrior(3)
    loc, ls = _inputs(16, 3, seed=1, loc_shift=1.5)
    torch.manual_seed(2)
    z = diagonal_gaussian(loc, ls).rsample().detach()
    _forward(div, loc, ls, seed=2)  # first call (lazily shaped modules materialize here)
    before = _snapshot(div)
    torch.manual_seed(3)
    logs = div.update(z, prior, opt)
    if not isinstance(logs, Mapping):
        _fail(cfg, c, f"update() returned {type(logs).__name__}, expected a mapping of name -> float")
    for k, v in logs.items():
        try:
            fv = float(v.detach() if isinstance(v, torch.Tensor) else v)
        except (TypeError, ValueError):
            _fail(cfg, c, f"update() log {k!r} = {v!r} is not a number")
        if not isinstance(k, str) or not math.isfinite(fv):
            _fail(cfg, c, f"update() log {k!r} = {v!r}: logs are str -> finite float")
    if _same_state(before, _snapshot(div)) is None:
        _fail(cfg, c, "update() left the state unchanged: it should train the divergence's own parameters")

    # Resume: a fresh instance (other seed) with this state_dict and optimizer state continues bit for bit.
    fresh = cfg.make(1)
    opt2 = fresh.configure_optimizer()
    fresh.load_state_dict(_snapshot(div))
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))  # as if read from a file: no shared tensors
    a, *_ = _forward(div, loc, ls, seed=4)
    b, *_ = _forward(fresh, loc, ls, seed=4)
    if not torch.equal(a.detach(), b.detach()):
        _fail(cfg, c, f"a fresh instance loaded with state_dict() gives {float(b.detach())!r}, the original {float(a.detach())!r}: "
                      f"all state that forward uses must be in state_dict (parameters or persistent buffers)")
    torch.manual_seed(5)
    div.update(z, prior, opt)
    torch.manual_seed(5)
    fresh.update(z, prior, opt2)
    diff = _same_state(_snapshot(div), _snapshot(fresh))
    if diff:
        _fail(cfg, c, f"after restoring state_dict and the optimizer's state, one more update() differs ({diff}): "
                      f"a resumed run would not continue exactly")


def _check_two_sample(cfg: _Config) -> None:
    c = "two_sample"
    if not callable(getattr(cfg.make(), "two_sample", None)):
        raise ContractSkip("defines no two_sample(x, y)")

    def body(pair):
        fn = cfg.make().two_sample
        x, y = (t.clone().requires_grad_(True) for t in pair)
        v = fn(x, y)
        _scalar(cfg, c, v, f"two_sample(x {_shape(x)}, y {_shape(y)})")
        v.backward()
        _finite_grad(cfg, c, x, "x")
        _finite_grad(cfg, c, y, "y")
        x2 = pair[0].clone().requires_grad_(True)
        v = fn(x2, x2)
        _scalar(cfg, c, v, f"two_sample(x, x) with x {_shape(x2)}")
        v.backward()
        _finite_grad(cfg, c, x2, "x in two_sample(x, x) (all distances zero on the diagonal)")

    _run_given(cfg, S.sample_pairs(n=(cfg.min_batch, cfg.max_batch), d=cfg.latent_dims), body)


# -- claimed properties -----------------------------------------------------------------------
def _claimed(cfg: _Config, prop: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``two_sample(x, y)`` of a fresh instance per call (an instance may fix its dimension on first use)."""
    div = cfg.make()
    if prop not in getattr(div, "properties", frozenset()):
        raise ContractSkip(f"does not claim {prop!r}")
    _two_sample(cfg, div, prop)
    return lambda x, y: cfg.make().two_sample(x, y)


def _sizes(cfg: _Config) -> Dict[str, Any]:
    return {"n": (cfg.min_batch, cfg.max_batch), "d": cfg.latent_dims}


def _check_nonnegative(cfg: _Config) -> None:
    c = "nonnegative"
    fn = _claimed(cfg, c)

    def body(pair):
        x, y = pair
        v = _scalar(cfg, c, fn(x, y), "two_sample")
        if v < -ATOL:
            _fail(cfg, c, f"two_sample(x {_shape(x)}, y {_shape(y)}) = {v!r} < 0 (tolerance {ATOL})")

    _run_given(cfg, st.one_of(S.sample_pairs(**_sizes(cfg)), S.distinct_pairs(**_sizes(cfg))), body)


@st.composite
def _set_and_permutation(draw, n, d):
    x = draw(S.sample_sets(n=n, d=d))
    return x, draw(S.permutations(x.shape[0]))


def _check_zero_on_identical(cfg: _Config) -> None:
    c = "zero_on_identical"
    fn = _claimed(cfg, c)

    def body(example):
        x, perm = example
        for y, what in ((x.clone(), "x"), (x[perm], "a permutation of x")):
            v = _scalar(cfg, c, fn(x, y), "two_sample")
            if abs(v) > ATOL:
                _fail(cfg, c, f"two_sample(x, {what}) = {v!r} for x {_shape(x)}, expected 0 (tolerance {ATOL})")

    _run_given(cfg, _set_and_permutation(**_sizes(cfg)), body)


@st.composite
def _mirrored_pair(draw, n, d):
    """A zero-mean skewed sample x (one point at (n-1) t, the rest near -t) and y = -x.

    Means are exactly 0 and covariances exactly equal, but the distributions differ
    (x has one large positive point, y one large negative point)."""
    low, high = n
    nn_ = draw(st.integers(max(low, 3), max(high, 3)))
    dd = draw(S.sizes(d))
    k = int(4.0 / S.GRID) // (nn_ - 1)
    t = draw(st.lists(st.integers(max(k // 4, 1), max(k, 1)), min_size=dd, max_size=dd))
    t = torch.tensor(t, dtype=torch.float32) * S.GRID
    x = (-t).repeat(nn_, 1)
    x[0] = (nn_ - 1) * t
    if nn_ >= 4:  # a zero-sum wiggle keeps the mean exact
        e = torch.tensor(draw(st.lists(st.integers(0, max(k // 8, 0)), min_size=dd, max_size=dd)), dtype=torch.float32) * S.GRID
        x[1] += e
        x[2] -= e
    return x, -x


def _check_positive_on_distinct(cfg: _Config) -> None:
    c = "positive_on_distinct"
    fn = _claimed(cfg, c)

    def body(pair):
        x, y = pair
        v = _scalar(cfg, c, fn(x, y), "two_sample")
        if not v > 0:
            _fail(cfg, c, f"two_sample(x {_shape(x)}, y {_shape(y)}) = {v!r} for samples with different empirical "
                          f"distributions; expected > 0")

    _run_given(cfg, st.one_of(S.distinct_pairs(**_sizes(cfg)), _mirrored_pair(**_sizes(cfg))), body)


def _check_symmetric(cfg: _Config) -> None:
    c = "symmetric"
    fn = _claimed(cfg, c)

    def body(pair):
        x, y = pair
        a = _scalar(cfg, c, fn(x, y), "two_sample")
        b = _scalar(cfg, c, fn(y, x), "two_sample")
        if not _close(a, b):
            _fail(cfg, c, f"two_sample(x, y) = {a!r} but two_sample(y, x) = {b!r} for x {_shape(x)}, y {_shape(y)} "
                          f"(rtol {RTOL}, atol {ATOL})")

    _run_given(cfg, S.sample_pairs(**_sizes(cfg)), body)


@st.composite
def _pair_and_permutations(draw, n, d):
    x, y = draw(S.sample_pairs(n=n, d=d))
    return x, y, draw(S.permutations(x.shape[0])), draw(S.permutations(y.shape[0]))


def _check_permutation_invariant(cfg: _Config) -> None:
    c = "permutation_invariant"
    fn = _claimed(cfg, c)

    def body(example):
        x, y, p, q = example
        a = _scalar(cfg, c, fn(x, y), "two_sample")
        b = _scalar(cfg, c, fn(x[p], y[q]), "two_sample")
        if not _close(a, b):
            _fail(cfg, c, f"two_sample(x, y) = {a!r} but {b!r} after permuting the rows (x {_shape(x)}, y {_shape(y)}; "
                          f"rtol {RTOL}, atol {ATOL})")

    _run_given(cfg, _pair_and_permutations(**_sizes(cfg)), body)


@st.composite
def _pair_and_shift(draw, n, d):
    x, y = draw(S.sample_pairs(n=n, d=d))
    return x, y, draw(S.shifts(x.shape[1]))


def _check_translation_invariant(cfg: _Config) -> None:
    c = "translation_invariant"
    fn = _claimed(cfg, c)

    def body(example):
        x, y, shift = example
        xs, ys = x + shift, y + shift
        assert torch.equal(xs - shift, x) and torch.equal(ys - shift, y), "kit bug: shifted samples are not exact"
        a = _scalar(cfg, c, fn(x, y), "two_sample")
        b = _scalar(cfg, c, fn(xs, ys), "two_sample")
        if not _close(a, b):
            mag = float(shift.abs().max())
            _fail(cfg, c, f"two_sample(x, y) = {a!r} but {b!r} after shifting both by +-{mag:g} (x {_shape(x)}, "
                          f"y {_shape(y)}; rtol {RTOL}, atol {ATOL}). The shifted samples are exact in float32, so this "
                          f"is cancellation in the divergence: centre the samples (e.g. on their joint mean) before "
                          f"expanding ||a - b||^2, or compute differences directly")

    _run_given(cfg, _pair_and_shift(**_sizes(cfg)), body)


_CHECKS: Dict[str, Callable[[_Config], None]] = {
    "metadata": _check_metadata,
    "forward": _check_forward,
    "gradient_signal": _check_gradient_signal,
    "small_batches": _check_small_batches,
    "deterministic": _check_deterministic,
    "autocast": _check_autocast,
    "own_state": _check_own_state,
    "two_sample": _check_two_sample,
    "nonnegative": _check_nonnegative,
    "zero_on_identical": _check_zero_on_identical,
    "positive_on_distinct": _check_positive_on_distinct,
    "symmetric": _check_symmetric,
    "permutation_invariant": _check_permutation_invariant,
    "translation_invariant": _check_translation_invariant,
}
assert tuple(_CHECKS) == DIVERGENCE_CHECKS


def _run_check(cfg: _Config, check: str) -> None:
    """One check with the global RNG state restored afterwards (the kit seeds freely)."""
    with torch.random.fork_rng(devices=[]):
        _CHECKS[check](cfg)


def _config(factory, options, min_batch, max_batch, latent_dims, hypothesis_settings) -> _Config:
    if not isinstance(min_batch, int) or min_batch < 1:
        raise ValueError(f"min_batch must be an int >= 1, got {min_batch!r}")
    if not isinstance(max_batch, int) or max_batch < max(min_batch, 3):
        raise ValueError(f"max_batch must be an int >= max(min_batch, 3), got {max_batch!r}")
    lo, hi = latent_dims
    if not 1 <= lo <= hi:
        raise ValueError(f"latent_dims must be a range (low, high) with 1 <= low <= high, got {latent_dims!r}")
    name, fac, opts = _resolve_factory(factory, options)
    return _Config(name, fac, opts, min_batch, max_batch, (lo, hi), hypothesis_settings)


def check_divergence(
    factory: Any,
    options: Optional[Mapping[str, Any]] = None,
    *,
    examples: int = 25,
    derandomize: bool = True,
    min_batch: int = 2,
    max_batch: int = 16,
    latent_dims: Tuple[int, int] = (1, 5),
    checks: Optional[Sequence[str]] = None,
    hypothesis_settings: Optional[settings] = None,
) -> Dict[str, str]:
    """Run the divergence contract; raise AssertionError listing every failed check.

    factory:     callable(**options) -> divergence, or the name of a registered divergence.
    examples:    Hypothesis examples per property check.
    derandomize: the same examples on every run (reproducible CI); False draws new ones.
    min_batch:   the smallest batch of codes the divergence must handle (smaller ones
                 may raise ValueError instead).
    max_batch, latent_dims: sizes the checks draw from.
    checks:      a subset of ``DIVERGENCE_CHECKS`` (default: all).
    hypothesis_settings: full control of Hypothesis (overrides examples and derandomize).

    Returns {check: "passed" | "skipped: <reason>"}.
    """
    chosen = tuple(DIVERGENCE_CHECKS if checks is None else checks)
    unknown = [ch for ch in chosen if ch not in _CHECKS]
    if unknown:
        raise ValueError(f"unknown check(s) {unknown}; checks are {', '.join(DIVERGENCE_CHECKS)}")
    hs = hypothesis_settings or settings(CONTRACT_SETTINGS, max_examples=examples, derandomize=derandomize)
    cfg = _config(factory, options, min_batch, max_batch, latent_dims, hs)
    report: Dict[str, str] = {}
    failures = []
    for check in chosen:
        try:
            _run_check(cfg, check)
            report[check] = "passed"
        except ContractSkip as skip:
            report[check] = f"skipped: {skip}"
        except Exception as exc:  # noqa: BLE001 - collected into one report
            notes = "\n".join(getattr(exc, "__notes__", []))
            text = str(exc) if isinstance(exc, AssertionError) else f"raised {type(exc).__name__}: {exc}"
            failures.append(f"- {check}: {text}" + (f"\n  {notes}" if notes else ""))
    if failures:
        raise AssertionError(f"divergence {cfg.name!r} failed {len(failures)} contract check(s):\n" + "\n".join(failures))
    return report


def _skip(reason: str) -> None:
    try:
        import pytest
    except ImportError:  # pytest is optional: unittest's SkipTest is understood by every runner
        raise unittest.SkipTest(reason) from None
    pytest.skip(reason)


class DivergenceContract:
    """Base class of a divergence's contract tests (pytest collects subclasses named ``Test*``).

    Set on the subclass:
      factory      callable(**options) -> divergence, or a registered divergence name
      options      dict of options passed to it (default none)
      min_batch    smallest batch the divergence must handle (default 2; smaller ones may raise ValueError)
      max_batch, latent_dims       sizes drawn by the checks (16; (1, 5))
      hypothesis_settings          default ``CONTRACT_SETTINGS``
    """

    factory: Any = None
    options: Mapping[str, Any] = {}
    min_batch: int = 2
    max_batch: int = 16
    latent_dims: Tuple[int, int] = (1, 5)
    hypothesis_settings: settings = CONTRACT_SETTINGS

    def contract_config(self) -> _Config:
        factory = inspect.getattr_static(self, "factory")
        if isinstance(factory, (staticmethod, classmethod)):
            factory = factory.__func__
        if factory is None:
            raise TypeError(f"{type(self).__name__} must set factory = <callable or registered divergence name>")
        return _config(factory, self.options, self.min_batch, self.max_batch, tuple(self.latent_dims), self.hypothesis_settings)

    def run_contract_check(self, check: str) -> None:
        try:
            _run_check(self.contract_config(), check)
        except ContractSkip as skip:
            _skip(str(skip))

    def test_metadata(self):
        self.run_contract_check("metadata")

    def test_forward(self):
        self.run_contract_check("forward")

    def test_gradient_signal(self):
        self.run_contract_check("gradient_signal")

    def test_small_batches(self):
        self.run_contract_check("small_batches")

    def test_deterministic(self):
        self.run_contract_check("deterministic")

    def test_autocast(self):
        self.run_contract_check("autocast")

    def test_own_state(self):
        self.run_contract_check("own_state")

    def test_two_sample(self):
        self.run_contract_check("two_sample")

    def test_nonnegative(self):
        self.run_contract_check("nonnegative")

    def test_zero_on_identical(self):
        self.run_contract_check("zero_on_identical")

    def test_positive_on_distinct(self):
        self.run_contract_check("positive_on_distinct")

    def test_symmetric(self):
        self.run_contract_check("symmetric")

    def test_permutation_invariant(self):
        self.run_contract_check("permutation_invariant")

    def test_translation_invariant(self):
        self.run_contract_check("translation_invariant")
