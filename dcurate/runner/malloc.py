"""glibc's allocator tuned for batch work: freed memory is kept for the next batch instead of being
handed back to the kernel and faulted in again.

glibc returns freed memory at the top of its heap to the kernel once more than 128 KB is free
(the trim threshold, raised dynamically up to 64 MB) and serves large blocks (from 128 KB, up to
32 MB dynamically) with ``mmap``, unmapped on free. A stage allocates and frees arrays of tens of
megabytes per batch (shingle hashes, signatures, Arrow-to-Python conversions), so each batch pays
the kernel's page faults again: on the 4x dedup benchmark about 110,000 minor faults and a sixth
of the run's CPU time went to system time. With blocks up to 32 MB from the heap, 128 MB kept free
at its top and 16 MB of padding per extension, the faults drop to about 45,000 and the run costs
about 0.3 CPU s less; peak RSS grows by about 20 MB (measured: ``BENCHMARKS.md``, dedup section).

:func:`tune` applies the settings to this process (``mallopt``) and exports them as glibc's
``MALLOC_*_`` variables, so the fork server, the pool processes forked from it and any child start
with them. A variable the user has already set wins; ``DCURATE_MALLOC_DEFAULTS=1`` leaves glibc's
defaults alone. Elsewhere than glibc on Linux nothing is done.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["SETTINGS", "tune"]

#: glibc variable -> (mallopt parameter number, value in bytes).
SETTINGS: dict[str, tuple[int, int]] = {
    "MALLOC_MMAP_THRESHOLD_": (-3, 32 << 20),  # M_MMAP_THRESHOLD
    "MALLOC_TRIM_THRESHOLD_": (-1, 128 << 20),  # M_TRIM_THRESHOLD
    "MALLOC_TOP_PAD_": (-2, 16 << 20),  # M_TOP_PAD
}


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - glibc only (musl has no such function)
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


def tune() -> dict[str, int]:
    """Apply and export the settings; returns what this process now uses (empty when nothing
    was done)."""
    if os.environ.get("DCURATE_MALLOC_DEFAULTS") == "1":
        return {}
    libc = _glibc()
    if libc is None:
        return {}
    applied: dict[str, int] = {}
    for name, (param, default) in SETTINGS.items():
        try:
            value = int(os.environ.get(name, default))
        except ValueError:  # the user's own setting, which glibc has already read its own way
            continue
        if 0 <= value < 1 << 31 and libc.mallopt(param, value) == 1:
            os.environ.setdefault(name, str(value))
            applied[name] = value
    return applied
