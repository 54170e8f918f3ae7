"""PixelCNN++ decoder: contract, exact causality (raster and RGB channel order), conditioning, dropout, sampling."""
from __future__ import annotations

import pytest
import torch
from scipy.stats import chi2

import infovae
from infovae import CapabilityError, DataSpec, PluginOptionError


def build(spec, latent_dim=3, dtype=torch.float64, seed=0, **options):
    torch.manual_seed(seed)
    options = {"nr_filters": 4, **options}
    dec = infovae.registry().create("decoders", "pixelcnnpp", options, spec, latent_dim)
    return dec.to(dtype).eval()


def random_images(spec, n, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, *spec.shape), generator=g).to(dtype) / 127.5 - 1


def test_registration_presets_and_capabilities():
    info = infovae.registry().info("decoders", "pixelcnnpp")
    assert info.supports == ("gray8", "rgb8")
    torch.manual_seed(0)
    reg = infovae.registry()
    paper = reg.create("decoders", "pixelcnnpp", {"preset": "paper", "nr_filters": "8"}, DataSpec("rgb8", (3, 8, 8)), 2)
    assert (paper.nr_resnet, paper.nr_filters, paper.nr_logistic_mix, paper.dropout) == (5, 8, 10, 0.5)
    small = reg.create("decoders", "pixelcnnpp", {}, DataSpec("gray8", (1, 8, 8)), 2)
    assert (small.nr_resnet, small.nr_filters, small.nr_logistic_mix, small.dropout) == (1, 32, 5, 0.0)
    with pytest.raises(CapabilityError, match="divisible by 4"):
        build(DataSpec("gray8", (1, 30, 28)))
    with pytest.raises(CapabilityError, match="binary"):
        build(DataSpec("binary", (1, 8, 8)))
    with pytest.raises(PluginOptionError):
        reg.create("decoders", "pixelcnnpp", {"preset": "huge"}, DataSpec("gray8", (1, 8, 8)), 2)


@pytest.mark.parametrize("kind,shape", [("gray8", (1, 8, 8)), ("rgb8", (3, 8, 12)), ("gray8", (1, 28, 28)), ("rgb8", (3, 32, 32))])
def test_log_prob_shapes_and_terms(kind, shape):
    spec = DataSpec(kind, shape)
    dec = build(spec, dtype=torch.float32)
    x, z = random_images(spec, 2, dtype=torch.float32), torch.randn(2, 3)
    total, terms = dec.log_prob(x, z), dec.log_prob(x, z, reduction="none")
    assert total.shape == (2,) and terms.shape == (2, *shape)
    torch.testing.assert_close(terms.flatten(1).sum(1), total, rtol=1e-5, atol=1e-2)
    assert torch.isfinite(terms).all() and (terms < 0).all()


@pytest.mark.parametrize("kind", ["gray8", "rgb8"])
def test_causality_is_exact_in_raster_and_channel_order(kind):
    """float64, exact zeros: the term of subpixel (pixel i, channel c) has zero gradient with respect to every
    later pixel and to channels >= c... except its own value, and channels < c of its pixel do enter (RGB)."""
    c = 3 if kind == "rgb8" else 1
    spec = DataSpec(kind, (c, 8, 8))
    dec = build(spec)
    z = torch.randn(1, 3, dtype=torch.float64)
    x = random_images(spec, 1).requires_grad_()
    terms = dec.log_prob(x, z, reduction="none")[0]  # (C, 8, 8)
    out = dec(x, z)[0].flatten(1)  # (P, 64) network outputs
    order = torch.arange(64 * c).view(64, c).t().reshape(c, 8, 8)  # position of each subpixel in the order
    for i in range(64):
        (go,) = torch.autograd.grad(out[:, i].sum(), x, retain_graph=True)
        assert (go[0].flatten(1)[:, i:] == 0).all(), f"network output at pixel {i} sees pixel >= {i}"
        for ch in range(c):
            (g,) = torch.autograd.grad(terms[ch].flatten()[i], x, retain_graph=True)
            later = order > order[ch].flatten()[i]
            assert (g[0][later] == 0).all(), f"term of pixel {i}, channel {ch} sees later subpixels"
            if ch:  # G depends on R, B on R and G, through the mixture coefficients
                r, cc = divmod(i, 8)
                assert (g[0, :ch, r, cc] != 0).all()
    assert (go[0].flatten(1)[:, :63] != 0).any()


