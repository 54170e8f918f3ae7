"""Long samplings report progress through ``infovae.progress``: autoregressive decoders in pixels
(both the naive and the cached loop), the Markov chain in chain steps."""
from __future__ import annotations

import pytest
import torch

import infovae
from infovae import DataSpec


def record_progress(fn):
    calls = []
    with infovae.progress.report_progress_to(lambda done, total: calls.append((done, total))):
        out = fn()
    return out, calls


@pytest.mark.parametrize("fast", [False, True])
def test_autoregressive_sampling_reports_every_row_in_pixels(fast):
    spec = DataSpec("binary", (1, 5, 4))
    torch.manual_seed(0)
    dec = infovae.registry().create("decoders", "pixelcnn", {"layers": 2, "channels": 4}, spec, 3).eval()
    x, calls = record_progress(lambda: dec.sample(torch.randn(2, 3), generator=torch.Generator().manual_seed(0), fast=fast))
    h, w = spec.shape[1:]
    assert x.shape == (2, *spec.shape)
    assert calls == [((r + 1) * w, h * w) for r in range(h)]


def test_markov_chain_reports_chain_steps_only():
    spec = DataSpec("binary", (1, 4, 4))
    reg = infovae.registry()
    torch.manual_seed(0)
    model = infovae.InfoVAE(spec, 2, reg.create("encoders", "mlp", {}, spec, 2),
                            reg.create("decoders", "pixelcnn", {"layers": 2, "channels": 4}, spec, 2)).eval()
    sampler = reg.create("samplers", "markov-chain", {"steps": 3})
    x, calls = record_progress(lambda: sampler(model, 2, generator=torch.Generator().manual_seed(0)))
    assert x.shape == (2, *spec.shape)
    assert calls == [(1, 3), (2, 3), (3, 3)]  # the decoder's per-pixel reports are not mixed in


def test_no_callback_means_no_reports_and_same_samples():
    spec = DataSpec("binary", (1, 3, 3))
    torch.manual_seed(0)
    dec = infovae.registry().create("decoders", "pixelcnn", {"layers": 2, "channels": 4}, spec, 2).eval()
    z = torch.randn(2, 2)
    plain = dec.sample(z, generator=torch.Generator().manual_seed(1))
    reported, calls = record_progress(lambda: dec.sample(z, generator=torch.Generator().manual_seed(1)))
    assert calls and torch.equal(plain, reported)
