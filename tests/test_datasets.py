"""Built-in data sets on small files written in the real formats (IDX, .amat, .npz, CIFAR .bin, PNG/JPEG)."""
from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

import infovae
from infovae import DataError, PluginOptionError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def make(name, **options):
    return infovae.registry().create("datasets", name, options)


def rows(x, y=None):
    """Order-free view of a split: sorted (label, image bytes) pairs."""
    x = np.asarray(x).reshape(len(x), -1)
    y = [None] * len(x) if y is None else np.asarray(y).tolist()
    return sorted(((lab if lab is not None else -1), bytes(r)) for lab, r in zip(y, x))


def check_split(ds, name, n, kind):
    x = ds.split(name)
    assert x.dtype == torch.uint8 and tuple(x.shape) == (n, *ds.spec.shape)
    assert ds.spec.kind == kind
    if kind == "binary":
        assert set(torch.unique(x).tolist()) <= {0, 1}
    return x


# -- digits ---------------------------------------------------------------------------------------
def test_digits_default_is_binary_labelled_and_complete():
    from sklearn.datasets import load_digits

    ds = make("digits")
    assert ds.splits == ("train", "valid", "test") and ds.spec == infovae.DataSpec("binary", (1, 8, 8))
    sizes = {s: len(check_split(ds, s, n, "binary")) for s, n in (("train", 1397), ("valid", 200), ("test", 200))}
    assert sum(sizes.values()) == 1797
    for s in ds.splits:
        y = ds.labels(s)
        assert y.dtype == torch.int64 and y.shape == (sizes[s],) and 0 <= int(y.min()) and int(y.max()) <= 9
    # The three splits partition the whole data set: same (label, image) multiset as scikit-learn's, thresholded at 8.
    ref = load_digits()
    want = rows((ref.images >= 8).astype(np.uint8), ref.target)
    got = rows(np.concatenate([ds.split(s).numpy() for s in ds.splits]), np.concatenate([ds.labels(s).numpy() for s in ds.splits]))
    assert got == want


def test_digits_is_deterministic_and_seeded():
    a, b, c = make("digits"), make("digits"), make("digits", seed=1)
    for s in a.splits:
        assert torch.equal(a.split(s), b.split(s)) and torch.equal(a.labels(s), b.labels(s))
    assert not torch.equal(a.labels("test"), c.labels("test"))


def test_digits_gray8_scales_0_16_to_0_255_and_agrees_with_binary():
    g, b = make("digits", kind="gray8"), make("digits")
    assert g.spec.kind == "gray8"
    xg = g.split("train")
    assert int(xg.max()) == 255 and int(xg.min()) == 0
    # Levels are round(v * 255 / 16) for v = 0..16 only.
    levels = set(np.rint(np.arange(17) * 255 / 16).astype(int).tolist())
    assert set(torch.unique(xg).tolist()) <= levels
    # value >= 8  <=>  round(value * 255 / 16) >= 128: the binary set is the thresholded gray set.
    assert torch.equal((xg >= 128).to(torch.uint8), b.split("train"))
    assert torch.equal(make("digits", threshold=4).split("test"), (make("digits", kind="gray8").split("test") >= 64).to(torch.uint8))


def test_digits_split_options_and_errors():
    ds = make("digits", valid_size=0, test_size=100)
    assert ds.splits == ("train", "test") and len(ds.split("train")) == 1697
    with pytest.raises(ValueError, match="unknown split 'valid'"):
        ds.split("valid")
    with pytest.raises(PluginOptionError):
        make("digits", valid_size=1000, test_size=797)
    with pytest.raises(PluginOptionError):
        make("digits", kind="rgb8")


# -- binarized MNIST -------------------------------------------------------------------------------
def binary_set(rng, sizes=(5, 3, 4)):
    return {s: (rng.random((n, 784)) < 0.3).astype(np.uint8) for s, n in zip(("train", "valid", "test"), sizes)}


def write_amat(path, x, fmt="{:d}", sep=" ", trailing=""):
    path.write_text("".join(sep.join(fmt.format(int(v)) for v in row) + trailing + "\n" for row in x))


