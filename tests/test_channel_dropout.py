"""Channel dropout before a convolution (``dropout_mode="channel"``, ``nn.Dropout2d`` as in the pclucas14 port):
the per-example route that skips the dropped channels against the dense convolution of the masked input, in
float64, with the a-priori rounding bound of the sums; the law of the mask; the decoder option, its causality
and the independence of the batch entries in training mode."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import infovae
from infovae import DataSpec, PluginOptionError
from plugins.decoders import autoregressive as ar
from plugins.decoders.autoregressive import ShiftedConv2d, _ChannelDroppedConv, channel_dropout_conv, dropout_mask

EPS64 = 2.0**-52


@pytest.fixture(params=["per-example", "dense"])
def route(request, monkeypatch):
    """Both routes of ``channel_dropout_conv``: the per-example one forced at every size, or never taken."""
    monkeypatch.setattr(ar, "PER_EXAMPLE_MIN_MACS", 0 if request.param == "per-example" else math.inf)
    return request.param


def _grads(out, leaves, g):
    return torch.autograd.grad(out, leaves, g)


@pytest.mark.parametrize("mode,kernel", [("down", (2, 3)), ("down_right", (2, 2))])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("p", [0.5, 0.3])
def test_channel_dropout_conv_is_the_convolution_of_the_masked_input_and_its_gradients(route, mode, kernel, stride, p):
    """Same random state, same (B, Cin) mask: value and the gradients of input, weight and bias equal those of
    conv2d(y * mask) within twice the recursive-summation bound K eps sum|terms| (K the longest sum)."""
    torch.manual_seed(0)
    conv = ShiftedConv2d(6, 5, kernel, stride=stride, mode=mode).double()
    with torch.no_grad():
        conv.bias.normal_()
    b, cin = 4, 6
    y = torch.randn(b, cin, 7, 9, dtype=torch.float64, requires_grad=True)
    torch.manual_seed(11)
    out = channel_dropout_conv(conv, y, p)
    torch.manual_seed(11)
    mask = dropout_mask((b, cin), p, y.device, y.dtype)[:, :, None, None]
    ref = F.conv2d(y * mask, conv.weight, conv.bias, stride=stride)
    assert out.shape == ref.shape
    g = torch.randn(ref.shape, dtype=torch.float64)
    leaves = (y, conv.weight, conv.bias)
    got, want = _grads(out, leaves, g), _grads(ref, leaves, g)

    # magnitudes: the same sums over absolute values (their gradients give the bounds of the gradients' sums)
    ya, wa = y.detach().abs().requires_grad_(), conv.weight.detach().abs().requires_grad_()
    absolute = F.conv2d(ya * mask, wa, conv.bias.detach().abs(), stride=stride)
    bound_y, bound_w = _grads(absolute, (ya, wa), g.abs())
    bound_b = g.abs().sum((0, 2, 3))
    k = max(cin * kernel[0] * kernel[1] + 1, conv.out_channels * kernel[0] * kernel[1], b * ref.shape[2] * ref.shape[3])
    tol = 2 * k * EPS64
    assert ((out - ref).abs() <= tol * absolute.detach()).all()
    for name, u, v, bound in zip(("input", "weight", "bias"), got, want, (bound_y, bound_w, bound_b)):
        assert ((u - v).abs() <= tol * bound).all(), name
    # a dropped channel gets an exact zero gradient over the whole plane; a kept one does not
    dropped = mask[:, :, 0, 0] == 0
    assert (got[0][dropped] == 0).all()
    assert (got[0][~dropped].flatten(1).abs().amax(1) > 0).all()


def test_an_example_with_every_channel_dropped_gives_the_bias_and_no_gradient():
    torch.manual_seed(1)
    conv = ShiftedConv2d(4, 3, (2, 3), mode="down").double()
    with torch.no_grad():
        conv.bias.normal_()
    y = torch.randn(2, 4, 5, 6, dtype=torch.float64, requires_grad=True)
    kept = (torch.tensor([], dtype=torch.long), torch.tensor([0, 2]))
    out = _ChannelDroppedConv.apply(y, conv.weight, conv.bias, kept, 2.0, 1)
    assert torch.equal(out[0], conv.bias.detach()[:, None, None].expand_as(out[0]))
    ref1 = F.conv2d(y[1:, [0, 2]], conv.weight[:, [0, 2]] * 2.0, conv.bias)
    assert torch.allclose(out[1:], ref1, rtol=0, atol=1e-13)
    g = torch.randn(out.shape, dtype=torch.float64)
    gy, gw, gb = torch.autograd.grad(out, (y, conv.weight, conv.bias), g)
    assert (gy[0] == 0).all() and (gy[1, [1, 3]] == 0).all() and (gw[:, [1, 3]] == 0).all()
    assert torch.allclose(gb, g.sum((0, 2, 3)), rtol=0, atol=1e-13)


def test_whole_channels_are_kept_with_probability_1_minus_p(route):
    """Every (example, channel) plane is dropped or kept as a whole, kept with frequency 1 - p (5 sigma)."""
    torch.manual_seed(2)
    p, b, cin = 0.5, 64, 64
    conv = ShiftedConv2d(cin, 2, (2, 2), mode="down_right")
    y = torch.randn(b, cin, 4, 4, requires_grad=True)
    (gy,) = torch.autograd.grad(channel_dropout_conv(conv, y, p).sum(), y)
    nonzero = (gy != 0).flatten(2)
    whole = nonzero.all(2) | ~nonzero.any(2)
    assert whole.all()
    frac = nonzero.all(2).double().mean().item()
    assert abs(frac - (1 - p)) < 5 * math.sqrt(p * (1 - p) / (b * cin))


def build(spec, **options):
    torch.manual_seed(0)
    dec = infovae.registry().create("decoders", "pixelcnnpp", {"nr_filters": 4, **options}, spec, 3)
    return dec.double()


def test_dropout_mode_is_checked_before_any_work():
    with pytest.raises(PluginOptionError, match="dropout_mode"):
        build(DataSpec("gray8", (1, 8, 8)), dropout_mode="spatial")


@pytest.mark.parametrize("kind", ["gray8", "rgb8"])
def test_channel_dropout_in_training_keeps_causality_and_keeps_examples_apart(route, kind):
    """Training mode, channel dropout 0.5, one forward (one set of masks), float64: the network output at pixel i
    of example 0 has an exact zero gradient with respect to pixels >= i of example 0 and to all of example 1."""
    c = 3 if kind == "rgb8" else 1
    spec = DataSpec(kind, (c, 8, 8))
    dec = build(spec, dropout=0.5, dropout_mode="channel").train()
    g = torch.Generator().manual_seed(3)
    x = (torch.randint(0, 256, (2, c, 8, 8), generator=g).double() / 127.5 - 1).requires_grad_()
    z = torch.randn(2, 3, dtype=torch.float64)
    out = dec(x, z)[0].flatten(1)  # (P, 64) outputs of example 0
    for i in (0, 9, 27, 63):
        (go,) = torch.autograd.grad(out[:, i].sum(), x, retain_graph=True)
        assert (go[0].flatten(1)[:, i:] == 0).all(), f"output at pixel {i} sees pixel >= {i}"
        assert (go[1] == 0).all(), "example 0 sees example 1"
    assert (go[0].flatten(1)[:, :63] != 0).any()


def test_channel_dropout_only_in_training_mode_and_it_trains():
    spec = DataSpec("rgb8", (3, 8, 8))
    dec = build(spec, dropout=0.5, dropout_mode="channel").eval()
    g = torch.Generator().manual_seed(4)
    x = torch.randint(0, 256, (3, 3, 8, 8), generator=g).double() / 127.5 - 1
    z = torch.randn(3, 3, dtype=torch.float64)
    assert torch.equal(dec.log_prob(x, z), dec.log_prob(x, z))
    plain = build(spec, dropout=0.0).eval()
    assert torch.equal(dec.log_prob(x, z), plain.log_prob(x, z))  # same weights: no dropout when evaluating
    dec.train()
    assert not torch.equal(dec.log_prob(x, z), dec.log_prob(x, z))
    opt = torch.optim.Adam(dec.parameters(), lr=1e-2)
    before = -dec.eval().log_prob(x, z).mean().item()
    dec.train()
    for _ in range(20):
        opt.zero_grad()
        (-dec.log_prob(x, z).mean()).backward()
        assert all(torch.isfinite(q.grad).all() for q in dec.parameters() if q.grad is not None)
        opt.step()
    assert -dec.eval().log_prob(x, z).mean().item() < before


def test_a_retained_graph_gives_the_same_gradients_twice(route):
    torch.manual_seed(5)
    conv = ShiftedConv2d(6, 4, (2, 3), mode="down").double()
    y = torch.randn(3, 6, 5, 7, dtype=torch.float64, requires_grad=True)
    out = channel_dropout_conv(conv, y, 0.5)
    g = torch.randn(out.shape, dtype=torch.float64)
    first = torch.autograd.grad(out, (y, conv.weight), g, retain_graph=True)
    second = torch.autograd.grad(out, (y, conv.weight), g)
    assert all(torch.equal(a, b) for a, b in zip(first, second)) and first[0].abs().sum() > 0


def test_channel_dropout_under_bf16_autocast_takes_the_dense_route_and_trains(monkeypatch):
    monkeypatch.setattr(ar, "PER_EXAMPLE_MIN_MACS", 0)
    spec = DataSpec("rgb8", (3, 8, 8))
    dec = build(spec, dropout=0.5, dropout_mode="channel").float().train()
    x = torch.randint(0, 256, (2, 3, 8, 8), generator=torch.Generator().manual_seed(6)).float() / 127.5 - 1
    z = torch.randn(2, 3)
    calls = []
    monkeypatch.setattr(_ChannelDroppedConv, "apply", lambda *a: calls.append(a) or None)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = -dec.log_prob(x, z).mean()
    loss.backward()
    assert not calls and torch.isfinite(loss)
    assert all(torch.isfinite(q.grad).all() for q in dec.parameters() if q.grad is not None)
