#!/usr/bin/env python
"""Benchmark ``dcurate filter`` against datatrove's Gopher and C4 filters on the same documents.

    .venv-bench/bin/python scripts/bench_filter.py [--corpus ../shared/corpus/parquet] [--runs 3]

For each rule set (Gopher quality, Gopher repetition, C4) both tools judge every document of the
corpus (the first --docs documents), in one process with one thread (POLARS_MAX_THREADS=1), after the data is in memory (the
time is the filter's own computation: dcurate on Arrow batches of 2,000 documents, datatrove on
its ``Document`` objects, which are built before the clock starts). Reported: CPU seconds (median
of --runs), documents and MB of text per CPU second, documents kept, and how often the two tools
make the same keep/drop decision.
"""

from __future__ import annotations

import os

os.environ.setdefault("POLARS_MAX_THREADS", "1")

import argparse  # noqa: E402
import glob  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from dcurate.core.params import build  # noqa: E402
from dcurate.core.stage import ShardInfo, StageContext  # noqa: E402
from dcurate.stages.filter.stage import Filter, FilterParams  # noqa: E402

SETS = [
    ("gopher quality", "gopher", "GopherQualityFilter"),
    ("gopher repetition", "gopher-repetition", "GopherRepetitionFilter"),
    ("c4", "c4", "C4QualityFilter"),
]


def dcurate_keep(batches: list[pa.RecordBatch], preset: str) -> tuple[np.ndarray, float]:
    stage = Filter(build(FilterParams, {"preset": preset}, "bench"), StageContext())
    stage.process(batches[0].slice(0, 50), ShardInfo("warm", 0), 0)  # numba compile / cache load
    kept: set[str] = set()
    t0 = time.process_time()
    for b in batches:
        r = stage.process(b, ShardInfo("bench", 0), 0)
        kept.update(r.batch.column("id").to_pylist())
    dt = time.process_time() - t0
    ids = [i for b in batches for i in b.column("id").to_pylist()]
    return np.array([i in kept for i in ids]), dt


def datatrove_keep(docs: list, cls_name: str) -> tuple[np.ndarray, float]:
    from datatrove.pipeline import filters

    f = getattr(filters, cls_name)()
    f.filter(docs[0])  # loads tokenizers
    t0 = time.process_time()
    out = []
    for d in docs:
        r = f.filter(d)
        out.append(r if isinstance(r, bool) else bool(r[0]))
    return np.array(out), time.process_time() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", default="../shared/corpus/parquet")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument(
        "--docs", type=int, default=5000, help="first N documents of the corpus (0 = all; default 5000)"
    )
    ap.add_argument("--skip-datatrove", action="store_true")
    a = ap.parse_args()
    files = sorted(glob.glob(os.path.join(a.corpus, "*.parquet")))
    table = pa.concat_tables(pq.read_table(f, columns=["id", "text"]) for f in files)
    if a.docs:
        table = table.slice(0, a.docs)
    batches = table.to_batches(max_chunksize=2000)
    n = table.num_rows
    mb = sum(len(t.encode()) for t in table.column("text").to_pylist()) / 1e6
    docs = []
    if not a.skip_datatrove:
        from datatrove.data import Document

        docs = [
            Document(text=t, id=i)
            for i, t in zip(table.column("id").to_pylist(), table.column("text").to_pylist(), strict=True)
        ]
    print(
        f"corpus: {n} documents, {mb:.1f} MB of text, {len(files)} shards; {a.runs} runs, 1 thread, CPU seconds"
    )
    print(f"{'rule set':<18} {'tool':<10} {'cpu s':>7} {'docs/s':>9} {'MB/s':>7} {'kept':>7} {'agree':>7}")
    for label, preset, cls_name in SETS:
        res = {}
        for tool in ("dcurate", "datatrove"):
            if tool == "datatrove" and a.skip_datatrove:
                continue
            times, keep = [], None
            for _ in range(a.runs):
                keep, dt = (
                    dcurate_keep(batches, preset) if tool == "dcurate" else datatrove_keep(docs, cls_name)
                )
                times.append(dt)
            res[tool] = (keep, statistics.median(times))
            agree = f"{(keep == res['dcurate'][0]).mean():.1%}" if tool != "dcurate" else ""
            dt = res[tool][1]
            print(
                f"{label:<18} {tool:<10} {dt:7.2f} {n / dt:9,.0f} {mb / dt:7.1f} {int(keep.sum()):7d} {agree:>7}",
                flush=True,
            )


if __name__ == "__main__":
    main()
