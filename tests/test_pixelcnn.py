"""Gated PixelCNN decoder: contract, exact causality without blind spot, exact normalization, sampling."""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import chi2

import infovae
from infovae import CapabilityError, DataSpec, PluginOptionError

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def build(spec, latent_dim=3, dtype=torch.float64, seed=0, **options):
    torch.manual_seed(seed)
    dec = infovae.registry().create("decoders", "pixelcnn", options, spec, latent_dim)
    return dec.to(dtype).eval()


def random_images(spec, n, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    if spec.kind == "binary":
        return torch.randint(0, 2, (n, *spec.shape), generator=g).to(dtype)
    return torch.randint(0, 256, (n, *spec.shape), generator=g).to(dtype) / 127.5 - 1


def test_registration_and_capabilities():
    info = infovae.registry().info("decoders", "pixelcnn")
    assert info.supports == ("binary", "gray8")
    assert {o.name: o.default for o in info.options} == {"layers": 5, "channels": 32, "kernel_size": 3, "fast": True}
    with pytest.raises(CapabilityError, match="rgb8"):
        build(DataSpec("rgb8", (3, 4, 4)))
    with pytest.raises(PluginOptionError, match="odd"):
        build(DataSpec("binary", (1, 4, 4)), kernel_size=4)
    dec = build(DataSpec("binary", (1, 4, 4)), layers=2, channels=4)
    with pytest.raises(ValueError, match=r"\(2, 1, 4, 4\)"):
        dec.log_prob(torch.zeros(2, 1, 4, 5, dtype=torch.float64), torch.zeros(2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="codes z"):
        dec.sample(torch.zeros(2, 4, dtype=torch.float64))


@pytest.mark.parametrize("kind", ["binary", "gray8"])
def test_log_prob_shapes_and_terms(kind):
    spec = DataSpec(kind, (1, 5, 6))
    dec = build(spec, layers=2, channels=4)
    x, z = random_images(spec, 3), torch.randn(3, 3, dtype=torch.float64)
    total, terms = dec.log_prob(x, z), dec.log_prob(x, z, reduction="none")
    assert total.shape == (3,) and terms.shape == (3, 1, 5, 6)
    torch.testing.assert_close(terms.flatten(1).sum(1), total)
    assert (terms < 0).all()


@pytest.mark.parametrize("kind,k", [("binary", 3), ("gray8", 3), ("binary", 5)])
def test_causality_is_exact_and_there_is_no_blind_spot(kind, k):
    """float64, exact zeros: the log-likelihood term of pixel i does not depend on pixels j > i, and the
    network output at i (the parameters of p(x_i | x_<i, z)) not on pixels j >= i; every j < i is seen."""
    spec = DataSpec(kind, (1, 6, 6))
    dec = build(spec, layers=6 if k == 3 else 3, channels=8, kernel_size=k)
    seen = torch.zeros(36, 36, dtype=torch.bool)
    for seed in range(3):  # a union over inputs: a relu of the head may be off at a position for one input
        z = torch.randn(1, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        x = random_images(spec, 1, seed=seed).requires_grad_()
        terms = dec.log_prob(x, z, reduction="none").flatten()
        out = dec(x, z)[0].flatten(1)  # (P, 36)
        for i in range(36):
            (g,) = torch.autograd.grad(terms[i], x, retain_graph=True)
            g = g.flatten()
            assert (g[i + 1 :] == 0).all(), f"term {i} depends on pixels {torch.nonzero(g[i + 1:]).flatten() + i + 1}"
            (go,) = torch.autograd.grad(out[:, i].sum(), x, retain_graph=True)
            go = go.flatten()
            assert (go[i:] == 0).all(), f"output {i} depends on pixels {torch.nonzero(go[i:]).flatten() + i}"
            seen[i] |= go != 0
    assert torch.equal(seen, torch.ones(36, 36, dtype=torch.bool).tril(-1)), "blind spot"


def test_z_conditions_every_pixel():
    spec = DataSpec("binary", (1, 4, 4))
    dec = build(spec, layers=2, channels=4)
    x = random_images(spec, 2)
    z = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    terms = dec.log_prob(x, z, reduction="none")
    for i in (0, 7, 15):
        (g,) = torch.autograd.grad(terms[0].flatten()[i], z, retain_graph=True)
        assert (g[0] != 0).all() and (g[1] == 0).all()


def test_binary_probabilities_over_all_3x3_images_sum_to_one():
    spec = DataSpec("binary", (1, 3, 3))
    dec = build(spec, layers=3, channels=4)
    images = torch.tensor(list(itertools.product([0.0, 1.0], repeat=9)), dtype=torch.float64).view(-1, 1, 3, 3)
    for z in torch.randn(2, 3, dtype=torch.float64):
        with torch.no_grad():
            total = dec.log_prob(images, z.expand(len(images), 3)).exp().sum()
        assert abs(float(total) - 1) < 1e-12


def test_gray_probabilities_over_all_1x2_images_sum_to_one():
    spec = DataSpec("gray8", (1, 1, 2))
    dec = build(spec, layers=2, channels=4)
    levels = torch.arange(256, dtype=torch.float64) / 127.5 - 1
    images = torch.stack(torch.meshgrid(levels, levels, indexing="ij"), -1).reshape(-1, 1, 1, 2)
    with torch.no_grad():
        total = dec.log_prob(images, torch.randn(1, 3, dtype=torch.float64).expand(len(images), 3)).exp().sum()
    assert abs(float(total) - 1) < 1e-10


def pearson_p(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """Pearson's chi-square p-value; cells expecting fewer than 5 counts are pooled into one."""
    n = counts.sum()
    keep = probs * n >= 5
    counts = torch.cat((counts[keep], counts[~keep].sum().view(1)))
    expected = torch.cat((probs[keep], probs[~keep].sum().view(1))) * n
    if expected[-1] < 5:  # pooled cell too small: drop it and renormalize the rest
        counts, expected = counts[:-1], expected[:-1] * counts[:-1].sum() / expected[:-1].sum()
    return float(chi2.sf(float(((counts - expected) ** 2 / expected).sum()), df=len(counts) - 1))


@pytest.mark.parametrize("fast", [True, False])
def test_binary_samples_follow_the_model(fast):
    """Histogram of 2x2 samples for one z against the 16 enumerated probabilities (chi-square, p > 1e-3:
    a false alarm once in a thousand seeds; the deliberately wrong model below is rejected at p < 1e-12)."""
    spec = DataSpec("binary", (1, 2, 2))
    dec = build(spec, layers=2, channels=4)
    with torch.no_grad():  # sharpen the model a little so that the wrong model below is clearly wrong
        dec.head2.weight.mul_(8.0)
    n = 40_000
    z = torch.randn(1, 3, dtype=torch.float64).expand(n, 3)
    x = dec.sample(z, generator=torch.Generator().manual_seed(0), fast=fast)
    assert set(x.unique().tolist()) <= {0.0, 1.0}
    idx = (x.view(n, 4) * torch.tensor([8.0, 4.0, 2.0, 1.0], dtype=torch.float64)).sum(1).long()
    counts = torch.bincount(idx, minlength=16).double()
    images = torch.tensor(list(itertools.product([0.0, 1.0], repeat=4)), dtype=torch.float64).view(16, 1, 2, 2)
    with torch.no_grad():
        probs = dec.log_prob(images, z[:16]).exp()
        # the same model with raster order reversed inside the image is a different distribution
        wrong = dec.log_prob(images.flip(-1, -2), z[:16]).exp()
    assert pearson_p(counts, probs) > 1e-3
    assert pearson_p(counts, wrong) < 1e-12


def test_gray_samples_follow_the_model():
    spec = DataSpec("gray8", (1, 1, 1))
    dec = build(spec, layers=1, channels=4)
    n = 60_000
    z = torch.randn(1, 3, dtype=torch.float64).expand(n, 3)
    x = dec.sample(z, generator=torch.Generator().manual_seed(1))
    levels = torch.round((x.flatten() + 1) * 127.5)
    assert torch.equal(levels / 127.5 - 1, x.flatten())
    counts = torch.bincount(levels.long(), minlength=256).double()
    with torch.no_grad():
        probs = dec.log_prob(torch.arange(256, dtype=torch.float64).view(256, 1, 1, 1) / 127.5 - 1, z[:256]).exp()
    assert pearson_p(counts, probs) > 1e-3


@pytest.mark.parametrize("kind", ["binary", "gray8"])
def test_fast_sampler_equals_naive_sampler(kind):
    spec = DataSpec(kind, (1, 5, 7))
    dec = build(spec, layers=3, channels=6)
    z = torch.randn(3, 3, dtype=torch.float64)
    naive = dec.sample(z, generator=torch.Generator().manual_seed(5), fast=False)
    fast = dec.sample(z, generator=torch.Generator().manual_seed(5), fast=True)
    assert torch.equal(naive, fast)


def test_batch_size_does_not_matter():
    spec = DataSpec("gray8", (1, 4, 5))
    dec = build(spec, layers=2, channels=4)
    x, z = random_images(spec, 4), torch.randn(4, 3, dtype=torch.float64)
    torch.testing.assert_close(dec.log_prob(x[:1], z[:1]), dec.log_prob(x, z)[:1], rtol=1e-12, atol=1e-10)
    both = dec.sample(z, generator=torch.Generator().manual_seed(2))
    one = dec.sample(z[:1], generator=torch.Generator().manual_seed(2))
    assert torch.equal(both[:1], one)


def test_float32_sampling_and_bf16_training_forward():
    spec = DataSpec("binary", (1, 6, 6))
    dec = build(spec, dtype=torch.float32, layers=2, channels=8)
    z = torch.randn(4, 3)
    x = dec.sample(z, generator=torch.Generator().manual_seed(0))
    assert x.dtype == torch.float32 and set(x.unique().tolist()) <= {0.0, 1.0}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        lp = dec.log_prob(x, z)
    assert lp.dtype == torch.float32 and torch.isfinite(lp).all()
    torch.testing.assert_close(lp, dec.log_prob(x, z), rtol=0.05, atol=0.5)


@pytest.mark.slow
def test_pixelcnn_vae_learns_binarized_mnist():
    """A small PixelCNN-VAE (MLP encoder) trained for 300 steps lowers the test negative ELBO (nats)."""
    path = DATA / "binarized_mnist.npz"
    if not path.exists():
        pytest.skip(f"{path} not found (see shared/data/README.md)")
    torch.manual_seed(0)
    with np.load(path) as f:
        train = torch.from_numpy(f["x_train"][:20000]).float().view(-1, 1, 28, 28)
        test = torch.from_numpy(f["x_test"][::20]).float().view(-1, 1, 28, 28)  # 500 images, every digit
    spec, d = DataSpec("binary", (1, 28, 28)), 8

    class Encoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 256), torch.nn.ReLU(), torch.nn.Linear(256, 2 * d))

        def forward(self, x):
            loc, log_scale = self.net(x).chunk(2, dim=1)
            return infovae.diagonal_gaussian(loc, log_scale)

    decoder = infovae.registry().create("decoders", "pixelcnn", {"layers": 3, "channels": 16}, spec, d)
    model = infovae.InfoVAE(spec, d, Encoder(), decoder)
    prior = model.prior.distribution()

    def neg_elbo(x):
        q = model.posterior(x)
        z = q.rsample()
        return -model.log_likelihood(x, z) + torch.distributions.kl_divergence(q, prior)

    def test_bound():
        model.eval()
        g = torch.random.get_rng_state()
        torch.manual_seed(123)
        with torch.no_grad():
            value = float(torch.cat([neg_elbo(b) for b in test.split(100)]).mean())
        torch.random.set_rng_state(g)
        model.train()
        return value

    before = test_bound()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    for step in range(300):
        batch = train[torch.randint(0, len(train), (32,))]
        loss = neg_elbo(batch).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = test_bound()
    print(f"test negative ELBO: {before:.1f} -> {after:.1f} nats")
    assert before > 400  # an untrained model is near 784 * log 2 = 543 nats
    assert after < 160, (before, after)
    samples = model.eval().sample(4, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (4, 1, 28, 28) and set(samples.unique().tolist()) <= {0.0, 1.0}
