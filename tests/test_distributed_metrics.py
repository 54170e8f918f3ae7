"""``infovae evaluate`` launched by real torchrun (gloo, CPU, 2 processes; ``slow``: one more launch
than the default suite's), and the metric kit's sharding check.

The sharded-equals-one-process property of every built-in metric is tested in
test_distributed.py (one launch shared with the training tests); here the
command itself: ``torchrun --nproc-per-node 2 --no-python infovae evaluate RUN``
writes (rank 0 alone) the evaluation one process writes, and bad input is one
line on every rank, before any collective, with no hang.
"""
from __future__ import annotations

import json
import math
import subprocess

import pytest
import torch
from click.testing import CliRunner

from infovae import Metric, hookimpl
from infovae.errors import PluginBuildError
from infovae.api import start_training
from infovae.metrics import build_metrics, shard_bounds
from infovae.testing import check_metric
from infovae.testing._kit import reference_data, reference_model

import ddp_worker  # noqa: F401  (tests/ is on sys.path through test_distributed's import)
from test_distributed import INFOVAE, TORCHRUN, _close, _env

METRICS = "nll,mutual-information,mmd-prior,logdet-cov,kl,active-units,reconstruction"
ARGS = ["--metrics", METRICS, "-o", "nll.num_samples=20", "--batch-size", "96", "--limit", "199", "--device", "cpu", "--json"]


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """One torchrun launch (2 ranks) running, on every rank, ``infovae evaluate`` of a missing run
    (bad input: its stderr and exit code are kept per rank), then of a trained run."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("eval")
    run = out / "run"
    start_training(run, *ddp_worker.spec("mmd", 100.0)).fit()
    script = (f'"$1" evaluate "$2" --device cpu 2> "$3/bad.$RANK.err"; echo $? > "$3/bad.$RANK.rc"; '
              f'exec "$1" evaluate "$4" {" ".join(ARGS)}')
    cmd = [TORCHRUN, "--standalone", "--nproc-per-node", "2", "--no-python", "bash", "-c", script, "evaluate",
           INFOVAE, str(out / "missing"), str(out), str(run)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=_env())
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return out, run, res


@pytest.mark.slow
def test_evaluate_under_torchrun_writes_the_single_process_evaluation(launched):
    from infovae.cli.main import cli

    _, run, res = launched
    one = CliRunner().invoke(cli, ["evaluate", str(run), *ARGS, "--no-save"], catch_exceptions=False)
    assert one.exit_code == 0, one.output
    expected = json.loads(one.stdout)
    printed = json.loads(res.stdout[res.stdout.index("{"):])  # rank 0 alone prints
    written = json.loads((run / "evaluation.json").read_text())
    assert printed == written and written["examples"] == 199 and written["subset"] == expected["subset"]
    assert written["metrics"].keys() == expected["metrics"].keys() == set(METRICS.split(","))
    _close(written["metrics"], expected["metrics"], "metrics")  # tolerance: see test_distributed.py
    assert not list(run.glob("*.tmp*"))


@pytest.mark.slow
def test_evaluate_bad_input_under_torchrun_is_one_line_on_every_rank(launched):
    """Before any collective: had a rank waited for the other in one, the launch would have hung."""
    out, _, _ = launched
    for rank in (0, 1):
        assert (out / f"bad.{rank}.rc").read_text().strip() == "1"
        assert (out / f"bad.{rank}.err").read_text() == f"Error: run directory {out / 'missing'} does not exist\n"


# -- the contract: how a metric declares its distributed behaviour --------------------------------------

def test_shard_bounds_cover_the_examples_in_order():
    for n in (2, 7, 199, 200):
        for world in (1, 2, 3, 8):
            if world > n:
                continue
            parts = [shard_bounds(n, r, world) for r in range(world)]
            assert parts[0][0] == 0 and parts[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
            assert max(hi - lo for lo, hi in parts) - min(hi - lo for lo, hi in parts) <= 1


class ShardedMean(Metric):
    """Mean squared posterior mean plus noise, sharded; ``mode`` breaks one part of the contract."""

    distributed = "sharded"

    def __init__(self, mode="good"):
        self.mode = mode

    def rows(self, model, x, lo, hi, *, generator=None, batch_size=1024):
        n = x.shape[0]
        noise = torch.randn(n, generator=generator)  # every example's draw, whatever the shard
        if self.mode == "shard_draws":  # a shard's first example gets example 0's draw
            noise = torch.cat([noise[: hi - lo], noise.new_zeros(lo)])
            lo_, hi_ = 0, hi - lo
            return {"v": model.posterior(x[lo:hi]).mean.pow(2).sum(-1).double() + 0.1 * noise[lo_:hi_].double()}
        if self.mode == "uneven_generator":
            torch.randn(hi - lo, generator=generator)
        return {"v": model.posterior(x[lo:hi]).mean.pow(2).sum(-1).double() + 0.1 * noise[lo:hi].double()}

    def combine(self, model, rows, *, labels=None, generator=None, batch_size=1024):
        value = float(rows["v"].mean()) + (1.0 if self.mode == "combine_differs" else 0.0)
        return {"value": value}

    def __call__(self, model, x, *, labels=None, generator=None, batch_size=1024):
        good = ShardedMean("good")
        return good.combine(model, good.rows(model, x, 0, x.shape[0], generator=generator), generator=generator)


def test_metric_kit_passes_a_good_sharded_metric_and_a_plain_one():
    assert check_metric(ShardedMean)["sharding"] == "passed"
    assert check_metric("class-distribution", checks=["sharding"]) == {"sharding": "passed"}  # rank0


@pytest.mark.parametrize("mode, message", [
    ("shard_draws", "must not depend on the shard"),
    ("uneven_generator", "different states"),
    ("combine_differs", "must compute combine"),
])
def test_metric_kit_catches_a_broken_sharded_metric(mode, message):
    with pytest.raises(AssertionError, match=rf"- sharding: metric.*{message}"):
        check_metric(lambda: ShardedMean(mode), checks=["sharding"])


def test_a_bad_declaration_is_refused_by_the_kit_and_at_build(registry):
    class Typo(ShardedMean):
        distributed = "shared"

    class NoRows(Metric):
        distributed = "sharded"

        def __call__(self, model, x, *, labels=None, generator=None, batch_size=1024):
            return {"value": 0.0}

    with pytest.raises(AssertionError, match="distributed='shared'"):
        check_metric(Typo, checks=["sharding"])
    with pytest.raises(AssertionError, match="lacks rows"):
        check_metric(NoRows, checks=["sharding"])
    class Plugin:
        @hookimpl
        def register_metrics(self, register):
            register("no-rows", NoRows)

    registry.register_plugin(Plugin(), name="no-rows-plugin")
    try:
        with pytest.raises(PluginBuildError, match="declare 'rank0'"):
            build_metrics(["no-rows"], reg=registry)
    finally:
        registry.unregister_plugin("no-rows-plugin")


@pytest.mark.parametrize("options", [
    {"num_samples": 16},
    {"num_samples": 4, "proposal": "refined", "refine_steps": 1, "prior_weight": 0.2},
    {"estimator": "ais", "ais_steps": 2, "ais_chains": 2, "leapfrog_steps": 1},
])
def test_builtin_nll_estimators_pass_the_sharding_check(options):
    assert check_metric("nll", options, checks=["sharding"]) == {"sharding": "passed"}


def test_the_default_nll_keeps_its_single_process_draws():
    """Sharding did not change one process's plain-IS draws: the estimate equals a direct float64
    re-implementation drawing (k, b, D) noise per batch of b examples from the same generator."""
    from infovae.metrics import nll

    model, x = reference_model(), reference_data(12).float()
    k, bs = 5, 10  # batches of 2 examples, 5 samples each
    res = nll(model, x, generator=torch.Generator().manual_seed(4), batch_size=bs, num_samples=k)
    g = torch.Generator().manual_seed(4)
    ref = []
    with torch.no_grad():
        for s in range(0, 12, 2):
            xb = x[s:s + 2]
            q = model.posterior(xb)
            eps = torch.randn((k, 2, model.latent_dim), generator=g, dtype=torch.float64)
            z = (q.base_dist.loc.double() + q.base_dist.scale.double() * eps).float()
            log_w = (model.log_likelihood(xb.expand(k, *xb.shape).reshape(-1, *xb.shape[1:]), z.reshape(-1, z.shape[-1])).double().view(k, 2)
                     + model.prior.log_prob(z.reshape(-1, z.shape[-1])).double().view(k, 2)
                     - q.log_prob(z).double())
            ref.append(torch.logsumexp(log_w, 0) - math.log(k))
    assert res["value"] == pytest.approx(-float(torch.cat(ref).mean()), rel=1e-5)