def test_binarized_mnist_npz(tmp_path):
    rng = np.random.default_rng(0)
    data = binary_set(rng)
    y = rng.integers(0, 10, 4).astype(np.uint8)
    f = tmp_path / "b.npz"
    np.savez(f, x_train=data["train"], x_valid=data["valid"].reshape(-1, 28, 28), x_test=data["test"], y_test=y)
    ds = make("binarized-mnist", path=str(f))
    assert ds.spec == infovae.DataSpec("binary", (1, 28, 28)) and ds.splits == ("train", "valid", "test")
    for s, n in (("train", 5), ("valid", 3), ("test", 4)):
        x = check_split(ds, s, n, "binary")
        np.testing.assert_array_equal(x.numpy().reshape(n, 784), data[s])  # order kept, row-major 28x28
    assert ds.labels("train") is None and ds.labels("valid") is None
    assert ds.labels("test").dtype == torch.int64 and ds.labels("test").tolist() == y.tolist()
    # A directory holding binarized_mnist.npz is read as that archive.
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "binarized_mnist.npz").write_bytes(f.read_bytes())
    assert torch.equal(make("binarized-mnist", path=str(tmp_path / "d")).split("test"), ds.split("test"))


def test_binarized_mnist_amat_fast_and_general_layouts(tmp_path):
    data = binary_set(np.random.default_rng(1))
    classic, loose = tmp_path / "classic", tmp_path / "loose"
    classic.mkdir(), loose.mkdir()
    for s, x in data.items():
        write_amat(classic / f"binarized_mnist_{s}.amat", x)
        write_amat(loose / f"binarized_mnist_{s}.amat", x, fmt="{:d}.0", sep="\t ", trailing=" ")
    for root in (classic, loose):
        ds = make("binarized-mnist", path=str(root))
        for s, x in data.items():
            np.testing.assert_array_equal(check_split(ds, s, len(x), "binary").numpy().reshape(len(x), 784), x)
            assert ds.labels(s) is None


@pytest.mark.parametrize("problem", ["short_line", "bad_value", "not_number", "empty"])
def test_binarized_mnist_malformed_amat_names_file(tmp_path, problem):
    data = binary_set(np.random.default_rng(2))
    for s, x in data.items():
        write_amat(tmp_path / f"binarized_mnist_{s}.amat", x)
    bad = tmp_path / "binarized_mnist_valid.amat"
    lines = bad.read_text().splitlines()
    if problem == "short_line":
        lines[1] = lines[1][:-2]
    elif problem == "bad_value":
        lines[2] = "2" + lines[2][1:]
    elif problem == "not_number":
        lines[0] = "x" + lines[0][1:]
    else:
        lines = []
    bad.write_text("\n".join(lines) + ("\n" if lines else ""))
    ds = make("binarized-mnist", path=str(tmp_path))  # headers are fine; content is checked on load
    with pytest.raises(DataError, match="binarized_mnist_valid.amat"):
        ds.split("train")


def test_binarized_mnist_missing_files(tmp_path):
    with pytest.raises(DataError, match="path="):
        make("binarized-mnist")
    with pytest.raises(DataError, match="does not exist"):
        make("binarized-mnist", path=str(tmp_path / "nope.npz"))
    write_amat(tmp_path / "binarized_mnist_train.amat", np.zeros((1, 784), dtype=np.uint8))
    with pytest.raises(DataError, match="binarized_mnist_valid.amat.*binarized_mnist_test.amat"):
        make("binarized-mnist", path=str(tmp_path))