def test_z_conditions_every_pixel():
    spec = DataSpec("rgb8", (3, 8, 8))
    dec = build(spec)
    x = random_images(spec, 2)
    z = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    terms = dec.log_prob(x, z, reduction="none")
    for ch, i in ((0, 0), (1, 9), (2, 63)):
        (g,) = torch.autograd.grad(terms[0, ch].flatten()[i], z, retain_graph=True)
        assert (g[0] != 0).all() and (g[1] == 0).all()


def test_dropout_only_in_training_mode():
    spec = DataSpec("gray8", (1, 8, 8))
    dec = build(spec, dropout=0.5)
    x, z = random_images(spec, 2), torch.randn(2, 3, dtype=torch.float64)
    assert torch.equal(dec.log_prob(x, z), dec.log_prob(x, z))
    dec.train()
    assert not torch.equal(dec.log_prob(x, z), dec.log_prob(x, z))
    a = dec.sample(z, generator=torch.Generator().manual_seed(0))  # sampling never drops out
    dec.eval()
    assert torch.equal(a, dec.sample(z, generator=torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("kind,shape", [("gray8", (1, 8, 8)), ("rgb8", (3, 8, 12)), ("rgb8", (3, 12, 4))])
def test_fast_sampler_equals_naive_sampler(kind, shape):
    spec = DataSpec(kind, shape)
    dec = build(spec, nr_resnet=2)
    z = torch.randn(2, 3, dtype=torch.float64)
    naive = dec.sample(z, generator=torch.Generator().manual_seed(3), fast=False)
    fast = dec.sample(z, generator=torch.Generator().manual_seed(3), fast=True)
    assert torch.equal(naive, fast)
    levels = torch.round((naive + 1) * 127.5)
    assert torch.equal(levels / 127.5 - 1, naive) and levels.min() >= 0 and levels.max() <= 255


def test_samples_follow_the_mixture():
    """With the output layer's weights zeroed every pixel has the same known mixture, whatever came before;
    the histogram of all sampled subpixels must match its 256 probabilities (chi-square, p > 1e-3: a false
    alarm once in a thousand seeds; the same counts against a one-level shift give p < 1e-12)."""
    spec = DataSpec("gray8", (1, 4, 4))
    dec = build(spec, nr_logistic_mix=3)
    with torch.no_grad():  # output layout: 3 logits, 3 means, 3 log-scales
        dec.out.weight.zero_()
        dec.out.bias.copy_(torch.tensor([0.3, -0.2, 0.1, -0.6, 0.1, 0.96, -3.0, -3.5, -3.2], dtype=torch.float64))
    n = 5000
    z = torch.randn(n, 3, dtype=torch.float64)
    x = dec.sample(z, generator=torch.Generator().manual_seed(4))
    counts = torch.bincount(torch.round((x.flatten() + 1) * 127.5).long(), minlength=256).double()
    levels = torch.arange(256, dtype=torch.float64) / 127.5 - 1
    images = levels.view(256, 1, 1, 1).expand(256, 1, 4, 4)
    with torch.no_grad():
        probs = dec.log_prob(images, z[:256], reduction="none")[:, 0, 0, 0].exp()
    assert abs(float(probs.sum()) - 1) < 1e-9
    shifted = torch.cat((probs[1:], probs[:1]))  # off by one level
    m = counts.sum()

    def p_value(p):
        keep = p * m >= 5
        obs = torch.cat((counts[keep], counts[~keep].sum().view(1)))
        exp = torch.cat((p[keep], p[~keep].sum().view(1))) * m
        return float(chi2.sf(float(((obs - exp) ** 2 / exp).sum()), df=len(obs) - 1))

    assert p_value(probs) > 1e-3
    assert p_value(shifted) < 1e-12


def test_batch_size_does_not_matter():
    spec = DataSpec("rgb8", (3, 8, 8))
    dec = build(spec)
    x, z = random_images(spec, 3), torch.randn(3, 3, dtype=torch.float64)
    torch.testing.assert_close(dec.log_prob(x[1:2], z[1:2]), dec.log_prob(x, z)[1:2], rtol=1e-12, atol=1e-9)
    all3 = dec.sample(z, generator=torch.Generator().manual_seed(6))
    one = dec.sample(z[:1], generator=torch.Generator().manual_seed(6))
    assert torch.equal(all3[:1], one)


def test_float32_samples_and_bf16_autocast():
    spec = DataSpec("rgb8", (3, 8, 8))
    dec = build(spec, dtype=torch.float32, nr_filters=8)
    z = torch.randn(3, 3)
    x = dec.sample(z, generator=torch.Generator().manual_seed(0))
    assert x.dtype == torch.float32
    assert torch.equal(infovae.to_model(infovae.from_model(x, spec), spec), x)  # exactly on the data grid
    with torch.autocast("cpu", dtype=torch.bfloat16):
        lp = dec.log_prob(x, z)
    assert lp.dtype == torch.float32 and torch.isfinite(lp).all()
    torch.testing.assert_close(lp, dec.log_prob(x, z), rtol=0.05, atol=5.0)


@pytest.mark.parametrize("kind,shape", [("gray8", (1, 4, 4)), ("rgb8", (3, 4, 4))])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sample_pixel_is_the_general_mixture_sampler(kind, shape, dtype):
    """The per-pixel sampler on (B, P) rows draws exactly what the general 5-d sampler draws from the
    same uniforms (bitwise), edge uniforms included."""
    from infovae.functional.logistic import logistic_mixture_params, sample_discretized_logistic_mixture

    dec = build(DataSpec(kind, shape), nr_logistic_mix=4, dtype=dtype)
    c = shape[0]
    g = torch.Generator().manual_seed(3)
    params = (torch.randn(2000, dec.out.out_channels, generator=g, dtype=torch.float64) * 3).to(dtype)
    u = torch.rand(2000, 1 + c, generator=g, dtype=torch.float64).to(dtype)
    u[:7, 1:] = 0.0  # logit(0) = -inf: the lowest bin
    u[7:9, 0] = 0.0
    lp, mu, ls, co = logistic_mixture_params(params[:, :, None, None], c, dec.nr_logistic_mix)
    want = sample_discretized_logistic_mixture(lp, mu, ls, co, uniforms=u[:, :, None, None])[:, :, 0, 0]
    got = dec.sample_pixel(params, u)
    assert got.dtype == want.dtype and torch.equal(got, want)
    assert (got[:7] == -1.0).all()


def test_float32_fast_and_naive_draw_the_same_integers_at_the_benchmark_configuration():
    """The configuration the sampling benchmark times (default options, rgb8 32x32, float32): the same
    seed gives the same 8-bit values from both samplers (first row: 32 naive passes; the benchmark itself
    compares the rows it times, at batch 16)."""
    spec = DataSpec("rgb8", (3, 32, 32))
    torch.manual_seed(0)
    dec = infovae.registry().create("decoders", "pixelcnnpp", {}, spec, 8).eval()
    z = torch.randn(4, 8, generator=torch.Generator().manual_seed(0))
    draws = [dec.sample(z, generator=torch.Generator().manual_seed(5), fast=fast, rows=1) for fast in (False, True)]
    levels = [torch.round((d + 1) * 127.5).to(torch.uint8) for d in draws]
    assert torch.equal(levels[0], levels[1]) and torch.equal(draws[0], draws[1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rgb_quantization_gives_the_same_bits_on_numpy_rows_and_on_tensors(dtype):
    """sample_pixel quantizes the channels on numpy views on the CPU and with torch operations elsewhere:
    both are the same correctly rounded operations, so the same bits (run here on CPU tensors)."""
    import numpy as np

    from infovae.plugins.decoders.pixelcnnpp import _quantize_rgb

    g = torch.Generator().manual_seed(1)
    mu, y = (torch.randn(4000, 3, generator=g, dtype=torch.float64) * 1.5).to(dtype), \
        (torch.randn(4000, 3, generator=g, dtype=torch.float64) * 0.3).to(dtype)
    co = torch.tanh(torch.randn(4000, 3, generator=g, dtype=torch.float64)).to(dtype)
    y[:5] = float("-inf")  # logit(0): the lowest bin
    on_tensors = _quantize_rgb(mu, y, co, torch.empty(4000, 3, dtype=dtype))
    on_numpy = torch.from_numpy(_quantize_rgb(mu.numpy(), y.numpy(), co.numpy(), np.empty((4000, 3), dtype=mu.numpy().dtype)))
    assert torch.equal(on_tensors, on_numpy) and (on_numpy[:5] == -1.0).all()
