"""The plugin boundary: a broken plugin fails before any work, in one line naming the plugin,
its package and the fix; nothing is written, a retry reuses the directory, listing stays valid."""
import json
import pytest
import torch
from click.testing import CliRunner
from torch import nn

import infovae
from infovae import Divergence, hookimpl
from infovae.cli.main import cli

from test_entry_points import make_distribution

FAST = ["-d", "digits", "--steps", "2", "--batch-size", "16", "-z", "2", "-o", "decoder.hidden=8", "--quiet"]


class Shaped(Divergence):
    """Returns per-code values of shape (B,): the classic mistake."""

    def forward(self, z, posterior, prior):
        return z.pow(2).sum(1)


class NonFinite(Divergence):
    def forward(self, z, posterior, prior):
        return (z.sum() * 0.0) + float("nan")


class Detached(Divergence):
    def forward(self, z, posterior, prior):
        return z.detach().pow(2).mean()


class Double(Divergence):
    def forward(self, z, posterior, prior):
        return z.double().pow(2).mean()


class Raises(Divergence):
    def forward(self, z, posterior, prior):
        raise RuntimeError("forward exploded")


def raising_factory():
    raise ValueError("cannot build this")


class BrokenEncoder(nn.Module):
    def __init__(self, spec, latent_dim):
        super().__init__()
        self.lin = nn.Linear(spec.num_dims, latent_dim)

    def forward(self, x):
        loc = self.lin(x.flatten(1))
        return torch.distributions.Normal(loc, torch.ones_like(loc))  # batch (B, D), event (): not Independent


class Broken:
    @hookimpl
    def register_divergences(self, register):
        register("b-shaped", Shaped)
        register("b-nonfinite", NonFinite)
        register("b-detached", Detached)
        register("b-double", Double)
        register("b-raises", Raises)
        register("b-factory-raises", raising_factory)
        register("b-float", lambda: 1.5, summary="returns a float")

    @hookimpl
    def register_encoders(self, register):
        register("b-encoder", BrokenEncoder)


@pytest.fixture
def broken(registry):
    registry.register_plugin(Broken(), name="broken-toys")
    return registry


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["-r", "b-shaped=1"], ["divergence 'b-shaped'", "returned shape (4,)", "0-dim"]),
        (["-r", "b-nonfinite=1"], ["divergence 'b-nonfinite'", "returned nan"]),
        (["-r", "b-detached=1"], ["divergence 'b-detached'", "no gradient path"]),
        (["-r", "b-double=1"], ["divergence 'b-double'", "torch.float64", "float32"]),
        (["-r", "b-raises=1"], ["divergence 'b-raises'", "raised RuntimeError", "forward exploded"]),
        (["-r", "b-factory-raises=1"], ["divergence 'b-factory-raises'", "factory raised ValueError", "cannot build this"]),
        (["-r", "b-float=1"], ["divergence 'b-float'", "returned float", "torch.nn.Module"]),
        (["-r", "kl=1", "-e", "b-encoder"], ["encoder 'b-encoder'", "batch shape"]),
        (["-r", "adversarial=1", "-o", "adversarial.lr=0"], ["option 'lr'", "adversarial", "greater than 0"]),
    ],
)
def test_broken_plugin_fails_before_any_work_in_one_line(broken, tmp_path, args, fragments):
    run = tmp_path / "run"
    res = CliRunner().invoke(cli, ["train", *FAST, *args, "--out", str(run)])
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output
    msg = res.output.strip()
    assert msg.count("\n") == 0, msg
    for fragment in fragments:
        assert fragment in msg, msg
    if "adversarial" not in args[1]:
        assert "in-process plugin 'broken-toys'" in msg
    assert not run.exists(), "nothing may be written before every plugin passed its probe"
    # a retry into the same --out with working plugins needs no --overwrite
    ok = CliRunner().invoke(cli, ["train", *FAST, "-r", "kl=1", "--out", str(run)])
    assert ok.exit_code == 0, ok.output
    assert json.loads(CliRunner().invoke(cli, ["plugins", "--json"]).stdout)["failed"] == []


def test_probe_leaves_the_training_trajectory_unchanged(registry, tmp_path):
    """Probing runs on copies under a forked RNG: weights equal those of a build without it."""
    from infovae.api import start_training
    from infovae.build import build_model, make_run_spec
    from infovae.runs import TrainerConfig

    spec, ds = make_run_spec(dataset="digits", dataset_options={}, latent_dim=2, encoder="mlp", encoder_options={"hidden": 8},
                             decoder="bernoulli-mlp", decoder_options={"hidden": 8}, divergences=[("adversarial", 1.0, {})],
                             trainer=TrainerConfig(steps=3, batch_size=16, device="cpu"), reg=registry)
    trainer = start_training(tmp_path / "run", spec, ds, reg=registry)
    torch.manual_seed(spec.trainer.seed)
    model, objective = build_model(spec, registry)
    for a, b in zip(trainer.model.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)
    # the adversarial discriminator is lazily shaped: the probe must not have materialized it
    assert any(isinstance(p, nn.parameter.UninitializedParameter) for p in trainer.objective.parameters())


BROKEN_DIST = """
from infovae import hookimpl

@hookimpl
def register_divergences(register):
    register("toy-shaped", "toy_shaped_impl:Shaped")
"""
BROKEN_IMPL = """
import torch
from infovae import Divergence

class Shaped(Divergence):
    def forward(self, z, posterior, prior):
        return z.pow(2).sum(1)
"""


def test_broken_divergence_from_a_package_names_the_distribution_and_version(tmp_path, monkeypatch):
    make_distribution(tmp_path, "toy-shaped-div", "0.9.1", {"shaped": "toy_shaped"}, {"toy_shaped": BROKEN_DIST, "toy_shaped_impl": BROKEN_IMPL})
    monkeypatch.syspath_prepend(str(tmp_path))
    for var in ("INFOVAE_LOAD_PLUGINS", "INFOVAE_STRICT_PLUGINS"):
        monkeypatch.delenv(var, raising=False)
    import importlib

    registry_module = importlib.import_module("infovae.registry")
    monkeypatch.setattr(registry_module, "_REGISTRY", registry_module.Registry())  # discovers the distribution above
    run = tmp_path / "run"
    res = CliRunner().invoke(cli, ["train", "-r", "toy-shaped=1", *FAST, "--out", str(run)])
    assert res.exit_code == 1
    assert "divergence 'toy-shaped' (toy-shaped-div 0.9.1)" in res.output and "Traceback" not in res.output, res.output
    assert not run.exists()
