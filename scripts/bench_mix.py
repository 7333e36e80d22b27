"""Benchmark ``dcurate mix`` on ../shared/corpus/parquet: realized vs target mixture, and
throughput against a pass-through map stage (``dcurate filter --preset none``).

    .venv-bench/bin/python scripts/bench_mix.py [--repeats 3] [--workers 2]

Each configuration runs ``--repeats`` times into a fresh output folder (no resume); the table
gives the median wall time of the whole command (process start, reading, the stage's passes,
writing) and the throughput in input documents and MB per second. The realized mixture is read
back from the output shards and compared with the plan's targets (max |count - target| per
domain, in documents, or in tokens for --tokens).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
CORPUS = SHARED / "corpus" / "parquet"

CONFIGS = {
    "passthrough (filter --preset none)": ["filter", "--preset", "none"],
    "mix --weights wiki/forum/code --docs 4000": [
        "mix",
        "--weights",
        "wiki=0.5,forum=0.3,code=0.2",
        "--docs",
        "4000",
    ],
    "mix uniform 7 domains --docs 14000 (up-sampling)": [
        "mix",
        "--weights",
        "wiki=1,forum=1,code=1,docs=1,books=1,legal=1,short=1",
        "--docs",
        "14000",
    ],
    "mix --temperature 3 --tokens 8000000": ["mix", "--temperature", "3", "--tokens", "8000000"],
    "mix --unimax --docs 10000 --max-epochs 2": ["mix", "--unimax", "--docs", "10000", "--max-epochs", "2"],
}


def dcurate_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("dcurate")
    return [str(exe)] if exe.exists() else [shutil.which("dcurate") or "dcurate"]


def run_once(args: list[str], out: Path, workers: int) -> float:
    if out.exists():
        shutil.rmtree(out)
    cmd = [
        *dcurate_cmd(),
        args[0],
        str(CORPUS),
        str(out),
        *args[1:],
        "--workers",
        str(workers),
        "--no-progress",
    ]
    t = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.perf_counter() - t
    if res.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{res.stderr[-2000:]}")
    return dt


def realized(out: Path) -> tuple[Counter, Counter]:
    docs, tokens = Counter(), Counter()
    for p in sorted(out.glob("*.parquet")):
        t = pq.read_table(p, columns=["domain", "text"])
        for dom, text in zip(t.column("domain").to_pylist(), t.column("text").to_pylist(), strict=True):
            docs[dom] += 1
            tokens[dom] += (len(text.encode()) + 3) // 4
    return docs, tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    if not CORPUS.exists():
        sys.exit(f"{CORPUS} not found (needs ../shared)")
    n_docs = sum(pq.ParquetFile(p).metadata.num_rows for p in CORPUS.glob("*.parquet"))
    mb = (
        sum(
            pq.read_table(p, columns=["text"]).column("text").combine_chunks().nbytes
            for p in CORPUS.glob("*.parquet")
        )
        / 1e6
    )
    print(
        f"corpus: {CORPUS} ({n_docs:,} docs, {mb:.1f} MB of text); {a.workers} workers; median of {a.repeats} runs"
    )
    print(f"machine: {os.cpu_count()} CPUs; python {sys.version.split()[0]}")
    rows = []
    base = None
    with tempfile.TemporaryDirectory(prefix="bench_mix_") as tmp:
        for name, args in CONFIGS.items():
            out = Path(tmp) / "out"
            times = [run_once(args, out, a.workers) for _ in range(a.repeats)]
            med = statistics.median(times)
            base = base or med
            line = {
                "config": name,
                "median_s": round(med, 2),
                "runs_s": [round(t, 2) for t in times],
                "docs_per_s": round(n_docs / med),
                "mb_per_s": round(mb / med, 1),
                "vs_passthrough": round(med / base, 2),
            }
            plan_path = out / "_dcurate" / "mix_plan.json"
            if plan_path.exists():
                plan = json.loads(plan_path.read_text())
                docs, tokens = realized(out)
                unit = plan["unit"]
                got = docs if unit == "docs" else tokens
                err = max(abs(got[r["domain"]] - r["target"]) for r in plan["domains"])
                out_total = sum(got.values())
                share_err = max(
                    abs((got[r["domain"]] / out_total if out_total else 0) - r["target_share"])
                    for r in plan["domains"]
                )
                longest = (
                    max(
                        (len(t.encode()) + 3) // 4
                        for p in CORPUS.glob("*.parquet")
                        for t in pq.read_table(p, columns=["text"]).column("text").to_pylist()
                    )
                    if unit == "tokens"
                    else 1
                )
                line.update(
                    {
                        "unit": unit,
                        "max_abs_error": round(err, 1),
                        "max_share_error": round(share_err, 5),
                        "within_one_doc": bool(err <= longest),
                        "output_docs": sum(docs.values()),
                    }
                )
                for r in plan["domains"]:
                    print(
                        f"   {name[:40]:40s} {r['domain']:6s} target {r['target_share']:.4f} "
                        f"({r['target']:>12,} {unit}) realized {got[r['domain']] / out_total if out_total else 0:.4f} "
                        f"({got[r['domain']]:>10,}) epochs {r['epochs']:.3f}"
                    )
            rows.append(line)
            print(json.dumps(line))
    print()
    print(
        "| configuration | median s (3 runs) | docs/s | MB/s | time vs pass-through | max deviation from target |"
    )
    print("|---|---:|---:|---:|---:|---|")
    for r in rows:
        dev = f"{r['max_abs_error']:g} {r['unit']}" if "unit" in r else "-"
        print(
            f"| {r['config']} | {r['median_s']:.2f} | {r['docs_per_s']:,} | {r['mb_per_s']} | {r['vs_passthrough']:.2f}x | {dev} |"
        )


if __name__ == "__main__":
    main()
