"""The plugin registry: built-ins and third-party plugins through one pluggy manager.

Every plugin, the built-in ones included, is found through the ``infovae``
entry-point group and loaded on its own: a plugin that fails to import or to
register is recorded (and warned about) while the rest keep working, unless
``INFOVAE_STRICT_PLUGINS=1``. ``INFOVAE_LOAD_PLUGINS`` (comma-separated
entry-point or distribution names) restricts which third-party plugins load;
set to the empty string it loads none. Torch-free: factories given as import
strings are imported only when a plugin is built, and listing never imports them
(a plugin that declares no ``options=`` and registers an import string is listed
with its options "undeclared"; they are read from the factory's signature when it
is built). An outside registration module that takes more than
``SLOW_IMPORT_SECONDS`` to import is named in a warning with its import time.
"""
from __future__ import annotations

import difflib
import importlib
import inspect
import os
import time
import traceback
import warnings
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

import pluggy

from . import hookspecs
from .errors import DuplicatePluginError, InfovaeError, PluginBuildError, PluginError, PluginLoadError, PluginWarning, UnknownPluginError
from .options import Option, normalize_options, options_from_signature, resolve_options
from .spec import DATA_KINDS

KINDS: Tuple[str, ...] = ("divergences", "encoders", "decoders", "samplers", "datasets", "metrics", "loggers")
SINGULAR = {
    "divergences": "divergence", "encoders": "encoder", "decoders": "decoder", "samplers": "sampler",
    "datasets": "dataset", "metrics": "metric", "loggers": "logger",
}
# Leading positional arguments a factory of each kind receives before its options.
CONTEXT_ARGS = {
    "divergences": (), "encoders": ("spec", "latent_dim"), "decoders": ("spec", "latent_dim"), "samplers": (),
    "datasets": (), "metrics": (), "loggers": ("run_dir",),
}
ENTRY_POINT_GROUP = "infovae"
BUILTIN_DISTRIBUTION = "infovae"
# An outside registration module slower than this to import is named in a warning (seconds).
SLOW_IMPORT_SECONDS = 0.1
INSTALL_HINT = (
    "If it comes from a package, check that the package is installed in this environment (reinstall it with pip) "
    "and that its pyproject.toml declares the module under [project.entry-points.infovae]."
)


def warn(message: str) -> None:
    """A ``PluginWarning`` without a source line (the line in infovae would only distract)."""
    warnings.warn_explicit(message, PluginWarning, filename="infovae", lineno=0, module="infovae")


def _kind(kind: str) -> str:
    k = {v: k for k, v in SINGULAR.items()}.get(kind, kind)
    if k not in KINDS:
        raise PluginError(f"unknown plugin kind {kind!r}; kinds are {', '.join(KINDS)}")
    return k


@dataclass(frozen=True)
class PluginSource:
    """Where registrations came from: a distribution (with version) and a module."""

    plugin: str  # pluggy name of the plugin object
    distribution: Optional[str] = None
    version: Optional[str] = None
    module: Optional[str] = None

    @property
    def builtin(self) -> bool:
        return self.distribution == BUILTIN_DISTRIBUTION and (self.module or "").startswith("infovae.plugins")

    def describe(self) -> str:
        if self.distribution:
            return f"{self.distribution} {self.version or ''}".strip() + (f" ({self.module})" if self.module else "")
        return f"in-process plugin {self.plugin!r}" + (f" ({self.module})" if self.module else "")


