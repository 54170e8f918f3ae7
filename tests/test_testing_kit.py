"""The contract kit itself: its strategies, and that every check passes a correct divergence
and catches the bug it exists for (each broken divergence below fails exactly its check)."""
from __future__ import annotations

import random
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from hypothesis import Phase, given, settings

from infovae import DIVERGENCE_PROPERTIES, CapabilityError, DataSpec, Decoder, Divergence, check_reduction
from infovae.testing import (
    CONTRACT_SETTINGS,
    DECODER_CHECKS,
    DIVERGENCE_CHECKS,
    DecoderContract,
    DivergenceContract,
    check_decoder,
    check_divergence,
)
from infovae.testing import strategies as S

pytest_plugins = ["pytester"]

ALL = frozenset(DIVERGENCE_PROPERTIES)
# Broken divergences only need the failure found, not shrunk to a minimal example.
FAST = settings(CONTRACT_SETTINGS, phases=[Phase.explicit, Phase.generate])


def _sq_dists(a, b):
    return (a[:, None, :] - b[None, :, :]).pow(2).sum(-1)  # explicit differences: exact, no cancellation


class ReferenceMMD(Divergence):
    """Biased MMD^2, rbf kernel with sigma = 1, by brute force: satisfies every property."""

    properties = ALL

    def forward(self, z, posterior, prior):
        return self.two_sample(z.float(), prior.sample(z.shape[0]))

    def two_sample(self, x, y):
        k = lambda a, b: torch.exp(-0.5 * _sq_dists(a, b))  # noqa: E731
        return k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean()


# -- strategies ---------------------------------------------------------------------------------
@settings(max_examples=30, deadline=None, derandomize=True)
@given(S.sample_pairs(n=(1, 6), m=(2, 3), d=(1, 4), scale=2.0), S.shifts(4))
def test_samples_are_on_the_grid_and_shifts_are_exact(pair, shift):
    x, y = pair
    assert x.dtype == y.dtype == torch.float32 and x.shape[1] == y.shape[1]
    assert 1 <= x.shape[0] <= 6 and 2 <= y.shape[0] <= 3 and 1 <= x.shape[1] <= 4
    assert float(torch.cat([x, y]).abs().max()) <= 2.0
    assert torch.equal(torch.round(x / S.GRID) * S.GRID, x)
    assert set(shift.abs().tolist()) <= {100.0, 1e4} and len(set(shift.abs().tolist())) == 1
    c = shift[: x.shape[1]]
    assert torch.equal((x + c) - c, x)  # float32-exact, the point of the grid


@settings(max_examples=30, deadline=None, derandomize=True)
@given(S.distinct_pairs(n=(1, 5), d=(1, 3)))
def test_distinct_pairs_put_mass_where_the_other_sample_has_none(pair):
    x, y = pair
    assert not (x == y[0]).all(dim=1).any()
    assert (y[0] > x).all()


def test_strategy_arguments_are_checked():
    with pytest.raises(ValueError, match="scale"):
        S.sample_sets(scale=5000.0)
    with pytest.raises(ValueError, match="size range"):
        S.sample_pairs(n=(3, 2))
    with pytest.raises(ValueError, match="gap"):
        S.distinct_pairs(gap=0.0)
    with pytest.raises(ValueError, match="multiple of the grid"):
        S.shifts(2, magnitudes=(0.1,))


# -- a correct divergence passes, through both forms ---------------------------------------------
def test_check_divergence_passes_a_correct_divergence():
    report = check_divergence(ReferenceMMD, examples=10)
    assert list(report) == list(DIVERGENCE_CHECKS)
    assert report.pop("own_state").startswith("skipped: no own trainable state")
    assert set(report.values()) == {"passed"}


def test_the_kit_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    check_divergence(ReferenceMMD, checks=["deterministic", "symmetric"], examples=3)
    assert torch.equal(torch.get_rng_state(), state)


def reference_factory():  # a plain function as factory (must not be bound as a method)
    return ReferenceMMD()


class TestReferenceThroughTheBaseClass(DivergenceContract):
    factory = reference_factory
    hypothesis_settings = settings(CONTRACT_SETTINGS, max_examples=5)


class TestClaimsNothing(DivergenceContract):
    class Plain(ReferenceMMD):
        properties = frozenset()

    factory = Plain
    hypothesis_settings = settings(CONTRACT_SETTINGS, max_examples=5)

    @pytest.mark.parametrize("check", ["nonnegative", "symmetric", "translation_invariant"])
    def test_unclaimed_properties_skip_with_a_reason(self, check):
        with pytest.raises(pytest.skip.Exception, match=f"does not claim '{check}'"):
            self.run_contract_check(check)


