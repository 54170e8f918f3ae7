"""Shared fixtures: an isolated registry into which tests register plugins in-process."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

import infovae
import importlib

registry_module = importlib.import_module("infovae.registry")  # the attribute infovae.registry is the function

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def pytest_configure(config):
    # The suite's tensors are tiny: two threads spinning against each other cost more than they gain.
    import torch

    torch.set_num_threads(int(os.environ.get("INFOVAE_TEST_THREADS", "1")))


def pytest_collection_modifyitems(config, items):
    import torch

    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(pytest.mark.skip(reason="needs CUDA; no GPU on this machine"))


@pytest.fixture
def registry(monkeypatch):
    """A fresh registry (built-ins and installed plugins) installed as ``infovae.registry()``.

    Plugins a test registers with ``registry.register_plugin(obj, name=...)`` vanish after it.
    """
    reg = registry_module.Registry()
    monkeypatch.setattr(registry_module, "_REGISTRY", reg)
    return reg


@pytest.fixture
def empty_registry(monkeypatch):
    """A registry with no plugins at all."""
    reg = registry_module.Registry(entry_points=False)
    monkeypatch.setattr(registry_module, "_REGISTRY", reg)
    return reg


@pytest.fixture
def shared_data():
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (see shared/data/README.md)")
    return SHARED_DATA


def require_native():
    """Skip without the C kernels (no C compiler at install); under CI, where they must build,
    fail instead: a silent fallback would leave them untested."""
    from infovae.functional import native

    if not native.available():
        if os.environ.get("CI"):
            pytest.fail("infovae.functional._cpu_kernels did not build (see setup.py); CI must test it")
        pytest.skip("the C kernels were not built (no C compiler at install)")


@pytest.fixture(params=["native", "eager"])
def native_route(request, monkeypatch):
    """Run a test once with the C kernels serving ``mmd`` and ``stein_direction`` where they may, once
    with the eager paths only."""
    from infovae.functional import native

    if request.param == "native":
        require_native()
    monkeypatch.setattr(native, "ENABLED", request.param == "native")
    return request.param
