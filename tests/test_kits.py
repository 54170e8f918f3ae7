"""The encoder, sampler, dataset and metric contract kits catch deliberately broken plugins.

Each broken implementation differs from a working one in one defect; the test asserts the
kit fails it in the check that names that defect (and the working one passes everything)."""
import math

import pytest
import torch
from torch import nn

import infovae
from infovae import DataSpec, Metric, Sampler
from infovae.testing import check_dataset, check_encoder, check_metric, check_sampler


# -- encoders -------------------------------------------------------------------------------------
class GoodEncoder(nn.Module):
    def __init__(self, spec, latent_dim, mode="good"):
        super().__init__()
        self.mode, self.d = mode, latent_dim
        self.net = nn.Linear(spec.num_dims, 2 * latent_dim)

    def forward(self, x):
        h = x.flatten(1)
        if self.mode == "batch_mixing":
            h = h - h.mean(0, keepdim=True)  # batch statistics even in eval mode
        loc, log_scale = self.net(h).chunk(2, dim=-1)
        if self.mode == "not_independent":
            return torch.distributions.Normal(loc, log_scale.exp())
        if self.mode == "detached":
            loc, log_scale = loc.detach(), log_scale.detach()
        if self.mode == "random_in_eval":
            loc = loc + 0.01 * torch.randn_like(loc)
        if self.mode == "nan_for_one":
            b = torch.tensor(float(h.shape[0] - 1))
            log_scale = log_scale * (b / b)  # an unbiased-variance style division: 0/0 = NaN for a batch of 1
        return infovae.diagonal_gaussian(loc, log_scale)


BROKEN_ENCODERS = {
    "not_independent": "distribution",
    "detached": "gradients",
    "batch_mixing": "batch_independence",
    "nan_for_one": "batch_independence",
    "random_in_eval": "deterministic",
}


def test_encoder_kit_passes_a_good_encoder():
    assert set(check_encoder(GoodEncoder).values()) == {"passed"}


@pytest.mark.parametrize("mode, check", BROKEN_ENCODERS.items())
def test_encoder_kit_catches(mode, check):
    with pytest.raises(AssertionError, match=rf"- {check}: "):
        check_encoder(lambda spec, d: GoodEncoder(spec, d, mode))


# -- samplers -------------------------------------------------------------------------------------
class GoodSampler(Sampler):
    def __init__(self, mode="good"):
        self.mode = mode
        if mode == "needs_data_not_bool":
            self.needs_data = "yes"

    def __call__(self, model, n, generator=None, data=None):
        z = model.prior.sample(n, generator=generator)
        if self.mode == "global_rng":
            return torch.bernoulli(torch.full((n, *model.spec.shape), 0.5))
        if self.mode == "probabilities":
            return torch.sigmoid(model.decoder.net(z)).view(n, *model.spec.shape)
        x = model.decoder.sample(z, generator=generator)
        if self.mode == "wrong_shape":
            return x.flatten(1)
        if self.mode == "ignores_generator":
            return model.decoder.sample(torch.zeros_like(z), generator=torch.Generator().manual_seed(0))
        return x


class DataSamplerWithoutCheck(Sampler):
    needs_data = True

    def __call__(self, model, n, generator=None, data=None):
        return data[:n].round() if data is not None else data.round()  # AttributeError on None


class InPlaceSampler(Sampler):
    needs_data = True

    def __call__(self, model, n, generator=None, data=None):
        if data is None:
            raise ValueError("needs data")
        data[:, 0, 0, 0] = 1.0  # modifies the caller's data
        return data[:n]


BROKEN_SAMPLERS = {
    "needs_data_not_bool": "attributes",
    "wrong_shape": "output",
    "probabilities": "output",
    "global_rng": "generator",
    "ignores_generator": "generator",
}


def test_sampler_kit_passes_a_good_sampler():
    assert set(check_sampler(GoodSampler).values()) == {"passed"}


@pytest.mark.parametrize("mode, check", BROKEN_SAMPLERS.items())
def test_sampler_kit_catches(mode, check):
    with pytest.raises(AssertionError, match=rf"- {check}: sampler"):
        check_sampler(lambda: GoodSampler(mode))


def test_sampler_kit_catches_data_handling():
    with pytest.raises(AssertionError, match=r"- output: .*raise ValueError"):
        check_sampler(DataSamplerWithoutCheck)
    with pytest.raises(AssertionError, match=r"- no_side_effects: .*in place"):
        check_sampler(InPlaceSampler)


