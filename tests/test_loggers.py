"""Experiment loggers: the plugin kind, the built-ins read back through TensorBoard's and
MLflow's own APIs, failure isolation, and the clear error for a missing extra."""
from __future__ import annotations

import json
import math
import sys
import warnings

import pytest
from click.testing import CliRunner

from infovae import Logger, hookimpl
from infovae.cli.main import cli
from infovae.loggers import LoggerSet, LoggerWarning, evaluation_scalars, flatten_params
from infovae.testing import check_logger
from infovae.testing.loggers import EVALUATION, SCALARS

TRAIN = ["train", "--steps", "42", "--batch-size", "64", "--log-every", "7", "--track", "mutual-information", "--quiet", "--json"]


def tb_read(log_dir):
    """Everything TensorBoard's own EventAccumulator finds in an event directory."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    scalars = {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in tags["scalars"]}
    params = {}
    content = acc.PluginTagToContent("hparams")
    for raw in content.values():
        data = plugin_data_pb2.HParamsPluginData.FromString(raw)
        if data.HasField("session_start_info"):
            for k, v in data.session_start_info.hparams.items():
                params[k] = v.string_value if v.HasField("string_value") else (v.bool_value if v.HasField("bool_value") else v.number_value)
    return {"scalars": scalars, "params": {k: (int(v) if isinstance(v, float) and v.is_integer() else v) for k, v in params.items()},
            "images": list(tags["images"]), "text": list(tags["tensors"])}


def mlflow_read(run_dir):
    """Metrics, params and artifacts of the MLflow run a run directory points to, through MlflowClient."""
    from mlflow.tracking import MlflowClient

    state = json.loads((run_dir / "mlflow_run.json").read_text())
    client = MlflowClient(tracking_uri=state["tracking_uri"])
    run = client.get_run(state["run_id"])
    from infovae.plugins.loggers.mlflow import metric_key

    names = {metric_key(k): k for k in list(run.data.metrics)}
    known = {metric_key(k): k for _, sc in SCALARS for k in sc} | {metric_key(k): k for k in evaluation_scalars(EVALUATION)}
    scalars = {}
    for stored in run.data.metrics:
        hist = sorted(client.get_metric_history(run.info.run_id, stored), key=lambda m: m.step)
        scalars[known.get(stored, names[stored])] = [(m.step, m.value) for m in hist]

    def walk(path=""):
        for f in client.list_artifacts(run.info.run_id, path or None):
            yield from (walk(f.path) if f.is_dir else [f.path])

    return {"scalars": scalars, "params": dict(run.data.params), "images": list(walk()), "status": run.info.status, "client": client,
            "run_id": run.info.run_id}


def test_loggers_are_a_plugin_kind(registry):
    assert {"jsonl", "tensorboard", "mlflow"} <= set(registry.names("loggers"))
    assert registry.info("logger", "tensorboard").source.builtin
    opts = {o.name for o in registry.info("loggers", "mlflow").options}
    assert {"tracking_uri", "experiment", "run_name"} <= opts


def test_tensorboard_logger_contract(tmp_path):
    from infovae.plugins.loggers.tensorboard import TensorBoardLogger

    check_logger(TensorBoardLogger, tmp_path, {"flush_secs": 1.0}, read_back=lambda d: tb_read(d / "tensorboard"))


def test_mlflow_logger_contract(tmp_path):
    from infovae.plugins.loggers.mlflow import MlflowLogger

    check_logger(MlflowLogger, tmp_path, {"experiment": "contract"}, read_back=mlflow_read)


def test_a_logger_that_breaks_the_contract_is_caught(tmp_path):
    class Forgetful(Logger):  # stores nothing: the read-back must notice
        def __init__(self, run_dir):
            pass

    with pytest.raises(AssertionError, match="not stored"):
        check_logger(Forgetful, tmp_path, read_back=lambda d: {"scalars": {}, "params": {}, "images": []})


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory):
    """A run trained with both trackers, then evaluated (which logs to them too)."""
    run = tmp_path_factory.mktemp("tracked") / "run"
    tb_dir = run.parent / "tb"
    res = CliRunner().invoke(cli, TRAIN + ["--logger", "tensorboard", "--logger", "mlflow", "-o", f"tensorboard.dir={tb_dir}",
                                           "-o", "mlflow.experiment=tests", "--out", str(run)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(cli, ["evaluate", str(run), "--metrics", "reconstruction,kl,active-units", "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    lines = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    return run, tb_dir, lines, json.loads((run / "evaluation.json").read_text())


def test_tensorboard_shows_the_training_run(tracked_run):
    run, tb_dir, lines, evaluation = tracked_run
    got = tb_read(tb_dir)
    for key in ("train/loss", "train/reconstruction", "train/mmd", "valid/loss", "track/mutual-information"):
        expected = [(r["step"], r[key]) for r in lines if key in r]
        assert expected, key
        assert [s for s, _ in got["scalars"][key]] == [s for s, _ in expected]
        assert all(math.isclose(a, b, rel_tol=1e-6) for (_, a), (_, b) in zip(got["scalars"][key], expected))
    spec = json.loads((run / "spec.json").read_text())
    assert got["params"]["latent_dim"] == spec["latent_dim"] and got["params"]["decoder.name"] == spec["decoder"]["name"]
    assert "samples/final" in got["images"]
    step = evaluation["step"]
    assert got["scalars"]["eval/reconstruction"] == [(step, pytest.approx(evaluation["metrics"]["reconstruction"]["value"], rel=1e-6))]
    assert got["scalars"]["eval/active-units"][0][1] == evaluation["metrics"]["active-units"]["value"]


def test_mlflow_shows_the_training_run(tracked_run):
    run, _, lines, evaluation = tracked_run
    got = mlflow_read(run)
    assert got["status"] == "FINISHED"
    for key in ("train/loss", "valid/reconstruction", "track/mutual-information", "track/mutual-information/log_M"):
        expected = [(r["step"], r[key]) for r in lines if key in r]
        assert [s for s, _ in got["scalars"][key]] == [s for s, _ in expected], key
        assert all(math.isclose(a, b, rel_tol=1e-6) for (_, a), (_, b) in zip(got["scalars"][key], expected))
    spec = json.loads((run / "spec.json").read_text())
    assert got["params"]["trainer.lr"] == str(spec["trainer"]["lr"]) and got["params"]["dataset.name"] == "digits"
    assert any(p.startswith("samples/final") and p.endswith(".png") for p in got["images"])
    assert got["scalars"]["eval/kl"][0][1] == pytest.approx(evaluation["metrics"]["kl"]["value"], rel=1e-6)
    local = got["client"].download_artifacts(got["run_id"], "evaluation.json", str(run.parent))
    assert json.loads(open(local).read())["metrics"] == evaluation["metrics"]


def test_unreachable_tracking_server_warns_once_and_training_completes(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    run = tmp_path / "run"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = CliRunner().invoke(cli, TRAIN + ["--logger", "mlflow", "-o", "mlflow.tracking_uri=http://127.0.0.1:9", "--out", str(run)],
                                 catch_exceptions=False)
    assert res.exit_code == 0, res.output
    mine = [w for w in caught if issubclass(w.category, LoggerWarning)]
    assert len(mine) == 1 and "'mlflow'" in str(mine[0].message), [str(w.message) for w in mine]
    assert json.loads(res.stdout)["status"] == "complete"
    assert {"model.safetensors", "checkpoint.safetensors", "metrics.jsonl", "spec.json", "status.json"} <= {p.name for p in run.iterdir()}
    assert json.loads((run / "status.json").read_text())["status"] == "complete"
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 6  # 42 steps, a line every 7


class DiskFull(Logger):
    """An in-process tracker whose disk is full from its second write on (a real OSError, ENOSPC)."""

    calls = 0

    def __init__(self, run_dir):
        pass

    def log_scalars(self, step, scalars):
        DiskFull.calls += 1
        if DiskFull.calls > 1:
            raise OSError(28, "No space left on device")


class DiskFullPlugin:
    @hookimpl
    def register_loggers(self, register):
        register("disk-full", DiskFull, summary="fails with ENOSPC")


def test_failing_logger_never_stops_training_or_loses_the_run(registry, tmp_path):
    registry.register_plugin(DiskFullPlugin(), name="disk-full-plugin")
    run = tmp_path / "run"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = CliRunner().invoke(cli, TRAIN + ["--logger", "disk-full", "--out", str(run)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    mine = [str(w.message) for w in caught if issubclass(w.category, LoggerWarning)]
    assert len(mine) == 1 and "No space left on device" in mine[0]
    assert DiskFull.calls == 2  # switched off after its failure: never called again
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 6


def test_missing_extra_is_one_clear_line_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # makes 'import tensorboard' fail, as when it is not installed
    run = tmp_path / "run"
    res = CliRunner().invoke(cli, ["train", "--steps", "5", "--logger", "tensorboard", "--out", str(run)])
    assert res.exit_code == 1
    assert "pip install 'infovae[tensorboard]'" in res.output and "Traceback" not in res.output
    assert not run.exists()


def test_logger_choice_errors(tmp_path):
    res = CliRunner().invoke(cli, ["train", "--steps", "5", "--logger", "tensorbord", "--out", str(tmp_path / "r")])
    assert res.exit_code == 1 and "Did you mean 'tensorboard'" in res.output
    res = CliRunner().invoke(cli, ["train", "--steps", "5", "-o", "tensorboard.dir=x", "--out", str(tmp_path / "r")])
    assert res.exit_code == 1 and "--logger tensorboard" in res.output
    res = CliRunner().invoke(cli, ["train", "--steps", "5", "--logger", "mlflow", "-o", "mlflow.colour=red", "--out", str(tmp_path / "r")])
    assert res.exit_code == 1 and "colour" in res.output
    assert not (tmp_path / "r").exists()


def test_logger_set_is_strict_for_the_run_s_own_log():
    class Broken:
        def log_scalars(self, step, scalars):
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        LoggerSet([("jsonl", Broken())]).log_scalars(1, {"a": 1.0})


def test_flatten_params_keys():
    flat = flatten_params({"a": {"b": 1, "c": [1, 2]}, "d": [{"e": None}], "f": "x"})
    assert flat == {"a.b": 1, "a.c": "1,2", "d.0.e": "none", "f": "x"}
