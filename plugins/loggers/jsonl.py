"""The run's own metrics log: metrics.jsonl, one JSON object per logged step."""
from __future__ import annotations

import json
from pathlib import Path

from infovae import Logger, append_text

METRICS_FILE = "metrics.jsonl"


class JsonlLogger(Logger):
    """Appends {"step": ..., **scalars} lines to RUN/metrics.jsonl (always on; its errors are the run's errors)."""

    def __init__(self, run_dir):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / METRICS_FILE

    def log_scalars(self, step, scalars):
        line = json.dumps({"step": int(step), **{k: v for k, v in scalars.items() if k != "step"}}) + "\n"
        append_text(self.path, line, root=self.run_dir)  # never through a symlink out of the run
