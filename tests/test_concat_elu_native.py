"""The C kernels of PixelCNN++'s concat_elu (infovae.functional.native.concat_elu_forward / _backward): the
values and the input gradient against a float64 composition of F.elu, with the dropout mask and the zero
margins, special values, where the kernels serve training and where they do not, and the raw argument checks."""
from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import require_native
from plugins.decoders.autoregressive import concat_elu, dropout_mask, dropout_scale

native = sys.modules["infovae.functional.native"]

ULP = 2.0**-23  # float32 ulp of 1 (relative spacing of the significands)
TINY = 2.0**-149  # float32's smallest subnormal


def _ulp(t: torch.Tensor) -> torch.Tensor:
    """float32 ulp at |t| (float64 in, float64 out): 2^(e - 23) for |t| in [2^e, 2^(e + 1)), TINY below 2^-126."""
    e = torch.floor(torch.log2(t.abs().clamp_min(2.0**-126)))
    return torch.exp2(e - 23)


def _reference(x32: torch.Tensor, pad, mask32):
    """float64 mask * pad(elu(cat(x, -x))) of the float32 inputs."""
    x = x32.double()
    y = F.pad(F.elu(torch.cat((x, -x), 1)), pad)
    return y if mask32 is None else y * mask32.double()


def _inputs(seed, shape, specials=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * 3.0
    if specials:
        flat = x.view(-1)
        vals = torch.tensor([0.0, -0.0, 1e-30, -1e-30, 1e-40, -1e-40, 1e-6, -1e-6, 0.3466, -0.3466, -17.5, -100.0,
                             88.0, -1e-3, 5e-8, -5e-8])
        flat[: min(len(vals), flat.numel())] = vals[: flat.numel()]
    return x


@pytest.fixture
def kernels(monkeypatch):
    require_native()
    monkeypatch.setattr(native, "ENABLED", True)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)  # the kernels serve one-thread runs
    return native


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(b=st.integers(1, 3), c=st.integers(1, 5), h=st.integers(1, 9), w=st.integers(1, 37),
       pad=st.sampled_from([(0, 0, 0, 0), (1, 1, 1, 0), (1, 0, 1, 0), (0, 2, 0, 3)]),
       p=st.sampled_from([None, 0.5, 0.3]), seed=st.integers(0, 2**16))
def test_forward_is_within_two_ulp_of_float64_elu_and_the_margins_are_zero(b, c, h, w, pad, p, seed):
    require_native()
    x = _inputs(seed, (b, c, h, w))
    left, right, top, bottom = pad
    shape = (b, 2 * c, h + top + bottom, w + left + right)
    mask = None if p is None else dropout_mask(shape, p, x.device, torch.float32)
    got = native.concat_elu_forward(x, pad, mask).double()
    ref = _reference(x, pad, mask)
    assert got.shape == ref.shape
    # 2 ulp of elu, one more rounding for the product with the mask
    assert ((got - ref).abs() <= 3 * _ulp(ref) + TINY).all()
    inner = torch.zeros(shape, dtype=torch.bool)
    inner[:, :, top : top + h, left : left + w] = True
    assert (got[~inner] == 0).all()


def test_special_values():
    require_native()
    x = torch.tensor([float("inf"), float("-inf"), float("nan"), 0.0, 3.0, -3.0]).view(1, 6, 1, 1)
    got = native.concat_elu_forward(x, (0, 0, 0, 0), None).view(2, 6)
    assert got[0, 0] == float("inf") and got[1, 0] == -1.0
    assert got[0, 1] == -1.0 and got[1, 1] == float("inf")
    assert got[:, 2].isnan().all()
    assert (got[:, 3] == 0).all()
    assert got[0, 4] == 3.0 and got[1, 5] == 3.0


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(b=st.integers(1, 3), c=st.integers(1, 5), h=st.integers(1, 9), w=st.integers(1, 37),
       pad=st.sampled_from([(0, 0, 0, 0), (1, 1, 1, 0), (1, 0, 1, 0), (0, 2, 0, 3)]),
       p=st.sampled_from([None, 0.5, 0.3]), seed=st.integers(0, 2**16))
