"""Real data (../shared/data): a few hundred steps on binarized MNIST lower the test NLL."""
import json

import pytest
from click.testing import CliRunner

from infovae.cli.main import cli

pytestmark = pytest.mark.slow


def test_training_lowers_test_nll_on_binarized_mnist(registry, shared_data, tmp_path):
    path = shared_data / "binarized_mnist.npz"
    if not path.exists():
        pytest.skip(f"{path} not found")
    run = tmp_path / "run"
    base = ["train", "-d", "binarized-mnist", "-o", f"dataset.path={path}", "-r", "mmd=1000", "-z", "5",
            "--batch-size", "100", "--out", str(run), "--quiet", "--json"]
    res = CliRunner().invoke(cli, base + ["--steps", "1"], catch_exceptions=False)
    assert json.loads(res.stdout)["status"] == "complete"

    def nll():
        res = CliRunner().invoke(cli, ["evaluate", str(run), "--metrics", "nll", "-o", "nll.num_samples=50",
                                       "--limit", "1000", "--json", "--no-save"], catch_exceptions=False)
        return json.loads(res.stdout)["metrics"]

    before = nll()
    CliRunner().invoke(cli, ["train", "--resume", str(run), "--steps", "400", "--quiet"], catch_exceptions=False)
    after = nll()
    # A 1-step model is near 543 nats (784 * log 2); 400 steps must take off well over 100 nats,
    # far beyond the importance-sampling standard errors (about 1 nat here).
    drop = before["nll"]["value"] - after["nll"]["value"]
    assert drop > 100 + 3 * (before["nll"]["std_err"] + after["nll"]["std_err"])
