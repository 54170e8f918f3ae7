"""Run-directory safety (issue 9): --overwrite, symlinks, the run lock, validate-before-write,
stale temporary files, crafted runs and checkpoints, hostile numbers, config files and images."""
from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from infovae import DataError, Divergence, RunError, hookimpl
from infovae.api import resume_training, start_training
from infovae.build import make_run_spec
from infovae.cli.main import cli
from infovae.runs import LOCK_FILE, RunLock, TrainerConfig, read_status

TINY = ["-z", "2", "-o", "encoder.hidden=8", "-o", "decoder.hidden=8", "-r", "kl=1", "--quiet"]


def run_cli(*args):
    res = CliRunner().invoke(cli, [str(a) for a in args])
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert "Traceback" not in res.output
    return res


def one_line_error(res, *fragments):
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert res.exit_code != 0, res.output
    assert len(lines) == 1 and lines[0].startswith("Error:"), res.output
    for f in fragments:
        assert f in lines[0], lines[0]
    return lines[0]


def train(out, steps=2, *extra):
    res = run_cli("train", "--steps", steps, *TINY, "--out", out, *extra)
    assert res.exit_code == 0, res.output
    return out


def snapshot(d: Path):
    return {p.relative_to(d).as_posix(): (p.read_bytes() if p.is_file() and not p.is_symlink() else None) for p in sorted(d.rglob("*"))}


# -- --overwrite ---------------------------------------------------------------------------------
def test_overwrite_never_deletes_foreign_files(tmp_path):
    d = tmp_path / "d"
    (d / "data").mkdir(parents=True)
    (d / "notes.txt").write_text("notes\n")
    (d / "data" / "x.npy").write_bytes(b"1")
    (d / "metrics.jsonl").write_text("")
    before = snapshot(d)
    res = run_cli("train", "--steps", 2, *TINY, "--out", d, "--overwrite")
    one_line_error(res, "not an infovae run")
    assert snapshot(d) == before
    # A real run with foreign files beside it: refused, naming them, nothing deleted.
    train(tmp_path / "run")
    (tmp_path / "run" / "notes.txt").write_text("mine\n")
    (tmp_path / "run" / "samples" / "keep.txt").write_text("mine\n")
    before = snapshot(tmp_path / "run")
    line = one_line_error(run_cli("train", "--steps", 2, *TINY, "--out", tmp_path / "run", "--overwrite"), "notes.txt", "samples/keep.txt")
    assert "not part of a run" in line
    assert snapshot(tmp_path / "run") == before


def test_overwrite_replaces_exactly_the_run_files(tmp_path):
    run = train(tmp_path / "run", 2)
    assert run_cli("sample", run, "-n", 4).exit_code == 0  # samples/ancestral.png is ours too
    assert run_cli("evaluate", run, "--metrics", "kl", "--limit", 16).exit_code == 0
    assert run_cli("report", run, "--no-samples").exit_code == 0  # RUN/report.html is ours too (make demo re-runs)
    assert (run / "report.html").exists()
    (run / ".checkpoint.safetensors.abcd1234.tmp").write_bytes(b"stale")
    train(run, 3, "--overwrite")
    names = sorted(p.relative_to(run).as_posix() for p in run.rglob("*"))
    assert names == [LOCK_FILE, "checkpoint.safetensors", "metrics.jsonl", "model.safetensors", "samples", "samples/final.png",
                     "spec.json", "status.json"]
    assert read_status(run)["step"] == 3


def test_retry_replaces_a_run_that_never_reached_a_checkpoint(registry, tmp_path):
    cfg = TrainerConfig(batch_size=64, steps=2)
    spec, ds = make_run_spec(dataset="digits", dataset_options={}, latent_dim=2, encoder="mlp", encoder_options={"hidden": 8},
                             decoder="bernoulli-mlp", decoder_options={"hidden": 8}, divergences=[("kl", 1.0, {})], trainer=cfg, reg=registry)
    tr = start_training(tmp_path / "run", spec, ds)  # spec.json written, then the process "dies"
    tr.run_lock.release()
    assert (tmp_path / "run" / "spec.json").exists() and not (tmp_path / "run" / "checkpoint.safetensors").exists()
    train(tmp_path / "run", 2)  # no --overwrite needed
    assert read_status(tmp_path / "run")["status"] == "complete"
    # ... but a run with weights still needs --overwrite.
    one_line_error(run_cli("train", "--steps", 2, *TINY, "--out", tmp_path / "run"), "already holds a run")


