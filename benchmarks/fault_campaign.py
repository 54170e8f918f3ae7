"""Fault campaign of issue 9, re-measured: signals at random steps, a CLI fuzzer, single hostile
values, crafted runs, files touched outside a run, two concurrent writers.

Prints the table (category, trials, passed, failed) as Markdown, and failures below it.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/fault_campaign.py [--fuzz 1000] [--kills 10] [--graceful 5] [--writers 5]

Uses the pools and damage tables of the test suite (tests/test_cli_fuzz.py, tests/test_run_safety.py).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import torch  # noqa: E402
from click.testing import CliRunner  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

import test_cli_fuzz as fuzz  # noqa: E402
import test_run_safety as safety  # noqa: E402
from infovae.cli.main import cli  # noqa: E402
from infovae.runs import read_status  # noqa: E402

STEPS = 120
TRAIN = ["train", "--steps", str(STEPS), "-z", "3", "-o", "encoder.hidden=16", "-o", "decoder.hidden=16", "-r", "mmd=10",
         "--batch-size", "64", "--log-every", "1", "--checkpoint-every", "4", "--quiet"]


def clean_outcome(res) -> str:
    """'' when exit 0 or one 'Error:' line without traceback; else what went wrong."""
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        return f"exception {type(res.exception).__name__}: {res.exception}"
    if "Traceback" in res.output:
        return "traceback"
    if res.exit_code != 0:
        lines = [line for line in res.output.splitlines() if line.strip()]
        if len(lines) != 1 or not lines[0].startswith("Error:"):
            return f"{len(lines)} lines: {res.output[:200]!r}"
    return ""


def invoke(args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def spawn(args, out):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "infovae.cli.main", *args, "--out", str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def last_step(run):
    try:
        lines = (Path(run) / "metrics.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return 0
    for line in reversed(lines):
        try:
            return json.loads(line)["step"]
        except (ValueError, KeyError):
            pass
    return 0


def signal_trials(work, sig, n, rng, ref, batch=4):
    """n processes get ``sig`` at a random step; pass = right exit, status, bitwise resume, metrics 1..N."""
    failures = []
    for b0 in range(0, n, batch):
        jobs = []
        for i in range(b0, min(n, b0 + batch)):
            run = work / f"{sig.name}-{i}"
            jobs.append((run, rng.randint(3, STEPS - 20), spawn(TRAIN, run)))
        for run, target, p in jobs:
            while last_step(run) < target and p.poll() is None:
                time.sleep(0.002)
            if rng.random() < 0.5 and sig == signal.SIGKILL:  # sometimes land inside a checkpoint write
                while not list(run.glob(".checkpoint.safetensors.*.tmp")) and p.poll() is None:
                    time.sleep(0.0005)
            p.send_signal(sig)
        for run, target, p in jobs:
            _, err = p.communicate()
            why = ""
            if p.returncode == 0:
                why = "finished before the signal"
            elif sig != signal.SIGKILL and p.returncode != 128 + sig:
                why = f"exit {p.returncode}: {err[-200:]}"
            elif sig != signal.SIGKILL and read_status(run).get("status") != "interrupted":
                why = f"status {read_status(run)}"
            else:
                res = invoke(["train", "--resume", run, "--quiet"])
                got = load_file(str(run / "model.safetensors")) if (run / "model.safetensors").exists() else {}
                steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
                if res.exit_code != 0:
                    why = f"resume failed: {res.output.strip()}"
                elif got.keys() != ref.keys() or not all(torch.equal(got[k], ref[k]) for k in ref):
                    why = "weights differ after resume"
                elif steps != list(range(1, STEPS + 1)):
                    why = "metrics are not exactly steps 1..N"
            if why:
                failures.append(f"{sig.name} at step {target}: {why}")
    return n, failures


def fuzz_trials(work, n, rng):
    failures = []
    singles = fuzz.TRAIN_SINGLES
    for i in range(n):
        case = work / f"fuzz{i}"
        case.mkdir()
        args = list(fuzz.BASE)
        if rng.random() < 0.3:
            cfg = {}
            for key in rng.sample(fuzz.CONFIG_KEYS, rng.randint(1, 3)):
                cfg[key] = rng.choice([rng.randint(-2**64, 2**64), rng.choice([1.5, float("nan"), float("inf"), 1e300]), rng.random() < 0.5,
                                       rng.choice(["fast", "abc", "mlp", "kl=1", "false", ""]), ["mlp", 1], {"kl": 1}, {"encoder": 5}])
            (case / "c.toml").write_text("".join(f"{k} = {fuzz.toml_value(v)}\n" for k, v in cfg.items()))
            args += ["--config", case / "c.toml"]
        for _ in range(rng.randint(0, 4)):
            if rng.random() < 0.15:
                args += rng.choice(singles)
            else:
                name = rng.choice(sorted(fuzz.TRAIN_FLAGS))
                args += [name, rng.choice(fuzz.TRAIN_FLAGS[name])]
        args += ["--out", case / "run"]
        why = clean_outcome(invoke(args))
        outside = {p.name for p in case.iterdir()} - {"run", "c.toml"}
        if why or outside:
            failures.append(f"{' '.join(map(str, args[len(fuzz.BASE):]))}: {why or f'wrote {outside}'}")
        shutil.rmtree(case, ignore_errors=True)
    return n, failures


def single_value_trials(work):
    """Every hostile value of the fuzzer's pools, one at a time, on a short valid run."""
    failures, n = [], 0
    for name, values in fuzz.TRAIN_FLAGS.items():
        for value in values:
            n += 1
            case = work / f"single{n}"
            why = clean_outcome(invoke([*fuzz.BASE, name, value, "--out", case]))
            if why:
                failures.append(f"{name} {value!r}: {why}")
    return n, failures


