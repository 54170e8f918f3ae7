"""Typed plugin options: declaration, parsing of ``key=value`` strings, validation.

Torch-free: ``infovae plugins show`` prints options without importing torch.
"""
from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union, get_args, get_origin

try:
    from typing import Annotated
except ImportError:  # pragma: no cover - Python < 3.9
    Annotated = None  # type: ignore[assignment]

from .errors import PluginOptionError

_NO_DEFAULT = object()

#: Names of the activations ``infovae.layers.make_activation`` builds (torch-free, for option choices).
ACTIVATION_NAMES: Tuple[str, ...] = ("relu", "leaky_relu", "elu", "gelu", "silu", "tanh")


@dataclass(frozen=True)
class Option:
    """One option of a plugin.

    name:    keyword the factory receives.
    type:    int, float, str, bool, or a parser: a callable that takes a string
             or an already typed value and returns the value, raising ValueError
             when it is not acceptable. Give parsers a ``metavar`` attribute
             (e.g. "FLOAT|median") so help text can show what they take.
    default: value used when the option is not given (already typed).
    help:    one line.
    choices: allowed values, if the set is closed.
    minimum / maximum: inclusive numeric bounds, if any.
    greater_than / less_than: exclusive numeric bounds, if any (e.g. a learning rate > 0).

    The default is not checked against the bounds (None often means "automatic").
    """

    name: str
    type: Any
    default: Any
    help: str = ""
    choices: Optional[Tuple[Any, ...]] = None
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    greater_than: Optional[float] = None
    less_than: Optional[float] = None

    @property
    def type_name(self) -> str:
        if self.type in (int, float, str, bool):
            return self.type.__name__
        return getattr(self.type, "metavar", getattr(self.type, "__name__", "value"))

    def to_json(self) -> Dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type_name,
            "default": _jsonable(self.default),
            "help": self.help,
            "choices": None if self.choices is None else [_jsonable(c) for c in self.choices],
            "minimum": self.minimum,
            "maximum": self.maximum,
            "greater_than": self.greater_than,
            "less_than": self.less_than,
        }

    def bounds_text(self) -> str:
        """The numeric bounds as text (">= 1", "in (0, 1)"), or ""."""
        lo = (f"[{self.minimum:g}", f">= {self.minimum:g}") if self.minimum is not None else \
            (f"({self.greater_than:g}", f"> {self.greater_than:g}") if self.greater_than is not None else None
        hi = (f"{self.maximum:g}]", f"<= {self.maximum:g}") if self.maximum is not None else \
            (f"{self.less_than:g})", f"< {self.less_than:g}") if self.less_than is not None else None
        if lo and hi:
            return f"in {lo[0]}, {hi[0]}"
        return (lo or hi or ("", ""))[1]

    def convert(self, value: Any, plugin: str) -> Any:
        """Typed value for ``value`` (a string from the command line or a Python value)."""
        where = f"option {self.name!r} of {plugin}"
        if value is None and self.default is None:
            return None  # "not set" (e.g. "default: from preset"), as a resolved spec stores it
        try:
            out = _convert(self.type, value)
        except (ValueError, TypeError) as exc:
            raise PluginOptionError(
                f"{where}: cannot use {value!r}: expected {self.type_name}"
                + (f" ({exc})" if str(exc) else "")
            ) from None
        if self.choices is not None and out not in self.choices:
            raise PluginOptionError(
                f"{where}: {out!r} is not one of {', '.join(map(repr, self.choices))}"
            )
        if isinstance(out, (int, float)) and not isinstance(out, bool):
            if self.minimum is not None and out < self.minimum:
                raise PluginOptionError(f"{where}: {out!r} is below the minimum {self.minimum!r}")
            if self.maximum is not None and out > self.maximum:
                raise PluginOptionError(f"{where}: {out!r} is above the maximum {self.maximum!r}")
            if self.greater_than is not None and not out > self.greater_than:
                raise PluginOptionError(f"{where}: {out!r} must be greater than {self.greater_than!r}")
            if self.less_than is not None and not out < self.less_than:
                raise PluginOptionError(f"{where}: {out!r} must be less than {self.less_than!r}")
        return out


@dataclass(frozen=True)
class Opt:
    """Help and bounds of a factory keyword parameter, carried by its annotation::

        def make(hidden: Annotated[int, Opt("width of each layer", minimum=1)] = 256): ...

    The option's name, type and default come from the parameter itself.
    """

    help: str = ""
    choices: Optional[Tuple[Any, ...]] = None
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    greater_than: Optional[float] = None
    less_than: Optional[float] = None


