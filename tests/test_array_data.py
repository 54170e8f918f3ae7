"""The memory-mapped 'array' data set, 'infovae data convert' and the trainer's DataLoader path."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from infovae import DataError
from infovae.api import start_training
from infovae.build import make_run_spec
from infovae.cli.main import cli
from infovae.runs import TrainerConfig


def convert(tmp_path, *args):
    r = CliRunner().invoke(cli, ["data", "convert", *args, "-q"])
    assert r.exit_code == 0, r.output
    return r


def train(tmp_path, name, dataset, options, steps=12):
    cfg = TrainerConfig(batch_size=32, steps=steps, seed=3, log_every=4, checkpoint_every=0, device="cpu")
    spec, ds = make_run_spec(
        dataset=dataset, dataset_options=options, latent_dim=3, encoder="mlp", encoder_options={"hidden": 16},
        decoder="bernoulli-mlp", decoder_options={"hidden": 16}, divergences=[("mmd", 10.0, {})], trainer=cfg,
    )
    tr = start_training(tmp_path / name, spec, ds)
    tr.fit()
    return tr


def test_convert_writes_every_split_and_label_exactly(registry, tmp_path):
    out = tmp_path / "digits"
    convert(tmp_path, "digits", str(out), "--shard-mib", "1")
    from infovae.plugins.datasets.array import ArrayDataset
    from infovae.plugins.datasets.digits import Digits

    ref, arr = Digits(), ArrayDataset(str(out))
    assert arr.spec == ref.spec and arr.splits == ref.splits
    for s in ref.splits:
        x = arr.split(s)
        assert torch.equal(torch.from_numpy(x[np.arange(len(x))]), ref.split(s))
        assert torch.equal(arr.labels(s), ref.labels(s).long())
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no partial directory left
    r = CliRunner().invoke(cli, ["data", "convert", "digits", str(out), "-q"])
    assert r.exit_code == 1 and "already exists" in r.output


def test_training_from_memory_mapped_shards_equals_training_in_memory(registry, tmp_path):
    """The DataLoader path feeds exactly the batches of the in-memory path: bitwise equal weights on CPU."""
    out = tmp_path / "digits-array"
    convert(tmp_path, "digits", str(out))
    a = train(tmp_path, "mem", "digits", {})
    b = train(tmp_path, "map", "array", {"path": str(out)})
    assert torch.is_tensor(a.x_train) and not torch.is_tensor(b.x_train)
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k]), k
    ma = [r for r in (tmp_path / "mem" / "metrics.jsonl").read_text().splitlines()]
    assert len(ma) == len((tmp_path / "map" / "metrics.jsonl").read_text().splitlines())


def test_single_npy_file_is_carved_and_read_in_any_order(tmp_path):
    from infovae.plugins.datasets.array import ArrayDataset

    x = np.random.default_rng(0).integers(0, 256, size=(50, 6, 5), dtype=np.uint8)  # (N, H, W)
    np.save(tmp_path / "x.npy", x)
    ds = ArrayDataset(str(tmp_path / "x.npy"), valid_size=10, test_size=5)
    assert ds.spec.kind == "gray8" and ds.spec.shape == (1, 6, 5)
    parts = [ds.split(s) for s in ("train", "valid", "test")]
    assert [len(p) for p in parts] == [35, 10, 5]
    seen = np.concatenate([p[np.arange(len(p))] for p in parts])[:, 0]
    assert sorted(map(bytes, seen)) == sorted(map(bytes, x))  # a partition of the rows
    idx = np.array([7, 2, 2, 30, 0])
    got = parts[0][idx]
    assert np.array_equal(got, parts[0][np.arange(35)][idx])  # order of the request kept


def test_bad_arrays_are_clear_errors(tmp_path):
    from infovae.plugins.datasets.array import ArrayDataset

    np.save(tmp_path / "f.npy", np.zeros((4, 1, 2, 2), dtype=np.float32))
    with pytest.raises(DataError, match="holds float32; expected uint8"):
        ArrayDataset(str(tmp_path / "f.npy"))
    np.save(tmp_path / "g.npy", np.full((4, 1, 2, 2), 7, dtype=np.uint8))
    with pytest.raises(DataError, match="kind binary but the data hold values up to 7"):
        ArrayDataset(str(tmp_path / "g.npy"), kind="binary")
    d = tmp_path / "d"
    d.mkdir()
    np.save(d / "a.npy", np.zeros((2, 1, 2, 2), dtype=np.uint8))
    (d / "manifest.json").write_text(json.dumps({"format": "infovae-array", "version": 1, "kind": "gray8", "shape": [1, 2, 2],
                                                 "splits": {"train": {"shards": ["../g.npy"], "count": 4}}}))
    with pytest.raises(DataError, match="is not a file inside"):
        ArrayDataset(str(d))
    (d / "manifest.json").write_text(json.dumps({"format": "infovae-array", "version": 1, "kind": "gray8", "shape": [1, 2, 2],
                                                 "splits": {"train": {"shards": ["a.npy"], "count": 3}}}))
    with pytest.raises(DataError, match="holds 2 examples but the manifest says 3"):
        ArrayDataset(str(d))


def test_reading_keeps_resident_memory_flat(tmp_path):
    """Rows are read in place: reading all of a 16 MiB file leaves resident memory where it was,
    while the same reads through numpy's memory map make it resident (the control)."""
    from infovae.plugins.datasets.array import MappedRows, open_npy

    n, shape = 4096, (1, 64, 64)  # 16 MiB
    mm = np.lib.format.open_memmap(tmp_path / "big.npy", mode="w+", dtype=np.uint8, shape=(n, *shape))
    mm[:] = np.arange(n, dtype=np.int64)[:, None, None, None] % 251
    mm.flush()
    del mm
    perm = np.random.default_rng(0).permutation(n)
    src = MappedRows([tmp_path / "big.npy"])
    before = _rss_file_kib()
    for lo in range(0, n, 256):
        got = src[perm[lo:lo + 256]]
        assert np.array_equal(got[:, 0, 0, 0], perm[lo:lo + 256] % 251)
    assert _rss_file_kib() - before < 1024
    control = open_npy(tmp_path / "big.npy")
    before = _rss_file_kib()
    for lo in range(0, n, 256):
        control[np.sort(perm[lo:lo + 256])]
    assert _rss_file_kib() - before > 12 * 1024


def _rss_file_kib():
    for line in open("/proc/self/status"):
        if line.startswith("RssFile:"):
            return int(line.split()[1])
    pytest.skip("no RssFile in /proc/self/status")