@dataclass
class PluginInfo:
    """One registered plugin: what the CLI lists and what ``create`` builds."""

    kind: str
    name: str
    factory: Union[str, Callable[..., Any]]
    summary: str
    source: PluginSource
    declared_options: Optional[Tuple[Option, ...]] = None
    supports: Optional[Tuple[str, ...]] = None
    _loaded: Optional[Callable[..., Any]] = field(default=None, repr=False)

    def load(self) -> Callable[..., Any]:
        """The factory callable (imports it the first time for import strings)."""
        if self._loaded is None:
            if callable(self.factory):
                self._loaded = self.factory
            else:
                module, _, attr = self.factory.partition(":")
                try:
                    obj: Any = importlib.import_module(module)
                    for part in attr.split("."):
                        obj = getattr(obj, part)
                except Exception as exc:  # noqa: BLE001 - reported with context
                    raise PluginError(
                        f"{SINGULAR[self.kind]} {self.name!r} from {self.source.describe()} could not load "
                        f"its factory {self.factory!r}: {type(exc).__name__}: {exc}"
                    ) from exc
                self._loaded = obj
        return self._loaded

    @property
    def options(self) -> Tuple[Option, ...]:
        """Declared options, else those of the factory's signature (imports an import-string factory)."""
        if self.declared_options is not None:
            return self.declared_options
        try:
            return tuple(options_from_signature(self.load(), skip=len(CONTEXT_ARGS[self.kind])))
        except TypeError as exc:
            raise PluginError(f"{SINGULAR[self.kind]} {self.name!r} from {self.source.describe()}: {exc}") from None

    def listed_options(self) -> Optional[Tuple[Option, ...]]:
        """Options for listing, without importing anything: None when they are undeclared
        (an import-string factory and no ``options=``)."""
        if self.declared_options is not None or not callable(self.factory):
            return self.declared_options
        return self.options

    def to_json(self) -> Dict[str, Any]:
        """A JSON-able description; never raises (a problem is reported under "error")."""
        error = None
        try:
            opts = self.listed_options()
        except Exception as exc:  # noqa: BLE001 - listing must never fail
            opts, error = None, f"{type(exc).__name__}: {exc}"
        out = {
            "kind": self.kind,
            "name": self.name,
            "summary": self.summary,
            "factory": self.factory if isinstance(self.factory, str) else f"{self.factory.__module__}:{self.factory.__qualname__}",
            "distribution": self.source.distribution,
            "version": self.source.version,
            "module": self.source.module,
            "builtin": self.source.builtin,
            "supports": list(self.supports) if self.supports is not None else None,
            "options": None if opts is None else [o.to_json() for o in opts],
            "options_declared": opts is not None,
        }
        if error is not None:
            out["error"] = error
        return out


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that could not be loaded or registered, with its error."""

    name: str
    distribution: Optional[str]
    version: Optional[str]
    error: str
    traceback: str

    def to_json(self) -> Dict[str, Any]:
        return {"name": self.name, "distribution": self.distribution, "version": self.version, "error": self.error}


def _summary_of(factory: Union[str, Callable[..., Any]]) -> str:
    if callable(factory):
        doc = inspect.getdoc(factory) or ""
        return doc.strip().splitlines()[0] if doc.strip() else ""
    return ""


class Registry:
    """All plugins of the six kinds, with lookup, description and construction.

    ``Registry()`` loads the entry points at once; ``Registry(entry_points=False)``
    starts empty (tests then add plugins with ``register_plugin``).
    """

    def __init__(self, entry_points: bool = True):
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self._plugins: Dict[str, Dict[str, PluginInfo]] = {k: {} for k in KINDS}
        self._sources: Dict[str, PluginSource] = {}
        self.failures: List[PluginFailure] = []
        # (entry point, distribution, version, module, seconds) of outside registration modules slow to import.
        self.slow: List[Dict[str, Any]] = []
        if entry_points:
            self.load_entry_points()

    # -- loading ---------------------------------------------------------------------------
    def load_entry_points(self) -> None:
        allowed = os.environ.get("INFOVAE_LOAD_PLUGINS")
        allow = None if allowed is None else {a.strip() for a in allowed.split(",") if a.strip()}
        strict = os.environ.get("INFOVAE_STRICT_PLUGINS", "") not in ("", "0")
        eps = sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: (e.dist.name != BUILTIN_DISTRIBUTION if e.dist else True, e.name))
        for ep in eps:
            dist = ep.dist.name if ep.dist is not None else None
            version = ep.dist.version if ep.dist is not None else None
            builtin = dist == BUILTIN_DISTRIBUTION
            if not builtin and allow is not None and ep.name not in allow and (dist or "") not in allow:
                continue
            plugin_name = ep.name if builtin else f"{dist}:{ep.name}"
            if self.pm.has_plugin(plugin_name):
                continue
            try:
                t0 = time.perf_counter()
                obj = ep.load()
                seconds = time.perf_counter() - t0
                if not builtin and seconds > SLOW_IMPORT_SECONDS:
                    self.slow.append({"name": ep.name, "distribution": dist, "version": version, "module": ep.value, "seconds": round(seconds, 3)})
                    warn(
                        f"infovae: plugin {ep.name!r} from {dist} {version}: importing its registration module "
                        f"{ep.value!r} took {seconds:.2f} s, which every infovae command pays. Keep that module free of "
                        f"heavy imports (torch): register factories as import strings 'module:attribute'."
                    )
                rejected = self.register_plugin(obj, name=plugin_name, distribution=dist, version=version, on_collision="skip")
                for message in rejected:
                    self.failures.append(PluginFailure(ep.name, dist, version, message, ""))
                    warn(f"infovae: {message}")
            except Exception as exc:  # noqa: BLE001 - isolation is the point
                text = str(exc) if isinstance(exc, PluginError) else f"{type(exc).__name__}: {exc}"
                failure = PluginFailure(ep.name, dist, version, text, traceback.format_exc())
                if strict:
                    raise PluginLoadError(
                        f"plugin {ep.name!r} from {dist} {version} failed to load ({failure.error}). "
                        f"Unset INFOVAE_STRICT_PLUGINS to skip broken plugins, or fix or uninstall {dist}.\n"
                        f"{failure.traceback}"
                    ) from exc
                self.failures.append(failure)
                warn(
                    f"infovae: plugin {ep.name!r} from {dist} {version} failed to load and was skipped: "
                    f"{failure.error.rstrip('.')}. Run 'infovae plugins' for details; set INFOVAE_STRICT_PLUGINS=1 to make this fatal."
                )

    def register_plugin(
        self,
        plugin: Any,
        name: Optional[str] = None,
        distribution: Optional[str] = None,
        version: Optional[str] = None,
        on_collision: str = "raise",
    ):
        """Register a plugin object (a module or class with hookimpls).

        Nothing is kept when any of its registrations fails: a misspelt hook name
        (with a did-you-mean), a bad registration. A name that another plugin already
        registered for the same kind raises ``DuplicatePluginError`` (``on_collision="raise"``,
        the default; returns the pluggy name), or, with ``on_collision="skip"``, rejects
        only that name and returns the list of messages for the rejected names.
        """
        pname = self.pm.register(plugin, name=name)
        if pname is None:
            raise PluginError(f"plugin {name or plugin!r} is already registered or blocked")
        rejected: List[str] = []
        try:
            self._check_hook_names(plugin, pname)
            module = getattr(plugin, "__name__", None) if inspect.ismodule(plugin) else type(plugin).__module__ if not inspect.isclass(plugin) else plugin.__module__
            source = PluginSource(pname, distribution, version, module)
            collected = self._collect(plugin, source)
            for kind, entries in collected.items():
                for n in list(entries):
                    if n not in self._plugins[kind]:
                        continue
                    other = self._plugins[kind][n].source
                    if on_collision == "skip":
                        if other.builtin:
                            taken, fix = f"the built-in {SINGULAR[kind]} {n!r}", "rename it in that package (built-in names cannot be replaced)"
                        else:
                            taken = f"the {SINGULAR[kind]} {n!r} of {other.describe()}"
                            fix = "rename one of them, uninstall one package, or load only one with INFOVAE_LOAD_PLUGINS"
                        rejected.append(
                            f"{SINGULAR[kind]} {n!r} from {source.describe()} was not registered: the name is taken by "
                            f"{taken}; {fix}. Its other plugins are registered."
                        )
                        del entries[n]
                        continue
                    raise DuplicatePluginError(
                        f"{SINGULAR[kind]} {n!r} is registered twice: by {other.describe()} and by "
                        f"{source.describe()}. Uninstall one of them, or restrict loading with INFOVAE_LOAD_PLUGINS."
                    )
        except Exception:
            self.pm.unregister(name=pname)
            raise
        for kind, entries in collected.items():
            self._plugins[kind].update(entries)
        self._sources[pname] = source
        return rejected if on_collision == "skip" else pname

    def _check_hook_names(self, plugin: Any, pname: str) -> None:
        """Every hookimpl of ``plugin`` names a known hook; a misspelt one gets a did-you-mean."""
        known = sorted(n for n in dir(hookspecs) if n.startswith("register_"))
        for attr in dir(plugin):
            fn = getattr(plugin, attr, None)
            if not callable(fn) or self.pm.parse_hookimpl_opts(plugin, attr) is None:
                continue
            if attr not in known:
                close = difflib.get_close_matches(attr, known, n=1, cutoff=0.6)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise PluginError(f"plugin {pname!r} implements an unknown hook {attr!r}.{hint} Hooks are {', '.join(known)}.")
        self.pm.check_pending()

    def unregister_plugin(self, name: str) -> None:
        """Remove a plugin registered under ``name`` and everything it registered."""
        if not self.pm.has_plugin(name):
            raise PluginError(f"no plugin named {name!r} is registered")
        self.pm.unregister(name=name)
        for kind in KINDS:
            self._plugins[kind] = {n: i for n, i in self._plugins[kind].items() if i.source.plugin != name}
        self._sources.pop(name, None)

    def _collect(self, plugin: Any, source: PluginSource) -> Dict[str, Dict[str, PluginInfo]]:
        out: Dict[str, Dict[str, PluginInfo]] = {k: {} for k in KINDS}
        for kind in KINDS:
            hook = getattr(self.pm.hook, f"register_{kind}")
            for impl in hook.get_hookimpls():
                if impl.plugin is not plugin:
                    continue

                def register(name, factory, *, summary=None, options=None, supports=None, _kind=kind):
                    info = self._make_info(_kind, name, factory, summary, options, supports, source)
                    if info.name in out[_kind]:
                        raise DuplicatePluginError(f"{source.describe()} registers {SINGULAR[_kind]} {name!r} twice")
                    out[_kind][info.name] = info

                impl.function(register=register)
        return out

    @staticmethod
    def _make_info(kind, name, factory, summary, options, supports, source) -> PluginInfo:
        where = f"{source.describe()}: register_{kind}"
        if not isinstance(name, str) or not name or name != name.strip() or " " in name:
            raise PluginError(f"{where}: plugin names are non-empty strings without spaces, got {name!r}")
        if not (callable(factory) or (isinstance(factory, str) and ":" in factory)):
            raise PluginError(f"{where}({name!r}): factory must be a callable or an import string 'module:attribute', got {factory!r}")
        if supports is not None:
            if kind != "decoders":
                raise PluginError(f"{where}({name!r}): supports= is for decoders only")
            supports = tuple(supports)
            bad = [s for s in supports if s not in DATA_KINDS]
            if bad:
                raise PluginError(f"{where}({name!r}): unknown data kind(s) {bad}; use {', '.join(DATA_KINDS)}")
        elif kind == "decoders":
            raise PluginError(f"{where}({name!r}): decoders must declare supports=(data kinds they model)")
        try:
            opts = normalize_options(options)
        except TypeError as exc:
            raise PluginError(f"{where}({name!r}): {exc}") from None
        return PluginInfo(kind, name, factory, summary if summary is not None else _summary_of(factory), source, opts, supports)

    # -- lookup ------------------------------------------------------------------------------
    def names(self, kind: str) -> List[str]:
        return sorted(self._plugins[_kind(kind)])

    def plugins(self, kind: Optional[str] = None) -> List[PluginInfo]:
        kinds = KINDS if kind is None else (_kind(kind),)
        return [self._plugins[k][n] for k in kinds for n in sorted(self._plugins[k])]

    def info(self, kind: str, name: str) -> PluginInfo:
        kind = _kind(kind)
        table = self._plugins[kind]
        if name in table:
            return table[name]
        close = difflib.get_close_matches(name, list(table), n=1, cutoff=0.5)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        avail = ", ".join(sorted(table)) or "none"
        failed = f" ({len(self.failures)} plugin(s) failed to load: see 'infovae plugins')." if self.failures else ""
        install = "" if close else f" {INSTALL_HINT}"
        raise UnknownPluginError(f"unknown {SINGULAR[kind]} {name!r}.{hint} Available: {avail}.{failed}{install}")

    def find(self, name: str) -> List[PluginInfo]:
        """Every plugin of any kind with this name."""
        return [self._plugins[k][name] for k in KINDS if name in self._plugins[k]]

    def resolve_options(self, kind: str, name: str, options: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
        """Typed, complete options for a plugin: the given ones checked, the rest defaulted."""
        info = self.info(kind, name)
        return resolve_options(info.options, dict(options or {}), f"{SINGULAR[info.kind]} {name!r}")

    def create(self, kind: str, name: str, options: Optional[Mapping[str, Any]] = None, *context: Any) -> Any:
        """Build a plugin: ``factory(*context, **options)``; context is (spec, latent_dim) for encoders and decoders."""
        info = self.info(kind, name)
        expected = CONTEXT_ARGS[info.kind]
        if len(context) != len(expected):
            raise TypeError(f"{SINGULAR[info.kind]} factories take {len(expected)} context argument(s) ({', '.join(expected) or 'none'}), got {len(context)}")
        resolved = self.resolve_options(info.kind, name, options)
        factory = info.load()
        try:
            return factory(*context, **resolved)
        except InfovaeError:
            raise  # the plugin's own checks (options, capabilities, data): already one line with the fix
        except Exception as exc:  # noqa: BLE001 - the boundary: name the plugin and its package
            raise PluginBuildError(
                f"{describe_plugin(info)}: its factory raised {type(exc).__name__}: {exc}. "
                f"This is a bug in {_owner(info)} or an option it does not accept; run with --debug for the traceback."
            ) from exc


def _owner(info: PluginInfo) -> str:
    if info.source.builtin:
        return "infovae (please report it)"
    if info.source.distribution:
        return f"the package {info.source.distribution} {info.source.version or ''}".rstrip() + " (report it to its authors, or uninstall it)"
    return f"the in-process plugin {info.source.plugin!r}"


def describe_plugin(info: PluginInfo) -> str:
    """"divergence 'energy' (infovae-energy-distance 0.1.0)": what error messages call a plugin."""
    if info.source.builtin:
        where = "built-in"
    elif info.source.distribution:
        where = f"{info.source.distribution} {info.source.version or ''}".strip()
    else:
        where = f"in-process plugin {info.source.plugin!r}"
    return f"{SINGULAR[info.kind]} {info.name!r} ({where})"


_REGISTRY: Optional[Registry] = None


def registry(reload: bool = False) -> Registry:
    """The process-wide registry, loaded on first use."""
    global _REGISTRY
    if _REGISTRY is None or reload:
        _REGISTRY = Registry()
    return _REGISTRY