def _jsonable(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _convert(typ: Any, value: Any) -> Any:
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise ValueError("use true or false")
    if typ is int:
        if isinstance(value, bool):
            raise ValueError("a boolean is not an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            return int(value.strip())
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ValueError("not an integer")
    if typ is float:
        if isinstance(value, bool):
            raise ValueError("a boolean is not a number")
        if isinstance(value, (int, float)):
            out = float(value)
        elif isinstance(value, str):
            out = float(value.strip())
        else:
            raise ValueError("not a number")
        if not math.isfinite(out):
            raise ValueError("must be finite")
        return out
    if typ is str:
        if not isinstance(value, str):
            raise ValueError("not a string")
        return value
    return typ(value)


def float_list(value: Any) -> Tuple[float, ...]:
    """Parser for a comma-separated list of floats (or a sequence of numbers)."""
    if isinstance(value, str):
        parts = [p for p in value.split(",") if p.strip()]
    elif isinstance(value, (list, tuple)):
        parts = list(value)
    else:
        parts = [value]
    if not parts:
        raise ValueError("empty list")
    return tuple(_convert(float, p) for p in parts)


float_list.metavar = "FLOAT[,FLOAT...]"  # type: ignore[attr-defined]


def options_from_signature(factory: Callable, skip: int = 0) -> List[Option]:
    """Options from a factory's keyword parameters (annotations give types).

    ``skip`` leading positional parameters are context, not options (e.g. the
    data spec and latent dimension of encoders and decoders).
    Annotations may be ``Annotated[T, Opt(help=..., minimum=...)]``; T (int, float, str,
    bool, or a parser callable) gives the type, else the default's type does.
    """
    try:
        hints = typing_hints(factory)
    except Exception:  # noqa: BLE001 - unresolvable string annotations: fall back to the raw ones
        hints = {}
    sig = inspect.signature(factory)
    params = [p for p in sig.parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    out = []
    for p in params[skip:]:
        if p.default is inspect.Parameter.empty:
            raise TypeError(f"factory parameter {p.name!r} needs a default to be an option")
        ann = hints.get(p.name, p.annotation)
        meta = Opt()
        if Annotated is not None and get_origin(ann) is Annotated:
            ann, *extra = get_args(ann)
            meta = next((e for e in extra if isinstance(e, Opt)), meta)
        if ann in (int, float, str, bool) or (callable(ann) and getattr(ann, "metavar", None)):
            typ = ann
        else:
            typ = type(p.default) if type(p.default) in (int, float, str, bool) else str
        out.append(Option(p.name, typ, p.default, meta.help, meta.choices, meta.minimum, meta.maximum, meta.greater_than, meta.less_than))
    return out


def typing_hints(factory: Callable) -> Dict[str, Any]:
    import typing

    target = factory.__init__ if inspect.isclass(factory) else factory
    return typing.get_type_hints(target, include_extras=True)


DATACLASS_METADATA_KEYS = ("help", "choices", "minimum", "maximum", "greater_than", "less_than")


def options_from_dataclass(cls: type) -> List[Option]:
    """Options from a dataclass: field type, default, and ``metadata`` with the keys
    ``DATACLASS_METADATA_KEYS`` (help, choices, minimum, maximum, greater_than, less_than).
    An unknown metadata key is a TypeError (a misspelt bound must not be silently ignored)."""
    out = []
    for f in dataclasses.fields(cls):
        unknown = sorted(set(f.metadata) - set(DATACLASS_METADATA_KEYS))
        if unknown:
            raise TypeError(f"option {f.name!r}: unknown metadata key(s) {unknown}; use {', '.join(DATACLASS_METADATA_KEYS)}")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        typ = f.type if f.type in (int, float, str, bool) else {"int": int, "float": float, "str": str, "bool": bool}.get(f.type, type(default))
        m = f.metadata
        choices = tuple(m["choices"]) if m.get("choices") is not None else None
        out.append(Option(f.name, typ, default, m.get("help", ""), choices, m.get("minimum"), m.get("maximum"),
                          m.get("greater_than"), m.get("less_than")))
    return out


def normalize_options(spec: Union[None, Sequence[Option], type]) -> Optional[Tuple[Option, ...]]:
    if spec is None:
        return None
    if isinstance(spec, type) and dataclasses.is_dataclass(spec):
        return tuple(options_from_dataclass(spec))
    opts = tuple(spec)
    for o in opts:
        if not isinstance(o, Option):
            raise TypeError(f"options must be infovae.Option objects or a dataclass, got {o!r}")
    names = [o.name for o in opts]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise TypeError(f"option(s) declared twice: {', '.join(sorted(dup))}")
    return opts


def resolve_options(options: Sequence[Option], given: Mapping[str, Any], plugin: str) -> Dict[str, Any]:
    """Typed values for every option: the given ones converted, the rest defaulted.

    Unknown keys are errors naming the closest known key.
    """
    known = {o.name: o for o in options}
    for key in given:
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            avail = ", ".join(known) if known else "none"
            raise PluginOptionError(f"{plugin} has no option {key!r}.{hint} Its options: {avail}.")
    out = {}
    for name, opt in known.items():
        out[name] = opt.convert(given[name], plugin) if name in given else opt.default
    return out


def check_options(options: Sequence[Option], values: Mapping[str, Any], plugin: str) -> Dict[str, Any]:
    """Check a constructor's arguments against the plugin's declared options (one source of truth).

    Every value is converted and checked (type, choices, bounds) with ``PluginOptionError``
    naming ``plugin`` and the option; a value equal to the declared default is accepted as is
    (None defaults mean "automatic"). Returns the converted values.
    """
    known = {o.name: o for o in options}
    out = {}
    for key, value in values.items():
        opt = known.get(key)
        if opt is None:
            raise PluginOptionError(f"{plugin} has no declared option {key!r}")
        out[key] = value if (value is opt.default or (value == opt.default and type(value) is type(opt.default))) else opt.convert(value, plugin)
    return out


def split_targeted(items: Iterable[str], targets: Sequence[str], command: str, example: str, add_hint: str = "") -> Dict[str, Dict[str, str]]:
    """The ``-o TARGET.KEY=VALUE`` grammar shared by every command.

    items: the raw ``-o`` strings; targets: the names a TARGET may be (plugins chosen in this
    command, e.g. "encoder" or a metric name). Returns {target: {key: value}}. Errors are
    ``PluginOptionError`` with the closest target (did-you-mean) and ``add_hint`` (how to choose
    another plugin) for a target that is not chosen.
    """
    out: Dict[str, Dict[str, str]] = {}
    for item in items:
        lhs, eq, _ = item.partition("=")
        target, dot, key = lhs.partition(".")
        if not eq or not dot or not key.strip() or not target.strip():
            guess = f" (did you mean -o {targets[0]}.{item}?)" if len(targets) == 1 and eq and not dot else ""
            raise PluginOptionError(
                f"{command} -o {item!r}: expected TARGET.KEY=VALUE with TARGET one of {', '.join(targets) or 'none'}{guess}, e.g. {example}"
            )
        target = target.strip()
        if target not in targets:
            close = difflib.get_close_matches(target, list(targets), n=1, cutoff=0.6)
            if close:
                hint = f" Did you mean {close[0]!r}?"
            else:
                hint = f" {add_hint.format(target=target)}" if add_hint else ""
            raise PluginOptionError(
                f"{command} -o {item!r}: {target!r} is not one of the targets of this command ({', '.join(targets) or 'none'}).{hint}"
            )
        out.setdefault(target, {}).update(parse_assignments([item[len(target) + 1:]], what=f"-o {target}"))
    return out


def parse_assignments(items: Iterable[str], what: str = "option") -> Dict[str, str]:
    """['a=1', 'b=x'] -> {'a': '1', 'b': 'x'}; a clear error for malformed items."""
    out: Dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise PluginOptionError(f"{what} {item!r} is not of the form key=value")
        key = key.strip().replace("-", "_")
        if key in out:
            raise PluginOptionError(f"{what} {key!r} given twice")
        out[key] = value.strip()
    return out


def bandwidth_option(value: Any) -> Union[str, Tuple[float, ...]]:
    """Parser for a kernel bandwidth: "median", a positive float, or a comma list of them.

    Returns "median" or a tuple of positive floats (a list means the sum of kernels).
    """
    if isinstance(value, str) and value.strip().lower() == "median":
        return "median"
    values = float_list(value)
    bad = [v for v in values if v <= 0]
    if bad:
        raise ValueError(f"bandwidths must be positive, got {bad[0]!r}")
    return values


bandwidth_option.metavar = "median|FLOAT[,FLOAT...]"  # type: ignore[attr-defined]
