"""The CLI through click's CliRunner and through the installed console script."""
import json
import os
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner

import infovae
from infovae.cli.main import cli

FAST = ["--steps", "6", "--batch-size", "64", "-z", "3", "-o", "encoder.hidden=32", "-o", "decoder.hidden=32", "--quiet"]


def invoke(*args, code=0):
    """Run the CLI in-process; the exit code must be ``code`` (0 unless a test expects a failure)."""
    res = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert res.exit_code == code, (args, res.exit_code, res.output)
    return res


def test_version_and_help():
    assert infovae.__version__ in invoke("--version").output
    out = invoke("-h").output
    for command in ("train", "sample", "evaluate", "plugins", "two-sample", "bench"):
        assert command in out
    assert "-o path=" not in out and "-o dataset.path=" in out
    for command in ("train", "sample", "evaluate", "plot", "plugins", "two-sample", "bench"):
        res = invoke(command, "--help")
        assert res.exit_code == 0 and "Examples:" in res.output, command


def test_plugins_json_lists_every_kind(registry):
    out = json.loads(invoke("plugins", "--json").stdout)
    assert {"divergences", "encoders", "decoders", "samplers", "datasets", "metrics", "loggers"} <= set(out["plugins"])
    assert {"kl", "mlp", "bernoulli-mlp", "ancestral", "digits", "nll"} <= {p["name"] for ps in out["plugins"].values() for p in ps}
    only = json.loads(invoke("plugins", "--kind", "encoder", "--json").stdout)
    assert list(only["plugins"]) == ["encoders"]


def test_plugins_show(registry):
    res = invoke("plugins", "show", "mlp", "--kind", "encoders", "--json")
    info = json.loads(res.stdout)
    assert info["name"] == "mlp" and any(o["name"] == "hidden" for o in info["options"])
    table = invoke("plugins", "show", "digits").output
    assert "digits" in table and "options" in table
    res = CliRunner().invoke(cli, ["plugins", "show", "digts"])
    assert res.exit_code != 0 and "Did you mean 'digits'" in res.output


def test_train_sample_evaluate_resume(registry, tmp_path):
    run = tmp_path / "run"
    res = invoke("train", "-r", "kl=1", *FAST, "--out", run, "--json")
    summary = json.loads(res.stdout)
    assert summary["status"] == "complete" and summary["step"] == 6
    res = invoke("sample", run, "--out", tmp_path / "a.png", "--json")
    assert json.loads(res.stdout)["shape"] == [64, 1, 8, 8]
    assert (tmp_path / "a.png").stat().st_size > 0
    invoke("sample", run, "--sampler", "markov-chain", "-o", "markov-chain.steps=3", "-o", "markov-chain.return_chain=true",
           "-n", "4", "--out", tmp_path / "c.png")
    from PIL import Image

    with Image.open(tmp_path / "c.png") as im:  # one chain of 4 states per row: 4 columns of 8 px (+ padding)
        assert im.size[0] < im.size[1] * 2
    invoke("sample", run, "--sampler", "reconstruct", "-n", "5", "--out", tmp_path / "r.npy")
    import numpy as np

    arr = np.load(tmp_path / "r.npy", allow_pickle=False)
    assert arr.shape == (10, 1, 8, 8) and arr.dtype == np.uint8 and set(np.unique(arr)) <= {0, 1}
    rep = json.loads(invoke("evaluate", run, "--json").stdout)
    m = rep["metrics"]
    assert {"reconstruction", "kl", "mmd-prior", "logdet-cov", "mutual-information", "active-units"} <= set(m)
    assert m["mutual-information"]["value"] <= m["mutual-information"]["log_M"] + 1e-9
    assert (run / "evaluation.json").exists()
    res = invoke("train", "--resume", run, "--steps", "9", "--json")
    assert json.loads(res.stdout)["step"] == 9
    rep = json.loads(invoke("evaluate", run, "--metrics", "nll", "-o", "nll.num_samples=7", "--json", "--no-save").stdout)
    assert rep["metrics"]["nll"]["num_samples"] == 7
    res = invoke("evaluate", run, "--metrics", "nll", "-o", "num_samples=7", code=1)
    assert "TARGET.KEY=VALUE" in res.output and "-o nll.num_samples=7" in res.output
    res = invoke("evaluate", run, "--metrics", "nll", "-o", "nl.num_samples=7", code=1)
    assert "Did you mean 'nll'" in res.output
    res = invoke("sample", run, "-o", "steps=3", code=1)
    assert "-o ancestral.steps=3" in res.output


