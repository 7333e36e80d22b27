"""Completion markers and plans, stored as safe work files (dcurate.core.workfile, no pickles).

A marker records a task's result and the files it wrote with their sizes (and checksums of
final shards). It counts only when every one of those files exists with its recorded size; a
marker that is missing, malformed or tampered with is ignored and the task runs again.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from dcurate.core import workfile
from dcurate.runner.outdir import file_checksum

log = logging.getLogger("dcurate")


def output_record(path: str, checksum: bool = False) -> list[Any]:
    """[path, size, checksum or None] of a file just written."""
    return [path, os.path.getsize(path), file_checksum(path) if checksum else None]


def write_marker(path: str, result: Any, outputs: list[list[Any]]) -> None:
    workfile.dump({"result": result, "outputs": outputs}, path)


def load_marker(path: str, size_of: Callable[[str], int | None] | None = None) -> tuple[Any, list[list[Any]]] | None:
    """(result, outputs) of a marker that still holds, None otherwise (``size_of``: see
    :func:`outputs_hold`)."""
    try:
        rec = workfile.load(path)
    except FileNotFoundError:
        return None
    except (workfile.BadWorkFile, OSError) as e:
        log.warning("ignoring %s (%s); the task runs again", path, str(e)[:120])
        return None
    if not isinstance(rec, dict) or "result" not in rec or not isinstance(rec.get("outputs"), list):
        log.warning("ignoring %s (not a marker); the task runs again", path)
        return None
    if not outputs_hold(rec["outputs"], size_of):
        return None
    return rec["result"], rec["outputs"]


def outputs_hold(outputs: list, size_of: Callable[[str], int | None] | None = None) -> bool:
    """Whether every [path, size, ...] record still names a file of that size. ``size_of(path)``
    (None: the local file's) also knows files kept on the object store only."""
    for o in outputs:
        try:
            size = size_of(str(o[0])) if size_of is not None else os.path.getsize(str(o[0]))
            if size is None or size != int(o[1]):
                return False
        except (OSError, TypeError, ValueError, IndexError):
            return False
    return True


def write_plan(path: str, plan: Any) -> None:
    workfile.dump(plan, path)


def read_plan(path: str) -> Any:
    """A global stage's plan; BadWorkFile names the file when it is empty or malformed (the
    driver then computes the plan again; elsewhere it is the run's one-line error)."""
    try:
        return workfile.load(path)
    except workfile.BadWorkFile as e:
        detail = str(e).split(": not a dcurate work file ", 1)[-1]
        kind = "empty" if os.path.getsize(path) == 0 else "malformed"
        raise workfile.BadWorkFile(f"{path}: {kind} plan file {detail}; re-run to compute it again") from None