# -- datasets -------------------------------------------------------------------------------------
class GoodData(infovae.Dataset):
    spec = DataSpec("binary", (1, 3, 3))
    splits = ("train", "test")

    def __init__(self, mode="good"):
        self.mode = mode
        g = torch.Generator().manual_seed(0) if mode != "unseeded" else None
        self.x = (torch.rand(20, 1, 3, 3, generator=g) < 0.5).to(torch.uint8)
        if mode == "float":
            self.x = self.x.float()
        if mode == "not_binary":
            self.x[0, 0, 0, 0] = 2
        if mode == "wrong_shape":
            self.x = self.x.view(20, 1, 9, 1)
        if mode == "bad_splits":
            self.splits = ("train", "eval")

    def split(self, name, generator=None):
        if name not in self.splits:
            if self.mode == "keyerror":
                raise KeyError(name)
            raise infovae.split_error(name, self.splits)
        return self.x

    def labels(self, name):
        y = torch.arange(20) % 3
        return y[:10] if self.mode == "short_labels" else y


BROKEN_DATASETS = {
    "bad_splits": "spec",
    "float": "splits",
    "not_binary": "splits",
    "wrong_shape": "splits",
    "short_labels": "splits",
    "keyerror": "unknown_split",
    "unseeded": "deterministic",
}


def test_dataset_kit_passes_a_good_dataset():
    assert set(check_dataset(GoodData).values()) == {"passed"}


@pytest.mark.parametrize("mode, check", BROKEN_DATASETS.items())
def test_dataset_kit_catches(mode, check):
    with pytest.raises(AssertionError, match=rf"- {check}: dataset"):
        check_dataset(lambda: GoodData(mode))


# -- metrics --------------------------------------------------------------------------------------
class GoodMetric(Metric):
    def __init__(self, mode="good"):
        self.mode = mode

    def __call__(self, model, x, *, labels=None, generator=None, batch_size=1024):
        z = model.posterior(x).mean
        noise = torch.randn(z.shape, generator=generator) if self.mode != "global_rng" else torch.randn(z.shape)
        value = (z + 0.1 * noise).pow(2).mean()
        if self.mode == "nan":
            value = value * math.nan
        if self.mode == "trains":
            with torch.no_grad():
                next(model.parameters()).add_(1.0)
        if self.mode == "no_value":
            return {"mean_square": float(value)}
        if self.mode == "tensor_value":
            return {"value": value}
        if self.mode == "not_json":
            return {"value": float(value), "codes": z}
        return {"value": float(value), "units": "z^2"}


BROKEN_METRICS = {
    "no_value": "result",
    "nan": "result",
    "tensor_value": "result",
    "not_json": "result",
    "global_rng": "generator",
    "trains": "no_side_effects",
}


def test_metric_kit_passes_a_good_metric():
    assert set(check_metric(GoodMetric).values()) == {"passed"}


@pytest.mark.parametrize("mode, check", BROKEN_METRICS.items())
def test_metric_kit_catches(mode, check):
    with pytest.raises(AssertionError, match=rf"- {check}: metric"):
        check_metric(lambda: GoodMetric(mode))


def test_broken_implementation_counts():
    """The counts the note reports (each one is a parametrized case above)."""
    assert (len(BROKEN_ENCODERS), len(BROKEN_SAMPLERS) + 2, len(BROKEN_DATASETS), len(BROKEN_METRICS)) == (5, 7, 7, 6)


# -- the built-ins pass their kits ----------------------------------------------------------------
def _builtin(kind):
    return [i.name for i in infovae.registry().plugins(kind) if i.source.builtin]


@pytest.mark.parametrize("name", _builtin("encoders"))
def test_builtin_encoder_contract(name):
    assert set(check_encoder(name).values()) == {"passed"}


@pytest.mark.parametrize("name, options", [(n, {}) for n in _builtin("samplers")]
                         + [("markov-chain", {"start": "data"}), ("markov-chain", {"return_chain": True, "steps": 2})])
def test_builtin_sampler_contract(name, options):
    assert set(check_sampler(name, options).values()) == {"passed"}


@pytest.mark.parametrize("options", [{}, {"kind": "gray8"}])
def test_builtin_digits_contract(options):
    assert set(check_dataset("digits", options).values()) == {"passed"}


CHEAP = {"nll": {"num_samples": 16}}


@pytest.mark.parametrize("name", [n for n in _builtin("metrics") if n != "class-distribution"])
def test_builtin_metric_contract(name):
    assert set(check_metric(name, CHEAP.get(name)).values()) == {"passed"}