def test_config_file_with_command_line_overrides(registry, tmp_path):
    cfg = tmp_path / "exp.toml"
    cfg.write_text(
        'divergence = {kl = 0.5}\nlatent_dim = 2\nsteps = 3\nbatch_size = 32\n'
        f'out = "{tmp_path / "from_config"}"\n[options.encoder]\nhidden = 16\n[options.decoder]\nhidden = 16\n'
    )
    invoke("train", "--config", cfg, "--steps", "4", "--quiet")
    spec = json.loads((tmp_path / "from_config" / "spec.json").read_text())
    assert spec["latent_dim"] == 2 and spec["trainer"]["steps"] == 4 and spec["trainer"]["batch_size"] == 32
    assert spec["divergences"] == [{"name": "kl", "options": {}, "weight": 0.5}]
    assert spec["encoder"]["options"]["hidden"] == 16


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["-p", "bernouli-mlp"], "Did you mean 'bernoulli-mlp'"),
        (["-o", "encoder.widht=3"], "no option 'widht'"),
        (["-o", "encoder.hidden=many"], "expected int"),
        (["-z", "0"], "latent dimension must be at least 1"),
        (["--batch-size", "5000"], "larger than the training split"),
        (["-r", "kl=-1"], "negative"),
        (["-r", "kl=abc"], "not a number"),
        (["-o", "mmd2.kernel=imq"], "add --divergence mmd2"),
        (["-o", "encodr.hidden=3"], "Did you mean 'encoder'"),
        (["-d", "digits", "-o", "dataset.kind=gray8", "-p", "bernoulli-mlp"], "models binary data, but data set 'digits' holds gray8"),
        (["-d", "binarized-mnist", "-o", "dataset.path=/nonexistent/file.npz"], "/nonexistent/file.npz"),
    ],
)
def test_bad_input_is_a_clear_error_before_any_work(registry, tmp_path, args, fragment):
    run = tmp_path / "run"
    default_divergence = [] if "-r" in args else ["-r", "kl=1"]
    res = CliRunner().invoke(cli, ["train", *default_divergence, *FAST, "--out", str(run), *args])
    assert res.exit_code != 0
    assert fragment in res.output, res.output
    assert "Traceback" not in res.output
    assert not run.exists() or not any(run.iterdir()), "nothing may be written"


def test_existing_run_is_refused_without_overwrite(registry, tmp_path):
    run = tmp_path / "run"
    invoke("train", "-r", "kl=1", *FAST, "--out", run)
    before = (run / "model.safetensors").read_bytes()
    res = CliRunner().invoke(cli, ["train", "-r", "kl=1", *FAST, "--out", str(run)])
    assert res.exit_code != 0 and "already holds a run" in res.output and "--resume" in res.output
    assert (run / "model.safetensors").read_bytes() == before
    res = invoke("train", "-r", "kl=1", *FAST, "--out", run, "--overwrite", "--json")
    assert json.loads(res.stdout)["status"] == "complete"
    res = CliRunner().invoke(cli, ["train", "--resume", str(run), "--lr", "0.1"])
    assert res.exit_code != 0 and "only --steps and --epochs" in res.output


def test_sample_and_evaluate_errors(registry, tmp_path):
    res = CliRunner().invoke(cli, ["sample", str(tmp_path / "nope")])
    assert res.exit_code != 0 and "does not exist" in res.output
    run = tmp_path / "run"
    invoke("train", "-r", "kl=1", *FAST, "--out", run)
    res = CliRunner().invoke(cli, ["sample", str(run), "--sampler", "markov-chian"])
    assert res.exit_code != 0 and "Did you mean 'markov-chain'" in res.output
    res = CliRunner().invoke(cli, ["evaluate", str(run), "--metrics", "nl"])
    assert res.exit_code == 1 and "Did you mean 'nll'" in res.output
    res = CliRunner().invoke(cli, ["sample", str(run), "--out", str(tmp_path / "x.gif")])
    assert res.exit_code != 0 and ".png" in res.output


