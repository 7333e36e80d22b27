"""Imported by the process pool's fork server: imports the run's stage modules and calls their
``warmup()`` (load numba kernels from the on-disk cache, build lookup tables), so every worker
forked from the server starts warm instead of paying that cost once per worker."""

import importlib
import os

from dcurate.runner.imports import hide

hide(tuple(filter(None, os.environ.get("DCURATE_ABSENT", "").split(","))))
for _name in filter(None, os.environ.get("DCURATE_WARMUP", "").split(",")):
    _mod = importlib.import_module(_name)
    _warm = getattr(_mod, "warmup", None)
    if _warm is not None:
        _warm()
