"""Driver memory of the MinHash dedup's second reduce (verification + clustering) on many pairs.

Synthetic: ``--groups`` groups of ``--copies`` identical short documents, and the grouping tasks'
all-pairs limit raised to ``--copies``, so every group gives copies*(copies-1)/2 verified pairs
(one shingle class, so verification itself is cheap): ``--groups 20 --copies 1000`` is 10 M pairs.
The stage runs in this process (one worker); the peak resident set (VmHWM) is reset just before
the second reduce and read just after it, so the figure is that reduce's own peak, not the
first reduce's grouping; it includes the pair files' memory-mapped pages. ``--tracemalloc`` gives
instead the peak of the reduce's traced (numpy) allocations: heap only. Linux only
(``/proc/self/clear_refs``).

    python scripts/bench_dedup_reduce_memory.py --groups 20 --copies 1000 [--verify-slice N]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
import tracemalloc
from pathlib import Path

import pyarrow as pa


def status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--groups", type=int, default=20)
    ap.add_argument("--copies", type=int, default=1000)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--verify-slice", type=int, default=None, help="pairs verified at a time")
    ap.add_argument("--tracemalloc", action="store_true", help="peak traced allocations, not RSS")
    a = ap.parse_args()

    from dcurate.core.params import build
    from dcurate.core.stage import ShardInfo, StageContext
    from dcurate.stages.dedup import candidates
    from dcurate.stages.dedup import stage as dedup_stage
    from dcurate.stages.dedup.stage import Dedup, Params

    if a.verify_slice:  # the module constant (read by versions before DCURATE_DEDUP_VERIFY_SLICE too)
        dedup_stage.VERIFY_SLICE = a.verify_slice
        os.environ.pop("DCURATE_DEDUP_VERIFY_SLICE", None)

    candidates.MAX_ALL_PAIRS = a.copies  # the grouping tasks run in this process
    words = [f"w{i}" for i in range(5000)]
    texts = [" ".join(random.Random(g).choices(words, k=40)) for g in range(a.groups)]
    rows = [(f"g{g}d{i}", texts[g]) for i in range(a.copies) for g in range(a.groups)]
    cut = [round(k * len(rows) / a.shards) for k in range(a.shards + 1)]
    tables = [pa.table({"id": [r[0] for r in rows[cut[k] : cut[k + 1]]], "text": [r[1] for r in rows[cut[k] : cut[k + 1]]]})
              for k in range(a.shards)]
    p = build(Params, {"threshold": 0.8, "num_perm": 16, "bands": 1, "rows": 16}, "dedup")
    measured: dict[str, float] = {}
    reduce = Dedup._reduce_candidates

    def traced(self, chunks, plan):
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        before = status_kb("VmRSS")
        if a.tracemalloc:
            tracemalloc.start()
        t = time.perf_counter()
        out = reduce(self, chunks, plan)
        measured.update(seconds=time.perf_counter() - t, rss_before_mb=before / 1024,
                        peak_mb=status_kb("VmHWM") / 1024)
        if a.tracemalloc:
            measured["traced_peak_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
        return out

    Dedup._reduce_candidates = traced  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory() as tmp:
        ctx = StageContext(workdir=Path(tmp) / "work", out_dir=Path(tmp) / "out")
        st = Dedup(p, ctx)
        st.prepare()
        infos = [ShardInfo(stem=f"s{i}", index=i) for i in range(len(tables))]
        plan = None
        for r in range(st.rounds):
            parts = [(sh, st.scan(iter(t.to_batches(max_chunksize=4096)), sh, r, plan)) for sh, t in zip(infos, tables, strict=True)]
            plan = st.reduce(parts, r, plan)
        stats = plan["stats"]
    print(json.dumps({
        "docs": len(rows),
        "verified_pairs": stats["verified_pairs"],
        "verify_slice": a.verify_slice or "default",
        "second_reduce_peak_rss_mb": round(measured["peak_mb"], 1),
        "second_reduce_growth_mb": round(measured["peak_mb"] - measured["rss_before_mb"], 1),
        "second_reduce_s": round(measured["seconds"], 2),
        "second_reduce_traced_peak_mb": round(measured.get("traced_peak_mb", float("nan")), 1),
    }))


if __name__ == "__main__":
    main()
