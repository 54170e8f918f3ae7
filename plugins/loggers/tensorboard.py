"""TensorBoard event files through ``torch.utils.tensorboard`` (needs the ``tensorboard`` package)."""
from __future__ import annotations

import json
import math
from pathlib import Path

from infovae import Logger, evaluation_scalars, require_extra


def check_installed() -> None:
    require_extra("tensorboard", "tensorboard", "tensorboard")


class TensorBoardLogger(Logger):
    """Scalars under their metrics.jsonl names, the spec as hparams (and as text), sample grids as
    images, evaluation results as eval/* scalars at the run's last step."""

    check_installed = staticmethod(check_installed)

    def __init__(self, run_dir, dir: str = "", flush_secs: float = 10.0):
        check_installed()
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(dir).expanduser() if dir else Path(run_dir) / "tensorboard"
        self.writer = SummaryWriter(log_dir=str(self.log_dir), flush_secs=flush_secs)

    def log_params(self, params):
        from torch.utils.tensorboard.summary import hparams

        clean = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in params.items()}
        exp, ssi, sei = hparams(clean, {})
        fw = self.writer._get_file_writer()
        for summary in (exp, ssi, sei):
            fw.add_summary(summary)
        self.writer.add_text("spec", "```\n" + json.dumps(params, indent=1) + "\n```", 0)

    def log_scalars(self, step, scalars):
        for k, v in scalars.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                self.writer.add_scalar(k, float(v), int(step))

    def log_image(self, step, tag, image):
        self.writer.add_image(tag, image, int(step), dataformats="HW" if image.ndim == 2 else "HWC")
        self.writer.flush()

    def log_evaluation(self, report):
        step = int(report.get("step", 0))
        for k, v in evaluation_scalars(report).items():
            if math.isfinite(v):
                self.writer.add_scalar(k, v, step)
        self.writer.add_text("evaluation", "```\n" + json.dumps(report, indent=1) + "\n```", step)
        self.writer.flush()

    def close(self):
        self.writer.close()