def test_base_class_needs_a_factory():
    class Missing(DivergenceContract):
        pass

    with pytest.raises(TypeError, match="must set factory"):
        Missing().test_metadata()


def test_registered_names_work_as_factories():
    assert check_divergence("kl", checks=["metadata", "symmetric"]) == {"metadata": "passed", "symmetric": "skipped: does not claim 'symmetric'"}


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="unknown check"):
        check_divergence(ReferenceMMD, checks=["symetric"])
    with pytest.raises(ValueError, match="min_batch"):
        check_divergence(ReferenceMMD, min_batch=0)
    with pytest.raises(TypeError, match="factory"):
        check_divergence(42)


# -- each check catches its bug -------------------------------------------------------------------
class NaiveExpandedMMD(ReferenceMMD):
    def two_sample(self, x, y):  # ||a||^2 + ||b||^2 - 2 a.b on raw data: cancels under a shift
        def k(a, b):
            d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
            return torch.exp(-0.5 * d2.clamp_min(0))

        return k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean()


class NaiveEnergy(ReferenceMMD):
    def two_sample(self, x, y):  # sqrt at zero distance: NaN gradient
        d = lambda a, b: _sq_dists(a, b).sqrt()  # noqa: E731
        return 2 * d(x, y).mean() - d(x, x).mean() - d(y, y).mean()


class UnbiasedClaimsNonnegative(ReferenceMMD):
    def two_sample(self, x, y):
        n, m = x.shape[0], y.shape[0]
        k = lambda a, b: torch.exp(-0.5 * _sq_dists(a, b))  # noqa: E731
        return (k(x, x).sum() - n) / (n * (n - 1)) + (k(y, y).sum() - m) / (m * (m - 1)) - 2 * k(x, y).mean()


class MeanMatching(ReferenceMMD):
    def two_sample(self, x, y):  # blind to everything but the mean
        return (x.mean(0) - y.mean(0)).pow(2).sum()


class Asymmetric(ReferenceMMD):
    def two_sample(self, x, y):
        return super().two_sample(x, y) + 0.1 * (x.var(0, unbiased=False).sum() - y.var(0, unbiased=False).sum()).clamp_min(0)


class OrderDependent(ReferenceMMD):
    def two_sample(self, x, y):
        return super().two_sample(x, y) + (x[0] - y[0]).pow(2).sum()


class Bf16UnderAutocast(ReferenceMMD):
    properties = frozenset()

    def two_sample(self, x, y):  # matmul follows autocast to bfloat16
        return NaiveExpandedMMD.two_sample(self, x, y)


class UnseededNoise(ReferenceMMD):
    properties = frozenset()

    def forward(self, z, posterior, prior):
        return super().forward(z, posterior, prior) + random.random() * 1e-3


class ShapeOne(ReferenceMMD):
    def forward(self, z, posterior, prior):
        return super().forward(z, posterior, prior).reshape(1)


class Typo(ReferenceMMD):
    properties = frozenset({"symetric"})


class ClaimsWithoutTwoSample(Divergence):
    properties = frozenset({"symmetric"})

    def forward(self, z, posterior, prior):
        return z.pow(2).mean()


class IgnoresItsInput(ReferenceMMD):
    def forward(self, z, posterior, prior):
        return torch.zeros(())


class DeadGradient(ReferenceMMD):
    def forward(self, z, posterior, prior):
        return super().forward(z.detach(), posterior, prior) + 0.0 * z.sum()


class UntrainedParameters(ReferenceMMD):
    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, z, posterior, prior):
        return self.scale * super().forward(z, posterior, prior)


