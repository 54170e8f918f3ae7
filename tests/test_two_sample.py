"""mmd_permutation_test and the ``infovae two-sample`` command."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from infovae.cli.commands.two_sample import two_sample
from infovae.functional import mmd, mmd_permutation_test

mmd_module = sys.modules["infovae.functional.mmd"]


def test_statistic_is_mmd_and_pvalue_is_a_valid_fraction():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(20, 3, generator=g), torch.randn(15, 3, generator=g)
    res = mmd_permutation_test(x, y, "imq", (1.0, 2.0), "unbiased", n_permutations=99, generator=torch.Generator().manual_seed(1))
    stat, p = res  # unpacks as (statistic, p_value)
    assert torch.equal(stat, mmd(x, y, "imq", (1.0, 2.0), "unbiased"))
    k = float(p) * 100
    assert abs(k - round(k)) < 1e-9 and 1 <= round(k) <= 100


def test_pvalues_uniform_under_the_null():
    """100 null draws, 99 permutations each: the p-values' KS distance to U(0, 1) stays
    below the 0.1% critical value (1.95 / sqrt(100)) plus the grid's 1/100."""
    g = torch.Generator().manual_seed(2)
    gen = torch.Generator().manual_seed(3)
    ps = []
    for _ in range(100):
        x, y = torch.randn(12, 2, generator=g), torch.randn(10, 2, generator=g)
        ps.append(float(mmd_permutation_test(x, y, n_permutations=99, generator=gen).p_value))
    ps = np.sort(np.array(ps))
    grid = np.arange(1, 101) / 100.0
    ks = max(np.max(grid - ps), np.max(ps - (grid - 0.01)))
    assert ks < 0.195 + 0.01, ks
    assert ps.min() >= 0.01 and ps.max() <= 1.0


def test_small_pvalue_under_a_shift():
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(25, 2, generator=g), torch.randn(25, 2, generator=g) + 1.5
    res = mmd_permutation_test(x, y, n_permutations=199, generator=torch.Generator().manual_seed(5))
    assert float(res.p_value) == pytest.approx(1 / 200)


def test_permuted_statistics_match_a_brute_force_loop():
    """White-box: replay the test's own permutations with the float64 brute-force MMD^2."""
    g = torch.Generator().manual_seed(6)
    x, y = torch.randn(9, 2, generator=g, dtype=torch.float64), torch.randn(7, 2, generator=g, dtype=torch.float64) + 0.4
    perms = 60
    for est in ("biased", "unbiased"):
        res = mmd_permutation_test(x, y, "rbf", 0.9, est, n_permutations=perms, generator=torch.Generator().manual_seed(7))
        a, b, _ = mmd_module.prepared_pair(x, y)  # the canonical pooled order the test relabels
        pooled, n = torch.cat([a, b]), a.shape[0]
        keys = torch.rand(perms + 1, pooled.shape[0], generator=torch.Generator().manual_seed(7))
        members = keys.argsort(1)[:, :n]
        stats = []
        for i in range(perms + 1):
            mask = torch.zeros(pooled.shape[0], dtype=torch.bool)
            mask[torch.arange(n) if i == 0 else members[i]] = True
            stats.append(float(_brute(pooled[mask], pooled[~mask], 0.9, est)))
        expected = (1 + sum(s >= stats[0] - 1e-12 for s in stats[1:])) / (perms + 1)
        assert float(res.p_value) == pytest.approx(expected, abs=1e-12)
        assert 0.02 < expected < 0.98 or est == "biased"  # a non-trivial p-value exercises the comparison


def _brute(x, y, sigma, est):
    def k(a, b):
        return torch.exp(-((a[:, None] - b[None]) ** 2).sum(-1) / (2 * sigma**2))

    n, m = len(x), len(y)
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    if est == "biased":
        return kxx.mean() + kyy.mean() - 2 * kxy.mean()
    return (kxx.sum() - n) / (n * (n - 1)) + (kyy.sum() - m) / (m * (m - 1)) - 2 * kxy.mean()


def test_reproducible_and_chunked():
    g = torch.Generator().manual_seed(8)
    x, y = torch.randn(30, 2, generator=g), torch.randn(30, 2, generator=g) + 0.3
    a = mmd_permutation_test(x, y, n_permutations=500, generator=torch.Generator().manual_seed(9))
    b = mmd_permutation_test(x, y, n_permutations=500, generator=torch.Generator().manual_seed(9))
    assert torch.equal(a.p_value, b.p_value)
    two_sample_module = sys.modules["infovae.functional.two_sample"]
    old = two_sample_module._MAX_BLOCK_ENTRIES
    try:  # several sweeps of 7 permutations each draw the same relabellings in the same order
        two_sample_module._MAX_BLOCK_ENTRIES = 60 * 7
        c = mmd_permutation_test(x, y, n_permutations=500, generator=torch.Generator().manual_seed(9), block_size=16)
    finally:
        two_sample_module._MAX_BLOCK_ENTRIES = old
    assert float(c.p_value) == pytest.approx(float(a.p_value), abs=2 / 501)


