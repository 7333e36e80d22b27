"""numba for dcurate's kernels: :func:`njit` is numba's, and a kernel found in numba's on-disk
cache loads without numba's compiler start-up.

Loading a cached kernel is cheap (unpickle the object code, link it, a few milliseconds), but
numba's cache calls the target context's ``refresh()`` first: that imports and registers every
lowering implementation numba has (numpy, typed containers, random, linalg...), about 0.35 CPU s
per process, needed only to *compile*. Here a cache load initialises only numba's runtime (NRT:
the allocation symbols a kernel's object code links against) and loads; a cache miss compiles
as usual (numba's compiler refreshes the contexts itself), and a load that fails for any reason
is retried the stock way. Every process that runs a kernel -- the CLI on a small job, each pool
process -- saves that start-up.

The shortcut is used only where numba's cache has the three internals it relies on (checked when
this module is imported, so a numba without them runs unpatched) and not when
``DCURATE_NUMBA_FULL_LOAD=1`` is set. Kernel modules import ``njit`` from here so that the
shortcut is in place before their first call.
"""

from __future__ import annotations

import os
from typing import Any

from numba import njit
from numba.core import caching
from numba.core.runtime import nrt

__all__ = ["njit", "lean_loading"]

_STOCK_LOAD = caching.Cache.load_overload


def _lean_load_overload(self: Any, sig: Any, target_context: Any) -> Any:
    """``Cache.load_overload`` without the target context's full refresh (see the module)."""
    try:
        nrt.rtsys.initialize(target_context)
        with self._guard_against_spurious_io_errors():
            return self._load_overload(sig, target_context)
    except Exception:  # noqa: BLE001 - the stock path refreshes, loads or reports it
        return _STOCK_LOAD(self, sig, target_context)


def _supported() -> bool:
    cache = caching.Cache
    return (
        callable(getattr(cache, "_load_overload", None))
        and callable(getattr(cache, "_guard_against_spurious_io_errors", None))
        and callable(getattr(getattr(nrt, "rtsys", None), "initialize", None))
    )


def lean_loading() -> bool:
    """Whether cached kernels load without the compiler's start-up in this process."""
    return caching.Cache.load_overload is _lean_load_overload


if os.environ.get("DCURATE_NUMBA_FULL_LOAD") != "1" and _supported():
    caching.Cache.load_overload = _lean_load_overload  # type: ignore[method-assign]
