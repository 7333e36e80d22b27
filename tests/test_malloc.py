"""dcurate.runner.malloc: glibc keeps freed batch memory instead of faulting it in again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dcurate.runner import malloc

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import json, os, resource, subprocess, sys
from dcurate.runner.malloc import tune
applied = tune()
import numpy as np
sizes = [3, 5, 9, 17, 30]  # MB: blocks of a batch, freed together, as a stage's arrays are
def cycle():
    arrs = [np.ones(s << 17) for s in sizes]
    del arrs
cycle()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    cycle()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
child = subprocess.run([sys.executable, "-c", "import os; print(os.environ.get('MALLOC_TRIM_THRESHOLD_'))"],
                       capture_output=True, text=True).stdout.strip()
print(json.dumps({"applied": applied, "faults": faults, "child": child}))
"""

pytestmark = pytest.mark.skipif(malloc._glibc() is None, reason="glibc's mallopt only")


def _probe(**env: str) -> dict:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "DCURATE_MALLOC"))}
    environ.update(env, PYTHONPATH=str(ROOT))
    p = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=environ)
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_freed_batches_are_reused_not_faulted_in_again() -> None:
    tuned = _probe()
    assert tuned["applied"] == {k: v for k, (_, v) in malloc.SETTINGS.items()}
    stock = _probe(DCURATE_MALLOC_DEFAULTS="1")
    assert stock["applied"] == {}
    # children (the fork server, pool processes) start with the settings; not when left alone
    assert tuned["child"] == str(128 << 20)
    assert stock["child"] == "None"
    # 20 cycles of 64 MB: glibc's defaults return the blocks to the kernel and fault them in again
    # (about 16,000 faults per cycle with 4 KB pages; far fewer where transparent huge pages back
    # every large mapping, which makes the comparison moot)
    if stock["faults"] < 20 * 1000:
        pytest.skip(f"only {stock['faults']} page faults with glibc's defaults (huge pages?)")
    assert tuned["faults"] < stock["faults"] // 10


def test_a_users_own_setting_wins() -> None:
    got = _probe(MALLOC_TRIM_THRESHOLD_="1048576")
    assert got["applied"]["MALLOC_TRIM_THRESHOLD_"] == 1 << 20
    assert got["child"] == "1048576"
    assert got["applied"]["MALLOC_TOP_PAD_"] == 16 << 20
