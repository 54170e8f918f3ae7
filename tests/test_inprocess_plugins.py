"""Every kind of plugin registered in-process (as a test fixture would in a
plugin's own suite) and used end to end through the CLI."""
import json
from typing import Annotated

import pytest
import torch
from click.testing import CliRunner
from torch import nn

import infovae
from infovae import Dataset, DataSpec, Decoder, Divergence, Metric, Opt, Option, Sampler, hookimpl
from infovae.cli.main import cli


class Bars(Dataset):
    """4x4 binary images with one full horizontal or vertical bar."""

    spec = DataSpec("binary", (1, 4, 4))
    splits = ("train", "test")

    def __init__(self, copies: int = 8):
        imgs = []
        for i in range(4):
            h = torch.zeros(1, 4, 4, dtype=torch.uint8)
            h[0, i, :] = 1
            v = torch.zeros(1, 4, 4, dtype=torch.uint8)
            v[0, :, i] = 1
            imgs += [h, v]
        self.x = torch.stack(imgs).repeat(copies, 1, 1, 1)

    def split(self, name, generator=None):
        if name not in self.splits:
            raise infovae.split_error(name, self.splits)
        return self.x

    def labels(self, name):
        return torch.arange(8).repeat(self.x.shape[0] // 8)


class LinearEncoder(nn.Module):
    def __init__(self, spec, latent_dim):
        super().__init__()
        self.net = nn.Linear(spec.num_dims, 2 * latent_dim)

    def forward(self, x):
        loc, log_scale = self.net(x.flatten(1)).chunk(2, dim=-1)
        return infovae.diagonal_gaussian(loc, log_scale)


class LinearBernoulli(Decoder):
    def __init__(self, spec, latent_dim):
        super().__init__()
        self.spec = spec
        self.net = nn.Linear(latent_dim, spec.num_dims)

    def logits(self, z):
        return self.net(z).view(-1, *self.spec.shape)

    def log_prob(self, x, z, reduction="sum"):
        infovae.check_reduction(reduction)
        terms = -nn.functional.binary_cross_entropy_with_logits(self.logits(z), x, reduction="none")
        return terms if reduction == "none" else terms.flatten(1).sum(1)

    def sample(self, z, generator=None):
        return torch.bernoulli(torch.sigmoid(self.logits(z)), generator=generator)


class MeanMatch(Divergence):
    properties = frozenset({"nonnegative", "symmetric", "permutation_invariant", "translation_invariant"})

    def two_sample(self, x, y):
        return (x.mean(0) - y.mean(0)).pow(2).sum()

    def forward(self, z, posterior, prior):
        return self.two_sample(z, prior.sample(z.shape[0]))


class ModeSampler(Sampler):
    """Decoder modes at prior draws (no randomness in x)."""

    def __init__(self, threshold: float = 0.5):
        self.threshold = threshold

    def __call__(self, model, n, generator=None, data=None):
        z = model.prior.sample(n, generator=generator)
        return (torch.sigmoid(model.decoder.logits(z)) > self.threshold).float()


class PixelMean(Metric):
    """Mean pixel of ancestral samples minus that of the data (a toy metric)."""

    def __init__(self, num_samples: Annotated[int, Opt("ancestral samples drawn", minimum=1)] = 64):
        self.num_samples = num_samples

    def __call__(self, model, x, *, labels=None, generator=None, batch_size=1024):
        s = model.sample(self.num_samples, generator=generator)
        return {"value": float(s.mean() - x.float().mean()), "n": self.num_samples, "units": "pixel value"}


class ListLogger:
    """Keeps the scalars it receives in memory."""

    def __init__(self, run_dir):
        self.scalars = []

    def log_scalars(self, step, scalars):
        self.scalars.append((step, dict(scalars)))


class ToyPlugin:
    @hookimpl
    def register_metrics(self, register):
        register("toy-pixel-mean", PixelMean)

    @hookimpl
    def register_datasets(self, register):
        register("toy-bars", Bars, options=[Option("copies", int, 8, "copies of the 8 images", minimum=1)])

    @hookimpl
    def register_encoders(self, register):
        register("toy-linear", LinearEncoder)

    @hookimpl
    def register_decoders(self, register):
        register("toy-bernoulli", LinearBernoulli, supports=("binary",))

    @hookimpl
    def register_divergences(self, register):
        register("toy-mean-match", MeanMatch)

    @hookimpl
    def register_samplers(self, register):
        register("toy-mode", ModeSampler)

    @hookimpl
    def register_loggers(self, register):
        register("toy-list", ListLogger)


@pytest.fixture
def toy(registry):
    registry.register_plugin(ToyPlugin(), name="toy")
    yield registry
    registry.unregister_plugin("toy")


def test_every_kind_listed_with_their_source(toy):
    out = json.loads(CliRunner().invoke(cli, ["plugins", "--json"]).stdout)
    mine = {k: [p for p in ps if p["name"].startswith("toy-")] for k, ps in out["plugins"].items()}
    assert all(len(v) == 1 for v in mine.values()), mine
    assert all(not v[0]["builtin"] for v in mine.values())
    assert mine["decoders"][0]["supports"] == ["binary"]
    assert {"divergences", "encoders", "decoders", "samplers", "datasets", "metrics"} <= set(mine)
    # options of a callable factory come from its signature; Annotated carries help and bounds
    (opt,) = mine["metrics"][0]["options"]
    assert (opt["name"], opt["type"], opt["default"], opt["help"], opt["minimum"]) == ("num_samples", "int", 64, "ancestral samples drawn", 1)


def test_train_and_sample_with_in_process_plugins(toy, tmp_path):
    run = tmp_path / "run"
    args = ["train", "-d", "toy-bars", "-o", "dataset.copies=16", "-e", "toy-linear", "-p", "toy-bernoulli",
            "-r", "toy-mean-match=1", "-r", "kl=0.1", "-z", "2", "--batch-size", "32", "--steps", "40", "--lr", "0.05",
            "--out", str(run), "--quiet", "--json"]
    res = CliRunner().invoke(cli, args, catch_exceptions=False)
    summary = json.loads(res.stdout)
    assert summary["status"] == "complete"
    lines = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert "train/toy-mean-match" in lines[-1] and "train/kl" in lines[-1]
    # the loss went down on this easy data
    assert lines[-1]["train/reconstruction"] < lines[0]["train/reconstruction"]
    res = CliRunner().invoke(cli, ["sample", str(run), "--sampler", "toy-mode", "-n", "8", "--out", str(tmp_path / "s.npy")], catch_exceptions=False)
    import numpy as np

    s = np.load(tmp_path / "s.npy")
    assert s.shape == (8, 1, 4, 4) and set(np.unique(s)) <= {0, 1}
    spec = json.loads((run / "spec.json").read_text())
    assert spec["plugins"]["datasets/toy-bars"]["distribution"] is None  # in-process: no distribution
    # a third-party metric with a typed option, beside a built-in one
    res = CliRunner().invoke(cli, ["evaluate", str(run), "--metrics", "toy-pixel-mean,kl", "-o", "toy-pixel-mean.num_samples=16",
                                   "--json", "--no-save"], catch_exceptions=False)
    rep = json.loads(res.stdout)
    assert rep["metrics"]["toy-pixel-mean"]["n"] == 16 and -1 <= rep["metrics"]["toy-pixel-mean"]["value"] <= 1
    res = CliRunner().invoke(cli, ["evaluate", str(run), "--metrics", "toy-pixel-mean", "-o", "toy-pixel-mean.num_samples=0"])
    assert res.exit_code == 1 and "below the minimum 1" in res.output


def test_unregistered_plugin_makes_the_run_unloadable_with_a_clear_error(toy, tmp_path):
    run = tmp_path / "run"
    CliRunner().invoke(cli, ["train", "-d", "toy-bars", "-e", "toy-linear", "-p", "toy-bernoulli", "-r", "none", "-z", "2",
                             "--batch-size", "8", "--steps", "2", "--out", str(run), "--quiet"], catch_exceptions=False)
    toy.unregister_plugin("toy")
    res = CliRunner().invoke(cli, ["evaluate", str(run)])
    assert res.exit_code != 0 and "unknown encoder 'toy-linear'" in res.output
    toy.register_plugin(ToyPlugin(), name="toy")


def test_saved_run_names_the_missing_package_and_sample_needs_no_divergence(toy, tmp_path):
    run = tmp_path / "run"
    CliRunner().invoke(cli, ["train", "-d", "toy-bars", "-e", "toy-linear", "-p", "toy-bernoulli", "-r", "toy-mean-match=1", "-z", "2",
                             "--batch-size", "8", "--steps", "2", "--out", str(run), "--quiet"], catch_exceptions=False)
    spec = json.loads((run / "spec.json").read_text())
    spec["plugins"]["encoders/toy-linear"] = {"distribution": "toy-encoders", "version": "1.4.2"}
    (run / "spec.json").write_text(json.dumps(spec))
    toy.unregister_plugin("toy")
    try:
        class WithoutDivergence(ToyPlugin):
            register_divergences = None

        toy.register_plugin(WithoutDivergence(), name="toy-partial")
        # the training-only divergence is gone: sampling and evaluating do not need it
        res = CliRunner().invoke(cli, ["sample", str(run), "-n", "4", "--out", str(tmp_path / "s.png")])
        assert res.exit_code == 0, res.output
        res = CliRunner().invoke(cli, ["evaluate", str(run), "--metrics", "kl", "--no-save"])
        assert res.exit_code == 0, res.output
        res = CliRunner().invoke(cli, ["train", "--resume", str(run), "--steps", "4"])
        assert res.exit_code == 1 and "toy-mean-match" in res.output
        toy.unregister_plugin("toy-partial")
        res = CliRunner().invoke(cli, ["sample", str(run), "-n", "4", "--out", str(tmp_path / "s.png")])
        assert res.exit_code == 1 and "toy-encoders 1.4.2" in res.output and "pip install 'toy-encoders==1.4.2'" in res.output
    finally:
        toy.register_plugin(ToyPlugin(), name="toy")
