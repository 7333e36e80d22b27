#!/usr/bin/env python3
"""The driver's peak memory of a top-k cut-off: in memory (keys gathered in the driver) vs
partitioned (radix select over the per-piece key files, dcurate.core.topk_partitioned).

Generates a pool of --docs tiny documents (a few words from a small vocabulary, distinct ids) in
--shards Parquet shards and a target file, then runs ``dcurate select POOL OUT --method dsir --k K
--min-words 0`` (or ``--tokens``) in a child process per run, with DCURATE_TOPK_PARTITIONED=0 and
=1, alternating, --runs times each. The child records its own peak RSS (getrusage RUSAGE_SELF: the
driver only, not its worker processes) and the wall time; the outputs of both paths are compared
byte for byte.

    python scripts/bench_topk.py --docs 2000000 --shards 16 --workers 2 --runs 3
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
VOCAB = "the a of and to in is it that with for on was as match goal team recipe oven flour sugar".split()

CHILD = r"""
import atexit, json, resource, sys, time
t0, stat = time.perf_counter(), sys.argv[1]
def _done():
    with open(stat, "w") as f:
        json.dump({"maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                   "seconds": time.perf_counter() - t0}, f)
atexit.register(_done)
from dcurate.cli.entry import main
sys.argv = ["dcurate", *sys.argv[2:]]
main()
"""


def make_pool(folder: Path, docs: int, shards: int, seed: int) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    pool = folder / "pool"
    pool.mkdir(parents=True)
    words = np.array(VOCAB, dtype=object)
    per = -(-docs // shards)
    for s in range(shards):
        lo, hi = s * per, min(docs, (s + 1) * per)
        n = hi - lo
        lens = rng.integers(2, 9, size=n)
        picks = words[rng.integers(0, len(VOCAB), size=int(lens.sum()))]
        bounds = np.concatenate([[0], np.cumsum(lens)])
        texts = [" ".join(picks[bounds[i] : bounds[i + 1]]) for i in range(n)]
        ids = [f"d{i:09d}" for i in range(lo, hi)]
        pq.write_table(pa.table({"id": ids, "text": texts}), pool / f"part-{s:03d}.parquet")
    target = folder / "target.jsonl"
    target.write_text(
        "".join(json.dumps({"id": f"t{i}", "text": "match goal team the goal of the team " * 5}) + "\n" for i in range(20))
    )
    return pool, target


def digest(out: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(out.rglob("*")):
        if p.is_file() and ".dcurate" not in p.relative_to(out).parts:
            h.update(str(p.relative_to(out)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=2_000_000)
    ap.add_argument("--shards", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--k", type=int, default=None, help="documents to select (default: a tenth)")
    ap.add_argument("--tokens", type=int, default=None, help="a token budget instead of --k")
    ap.add_argument("--workdir", default=None, help="where the pool and runs go (default: a temp folder)")
    a = ap.parse_args()
    base = Path(a.workdir or tempfile.mkdtemp(prefix="bench-topk-"))
    t = time.perf_counter()
    pool, target = make_pool(base, a.docs, a.shards, 0)
    print(f"pool: {a.docs:,} documents in {a.shards} shards ({time.perf_counter() - t:.0f} s)", flush=True)
    budget = ["--tokens", str(a.tokens)] if a.tokens is not None else ["--k", str(a.k or a.docs // 10)]
    results: dict[str, list[dict]] = {"0": [], "1": []}
    digests: dict[str, set[str]] = {"0": set(), "1": set()}
    for r in range(a.runs):
        for force in ("0", "1"):
            out = base / f"out-{force}-{r}"
            stat = base / f"stat-{force}-{r}.json"
            cmd = [sys.executable, "-c", CHILD, str(stat), "select", str(pool), str(out), "--method", "dsir",
                   "--target", str(target), *budget, "--min-words", "0", "--workers", str(a.workers), "--seed", "1"]
            env = dict(os.environ, DCURATE_TOPK_PARTITIONED=force, PYTHONPATH=str(ROOT))
            subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            res = json.loads(stat.read_text())
            results[force].append(res)
            digests[force].add(digest(out))
            shutil.rmtree(out)
            print(f"run {r} partitioned={force}: driver peak RSS {res['maxrss_kb'] / 1024:.0f} MiB, "
                  f"{res['seconds']:.1f} s", flush=True)
    same = digests["0"] == digests["1"] and len(digests["0"]) == 1
    print(f"outputs identical across paths and runs: {same}")
    for force, name in (("0", "in memory"), ("1", "partitioned")):
        rss = [x["maxrss_kb"] / 1024 for x in results[force]]
        sec = [x["seconds"] for x in results[force]]
        print(f"{name}: driver peak RSS median {statistics.median(rss):.0f} MiB (min {min(rss):.0f}), "
              f"time median {statistics.median(sec):.1f} s (best {min(sec):.1f})")
    if not a.workdir:
        shutil.rmtree(base)
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