# -- symlinks --------------------------------------------------------------------------------------
def test_writes_never_follow_symlinks(tmp_path):
    run = train(tmp_path / "run", 2)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for p in (run / "samples").iterdir():
        p.unlink()
    (run / "samples").rmdir()
    (run / "samples").symlink_to(elsewhere)
    one_line_error(run_cli("sample", run, "-n", 4), "symbolic link")
    one_line_error(run_cli("train", "--resume", run, "--steps", 4), "symbolic link")
    assert list(elsewhere.iterdir()) == []
    # A dangling metrics.jsonl link in a fresh --out: refused with and without --overwrite; the victim is untouched.
    fresh, victim = tmp_path / "fresh", tmp_path / "victim.txt"
    fresh.mkdir()
    victim.write_text("precious\n")
    (fresh / "metrics.jsonl").symlink_to(victim)
    one_line_error(run_cli("train", "--steps", 2, *TINY, "--out", fresh), "already holds a run")
    one_line_error(run_cli("train", "--steps", 2, *TINY, "--out", fresh, "--overwrite"), "not an infovae run")
    assert victim.read_text() == "precious\n"
    # A link to a file where a run file goes is refused too, even when its target does not exist yet.
    run2 = train(tmp_path / "run2", 2)
    (run2 / "status.json").unlink()
    (run2 / "status.json").symlink_to(tmp_path / "victim2.json")
    one_line_error(run_cli("train", "--resume", run2, "--steps", 4), "symbolic link")
    assert not (tmp_path / "victim2.json").exists()


# -- the lock --------------------------------------------------------------------------------------
def test_second_writer_is_refused_naming_the_holder(tmp_path):
    run = train(tmp_path / "run", 2)
    lock = RunLock(run).acquire()  # a real flock, as another process would hold it
    try:
        before = snapshot(run)
        for args in (["train", "--resume", run, "--steps", 4], ["train", "--steps", 2, *TINY, "--out", run, "--overwrite"]):
            one_line_error(run_cli(*args), f"pid {os.getpid()}")
        assert snapshot(run) == before
        # Readers keep working while the run is held.
        assert run_cli("sample", run, "-n", 4, "--out", tmp_path / "s.png").exit_code == 0
        assert run_cli("evaluate", run, "--metrics", "kl", "--limit", 16, "--no-save").exit_code == 0
    finally:
        lock.release()
    assert run_cli("train", "--resume", run, "--steps", 3).exit_code == 0


# -- validate before writing ---------------------------------------------------------------------
@pytest.mark.parametrize("flags", [["--steps", "2"], ["--steps", "0"], ["--steps", "-5"], ["--epochs", "-3"], ["--steps", "4"]])
def test_resume_with_a_bad_budget_changes_nothing(tmp_path, flags):
    run = train(tmp_path / "run", 4)
    before = snapshot(run)
    one_line_error(run_cli("train", "--resume", run, *flags))
    assert snapshot(run) == before
    one_line_error(run_cli("train", "--resume", run), "already finished its 4 steps")


def test_stale_temp_files_of_ours_are_removed_and_only_ours(tmp_path):
    run = train(tmp_path / "run", 2)
    ours = [run / ".checkpoint.safetensors.k3j_x9a0.tmp", run / ".metrics.jsonl.abcdefgh.tmp", run / "samples" / ".final.png.0123abcd.tmp"]
    theirs = [run / ".notes.txt.abcdefgh.tmp", run / ".checkpoint.safetensors.TOOLONGNAME.tmp", run / "checkpoint.safetensors.abcdefgh.tmp"]
    for p in ours + theirs:
        p.write_bytes(b"x" * 100)
    assert run_cli("train", "--resume", run, "--steps", 3).exit_code == 0
    assert not any(p.exists() for p in ours)
    assert all(p.exists() for p in theirs)


