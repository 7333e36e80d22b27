"""Loading a stage's own work files (``.npy``, ``.npz``, Arrow IPC, JSON under its work folder).

Every stage-side load of such a file goes through these helpers, so a malformed one (truncated
by a crash, a full disk or a hand edit) is never a traceback: most are named by a task's marker
with their size, so a truncated one already makes that task run again; what is left (a file
that keeps its size, or one written by a reduce) is :class:`BadWorkFile`, one line naming the
file, exit code 1. Arrays never hold pickles (``allow_pickle=False``)."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from dcurate.core.workfile import BadWorkFile

_ERRORS = (ValueError, OSError, EOFError, KeyError, TypeError, zipfile.BadZipFile, pa.ArrowException)


def _bad(path: str | Path, e: BaseException) -> BadWorkFile:
    return BadWorkFile(f"{path}: malformed work file ({type(e).__name__}: {str(e)[:80]}); "
                       "re-run with --force (or `dcurate clean OUT` first) to recompute")


def load_npy(path: str | Path, mmap: bool = False) -> np.ndarray:
    """A ``.npy`` array (memory-mapped read-only with ``mmap``)."""
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except FileNotFoundError:
        raise
    except _ERRORS as e:
        raise _bad(path, e) from None


def load_npz(path: str | Path, require: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` archive, read (and CRC-checked) now; ``require`` names arrays
    that must be there."""
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {k: z[k] for k in z.files}
        for k in require:
            if k not in out:
                raise KeyError(f"no array {k!r}")
        return out
    except FileNotFoundError:
        raise
    except _ERRORS as e:
        raise _bad(path, e) from None


def read_arrow(path: str | Path, columns: list[str] | None = None) -> pa.Table:
    """An Arrow IPC file (memory-mapped)."""
    try:
        with pa.memory_map(os.fspath(path)) as f:
            t = pa.ipc.open_file(f).read_all()
        return t.select(columns) if columns is not None else t
    except FileNotFoundError:
        raise
    except _ERRORS as e:
        raise _bad(path, e) from None


def load_json(path: str | Path) -> Any:
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except FileNotFoundError:
        raise
    except (*_ERRORS, UnicodeDecodeError, RecursionError) as e:
        raise _bad(path, e) from None
