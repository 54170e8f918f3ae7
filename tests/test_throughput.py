"""Honest throughput in the training summary, and the flush-denormal setting: scoped, recorded, resumed exactly."""
import json
import time

import pytest
import torch
from click.testing import CliRunner

from infovae import Divergence, hookimpl
from infovae.api import resume_training, start_training
from infovae.build import make_run_spec
from infovae.cli.main import cli
from infovae.denormals import denormals_flushed, flush_denormal
from infovae.runs import RunSpec, TrainerConfig, read_metrics

TINY = torch.finfo(torch.float32).tiny  # smallest normal float32; TINY / 2 is denormal


def halve_tiny() -> float:
    return float(torch.full((1,), TINY).mul(0.5))


def test_flush_denormal_is_scoped_and_restores_the_previous_setting():
    assert not denormals_flushed() and halve_tiny() == TINY / 2  # torch's default: denormals kept
    with flush_denormal(True) as on:
        assert on and denormals_flushed() and halve_tiny() == 0.0
    assert not denormals_flushed() and halve_tiny() == TINY / 2
    with pytest.raises(RuntimeError), flush_denormal(True):
        raise RuntimeError("boom")
    assert not denormals_flushed()
    torch.set_flush_denormal(True)  # a process that flushes on its own keeps doing so afterwards
    try:
        with flush_denormal(False) as on:
            assert not on and halve_tiny() == TINY / 2
        assert denormals_flushed()
    finally:
        torch.set_flush_denormal(False)


class DenormalGate(Divergence):
    """mean(z^2) times a gate that is 1 when denormals are kept and 0 when they are flushed
    (1e-20 * 1e-20 is denormal), so the trajectory depends on the setting."""

    seen = []

    def forward(self, z, posterior, prior):
        DenormalGate.seen.append(denormals_flushed())
        gate = torch.full((), 1e-20).mul(1e-20).mul(1e20).mul(1e20)
        return z.square().mean() * gate


class SlowOutsideTraining(Divergence):
    """Sleeps 0.25 s when called without gradients (validation), to show it is not loop time."""

    def forward(self, z, posterior, prior):
        if not torch.is_grad_enabled():
            time.sleep(0.25)
        return z.sum() * 0.0


class ThroughputPlugins:
    @hookimpl
    def register_divergences(self, register):
        register("denormal-gate", DenormalGate, options=[])
        register("slow-outside-training", SlowOutsideTraining, options=[])


def spec_for(registry, steps, divergence, batch_size=32, **trainer):
    cfg = TrainerConfig(batch_size=batch_size, steps=steps, seed=0, log_every=3, checkpoint_every=0, **trainer)
    return make_run_spec(
        dataset="digits", dataset_options={}, latent_dim=3, encoder="mlp", encoder_options={"hidden": 32},
        decoder="bernoulli-mlp", decoder_options={"hidden": 32}, divergences=[("kl", 1.0, {}), (divergence, 1.0, {})],
        trainer=cfg, reg=registry,
    )


def weights(run_dir):
    from safetensors.torch import load_file

    return load_file(str(run_dir / "model.safetensors"))


def test_flush_denormal_is_on_by_default_recorded_and_reproduced_on_resume(registry, tmp_path):
    registry.register_plugin(ThroughputPlugins(), name="throughput-test")
    assert TrainerConfig().flush_denormal is True
    final = {}
    for flush in (True, False):
        spec, ds = spec_for(registry, 8, "denormal-gate", flush_denormal=flush)
        trainer = start_training(tmp_path / f"full-{flush}", spec, ds)
        DenormalGate.seen = []  # calls during fit only (set-up may try the divergence once)
        summary = trainer.fit()
        assert summary.flush_denormal is flush and set(DenormalGate.seen) == {flush}
        assert json.loads((tmp_path / f"full-{flush}" / "spec.json").read_text())["trainer"]["flush_denormal"] is flush
        assert not denormals_flushed()  # the process's setting is back after fit
        spec4, ds = spec_for(registry, 4, "denormal-gate", flush_denormal=flush)
        start_training(tmp_path / f"split-{flush}", spec4, ds).fit()
        # The resuming process has the opposite global setting: the run's own setting must win.
        torch.set_flush_denormal(not flush)
        try:
            trainer = resume_training(tmp_path / f"split-{flush}", steps=8)
            DenormalGate.seen = []
            trainer.fit()
            assert set(DenormalGate.seen) == {flush} and denormals_flushed() is (not flush)
        finally:
            torch.set_flush_denormal(False)
        full, split = weights(tmp_path / f"full-{flush}"), weights(tmp_path / f"split-{flush}")
        assert full.keys() == split.keys() and all(torch.equal(full[k], split[k]) for k in full)
        final[flush] = full
    assert any(not torch.equal(final[True][k], final[False][k]) for k in final[True])  # the setting was in effect


def test_runs_written_before_the_setting_resume_with_denormals_kept(registry):
    spec, _ = spec_for(registry, 4, "mmd")
    obj = spec.to_json()
    assert obj["trainer"]["flush_denormal"] is True
    del obj["trainer"]["flush_denormal"]
    assert RunSpec.from_json(obj).trainer.flush_denormal is False


def test_summary_throughput_covers_the_whole_loop_without_validation(registry, tmp_path):
    registry.register_plugin(ThroughputPlugins(), name="throughput-test")
    # 1397 training digits at batch 512: 2 steps per epoch, so 4 steps validate twice (0.25 s each).
    spec, ds = spec_for(registry, 4, "slow-outside-training", batch_size=512)
    s = start_training(tmp_path / "run", spec, ds).fit()
    assert s.examples == 4 * 512
    assert s.seconds - s.loop_seconds >= 0.5 and s.loop_seconds > 0
    assert s.examples_per_second == pytest.approx(s.examples / s.loop_seconds)
    assert s.fit_examples_per_second == pytest.approx(s.examples / s.seconds) and s.fit_examples_per_second < s.examples_per_second
    records = read_metrics(tmp_path / "run")
    assert s.window_examples_per_second == records[-1]["examples_per_second"]
    resumed = resume_training(tmp_path / "run", steps=6).fit()  # counts its own steps only
    assert resumed.examples == 2 * 512 and resumed.step == 6


def test_cli_summary_says_which_throughput_is_which(registry, tmp_path):
    fast = ["--steps", "6", "--batch-size", "64", "-z", "3", "-o", "encoder.hidden=32", "-o", "decoder.hidden=32"]
    run = CliRunner().invoke(cli, ["train", *fast, "--out", str(tmp_path / "a"), "--json", "--quiet"], catch_exceptions=False)
    out = json.loads(run.stdout)
    assert out["examples"] == 6 * 64 and out["flush_denormal"] is True
    assert out["examples_per_second"] == pytest.approx(out["examples"] / out["loop_seconds"], rel=6e-4 / out["loop_seconds"])  # loop_seconds has 3 decimals
    assert out["fit_examples_per_second"] <= out["examples_per_second"] and out["last_window_examples_per_second"] > 0
    text = CliRunner().invoke(cli, ["train", *fast, "--out", str(tmp_path / "b"), "--no-flush-denormal"], catch_exceptions=False).stdout
    assert "examples/s over the training loop" in text and "over the whole fit" in text and "last logging window" in text
    assert json.loads((tmp_path / "b" / "spec.json").read_text())["trainer"]["flush_denormal"] is False
    res = CliRunner().invoke(cli, ["train", "--resume", str(tmp_path / "b"), "--steps", "8", "--json", "--quiet"], catch_exceptions=False)
    assert json.loads(res.stdout)["flush_denormal"] is False