# -- crafted runs -----------------------------------------------------------------------------------
def _edit_spec(run, fn):
    obj = json.loads((run / "spec.json").read_text())
    fn(obj)
    (run / "spec.json").write_text(json.dumps(obj))


SPEC_DAMAGE = {
    "list": lambda run: (run / "spec.json").write_text("[]"),
    "number": lambda run: (run / "spec.json").write_text("5"),
    "deep": lambda run: (run / "spec.json").write_text("[" * 200_000 + "]" * 200_000),
    "not utf-8": lambda run: (run / "spec.json").write_bytes(b"\xff\xfe{"),
    "encoder options 5": lambda run: _edit_spec(run, lambda o: o["encoder"].__setitem__("options", 5)),
    "batch size 0": lambda run: _edit_spec(run, lambda o: o["trainer"].__setitem__("batch_size", 0)),
    "latent 1e12": lambda run: _edit_spec(run, lambda o: o.__setitem__("latent_dim", 10**12)),
    "latent float": lambda run: _edit_spec(run, lambda o: o.__setitem__("latent_dim", 1e12)),
    "seed 2**64": lambda run: _edit_spec(run, lambda o: o["trainer"].__setitem__("seed", 2**64)),
    "hidden string": lambda run: _edit_spec(run, lambda o: o["encoder"]["options"].__setitem__("hidden", "abc")),
    "divergences dict": lambda run: _edit_spec(run, lambda o: o.__setitem__("divergences", {"kl": 1})),
    "shape": lambda run: _edit_spec(run, lambda o: o["data"].__setitem__("shape", [1, -8, 8])),
}


@pytest.fixture(scope="module")
def pristine_run(tmp_path_factory):
    return train(tmp_path_factory.mktemp("pristine") / "run", 2, "--checkpoint-every", "1")


