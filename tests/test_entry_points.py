"""Entry-point plugins: discovery, isolation of broken ones, strict mode, filtering.

Each test builds a real distribution (dist-info with entry_points.txt) on a
temporary path, so the same discovery path as an installed package is used.
"""
import json
import os
import subprocess
import sys
import textwrap
import warnings

import pytest

from infovae import PluginLoadError
from infovae.registry import Registry


def make_distribution(root, dist, version, entry_points, modules):
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text("[infovae]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items()))
    for name, source in modules.items():
        (root / f"{name}.py").write_text(textwrap.dedent(source))


GOOD = """
from infovae import hookimpl

class Shift:
    '''Mean squared distance between sample means (toy).'''
    def __init__(self, power: float = 2.0):
        self.power = power

@hookimpl
def register_divergences(register):
    register("toy-shift", Shift)
"""
BROKEN_IMPORT = "raise ImportError('this plugin is broken on purpose')\n"
BROKEN_REGISTER = """
from infovae import hookimpl

@hookimpl
def register_samplers(register):
    raise RuntimeError('registration exploded')
"""
COLLIDES = """
from infovae import hookimpl

@hookimpl
def register_divergences(register):
    register("kl", lambda: None)
    register("toy-other", lambda: None)
"""


@pytest.fixture
def plugin_path(tmp_path, monkeypatch):
    make_distribution(tmp_path, "toy-good", "1.2.3", {"good": "toy_good"}, {"toy_good": GOOD})
    make_distribution(tmp_path, "toy-broken", "0.1", {"broken": "toy_broken"}, {"toy_broken": BROKEN_IMPORT})
    make_distribution(tmp_path, "toy-badreg", "0.2", {"badreg": "toy_badreg"}, {"toy_badreg": BROKEN_REGISTER})
    make_distribution(tmp_path, "toy-collides", "0.3", {"collides": "toy_collides"}, {"toy_collides": COLLIDES})
    monkeypatch.syspath_prepend(str(tmp_path))
    for var in ("INFOVAE_LOAD_PLUGINS", "INFOVAE_STRICT_PLUGINS"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def test_good_plugin_is_found_with_its_distribution(plugin_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        reg = Registry()
    info = reg.info("divergences", "toy-shift")
    assert (info.source.distribution, info.source.version) == ("toy-good", "1.2.3")
    assert info.summary.startswith("Mean squared distance")
    assert reg.create("divergences", "toy-shift", {"power": "3"}).power == 3.0


def test_broken_plugins_are_isolated_and_reported(plugin_path):
    with pytest.warns(RuntimeWarning) as record:
        reg = Registry()
    failed = {f.name: f for f in reg.failures}
    assert set(failed) == {"broken", "badreg", "collides"}
    assert "this plugin is broken on purpose" in failed["broken"].error
    assert "registration exploded" in failed["badreg"].error
    err = failed["collides"].error
    assert "toy-collides" in err and "taken by the built-in divergence 'kl'" in err and "rename it" in err
    assert "INFOVAE_LOAD_PLUGINS" not in err, "restricting loading cannot resolve a clash with a built-in"
    assert "toy-other" in reg.names("divergences"), "only the colliding name is rejected"
    assert any("INFOVAE_STRICT_PLUGINS" in str(w.message) for w in record)
    # Everything else still works, the built-in kl is untouched.
    assert reg.info("divergences", "kl").source.builtin
    assert "toy-shift" in reg.names("divergences")


def test_strict_mode_makes_a_failure_fatal_with_the_traceback(plugin_path, monkeypatch):
    monkeypatch.setenv("INFOVAE_STRICT_PLUGINS", "1")
    with pytest.raises(PluginLoadError) as err:
        Registry()
    msg = str(err.value)
    assert "Traceback" in msg and "toy-" in msg


def test_load_plugins_restricts_third_party_plugins(plugin_path, monkeypatch):
    monkeypatch.setenv("INFOVAE_LOAD_PLUGINS", "good")
    reg = Registry()
    assert reg.failures == []
    assert "toy-shift" in reg.names("divergences") and "kl" in reg.names("divergences")
    monkeypatch.setenv("INFOVAE_LOAD_PLUGINS", "")
    reg = Registry()
    assert "toy-shift" not in reg.names("divergences")
    assert reg.names("encoders"), "built-ins always load"
    monkeypatch.setenv("INFOVAE_LOAD_PLUGINS", "toy-good")  # distribution names work too
    assert "toy-shift" in Registry().names("divergences")


def run_cli(args, plugin_path, **env):
    full = {k: v for k, v in os.environ.items() if not k.startswith("INFOVAE_")}
    full.update(PYTHONPATH=str(plugin_path), **env)
    return subprocess.run([sys.executable, "-m", "infovae.cli.main", *args], capture_output=True, text=True, env=full, timeout=120)


def test_cli_survives_broken_plugins_and_shows_them(plugin_path):
    proc = run_cli(["plugins", "--json"], plugin_path)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert {f["name"] for f in out["failed"]} == {"broken", "badreg", "collides"}
    names = {p["name"] for p in out["plugins"]["divergences"]}
    assert {"kl", "toy-shift"} <= names
    # --help works too, and the table shows the failures
    assert run_cli(["--help"], plugin_path).returncode == 0
    table = run_cli(["plugins"], plugin_path)
    assert table.returncode == 0 and "failed to load" in table.stdout and "toy-broken" in table.stdout


def test_cli_strict_mode_fails(plugin_path):
    proc = run_cli(["plugins"], plugin_path, INFOVAE_STRICT_PLUGINS="1")
    assert proc.returncode != 0
    assert "failed to load" in proc.stderr


MISSPELT_HOOK = """
from infovae import hookimpl

@hookimpl
def register_divergence(register):
    register("never", lambda: None)
"""
SLOW = """
import time
time.sleep(0.25)
from infovae import hookimpl

@hookimpl
def register_samplers(register):
    register("toy-slow", "toy_slow_impl:make")
"""
UNDECLARED = """
from infovae import hookimpl

@hookimpl
def register_divergences(register):
    register("toy-undeclared", "toy_missing_module:Factory", summary="factory module does not exist")
"""


@pytest.fixture
def boundary_path(tmp_path, monkeypatch):
    make_distribution(tmp_path, "toy-hook", "0.4", {"hook": "toy_hook"}, {"toy_hook": MISSPELT_HOOK})
    make_distribution(tmp_path, "toy-slow", "0.5", {"slow": "toy_slow"}, {"toy_slow": SLOW})
    make_distribution(tmp_path, "toy-undeclared", "0.6", {"undeclared": "toy_undeclared"}, {"toy_undeclared": UNDECLARED})
    monkeypatch.syspath_prepend(str(tmp_path))
    for var in ("INFOVAE_LOAD_PLUGINS", "INFOVAE_STRICT_PLUGINS"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def test_misspelt_hook_slow_module_and_undeclared_options(boundary_path):
    with pytest.warns(RuntimeWarning) as record:
        reg = Registry()
    failed = {f.name: f.error for f in reg.failures}
    assert set(failed) == {"hook"}
    assert "unknown hook 'register_divergence'" in failed["hook"] and "Did you mean 'register_divergences'" in failed["hook"]
    slow = {s["name"]: s for s in reg.slow}
    assert set(slow) == {"slow"} and slow["slow"]["seconds"] >= 0.25 and slow["slow"]["distribution"] == "toy-slow"
    assert any("took 0.2" in str(w.message) and "toy_slow" in str(w.message) for w in record)
    info = reg.info("divergences", "toy-undeclared")
    assert info.listed_options() is None  # listing never imports the (missing) factory module
    as_json = info.to_json()
    assert as_json["options"] is None and as_json["options_declared"] is False and "error" not in as_json
    from infovae import PluginError

    with pytest.raises(PluginError, match="toy_missing_module"):
        reg.create("divergences", "toy-undeclared")


def test_cli_json_and_warnings_with_boundary_plugins(boundary_path):
    proc = run_cli(["plugins", "--json"], boundary_path)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert [f["name"] for f in out["failed"]] == ["hook"]
    assert [s["name"] for s in out["slow"]] == ["slow"]
    und = [p for p in out["plugins"]["divergences"] if p["name"] == "toy-undeclared"][0]
    assert und["options"] is None
    # warnings are one line each, without Python's source-line decoration
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines and all(line.startswith("warning: infovae:") for line in lines), proc.stderr


def test_unknown_plugin_points_at_the_entry_point_and_reinstalling(boundary_path, registry):
    from click.testing import CliRunner

    from infovae.cli.main import cli

    res = CliRunner().invoke(cli, ["train", "-r", "toy-nothing", "--out", str(boundary_path / "run")])
    assert res.exit_code == 1 and "[project.entry-points.infovae]" in res.output and "reinstall" in res.output
    assert "Traceback" not in res.output and not (boundary_path / "run").exists()
