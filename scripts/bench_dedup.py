#!/usr/bin/env python
"""Benchmark ``dcurate dedup`` (MinHash LSH) against rensa, datasketch and datatrove, each at its
fastest documented path, plus dcurate's start-up cost and scratch footprint.

Run with the bench venv (it has the peers; put this tree first on the path)::

    PYTHONPATH=. .venv-bench/bin/python scripts/bench_dedup.py --repeat 3

Every run is its own process started from this script, one at a time, on the same input files;
its cost is the **CPU time (user + system) of the process and all its descendants**, read with
``getrusage(RUSAGE_CHILDREN)`` around the run (the machine is shared, so CPU time, not wall time),
**best of** ``--repeat``. Each tool runs end to end (read the JSONL, shingle, dedup, write the kept
documents' ids), in a fresh interpreter, single-threaded:

* ``dcurate``: the CLI, ``dcurate dedup IN OUT --workers 1 --no-report`` (exact verification, the
  default; no HTML run report, which the peers do not write either: ``--with-report`` keeps it).
* ``rensa`` (bulk API): ``RMinHash.from_token_sets`` over the 5-word shingle sets, then
  ``RMinHashDeduplicator(threshold, 128, use_lsh=True, num_bands=16).add_pairs`` (keep the
  documents it reports as added), ``RAYON_NUM_THREADS=1``.
* ``datasketch``: ``MinHash.update_batch`` per document, ``MinHashLSH.insertion_session`` for the
  inserts, queries, exact Jaccard verification of candidates.
* ``datatrove``: its 4-step MinHash pipeline (signatures, buckets, cluster, filter) with the default
  ``MinhashConfig``, ``LocalPipelineExecutor(workers=1)``.

Ratios: *whole process* (the run's whole cost, start-up included) and *marginal per-core* (the run
less a 1-document run of the same command), on ``../shared/corpus/dedup`` (x1) and the 4x set (the
corpus plus 3 disjoint word-suffixed variants, 32 shards). Accuracy by
``../shared/eval/score_dedup.py``. dcurate's footprint: peak and after-run bytes of its work folder
(``OUT/.dcurate/work``, polled every few ms), per document and per input text byte; start-up: the CPU of a
1-document ``dcurate dedup`` with the default worker count.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import threading
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

    ids, texts = _read_docs(a.input)
    sh = [_shingles(t) for t in texts]
    mins = []
    for s in sh:
        m = MinHash(num_perm=128)
        m.update_batch([x.encode("utf-8") for x in s])
        mins.append(m)
    lsh = MinHashLSH(threshold=a.threshold, num_perm=128)
    with lsh.insertion_session() as session:
        for i, m in enumerate(mins):
            if sh[i]:
                session.insert(i, m)
    sets = [set(s) for s in sh]
    edges = []
    for i, m in enumerate(mins):
        if not sh[i]:
            continue
        for j in lsh.query(m):
            if j > i and len(sets[i] & sets[j]) / len(sets[i] | sets[j]) >= a.threshold:
                edges.append((i, j))
    _write_kept(a.out, ids, _keep_first(len(ids), edges))
    return {"bands_rows": [lsh.b, lsh.r]}


def child_rensa(a) -> dict:
    from rensa import RMinHash, RMinHashDeduplicator

    ids, texts = _read_docs(a.input)
    sh = [_shingles(t) for t in texts]
    todo = [i for i, s in enumerate(sh) if s]  # a document without words is nobody's duplicate
    mins = RMinHash.from_token_sets([sh[i] for i in todo], 128, 42)
    dedup = RMinHashDeduplicator(a.threshold, 128, True, 16)
    added = dedup.add_pairs([(str(i), m) for i, m in zip(todo, mins, strict=True)])
    keep = [True] * len(ids)
    for i, ok in zip(todo, added, strict=True):
        keep[i] = bool(ok)
    _write_kept(a.out, ids, keep)
    return {}


CHILDREN = {
    "datatrove": child_datatrove,
    "datasketch": child_datasketch,
    "rensa": child_rensa,
}


def _children_cpu() -> float:
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return c.ru_utime + c.ru_stime


def _tree_bytes(folder: Path) -> int:
    total = 0
    for root, _, files in os.walk(folder):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


WITH_REPORT = False  # --with-report: dcurate also writes its HTML run report


def run_tool(tool: str, inp: str, out: str, threshold: float = 0.8) -> dict:
    """One run in a fresh process: CPU of it and its descendants, wall time, dcurate's footprint."""
    shutil.rmtree(out, ignore_errors=True)
    env = dict(os.environ, RAYON_NUM_THREADS="1", POLARS_MAX_THREADS="1", OMP_NUM_THREADS="1")
    if tool.startswith("dcurate"):
        exe = str(Path(sys.executable).parent / "dcurate")
        cmd = [exe, "dedup", inp, out, "--threshold", str(threshold)]
        if tool == "dcurate":
            cmd += ["--workers", "1"]  # "dcurate-default": the default worker count
        if not WITH_REPORT:
            cmd += ["--no-report"]
    else:
        cmd = [sys.executable, __file__, "--child", tool, "--input", inp, "--out", out,
               "--threshold", str(threshold)]
    peak = [0]
    stop = threading.Event()

    def poll() -> None:  # dcurate's work folder, sampled while it runs
        work = Path(out) / ".dcurate" / "work"
        while not stop.is_set():
            peak[0] = max(peak[0], _tree_bytes(work))
            stop.wait(0.002)

    th = threading.Thread(target=poll, daemon=True)
    if tool == "dcurate":
        th.start()
    c0, t0 = _children_cpu(), time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    res = {"cpu": _children_cpu() - c0, "wall": time.perf_counter() - t0}
    stop.set()
    if th.is_alive():
        th.join()
    if p.returncode != 0:
        raise RuntimeError(f"{tool} failed:\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}")
    if tool == "dcurate":
        work = Path(out) / ".dcurate" / "work"
        res["peak_scratch"] = max(peak[0], _tree_bytes(work))
        res["after_scratch"] = _tree_bytes(work)
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default=str(SHARED / "corpus" / "dedup" / "docs.jsonl.zst"))
    ap.add_argument("--gt", default=str(SHARED / "corpus" / "dedup"))
    ap.add_argument("--work", default="/tmp/dcurate-bench-dedup")
    ap.add_argument("--repeat", type=int, default=3, help="runs per measurement; the best (least CPU) counts")
    ap.add_argument("--tools", default="dcurate,rensa,datasketch,datatrove")
    ap.add_argument("--x4-tools", default="dcurate,rensa", help="tools also run on the 4x set")
    ap.add_argument("--threshold", type=float, default=0.8)
    ap.add_argument("--json", help="also write all results to this file")
    ap.add_argument("--with-report", action="store_true", help="dcurate also writes its HTML run report")
    ap.add_argument("--breakdown", action="store_true",
                    help="instead: where dcurate's CPU goes on the 4x set (one run under cProfile, scaled)")
    # child mode
    ap.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    ap.add_argument("--input", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    a = ap.parse_args()

    if a.child:
        CHILDREN[a.child](a)
        return
    global WITH_REPORT
    WITH_REPORT = a.with_report

    work = Path(a.work)
    info = prepare(Path(a.corpus), work)
    one = work / "one" / "docs.jsonl"
    one.parent.mkdir(exist_ok=True)
    with open(info["x1"]) as f:
        one.write_text(f.readline())
    sets = {"x1": (info["x1"], info["text_mb"], info["docs"]),
            "x4": (info["x4"], info["text_mb"] * 4, info["docs"] * 4)}
    print(f"corpus {a.corpus}: {info['docs']} docs, {info['text_mb']:.1f} MB of text; {os.cpu_count()} cores; "
          f"best of {a.repeat}; CPU = user + sys of the run and its descendants; dcurate "
          f"{'with' if WITH_REPORT else 'without'} its HTML report", flush=True)
    if a.breakdown:
        breakdown(info["x4"], str(work / "out" / "breakdown"))
        return
    tools = a.tools.split(",")
    x4_tools = [t for t in a.x4_tools.split(",") if t in tools]
    run_tool("dcurate", str(one), str(work / "out" / "warm"))  # numba's on-disk cache; not counted
    best: dict[tuple[str, str], dict] = {}
    for tool in tools:
        for name in ["one", "x1"] + (["x4"] if tool in x4_tools else []):
            inp = str(one) if name == "one" else sets[name][0]
            runs = []
            for _ in range(a.repeat if tool != "datatrove" or name == "one" else 1):
                out = str(work / "out" / f"{tool}-{name}")
                runs.append(run_tool(tool, inp, out, a.threshold))
                if name == "x1" and not runs[-1].get("score"):
                    runs[-1]["score"] = score(out, Path(a.gt), a.threshold)
            b = min(runs, key=lambda r: r["cpu"])
            b["score"] = runs[0].get("score")
            best[(tool, name)] = b
            cpus = ", ".join(f"{r['cpu']:.2f}" for r in runs)
            print(f"  {tool} {name}: {b['cpu']:.2f} CPU s (runs: {cpus})", flush=True)
    report(best, tools, sets, a)
    if a.json:
        Path(a.json).write_text(json.dumps({"info": info, "best": {f"{t}@{n}": r for (t, n), r in best.items()}},
                                           indent=1))


# (label, function (file:function) whose time counts, "tot" own time or "cum" with its callees)
PARTS = [
    ("read: JSON parse (Arrow)", "reader.py:_arrow_parse", "tot"),
    ("read: UTF-8 and nesting checks", "reader.py:checked_block", "cum"),
    ("read: file blocks", "reader.py:_blocks", "cum"),
    ("read: total through the reader (scan 1, apply; scan 2 when not read directly)", "reader.py:__iter__", "cum"),
    ("scan 2: candidate lines read directly (slice, parse)", "lines.py:gen", "cum"),
    ("shingle kernel", "minhash.py:_shingle_kernel", "tot"),
    ("CPython NFKC (texts off the fast path)", "normalize.py:normalize_array", "cum"),
    ("fast-path test", "utf8.py:needs_normalization", "tot"),
    ("signatures", "minhash.py:_sig_affine32", "tot"),
    ("scan 1: work files", "stage.py:_flush", "cum"),
    ("scan 2: work files", "candidates.py:flush_candidates", "cum"),
    ("reduces (grouping, pairs, verification, clusters)", "stage.py:reduce", "cum"),
    ("write output shards", "writer.py:write", "cum"),
    ("fsync (shards, markers, plans, work files)", "~:<built-in method posix.fsync>", "tot"),
    ("finish (cluster table, scratch removal)", "stage.py:finish", "cum"),
    ("driver run (everything after start-up)", "driver.py:run", "cum"),
]


def breakdown(inp: str, out: str) -> None:
    """One ``dcurate dedup IN OUT --workers 1 --no-report`` under cProfile; each part's share of the
    profile, scaled to the run's CPU time measured without the profiler."""
    import pstats

    plain = run_tool("dcurate", inp, out)["cpu"]
    shutil.rmtree(out, ignore_errors=True)
    prof = out + ".prof"
    code = "\n".join([
        "import cProfile, sys, time",
        "from dcurate.cli.entry import main",
        f"sys.argv = ['dcurate', 'dedup', {inp!r}, {out!r}, '--workers', '1', '--no-report']",
        "prof = cProfile.Profile(time.process_time)  # CPU time, not wall time",
        "try:",
        "    prof.runcall(main)",
        "except SystemExit:",
        "    pass",
        f"prof.dump_stats({prof!r})",
    ])
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    if p.returncode != 0:
        raise RuntimeError(f"profiled run failed:\n{p.stderr[-3000:]}")
    st = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    total = max(v[3] for v in st.values())
    print(f"dcurate x4: {plain:.2f} CPU s without the profiler; profile {total:.2f} s; scaled shares:")
    print("| part | CPU s | share |\n|---|---:|---:|")
    for label, where, kind in PARTS:
        fname, func = where.split(":", 1)
        times = [(v[2] if kind == "tot" else v[3]) for (f, _, fn), v in st.items()
                 if fn == func and (fname == "~" or f.endswith("/" + fname))]
        # own times add up; a cumulative time already holds nested calls of a same-named function
        t = (sum(times) if kind == "tot" else max(times)) if times else 0.0
        print(f"| {label} | {t / total * plain:.2f} | {t / total:.0%} |")
    for (f, _, fn), v in st.items():  # shingling (kernel, NFKC, tests) by scan
        if fn == "shingle_hashes" and f.endswith("/minhash.py"):
            for (_, _, caller), c in v[4].items():
                name = {"_scan_batch": "scan 1 (every document)", "_store_candidates": "scan 2 (candidates)"}
                if caller in name:
                    print(f"| shingling in {name[caller]} | {c[3] / total * plain:.2f} | {c[3] / total:.0%} |")
    run = max(v[3] for (f, _, fn), v in st.items() if fn == "run" and f.endswith("/driver.py"))
    print(f"| start-up (imports, CLI) and the rest | {(1 - run / total) * plain:.2f} | {1 - run / total:.0%} |")


def report(best, tools, sets, a) -> None:
    print(f"\n## End to end, 1 worker, threshold {a.threshold} (CPU s, best of {a.repeat})")
    print("| tool | 1 doc | x1 | x1 marginal | x1 MB/s per core (marginal) | x4 | x4 marginal | P | R | F1 | lost |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for tool in tools:
        o, x1, x4 = best.get((tool, "one")), best.get((tool, "x1")), best.get((tool, "x4"))
        if x1 is None:
            continue
        m1 = x1["cpu"] - o["cpu"]
        sc = x1["score"]
        x4s = f"{x4['cpu']:.2f} | {x4['cpu'] - o['cpu']:.2f}" if x4 else "- | -"
        print(f"| {tool} | {o['cpu']:.2f} | {x1['cpu']:.2f} | {m1:.2f} | {sets['x1'][1] / m1:.1f} | {x4s} | "
              f"{sc['precision']:.4f} | {sc['recall']:.4f} | {sc['f1']:.4f} | {sc['lost_clusters']} |")
    if "dcurate" in tools:
        print("\n## Ratios: peer CPU / dcurate CPU (higher = dcurate cheaper)")
        d = {n: best[("dcurate", n)] for n in ("one", "x1", "x4") if ("dcurate", n) in best}
        for tool in tools:
            if tool == "dcurate" or (tool, "x1") not in best:
                continue
            o = best[(tool, "one")]
            parts = []
            for n in ("x1", "x4"):
                if (tool, n) in best and n in d:
                    r = best[(tool, n)]
                    whole = r["cpu"] / d[n]["cpu"]
                    marg = (r["cpu"] - o["cpu"]) / (d[n]["cpu"] - d["one"]["cpu"])
                    parts.append(f"{n}: whole process {whole:.2f}x, marginal {marg:.2f}x")
            print(f"- vs {tool}: " + "; ".join(parts))
        print("\n## dcurate footprint (work folder OUT/.dcurate/work) and start-up")
        for n in ("x1", "x4"):
            if n in d:
                r, (_, mb, docs) = d[n], sets[n]
                print(f"- {n}: peak {r['peak_scratch'] / 1e6:.2f} MB = {r['peak_scratch'] / (mb * 1e6):.3f}x the "
                      f"input's text ({r['peak_scratch'] / docs:.0f} B/doc); after the run "
                      f"{r['after_scratch'] / 1e6:.3f} MB ({r['after_scratch'] / docs:.1f} B/doc)")
        one = str(Path(a.work) / "one" / "docs.jsonl")
        st = [run_tool("dcurate-default", one, str(Path(a.work) / "out" / "startup"))["cpu"] for _ in range(a.repeat)]
        print(f"- start-up: a 1-document `dcurate dedup IN OUT` (default workers) costs {min(st):.2f} CPU s "
              f"(runs: {', '.join(f'{x:.2f}' for x in st)})")


if __name__ == "__main__":
    main()
