"""Typed plugin options: parsing of key=value strings and validation."""
import math

import pytest
from hypothesis import given, strategies as st

from infovae import Option, PluginOptionError, float_list
from infovae.options import options_from_signature, parse_assignments, resolve_options

OPTS = [
    Option("width", int, 64, "units", minimum=1),
    Option("rate", float, 0.5, "a rate", minimum=0.0, maximum=1.0),
    Option("kernel", str, "rbf", "kernel", choices=("rbf", "imq")),
    Option("flag", bool, False, "a switch"),
    Option("scales", float_list, (1.0,), "scales"),
]


def test_strings_are_converted_to_declared_types():
    out = resolve_options(OPTS, {"width": "128", "rate": "0.25", "kernel": "imq", "flag": "yes", "scales": "0.5,2"}, "thing")
    assert out == {"width": 128, "rate": 0.25, "kernel": "imq", "flag": True, "scales": (0.5, 2.0)}


def test_missing_options_take_defaults():
    assert resolve_options(OPTS, {}, "thing") == {"width": 64, "rate": 0.5, "kernel": "rbf", "flag": False, "scales": (1.0,)}


@pytest.mark.parametrize(
    "given, fragment",
    [
        ({"width": "wide"}, "expected int"),
        ({"width": "0"}, "below the minimum"),
        ({"rate": "2"}, "above the maximum"),
        ({"rate": "nan"}, "expected float"),
        ({"kernel": "gauss"}, "is not one of"),
        ({"flag": "maybe"}, "expected bool"),
        ({"width": True}, "expected int"),
        ({"scales": ""}, "expected FLOAT"),
    ],
)
def test_bad_values_name_the_option_and_the_expectation(given, fragment):
    with pytest.raises(PluginOptionError) as err:
        resolve_options(OPTS, given, "encoder 'mlp'")
    assert fragment in str(err.value)
    assert repr(next(iter(given))) in str(err.value)
    assert "encoder 'mlp'" in str(err.value)


def test_unknown_key_suggests_the_closest():
    with pytest.raises(PluginOptionError, match=r"no option 'widht'.*Did you mean 'width'"):
        resolve_options(OPTS, {"widht": 3}, "encoder 'mlp'")


@given(st.integers(min_value=1, max_value=10**9))
def test_int_round_trip(n):
    assert resolve_options(OPTS, {"width": str(n)}, "x")["width"] == n


@given(st.floats(min_value=0, max_value=1, allow_nan=False))
def test_float_round_trip(v):
    assert resolve_options(OPTS, {"rate": repr(v)}, "x")["rate"] == v


def test_parse_assignments():
    assert parse_assignments(["a=1", "b-c = x=y"]) == {"a": "1", "b_c": "x=y"}
    with pytest.raises(PluginOptionError, match="key=value"):
        parse_assignments(["novalue"])
    with pytest.raises(PluginOptionError, match="given twice"):
        parse_assignments(["a=1", "a=2"])


def test_options_from_signature_skip_context():
    def factory(spec, latent_dim, hidden: int = 3, name="x", scale: float = 1.0):
        pass

    opts = options_from_signature(factory, skip=2)
    assert [(o.name, o.type, o.default) for o in opts] == [("hidden", int, 3), ("name", str, "x"), ("scale", float, 1.0)]


def test_json_description_is_serialisable():
    import json

    for o in OPTS + [Option("inf", float, math.inf)]:
        json.dumps(o.to_json())


def test_an_unset_optional_option_resolves_again_to_itself():
    """An option whose default is None ("from the preset") resolves to None, and a resolved set of options
    (as a run's spec stores it) resolves again to itself; a wrong value is still an error."""
    opts = [Option("blocks", int, None, "default: from preset", minimum=1)]
    first = resolve_options(opts, {}, "decoder 'x'")
    assert first == {"blocks": None} and resolve_options(opts, first, "decoder 'x'") == first
    assert resolve_options(opts, {"blocks": "3"}, "decoder 'x'") == {"blocks": 3}
    with pytest.raises(PluginOptionError, match="expected int"):
        resolve_options(opts, {"blocks": "none"}, "decoder 'x'")


def test_every_builtin_plugins_resolved_defaults_resolve_again_to_themselves():
    """Building a model from a run's spec re-resolves the options it stored: for every registered plugin
    that must give back the same options (it did not for pixelcnnpp's None defaults)."""
    import infovae

    reg = infovae.registry()
    for info in reg.plugins():
        first = reg.resolve_options(info.kind, info.name)
        assert reg.resolve_options(info.kind, info.name, first) == first, (info.kind, info.name)
