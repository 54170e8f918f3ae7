"""Trainer features through the real trainer and CLI: --track, plot, --sample-every, --amp,
per-epoch redraw of dynamically binarized data, and that MMD regularization does its job."""
import json
import math
import os
import statistics

import pytest
import torch
from click.testing import CliRunner

import infovae
from infovae import DataSpec, hookimpl
from infovae.api import start_training
from infovae.build import make_run_spec
from infovae.cli.main import cli
from infovae.metrics import evaluate_metrics
from infovae.runs import TrainerConfig, read_metrics

SMALL = ["-d", "digits", "-z", "2", "-o", "encoder.hidden=16", "-o", "decoder.hidden=16", "--quiet"]


def invoke(*args, code=0):
    res = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert res.exit_code == code, res.output
    return res


def test_track_then_plot_draws_figure_one(registry, tmp_path):
    run = tmp_path / "run"
    # 1397 train examples at batch 512: 2 steps per epoch; 3 epochs.
    invoke("train", *SMALL, "-r", "mmd=10", "--batch-size", "512", "--epochs", "3", "--track", "mutual-information,nll", "--out", run)
    epochs = [r for r in read_metrics(run) if "track/nll" in r]
    assert [r["epoch"] for r in epochs] == [1.0, 2.0, 3.0]
    for r in epochs:
        assert math.isfinite(r["track/nll"]) and r["track/nll"] > 0
        assert r["track/mutual-information"] <= r["track/mutual-information/log_M"] + 1e-9
    out = json.loads(invoke("plot", run, "--n", "16", "--json").stdout)
    from PIL import Image

    with Image.open(out["out"]) as im:
        assert list(im.size) == out["size"] and im.size[0] > 400
    # samplers are plugins here too: options by target, unknown names with a suggestion
    one = json.loads(invoke("plot", run, "-s", "markov-chain", "-o", "markov-chain.steps=2", "--n", "8", "--out", tmp_path / "mc.png", "--json").stdout)
    assert out["samplers"] == ["ancestral", "markov-chain"] and one["samplers"] == ["markov-chain"]  # one sample panel instead of two
    res = invoke("plot", run, "-s", "markov-chian", code=1)
    assert "Did you mean 'markov-chain'" in res.output
    res = invoke("plot", run, "-s", "reconstruct", code=2)
    assert "start from data" in res.output
    res = invoke("train", *SMALL, "--steps", "2", "--track", "nl", "--out", tmp_path / "bad", code=1)
    assert "Did you mean 'nll'" in res.output and not (tmp_path / "bad").exists()


def test_sample_every_and_amp_through_the_trainer(registry, tmp_path):
    run = tmp_path / "run"
    invoke("train", *SMALL, "-r", "kl=1", "--batch-size", "512", "--epochs", "3", "--sample-every", "2", "--amp", "bf16",
           "--device", "cpu", "--out", run)
    grids = sorted(p.name for p in (run / "samples").iterdir())
    assert grids == ["epoch_0002.png", "final.png"]
    spec = json.loads((run / "spec.json").read_text())
    assert spec["trainer"]["amp"] == "bf16"
    last = [r for r in read_metrics(run) if "train/loss" in r][-1]
    assert math.isfinite(last["train/loss"]) and math.isfinite(last["train/kl"])


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("INFOVAE_TEST_COMPILE") != "1",
                    reason="torch.compile takes 15-130 s on a CPU; run with INFOVAE_TEST_COMPILE=1")
def test_compile_through_the_trainer(registry, tmp_path):
    """torch.compile of the loss: the compiled run's first step equals the eager one's (slow: compilation)."""
    eager, compiled = tmp_path / "eager", tmp_path / "compiled"
    invoke("train", *SMALL, "-r", "kl=1", "--steps", "2", "--log-every", "1", "--device", "cpu", "--out", eager)
    invoke("train", *SMALL, "-r", "kl=1", "--steps", "2", "--log-every", "1", "--device", "cpu", "--compile", "--out", compiled)
    a, b = read_metrics(eager)[0], read_metrics(compiled)[0]
    assert a["train/loss"] == pytest.approx(b["train/loss"], rel=1e-4)


class Flicker(infovae.Dataset):
    """Dynamically binarized 2x2 images from fixed gray levels; records every train draw."""

    spec = DataSpec("binary", (1, 2, 2))
    splits = ("train",)
    dynamic = True
    draws = []

    def __init__(self):
        self.p = torch.linspace(0.2, 0.8, 4).view(1, 1, 2, 2).expand(64, 1, 2, 2)

    def split(self, name, generator=None):
        if name != "train":
            raise infovae.split_error(name, self.splits)
        x = torch.bernoulli(self.p, generator=generator).to(torch.uint8)
        type(self).draws.append(x)
        return x


class FlickerPlugin:
    @hookimpl
    def register_datasets(self, register):
        register("flicker", Flicker, options=[])


def test_dynamic_binarization_redraws_each_epoch_reproducibly(registry, tmp_path):
    registry.register_plugin(FlickerPlugin(), name="flicker")

    def train(name):
        Flicker.draws = []
        spec, ds = make_run_spec(dataset="flicker", dataset_options={}, latent_dim=1, encoder="mlp", encoder_options={"hidden": 4},
                                 decoder="bernoulli-mlp", decoder_options={"hidden": 4}, divergences=[],
                                 trainer=TrainerConfig(batch_size=32, epochs=3, device="cpu", valid=False), reg=registry)
        Flicker.draws = []  # the draw made while checking the data
        start_training(tmp_path / name, spec, ds, reg=registry).fit()
        return [d.clone() for d in Flicker.draws]

    first = train("a")
    # one draw at set-up, then one per epoch (3 epochs of 2 steps)
    assert len(first) == 1 + 3
    epochs = first[1:]
    assert not torch.equal(epochs[0], epochs[1]) and not torch.equal(epochs[1], epochs[2])
    again = train("b")
    assert all(torch.equal(a, b) for a, b in zip(first, again)), "each epoch's draw is seeded by (seed, epoch)"


def test_mmd_regularization_brings_q_closer_to_the_prior_than_none(registry, tmp_path):
    """mmd-prior on the digits test split after the same short training with -r mmd=100 and -r none.

    The margin is derived from the seed-to-seed spread: the gap between the means must exceed four
    standard errors of that difference (Welch), from three seeds of each."""
    values = {}
    x = None
    for div in ("none", "mmd"):
        for seed in (0, 1, 2):
            spec, ds = make_run_spec(dataset="digits", dataset_options={}, latent_dim=4, encoder="mlp", encoder_options={"hidden": 32},
                                     decoder="bernoulli-mlp", decoder_options={"hidden": 32},
                                     divergences=[] if div == "none" else [("mmd", 100.0, {})],
                                     trainer=TrainerConfig(steps=100, batch_size=64, seed=seed, device="cpu", log_every=1000, valid=False),
                                     reg=registry)
            trainer = start_training(tmp_path / f"{div}-{seed}", spec, ds, reg=registry)
            trainer.fit()
            x = ds.split("test")
            res = evaluate_metrics(trainer.model, x, ["mmd-prior"], generator=torch.Generator().manual_seed(0), reg=registry)
            values.setdefault(div, []).append(res["mmd-prior"]["value"])
    none, mmd = values["none"], values["mmd"]
    se = math.sqrt(statistics.variance(none) / len(none) + statistics.variance(mmd) / len(mmd))
    assert statistics.mean(none) - statistics.mean(mmd) > 4 * se, values

