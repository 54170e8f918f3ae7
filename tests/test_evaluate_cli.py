"""``infovae evaluate --limit``: a seeded random subset by default (sorted splits stay representative),
the first N on request, and the scored indices recorded in evaluation.json."""
import json

import pytest
import torch
from click.testing import CliRunner

from infovae.cli.commands.evaluate import choose_subset
from infovae.cli.main import cli


def test_random_subset_of_a_sorted_split_is_class_balanced_and_first_n_is_not():
    # like the binarized-MNIST test split: 10 classes of 1000, sorted by label
    labels = torch.arange(10).repeat_interleave(1000)
    first = labels[choose_subset(10_000, 1000, first=True, seed=0)]
    assert torch.equal(torch.bincount(first, minlength=10), torch.tensor([1000] + [0] * 9))
    idx = choose_subset(10_000, 1000, first=False, seed=0)
    assert idx.numel() == 1000 and idx.unique().numel() == 1000 and torch.equal(idx, idx.sort().values)
    counts = torch.bincount(labels[idx], minlength=10).double()
    # hypergeometric counts: mean 100, sd ~ 9.0; 5 sd either side
    assert ((counts - 100).abs() < 45).all(), counts
    assert torch.equal(idx, choose_subset(10_000, 1000, first=False, seed=0))
    assert not torch.equal(idx, choose_subset(10_000, 1000, first=False, seed=1))
    assert choose_subset(50, 50, first=False, seed=0) is None and choose_subset(50, None, first=False, seed=0) is None


def test_evaluate_records_the_scored_examples(registry, tmp_path):
    run = tmp_path / "run"
    res = CliRunner().invoke(cli, ["train", "-r", "kl=1", "--steps", "3", "-z", "2", "-o", "encoder.hidden=8", "-o", "decoder.hidden=8",
                                   "--quiet", "--out", str(run)], catch_exceptions=False)
    assert res.exit_code == 0, res.output

    def evaluate(*extra):
        res = CliRunner().invoke(cli, ["evaluate", str(run), "--metrics", "kl", *extra], catch_exceptions=False)
        assert res.exit_code == 0, res.output
        return json.loads((run / "evaluation.json").read_text())

    rep = evaluate("--limit", "50", "--seed", "3")
    assert rep["examples"] == 50 and rep["split_examples"] == 200
    sub = rep["subset"]
    assert sub["method"] == "random" and sub["seed"] == 3 and sub["indices"] == choose_subset(200, 50, False, 3).tolist()
    first = evaluate("--limit", "50", "--first")["subset"]
    assert first == {"method": "first", "seed": None, "indices": list(range(50))}
    assert "subset" not in evaluate()
    res = CliRunner().invoke(cli, ["evaluate", str(run), "--first"])
    assert res.exit_code == 2 and "--limit" in res.output
