"""Benchmark ``dcurate mix`` on ../shared/corpus/parquet: realized vs target mixture, and
throughput against a pass-through map stage (``dcurate filter --preset none``).

    .venv-bench/bin/python scripts/bench_mix.py [--repeats 3] [--workers 2]

Each configuration runs ``--repeats`` times into a fresh output folder (no resume); the table
gives the median wall time and CPU time of the whole command (process start, reading, the
stage's passes, writing) and the throughput in input documents and MB per second. With the
default ``--workers 1`` everything runs in the measured process, so CPU time, which other load on
the machine barely changes, is the figure to compare. The realized mixture is read
back from the output shards and compared with the plan's targets (max |count - target| per
domain, in documents, or in tokens for --tokens).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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


def run_once(args: list[str], out: Path, workers: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the command and its worker processes)."""
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
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.perf_counter() - t
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if res.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{res.stderr[-2000:]}")
    return dt, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def token_estimates(texts: list[str]) -> list[int]:
    return [(len(t.encode()) + 3) // 4 for t in texts]


def realized(out: Path) -> tuple[Counter, Counter]:
    docs, tokens = Counter(), Counter()
    for p in sorted(out.glob("*.parquet")):
        t = pq.read_table(p, columns=["domain", "text"])
        for dom, tok in zip(
            t.column("domain").to_pylist(), token_estimates(t.column("text").to_pylist()), strict=True
        ):
            docs[dom] += 1
            tokens[dom] += tok
    return docs, tokens


def check_mixture(out: Path, longest: int) -> dict:
    """Realized vs planned mixture of one output folder."""
    plan = json.loads((out / ".dcurate" / "mix_plan.json").read_text())
    docs, tokens = realized(out)
    unit = plan["unit"]
    got = docs if unit == "docs" else tokens
    total = sum(got.values())
    err = max(abs(got[r["domain"]] - r["target"]) for r in plan["domains"])
    for r in plan["domains"]:
        share = got[r["domain"]] / total if total else 0.0
        print(
            f"   {out.name[:12]:12s} {r['domain']:6s} target {r['target_share']:.4f} ({r['target']:>14,} {unit}) "
            f"realized {share:.4f} ({got[r['domain']]:>10,}) epochs {r['epochs']:.3f}"
        )
    return {
        "unit": unit,
        "max_abs_error": round(err, 1),
        "max_share_error": round(
            max(abs((got[r["domain"]] / total if total else 0) - r["target_share"]) for r in plan["domains"]),
            5,
        ),
        "within_one_doc": bool(err <= (longest if unit == "tokens" else 1)),
        "output_docs": sum(docs.values()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--workers",
        type=int,
        default=1,
        help="dcurate --workers (default 1: the work runs in the measured process, so its CPU time is complete; "
        "with more, workers are not children of it and only wall time is meaningful)",
    )
    a = ap.parse_args()
    if not CORPUS.exists():
        sys.exit(f"{CORPUS} not found (needs ../shared)")
    texts = [
        t
        for p in sorted(CORPUS.glob("*.parquet"))
        for t in pq.read_table(p, columns=["text"]).column("text").to_pylist()
    ]
    n_docs, mb, longest = len(texts), sum(len(t.encode()) for t in texts) / 1e6, max(token_estimates(texts))
    print(
        f"corpus: {CORPUS} ({n_docs:,} docs, {mb:.1f} MB of text); {a.workers} workers; median of {a.repeats} runs"
    )
    print(
        f"machine: {os.cpu_count()} CPUs; python {sys.version.split()[0]}; load average at start {os.getloadavg()[0]:.2f}"
    )
    print("configurations are interleaved in each repeat, so that load changes hit all of them alike")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_mix_") as tmp:
        outs = {name: Path(tmp) / f"c{i}" for i, name in enumerate(CONFIGS)}
        timings: dict[str, list[tuple[float, float]]] = {name: [] for name in CONFIGS}
        for _ in range(a.repeats):
            for name, args in CONFIGS.items():
                timings[name].append(run_once(args, outs[name], a.workers))
        base = None
        for name in CONFIGS:
            wall = statistics.median(t for t, _ in timings[name])
            cpu = statistics.median(c for _, c in timings[name])
            base = base or (wall, cpu)
            line = {
                "config": name,
                "median_s": round(wall, 2),
                "runs_s": [round(t, 2) for t, _ in timings[name]],
                "median_cpu_s": round(cpu, 2),
                "docs_per_s": round(n_docs / wall),
                "mb_per_s": round(mb / wall, 1),
                "vs_passthrough": round(wall / base[0], 2),
                "cpu_vs_passthrough": round(cpu / base[1], 2),
            }
            if a.workers != 1:
                line["median_cpu_s"] = line["cpu_vs_passthrough"] = None
            if (outs[name] / ".dcurate" / "mix_plan.json").exists():
                line.update(check_mixture(outs[name], longest))
            rows.append(line)
            print(json.dumps(line))
    print()
    print(
        f"| configuration | median wall s ({a.repeats} runs) | median CPU s | docs/s | MB/s | wall vs pass-through "
        "| CPU vs pass-through | max deviation from target |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        dev = f"{r['max_abs_error']:g} {r['unit']}" if "unit" in r else "-"
        cpu = "n/a" if r["median_cpu_s"] is None else f"{r['median_cpu_s']:.2f}"
        cpu_ratio = "n/a" if r["cpu_vs_passthrough"] is None else f"{r['cpu_vs_passthrough']:.2f}x"
        print(
            f"| {r['config']} | {r['median_s']:.2f} | {cpu} | {r['docs_per_s']:,} | {r['mb_per_s']} "
            f"| {r['vs_passthrough']:.2f}x | {cpu_ratio} | {dev} |"
        )


if __name__ == "__main__":
    main()
