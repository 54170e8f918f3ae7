"""Smoke test of the regularizer benchmark (tiny grid; the real figures come from the CLI)."""
from __future__ import annotations

import json

from click.testing import CliRunner

from infovae.bench.regularizers import dense_mmd, dense_stein, floor_seconds, naive_mmd, naive_stein, run
from infovae.cli.commands.bench_regularizers import regularizers
from infovae.functional import mmd, stein_direction


def test_baselines_compute_the_same_quantities():
    import torch

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(20, 3, generator=g), torch.randn(15, 3, generator=g)
    for kernel, bw in (("rbf", 1.5), ("imq", 2.0)):
        assert torch.allclose(naive_mmd(x, y, kernel, bw), mmd(x, y, kernel, bw), atol=1e-6)
    assert torch.allclose(naive_stein(x, -x, 1.2), stein_direction(x, -x, 1.2), atol=1e-6)
    # the plain dense baseline, every variant the benchmark runs
    for kernel in ("rbf", "imq"):
        for bw in (1.5, (0.7, 1.5, 3.0), "median"):
            for est in ("biased", "unbiased"):
                ref = mmd(x, y, kernel, bw, est)
                assert torch.allclose(dense_mmd(x, y, kernel, bw, est), ref, atol=2e-6), (kernel, bw, est)
                assert torch.allclose(naive_mmd(x, y, kernel, bw, est), ref, atol=2e-6), (kernel, bw, est)
    for bw in (1.2, "median"):
        assert torch.allclose(dense_stein(x, -x, bw), stein_direction(x, -x, bw), atol=1e-6)
        assert torch.allclose(naive_stein(x, -x, bw), stein_direction(x, -x, bw), atol=1e-6)


def test_run_tiny_grid():
    res = run(sizes=[16, 32], dims=[2], repeats=1, methods=("mmd-rbf", "stein"), naive_cap_bytes=20_000,
              measure_memory=False)  # measuring changes glibc's policy for the process; tested in a subprocess elsewhere
    rows = res["rows"]
    assert [(r["method"], r["n"]) for r in rows] == [("mmd-rbf", 16), ("stein", 16), ("mmd-rbf", 32), ("stein", 32)]
    for r in rows:
        assert r["ours_s"] > 0 and r["floor_s"] > 0 and r["ours_over_floor"] > 0 and r["ours_peak_bytes"] is None
    # the cap (20 kB) lets the naive baseline run at n = 16 (mmd: ~12 kB, stein: ~6 kB) and
    # skips it at n = 32 (~49 kB, ~25 kB), saying so
    assert rows[0]["naive_over_ours"] > 0 and rows[1]["naive_over_ours"] > 0
    for big in rows[2:]:
        assert big["naive_s"] is None and big["naive_note"].startswith("skipped")
    assert floor_seconds("mmd-rbf", 32, 2, res["throughputs"]["2"]) == rows[2]["floor_s"]
    json.dumps(res)  # JSON-ready


def test_cli_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    r = CliRunner().invoke(regularizers, ["--sizes", "16", "--dims", "2", "--repeats", "1", "--methods", "mmd-imq", "--no-memory", "--out", str(out)])
    assert r.exit_code == 0, r.output
    data = json.loads(out.read_text())
    assert data["rows"][0]["method"] == "mmd-imq" and data["rows"][0]["geomloss_note"] == "n/a"
    assert "mmd-imq" in r.output
    # --json is a flag, as in every command: JSON on stdout, no table
    r = CliRunner().invoke(regularizers, ["--sizes", "16", "--dims", "2", "--repeats", "1", "--methods", "mmd-imq", "--no-memory", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["rows"][0]["method"] == "mmd-imq"
    bad = CliRunner().invoke(regularizers, ["--methods", "mmd-xyz", "--sizes", "16", "--dims", "2"])
    assert bad.exit_code != 0 and "unknown method" in bad.output


def test_cli_check_fails_when_a_baseline_wins(tmp_path):
    """--check exits 1 naming the cells where a baseline beat ours; the table shows the dense
    column and the ratio to the fastest baseline for every cell."""
    out = tmp_path / "bench.json"
    r = CliRunner().invoke(regularizers, ["--sizes", "8", "--dims", "2", "--repeats", "1", "--methods", "stein-median",
                                          "--no-memory", "--check", "--out", str(out)])
    data = json.loads(out.read_text())
    row = data["rows"][0]
    assert row["dense_s"] > 0 and row["best_over_ours"] > 0
    assert row["best_over_ours"] == min(row[f"{k}_s"] for k in ("dense", "naive") if row[f"{k}_s"]) / row["ours_s"]
    if row["best_over_ours"] < 1.0:
        assert r.exit_code == 1 and "stein-median n=8 d=2" in r.output
    else:
        assert r.exit_code == 0, r.output
