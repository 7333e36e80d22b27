"""I/O benchmark: a pass-through recipe vs a plain read + write of the same shards, side by side.

    .venv/bin/python scripts/bench_io.py [--repeat 3] [--corpus ../shared/corpus]

For Parquet and for JSONL.zst it times, each in a fresh child process (so peak RSS is its own):
  * plain: pyarrow read_table + write_table (zstd) / zstandard + orjson per line (zstd level 3)
  * dcurate: `filter --preset none` (a pass-through map stage) through the full runner, 1 worker
  * dcurate with 2 workers
  * plain in 2 processes (every other file each): how far the machine itself scales
and prints docs/s, MB/s of text per core, peak RSS, and the ratios dcurate/plain and 2w/1w.
Medians of --repeat runs.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def plain_parquet(src: str, dst: str, part: int = 0, parts: int = 1) -> None:
    import pyarrow.parquet as pq

    for f in sorted(glob.glob(os.path.join(src, "*.parquet")))[part::parts]:
        t = pq.read_table(f)
        pq.write_table(t, os.path.join(dst, os.path.basename(f)), compression="zstd")


def plain_jsonl(src: str, dst: str, part: int = 0, parts: int = 1) -> None:
    import orjson
    import zstandard

    for f in sorted(glob.glob(os.path.join(src, "*.jsonl.zst")))[part::parts]:
        with open(f, "rb") as fh:
            data = zstandard.ZstdDecompressor().stream_reader(fh).read()
        recs = [orjson.loads(line) for line in data.splitlines() if line]
        out = b"".join(orjson.dumps(r) + b"\n" for r in recs)
        with open(os.path.join(dst, os.path.basename(f)), "wb") as fh:
            fh.write(zstandard.ZstdCompressor(level=3).compress(out))


def dcurate_pass(src: str, dst: str, workers: int) -> int:
    """Returns the peak RSS of the busiest process (driver or worker), from the run's stats."""
    from dcurate.api import curate

    s = curate(src, dst, [{"stage": "filter", "preset": "none"}], workers=workers, progress=False)
    return int(max(s["peak_rss_mb"]["worker"], s["peak_rss_mb"]["driver"]) * 1e6)


def child(kind: str, src: str, workers: int) -> tuple[float, int]:
    """Run one variant in a forked child; return (seconds, peak RSS bytes of the child tree)."""
    dst = tempfile.mkdtemp(prefix="bench-io-")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        import resource

        t0 = time.perf_counter()
        rss = 0
        if kind.startswith("plain"):
            # workers > 1: the same loop in that many forked processes, each over every
            # workers-th file: how far this machine's cores scale an embarrassingly parallel job
            fn = plain_parquet if kind == "plain-parquet" else plain_jsonl
            pids = []
            for k in range(1, workers):
                pid = os.fork()
                if pid == 0:
                    fn(src, dst, k, workers)
                    os._exit(0)
                pids.append(pid)
            fn(src, dst, 0, workers)
            for pid in pids:
                os.waitpid(pid, 0)
        else:
            rss = dcurate_pass(src, dst, workers)
        secs = time.perf_counter() - t0
        rss = max(rss, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
        os.write(w, json.dumps([secs, rss]).encode())
        os._exit(0)
    os.close(w)
    _, status = os.waitpid(pid, 0)
    secs, rss = json.loads(os.read(r, 256).decode())
    os.close(r)
    shutil.rmtree(dst, ignore_errors=True)
    if status != 0:
        raise SystemExit(f"{kind} failed")
    return secs, rss


def corpus_size(src: str) -> tuple[int, int]:
    import pyarrow.compute as pc

    from dcurate.io import read_documents

    docs = nbytes = 0
    for b in read_documents(src):
        docs += b.num_rows
        nbytes += int(pc.sum(pc.binary_length(b.column("text"))).as_py())
    return docs, nbytes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", default=str(ROOT.parent / "shared" / "corpus"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--scale", type=int, default=1,
                    help="repeat every shard this many times (symlinks), so that process start-up "
                         "(about a second per pool) is amortised as on real corpora")
    a = ap.parse_args()
    results = {}
    for fmt, sub, plain in (("parquet", "parquet", "plain-parquet"), ("jsonl.zst", "jsonl", "plain-jsonl")):
        src = os.path.join(a.corpus, sub)
        if a.scale > 1:
            scaled = tempfile.mkdtemp(prefix="bench-io-src-")
            ext = ".parquet" if sub == "parquet" else ".jsonl.zst"
            for f in sorted(glob.glob(os.path.join(src, "*" + ext))):
                stem = os.path.basename(f)[: -len(ext)]
                for c in range(a.scale):
                    os.symlink(os.path.abspath(f), os.path.join(scaled, f"{stem}-{c:03d}{ext}"))
            src = scaled
        docs, nbytes = corpus_size(src)
        rows = {}
        for kind, workers in ((plain, 1), (plain, 2), ("dcurate", 1), ("dcurate", 2)):
            runs = [child(kind, src, workers) for _ in range(a.repeat)]
            secs = statistics.median(s for s, _ in runs)
            rss = max(m for _, m in runs)
            cores = workers
            rows[f"{kind} x{workers}"] = {
                "seconds": round(secs, 3),
                "docs_per_s": round(docs / secs),
                "MB_per_s_per_core": round(nbytes / 1e6 / secs / cores, 1),
                "MB_per_s": round(nbytes / 1e6 / secs, 1),
                "peak_rss_MB": round(rss / 1e6),
            }
        d1, d2, p, p2 = rows["dcurate x1"], rows["dcurate x2"], rows[f"{plain} x1"], rows[f"{plain} x2"]
        ratios = {
            "dcurate_1w_over_plain": round(p["seconds"] / d1["seconds"], 3),
            "dcurate_2w_over_1w": round(d1["seconds"] / d2["seconds"], 3),
            "plain_2p_over_1p": round(p["seconds"] / p2["seconds"], 3),
        }
        results[fmt] = {"docs": docs, "text_MB": round(nbytes / 1e6, 1), "runs": rows, "ratios": ratios}
        print(f"\n{fmt}: {docs:,} docs, {nbytes / 1e6:.1f} MB of text (shards x{a.scale}), median of {a.repeat}")
        print(f"{'variant':<22}{'s':>8}{'docs/s':>10}{'MB/s/core':>11}{'peak RSS MB':>13}")
        for k, v in rows.items():
            print(f"{k:<22}{v['seconds']:>8.2f}{v['docs_per_s']:>10,}{v['MB_per_s_per_core']:>11.1f}{v['peak_rss_MB']:>13}")
        print(f"ratios: pass-through / plain = {ratios['dcurate_1w_over_plain']:.2f} (target >= 0.70); "
              f"2 workers / 1 worker = {ratios['dcurate_2w_over_1w']:.2f} (target >= 1.7); "
              f"plain loop in 2 processes / 1 = {ratios['plain_2p_over_1p']:.2f} (the machine's scaling)")
    print(json.dumps(results))


if __name__ == "__main__":
    sys.exit(main())