def _console_script():
    exe = shutil.which("infovae") or os.path.join(os.path.dirname(sys.executable), "infovae")
    if not os.path.exists(exe):
        pytest.skip("console script 'infovae' is not installed")
    return exe


def test_installed_console_script_end_to_end(tmp_path):
    exe = _console_script()
    run = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFOVAE_")}
    p = subprocess.run([exe, "train", "-r", "kl=1", *FAST, "--out", str(run), "--json"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["status"] == "complete"
    p = subprocess.run([exe, "plugins", "--json"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert p.returncode == 0 and json.loads(p.stdout)["failed"] == []
    p = subprocess.run([exe, "train", "-p", "nope", "--out", str(tmp_path / "x")], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert p.returncode == 1 and "unknown decoder 'nope'" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["plugins"], ["plugins", "--json"], ["plugins", "show", "mlp"], ["train", "--help"]])
def test_listing_commands_do_not_import_torch(args):
    code = (
        "import sys\n"
        "from infovae.cli.main import cli\n"
        f"try:\n    cli.main(args={args!r}, prog_name='infovae', standalone_mode=False)\n"
        "except SystemExit:\n    pass\n"
        "sys.stdout.flush()\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr


def test_config_goes_through_clicks_default_map(registry, tmp_path):
    """Config values are converted and checked by click like flags; the key set is the command's options."""
    from infovae.cli.commands.train import config_keys, train

    keys = config_keys(train)
    assert {"epochs", "lr", "divergence", "options", "compile", "track", "out"} <= keys
    assert not keys & {"resume", "overwrite", "config_path", "as_json", "quiet"}
    bad = tmp_path / "bad.toml"
    bad.write_text('epochs = "many"\n')
    res = CliRunner().invoke(cli, ["train", "--config", str(bad), "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "epochs" in res.output and "many" in res.output and "Traceback" not in res.output
    bad.write_text('epocs = 3\n')
    res = CliRunner().invoke(cli, ["train", "--config", str(bad), "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "epocs" in res.output
    assert not (tmp_path / "r").exists()


def test_cli_defaults_come_from_trainer_config():
    from infovae.runs import TrainerConfig

    help_text = invoke("train", "--help").output
    tc = TrainerConfig()
    import re

    assert re.search(rf"--epochs INTEGER\s+\[default: {tc.epochs}\]", help_text), help_text
    assert re.search(rf"--batch-size INTEGER\s+\[default: {tc.batch_size}\]", help_text)


def test_train_pixelcnnpp_with_channel_dropout_then_sample(tmp_path):
    """The issue's typical command shape with the PixelCNN++ decoder on gray8 data (a uint8 .npy), then a
    sample from the run: the spec's stored options must build the model again."""
    import numpy as np

    data = tmp_path / "g8.npy"
    np.save(data, np.random.default_rng(0).integers(0, 256, (32, 1, 8, 8), dtype=np.uint8))
    run = tmp_path / "run"
    invoke("train", "-d", "array", "-o", f"dataset.path={data}", "--decoder", "pixelcnnpp",
           "-o", "decoder.nr_filters=4", "-o", "decoder.dropout=0.5", "-o", "decoder.dropout_mode=channel",
           "--steps", "2", "--batch-size", "16", "-z", "2", "--quiet", "--out", run)
    spec = json.loads((run / "spec.json").read_text())
    assert spec["decoder"]["options"]["dropout_mode"] == "channel"
    invoke("sample", run, "-n", "2", "--out", tmp_path / "s.npy")
    assert np.load(tmp_path / "s.npy", allow_pickle=False).shape[0] == 2
    res = invoke("train", "-d", "array", "-o", f"dataset.path={data}", "--decoder", "pixelcnnpp",
                 "-o", "decoder.dropout_mode=spatial", "--steps", "1", "--out", tmp_path / "bad", code=1)
    assert "dropout_mode" in res.output and "Traceback" not in res.output and not (tmp_path / "bad").exists()
