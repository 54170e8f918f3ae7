"""Built-in experiment loggers: jsonl (the run's metrics.jsonl, always on), tensorboard, mlflow.

tensorboard and mlflow need optional packages (``pip install 'infovae[tensorboard]'``,
``'infovae[mlflow]'``); their modules import them only when a logger is built.
"""
from infovae import Option, hookimpl


@hookimpl
def register_loggers(register):
    register("jsonl", "infovae.plugins.loggers.jsonl:JsonlLogger",
             summary="metrics.jsonl in the run directory, one JSON object per logged step (always on)", options=())
    register("tensorboard", "infovae.plugins.loggers.tensorboard:TensorBoardLogger",
             summary="TensorBoard event files: scalars, the spec as hparams, sample grids, evaluation (optional: needs the tensorboard extra)",
             options=(Option("dir", str, "", "event file directory (default RUN/tensorboard)"),
                      Option("flush_secs", float, 10.0, "seconds between flushes to disk", minimum=0.1)))
    register("mlflow", "infovae.plugins.loggers.mlflow:MlflowLogger",
             summary="MLflow tracking (a local file store in RUN/mlruns by default; optional: needs the mlflow extra)",
             options=(Option("tracking_uri", str, "", "tracking URI (default: file store RUN/mlruns)"),
                      Option("experiment", str, "infovae", "experiment name"),
                      Option("run_name", str, "", "MLflow run name (default: the run directory's name)")))
