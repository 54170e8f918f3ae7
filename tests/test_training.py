"""The training engine: determinism, exact resume, Ctrl-C, non-finite losses, runs on disk."""
import json
import os
import signal

import pytest
import torch

from infovae import Divergence, RunError, TrainingError, hookimpl
from infovae.api import load_run, resume_training, start_training
from infovae.build import make_run_spec
from infovae.runs import TrainerConfig, read_metrics, read_status


def spec_for(registry, steps=12, divergences=(("kl", 1.0, {}),), seed=0, **trainer):
    cfg = TrainerConfig(batch_size=32, steps=steps, seed=seed, log_every=4, checkpoint_every=5, **trainer)
    return make_run_spec(
        dataset="digits", dataset_options={}, latent_dim=3, encoder="mlp", encoder_options={"hidden": 32},
        decoder="bernoulli-mlp", decoder_options={"hidden": 32}, divergences=list(divergences), trainer=cfg, reg=registry,
    )


def weights(run_dir):
    from safetensors.torch import load_file

    return load_file(str(run_dir / "model.safetensors"))


def assert_bitwise_equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_same_seed_same_weights_other_seed_differs(registry, tmp_path):
    runs = []
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        spec, ds = spec_for(registry, steps=6, seed=seed)
        start_training(tmp_path / name, spec, ds).fit()
        runs.append(weights(tmp_path / name))
    assert_bitwise_equal(runs[0], runs[1])
    assert any(not torch.equal(runs[0][k], runs[2][k]) for k in runs[0])


@pytest.mark.parametrize("divergence", ["kl", "mmd", "stein", "adversarial"])
def test_resume_is_bitwise_identical_to_uninterrupted(registry, tmp_path, divergence):
    divs = [(divergence, 1.0, {})]
    spec, ds = spec_for(registry, steps=14, divergences=divs)
    start_training(tmp_path / "full", spec, ds).fit()
    # 7 steps, a new process-like start from disk, then 7 more (crossing an epoch boundary and
    # a checkpoint in between: 1397 // 32 = 43 steps per epoch, so use steps within; still exact).
    spec7, ds = spec_for(registry, steps=7, divergences=divs)
    start_training(tmp_path / "split", spec7, ds).fit()
    torch.manual_seed(12345)  # global RNG disturbed between the runs: resume must restore it
    tr = resume_training(tmp_path / "split", steps=14)
    assert tr.step == 7
    tr.fit()
    assert_bitwise_equal(weights(tmp_path / "full"), weights(tmp_path / "split"))
    steps = [r["step"] for r in read_metrics(tmp_path / "split")]
    assert steps == sorted(steps) and steps[-1] == 14


def test_resume_across_epoch_boundary(registry, tmp_path):
    # 1397 train examples at batch 512: 2 steps per epoch; 5 steps cross two epochs.
    def spec(steps):
        cfg = TrainerConfig(batch_size=512, steps=steps, log_every=1)
        return make_run_spec(dataset="digits", dataset_options={}, latent_dim=2, encoder="mlp", encoder_options={"hidden": 16},
                             decoder="bernoulli-mlp", decoder_options={"hidden": 16}, divergences=[("kl", 1.0, {})], trainer=cfg, reg=registry)

    start_training(tmp_path / "full", *spec(5)).fit()
    start_training(tmp_path / "part", *spec(3)).fit()
    resume_training(tmp_path / "part", steps=5).fit()
    assert_bitwise_equal(weights(tmp_path / "full"), weights(tmp_path / "part"))


def test_ctrl_c_leaves_a_resumable_run(registry, tmp_path):
    spec, ds = spec_for(registry, steps=10)
    start_training(tmp_path / "full", spec, ds).fit()

    tr = start_training(tmp_path / "run", spec, ds)

    def press_ctrl_c(step, total, rec):
        if step == 4:
            os.kill(os.getpid(), signal.SIGINT)  # the real handler: stop after this step

    summary = tr.fit(progress=press_ctrl_c)
    assert summary.status == "interrupted" and summary.step == 4
    assert read_status(tmp_path / "run")["status"] == "interrupted"
    resume_training(tmp_path / "run").fit()
    assert read_status(tmp_path / "run")["status"] == "complete"
    assert_bitwise_equal(weights(tmp_path / "full"), weights(tmp_path / "run"))


