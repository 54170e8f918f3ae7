"""The CNN class classifier of the class-distribution metric: it learns, it is cached as safetensors and
reused only for the same data, and on binarized MNIST it deserves the name (slow, real data)."""
import json
import os

import numpy as np
import pytest
import torch

from infovae.classifier import ClassifierCNN, fingerprint, trained_classifier
from infovae.io import read_safetensors
from infovae.metrics.labels import _split

LONG = pytest.mark.skipif(not os.environ.get("INFOVAE_LONG_TESTS"), reason="long; set INFOVAE_LONG_TESTS=1")


def shifted_bars(n=400, seed=0):
    """Three classes of 8x8 images: a horizontal bar, a vertical bar, a 2x2 block, each at a random place,
    with 2% of the pixels flipped. The class is the shape wherever it lies: a CNN's job."""
    g = np.random.default_rng(seed)
    x = np.zeros((n, 1, 8, 8), np.float32)
    y = g.integers(0, 3, n)
    for i, c in enumerate(y):
        r, s = g.integers(0, 6, 2)
        if c == 0:
            x[i, 0, r, s:s + 3] = 1
        elif c == 1:
            x[i, 0, r:r + 3, s] = 1
        else:
            x[i, 0, r:r + 2, s:s + 2] = 1
    flip = g.random(x.shape) < 0.02
    x[flip] = 1 - x[flip]
    return torch.from_numpy(x), torch.from_numpy(y)


def test_cnn_learns_shapes_and_reports_held_out_accuracy():
    x, y = shifted_bars()
    tr, te = _split(len(y), 300, 0)
    net, info = trained_classifier(x, y, tr, te, 3)
    truth = (net.predict(x[te]) == y[te].numpy()).mean()
    assert info["accuracy"] == pytest.approx(truth) and info["n_train"] == 300 and info["n_test"] == 100
    assert info["accuracy"] >= 0.9  # chance is about 1/3
    assert info["accuracy"] > (net.predict(x[tr]) == y[tr].numpy()).mean() - 0.1  # held out, not memorised
    assert info["cached"] is False and info["path"] is None


def patterns(n=120, seed=0):
    """2x2 images of three fixed patterns (tiny, so fitting is cheap)."""
    y = torch.from_numpy(np.random.default_rng(seed).integers(0, 3, n))
    pats = torch.tensor([[1.0, 0, 0, 0], [0, 1, 1, 0], [1, 1, 1, 1]])
    return pats[y].view(-1, 1, 2, 2), y


def test_cache_is_safetensors_reused_for_the_same_data_only(tmp_path):
    x, y = patterns()
    tr, te = _split(len(y), 90, 0)
    net, info = trained_classifier(x, y, tr, te, 3, cache_dir=tmp_path)
    assert info["accuracy"] == 1.0
    files = list(tmp_path.iterdir())
    assert len(files) == 1 and files[0].suffix == ".safetensors"
    tensors, meta = read_safetensors(files[0])  # plain tensors and a JSON header: nothing to execute
    assert json.loads(meta["infovae_classifier"])["accuracy"] == info["accuracy"]
    assert set(tensors) == set(net.state_dict())

    again, info2 = trained_classifier(x, y, tr, te, 3, cache_dir=tmp_path)
    assert info2["cached"] is True and info2["accuracy"] == info["accuracy"]
    assert np.array_equal(again.predict(x), net.predict(x))

    y2 = y.clone()
    y2[0] = (y2[0] + 1) % 3  # other labels: another fingerprint, another file, retrained
    _, info3 = trained_classifier(x, y2, tr, te, 3, cache_dir=tmp_path)
    assert info3["cached"] is False and len(list(tmp_path.iterdir())) == 2
    assert fingerprint(x, y, tr, 3, 0) != fingerprint(x, y2, tr, 3, 0) != fingerprint(x, y, te, 3, 0)


def test_a_corrupt_cache_file_is_retrained_and_replaced(tmp_path):
    x, y = patterns()
    tr, te = _split(len(y), 90, 0)
    _, info = trained_classifier(x, y, tr, te, 3, cache_dir=tmp_path)
    path = tmp_path / os.path.basename(info["path"])
    path.write_bytes(b"not a safetensors file")
    _, info2 = trained_classifier(x, y, tr, te, 3, cache_dir=tmp_path)
    assert info2["cached"] is False and info2["accuracy"] == info["accuracy"]  # deterministic refit
    assert trained_classifier(x, y, tr, te, 3, cache_dir=tmp_path)[1]["cached"] is True


def test_tiny_images_skip_pooling():
    net = ClassifierCNN(1, 2, 2, 3)
    assert net(torch.zeros(5, 1, 2, 2)).shape == (5, 3)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in net.modules())


@pytest.mark.slow
@LONG
def test_cnn_is_at_least_97_percent_on_held_out_binarized_mnist(shared_data):
    path = shared_data / "binarized_mnist.npz"
    if not path.exists():
        pytest.skip(f"{path} not found")
    d = np.load(path)
    x = torch.from_numpy(d["x_test"]).float().view(-1, 1, 28, 28)
    y = torch.from_numpy(d["y_test"]).long()
    tr, te = _split(len(y), 8000, 0)  # the class-distribution metric's split (classifier_test_fraction 0.2)
    _, info = trained_classifier(x, y, tr, te, 10)
    assert info["accuracy"] >= 0.97


def test_metric_refuses_an_unusable_cache_directory_before_any_work(registry, tmp_path):
    """A cache path that cannot be a directory is refused when the metric is built, in one line naming the
    option and the fix, not after minutes of fitting; a new directory is made, an existing one is kept."""
    from infovae import PluginOptionError

    afile = tmp_path / "afile"
    afile.write_text("not a directory")
    for bad in (afile / "sub", afile):
        with pytest.raises(PluginOptionError, match=r"option 'classifier_cache' of metric 'class-distribution'.*"
                                                    r"name a directory you can write in") as err:
            registry.create("metrics", "class-distribution", {"classifier_cache": str(bad)})
        assert "\n" not in str(err.value)
    assert afile.read_text() == "not a directory"
    fresh = tmp_path / "new" / "cache"
    registry.create("metrics", "class-distribution", {"classifier_cache": str(fresh)})
    assert fresh.is_dir() and not any(fresh.iterdir())