def _copy_run(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("damage", sorted(SPEC_DAMAGE))
def test_crafted_spec_is_reported_as_corrupt(pristine_run, tmp_path, damage):
    run = _copy_run(pristine_run, tmp_path / "run")
    SPEC_DAMAGE[damage](run)
    for args in (["sample", run, "-n", 2, "--out", tmp_path / "s.png"], ["train", "--resume", run, "--steps", 3]):
        one_line_error(run_cli(*args), "corrupt")


def _rewrite_checkpoint(run, fn):
    from safetensors import safe_open

    path = run / "checkpoint.safetensors"
    with safe_open(str(path), framework="pt") as fh:
        meta = dict(fh.metadata())
    tensors = load_file(str(path))
    fn(tensors, meta)
    save_file(tensors, str(path), metadata=meta)


def _skeleton_edit(fn):
    def edit(tensors, meta):
        sk = json.loads(meta["optim"])
        fn(sk)
        meta["optim"] = json.dumps(sk)
    return edit


CHECKPOINT_DAMAGE = {
    "missing optimizer tensor": lambda t, m: t.pop(next(k for k in sorted(t) if k.startswith("optim."))),
    "no rng": lambda t, m: t.pop("rng.cpu"),
    "float rng": lambda t, m: t.__setitem__("rng.cpu", t["rng.cpu"].float()),
    "short rng": lambda t, m: t.__setitem__("rng.cpu", t["rng.cpu"][:10].clone()),
    "no step": lambda t, m: m.pop("step"),
    "step text": lambda t, m: m.__setitem__("step", "many"),
    "optim not json": lambda t, m: m.__setitem__("optim", "{"),
    "two param groups": _skeleton_edit(lambda sk: sk["__dict__"][0][1]["__dict__"][1][1]["__list__"].append(
        sk["__dict__"][0][1]["__dict__"][1][1]["__list__"][0])),
    "state of the wrong shape": lambda t, m: t.__setitem__(
        next(k for k in sorted(t) if k.endswith("exp_avg")), torch.zeros(3, 3)),
    "nan weights": lambda t, m: t.__setitem__(next(k for k in sorted(t) if k.startswith("model.")),
                                             torch.full_like(t[next(k for k in sorted(t) if k.startswith("model."))], float("nan"))),
    "missing weight": lambda t, m: t.pop(next(k for k in sorted(t) if k.startswith("model."))),
}


@pytest.mark.parametrize("damage", sorted(CHECKPOINT_DAMAGE))
def test_crafted_checkpoint_is_reported_as_corrupt_and_nothing_is_written(pristine_run, tmp_path, damage):
    run = _copy_run(pristine_run, tmp_path / "run")
    _rewrite_checkpoint(run, CHECKPOINT_DAMAGE[damage])
    before = snapshot(run)
    one_line_error(run_cli("train", "--resume", run, "--steps", 3), "corrupt")
    assert snapshot(run) == before


def test_nan_weights_at_sample_time_are_corrupt(pristine_run, tmp_path):
    run = _copy_run(pristine_run, tmp_path / "run")
    w = load_file(str(run / "model.safetensors"))
    k = sorted(w)[0]
    w[k] = torch.full_like(w[k], float("nan"))
    save_file(w, str(run / "model.safetensors"))
    one_line_error(run_cli("sample", run, "-n", 2, "--out", tmp_path / "s.png"), "corrupt", "non-finite")


# -- numbers -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, fragment", [
    (["--lr", "inf"], "lr must be a finite number"),
    (["--weight-decay", "inf"], "weight_decay must be a finite number"),
    (["--weight-decay", "-1"], "weight_decay must be a finite number >= 0"),
    (["--seed", str(2**64)], "seed must be an integer in [0, 9223372036854775807]"),
    (["--seed", "-1"], "seed must be an integer"),
    (["-r", "mmd=1", "-o", "mmd.bandwidth=1e-300"], "bandwidth must lie in [1e-12, 1e12]"),
    (["-r", "stein=1", "-o", "stein.bandwidth=1e-300"], "bandwidth must lie in [1e-12, 1e12]"),
    (["-r", "mmd=1", "-o", "mmd.prior_samples=100000000"], "above the maximum"),
    (["-z", "2147483648"], "of memory to train"),
])
def test_hostile_numbers_are_refused_before_work(tmp_path, args, fragment):
    one_line_error(run_cli("train", "--steps", 2, *TINY, *args, "--out", tmp_path / "run"), fragment)
    assert not (tmp_path / "run").exists()


def test_huge_learning_rate_stops_without_a_nan_checkpoint(tmp_path):
    run = tmp_path / "run"
    one_line_error(run_cli("train", "--steps", 4, *TINY, "--lr", "1e20", "--checkpoint-every", "1", "--out", run), "non-finite")
    status = read_status(run)
    assert status["status"] == "failed" and "non-finite" in status["error"]
    if (run / "model.safetensors").exists():
        assert all(torch.isfinite(v).all() for v in load_file(str(run / "model.safetensors")).values())
    assert run_cli("train", "--seed", str(2**64), "--steps", 2, *TINY, "--out", tmp_path / "r2").exit_code != 0
    one_line_error(run_cli("evaluate", tmp_path / "nothing", "--seed", str(2**64)), "--seed")


def test_out_under_a_file_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    one_line_error(run_cli("train", "--steps", 2, *TINY, "--out", tmp_path / "file" / "run"), "is a file")


# -- an exception escaping fit ------------------------------------------------------------------
class BreaksAtStep4(Divergence):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, z, posterior, prior):
        self.calls += 1
        if self.calls == 4:
            raise RuntimeError("plugin bug")
        return z.sum() * 0


class BreakingPlugin:
    @hookimpl
    def register_divergences(self, register):
        register("breaks", BreaksAtStep4, options=[])


