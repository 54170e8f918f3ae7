"""`infovae compare`, `infovae report` (checked in headless chromium), matplotlib charts
and `infovae plot`, on two small real runs trained once for the module."""
from __future__ import annotations

import io
import json
import math
import os
import re

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from infovae.cli.main import cli
from infovae.compare import MetricCell, mark_best

TRAIN = ["train", "--steps", "42", "--batch-size", "64", "--log-every", "7", "--track", "mutual-information,nll", "--quiet"]
METRICS = "reconstruction,kl,nll,mutual-information,active-units"


def invoke(*args):
    res = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two runs differing in their regularizer: 'mmd' (evaluated) and 'elbo' (not evaluated yet)."""
    root = tmp_path_factory.mktemp("compare")
    invoke(*TRAIN, "--out", root / "mmd")
    invoke(*TRAIN, "-r", "kl=1", "--out", root / "elbo")
    invoke("evaluate", root / "mmd", "--metrics", METRICS, "-o", "nll.num_samples=20", "--json")
    return root / "mmd", root / "elbo"


# -- the best-value rule, against hand-worked cases -------------------------------------------------
def test_best_needs_a_margin_beyond_the_combined_standard_error():
    # |80 - 82| = 2 > sqrt(0.5^2 + 0.5^2) = 0.707: marked; lower is better.
    assert mark_best({"a": MetricCell(80.0, 0.5), "b": MetricCell(82.0, 0.5)}, "lower") == "a"
    # |80 - 80.6| = 0.6 <= 0.707: not marked.
    assert mark_best({"a": MetricCell(80.0, 0.5), "b": MetricCell(80.6, 0.5)}, "lower") is None
    # higher is better; the winner must beat every other run, not just the runner-up.
    cells = {"a": MetricCell(0.9, 0.01), "b": MetricCell(0.8, 0.01), "c": MetricCell(0.5, 0.01)}
    assert mark_best(cells, "higher") == "a"
    cells["b"] = MetricCell(0.89, 0.01)
    assert mark_best(cells, "higher") is None
    # no standard error, no direction, a single present value: nothing is marked.
    assert mark_best({"a": MetricCell(1.0), "b": MetricCell(5.0)}, "lower") is None
    assert mark_best({"a": MetricCell(1.0, 0.1), "b": MetricCell(5.0, 0.1)}, None) is None
    assert mark_best({"a": MetricCell(1.0, 0.1), "b": MetricCell(None)}, "lower") is None


# -- compare ------------------------------------------------------------------------------------
def test_compare_shows_differences_and_missing_metrics(runs):
    mmd, elbo = runs
    out = json.loads(invoke("compare", mmd, elbo, "--json").stdout)
    rows = {r["label"]: r for r in out["runs"]}
    assert rows["mmd"]["spec"]["regularizers"] == "mmd×100" and rows["elbo"]["spec"]["regularizers"] == "kl×1"
    assert "trainer.seed" not in out["spec_fields"] and "latent_dim" not in out["spec_fields"]  # equal in both
    assert out["metrics"] == METRICS.split(",")
    evaluation = json.loads((mmd / "evaluation.json").read_text())["metrics"]
    for m in out["metrics"]:
        assert rows["elbo"]["metrics"][m] is None
        assert rows["mmd"]["metrics"][m]["value"] == evaluation[m]["value"]
    text = invoke("compare", mmd, elbo, "--metrics", "nll,kl").stdout
    assert "missing" in text and "mmd×100" in text and "kl×1" in text


def test_compare_evaluate_fills_gaps_with_the_library_s_values(runs, tmp_path):
    mmd, elbo = runs
    fig = tmp_path / "curves.png"
    out = json.loads(invoke("compare", mmd, elbo, "--metrics", METRICS, "--evaluate", "-o", "nll.num_samples=20", "--json", "--out", fig).stdout)
    rows = {r["label"]: r for r in out["runs"]}
    # Independent reference: the metrics computed all at once by evaluate_metrics with the same seed.
    import infovae
    from infovae.api import load_run
    from infovae.build import create_dataset
    from infovae.metrics import evaluate_metrics

    spec, model, _ = load_run(elbo, device="cpu")
    x = create_dataset(infovae.registry(), spec.dataset).split("test")
    ref = evaluate_metrics(model, x, METRICS, generator=torch.Generator().manual_seed(0), options={"nll": {"num_samples": 20}})
    for m in METRICS.split(","):
        assert rows["elbo"]["metrics"][m]["value"] == pytest.approx(ref[m]["value"], rel=1e-9, abs=1e-12), m
    # The best marks follow the rule, checked pairwise from the numbers themselves.
    for m in out["metrics"]:
        a, b = rows["mmd"]["metrics"][m], rows["elbo"]["metrics"][m]
        better = out["better"][m]
        if better is None or a["std_err"] is None or b["std_err"] is None:
            assert out["best"][m] is None
            continue
        margin = math.sqrt(a["std_err"] ** 2 + b["std_err"] ** 2)
        if abs(a["value"] - b["value"]) <= margin:
            assert out["best"][m] is None
        else:
            lower = "mmd" if a["value"] < b["value"] else "elbo"
            assert out["best"][m] == (lower if better == "lower" else ({"mmd", "elbo"} - {lower}).pop())
    img = np.asarray(Image.open(fig).convert("L"), dtype=float)
    assert img.shape[0] > 300 and img.std() > 10  # a real chart, not a blank canvas


def test_evaluate_merges_metrics_of_the_same_model_and_split(runs):
    mmd = runs[0]
    before = json.loads((mmd / "evaluation.json").read_text())
    res = CliRunner().invoke(cli, ["evaluate", str(mmd), "--metrics", "kl"], catch_exceptions=False)
    assert res.exit_code == 0 and "evaluating kl" in res.stderr  # one plain line per metric off a terminal
    after = json.loads((mmd / "evaluation.json").read_text())
    assert set(after["metrics"]) == set(before["metrics"])  # kl re-scored, the others kept
    assert after["metrics"]["kl"]["value"] == before["metrics"]["kl"]["value"]  # same seed, same number
    assert after["step"] == before["step"] == json.loads((mmd / "status.json").read_text())["step"]


def test_compare_errors_are_one_line(tmp_path):
    res = CliRunner().invoke(cli, ["compare", str(tmp_path)])
    assert res.exit_code == 1 and "spec.json is missing" in res.output and "Traceback" not in res.output


# -- charts -------------------------------------------------------------------------------------
def test_each_quantity_has_its_own_axes(runs):
    from infovae.plotting import training_curves
    from infovae.runs import read_metrics

    records = [r for r in read_metrics(runs[0]) if "epoch" in r]
    fig = training_curves({"mmd": records})
    axes = [ax for ax in fig.axes if ax.get_visible()]
    titles = [ax.get_title() for ax in axes]
    assert len(titles) == len(set(titles)) == 5, titles  # loss, reconstruction, mmd, MI, NLL: one each
    by_title = dict(zip(titles, axes))
    mmd_ax = by_title["divergence: mmd (unweighted)"]
    train_line = [l for l in mmd_ax.get_lines() if l.get_label() == "train"][0]
    assert list(train_line.get_ydata()) == [r["train/mmd"] for r in records]  # MMD alone on its axis
    assert all(ax.get_ylabel() and ax.get_xlabel() == "epoch" and ax.get_legend() is not None for ax in axes)
    mi_ax = by_title["mutual information I_q(x;z) vs log M"]
    assert {l.get_label() for l in mi_ax.get_lines()} == {"I_q(x;z)", "log M (upper bound)"}


def test_plot_command_draws_headless(runs, tmp_path, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    out = tmp_path / "fig.png"
    res = json.loads(invoke("plot", runs[0], "--out", out, "--json").stdout)
    img = Image.open(out)
    assert list(img.size) == res["size"] and img.size[0] >= 1200
    assert np.asarray(img.convert("L"), dtype=float).std() > 10


# -- report in a real browser ---------------------------------------------------------------------
IMAGES_JS = """[...document.images].map(i => ({alt: i.alt, complete: i.complete, w: i.naturalWidth, h: i.naturalHeight,
  src: i.src.slice(0, 22), rect: (b => [b.left + scrollX, b.top + scrollY, b.width, b.height])(i.getBoundingClientRect())}))"""
TABLES_JS = """[...document.querySelectorAll('section.run')].map(s => ({run: s.querySelector('h2').textContent,
  rows: [...s.querySelectorAll('table.metrics tbody tr')].map(tr => ({metric: tr.dataset.metric,
    value: tr.querySelector('.value').textContent, se: tr.querySelector('.std-err').textContent}))}))"""


def _chromium():
    from browser import find_chromium

    path = find_chromium()
    if path is None:
        msg = "Debian's chromium is not installed (make setup installs it: apt-get install -y chromium)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def test_report_in_headless_chromium(runs, tmp_path):
    from browser import load_page

    chromium = _chromium()
    mmd, elbo = runs
    invoke("evaluate", elbo, "--metrics", "reconstruction,kl", "--json")
    page = tmp_path / "report.html"
    invoke("report", mmd, elbo, "--out", page, "--codes", "300")
    text = page.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", text) and "<script" not in text and "<link" not in text

    result = load_page(chromium, page.as_uri(), {"images": IMAGES_JS, "tables": TABLES_JS})
    assert result.console_errors == []
    assert all(u.startswith(("file:", "data:")) for u in result.requests), [u[:80] for u in result.requests]
    images = result.evaluated["images"]
    # comparison curves + (curves, sample grids, q(z) picture) per run
    assert len(images) == 7, [i["alt"] for i in images]
    shot = Image.open(io.BytesIO(result.screenshot)).convert("RGB")
    Image.open(io.BytesIO(result.screenshot)).save(tmp_path / "screenshot.png")
    for im in images:
        assert im["complete"] and im["w"] > 100 and im["h"] > 100 and im["src"].startswith("data:image/png"), im
        x, y, w, h = (int(round(v)) for v in im["rect"])
        assert w > 100 and h > 100 and y + h <= shot.height, (im["alt"], im["rect"], shot.size)
        crop = np.asarray(shot.crop((x, y, x + w, y + h)).convert("L"), dtype=float)
        # Non-blank: a chart or grid has ink (dark pixels) on a light ground, not one flat colour.
        dark = (crop < 128).mean()
        assert crop.std() > 15 and 0.002 < dark < 0.9, (im["alt"], crop.std(), dark)
    tables = {t["run"].removeprefix("Run "): t["rows"] for t in result.evaluated["tables"]}
    for run in (mmd, elbo):
        evaluation = json.loads((run / "evaluation.json").read_text())["metrics"]
        rows = {r["metric"]: r for r in tables[run.name]}
        assert set(rows) == set(evaluation)
        for name, res in evaluation.items():
            shown = float(rows[name]["value"])
            assert shown == pytest.approx(res["value"], rel=1e-5, abs=1e-12), name  # 6 significant digits
            if "std_err" in res:
                assert float(rows[name]["se"]) == pytest.approx(res["std_err"], rel=1e-5)


def test_report_of_several_runs_needs_an_out_file(runs):
    res = CliRunner().invoke(cli, ["report", str(runs[0]), str(runs[1])])
    assert res.exit_code == 2 and "--out" in res.output


# -- non-terminal output ----------------------------------------------------------------------------
def test_epoch_lines_never_wrap_off_a_terminal(tmp_path):
    res = CliRunner().invoke(cli, ["train", "--steps", "42", "--batch-size", "64", "--track", "mutual-information",
                                   "-o", "mmd.kernel=imq", "--out", str(tmp_path / "r")], catch_exceptions=False)
    assert res.exit_code == 0
    lines = [l for l in res.stderr.splitlines() if l.strip()]
    epoch_lines = [l for l in lines if l.startswith("epoch")]
    assert len(epoch_lines) == 2 and max(len(l) for l in epoch_lines) > 80  # long lines, kept whole
    assert all(l.startswith(("epoch", "run ")) for l in lines), lines


def test_series_panels_error_bars_and_per_panel_log_axes():
    from infovae.plotting import png_bytes, series_panels

    fig = series_panels([("A", "z", "MMD²", {"m": ([2, 8], [0.01, 0.001], [0.002, 0.0003])}),
                         ("D", "step", "MMD²", {"m": ([100, 200], [0.5, 0.05])})], log_x=[True, False], log_y=[True, True])
    a, d = fig.axes
    assert (a.get_xscale(), a.get_yscale(), d.get_xscale(), d.get_yscale()) == ("log", "log", "linear", "log")
    bars = [c for c in a.containers if type(c).__name__ == "ErrorbarContainer"]
    assert len(bars) == 1  # one error-bar series; its vertical segments span value ± s.e.
    segs = bars[0].lines[2][0].get_segments()
    assert np.allclose([s[:, 1] for s in segs], [[0.008, 0.012], [0.0007, 0.0013]])
    assert not [c for c in d.containers if type(c).__name__ == "ErrorbarContainer"]
    assert Image.open(io.BytesIO(png_bytes(fig))).size[0] > 0
