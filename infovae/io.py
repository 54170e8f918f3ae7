"""Atomic file writes and safetensors/JSON state (de)serialization. No pickle anywhere."""
from __future__ import annotations

import errno
import json
import os
import random
import re
import stat
import string
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple, Union

import torch
from safetensors.torch import load_file, save as safetensors_bytes

from .errors import StorageError

PathLike = Union[str, os.PathLike]

# Our temporary files: ".<final name>.<8 chars>.tmp" beside the final file (the pattern mkstemp used).
TMP_RE = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp$")
_RANDOM = random.SystemRandom()
_TMP_CHARS = string.ascii_lowercase + string.digits + "_"
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)


def os_reason(exc: OSError) -> str:
    """'No space left on device (ENOSPC)' for an OSError."""
    name = errno.errorcode.get(exc.errno or 0, "")
    text = exc.strerror or str(exc) or type(exc).__name__
    return f"{text} ({name})" if name else text


def _storage_error(action: str, path: Path, exc: OSError) -> StorageError:
    hint = ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        hint = "; the files written before are intact: free space (or raise the limit) and run again"
    elif exc.errno == errno.EROFS:
        hint = "; the file system is read-only"
    elif exc.errno == errno.ELOOP:
        return StorageError(f"cannot {action} {path}: it (or a folder on the way inside the run) is a symbolic link; "
                            "infovae never writes through links: remove the link")
    return StorageError(f"cannot {action} {path}: {os_reason(exc)}{hint}")


def _open_parent(path: Path, root: Optional[PathLike]) -> int:
    """A directory fd for ``path.parent``, created if missing.

    With ``root`` (a run directory containing ``path``), every folder between ``root`` and
    the file is opened without following symlinks, so a link inside the run can never
    redirect a write elsewhere. ``root`` itself may be a link the user chose.
    """
    parent = Path(os.path.abspath(path.parent))
    rel: Optional[Tuple[str, ...]] = None
    if root is not None:
        root = Path(os.path.abspath(root))
        try:
            rel = parent.relative_to(root).parts
        except ValueError:
            rel = None
    if rel is None:
        parent.mkdir(parents=True, exist_ok=True)
        return os.open(parent, os.O_RDONLY | _O_DIRECTORY)
    Path(root).mkdir(parents=True, exist_ok=True)
    fd = os.open(Path(root), os.O_RDONLY | _O_DIRECTORY)
    try:
        for part in rel:
            if part in ("..", "."):
                raise OSError(errno.EINVAL, f"path component {part!r} is not allowed inside a run")
            try:
                os.mkdir(part, dir_fd=fd)
            except FileExistsError:
                pass
            try:
                nfd = os.open(part, os.O_RDONLY | _O_DIRECTORY | _O_NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                if exc.errno == errno.ENOTDIR and stat.S_ISLNK(os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode):
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP)) from None
                raise
            os.close(fd)
            fd = nfd
    except BaseException:
        os.close(fd)
        raise
    return fd


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _refuse_link(name: str, dfd: int) -> None:
    try:
        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP))


def atomic_write_bytes(path: PathLike, data: bytes, root: Optional[PathLike] = None) -> None:
    """Write ``data`` to ``path`` atomically: a temporary file beside it (mode from the umask),
    fsync, then rename over ``path``. A symlink at ``path`` (or, with ``root``, on the way
    from ``root``) is refused, never followed. Failures raise StorageError naming the path."""
    path = Path(path)
    if path.name in ("", ".", ".."):
        raise StorageError(f"cannot write {str(path)!r}: not a file name")
    try:
        dfd = _open_parent(path, root)
    except OSError as exc:
        raise _storage_error("write", path, exc) from None
    tmp = None
    try:
        _refuse_link(path.name, dfd)
        for _ in range(100):
            cand = f".{path.name}.{''.join(_RANDOM.choices(_TMP_CHARS, k=8))}.tmp"
            try:
                fd = os.open(cand, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW, 0o666, dir_fd=dfd)
            except FileExistsError:
                continue
            tmp = cand
            break
        else:  # pragma: no cover - 100 collisions of 36**8 names
            raise OSError(errno.EEXIST, "no free temporary file name")
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        _refuse_link(path.name, dfd)
        os.replace(tmp, path.name, src_dir_fd=dfd, dst_dir_fd=dfd)
        tmp = None
        try:
            os.fsync(dfd)
        except OSError:
            pass
    except OSError as exc:
        raise _storage_error("write", path, exc) from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp, dir_fd=dfd)
            except OSError:
                pass
        os.close(dfd)


def append_text(path: PathLike, text: str, root: Optional[PathLike] = None) -> None:
    """Append ``text`` to ``path`` (created with the umask's mode), never through a symlink."""
    path = Path(path)
    try:
        dfd = _open_parent(path, root)
        try:
            fd = os.open(path.name, os.O_WRONLY | os.O_APPEND | os.O_CREAT | _O_NOFOLLOW, 0o666, dir_fd=dfd)
            try:
                _write_all(fd, text.encode())
            finally:
                os.close(fd)
        finally:
            os.close(dfd)
    except OSError as exc:
        raise _storage_error("append to", path, exc) from None


def make_dir(path: PathLike, root: Optional[PathLike] = None) -> Path:
    """Create ``path`` (and parents) as atomic writes would, refusing links below ``root``."""
    path = Path(path)
    try:
        os.close(_open_parent(path / "_", root))
    except OSError as exc:
        raise _storage_error("create", path, exc) from None
    return path


def remove_stale_temps(directory: PathLike, owns: Callable[[str], bool]) -> List[str]:
    """Delete our temporary files in ``directory`` whose final name ``owns(name)`` accepts.

    Only regular files matching ``.<name>.<8 chars>.tmp`` are touched; returns their names.
    """
    removed = []
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for entry in entries:
        m = TMP_RE.match(entry.name)
        if m and owns(m.group("name")) and entry.is_file(follow_symlinks=False):
            try:
                os.unlink(entry.path)
                removed.append(entry.name)
            except FileNotFoundError:
                pass
    return removed


def atomic_write_json(path: PathLike, obj: Any, root: Optional[PathLike] = None) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode(), root=root)


def atomic_save_safetensors(path: PathLike, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None,
                            root: Optional[PathLike] = None) -> None:
    """safetensors file written atomically; tensors are made contiguous CPU copies."""
    prepared = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    data = safetensors_bytes(prepared, metadata=dict(metadata) if metadata else None)
    atomic_write_bytes(path, data, root=root)


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