def test_bad_arguments():
    x = torch.randn(5, 2)
    with pytest.raises(ValueError, match="n_permutations"):
        mmd_permutation_test(x, x, n_permutations=0)
    with pytest.raises(ValueError, match="same dimension"):
        mmd_permutation_test(x, torch.randn(5, 3))


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------
@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(40, 3))
    b = rng.normal(size=(30, 3)) + 1.0
    np.save(tmp_path / "a.npy", a.astype(np.float32))
    np.savez(tmp_path / "ab.npz", a=a, b=b)
    np.savez(tmp_path / "one.npz", only=b)
    np.savetxt(tmp_path / "b.csv", b, delimiter=",", header="u,v,w", comments="")
    np.savetxt(tmp_path / "b_plain.csv", b, delimiter=",")
    from safetensors.numpy import save_file

    save_file({"codes": b.astype(np.float32), "other": a.astype(np.float32)}, str(tmp_path / "b.safetensors"))
    np.save(tmp_path / "obj.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    bad = a.copy()
    bad[2, 1] = np.inf
    np.save(tmp_path / "inf.npy", bad)
    np.save(tmp_path / "d4.npy", rng.normal(size=(10, 4)))
    np.save(tmp_path / "img.npy", rng.integers(0, 2, size=(10, 1, 2, 2), dtype=np.uint8))
    return tmp_path


def _run(*args):
    return CliRunner().invoke(two_sample, [str(a) for a in args])


def test_cli_json_matches_the_functions(files):
    r = _run(files / "ab.npz:a", files / "ab.npz:b", "--permutations", 199, "--seed", 3, "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    a = torch.from_numpy(np.load(files / "ab.npz")["a"])
    b = torch.from_numpy(np.load(files / "ab.npz")["b"])
    assert (out["n"], out["m"], out["dim"], out["dtype"]) == (40, 30, 3, "float64")
    assert out["mmd2"] == float(mmd(a, b))
    assert out["p_value"] == pytest.approx(1 / 200)
    assert out["bandwidth_rule"] == "median" and len(out["bandwidth"]) == 1


@pytest.mark.parametrize(
    "spec_b",
    ["b.csv", "b_plain.csv", "b.safetensors:codes", "one.npz"],
)
def test_cli_reads_every_format(files, spec_b):
    r = _run(files / "ab.npz:b", files / spec_b, "--kernel", "imq", "--bandwidth", "1,2", "-p", 0, "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["m"] == 30 and out["bandwidth"] == [1.0, 2.0] and out["p_value"] is None
    # same numbers (float32 copies differ by rounding only)
    assert abs(out["mmd2"]) < 1e-6


def test_cli_table_output(files):
    r = _run(files / "a.npy", files / "b.csv", "-p", 50)
    assert r.exit_code == 0, r.output
    assert "MMD^2" in r.output and "p-value" in r.output and "50 permutations" in r.output


def test_cli_flattens_images(files):
    r = _run(files / "img.npy", files / "img.npy", "-p", 0, "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["dim"] == 4 and out["mmd2"] == 0.0


@pytest.mark.parametrize(
    "args,message",
    [
        (("missing.npy", "a.npy"), "no such file"),
        (("ab.npz", "a.npy"), "holds 2 arrays ('a', 'b'); choose one with"),
        (("ab.npz:zz", "a.npy"), "no array named 'zz'"),
        (("b.safetensors", "a.npy"), "holds 2 tensors"),
        (("b.safetensors:nope", "a.npy"), "no tensor named 'nope'"),
        (("obj.npy", "a.npy"), "Python objects"),
        (("inf.npy", "a.npy"), "non-finite"),
        (("d4.npy", "a.npy"), "differ in dimension"),
        (("a.npy:key", "a.npy"), "holds one array"),
        (("a.npy", "a.npy", "--bandwidth", "0"), "positive"),
        (("a.npy", "a.npy", "--bandwidth", "wide"), "could not convert"),
    ],
)
def test_cli_errors(files, args, message):
    args = [files / a if i < 2 else a for i, a in enumerate(args)]
    r = _run(*args)
    assert r.exit_code != 0
    assert message in r.output, r.output
    assert "Traceback" not in r.output
