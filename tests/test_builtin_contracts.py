"""Every built-in divergence and decoder passes the plugin-author contract kit (``infovae.testing``).

The test classes are generated from the registry, so a new built-in is covered
without touching this file: one class per built-in divergence with its default
options, plus one per non-default value of each option that declares
``choices`` (e.g. mmd's kernel and estimator), since properties may depend on
options (an unbiased MMD does not claim non-negativity). Decoders run with
their default options on a small shape of each data kind they support.
"""
from __future__ import annotations

import re

import infovae
from infovae.testing import DecoderContract, DivergenceContract

EXPECTED_BUILTINS = {"kl", "mmd", "stein", "adversarial"}


def _builtin_variants():
    reg = infovae.registry()
    for info in reg.plugins("divergences"):
        if not info.source.builtin:
            continue
        yield info.name, {}
        for opt in info.options:
            for choice in opt.choices or ():
                if choice != opt.default:
                    yield info.name, {opt.name: choice}


def _class_name(name, options):
    suffix = "".join(f"_{k}_{v}" for k, v in options.items())
    return "TestContract_" + re.sub(r"\W", "_", name + suffix)


VARIANTS = list(_builtin_variants())

for _name, _options in VARIANTS:
    _cls = type(_class_name(_name, _options), (DivergenceContract,), {"factory": _name, "options": _options, "__module__": __name__})
    globals()[_cls.__name__] = _cls
del _name, _options, _cls


BUILTIN_DECODERS = [i.name for i in infovae.registry().plugins("decoders") if i.source.builtin]

for _name in BUILTIN_DECODERS:
    _cls = type(_class_name(_name, {}).replace("TestContract_", "TestDecoderContract_"), (DecoderContract,),
                {"factory": _name, "__module__": __name__})
    globals()[_cls.__name__] = _cls
del _name, _cls


def test_expected_builtins_are_registered_and_covered():
    covered = {name for name, _ in VARIANTS}
    assert EXPECTED_BUILTINS <= covered, f"missing built-in divergences: {sorted(EXPECTED_BUILTINS - covered)}"