class ExplodesAtStep3(Divergence):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, z, posterior, prior):
        self.calls += 1
        return z.sum() * 0 + (float("nan") if self.calls >= 3 else 0.0)


class ExplodingPlugin:
    @hookimpl
    def register_divergences(self, register):
        register("explodes", ExplodesAtStep3, options=[])


def test_non_finite_loss_stops_names_the_term_and_keeps_the_last_good_state(registry, tmp_path):
    registry.register_plugin(ExplodingPlugin(), name="exploding")
    spec, ds = spec_for(registry, steps=10, divergences=[("kl", 1.0, {}), ("explodes", 1.0, {})])
    tr = start_training(tmp_path / "run", spec, ds)
    with pytest.raises(TrainingError, match=r"step 2.*explodes"):
        tr.fit()
    status = read_status(tmp_path / "run")
    assert status["status"] == "failed" and "explodes" in status["error"]
    _, model, _ = load_run(tmp_path / "run", reg=registry)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_run_directory_contents_and_reload(registry, tmp_path):
    spec, ds = spec_for(registry, steps=8)
    start_training(tmp_path / "run", spec, ds).fit()
    names = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert names == [".infovae.lock", "checkpoint.safetensors", "metrics.jsonl", "model.safetensors", "samples", "spec.json", "status.json"]
    saved = json.loads((tmp_path / "run" / "spec.json").read_text())
    assert saved["encoder"] == {"name": "mlp", "options": registry.resolve_options("encoders", "mlp", {"hidden": 32})}
    assert saved["plugins"]["encoders/mlp"]["distribution"] == "infovae"
    spec2, model, _ = load_run(tmp_path / "run", reg=registry)
    w = weights(tmp_path / "run")
    for k, v in model.state_dict().items():
        assert torch.equal(v, w[f"model.{k}"])
    assert (tmp_path / "run" / "samples" / "final.png").stat().st_size > 0
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")]


def test_existing_run_is_not_overwritten(registry, tmp_path):
    spec, ds = spec_for(registry, steps=2)
    start_training(tmp_path / "run", spec, ds).fit()
    before = (tmp_path / "run" / "model.safetensors").read_bytes()
    with pytest.raises(RunError, match="already holds a run"):
        start_training(tmp_path / "run", spec, ds)
    assert (tmp_path / "run" / "model.safetensors").read_bytes() == before
    start_training(tmp_path / "run", spec, ds, overwrite=True).fit()


@pytest.mark.parametrize(
    "damage, action, fragment",
    [
        (lambda d: (d / "spec.json").unlink(), "load", "spec.json is missing"),
        (lambda d: (d / "spec.json").write_text("{not json"), "load", "not valid JSON"),
        (lambda d: (d / "spec.json").write_text('{"format": "other"}'), "load", "not an infovae run spec"),
        (lambda d: (d / "model.safetensors").write_bytes(b"garbage"), "load", "corrupt"),
        (lambda d: (d / "checkpoint.safetensors").write_bytes(b"\x00" * 10), "resume", "corrupt"),
        (lambda d: (d / "checkpoint.safetensors").unlink(), "resume", "no checkpoint.safetensors"),
    ],
)
def test_corrupt_runs_give_clear_errors(registry, tmp_path, damage, action, fragment):
    spec, ds = spec_for(registry, steps=2)
    start_training(tmp_path / "run", spec, ds).fit()
    damage(tmp_path / "run")
    with pytest.raises(RunError, match=fragment):
        if action == "resume":
            resume_training(tmp_path / "run", steps=4)
        else:
            load_run(tmp_path / "run", reg=registry)


def test_weights_that_do_not_match_the_spec_are_refused(registry, tmp_path):
    spec, ds = spec_for(registry, steps=2)
    start_training(tmp_path / "run", spec, ds).fit()
    saved = json.loads((tmp_path / "run" / "spec.json").read_text())
    saved["encoder"]["options"]["hidden"] = 64
    (tmp_path / "run" / "spec.json").write_text(json.dumps(saved))
    with pytest.raises(RunError, match="does not match the model"):
        load_run(tmp_path / "run", reg=registry)