@pytest.mark.parametrize("problem", ["missing_key", "values", "shape", "labels", "pickled", "not_zip", "npy"])
def test_binarized_mnist_malformed_npz(tmp_path, problem):
    data = binary_set(np.random.default_rng(3))
    arrays = {f"x_{s}": x for s, x in data.items()}
    f = tmp_path / "b.npz"
    if problem == "missing_key":
        del arrays["x_valid"]
    elif problem == "values":
        arrays["x_train"] = arrays["x_train"] * 255
    elif problem == "shape":
        arrays["x_test"] = arrays["x_test"][:, :700]
    elif problem == "labels":
        arrays["y_test"] = np.arange(3)
    elif problem == "pickled":
        arrays["x_train"] = np.array([{"a": 1}] * 5, dtype=object)
    if problem == "not_zip":
        f.write_bytes(pickle.dumps(arrays))
    elif problem == "npy":
        f = tmp_path / "b.npy"
        np.save(f, data["train"])
    else:
        np.savez(f, **arrays)
    with pytest.raises(DataError, match=str(f.name)) as info:
        make("binarized-mnist", path=str(f)).split("train")
    if problem == "missing_key":
        assert "x_valid" in str(info.value)


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "binarized_mnist.npz").exists(), reason="../shared/data/binarized_mnist.npz is absent")
def test_binarized_mnist_real_file():
    ds = make("binarized-mnist", path=str(SHARED / "binarized_mnist.npz"))
    for s, n in (("train", 50000), ("valid", 10000), ("test", 10000)):
        x = check_split(ds, s, n, "binary")
        assert 0.1 < x.float().mean().item() < 0.2  # about 13% of MNIST pixels are on
    assert ds.labels("train") is None and ds.labels("test").shape == (10000,)
    assert sorted(torch.unique(ds.labels("test")).tolist()) == list(range(10))


# -- MNIST IDX ------------------------------------------------------------------------------------
def idx_bytes(a: np.ndarray, type_code: int = 0x08) -> bytes:
    return bytes([0, 0, type_code, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape) + a.astype(np.uint8).tobytes()


NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def write_mnist(root: Path, gz=False, n_train=12, n_test=6, h=5, w=4, seed=0, override=None):
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, h, w), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, h, w), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    root.mkdir(parents=True, exist_ok=True)
    for key, a in arrays.items():
        raw = (override or {}).get(key) or idx_bytes(a)
        name = NAMES[key]
        if gz:
            (root / (name + ".gz")).write_bytes(gzip.compress(raw))
        else:
            (root / name).write_bytes(raw)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_gray_reads_idx(tmp_path, gz):
    a = write_mnist(tmp_path, gz=gz)
    ds = make("mnist", path=str(tmp_path), binarize="none", valid_size=3)
    assert ds.spec == infovae.DataSpec("gray8", (1, 5, 4)) and ds.splits == ("train", "valid", "test")
    check_split(ds, "train", 9, "gray8"), check_split(ds, "valid", 3, "gray8")
    np.testing.assert_array_equal(check_split(ds, "test", 6, "gray8").numpy()[:, 0], a["test_images"])
    assert ds.labels("test").dtype == torch.int64 and ds.labels("test").tolist() == a["test_labels"].tolist()
    got = rows(torch.cat([ds.split("train"), ds.split("valid")]), torch.cat([ds.labels("train"), ds.labels("valid")]))
    assert got == rows(a["train_images"], a["train_labels"])
    assert not ds.dynamic


def test_mnist_gzip_and_plain_agree_and_split_is_seeded(tmp_path):
    write_mnist(tmp_path / "p"), write_mnist(tmp_path / "g", gz=True)
    p = make("mnist", path=str(tmp_path / "p"), binarize="none", valid_size=4)
    g = make("mnist", path=str(tmp_path / "g"), binarize="none", valid_size=4)
    other = make("mnist", path=str(tmp_path / "p"), binarize="none", valid_size=4, seed=5)
    for s in p.splits:
        assert torch.equal(p.split(s), g.split(s)) and torch.equal(p.labels(s), g.labels(s))
    assert not torch.equal(p.labels("valid"), other.labels("valid")) or not torch.equal(p.split("valid"), other.split("valid"))
    assert make("mnist", path=str(tmp_path / "p"), valid_size=0).splits == ("train", "test")


