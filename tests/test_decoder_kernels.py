"""The fused PixelCNN++ pieces: concat_elu's hand-written backward (also writing the padding, and with
dropout fused in), the fused gated residual, the byte-mask dropout and the 1x1 layer as a batched product;
each against a plain float64 autograd composition."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from infovae.bench.pixelcnnpp_peer import load_peer
from plugins.decoders.autoregressive import Nin, concat_elu, dropout_mask, dropout_scale, fast_dropout, gated_residual


def test_concat_elu_matches_the_composition_and_its_gradient():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    x.data[0, 0, 0, :3] = 0.0  # the kink
    ref = F.elu(torch.cat((x, -x), 1))
    assert torch.equal(concat_elu(x), ref)
    w = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    (gx,) = torch.autograd.grad((concat_elu(x) * w).sum(), x)
    (gr,) = torch.autograd.grad((ref * w).sum(), x)
    assert torch.allclose(gx, gr, atol=1e-14)


@pytest.mark.parametrize("pad", [(1, 1, 1, 0), (1, 0, 1, 0), (0, 2, 0, 3)])
def test_padded_concat_elu_equals_padding_the_result_and_its_gradient(pad):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    ref = F.pad(F.elu(torch.cat((x, -x), 1)), pad)
    # elu on short strided rows takes torch's scalar exp instead of the vectorised one: the last bit may differ
    with torch.no_grad():
        torch.testing.assert_close(concat_elu(x, pad=pad), ref, rtol=1e-15, atol=0)
    out = concat_elu(x, pad=pad)
    torch.testing.assert_close(out, ref, rtol=1e-15, atol=0)
    assert (out[ref == 0] == 0).all()  # the margins (and exact zeros) are exact
    w = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    (gx,) = torch.autograd.grad((out * w).sum(), x)
    (gr,) = torch.autograd.grad((ref * w).sum(), x)
    assert torch.allclose(gx, gr, rtol=0, atol=1e-14)


@pytest.mark.parametrize("pad", [None, (1, 1, 1, 0), (1, 0, 1, 0)])
@pytest.mark.parametrize("p", [0.5, 0.3])
def test_concat_elu_with_fused_dropout_equals_the_masked_composition_and_its_gradient(pad, p):
    """Same random state, same mask: concat_elu(x, pad, dropout=p) == pad(elu(cat(x, -x))) * mask, and
    the gradient equals autograd's through that composition (float64)."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    x.data[0, 0, 0, :2] = 0.0  # the kink
    padded = F.elu(torch.cat((x, -x), 1))
    if pad is not None:
        padded = F.pad(padded, pad)
    torch.manual_seed(7)
    mask = dropout_mask(padded.shape, p, x.device, torch.float64)
    ref = padded * mask
    torch.manual_seed(7)
    out = concat_elu(x, pad=pad, dropout=p)
    torch.testing.assert_close(out, ref, rtol=1e-15, atol=0)
    assert (out[ref == 0] == 0).all()
    w = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    (gx,) = torch.autograd.grad((out * w).sum(), x)
    (gr,) = torch.autograd.grad((ref * w).sum(), x)
    assert torch.allclose(gx, gr, rtol=0, atol=1e-14)
    torch.manual_seed(7)
    with torch.no_grad():
        torch.testing.assert_close(concat_elu(x, pad=pad, dropout=p), ref, rtol=1e-15, atol=0)


@pytest.mark.parametrize("p", [0.5, 0.25, 0.3])
def test_dropout_mask_takes_two_values_with_mean_one(p):
    torch.manual_seed(4)
    n = 400_000
    m = dropout_mask((n,), p, torch.device("cpu"), torch.float32)
    s = dropout_scale(p)
    kept = m != 0
    assert torch.all(m[kept] == s) and s == pytest.approx(1 / (1 - p), rel=1e-4)
    frac = kept.double().mean().item()
    assert abs(frac - (1 - p)) < 5 * math.sqrt(p * (1 - p) / n)  # 5 sigma


@pytest.mark.parametrize("shape", [(3, 6, 4, 5), (2, 6, 1, 1)])
def test_nin_equals_a_1x1_convolution_and_its_gradients(shape):
    torch.manual_seed(5)
    layer = Nin(shape[1], 4).double()
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    out = layer(x)
    ref = F.conv2d(x, layer.weight, layer.bias)
    assert torch.allclose(out, ref, rtol=0, atol=1e-14)
    w = torch.randn(ref.shape, dtype=torch.float64)
    params = (x, layer.weight, layer.bias)
    got = torch.autograd.grad((out * w).sum(), params)
    want = torch.autograd.grad((ref * w).sum(), params)
    for u, v in zip(got, want):
        assert torch.allclose(u, v, rtol=0, atol=1e-13)


def test_gated_residual_matches_the_composition_and_its_gradients():
    g = torch.Generator().manual_seed(2)
    y = torch.randn(3, 8, 4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    skip = torch.randn(3, 4, 4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    a, b = y.chunk(2, dim=1)
    ref = skip + a * torch.sigmoid(b)
    out = gated_residual(y, skip)
    assert torch.allclose(out, ref, rtol=0, atol=1e-15)
    with torch.no_grad():
        assert torch.allclose(gated_residual(y, skip), ref, rtol=0, atol=1e-15)
    w = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    got = torch.autograd.grad((out * w).sum(), (y, skip))
    want = torch.autograd.grad((ref * w).sum(), (y, skip))
    for u, v in zip(got, want):
        assert torch.allclose(u, v, rtol=0, atol=1e-14)
    assert torch.autograd.gradcheck(gated_residual, (y[:1, :, :2, :2].detach().requires_grad_(),
                                                     skip[:1, :, :2, :2].detach().requires_grad_()))


@pytest.mark.parametrize("p", [0.5, 0.25, 0.3])
def test_fast_dropout_keeps_with_probability_1_minus_p_and_is_unbiased(p):
    torch.manual_seed(0)
    n = 400_000
    x = torch.full((n,), 2.0, requires_grad=True)
    y = fast_dropout(x, p)
    kept = y != 0
    frac = kept.double().mean().item()
    assert abs(frac - (1 - p)) < 5 * math.sqrt(p * (1 - p) / n)  # 5 sigma
    assert abs(y.double().mean().item() - 2.0) < 5 * 2.0 * math.sqrt(p / ((1 - p) * n))
    scale = y[kept][0].item() / 2.0
    assert torch.all(y[kept] == 2.0 * scale) and scale == pytest.approx(1 / (1 - p), rel=1e-4)
    y.backward(torch.ones(n))
    assert torch.equal(x.grad != 0, kept) and torch.all(x.grad[kept] == scale)


def test_fast_dropout_neighbouring_entries_are_independent():
    """Eight mask entries come from one 64-bit draw: their pairwise agreement must be 1/2 at p = 0.5."""
    torch.manual_seed(1)
    keep = fast_dropout(torch.ones(800_000), 0.5) != 0
    agree = (keep[1:] == keep[:-1]).double().mean().item()
    assert abs(agree - 0.5) < 5 * math.sqrt(0.25 / 800_000)


def test_peer_path_errors_are_one_line(tmp_path):
    with pytest.raises(ValueError, match="no model.py, layers.py, utils.py there"):
        load_peer(str(tmp_path))


def test_bench_decoders_peer_path_error_is_one_line(tmp_path):
    from click.testing import CliRunner

    from infovae.cli.commands.bench_decoders import decoders

    r = CliRunner().invoke(decoders, ["--peer-path", str(tmp_path)])
    assert r.exit_code != 0 and "pclucas14/pixel-cnn-pp" in r.output and "Traceback" not in r.output