def crafted_trials(work):
    pristine = work / "pristine"
    assert invoke([*fuzz.BASE, "--steps", "2", "--checkpoint-every", "1", "--out", pristine]).exit_code == 0
    failures, n = [], 0
    for name, damage in {**safety.SPEC_DAMAGE}.items():
        for cmd in (["sample", "-n", "2", "--out", work / "s.png"], ["evaluate", "--metrics", "kl", "--no-save"], ["plot", "--no-samples", "--out", work / "f.png"],
                    ["train", "--resume"]):
            n += 1
            run = work / f"crafted{n}"
            shutil.copytree(pristine, run)
            damage(run)
            res = invoke([cmd[0], *cmd[1:], run] if cmd[0] == "train" else [cmd[0], run, *cmd[1:]])
            # plot --no-samples reads only spec.json's format and metrics.jsonl: exit 0 is fine there.
            ok = cmd[0] == "plot" or (res.exit_code != 0 and "corrupt" in res.output)
            why = clean_outcome(res) or ("" if ok else f"exit {res.exit_code}: {res.output.strip()[:120]}")
            if why:
                failures.append(f"spec {name} / {cmd[0]}: {why}")
    for name, damage in safety.CHECKPOINT_DAMAGE.items():
        n += 1
        run = work / f"crafted{n}"
        shutil.copytree(pristine, run)
        safety._rewrite_checkpoint(run, damage)
        res = invoke(["train", "--resume", run, "--steps", "3"])
        why = clean_outcome(res) or ("" if res.exit_code != 0 and "corrupt" in res.output else f"exit {res.exit_code}")
        if why:
            failures.append(f"checkpoint {name}: {why}")
    return n, failures