def test_mnist_binarizations(tmp_path):
    a = write_mnist(tmp_path)
    thr = make("mnist", path=str(tmp_path), binarize="threshold", valid_size=2)
    assert thr.spec.kind == "binary"
    np.testing.assert_array_equal(check_split(thr, "test", 6, "binary").numpy()[:, 0], (a["test_images"] >= 128).astype(np.uint8))

    st1 = make("mnist", path=str(tmp_path), binarize="static", valid_size=2)
    st2 = make("mnist", path=str(tmp_path), binarize="static", valid_size=2)
    for s in st1.splits:
        x = check_split(st1, s, {"train": 10, "valid": 2, "test": 6}[s], "binary")
        assert torch.equal(x, st1.split(s)) and torch.equal(x, st2.split(s))  # fixed draw
    gray = make("mnist", path=str(tmp_path), binarize="none", valid_size=2)
    xs, xg = st1.split("test"), gray.split("test")
    assert torch.all(xs[xg == 0] == 0) and torch.all(xs[xg == 255] == 1)

    dyn = make("mnist", path=str(tmp_path), binarize="dynamic", valid_size=2)
    assert dyn.dynamic and dyn.spec.kind == "binary"
    d1, d2 = check_split(dyn, "train", 10, "binary"), check_split(dyn, "train", 10, "binary")
    assert not torch.equal(d1, d2)  # 200 pixels with p strictly inside (0, 1): two draws agree with negligible chance
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    assert torch.equal(dyn.split("train", generator=g1), dyn.split("train", generator=g2))
    # valid and test are drawn once, the same as the static set's, so evaluations are comparable.
    for s in ("valid", "test"):
        assert torch.equal(dyn.split(s), dyn.split(s)) and torch.equal(dyn.split(s), st1.split(s))
    assert torch.equal(dyn.labels("train"), gray.labels("train"))


def test_bernoulli_uint8_has_probability_value_over_255():
    from infovae.plugins.datasets.mnist import bernoulli_uint8

    n = 200_000
    values = torch.tensor([0, 1, 64, 128, 254, 255], dtype=torch.uint8)
    draws = bernoulli_uint8(values.repeat(n, 1), torch.Generator().manual_seed(0)).double().mean(0)
    p = values.double() / 255
    bound = 5 * torch.sqrt(p * (1 - p) / n)
    assert torch.all((draws - p).abs() <= bound), (draws, p)


@pytest.mark.parametrize(
    "problem, match",
    [
        ("missing", "t10k-labels-idx1-ubyte"),
        ("swapped", "train-labels-idx1-ubyte.*dimension"),
        ("magic", "t10k-images-idx3-ubyte.*not an IDX file"),
        ("float", "t10k-images-idx3-ubyte.*float"),
        ("truncated", "train-images-idx3-ubyte.*truncated"),
        ("count", "t10k-images-idx3-ubyte.*6 images.*5 labels"),
        ("shape", "train images are"),
    ],
)
@pytest.mark.parametrize("gz", [False, True])
def test_mnist_malformed_files_name_the_file(tmp_path, problem, match, gz):
    good = idx_bytes(np.zeros((12, 5, 4), np.uint8))
    override = {
        "swapped": {"train_labels": idx_bytes(np.zeros((12, 5, 4), np.uint8))},
        "magic": {"test_images": b"\x12\x34" + good[2:]},
        "float": {"test_images": idx_bytes(np.zeros((6, 5, 4), np.uint8), type_code=0x0D)},
        "truncated": {"train_images": good[:-7]},
        "count": {"test_labels": idx_bytes(np.zeros(5, np.uint8))},
        "shape": {"test_images": idx_bytes(np.zeros((6, 4, 5), np.uint8))},
    }.get(problem)
    write_mnist(tmp_path, gz=gz, override=override)
    if problem == "missing":
        (tmp_path / (NAMES["test_labels"] + (".gz" if gz else ""))).unlink()
    with pytest.raises(DataError, match=match):
        make("mnist", path=str(tmp_path), valid_size=2).split("train")


def test_mnist_bad_gzip_path_and_options(tmp_path):
    write_mnist(tmp_path, gz=True)
    (tmp_path / (NAMES["train_images"] + ".gz")).write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz"):
        make("mnist", path=str(tmp_path))
    with pytest.raises(DataError, match="path="):
        make("mnist")
    write_mnist(tmp_path / "ok")
    with pytest.raises(PluginOptionError, match="valid_size"):
        make("mnist", path=str(tmp_path / "ok"), valid_size=12)
    with pytest.raises(DataError, match="not a directory"):
        make("mnist", path=str(tmp_path / "ok" / NAMES["test_labels"]))