class HiddenState(ReferenceMMD):
    """Own optimizer, but the trained value lives in a plain attribute, not in state_dict."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.offset = 0.0

    def configure_optimizer(self):
        return torch.optim.SGD([self.w], lr=0.1)

    def update(self, z, prior, optimizer):
        optimizer.zero_grad()
        (self.w - 1).pow(2).sum().backward()
        optimizer.step()
        self.offset += 1.0
        return {"w": float(self.w.detach())}

    def forward(self, z, posterior, prior):
        return super().forward(z, posterior, prior) + self.w.detach().sum() + self.offset


class UpdateDoesNothing(HiddenState):
    def update(self, z, prior, optimizer):
        return {}


class ForeignOptimizer(HiddenState):
    def configure_optimizer(self):
        return torch.optim.SGD([self.w, torch.nn.Parameter(torch.ones(1))], lr=0.1)


class NaNOnOne(ReferenceMMD):
    def forward(self, z, posterior, prior):
        var = (z - z.mean(0)).pow(2).sum(0) / (z.shape[0] - 1)  # 0/0 for one code
        return super().forward(z, posterior, prior) + 0 * var.sum()


class IndexErrorOnOne(ReferenceMMD):
    def forward(self, z, posterior, prior):
        return super().forward(z, posterior, prior) + 0 * (z[1] - z[0]).sum()


@pytest.mark.parametrize(
    "divergence,check,message",
    [
        (NaiveExpandedMMD, "translation_invariant", "cancellation"),
        (NaiveEnergy, "two_sample", "non-finite"),
        (NaiveEnergy, "forward", "non-finite"),
        (UnbiasedClaimsNonnegative, "nonnegative", "< 0"),
        (MeanMatching, "positive_on_distinct", "expected > 0"),
        (Asymmetric, "symmetric", "two_sample\\(y, x\\)"),
        (OrderDependent, "zero_on_identical", "expected 0"),
        (OrderDependent, "permutation_invariant", "permuting"),
        (Bf16UnderAutocast, "autocast", "autocast"),
        (UnseededNoise, "deterministic", "same torch.manual_seed"),
        (ShapeOne, "forward", "shape \\(1,\\)"),
        (Typo, "metadata", "unknown properties \\['symetric'\\]"),
        (ClaimsWithoutTwoSample, "metadata", "no two_sample"),
        (ClaimsWithoutTwoSample, "symmetric", "no two_sample"),
        (IgnoresItsInput, "forward", "does not depend on z"),
        (DeadGradient, "gradient_signal", "exactly zero"),
        (UntrainedParameters, "own_state", "nothing would train them"),
        (HiddenState, "own_state", "state_dict"),
        (UpdateDoesNothing, "own_state", "left the state unchanged"),
        (ForeignOptimizer, "own_state", "not parameters of the divergence"),
        (NaNOnOne, "small_batches", "batch of 1 code\\(s\\) returned nan"),
        (IndexErrorOnOne, "small_batches", "IndexError"),
    ],
)
def test_each_check_catches_its_bug(divergence, check, message):
    assert divergence is not ReferenceMMD
    with pytest.raises(AssertionError, match=f"(?s)'{check}'.*{message}"):
        check_divergence(divergence, checks=[check], hypothesis_settings=FAST)


def test_min_batch_is_honoured():
    class NeedsThree(ReferenceMMD):
        def forward(self, z, posterior, prior):
            if z.shape[0] < 3:
                raise ValueError(f"needs a batch of at least 3 codes, got {z.shape[0]}")
            return super().forward(z, posterior, prior)

    with pytest.raises(AssertionError, match="raised ValueError; set min_batch"):
        check_divergence(NeedsThree, checks=["small_batches"])
    assert check_divergence(NeedsThree, checks=["small_batches"], min_batch=3) == {"small_batches": "passed"}


def test_failures_are_collected_into_one_report():
    with pytest.raises(AssertionError) as err:
        check_divergence(OrderDependent, checks=["zero_on_identical", "symmetric", "permutation_invariant"], hypothesis_settings=FAST)
    text = str(err.value)
    # Hypothesis' own wording of the example changed across versions ("Falsifying example", "Failing test case").
    assert "failed 2 contract check(s)" in text and ("Falsifying example" in text or "Failing test case" in text)
    assert "- zero_on_identical:" in text and "- permutation_invariant:" in text and "- symmetric" not in text


# -- packaging of the kit -------------------------------------------------------------------------
def test_kit_runs_without_pytest(tmp_path):
    script = textwrap.dedent(
        """
        import sys, unittest
        sys.modules["pytest"] = None  # import pytest now raises ImportError
        import torch
        from infovae import Divergence
        from infovae.testing import DivergenceContract, check_divergence

        class Mean(Divergence):
            properties = frozenset({"symmetric"})
            def forward(self, z, posterior, prior):
                return self.two_sample(z, prior.sample(z.shape[0]))
            def two_sample(self, x, y):
                return (x.mean(0) - y.mean(0)).pow(2).sum()

        print(check_divergence(Mean, checks=["metadata", "symmetric", "nonnegative"], examples=3))
        class T(DivergenceContract):
            factory = Mean
        try:
            T().test_nonnegative()
        except unittest.SkipTest as skip:
            print("SkipTest:", skip)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "'symmetric': 'passed'" in out.stdout and "SkipTest: does not claim 'nonnegative'" in out.stdout


