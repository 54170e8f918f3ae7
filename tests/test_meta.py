"""Meta-tests (datasette style): every hook documented and tested, every built-in's
declared options match its factory, packaging ships every package."""
import inspect
import re
import tomllib
from pathlib import Path

import pluggy
import pytest

from infovae import hookimpl, hookspecs
from infovae.registry import CONTEXT_ARGS, KINDS, Registry

ROOT = Path(__file__).resolve().parents[1]


def _hookspec_names():
    """The hooks pluggy itself finds in infovae.hookspecs (not a text search)."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    return sorted(name for name in dir(pm.hook) if not name.startswith("_") and getattr(pm.hook, name).spec is not None)


HOOKS = _hookspec_names()


def test_one_hook_per_kind():
    assert HOOKS == sorted(f"register_{k}" for k in KINDS)
    assert {"divergences", "encoders", "decoders", "samplers", "datasets", "metrics", "loggers"} <= set(KINDS)


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_documented_in_readme(hook):
    assert f"`{hook}(register)`" in (ROOT / "README.md").read_text()


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_implemented_by_builtins_and_reaches_the_registry(hook):
    kind = hook[len("register_"):]
    reg = Registry()
    impls = [i for i in getattr(reg.pm.hook, hook).get_hookimpls()]
    assert any(reg._sources[i.plugin_name].builtin for i in impls), f"no built-in implements {hook}"

    class InProcess:
        pass

    def impl(register):
        register(f"meta-{kind}", lambda *context, **options: None, summary="meta-test plugin", options=[],
                 **({"supports": ("binary",)} if kind == "decoders" else {}))

    setattr(InProcess, hook, staticmethod(hookimpl(impl)))
    reg.register_plugin(InProcess(), name="meta")
    assert reg.info(kind, f"meta-{kind}").summary == "meta-test plugin"


def _builtin_infos(registry):
    return [i for i in registry.plugins() if i.source.builtin]


def test_builtin_factories_load_and_have_summaries(registry):
    for info in _builtin_infos(registry):
        assert callable(info.load()), info.name
        assert info.summary, f"{info.kind}/{info.name} has no summary"
        for o in info.options:
            assert o.help, f"{info.kind}/{info.name}: option {o.name} has no help"


def test_declared_options_match_factory_signatures(registry):
    for info in _builtin_infos(registry):
        factory = info.load()
        target = factory.__init__ if inspect.isclass(factory) else factory
        params = [p for p in inspect.signature(target).parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        if inspect.isclass(factory):
            params = params[1:]  # self
        params = params[len(CONTEXT_ARGS[info.kind]):]
        sig = {p.name: p.default for p in params}
        declared = {o.name: o.default for o in info.options}
        assert declared == sig, f"{info.kind}/{info.name}: declared {declared} but the factory takes {sig}"


def test_builtin_registration_modules_do_not_import_torch():
    import subprocess
    import sys

    code = "import sys, infovae; r = infovae.registry(); assert r.plugins(); assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def test_pyproject_ships_every_package():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping = cfg["package-dir"]
    declared = set(cfg["packages"])
    found = set()
    for prefix, folder in mapping.items():
        base = ROOT / folder
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base)
            found.add(".".join([prefix, *rel.parts]) if rel.parts else prefix)
    assert found == declared


def test_core_never_imports_builtin_plugins():
    for path in (ROOT / "infovae").rglob("*.py"):
        text = path.read_text()
        assert not re.search(r"^\s*(from|import)\s+infovae\.plugins", text, re.M), path
        assert "infovae.plugins." not in text or path.name == "registry.py", path


def test_plugins_use_only_the_public_api():
    private = re.compile(r"^\s*from\s+infovae\.(?!functional\b|plugins\b|testing\b|layers\b|metrics\b)([a-z_]+)\s+import", re.M)
    for path in (ROOT / "plugins").rglob("*.py"):
        m = private.search(path.read_text())
        assert m is None, f"{path} imports the private core module infovae.{m.group(1)}; use names exported by infovae"
