"""MLflow tracking through ``MlflowClient`` (needs ``mlflow-skinny`` or ``mlflow``).

The default store is a local file store in RUN/mlruns (with the full ``mlflow`` package,
``MLFLOW_ALLOW_FILE_STORE=true mlflow ui --backend-store-uri RUN/mlruns`` shows it); any
tracking URI MLflow accepts can be given instead. The MLflow run id is kept in
RUN/mlflow_run.json so a resumed run and ``infovae evaluate`` log into the same MLflow run.
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path

from infovae import Logger, atomic_write_json, evaluation_scalars, require_extra

STATE_FILE = "mlflow_run.json"
BATCH = 100  # MLflow accepts at most 1000 metrics / 100 params per log_batch call


def metric_key(name: str) -> str:
    """MLflow metric name for a metrics.jsonl key: the first "/" kept, later ones become "."
    ("track/mutual-information/log_M" -> "track/mutual-information.log_M"), because MLflow's file
    store keeps a metric in a file of that path and "a/b" cannot be both a file and a folder."""
    head, sep, rest = name.partition("/")
    return head + sep + rest.replace("/", ".")


def check_installed() -> None:
    require_extra("mlflow", "mlflow", "mlflow")


class MlflowLogger(Logger):
    """Scalars as MLflow metrics (names through ``metric_key``), the spec as params, sample grids and evaluation.json as artifacts."""

    check_installed = staticmethod(check_installed)

    def __init__(self, run_dir, tracking_uri: str = "", experiment: str = "infovae", run_name: str = ""):
        check_installed()
        import json

        from mlflow.tracking import MlflowClient

        self.run_dir = Path(run_dir)
        self.uri = tracking_uri or (self.run_dir / "mlruns").resolve().as_uri()
        if self.uri.startswith("file:") or "://" not in self.uri:
            # MLflow 3 keeps its file store in "maintenance mode" behind this switch; a local,
            # database-free store is the point of the default (no SQLAlchemy, no server).
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=self.uri)
        state_path = self.run_dir / STATE_FILE
        self.run_id = None
        if state_path.exists():
            try:
                state = json.loads(state_path.read_text())
                if state.get("tracking_uri") == self.uri:
                    self.run_id = self.client.get_run(state["run_id"]).info.run_id
                    self.client.update_run(self.run_id, status="RUNNING")
            except Exception:  # noqa: BLE001 - a stale id: start a new MLflow run
                self.run_id = None
        if self.run_id is None:
            exp = self.client.get_experiment_by_name(experiment)
            exp_id = exp.experiment_id if exp is not None else self.client.create_experiment(experiment)
            self.run_id = self.client.create_run(exp_id, run_name=run_name or self.run_dir.resolve().name).info.run_id
            atomic_write_json(state_path, {"tracking_uri": self.uri, "run_id": self.run_id})

    def log_params(self, params):
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), BATCH):
            self.client.log_batch(self.run_id, params=items[i:i + BATCH])

    def _metrics(self, step, scalars):
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(metric_key(k), float(v), now, int(step)) for k, v in scalars.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
        for i in range(0, len(items), BATCH):
            self.client.log_batch(self.run_id, metrics=items[i:i + BATCH])

    def log_scalars(self, step, scalars):
        self._metrics(step, scalars)

    def log_image(self, step, tag, image):
        self.client.log_image(self.run_id, image, artifact_file=f"{tag}_step{int(step):07d}.png")

    def log_evaluation(self, report):
        self._metrics(int(report.get("step", 0)), evaluation_scalars(report))
        self.client.log_dict(self.run_id, dict(report), "evaluation.json")

    def close(self):
        self.client.set_terminated(self.run_id, "FINISHED")