def test_an_escaping_exception_marks_the_run_failed_and_keeps_the_checkpoint(registry, tmp_path):
    registry.register_plugin(BreakingPlugin(), name="breaking")
    run = tmp_path / "run"
    res = run_cli("train", "--steps", 10, *TINY[:-3], "-r", "breaks=1", "--checkpoint-every", "2", "--quiet", "--out", run)
    one_line_error(res, "plugin bug")
    status = read_status(run)
    assert status["status"] == "failed" and status["step"] == 2 and "RuntimeError: plugin bug" in status["error"]
    assert load_file(str(run / "checkpoint.safetensors"))  # the step-2 checkpoint is intact
    res = CliRunner().invoke(cli, ["--debug", "train", "--resume", str(run)])
    assert res.exit_code != 0 and isinstance(res.exception, RuntimeError)  # --debug lets the traceback through


# -- config files ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, fragment", [
    (b"options = 5\n", "options"),
    (b"divergence = 5\n", "divergence"),
    (b'encoder = ["mlp"]\n', "encoder"),
    (b'lr = "fast"\n', "lr"),
    (b'latent_dim = "abc"\n', "latent_dim"),
    (b'compile = "false"\n', "compile"),
    (b"batch_size = 1.5\n", "batch_size"),
    (b"[options.encoder]\nhidden = [1, [2]]\n", "options"),
    (b"\xff\xfe steps = 2\n", "not UTF-8"),
    (b"steps = \n", "not valid TOML"),
    (b"a = " + b"[" * 5000, "config"),
])
def test_config_values_are_type_checked(tmp_path, text, fragment):
    (tmp_path / "c.toml").write_bytes(text)
    one_line_error(run_cli("train", "--steps", 2, *TINY, "--config", tmp_path / "c.toml", "--out", tmp_path / "run"), fragment)
    assert not (tmp_path / "run").exists()


# -- images ---------------------------------------------------------------------------------------------
def _png(width, height, raw: bytes) -> bytes:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def _folder(tmp_path, bad_name, bad_bytes):
    d = tmp_path / "imgs"
    d.mkdir()
    for i in range(6):
        (d / f"ok{i}.png").write_bytes(_png(4, 4, b"".join(b"\x00" + bytes([i * 10] * 4) for _ in range(4))))
    (d / bad_name).write_bytes(bad_bytes)
    return d


def test_decompression_bomb_is_refused_naming_the_file(registry, tmp_path):
    d = _folder(tmp_path, "bomb.png", _png(20000, 20000, b"\x00" * 10))
    with pytest.raises(DataError, match=r"bomb\.png.*decompression bomb"):
        registry.create("datasets", "image-folder", {"path": str(d)})


def test_broken_png_is_refused_naming_the_file(registry, tmp_path):
    good = bytearray(_png(4, 4, b"".join(b"\x00" + bytes([7] * 4) for _ in range(4))))
    good[-20] ^= 0xFF  # inside IDAT: the CRC no longer matches
    d = _folder(tmp_path, "flipped.png", bytes(good))
    ds = registry.create("datasets", "image-folder", {"path": str(d)})
    with pytest.raises(DataError, match=r"flipped\.png"):
        ds.split("train")


# -- a signal during the final write ------------------------------------------------------------------
def test_signals_during_the_final_write_do_not_abort_it(registry, tmp_path):
    import signal

    from infovae.trainer import Trainer

    cfg = TrainerConfig(batch_size=64, steps=3)
    spec, ds = make_run_spec(dataset="digits", dataset_options={}, latent_dim=2, encoder="mlp", encoder_options={"hidden": 8},
                             decoder="bernoulli-mlp", decoder_options={"hidden": 8}, divergences=[("kl", 1.0, {})], trainer=cfg, reg=registry)
    tr = start_training(tmp_path / "run", spec, ds)
    original = Trainer.write_samples

    def write_samples_while_signalled(self, name):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C twice, then SIGTERM, in the middle of the final write
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)
        return original(self, name)

    tr.write_samples = write_samples_while_signalled.__get__(tr)
    summary = tr.fit()
    assert summary.status == "complete" and read_status(tmp_path / "run")["status"] == "complete"
