"""Atomic file writes and safetensors/JSON state (de)serialization. No pickle anywhere."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Mapping, Tuple, Union

import torch
from safetensors.torch import load_file, save_file

PathLike = Union[str, os.PathLike]


def _atomic(path: PathLike, write_tmp) -> None:
    """Call ``write_tmp(tmp_path)`` on a temporary file beside ``path``, fsync it, rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write_tmp(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write bytes to a temporary file beside ``path``, fsync, then rename over it."""
    _atomic(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_json(path: PathLike, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def atomic_save_safetensors(path: PathLike, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> None:
    """safetensors file written atomically; tensors are made contiguous CPU copies."""
    prepared = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    _atomic(path, lambda tmp: save_file(prepared, tmp, metadata=dict(metadata) if metadata else None))


def read_safetensors(path: PathLike) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """Tensors and the metadata header of a safetensors file."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = dict(fh.metadata() or {})
    return load_file(str(path)), meta


def flatten_state(obj: Any, prefix: str = "") -> Tuple[Dict[str, torch.Tensor], Any]:
    """Split a nested state (dicts, lists, tensors, numbers) into tensors and a JSON skeleton.

    Tensors are replaced in the skeleton by {"__tensor__": key}; dict keys are kept
    with their type (int keys of optimizer states survive the JSON round trip).
    """
    tensors: Dict[str, torch.Tensor] = {}

    def walk(o: Any, path: str) -> Any:
        if isinstance(o, torch.Tensor):
            tensors[path] = o
            return {"__tensor__": path}
        if isinstance(o, Mapping):
            return {"__dict__": [[_key(k), walk(v, f"{path}.{k}" if path else str(k))] for k, v in o.items()]}
        if isinstance(o, (list, tuple)):
            return {"__list__" if isinstance(o, list) else "__tuple__": [walk(v, f"{path}.{i}" if path else str(i)) for i, v in enumerate(o)]}
        if o is None or isinstance(o, (bool, int, float, str)):
            if isinstance(o, float) and (o != o or o in (float("inf"), float("-inf"))):
                return {"__float__": repr(o)}
            return o
        raise TypeError(f"cannot store {type(o).__name__} at {path or '<root>'} without pickle")

    skeleton = walk(obj, prefix)
    return tensors, skeleton


def _key(k: Any) -> Any:
    if isinstance(k, bool) or not isinstance(k, (int, str)):
        raise TypeError(f"state dict keys must be int or str, got {k!r}")
    return k


def unflatten_state(skeleton: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    """Inverse of ``flatten_state``."""
    if isinstance(skeleton, dict):
        if "__tensor__" in skeleton:
            return tensors[skeleton["__tensor__"]]
        if "__dict__" in skeleton:
            return {k: unflatten_state(v, tensors) for k, v in skeleton["__dict__"]}
        if "__list__" in skeleton:
            return [unflatten_state(v, tensors) for v in skeleton["__list__"]]
        if "__tuple__" in skeleton:
            return tuple(unflatten_state(v, tensors) for v in skeleton["__tuple__"])
        if "__float__" in skeleton:
            return float(skeleton["__float__"])
        raise ValueError(f"malformed state skeleton: {skeleton!r}")
    return skeleton
