"""Property-based CLI fuzzer: hostile argument lists and config files for train, evaluate, sample, plot.

The property (issue 9): every invocation exits 0, or exits non-zero with exactly one line on
stderr/stdout that starts with "Error:", and no Python traceback. Runs are short (2 steps, tiny
networks), in-process through click's CliRunner, derandomized so CI sees the same examples.
INFOVAE_FUZZ_EXAMPLES scales the number of examples (default 200 for train, 80 for the readers).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings, strategies as st

from infovae.cli.main import cli

N_TRAIN = int(os.environ.get("INFOVAE_FUZZ_EXAMPLES", "200"))
N_READERS = max(20, N_TRAIN * 2 // 5)


def fuzz_settings(n):
    return settings(max_examples=n, derandomize=True, deadline=None, database=None, suppress_health_check=list(HealthCheck))

# A short valid run; the fuzzed items come after it and override any of it.
BASE = ["train", "--steps", "2", "-z", "2", "-o", "encoder.hidden=8", "-o", "decoder.hidden=8", "-r", "kl=1", "--quiet"]

NUMBERS = ["0", "-1", "1", "2", "3", "1.5", "inf", "-inf", "nan", "1e20", "1e-300", "2147483648", "18446744073709551616",
           "-9223372036854775809", "abc", "", " ", "0x10", "1_000"]
SMALL_INTS = ["1", "2", "3"]


def flag(name, values):
    return st.tuples(st.just(name), st.sampled_from(values)).map(list)


# flag -> hostile and valid values (also used by benchmarks/fault_campaign.py).
TRAIN_FLAGS = {
    "--lr": NUMBERS + ["1e-3", "0.01"],
    "--weight-decay": NUMBERS + ["0.1"],
    "--seed": NUMBERS + ["9223372036854775807", "9223372036854775808"],
    "-z": NUMBERS[:5] + ["2147483648", "1000000000000", "abc"],
    "--batch-size": ["0", "-3", "1", "7", "64", "5000", "1.5", "x"],
    "--steps": ["0", "-5", "1", "2", "3", "x", "1e3"],
    "--epochs": ["0", "-3", "x"],
    "--log-every": ["0", "-1", "1", "x"],
    "--checkpoint-every": ["0", "-1", "1", "2"],
    "--sample-every": ["0", "-1", "1"],
    "--device": ["cpu", "auto", "cuda", "cuda:7", "tpu", ""],
    "--amp": ["none", "bf16", "fp8"],
    "--track": ["", "mutual-information", "nope", "class-distribution", ",,,"],
    "-r": ["kl=1", "kl", "mmd=100", "mmd=nan", "mmd=inf", "mmd=-1", "mmd=1e400", "none", "stein=1", "adversarial=1",
           "=", "kl=", "nope=1", "kl=1=2"],
    "-o": ["mmd.bandwidth=1e-300", "mmd.bandwidth=median", "mmd.bandwidth=-1", "mmd.bandwidth=1e300", "mmd.bandwidth=",
           "mmd.prior_samples=100000000", "mmd.prior_samples=-1", "mmd.kernel=imq", "mmd.kernel=nope",
           "stein.bandwidth=0", "encoder.hidden=0", "encoder.hidden=-1", "encoder.hidden=abc", "decoder.hidden=1e9",
           "encoder.nope=1", "dataset.kind=gray8", "dataset.path=/nonexistent", "x", "a.b=c", "=", "encoder.=1",
           "adversarial.lr=inf", "adversarial.layers=-1"],
    "-e": ["mlp", "conv", "nope", ""],
    "-p": ["bernoulli-mlp", "pixelcnn", "nope", ""],
    "-d": ["digits", "mnist", "binarized-mnist", "image-folder", "cifar10", "nope"],
}
# --compile is left out: a torch.compile costs ~15 s per example; its value parsing is covered by config files.
TRAIN_SINGLES = [["--no-compile"], ["--overwrite"], ["--json"], ["--nope"], ["extra-arg"], ["-z"]]
TRAIN_ITEMS = st.one_of(*[flag(name, values) for name, values in TRAIN_FLAGS.items()], st.sampled_from(TRAIN_SINGLES))

CONFIG_VALUES = st.one_of(
    st.integers(min_value=-(2**64), max_value=2**64), st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
    st.sampled_from(["fast", "abc", "mlp", "kl=1", "false", "", "cpu", "none", "bf16", "1"]),
    st.lists(st.sampled_from(["mlp", "kl=1", 1, 2.5, True]), max_size=3),
    st.just({"kl": 1}), st.just({"mmd": "x"}), st.just({"encoder": {"hidden": 8}}), st.just({"encoder": 5}),
    st.just({"mmd": {"bandwidth": 1e-300}}),
)
CONFIG_KEYS = ["dataset", "encoder", "decoder", "divergence", "latent_dim", "batch_size", "epochs", "steps", "lr", "seed",
               "device", "amp", "compile", "log_every", "sample_every", "checkpoint_every", "options", "weight_decay", "track",
               "nope"]


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if v != v else ("inf" if v == float("inf") else "-inf" if v == float("-inf") else repr(v))
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(v)


CONFIGS = st.one_of(
    st.dictionaries(st.sampled_from(CONFIG_KEYS), CONFIG_VALUES, max_size=4).map(
        lambda d: "".join(f"{k} = {toml_value(v)}\n" for k, v in d.items()).encode()),
    st.sampled_from([b"\xff\xfe\x00bad", b"steps = ", b"[options]\nencoder = 5\n", b"options = 5\n", b"lr = \"fast\"\n",
                     b"compile = \"false\"\n", b"batch_size = 1.5\n", b"divergence = 5\n", b"encoder = [\"mlp\"]\n",
                     b"latent_dim = \"abc\"\n", b"a = [" * 3000]),
)


def check_outcome(res) -> None:
    """Exit 0, or non-zero with a single line that starts with 'Error:', and no traceback."""
    text = res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), f"{type(res.exception).__name__}: {res.exception}"
    assert "Traceback" not in text, text
    if res.exit_code != 0:
        lines = [line for line in text.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("Error:"), text


@pytest.fixture(scope="module")
def fuzz_dir():
    d = Path(tempfile.mkdtemp(prefix="infovae-fuzz-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@fuzz_settings(N_TRAIN)
@given(items=st.lists(TRAIN_ITEMS, max_size=4), config=st.none() | CONFIGS, data=st.data())
def test_train_fuzz_exits_cleanly(fuzz_dir, items, config, data):
    case = Path(tempfile.mkdtemp(dir=fuzz_dir))
    args = list(BASE)
    if config is not None:
        (case / "c.toml").write_bytes(config)
        args += ["--config", str(case / "c.toml")]
    for item in items:
        args += item
    args += ["--out", str(case / "run")]
    res = CliRunner().invoke(cli, args)
    check_outcome(res)
    # Nothing is ever written outside --out (the config file is the only other entry).
    assert {p.name for p in case.iterdir()} <= {"run", "c.toml"}
    shutil.rmtree(case, ignore_errors=True)


@pytest.fixture(scope="module")
def trained_run(fuzz_dir):
    run = fuzz_dir / "trained"
    res = CliRunner().invoke(cli, [*BASE, "--out", str(run)])
    assert res.exit_code == 0, res.output
    return run


READER_ITEMS = {
    "evaluate": st.one_of(
        flag("--metrics", ["kl", "reconstruction", "mmd-prior", "nope", "", ",", "nll", "class-distribution"]),
        flag("-o", ["nll.num_samples=2", "nll.num_samples=0", "kl.x=1", "num_samples=-1", "x", "=", "nope.k=1"]),
        flag("--split", ["test", "train", "nope", ""]),
        flag("--limit", ["0", "-1", "1", "16", "x"]),
        flag("--batch-size", ["0", "1", "7", "x"]),
        flag("--seed", ["0", "-1", "18446744073709551616", "x"]),
        flag("--device", ["cpu", "cuda", "nope"]),
        st.sampled_from([["--json"], ["--no-save"], ["--nope"]]),
    ),
    "sample": st.one_of(
        flag("--sampler", ["ancestral", "markov-chain", "reconstruct", "nope", ""]),
        flag("-o", ["markov-chain.steps=2", "markov-chain.steps=-1", "markov-chain.return_chain=true", "ancestral.x=1", "x", "nope.k=1"]),
        flag("-n", ["0", "1", "4", "-1", "100000000000", "x"]),
        flag("--seed", ["0", "-1", "18446744073709551616"]),
        flag("--split", ["test", "nope"]),
        flag("--out", ["a.png", "a.npy", "a.safetensors", "a.txt", "missing/dir/a.png", "file/under.png", ""]),
        st.sampled_from([["--json"], ["--fast"], ["--no-fast"]]),
    ),
    "plot": st.one_of(
        flag("-n", ["0", "1", "4", "x"]),
        flag("-o", ["markov-chain.steps=0", "markov-chain.steps=2", "x", "nope.k=1"]),
        flag("--seed", ["0", "-1", "18446744073709551616"]),
        flag("--out", ["f.png", "file/under.png", ""]),
        st.sampled_from([["--no-samples"], ["--json"]]),
    ),
}


@fuzz_settings(N_READERS)
@given(command=st.sampled_from(sorted(READER_ITEMS)), data=st.data())
def test_reader_fuzz_exits_cleanly(fuzz_dir, trained_run, command, data):
    case = Path(tempfile.mkdtemp(dir=fuzz_dir))
    (case / "file").write_text("a file, not a directory\n")
    items = data.draw(st.lists(READER_ITEMS[command], max_size=3))
    args = [command, str(trained_run)]
    if command == "evaluate":
        args += ["--limit", "32", "--metrics", "kl,reconstruction", "--no-save"]
    if command == "plot":
        args += ["-n", "4", "-o", "markov-chain.steps=1"]
    for name, *value in items:
        if name == "--out" and value and value[0]:
            value = [str(case / value[0])]
        args += [name, *value]
    if command != "evaluate" and "--out" not in args:
        args += ["--out", str(case / ("x.png"))]
    res = CliRunner().invoke(cli, args)
    check_outcome(res)
    shutil.rmtree(case, ignore_errors=True)