def test_pytest_collects_subclasses_not_the_base(pytester):
    pytester.makepyfile(
        test_plugin=textwrap.dedent(
            """
            import torch
            from hypothesis import settings
            from infovae import Divergence
            from infovae.testing import CONTRACT_SETTINGS, DivergenceContract

            class Mean(Divergence):
                properties = frozenset({"symmetric", "nonnegative"})
                def forward(self, z, posterior, prior):
                    return self.two_sample(z, prior.sample(z.shape[0]))
                def two_sample(self, x, y):
                    return (x.float().mean(0) - y.float().mean(0)).pow(2).sum()

            class TestMean(DivergenceContract):
                factory = Mean
                hypothesis_settings = settings(CONTRACT_SETTINGS, max_examples=3)
            """
        )
    )
    result = pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider")
    # 14 checks: own_state, two_sample... pass or skip; 4 unclaimed properties skip
    result.assert_outcomes(passed=9, skipped=5)


# -- the decoder kit ------------------------------------------------------------------------------
class TinyBernoulli(Decoder):
    """A correct factorized Bernoulli decoder with a linear map from z to logits."""

    supports = ("binary",)

    def __init__(self, spec, latent_dim):
        super().__init__()
        if spec.kind not in self.supports:
            raise CapabilityError(f"TinyBernoulli models binary data only, got {spec.kind}")
        self.spec, self.latent_dim = spec, latent_dim
        self.net = torch.nn.Linear(latent_dim, spec.num_dims)

    def logits(self, z):
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"z must be (B, {self.latent_dim}), got {tuple(z.shape)}")
        return self.net(z).view(z.shape[0], *self.spec.shape)

    def log_prob(self, x, z, reduction="sum"):
        check_reduction(reduction)
        if tuple(x.shape) != (z.shape[0], *self.spec.shape):
            raise ValueError(f"x must be ({z.shape[0]}, {self.spec.shape}), got {tuple(x.shape)}")
        terms = -F.binary_cross_entropy_with_logits(self.logits(z), x, reduction="none")
        return terms if reduction == "none" else terms.flatten(1).sum(1)

    def sample(self, z, generator=None):
        return torch.bernoulli(torch.sigmoid(self.logits(z)), generator=generator)


SPECS = (DataSpec("binary", (1, 3, 4)),)


class MeanNotSum(TinyBernoulli):
    def log_prob(self, x, z, reduction="sum"):
        terms = super().log_prob(x, z, "none")
        return terms if reduction == "none" else terms.flatten(1).mean(1)


class Unnormalized(TinyBernoulli):
    def log_prob(self, x, z, reduction="sum"):
        check_reduction(reduction)
        super().log_prob(x, z, "none")  # shape checks
        terms = x * F.logsigmoid(self.logits(z))  # forgets the (1 - x) log(1 - p) term
        return terms if reduction == "none" else terms.flatten(1).sum(1)


class GlobalRNG(TinyBernoulli):
    def sample(self, z, generator=None):
        return torch.bernoulli(torch.sigmoid(self.logits(z)))


class MeansNotSamples(TinyBernoulli):
    def sample(self, z, generator=None):
        return torch.sigmoid(self.logits(z))


class BatchCoupled(TinyBernoulli):
    def logits(self, z):
        out = super().logits(z)
        return out - out.mean(0, keepdim=True)  # batch statistics leak into each example


class IgnoresCode(TinyBernoulli):
    def logits(self, z):
        return super().logits(torch.zeros_like(z))


class Broadcasts(TinyBernoulli):
    def log_prob(self, x, z, reduction="sum"):
        check_reduction(reduction)
        terms = -F.binary_cross_entropy_with_logits(self.logits(z), x.expand(z.shape[0], *self.spec.shape), reduction="none")
        return terms if reduction == "none" else terms.flatten(1).sum(1)


class BuildsForAnything(TinyBernoulli):
    def __init__(self, spec, latent_dim):
        Decoder.__init__(self)
        self.spec, self.latent_dim = spec, latent_dim
        self.net = torch.nn.Linear(latent_dim, spec.num_dims)


def test_check_decoder_passes_a_correct_decoder():
    report = check_decoder(TinyBernoulli, specs=SPECS)
    assert report == {c: "passed" for c in DECODER_CHECKS}


class TestTinyBernoulliThroughTheBaseClass(DecoderContract):
    factory = TinyBernoulli
    specs = SPECS


@pytest.mark.parametrize(
    "decoder,check,message",
    [
        (MeanNotSum, "log_prob", "sum to"),
        (Unnormalized, "normalization", "not 1"),
        (GlobalRNG, "sample", "global RNG"),
        (MeansNotSamples, "sample", "grid"),
        (BatchCoupled, "batch_independence", "rest of the batch"),
        (IgnoresCode, "gradients", "ignores its code"),
        (Broadcasts, "bad_input", "raise ValueError"),
        (BuildsForAnything, "metadata", "without an error"),
    ],
)
def test_each_decoder_check_catches_its_bug(decoder, check, message):
    with pytest.raises(AssertionError, match=f"(?s)'{check}'.*{message}"):
        check_decoder(decoder, specs=SPECS, checks=[check])