def outside_trials(work):
    """--overwrite on directories with foreign files, symlinks out of the run: count files touched outside."""
    failures, n = [], 0

    def snap(d):
        return {p: (p.read_bytes() if p.is_file() and not p.is_symlink() else None) for p in sorted(Path(d).rglob("*"))}

    cases = []
    d = work / "o1"
    (d / "data").mkdir(parents=True)
    (d / "notes.txt").write_text("notes")
    (d / "metrics.jsonl").write_text("")
    cases.append(("issue repro", d, [*fuzz.BASE, "--out", d, "--overwrite"], d))
    d = work / "o2"
    assert invoke([*fuzz.BASE, "--out", d]).exit_code == 0
    (d / "mine.txt").write_text("x")
    cases.append(("run + foreign file", d, [*fuzz.BASE, "--out", d, "--overwrite"], d))
    for cmd in (["sample", "-n", "2"], ["train", "--resume", "--steps", "4"]):
        d = work / f"o3{cmd[0]}"
        elsewhere = work / f"elsewhere-{cmd[0]}"
        elsewhere.mkdir()
        assert invoke([*fuzz.BASE, "--out", d]).exit_code == 0
        shutil.rmtree(d / "samples")
        (d / "samples").symlink_to(elsewhere)
        args = [cmd[0], cmd[1], d, *cmd[2:]] if cmd[0] == "train" else [cmd[0], d, *cmd[1:]]
        cases.append((f"samples link / {cmd[0]}", d, args, elsewhere))
    d = work / "o4"
    d.mkdir()
    victim = work / "victim.txt"
    victim.write_text("precious")
    (d / "metrics.jsonl").symlink_to(victim)
    cases.append(("dangling metrics link", d, [*fuzz.BASE, "--out", d], victim.parent))
    cases.append(("dangling metrics link, --overwrite", d, [*fuzz.BASE, "--out", d, "--overwrite"], victim.parent))
    for name, run, args, watched in cases:
        n += 1
        before = {p: v for p, v in snap(watched).items() if not str(p).startswith(str(run) + os.sep) or watched == run}
        res = invoke(args)
        after = {p: v for p, v in snap(watched).items() if not str(p).startswith(str(run) + os.sep) or watched == run}
        if clean_outcome(res) or before != after or res.exit_code == 0:
            failures.append(f"{name}: exit {res.exit_code}, touched {sorted(set(before) ^ set(after))[:3]}")
    return n, failures


def writer_trials(work, n):
    """Two processes train into one --out at once: exactly one may write; its metrics are steps 1..N."""
    failures = []
    for i in range(n):
        run = work / f"w{i}"
        a, b = spawn(TRAIN, run), spawn(TRAIN, run)
        ra, rb = a.wait(), b.wait()
        steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] if (run / "metrics.jsonl").exists() else []
        if sorted([ra, rb]) != [0, 1] or steps != list(range(1, STEPS + 1)):
            failures.append(f"writers exit {ra}/{rb}, {len(steps)} metric lines")
    return n, failures


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fuzz", type=int, default=1000)
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--graceful", type=int, default=5)
    ap.add_argument("--writers", type=int, default=5)
    ap.add_argument("--seed", type=int, default=9)
    a = ap.parse_args()
    torch.set_num_threads(1)
    rng = random.Random(a.seed)
    work = Path(tempfile.mkdtemp(prefix="infovae-campaign-"))
    try:
        assert invoke([*TRAIN, "--out", work / "ref"]).exit_code == 0
        ref = load_file(str(work / "ref" / "model.safetensors"))
        rows = []
        t0 = time.time()
        rows.append(("kill -9 at random steps, bitwise resume", *signal_trials(work, signal.SIGKILL, a.kills, rng, ref)))
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            rows.append((f"{sig.name}: exit {128 + sig}, status interrupted, bitwise resume", *signal_trials(work, sig, a.graceful, rng, ref)))
        rows.append(("CLI fuzzer (random argument lists + config files): no traceback, one line", *fuzz_trials(work, a.fuzz, rng)))
        rows.append(("single hostile values (every fuzzer value alone)", *single_value_trials(work)))
        rows.append(("crafted runs and checkpoints: one line 'corrupt', nothing written", *crafted_trials(work)))
        rows.append(("files outside the run touched (--overwrite, symlinks)", *outside_trials(work)))
        rows.append(("two writers into one --out: runs mixed", *writer_trials(work, a.writers)))
        print(f"| category | trials | passed | failed |\n|---|---:|---:|---:|")
        for name, n, fails in rows:
            print(f"| {name} | {n} | {n - len(fails)} | {len(fails)} |")
        print(f"\n{time.time() - t0:.0f} s; torch {torch.__version__}; seed {a.seed}")
        for name, n, fails in rows:
            for f in fails[:10]:
                print(f"- {name}: {f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
