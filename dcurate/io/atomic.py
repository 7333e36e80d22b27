"""Atomic file writes: data goes to a temporary name in the target's folder, is flushed and
fsynced, renamed over the final name, and the folder is fsynced, so that a crash or power loss
leaves either the old file or the new one, never a mix.

Temporary names are ``.NAME.dctmp-PID`` (only names of this form are ever swept as dcurate's own
leftovers). ``DCURATE_FSYNC=0`` in the environment skips the fsyncs (benchmarks only)."""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

TEMP_RE = re.compile(r"^\..+\.dctmp-\d+$")
_FSYNC = os.environ.get("DCURATE_FSYNC", "1") != "0"
_FAIL_NEXT = False  # test-only (dcurate.core.faults): the next write fails with ENOSPC


def fail_next_write() -> None:
    """Test-only: make the next commit or atomic_open of this process fail as a full disk would."""
    global _FAIL_NEXT
    _FAIL_NEXT = True


def _injected_fault(path: str) -> None:
    global _FAIL_NEXT
    if _FAIL_NEXT:
        _FAIL_NEXT = False
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)


def temp_name(path: str) -> str:
    """The temporary name ``path`` is written under before its rename (same folder)."""
    d, n = os.path.split(path)
    return os.path.join(d, f".{n}.dctmp-{os.getpid()}")


def is_temp_name(name: str) -> bool:
    return bool(TEMP_RE.match(name))


def fsync_file(f: IO[bytes]) -> None:
    f.flush()
    if _FSYNC:
        os.fsync(f.fileno())


def fsync_dir(folder: str) -> None:
    if not _FSYNC:
        return
    try:
        fd = os.open(folder or ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems do not fsync directories
        pass
    finally:
        os.close(fd)


def fsync_path(path: str) -> None:
    """fsync a closed file by name (files written by libraries that own the handle)."""
    if not _FSYNC:
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit(tmp: str, path: str) -> None:
    """fsync ``tmp`` (already closed), rename it over ``path`` and fsync the folder."""
    _injected_fault(path)
    fsync_path(tmp)
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(path))


@contextmanager
def atomic_open(path: str) -> Iterator[IO[bytes]]:
    """``with atomic_open(p) as f: f.write(...)``: ``p`` appears complete or not at all."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = temp_name(path)
    try:
        with open(tmp, "wb") as f:
            yield f
            _injected_fault(path)
            fsync_file(f)
        os.replace(tmp, path)
        fsync_dir(os.path.dirname(path))
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise


def write_bytes(path: str, data: bytes) -> None:
    with atomic_open(path) as f:
        f.write(data)


def write_json(path: str, obj: object) -> None:
    import json

    write_bytes(path, (json.dumps(obj, indent=2, default=str) + "\n").encode())