# -- CIFAR-10 -------------------------------------------------------------------------------------
def write_cifar(root: Path, per_batch=3, n_test=2, seed=0):
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, n in [(f"data_batch_{i}.bin", per_batch) for i in range(1, 6)] + [("test_batch.bin", n_test)]:
        x = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        y = rng.integers(0, 10, n, dtype=np.uint8)
        # Record = label byte, then the red, green and blue 32x32 planes, row-major.
        (root / name).write_bytes(b"".join(bytes([y[i]]) + x[i, 0].tobytes() + x[i, 1].tobytes() + x[i, 2].tobytes() for i in range(n)))
        out[name] = (x, y)
    return out


def test_cifar10_binary_batches(tmp_path):
    data = write_cifar(tmp_path / "cifar-10-batches-bin")
    for path in (tmp_path / "cifar-10-batches-bin", tmp_path):  # the folder itself or its parent
        ds = make("cifar10", path=str(path), valid_size=4)
        assert ds.spec == infovae.DataSpec("rgb8", (3, 32, 32)) and ds.splits == ("train", "valid", "test")
        x, y = data["test_batch.bin"]
        np.testing.assert_array_equal(check_split(ds, "test", 2, "rgb8").numpy(), x)
        assert ds.labels("test").tolist() == y.tolist() and ds.labels("test").dtype == torch.int64
        check_split(ds, "train", 11, "rgb8"), check_split(ds, "valid", 4, "rgb8")
        train = [data[f"data_batch_{i}.bin"] for i in range(1, 6)]
        want = rows(np.concatenate([t[0] for t in train]), np.concatenate([t[1] for t in train]))
        assert rows(torch.cat([ds.split("train"), ds.split("valid")]), torch.cat([ds.labels("train"), ds.labels("valid")])) == want


