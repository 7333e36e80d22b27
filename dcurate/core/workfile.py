"""Safe work files: markers, plans and partials as JSON plus numpy arrays, never pickles.

A value is a tree of None, bool, int, float, str, bytes, list, tuple, dict, set, Counter, Path,
numpy arrays and scalars (any dtype but object) and dataclasses registered with
:func:`work_type`. Without arrays the file is plain JSON; with arrays it is an ``.npz`` archive
(``np.load(allow_pickle=False)``) holding the JSON tree as ``__tree__`` and the arrays. Loading
builds only those types: a class is looked up by name in the registry, never imported, so a
tampered file can fail to load but cannot run code. A file that does not decode raises
:class:`BadWorkFile` (callers discard and recompute it, or report it in one line).
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from dcurate.core.errors import DcurateError
from dcurate.io.atomic import write_bytes

T = TypeVar("T", bound=type)
_TYPES: dict[str, type] = {}
_TAG = "__dc"


class BadWorkFile(DcurateError):
    """A work file that cannot be decoded (truncated, tampered, from another version)."""


def work_type(cls: T) -> T:
    """Class decorator: a dataclass that may appear in markers, partials and plans."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls.__name__} is not a dataclass")
    _TYPES[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return cls


def _enc(x: Any, arrays: list[np.ndarray]) -> Any:
    if x is None or isinstance(x, (bool, str)):
        return x
    if isinstance(x, (int, float)) and not isinstance(x, (np.generic,)):
        return x if type(x) in (int, float) else (int(x) if isinstance(x, int) else float(x))
    if isinstance(x, np.ndarray):
        if x.dtype.hasobject:
            raise TypeError("work files cannot hold numpy object arrays")
        arrays.append(x)
        return {_TAG: "nd", "i": len(arrays) - 1}
    if isinstance(x, np.generic):
        if x.dtype.hasobject:
            raise TypeError("work files cannot hold numpy object scalars")
        arrays.append(np.asarray(x))
        return {_TAG: "np", "i": len(arrays) - 1}
    if isinstance(x, list):
        return [_enc(v, arrays) for v in x]
    if isinstance(x, tuple):
        return {_TAG: "tuple", "v": [_enc(v, arrays) for v in x]}
    if isinstance(x, Counter):
        return {_TAG: "counter", "v": [[_enc(k, arrays), _enc(v, arrays)] for k, v in x.items()]}
    if isinstance(x, dict):
        if all(isinstance(k, str) for k in x) and _TAG not in x:
            return {k: _enc(v, arrays) for k, v in x.items()}
        return {_TAG: "dict", "v": [[_enc(k, arrays), _enc(v, arrays)] for k, v in x.items()]}
    if isinstance(x, (set, frozenset)):
        return {_TAG: "set", "v": [_enc(v, arrays) for v in sorted(x, key=repr)]}
    if isinstance(x, (bytes, bytearray)):
        return {_TAG: "bytes", "v": base64.b64encode(bytes(x)).decode()}
    if isinstance(x, Path):
        return {_TAG: "path", "v": str(x)}
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        name = f"{type(x).__module__}.{type(x).__qualname__}"
        if _TYPES.get(name) is not type(x):
            raise TypeError(f"{name} is not registered with dcurate.core.workfile.work_type")
        fields = {f.name: _enc(getattr(x, f.name), arrays) for f in dataclasses.fields(x)}
        return {_TAG: "obj", "c": name, "v": fields}
    raise TypeError(f"work files cannot hold a {type(x).__name__}")


def _dec(x: Any, arrays: dict[int, np.ndarray]) -> Any:
    if isinstance(x, list):
        return [_dec(v, arrays) for v in x]
    if not isinstance(x, dict):
        return x
    tag = x.get(_TAG)
    if tag is None:
        return {k: _dec(v, arrays) for k, v in x.items()}
    if tag == "nd":
        return arrays[int(x["i"])]
    if tag == "np":
        return arrays[int(x["i"])][()]
    if tag == "tuple":
        return tuple(_dec(v, arrays) for v in x["v"])
    if tag == "counter":
        return Counter({_dec(k, arrays): _dec(v, arrays) for k, v in x["v"]})
    if tag == "dict":
        return {_dec(k, arrays): _dec(v, arrays) for k, v in x["v"]}
    if tag == "set":
        return {_dec(v, arrays) for v in x["v"]}
    if tag == "bytes":
        return base64.b64decode(x["v"])
    if tag == "path":
        return Path(x["v"])
    if tag == "obj":
        cls = _TYPES.get(x["c"])
        if cls is None:
            raise ValueError(f"unknown type {x['c']!r}")
        return cls(**{k: _dec(v, arrays) for k, v in x["v"].items()})
    raise ValueError(f"unknown tag {tag!r}")


def dumps(obj: Any) -> bytes:
    """Encode ``obj`` (JSON bytes, or an ``.npz`` archive when it holds arrays)."""
    arrays: list[np.ndarray] = []
    tree = json.dumps(_enc(obj, arrays), separators=(",", ":")).encode()
    if not arrays:
        return tree
    buf = io.BytesIO()
    named: dict[str, Any] = {f"a{i}": a for i, a in enumerate(arrays)}
    named["__tree__"] = np.frombuffer(tree, dtype=np.uint8)
    np.savez(buf, **named)
    return buf.getvalue()


def loads(data: bytes, where: str = "work file") -> Any:
    """Decode what :func:`dumps` wrote; :class:`BadWorkFile` for anything else."""
    try:
        if data[:2] == b"PK":
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                tree = json.loads(z["__tree__"].tobytes())
                arrays = {int(k[1:]): z[k] for k in z.files if k != "__tree__"}
        else:
            tree, arrays = json.loads(data), {}
        return _dec(tree, arrays)
    except (ValueError, KeyError, TypeError, OSError, EOFError, zipfile.BadZipFile, UnicodeDecodeError,
            RecursionError) as e:
        raise BadWorkFile(f"{where}: not a dcurate work file ({type(e).__name__}: {str(e)[:80]})") from None


def dump(obj: Any, path: str | Path) -> None:
    """Write ``obj`` to ``path`` atomically (fsynced)."""
    write_bytes(str(path), dumps(obj))


def load(path: str | Path) -> Any:
    """Read a work file; FileNotFoundError when absent, :class:`BadWorkFile` when malformed."""
    with open(path, "rb") as f:
        data = f.read()
    return loads(data, str(path))
