"""Cost of fsync before rename: `dcurate filter --preset none` over ../shared/corpus/parquet with
and without the fsyncs (DCURATE_FSYNC=0 turns them off), each run in a fresh process into a fresh
OUT, alternating, medians of --repeat runs; wall and CPU (user + system of dcurate and its workers).

    python scripts/bench_fsync.py --repeat 3 [--input ../shared/corpus/parquet] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def once(inp: str, workers: int, fsync: bool, tmp: Path) -> tuple[float, float]:
    out = tmp / "out"
    shutil.rmtree(out, ignore_errors=True)
    env = dict(os.environ, DCURATE_FSYNC="1" if fsync else "0")
    cmd = [sys.executable, "-m", "dcurate", "filter", inp, str(out), "--preset", "none", "--workers", str(workers)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--input", default=str(ROOT.parent / "shared" / "corpus" / "parquet"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    res: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        once(a.input, a.workers, True, tmp)  # warm the page cache and imports
        for _ in range(a.repeat):
            for fs in (False, True):
                res[fs].append(once(a.input, a.workers, fs, tmp))
    for fs in (False, True):
        wall = statistics.median(w for w, _ in res[fs])
        cpu = statistics.median(c for _, c in res[fs])
        print(f"fsync {'on ' if fs else 'off'}: wall {wall:.2f} s, cpu {cpu:.2f} s  (runs: "
              + ", ".join(f"{w:.2f}/{c:.2f}" for w, c in res[fs]) + ")")
    on = statistics.median(w for w, _ in res[True])
    off = statistics.median(w for w, _ in res[False])
    print(f"fsync cost: {100 * (on - off) / off:+.1f}% wall")


if __name__ == "__main__":
    main()
