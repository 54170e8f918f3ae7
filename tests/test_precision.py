"""Mixed precision and torch.compile change results only within tolerance."""
import pytest
import torch

from infovae.build import build_model, make_run_spec
from infovae.data import to_model
from infovae.runs import TrainerConfig


def model_and_batch(registry, divergences=(("kl", 1.0, {}),)):
    spec, ds = make_run_spec(dataset="digits", dataset_options={}, latent_dim=4, encoder="mlp", encoder_options={},
                             decoder="bernoulli-mlp", decoder_options={}, divergences=list(divergences),
                             trainer=TrainerConfig(), reg=registry)
    torch.manual_seed(0)
    model, objective = build_model(spec, registry)
    x = to_model(ds.split("train")[:128], spec.data)
    return model, objective, x


def loss_with_seed(objective, model, x, seed=3):
    torch.manual_seed(seed)
    loss, terms, _ = objective(model, x)
    return loss, terms


def test_bf16_autocast_loss_matches_float32(registry):
    divs = [("kl", 1.0, {})] + ([("mmd", 100.0, {})] if "mmd" in registry.names("divergences") else [])
    model, objective, x = model_and_batch(registry, divs)
    ref, ref_terms = loss_with_seed(objective, model, x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low, low_terms = loss_with_seed(objective, model, x)
    assert low.dtype == torch.float32
    # bf16 has 8 bits of mantissa: relative error of a sum of O(100) terms stays well under 1%.
    assert abs(low.item() - ref.item()) <= 1e-2 * abs(ref.item())
    for name in divs:
        assert low_terms[name[0]].dtype == torch.float32


@pytest.mark.slow
def test_compiled_loss_matches_eager(registry):
    model, objective, x = model_and_batch(registry)
    ref, _ = loss_with_seed(objective, model, x)
    compiled = torch.compile(lambda x: objective(model, x))
    torch.manual_seed(3)
    got, _, _ = compiled(x)
    assert torch.allclose(got, ref, rtol=1e-5, atol=1e-5)
