"""The contract kit for plugin authors: the checks the built-in plugins pass.

Use it in your plugin's own test suite::

    from infovae.testing import DivergenceContract, check_divergence

    class TestMyDivergence(DivergenceContract):   # pytest runs every check as a test
        factory = MyDivergence
        options = {"bandwidth": 1.0}

    def test_contract_in_one_call():                # or everything at once, no base class
        check_divergence(MyDivergence, {"bandwidth": 1.0})

A divergence declares the properties it claims (``properties``, a subset of
``infovae.DIVERGENCE_PROPERTIES``) and the kit checks exactly those, plus what
every divergence must do (see ``infovae.testing.divergences``). Every other kind
has a kit of the same two forms: ``DecoderContract`` / ``check_decoder``,
``EncoderContract`` / ``check_encoder``, ``SamplerContract`` / ``check_sampler``,
``DatasetContract`` / ``check_dataset`` and ``MetricContract`` / ``check_metric``
(``infovae.testing.<kind>s`` documents each check). Loggers have
``check_logger`` (``infovae.testing.loggers``).
Hypothesis strategies are in ``infovae.testing.strategies``.

Dependencies: Hypothesis is required (``pip install "infovae[test]"``); pytest
is optional. The base classes only need it to report skipped checks, and fall
back to ``unittest.SkipTest``; ``check_divergence`` and ``check_decoder`` run
anywhere.
"""
from __future__ import annotations

try:
    import hypothesis  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without the test extra
    raise ImportError(
        "infovae.testing needs Hypothesis: pip install 'infovae[test]' (or pip install hypothesis)"
    ) from exc

from . import strategies
from .datasets import DATASET_CHECKS, DatasetContract, check_dataset
from .decoders import DECODER_CHECKS, DecoderContract, check_decoder
from .encoders import ENCODER_CHECKS, EncoderContract, check_encoder
from .metrics import METRIC_CHECKS, MetricContract, check_metric
from .samplers import SAMPLER_CHECKS, SamplerContract, check_sampler
from .loggers import check_logger
from .divergences import (
    ATOL,
    CONTRACT_SETTINGS,
    DIVERGENCE_CHECKS,
    RTOL,
    ContractSkip,
    DivergenceContract,
    check_divergence,
)

__all__ = [
    "ATOL",
    "RTOL",
    "CONTRACT_SETTINGS",
    "DIVERGENCE_CHECKS",
    "ContractSkip",
    "DivergenceContract",
    "check_divergence",
    "DECODER_CHECKS",
    "DecoderContract",
    "check_decoder",
    "ENCODER_CHECKS",
    "EncoderContract",
    "check_encoder",
    "SAMPLER_CHECKS",
    "SamplerContract",
    "check_sampler",
    "DATASET_CHECKS",
    "DatasetContract",
    "check_dataset",
    "METRIC_CHECKS",
    "MetricContract",
    "check_metric",
    "check_logger",
    "strategies",
]
