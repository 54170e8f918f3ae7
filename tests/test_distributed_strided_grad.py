"""GlobalBatch.gather under real torchrun processes (2 gloo ranks): a column-major gradient arriving
from the loss (a transposed product makes one) reaches each rank's rows with the right values. Without
the contiguous hand-off torch's autograd all_gather summed wrong values into them (found in issue 13
round 3 through the fused MMD's gradient)."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

from test_distributed import TORCHRUN, _env

WORKER = str(Path(__file__).resolve().parent / "strided_grad_worker.py")


def test_gathered_codes_give_each_rank_its_gradient_whatever_the_layout(tmp_path):
    out = tmp_path / "grads"
    res = subprocess.run([TORCHRUN, "--standalone", "--nproc-per-node", "2", WORKER, str(out)],
                         capture_output=True, text=True, timeout=120, env=_env())
    assert res.returncode == 0, res.stderr[-2000:]
    rows = [json.loads(Path(f"{out}.{r}").read_text()) for r in (0, 1)]
    for row in rows:
        assert row["row-major"] == 0.0, row
        assert row["column-major"] == 0.0, row