def test_backward_is_the_float64_gradient_within_its_rounding(b, c, h, w, pad, p, seed):
    """dx = m1 g1 elu'(x) - m2 g2 elu'(-x) with elu' taken from the float32 output (as torch's
    ``elu_backward`` from the result): each term within a few ulp of itself, plus one ulp of 1 times |m g|
    for the derivative read back from the rounded output."""
    require_native()
    x = _inputs(seed, (b, c, h, w), specials=False)
    left, right, top, bottom = pad
    shape = (b, 2 * c, h + top + bottom, w + left + right)
    mask = None if p is None else dropout_mask(shape, p, x.device, torch.float32)
    scale = 1.0 if p is None else dropout_scale(p)
    g = torch.randn(shape, generator=torch.Generator().manual_seed(seed + 1))
    y = native.concat_elu_forward(x, pad, mask)
    got = native.concat_elu_backward(g, y, mask, scale, pad).double()
    x64 = x.double().requires_grad_()
    ref = _reference(x64, pad, mask)
    (want,) = torch.autograd.grad(ref, x64, g.double())
    m = torch.ones(shape, dtype=torch.float64) if mask is None else mask.double()
    mg = (m * g.double())[:, :, top : top + h, left : left + w]
    d1 = torch.where(x64 > 0, 1.0, torch.exp(x64)).detach()
    d2 = torch.where(x64 < 0, 1.0, torch.exp(-x64)).detach()
    terms = (mg[:, :c] * d1).abs() + (mg[:, c:] * d2).abs()
    bound = 4 * ULP / 2 * terms + ULP * (mg[:, :c].abs() + mg[:, c:].abs()) + TINY
    assert ((got - want).abs() <= bound).all()


@pytest.mark.parametrize("p", [0.0, 0.5])
def test_training_uses_the_kernels_and_matches_the_eager_path(kernels, monkeypatch, p):
    calls = []
    real = native._cpu_kernels

    class Spy:
        def __getattr__(self, name):
            fn = getattr(real, name)
            return lambda *a: calls.append(name) or fn(*a)

    monkeypatch.setattr(native, "_cpu_kernels", Spy())
    x = torch.randn(2, 3, 5, 8, generator=torch.Generator().manual_seed(0), requires_grad=True)
    g = torch.randn(2, 6, 6, 10, generator=torch.Generator().manual_seed(1))
    results = {}
    for route in ("native", "eager"):
        monkeypatch.setattr(native, "ENABLED", route == "native")
        torch.manual_seed(2)
        out = concat_elu(x, pad=(1, 1, 1, 0), dropout=p)
        (gx,) = torch.autograd.grad(out, x, g)
        results[route] = (out.detach(), gx)
    assert calls == ["concat_elu_forward", "concat_elu_backward"]
    (a, ga), (b, gb) = results["native"], results["eager"]
    assert ((a - b).abs() <= 3 * a.abs().clamp_min(2.0**-126) * ULP + TINY).all()
    assert torch.allclose(ga, gb, rtol=8 * ULP, atol=4 * ULP)


def test_where_the_kernels_do_not_serve(kernels, monkeypatch):
    x = torch.randn(2, 3, 4, 4)
    assert native.serves_concat_elu(x)
    assert not native.serves_concat_elu(x.double())
    assert not native.serves_concat_elu(x.transpose(2, 3))
    assert not native.serves_concat_elu(x[0])
    assert not native.serves_concat_elu(x, torch.ones(2, 6, 4, 4, dtype=torch.float64))
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    assert native.serves_concat_elu(x)  # below torch's grain: one thread either way
    assert not native.serves_concat_elu(torch.randn(4, 32, 32, 32))
    monkeypatch.setattr(native, "ENABLED", False)
    assert not native.serves_concat_elu(x)


def test_raw_argument_errors_are_one_line(kernels):
    k = native._cpu_kernels
    x = torch.randn(1, 1, 2, 2)
    out = torch.empty(1, 2, 2, 2)
    with pytest.raises(ValueError, match="sizes out of range"):
        k.concat_elu_forward(x.data_ptr(), out.data_ptr(), 0, 0, 1, 2, 2, 0, 0, 0, 0)
    with pytest.raises(ValueError, match="padding out of range"):
        k.concat_elu_forward(x.data_ptr(), out.data_ptr(), 0, 1, 1, 2, 2, -1, 0, 0, 0)
    with pytest.raises(ValueError, match="null address"):
        k.concat_elu_forward(0, out.data_ptr(), 0, 1, 1, 2, 2, 0, 0, 0, 0)
    with pytest.raises(ValueError, match="scale"):
        k.concat_elu_backward(out.data_ptr(), out.data_ptr(), 0, x.data_ptr(), 1, 1, 2, 2, 0, 0, 0, 0, 0.0)
