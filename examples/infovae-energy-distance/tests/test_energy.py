"""Tests of the energy divergence: the infovae contract kit, a float64 brute-force
reference, and discovery through the installed entry point."""
from __future__ import annotations

import itertools
from importlib import metadata

import pytest
import torch
from hypothesis import given, settings
from infovae import StandardNormalPrior, registry
from infovae.testing import CONTRACT_SETTINGS, DivergenceContract, check_divergence
from infovae.testing import strategies as S

from infovae_energy_distance.energy import EnergyDistance, energy_distance


class TestEnergyContract(DivergenceContract):
    """Every check of the kit; the properties EnergyDistance claims are all six."""

    factory = EnergyDistance
    options = {}


def test_contract_through_the_registry_name():
    report = check_divergence("energy", {"prior_samples": 7}, checks=["metadata", "forward", "autocast"])
    assert set(report.values()) == {"passed"}


def reference(x, y):
    """Energy distance by explicit double loops in float64."""
    x, y = x.double().tolist(), y.double().tolist()
    dist = lambda a, b: sum((ai - bi) ** 2 for ai, bi in zip(a, b)) ** 0.5  # noqa: E731
    mean = lambda A, B: sum(dist(a, b) for a, b in itertools.product(A, B)) / (len(A) * len(B))  # noqa: E731
    return 2 * mean(x, y) - mean(x, x) - mean(y, y)


@settings(CONTRACT_SETTINGS, max_examples=30)
@given(S.sample_pairs(n=(1, 9), d=(1, 4)))
def test_matches_float64_brute_force(pair):
    x, y = pair
    assert float(energy_distance(x, y)) == pytest.approx(reference(x, y), rel=1e-5, abs=1e-5)


def test_closed_form_on_two_points():
    # E({0}, {a}) = 2|a| in one dimension
    assert float(energy_distance(torch.zeros(1, 1), torch.full((1, 1), 3.0))) == pytest.approx(6.0)


def test_gradient_at_duplicate_codes_is_finite():
    z = torch.zeros(4, 3, requires_grad=True)
    energy_distance(z, torch.zeros(2, 3)).backward()
    assert torch.isfinite(z.grad).all()


def test_forward_uses_prior_samples_option():
    div = EnergyDistance(prior_samples=5)
    calls = []

    class Prior(StandardNormalPrior):
        def sample(self, n, generator=None):
            calls.append(n)
            return super().sample(n, generator)

    div(torch.randn(3, 2), None, Prior(2))
    EnergyDistance()(torch.randn(3, 2), None, Prior(2))
    assert calls == [5, 3]


@pytest.mark.parametrize(
    "x,y,match",
    [(torch.zeros(3), torch.zeros(3, 1), r"\(n, d\)"), (torch.zeros(3, 2), torch.zeros(3, 1), "same dimension"),
     (torch.zeros(0, 2), torch.zeros(3, 2), "at least one row")],
)
def test_bad_inputs_are_clear_errors(x, y, match):
    with pytest.raises(ValueError, match=match):
        energy_distance(x, y)


def test_discovered_through_the_entry_point():
    info = registry(reload=True).info("divergences", "energy")
    assert info.source.distribution == "infovae-energy-distance"
    assert info.source.version == metadata.version("infovae-energy-distance")
    assert not info.source.builtin
    assert [(o.name, o.default) for o in info.options] == [("prior_samples", 0)]
    assert isinstance(registry().create("divergences", "energy", {"prior_samples": "4"}), EnergyDistance)


def test_metric_is_a_plugin_and_matches_the_divergence_function():
    import infovae
    from infovae.testing import check_metric

    from infovae_energy_distance.metric import EnergyToPrior

    info = registry(reload=True).info("metrics", "energy-prior")
    assert info.source.distribution == "infovae-energy-distance"
    report = check_metric(EnergyToPrior, {"prior_samples": 50})
    assert set(report.values()) == {"passed"}, report
    # the value is the energy distance between the codes it drew and the prior draws
    spec = infovae.DataSpec("binary", (1, 2, 2))
    reg = registry()
    model = infovae.InfoVAE(spec, 2, reg.create("encoders", "mlp", {"hidden": 4}, spec, 2),
                            reg.create("decoders", "bernoulli-mlp", {"hidden": 4}, spec, 2))
    x = torch.zeros(10, 1, 2, 2)
    res = infovae.evaluate_metrics(model, x, ["energy-prior"], generator=torch.Generator().manual_seed(3),
                                   options={"energy-prior": {"prior_samples": 7}})
    assert res["energy-prior"]["prior_samples"] == 7 and res["energy-prior"]["value"] >= 0
