"""The trainer warns once when the code collapses, naming the divergence weight to lower."""
import warnings

import pytest

from infovae import collapse

from infovae.api import start_training
from infovae.build import make_run_spec
from infovae.collapse import CodeCollapseWarning, collapse_message
from infovae.runs import TrainerConfig


def train(registry, tmp_path, divergences, epochs=6):
    cfg = TrainerConfig(batch_size=64, epochs=epochs, lr=3e-3, log_every=1000)
    spec, ds = make_run_spec(dataset="digits", dataset_options={}, latent_dim=2, encoder="mlp",
                             encoder_options={"hidden": 64}, decoder="bernoulli-mlp", decoder_options={"hidden": 64},
                             divergences=divergences, trainer=cfg, reg=registry)
    tr = start_training(tmp_path, spec, ds)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tr.fit()
    return tr, [w for w in caught if issubclass(w.category, CodeCollapseWarning)]


@pytest.fixture(autouse=True)
def short_grace(monkeypatch):
    """Digits epochs are 21 steps: start checking after 4 of them rather than the default 500 steps
    (measured for this model: I(x;z) 0.009 nats after 3 epochs, 0.39 after 4, 3.4 after 5)."""
    monkeypatch.setattr(collapse, "COLLAPSE_MIN_STEPS", 80)


def test_strong_divergence_collapses_the_code_and_warns_once(registry, tmp_path):
    tr, caught = train(registry, tmp_path, [("mmd", 1e4, {})])
    assert len(caught) == 1, [str(w.message) for w in caught]
    msg = str(caught[0].message)
    assert "code collapse" in msg and "'mmd'" in msg and "10000" in msg and "-r mmd=1000" in msg
    # The warning tells the truth: the code really carries no information.
    assert collapse_message(tr.model, tr.x_valid, tr.objective.weights) is not None


def test_healthy_code_does_not_warn(registry, tmp_path):
    tr, caught = train(registry, tmp_path, [("mmd", 1.0, {})])
    assert caught == []
    assert collapse_message(tr.model, tr.x_valid, {"mmd": 1.0}) is None
