"""Encoders mlp/conv and decoders bernoulli-mlp/bernoulli-conv: shapes for any image size, exact likelihoods, sampling."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.distributions import Independent, Normal

import infovae
from infovae import CapabilityError, DataSpec, PluginOptionError

ENCODERS = ("mlp", "conv")
DECODERS = ("bernoulli-mlp", "bernoulli-conv")
SMALL = {"mlp": {"hidden": 32}, "conv": {"channels": 4}, "bernoulli-mlp": {"hidden": 32}, "bernoulli-conv": {"channels": 4}}
SPECS = [
    DataSpec("binary", (1, 8, 8)),
    DataSpec("binary", (1, 28, 28)),
    DataSpec("gray8", (1, 32, 32)),
    DataSpec("rgb8", (3, 8, 8)),
    DataSpec("rgb8", (3, 28, 28)),
    DataSpec("rgb8", (3, 32, 32)),
]
BINARY = [DataSpec("binary", (1, s, s)) for s in (8, 28, 32)] + [DataSpec("binary", (1, 7, 13))]


def build(kind, name, spec, latent, **options):
    return infovae.registry().create(kind, name, options, spec, latent)


def model_values(spec, b, gen):
    if spec.kind == "binary":
        return torch.randint(0, 2, (b, *spec.shape), generator=gen).float()
    return torch.randint(0, 256, (b, *spec.shape), generator=gen).float() / 127.5 - 1


# -- encoders -------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", SPECS, ids=str)
@pytest.mark.parametrize("name", ENCODERS)
def test_encoder_posterior_shapes_and_gradients(name, spec):
    torch.manual_seed(0)
    enc = build("encoders", name, spec, 5)  # default options
    x = model_values(spec, 3, torch.Generator().manual_seed(0))
    q = enc(x)
    assert isinstance(q, Independent) and isinstance(q.base_dist, Normal)
    assert tuple(q.batch_shape) == (3,) and tuple(q.event_shape) == (5,)
    assert q.mean.dtype == torch.float32 and torch.isfinite(q.mean).all() and (q.stddev > 0).all()
    z = q.rsample()
    z.sum().backward()
    grads = [p.grad for p in enc.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    with pytest.raises(ValueError, match="shape"):
        enc(x[:, :, :-1])


@pytest.mark.parametrize("name", ENCODERS)
def test_encoder_examples_are_independent_of_the_batch(name):
    spec = DataSpec("binary", (1, 28, 28))
    enc = build("encoders", name, spec, 4, **SMALL[name])
    x = model_values(spec, 6, torch.Generator().manual_seed(1))
    whole = enc(x).mean
    parts = torch.cat([enc(x[i:i + 1]).mean for i in range(6)])
    torch.testing.assert_close(whole, parts, rtol=1e-5, atol=1e-6)


def test_conv_geometry_adapts_to_the_data():
    from infovae.plugins.encoders.conv import stage_sizes

    assert stage_sizes(8, 8, 0, "t") == [(8, 8), (4, 4)]
    assert stage_sizes(28, 28, 0, "t") == [(28, 28), (14, 14), (7, 7)]
    assert stage_sizes(32, 32, 0, "t") == [(32, 32), (16, 16), (8, 8), (4, 4)]
    assert stage_sizes(28, 28, 3, "t")[-1] == (3, 3)
    enc = build("encoders", "conv", DataSpec("binary", (1, 28, 28)), 5)
    assert enc.head.in_features == 64 * 7 * 7  # channels 32 -> 64, two stages
    with pytest.raises(CapabilityError, match="too small"):
        build("encoders", "conv", DataSpec("binary", (1, 8, 8)), 5, layers=4)
    with pytest.raises(CapabilityError, match="too small"):
        build("decoders", "bernoulli-conv", DataSpec("binary", (1, 8, 8)), 5, layers=4)


def test_bad_options_are_clear_errors():
    spec = DataSpec("binary", (1, 8, 8))
    with pytest.raises(PluginOptionError, match="activation"):
        build("encoders", "mlp", spec, 5, activation="swish")
    with pytest.raises(PluginOptionError, match="hidden"):
        build("decoders", "bernoulli-mlp", spec, 5, hidden=0)
    from infovae.plugins.encoders.conv import ConvEncoder
    from infovae.plugins.encoders.mlp import MLPEncoder

    with pytest.raises(PluginOptionError, match="latent"):
        MLPEncoder(spec, 0)
    with pytest.raises(PluginOptionError, match="channels"):
        ConvEncoder(spec, 2, channels=0)


@settings(max_examples=20, deadline=None)
@given(h=st.integers(2, 40), w=st.integers(2, 40), layers=st.integers(0, 2), channels=st.sampled_from([1, 3]))
def test_conv_shapes_for_any_size(h, w, layers, channels):
    kind = "binary" if channels == 1 else "rgb8"
    spec = DataSpec(kind, (channels, h, w))
    if layers and min(h, w) < 2 ** layers:
        with pytest.raises(CapabilityError):
            build("encoders", "conv", spec, 3, channels=2, layers=layers)
        return
    x = model_values(spec, 2, torch.Generator().manual_seed(0))
    q = build("encoders", "conv", spec, 3, channels=2, layers=layers)(x)
    assert tuple(q.batch_shape) == (2,) and tuple(q.event_shape) == (3,)
    if kind == "binary":
        dec = build("decoders", "bernoulli-conv", spec, 3, channels=2, layers=layers)
        assert dec.logits(torch.zeros(2, 3)).shape == (2, 1, h, w)


# -- decoders -------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", BINARY, ids=str)
@pytest.mark.parametrize("name", DECODERS)
def test_decoder_shapes(name, spec):
    dec = build("decoders", name, spec, 5)
    assert dec.supports == ("binary",)
    z = torch.randn(3, 5)
    x = model_values(spec, 3, torch.Generator().manual_seed(0))
    assert dec.logits(z).shape == (3, *spec.shape)
    assert dec.log_prob(x, z).shape == (3,) and dec.log_prob(x, z, reduction="none").shape == (3, *spec.shape)
    s = dec.sample(z, generator=torch.Generator().manual_seed(0))
    assert s.shape == (3, *spec.shape) and s.dtype == torch.float32
    assert set(torch.unique(s).tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("name", DECODERS)
@pytest.mark.parametrize("spec", [DataSpec("gray8", (1, 8, 8)), DataSpec("rgb8", (3, 8, 8))], ids=str)
def test_decoders_refuse_8bit_data(name, spec):
    with pytest.raises(CapabilityError, match="binary"):
        build("decoders", name, spec, 5)
    assert infovae.registry().info("decoders", name).supports == ("binary",)


@pytest.mark.parametrize("name", DECODERS)
def test_log_prob_matches_float64_brute_force(name):
    spec = DataSpec("binary", (1, 28, 28))
    torch.manual_seed(0)
    dec = build("decoders", name, spec, 4, **SMALL[name])
    z = 3 * torch.randn(5, 4)
    x = model_values(spec, 5, torch.Generator().manual_seed(2))
    with torch.no_grad():
        p = torch.sigmoid(dec.logits(z).double())
        brute = (x.double() * torch.log(p) + (1 - x.double()) * torch.log1p(-p)).flatten(1).sum(1)
        total = dec.log_prob(x, z)
        terms = dec.log_prob(x, z, reduction="none")
    assert total.dtype == torch.float32 and (total < 0).all()
    torch.testing.assert_close(total.double(), brute, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(terms.flatten(1).sum(1), total, rtol=1e-6, atol=1e-4)
    torch.testing.assert_close(terms.double(), (x.double() * torch.log(p) + (1 - x.double()) * torch.log1p(-p)), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="reduction"):
        dec.log_prob(x, z, reduction="mean")
    with pytest.raises(ValueError, match="shape"):
        dec.log_prob(x[:4], z)


def _constant_logits(dec, value):
    """Make the decoder output the same logit everywhere: zero the last layer's weights, set its bias."""
    last = [m for m in dec.net.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(value)


@pytest.mark.parametrize("name", DECODERS)
@pytest.mark.parametrize("logit", [-1e4, -100.0, 30.0, 100.0, 1e4])
def test_log_prob_finite_and_exact_at_extreme_logits(name, logit):
    spec = DataSpec("binary", (1, 8, 8))
    dec = build("decoders", name, spec, 3, **SMALL[name])
    _constant_logits(dec, logit)
    z = torch.randn(2, 3)
    x = torch.stack([torch.zeros(spec.shape), torch.ones(spec.shape)])
    lp = dec.log_prob(x, z)
    assert torch.isfinite(lp).all()
    # log sigmoid(l) = -softplus(-l), log(1 - sigmoid(l)) = -softplus(l), in float64.
    sp = lambda v: max(v, 0.0) + math.log1p(math.exp(-abs(v)))  # noqa: E731
    want = torch.tensor([-64 * sp(logit), -64 * sp(-logit)], dtype=torch.float64)
    torch.testing.assert_close(lp.double(), want, rtol=1e-6, atol=1e-5)
    z.requires_grad_(True)
    dec.log_prob(x, z).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in dec.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", DECODERS)
def test_sample_mean_matches_sigmoid_of_logits(name):
    spec = DataSpec("binary", (1, 8, 8))
    torch.manual_seed(0)
    dec = build("decoders", name, spec, 3, **SMALL[name])
    last = [m for m in dec.net.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))][-1]
    with torch.no_grad():
        last.weight.mul_(20.0)  # spread the probabilities away from 1/2
    n = 20000
    z = torch.randn(1, 3)
    p = dec.mean(z)[0].double()
    torch.testing.assert_close(p, torch.sigmoid(dec.logits(z)[0].double()))
    draws = dec.sample(z.expand(n, 3), generator=torch.Generator().manual_seed(1))
    assert set(torch.unique(draws).tolist()) <= {0.0, 1.0}
    freq = draws.double().mean(0)
    # Each pixel's frequency is a mean of n Bernoulli(p) draws: within 5 standard errors (64 pixels).
    bound = 5 * torch.sqrt(p * (1 - p) / n) + 1e-9
    assert torch.all((freq - p).abs() <= bound), float(((freq - p).abs() / bound).max())
    assert p.min() < 0.3 and p.max() > 0.7  # the check covered a spread of probabilities
    again = dec.sample(z.expand(n, 3), generator=torch.Generator().manual_seed(1))
    assert torch.equal(draws, again)


@pytest.mark.parametrize("name", DECODERS)
def test_log_prob_under_bf16_autocast_is_float32_and_close(name):
    spec = DataSpec("binary", (1, 8, 8))
    torch.manual_seed(0)
    dec = build("decoders", name, spec, 3, **SMALL[name])
    enc = build("encoders", "mlp" if name.endswith("mlp") else "conv", spec, 3, **SMALL["mlp" if name.endswith("mlp") else "conv"])
    x = model_values(spec, 4, torch.Generator().manual_seed(0))
    z = torch.randn(4, 3)
    ref = dec.log_prob(x, z)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        lp = dec.log_prob(x, z)
        q = enc(x)
    assert lp.dtype == torch.float32 and q.mean.dtype == torch.float32
    torch.testing.assert_close(lp, ref, rtol=0.02, atol=0.5)
