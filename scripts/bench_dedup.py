#!/usr/bin/env python
"""Benchmark ``dcurate dedup`` (MinHash LSH) against datatrove, datasketch and rensa.

Run with the bench venv (it has the peers and dcurate installed editable)::

    .venv-bench/bin/python scripts/bench_dedup.py --repeat 3

Every measurement runs in its own child process launched from this script (so that peak RSS is
measured per tool), one tool at a time, on the same input files:

* ``dcurate-sig``: dcurate's signature phase (shingle hashing + 128-permutation MinHash) over the
  texts already in memory; ``dcurate``: ``dcurate.api.curate(... dedup ...)`` end to end, 1 worker.
* ``datatrove``: its 4-step MinHash pipeline (signatures, buckets, cluster, filter) with the default
  ``MinhashConfig`` (5-grams, 14 buckets x 8 hashes), ``LocalPipelineExecutor(workers=1)``; its
  signature phase includes reading the JSONL (datatrove has no separate read step).
* ``datasketch``: ``MinHash(128)`` (default affine32 + sha1_hash32) on the same 5-word shingle
  strings, ``MinHashLSH(threshold=t, num_perm=128)``, exact Jaccard verification of candidates.
* ``rensa``: ``RMinHash(128)`` on the same shingle strings, ``RMinHashLSH(t, 128, 16 bands)``,
  verification with the estimated Jaccard (its usual use).

Throughput is given per wall second and per CPU second (user + system of the child and its
children): the CPU figure is the per-core rate and is robust to other load on the machine.
Accuracy is scored with ``../shared/eval/score_dedup.py``. Scaling: dcurate on the corpus cut into
8 shards with 1 and 2 workers, and peak RSS at 1x and 4x the corpus (the corpus + 3 disjoint word-suffixed variants), from
which memory and disk for 1e9 documents are projected. Medians over ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
WORD = re.compile(r"\w+")


# --------------------------------------------------------------------------------------------
# helpers shared by the children
# --------------------------------------------------------------------------------------------


def _usage() -> float:
    s = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def _peak_rss_mb() -> tuple[float, float]:
    s = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    c = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return s, c


def _read_docs(path: str) -> tuple[list[str], list[str]]:
    import polars as pl

    df = pl.read_ndjson(path, schema={"id": pl.String, "text": pl.String})
    return df["id"].to_list(), df["text"].fill_null("").to_list()


def _shingles(text: str, n: int = 5) -> list[str]:
    toks = WORD.findall(text.lower())
    if not toks:
        return []
    if len(toks) < n:
        return [" ".join(toks)]
    return list({" ".join(toks[i : i + n]) for i in range(len(toks) - n + 1)})


def _keep_first(n: int, edges) -> list[bool]:
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return [find(i) == i for i in range(n)]


def _write_kept(out: str, ids: list[str], keep: list[bool]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(out, exist_ok=True)
    kept = [i for i, k in zip(ids, keep, strict=True) if k]
    pq.write_table(pa.table({"id": pa.array(kept, pa.string())}), os.path.join(out, "kept.parquet"))


# --------------------------------------------------------------------------------------------
# children: one tool each; print one JSON line
# --------------------------------------------------------------------------------------------


def child_dcurate_sig(a) -> dict:
    import pyarrow as pa

    from dcurate.stages.dedup import minhash as mh

    ids, texts = _read_docs(a.input)
    arr = pa.array(texts, pa.large_string())
    mh.signatures(*mh.shingle_hashes(arr[:4]))  # load the compiled kernels (numba cache)
    c0, t0 = _usage(), time.perf_counter()
    off, h = mh.shingle_hashes(arr)
    t1 = time.perf_counter()
    sig = mh.signatures(off, h, num_perm=128)
    t2 = time.perf_counter()
    return {
        "sig_s": t2 - t0,
        "sig_cpu": _usage() - c0,
        "shingle_s": t1 - t0,
        "minhash_s": t2 - t1,
        "shingles": int(len(h)),
        "sig_bytes": int(sig.nbytes),
    }


def child_dcurate(a) -> dict:
    from dcurate.api import curate

    c0, t0 = _usage(), time.perf_counter()
    stats = curate(a.input, a.out, stages=[{"stage": "dedup", "threshold": a.threshold}], workers=a.workers)
    res = {"total_s": time.perf_counter() - t0, "total_cpu": _usage() - c0}
    work = Path(a.out) / ".dcurate" / "work" / "stages"
    res["work_bytes"] = sum(f.stat().st_size for f in work.rglob("*") if f.is_file()) if work.exists() else 0
    res["docs_out"] = stats.get("docs_out") if isinstance(stats, dict) else None
    return res


def child_datatrove(a) -> dict:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    cfg = MinhashConfig()  # 5-grams, 14 buckets x 8 hashes, seed 1
    w = Path(a.out + "_work")
    shutil.rmtree(w, ignore_errors=True)
    inp = str(Path(a.input).parent)
    glob = Path(a.input).name

    def run(pipeline, tasks, name):
        LocalPipelineExecutor(
            pipeline=pipeline,
            tasks=tasks,
            workers=1,
            logging_dir=str(w / "logs" / name),
            skip_completed=False,
        ).run()

    c0, t0 = _usage(), time.perf_counter()
    run([JsonlReader(inp, glob_pattern=glob), MinhashDedupSignature(str(w / "sigs"), config=cfg)], 1, "sig")
    t1, c1 = time.perf_counter(), _usage()
    run([MinhashDedupBuckets(str(w / "sigs"), str(w / "buckets"), config=cfg)], cfg.num_buckets, "buckets")
    run([MinhashDedupCluster(str(w / "buckets"), str(w / "remove"), config=cfg)], 1, "cluster")
    run(
        [
            JsonlReader(inp, glob_pattern=glob),
            MinhashDedupFilter(str(w / "remove")),
            JsonlWriter(a.out, output_filename="${rank}.jsonl.gz"),
        ],
        1,
        "filter",
    )
    return {
        "sig_s": t1 - t0,
        "sig_cpu": c1 - c0,
        "total_s": time.perf_counter() - t0,
        "total_cpu": _usage() - c0,
    }


def child_datasketch(a) -> dict:
    from datasketch import MinHash, MinHashLSH

    c0, t0 = _usage(), time.perf_counter()
    ids, texts = _read_docs(a.input)
    tr, cr = time.perf_counter(), _usage()
    sh = [_shingles(t) for t in texts]
    mins = []
    for s in sh:
        m = MinHash(num_perm=128)
        m.update_batch([x.encode("utf-8") for x in s])
        mins.append(m)
    t1, c1 = time.perf_counter(), _usage()
    lsh = MinHashLSH(threshold=a.threshold, num_perm=128)
    for i, m in enumerate(mins):
        if sh[i]:
            lsh.insert(i, m)
    sets = [set(s) for s in sh]
    edges = []
    for i, m in enumerate(mins):
        if not sh[i]:
            continue
        for j in lsh.query(m):
            if j > i and len(sets[i] & sets[j]) / len(sets[i] | sets[j]) >= a.threshold:
                edges.append((i, j))
    _write_kept(a.out, ids, _keep_first(len(ids), edges))
    return {
        "sig_s": t1 - tr,
        "sig_cpu": c1 - cr,
        "total_s": time.perf_counter() - t0,
        "total_cpu": _usage() - c0,
        "bands_rows": list(lsh.b_r) if hasattr(lsh, "b_r") else [lsh.b, lsh.r],
    }


def child_rensa(a) -> dict:
    from rensa import RMinHash, RMinHashLSH

    c0, t0 = _usage(), time.perf_counter()
    ids, texts = _read_docs(a.input)
    tr, cr = time.perf_counter(), _usage()
    sh = [_shingles(t) for t in texts]
    mins = []
    for s in sh:
        m = RMinHash(num_perm=128, seed=42)
        m.update(s)
        mins.append(m)
    t1, c1 = time.perf_counter(), _usage()
    lsh = RMinHashLSH(threshold=a.threshold, num_perm=128, num_bands=16)
    for i, m in enumerate(mins):
        if sh[i]:
            lsh.insert(i, m)
    edges = []
    for i, m in enumerate(mins):
        if not sh[i]:
            continue
        for j in lsh.query(m):
            if j > i and m.jaccard(mins[j]) >= a.threshold:
                edges.append((i, j))
    _write_kept(a.out, ids, _keep_first(len(ids), edges))
    return {
        "sig_s": t1 - tr,
        "sig_cpu": c1 - cr,
        "total_s": time.perf_counter() - t0,
        "total_cpu": _usage() - c0,
    }


CHILDREN = {
    "dcurate-sig": child_dcurate_sig,
    "dcurate": child_dcurate,
    "datatrove": child_datatrove,
    "datasketch": child_datasketch,
    "rensa": child_rensa,
}


def run_child(tool: str, inp: str, out: str, threshold: float = 0.8, workers: int = 1) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, __file__, "--child", tool, "--input", inp, "--out", out]
    cmd += ["--threshold", str(threshold), "--workers", str(workers)]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"{tool} failed:\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}")
    res = json.loads(p.stdout.strip().splitlines()[-1])
    res["child_wall_s"] = wall
    return res


def score(out: str, gt: Path, threshold: float) -> dict:
    p = subprocess.run(
        [
            sys.executable,
            str(SHARED / "eval" / "score_dedup.py"),
            "--gt",
            str(gt),
            "--kept",
            out,
            "--threshold",
            str(threshold),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(p.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------
# input preparation
# --------------------------------------------------------------------------------------------


def prepare(corpus: Path, work: Path) -> dict:
    import zstandard

    work.mkdir(parents=True, exist_ok=True)
    raw = zstandard.ZstdDecompressor().stream_reader(open(corpus, "rb")).read()
    lines = [ln for ln in raw.split(b"\n") if ln.strip()]
    recs = [json.loads(ln) for ln in lines]
    recs = [{"id": r["id"], "text": r["text"]} for r in recs]
    one = work / "x1" / "docs.jsonl"
    one.parent.mkdir(exist_ok=True)
    one.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs))
    shards = work / "x1-8shards"
    shards.mkdir(exist_ok=True)
    k = 8
    for s in range(k):
        part = recs[s * len(recs) // k : (s + 1) * len(recs) // k]
        (shards / f"part-{s:05d}.jsonl").write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in part)
        )
    # 4x: the corpus and 3 disjoint variants of it. In variant c every word gets the suffix
    # "q<c>": a bijection on words, so duplicate pairs and their Jaccard within a variant are those
    # of the original, while no shingle is shared across variants. (Plain copies would make every
    # document a 4-fold exact duplicate and measure a different workload.)
    import re

    word = re.compile(r"\w+")
    four = work / "x4-32shards"
    four.mkdir(exist_ok=True)
    for c in range(4):
        copy = [
            {"id": r["id"] if c == 0 else f"{r['id']}#v{c}",
             "text": r["text"] if c == 0 else word.sub(lambda m, c=c: m.group(0) + f"q{c}", r["text"])}
            for r in recs
        ]
        for s in range(k):
            part = copy[s * len(copy) // k : (s + 1) * len(copy) // k]
            (four / f"part-{c * k + s:05d}.jsonl").write_text(
                "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in part)
            )
    text_mb = sum(len(r["text"].encode("utf-8")) for r in recs) / 1e6
    return {"x1": str(one), "x1_8": str(shards), "x4": str(four), "docs": len(recs), "text_mb": text_mb}


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default=str(SHARED / "corpus" / "dedup" / "docs.jsonl.zst"))
    ap.add_argument("--gt", default=str(SHARED / "corpus" / "dedup"))
    ap.add_argument("--work", default="/tmp/dcurate-bench-dedup")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--tools", default="dcurate,datatrove,datasketch,rensa")
    ap.add_argument("--thresholds", default="0.8,0.7")
    ap.add_argument("--no-scale", action="store_true", help="skip the 2-worker and 4x-corpus runs")
    ap.add_argument("--json", help="also write all results to this file")
    # child mode
    ap.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    ap.add_argument("--input", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--threshold", type=float, default=0.8, help=argparse.SUPPRESS)
    ap.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    a = ap.parse_args()

    if a.child:
        res = CHILDREN[a.child](a)
        res["rss_self_mb"], res["rss_children_mb"] = _peak_rss_mb()
        sys.stdout.write("\n" + json.dumps(res) + "\n")
        return

    work = Path(a.work)
    info = prepare(Path(a.corpus), work)
    mb, ndocs = info["text_mb"], info["docs"]
    tools = a.tools.split(",")
    thresholds = [float(t) for t in a.thresholds.split(",")]
    print(f"corpus {a.corpus}: {ndocs} docs, {mb:.1f} MB of text; {os.cpu_count()} cores; repeat {a.repeat}")
    # warm-up (numba's on-disk cache, imports): not counted
    if "dcurate" in tools:
        run_child("dcurate", info["x1"], str(work / "warm"), 0.8)
    results: dict[str, list[dict]] = {}
    for rep in range(a.repeat):
        for tool in tools:
            if tool == "dcurate":
                results.setdefault("dcurate-sig", []).append(
                    run_child("dcurate-sig", info["x1"], str(work / "sig"))
                )
            for t in thresholds if tool != "datatrove" else thresholds[:1]:
                out = str(work / "out" / f"{tool}-{t}")
                r = run_child(tool, info["x1"], out, t)
                for st in thresholds if tool == "datatrove" else [t]:
                    r[f"score_{st}"] = score(out, Path(a.gt), st)
                results.setdefault(f"{tool}@{t}", []).append(r)
                print(
                    f"  run {rep + 1} {tool} t={t}: {r.get('total_s', 0):.2f} s wall, {r.get('total_cpu', 0):.2f} s CPU",
                    flush=True,
                )
        if not a.no_scale and "dcurate" in tools:
            for w in (1, 2):
                r = run_child("dcurate", info["x1_8"], str(work / "out" / f"dcurate-8shards-w{w}"), 0.8, w)
                results.setdefault(f"dcurate-8shards-w{w}", []).append(r)
            r = run_child("dcurate", info["x4"], str(work / "out" / "dcurate-x4"), 0.8, 1)
            results.setdefault("dcurate-x4", []).append(r)

    report(results, tools, thresholds, mb, ndocs, a)
    if a.json:
        Path(a.json).write_text(json.dumps({"info": info, "results": results}, indent=1))


def report(results, tools, thresholds, mb, ndocs, a) -> None:
    def m(key, field):
        return med([r.get(field) for r in results.get(key, [])])

    print(f"\n## Signature phase (128 permutations; median of {a.repeat})")
    print("| tool | s wall | MB/s wall | MB/s per CPU-s | docs/s per CPU-s |")
    print("|---|---:|---:|---:|---:|")
    sig_rate = {}
    for tool in tools:
        key = "dcurate-sig" if tool == "dcurate" else f"{tool}@{thresholds[0]}"
        s, c = m(key, "sig_s"), m(key, "sig_cpu")
        if s is None:
            continue
        sig_rate[tool] = mb / c
        print(f"| {tool} | {s:.2f} | {mb / s:.1f} | {mb / c:.1f} | {ndocs / c:,.0f} |")
    print(f"\n## End to end, 1 worker (median of {a.repeat})")
    print(
        "| tool | threshold | s wall | MB/s wall | MB/s per CPU-s | docs/s per CPU-s | peak RSS MB | P | R | F1 | lost |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    e2e = {}
    for tool in tools:
        for t in thresholds:
            key = f"{tool}@{t}" if tool != "datatrove" else f"{tool}@{thresholds[0]}"
            rs = results.get(key, [])
            if not rs:
                continue
            s, c = m(key, "total_s"), m(key, "total_cpu")
            rss = med([max(r["rss_self_mb"], r["rss_children_mb"]) for r in rs])
            sc = [r[f"score_{t}"] for r in rs]
            e2e[(tool, t)] = mb / c
            print(
                f"| {tool} | {t} | {s:.2f} | {mb / s:.1f} | {mb / c:.1f} | {ndocs / c:,.0f} | {rss:.0f} | "
                f"{med([x['precision'] for x in sc]):.4f} | {med([x['recall'] for x in sc]):.4f} | "
                f"{med([x['f1'] for x in sc]):.4f} | {med([x['lost_clusters'] for x in sc]):.0f} |"
            )
    if "dcurate" in tools:
        print("\n## Ratios dcurate / peer (per CPU-second)")
        for tool in tools:
            if tool == "dcurate" or tool not in sig_rate:
                continue
            line = f"- vs {tool}: signatures {sig_rate['dcurate'] / sig_rate[tool]:.1f}x"
            for t in thresholds:
                if ("dcurate", t) in e2e and (tool, t) in e2e:
                    line += f"; end to end at {t} {e2e[('dcurate', t)] / e2e[(tool, t)]:.1f}x"
            print(line)
    if "dcurate-8shards-w1" in results:
        w1, w2 = m("dcurate-8shards-w1", "total_s"), m("dcurate-8shards-w2", "total_s")
        print("\n## Scaling (dcurate, threshold 0.8)")
        print(f"- 8 shards: 1 worker {w1:.2f} s, 2 workers {w2:.2f} s wall -> speed-up {w1 / w2:.2f}x")
        r1 = results["dcurate-8shards-w1"]
        r4 = results["dcurate-x4"]
        rss1 = med([max(r["rss_self_mb"], r["rss_children_mb"]) for r in r1])
        rss4 = med([max(r["rss_self_mb"], r["rss_children_mb"]) for r in r4])
        d1 = med([r["work_bytes"] for r in r1])
        d4 = med([r["work_bytes"] for r in r4])
        print(
            f"- peak RSS, 1 worker: 1x corpus ({ndocs} docs, 8 shards) {rss1:.0f} MB; "
            f"4x ({4 * ndocs} docs, 32 shards of the same size) {rss4:.0f} MB"
        )
        print(
            f"- work files: 1x {d1 / 1e6:.1f} MB ({d1 / ndocs:.0f} B/doc); 4x {d4 / 1e6:.1f} MB ({d4 / (4 * ndocs):.0f} B/doc)"
        )
        per_doc_disk = d4 / (4 * ndocs)
        slope = max(0.0, (rss4 - rss1) / (3 * ndocs)) * 1e6  # bytes of peak RSS per extra document
        print(
            f"- projection for 1e9 documents of this size mix (~4 KB of text each): work disk "
            f"{per_doc_disk * 1e9 / 1e12:.1f} TB; peak RSS grew {slope:.0f} B per extra document from 1x to 4x, "
            f"i.e. {(rss1 + slope * 1e9 / 1e6) / 1e6:.2f} TB per worker at 1e9 documents if that growth stayed linear"
        )


if __name__ == "__main__":
    main()
