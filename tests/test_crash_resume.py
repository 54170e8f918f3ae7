"""Crash tests with real processes (issue 9): SIGKILL, SIGTERM, SIGHUP and SIGINT at random steps.

Each signal hits a real ``python -m infovae.cli.main train`` once its metrics show a step drawn
at random (seeded: the test is reproducible). The graceful signals must exit 128 + signum with
status "interrupted" at a checkpoint; SIGKILL leaves whatever the last periodic checkpoint was.
Every run is then resumed and must end bitwise equal to an uninterrupted run, with metric lines
for exactly steps 1..N. While the processes train, a second writer is refused naming the
holder's pid and readers keep working; after kill -9 the kernel has dropped the lock.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from infovae.cli.main import cli
from infovae.runs import read_status

STEPS = 80  # the uninterrupted reference's length (raised below if a victim ran past it)
UNBOUNDED = 1_000_000  # victims train "forever": none can finish before its signal, however fast the machine
ARGS = ["train", "--steps", str(STEPS), "-z", "3", "-o", "encoder.hidden=16", "-o", "decoder.hidden=16", "-r", "mmd=10",
        "--batch-size", "64", "--log-every", "1", "--checkpoint-every", "4", "--quiet"]
SIGNALS = {"SIGKILL": signal.SIGKILL, "SIGTERM": signal.SIGTERM, "SIGHUP": signal.SIGHUP, "SIGINT": signal.SIGINT}


def invoke(*args):
    res = CliRunner().invoke(cli, [str(a) for a in args])
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    return res


def last_step(run: Path) -> int:
    try:
        lines = (run / "metrics.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return 0
    for line in reversed(lines):
        try:
            return json.loads(line)["step"]
        except (ValueError, KeyError):
            continue
    return 0


def spawn(run: Path, steps=UNBOUNDED) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "infovae.cli.main", *args_with_steps(steps), "--out", str(run)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def args_with_steps(steps: int):
    return [a if a != str(STEPS) else str(steps) for a in ARGS]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_signals_at_random_steps_resume_bitwise(tmp_path):
    from safetensors import safe_open

    torch.set_num_threads(1)
    rng = random.Random(9)
    targets = {name: rng.randint(5, 30) for name in SIGNALS}
    procs = {name: spawn(tmp_path / name) for name in SIGNALS}
    try:
        # Every victim is watched at once and hit as soon as its metrics reach its step (the
        # SIGKILL victim is frozen with SIGSTOP first, holding its lock); nothing else runs in this
        # process meanwhile, so no victim races ahead while the test is busy.
        pending = dict(targets)
        deadline = time.monotonic() + 180
        while pending:
            for name in list(pending):
                assert procs[name].poll() is None, f"{name}: the process ended early: {procs[name].returncode} {procs[name].communicate()}"
                if last_step(tmp_path / name) >= pending[name]:
                    procs[name].send_signal(signal.SIGSTOP if name == "SIGKILL" else SIGNALS[name])
                    del pending[name]
            assert time.monotonic() < deadline, f"training did not progress: {pending}"
            time.sleep(0.002)

        # The frozen SIGKILL victim holds its lock: a second writer is refused naming its pid,
        # readers still work. Then kill -9.
        held, holder = tmp_path / "SIGKILL", procs["SIGKILL"]
        for args in (["train", "--resume", held, "--steps", STEPS], ["train", *ARGS[1:], "--out", held, "--overwrite"]):
            res = invoke(*args)
            assert res.exit_code != 0 and f"pid {holder.pid}" in res.output and len(res.output.strip().splitlines()) == 1, res.output
        assert invoke("evaluate", held, "--metrics", "kl", "--limit", 16, "--no-save").exit_code == 0
        assert invoke("sample", held, "-n", 4, "--out", tmp_path / "s.png").exit_code == 0
        holder.send_signal(signal.SIGKILL)

        reached = {}
        for name, sig in SIGNALS.items():
            out, err = procs[name].communicate(timeout=120)
            run = tmp_path / name
            status = read_status(run)
            if sig == signal.SIGKILL:
                assert procs[name].returncode == -signal.SIGKILL
            else:
                assert procs[name].returncode == 128 + sig, (name, procs[name].returncode, err)
                assert "Traceback" not in err
                assert status["status"] == "interrupted" and status["step"] >= targets[name], status
                with safe_open(str(run / "checkpoint.safetensors"), framework="pt") as fh:
                    assert int(fh.metadata()["step"]) == status["step"]
            reached[name] = status["step"]

        # The uninterrupted reference, long enough that every victim still has steps to go.
        total = max(STEPS, max(reached.values()) + 8)
        assert invoke(*args_with_steps(total), "--out", tmp_path / "ref").exit_code == 0
        ref = load_file(str(tmp_path / "ref" / "model.safetensors"))
        for name in SIGNALS:
            run = tmp_path / name
            # The kill -9 victim resumes at once: the kernel dropped its lock.
            res = invoke("train", "--resume", run, "--steps", total)
            assert res.exit_code == 0, (name, res.output)
            assert read_status(run)["status"] == "complete"
            got = load_file(str(run / "model.safetensors"))
            assert got.keys() == ref.keys()
            assert all(torch.equal(got[k], ref[k]) for k in ref), f"{name}: resumed weights differ from the uninterrupted run"
            steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
            assert steps == list(range(1, total + 1)), name
            assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
