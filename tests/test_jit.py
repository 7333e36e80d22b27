"""dcurate.core.jit: cached kernels load without numba's compiler start-up, and run as compiled."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

KERNELS = '''
import numpy as np
from dcurate.core.jit import njit


@njit(cache=True)
def _inner(x):
    return x * 3 + 1


@njit(cache=True)
def sorted_plus(a):
    out = np.sort(a)  # allocates: needs numba's runtime (NRT)
    for i in range(out.shape[0]):
        out[i] = _inner(out[i])
    return out


@njit(cache=True)
def checked(n):
    if n < 0:
        raise ValueError("negative count")
    return n + 1
'''

PROBE = '''
import json, sys
import numpy as np
from numba.core import base
calls = []
stock = base.BaseContext.refresh
base.BaseContext.refresh = lambda self: (calls.append(1), stock(self))[1]
import kernels
from dcurate.core import jit
got = kernels.sorted_plus(np.array([5, 1, 3], dtype=np.int64)).tolist()
try:
    kernels.checked(-1)
    err = None
except ValueError as e:
    err = str(e)
print(json.dumps({"got": got, "ok": kernels.checked(4), "err": err, "refreshes": len(calls),
                  "lean": jit.lean_loading(), "arraymath": "numba.np.arraymath" in sys.modules}))
'''


def _probe(tmp_path: Path, **env: str) -> dict:
    environ = {
        **{k: v for k, v in os.environ.items() if k != "DCURATE_NUMBA_FULL_LOAD"},
        "NUMBA_CACHE_DIR": str(tmp_path / "cache"),
        "PYTHONPATH": os.pathsep.join([str(tmp_path / "mod"), str(ROOT)]),
        **env,
    }
    p = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=environ, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.fixture()
def kernels(tmp_path: Path) -> Path:
    (tmp_path / "mod").mkdir()
    (tmp_path / "mod" / "kernels.py").write_text(KERNELS)
    return tmp_path


@pytest.mark.slow  # compiles small kernels twice (a few seconds each)
def test_cached_kernels_load_without_the_compiler_and_run_the_same(kernels: Path) -> None:
    from dcurate.core import jit

    if not jit._supported():
        pytest.skip("this numba lacks the cache internals the shortcut relies on: stock loading")
    want = {"got": [4, 10, 16], "ok": 5, "err": "negative count"}
    first = _probe(kernels)  # empty cache: compiled (the compiler refreshes), then saved
    assert first["refreshes"] > 0 and first["arraymath"]
    second = _probe(kernels)  # from the cache: no refresh, numba's numpy lowering never imported
    assert second["lean"] is True
    assert second["refreshes"] == 0 and not second["arraymath"]
    full = _probe(kernels, DCURATE_NUMBA_FULL_LOAD="1")  # the stock load, when asked
    assert full["lean"] is False and full["refreshes"] > 0
    for run in (first, second, full):
        assert {k: run[k] for k in want} == want
    # a changed source is compiled again, not loaded stale
    src = kernels / "mod" / "kernels.py"
    src.write_text(src.read_text().replace("x * 3 + 1", "x * 3 + 2"))
    os.utime(src, (src.stat().st_atime + 5, src.stat().st_mtime + 5))
    assert _probe(kernels)["got"] == [5, 11, 17]


def test_every_kernel_module_takes_njit_from_core_jit() -> None:
    """So the shortcut is in place before any kernel's first call."""
    offenders = []
    for path in sorted((ROOT / "dcurate").rglob("*.py")):
        if path.name == "jit.py" and path.parent.name == "core":
            continue
        text = path.read_text()
        if re.search(r"^\s*(from numba import|import numba\b)", text, re.M) or "numba.njit" in text:
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
