"""The plugin registry: in-process registration, lookup, errors, construction."""
import pytest

import infovae
from infovae import (
    DuplicatePluginError,
    Option,
    PluginError,
    PluginOptionError,
    UnknownPluginError,
    hookimpl,
)
from infovae.registry import KINDS


class Thing:
    """A thing with a width."""

    def __init__(self, width: int = 2, mode: str = "a"):
        self.width, self.mode = width, mode


class DivergencePlugin:
    __name__ = "test-divergences"

    @hookimpl
    def register_divergences(self, register):
        register("toy", Thing, options=[Option("width", int, 2, "w", minimum=1), Option("mode", str, "a", "m", choices=("a", "b"))])
        register("sig", Thing)  # options from the signature, summary from the docstring


def test_register_create_and_unregister(empty_registry):
    reg = empty_registry
    name = reg.register_plugin(DivergencePlugin(), name="toys")
    assert reg.names("divergences") == ["sig", "toy"]
    obj = reg.create("divergences", "toy", {"width": "5", "mode": "b"})
    assert (obj.width, obj.mode) == (5, "b")
    info = reg.info("divergence", "sig")  # singular kinds are accepted too
    assert info.summary == "A thing with a width."
    assert [(o.name, o.default) for o in info.options] == [("width", 2), ("mode", "a")]
    assert info.source.plugin == "toys" and not info.source.builtin
    reg.unregister_plugin(name)
    assert reg.names("divergences") == []


def test_unknown_name_lists_available_and_closest(empty_registry):
    empty_registry.register_plugin(DivergencePlugin(), name="toys")
    with pytest.raises(UnknownPluginError) as err:
        empty_registry.info("divergences", "tyo")
    msg = str(err.value)
    assert "Did you mean 'toy'" in msg and "Available: sig, toy" in msg


def test_unknown_kind(empty_registry):
    with pytest.raises(PluginError, match="unknown plugin kind 'priors'"):
        empty_registry.names("priors")


def test_duplicate_name_names_both_providers(empty_registry):
    class Other:
        @hookimpl
        def register_divergences(self, register):
            register("toy", Thing)

    empty_registry.register_plugin(DivergencePlugin(), name="first-plugin")
    with pytest.raises(DuplicatePluginError) as err:
        empty_registry.register_plugin(Other(), name="second-plugin")
    assert "first-plugin" in str(err.value) and "second-plugin" in str(err.value)
    # Nothing of the rejected plugin is kept, the first is intact.
    assert not empty_registry.pm.has_plugin("second-plugin")
    assert empty_registry.info("divergences", "toy").source.plugin == "first-plugin"


def test_same_plugin_registering_a_name_twice_is_an_error(empty_registry):
    class Twice:
        @hookimpl
        def register_encoders(self, register):
            register("e", Thing)
            register("e", Thing)

    with pytest.raises(DuplicatePluginError, match="twice"):
        empty_registry.register_plugin(Twice(), name="twice")


def test_misspelt_hook_is_an_error_not_silence(empty_registry):
    class Misspelt:
        @hookimpl
        def register_divergence(self, register):  # singular: no such hook
            register("x", Thing)

    with pytest.raises(Exception, match="register_divergence"):
        empty_registry.register_plugin(Misspelt(), name="misspelt")
    assert not empty_registry.pm.has_plugin("misspelt")


def test_decoders_must_declare_supported_data(empty_registry):
    class NoSupports:
        @hookimpl
        def register_decoders(self, register):
            register("d", Thing)

    class BadKind:
        @hookimpl
        def register_decoders(self, register):
            register("d", Thing, supports=("color",))

    with pytest.raises(PluginError, match="supports="):
        empty_registry.register_plugin(NoSupports(), name="a")
    with pytest.raises(PluginError, match="unknown data kind"):
        empty_registry.register_plugin(BadKind(), name="b")


def test_bad_factory_and_name(empty_registry):
    class BadFactory:
        @hookimpl
        def register_samplers(self, register):
            register("s", "no_colon_here")

    class BadName:
        @hookimpl
        def register_samplers(self, register):
            register("two words", Thing)

    with pytest.raises(PluginError, match="import string"):
        empty_registry.register_plugin(BadFactory(), name="a")
    with pytest.raises(PluginError, match="without spaces"):
        empty_registry.register_plugin(BadName(), name="b")


def test_bad_options_are_rejected_before_the_factory_runs(empty_registry):
    calls = []

    class Counting:
        @hookimpl
        def register_samplers(self, register):
            register("c", lambda width=1: calls.append(width), options=[Option("width", int, 1, "w")])

    empty_registry.register_plugin(Counting(), name="c")
    with pytest.raises(PluginOptionError, match="no option 'depth'"):
        empty_registry.create("samplers", "c", {"depth": 3})
    with pytest.raises(PluginOptionError, match="expected int"):
        empty_registry.create("samplers", "c", {"width": "x"})
    assert calls == []


def test_import_string_factory_loads_lazily_and_reports_failure(empty_registry):
    class Lazy:
        @hookimpl
        def register_samplers(self, register):
            register("missing", "no_such_module_xyz:Factory", options=[])

    empty_registry.register_plugin(Lazy(), name="lazy")
    info = empty_registry.info("samplers", "missing")
    assert info.to_json()["factory"] == "no_such_module_xyz:Factory"
    with pytest.raises(PluginError, match="could not load its factory"):
        empty_registry.create("samplers", "missing")


def test_context_arguments_for_encoders(empty_registry):
    class Enc:
        @hookimpl
        def register_encoders(self, register):
            register("e", lambda spec, latent_dim, width=3: (spec, latent_dim, width))

    empty_registry.register_plugin(Enc(), name="enc")
    assert [o.name for o in empty_registry.info("encoders", "e").options] == ["width"]
    spec = infovae.DataSpec("binary", (1, 2, 2))
    assert empty_registry.create("encoders", "e", {"width": 4}, spec, 5) == (spec, 5, 4)
    with pytest.raises(TypeError, match="context"):
        empty_registry.create("encoders", "e", {})


def test_builtins_cover_every_kind(registry):
    for kind in KINDS:
        infos = [i for i in registry.plugins(kind) if i.source.distribution == "infovae"]
        assert infos, f"no built-in {kind}"
        assert all(i.source.builtin for i in infos)
    assert registry.failures == []


def test_global_registry_is_the_fixture(registry):
    assert infovae.registry() is registry