class _Boom:
    """Unpickling this object would create a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_cifar10_refuses_pickle_version_without_unpickling(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    marker = tmp_path / "unpickled"
    for name in ["batches.meta", "test_batch"] + [f"data_batch_{i}" for i in range(1, 6)]:
        (root / name).write_bytes(pickle.dumps(_Boom(str(marker))))
    for path in (root, tmp_path):
        with pytest.raises(DataError, match="pickle.*cifar-10-binary.tar.gz"):
            make("cifar10", path=str(path))
    assert not marker.exists()


def test_cifar10_malformed(tmp_path):
    write_cifar(tmp_path)
    (tmp_path / "data_batch_3.bin").write_bytes((tmp_path / "data_batch_3.bin").read_bytes()[:-1])
    with pytest.raises(DataError, match="data_batch_3.bin.*3073"):
        make("cifar10", path=str(tmp_path), valid_size=2)
    write_cifar(tmp_path)
    (tmp_path / "test_batch.bin").unlink()
    with pytest.raises(DataError, match="test_batch.bin"):
        make("cifar10", path=str(tmp_path), valid_size=2)
    write_cifar(tmp_path)
    raw = bytearray((tmp_path / "data_batch_2.bin").read_bytes())
    raw[3073] = 10  # the second record's label
    (tmp_path / "data_batch_2.bin").write_bytes(bytes(raw))
    ds = make("cifar10", path=str(tmp_path), valid_size=2)
    with pytest.raises(DataError, match="data_batch_2.bin record 1 has label 10"):
        ds.split("test")
    with pytest.raises(PluginOptionError):
        make("cifar10", path=str(tmp_path), valid_size=15)
    with pytest.raises(DataError, match="path="):
        make("cifar10")


# -- image folder ---------------------------------------------------------------------------------
def write_images(root: Path, n_per_class=(4, 3, 5), size=(6, 7), mode="L", ext="png", classes=("cat", "ant", "bee"), seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    written = []
    for cls, n in zip(classes, n_per_class):
        d = root / cls if cls else root
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            shape = size if mode == "L" else (*size, 3)
            a = rng.integers(0, 256, shape, dtype=np.uint8)
            Image.fromarray(a).save(d / f"img{i}.{ext}")
            written.append((cls, a))
    return written


def test_image_folder_gray_with_class_labels(tmp_path):
    written = write_images(tmp_path)
    ds = make("image-folder", path=str(tmp_path), valid_fraction=0.25, test_fraction=0.2)
    assert ds.spec == infovae.DataSpec("gray8", (1, 6, 7)) and ds.classes == ["ant", "bee", "cat"]
    assert ds.splits == ("train", "valid", "test")
    n = {s: len(check_split(ds, s, {"train": 7, "valid": 3, "test": 2}[s], "gray8")) for s in ds.splits}
    index = {c: i for i, c in enumerate(sorted({c for c, _ in written}))}
    want = rows(np.stack([a for _, a in written]), np.array([index[c] for c, _ in written]))
    got = rows(torch.cat([ds.split(s) for s in ds.splits]), torch.cat([ds.labels(s) for s in ds.splits]))
    assert got == want and sum(n.values()) == 12
    again = make("image-folder", path=str(tmp_path), valid_fraction=0.25, test_fraction=0.2)
    assert all(torch.equal(again.split(s), ds.split(s)) for s in ds.splits)


def test_image_folder_modes_resize_jpeg_and_no_labels(tmp_path):
    written = write_images(tmp_path, n_per_class=(5,), classes=("",), mode="RGB", size=(8, 6))
    rgb = make("image-folder", path=str(tmp_path), mode="rgb8", valid_fraction=0.0, test_fraction=0.0)
    assert rgb.spec == infovae.DataSpec("rgb8", (3, 8, 6)) and rgb.splits == ("train",) and rgb.classes is None
    x = check_split(rgb, "train", 5, "rgb8")
    assert rgb.labels("train") is None
    assert rows(x) == rows(np.stack([a.transpose(2, 0, 1) for _, a in written]))  # R, G, B planes
    gray = make("image-folder", path=str(tmp_path), valid_fraction=0.0, test_fraction=0.0).split("train")
    binary = make("image-folder", path=str(tmp_path), mode="binary", threshold=100, valid_fraction=0.0, test_fraction=0.0)
    assert torch.equal(check_split(binary, "train", 5, "binary"), (gray >= 100).to(torch.uint8))
    small = make("image-folder", path=str(tmp_path), size="4x3", valid_fraction=0.0, test_fraction=0.0)
    assert small.spec.shape == (1, 4, 3) and check_split(small, "train", 5, "gray8").shape == (5, 1, 4, 3)
    assert make("image-folder", path=str(tmp_path), size="5", valid_fraction=0.0, test_fraction=0.0).split("train").shape == (5, 1, 5, 5)
    # JPEG: lossy, so check a flat image comes back close to its level.
    from PIL import Image

    jpg = tmp_path / "jpg" / "a"
    jpg.mkdir(parents=True)
    for i, level in enumerate((40, 200)):
        Image.fromarray(np.full((8, 8), level, np.uint8)).save(jpg / f"{i}.jpeg")
    j = make("image-folder", path=str(tmp_path / "jpg"), valid_fraction=0.0, test_fraction=0.0)
    means = sorted(j.split("train").double().mean((1, 2, 3)).tolist())
    assert abs(means[0] - 40) < 3 and abs(means[1] - 200) < 3 and j.labels("train").tolist() == [0, 0]


def test_image_folder_errors(tmp_path):
    with pytest.raises(DataError, match="no .png"):
        make("image-folder", path=str(tmp_path))
    write_images(tmp_path / "a", n_per_class=(2,), classes=("x",), size=(6, 7))
    write_images(tmp_path / "a", n_per_class=(1,), classes=("y",), size=(7, 6))
    with pytest.raises(DataError, match=r"img0.png is 7x6 but .*img0.png is 6x7.*size=HxW"):
        make("image-folder", path=str(tmp_path / "a"))
    (tmp_path / "b").mkdir()
    write_images(tmp_path / "b", n_per_class=(3,), classes=("x",))
    (tmp_path / "b" / "x" / "fake.png").write_bytes(b"this is not a png")
    with pytest.raises(DataError, match="fake.png"):
        make("image-folder", path=str(tmp_path / "b"))
    with pytest.raises(PluginOptionError, match="size"):
        make("image-folder", path=str(tmp_path / "a"), size="4by4")
    with pytest.raises(PluginOptionError, match="no training images"):
        make("image-folder", path=str(tmp_path / "a"), size="4", valid_fraction=0.7, test_fraction=0.7)
    with pytest.raises(DataError, match="path="):
        make("image-folder")
