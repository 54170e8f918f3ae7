"""Typed plugin options: declaration, parsing of ``key=value`` strings, validation.

Torch-free: ``infovae plugins show`` prints options without importing torch.
"""
from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from .errors import PluginOptionError

_NO_DEFAULT = object()


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
    """

    name: str
    type: Any
    default: Any
    help: str = ""
    choices: Optional[Tuple[Any, ...]] = None
    minimum: Optional[float] = None
    maximum: Optional[float] = None

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
        }

    def convert(self, value: Any, plugin: str) -> Any:
        """Typed value for ``value`` (a string from the command line or a Python value)."""
        where = f"option {self.name!r} of {plugin}"
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
        return out


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
    """
    sig = inspect.signature(factory)
    params = [p for p in sig.parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    out = []
    for p in params[skip:]:
        if p.default is inspect.Parameter.empty:
            raise TypeError(f"factory parameter {p.name!r} needs a default to be an option")
        typ = p.annotation if p.annotation in (int, float, str, bool) else type(p.default)
        if typ not in (int, float, str, bool):
            typ = str
        out.append(Option(p.name, typ, p.default))
    return out


def options_from_dataclass(cls: type) -> List[Option]:
    """Options from a dataclass: field type, default, and ``metadata={"help": ...}``."""
    out = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        typ = f.type if f.type in (int, float, str, bool) else {"int": int, "float": float, "str": str, "bool": bool}.get(f.type, type(default))
        out.append(Option(f.name, typ, default, f.metadata.get("help", ""), f.metadata.get("choices")))
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
