"""Scale benchmark: the same five-stage recipe over 1x, 4x and 16x ../shared/corpus.

    .venv/bin/python scripts/bench_scale.py [--scales 1,4,16] [--workers 2] [--work /tmp/dcurate-scale]
                                           [--corpus ../shared/corpus] [--json results.json]

Corpus of scale N: N copies of the shared corpus (21,574 documents, 68 MB of text). Copy 0 is the
corpus itself; copy c > 0 replaces each word with probability 0.2 by a random word of the corpus's
vocabulary (seeded by the copy and the document), which changes about two thirds of a document's
5-word shingles, so copies are distinct text (Jaccard to their source ~0.2, far below the dedup
threshold). In every copy a further 5 % of documents are replaced by a light edit (2 % of words)
of another document of the same copy: a controlled near-duplicate rate on top of the corpus's
natural duplicates. Shards: 8 Parquet files per copy, so the number of tasks grows with N.

Recipe: filter (default preset) -> dedup (0.8) -> quality (fastText trained here on
../shared/corpus/quality/train, keep_top 0.8) -> select (DSIR to the wiki target, fraction 0.5)
-> mix (UniMax, 25 % of the input's documents). It runs as `dcurate run` in a child process; the
script records per stage the documents in, the stage's task seconds (CPU-bound, so one task second
is one core second) and docs/s per core, and for the run: wall seconds, CPU seconds (user+sys of
the run's process tree), peak RSS of the driver process and of the largest worker process, and the
peak bytes of the work folder per input document, and the bytes the run's processes read and
wrote through system calls (psutil ``read_chars``/``write_chars``: what would cross the network
with the work folder on remote storage), all polled every 0.5 s while the run lasts (intermediates
are removed at the end, and a process's last half second is not seen: lower bounds). The driver also runs tasks itself (workers - 1 pool
processes + the driver), so its RSS includes a task's.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORD = re.compile(r"(\s+)")


def _perturb(text: str, rng, vocab: list[str], p: float) -> str:
    parts = WORD.split(text)  # words at even positions, separators at odd ones
    n_words = (len(parts) + 1) // 2
    if n_words == 0:
        return text
    hit = (rng.random(n_words) < p).nonzero()[0]
    if len(hit):
        picks = rng.integers(0, len(vocab), len(hit))
        for w, v in zip(hit.tolist(), picks.tolist(), strict=True):
            parts[2 * w] = vocab[v]
    return "".join(parts)


def make_corpus(src: Path, dst: Path, scale: int, seed: int = 0, near_dup_rate: float = 0.05) -> int:
    """Write ``scale`` copies of ``src``'s Parquet shards under ``dst``; returns the document count."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    shards = sorted((src / "parquet").glob("*.parquet"))
    done = dst / ".complete"
    if done.exists():
        return int(done.read_text())
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    tables = [pq.read_table(s) for s in shards]
    allt = pa.concat_tables(tables)
    words = allt.column("text").to_pylist()
    rng = np.random.default_rng(seed)
    sample = [words[i] for i in rng.choice(len(words), 2000, replace=False)]
    vocab = sorted({w for t in sample for w in t.split() if w.isalpha()})
    total = 0
    for c in range(scale):
        for k, t in enumerate(tables):
            ids = t.column("id").to_pylist()
            texts = t.column("text").to_pylist()
            if c > 0:
                texts = [
                    _perturb(x, np.random.default_rng([seed, c, k, i]), vocab, 0.2) for i, x in enumerate(texts)
                ]
            r = np.random.default_rng([seed, c, k, 1 << 20])
            n = len(texts)
            dups = r.choice(n, int(round(near_dup_rate * n)), replace=False)
            srcs = r.integers(0, n, len(dups))
            for d, s in zip(dups.tolist(), srcs.tolist(), strict=True):
                if d != s:
                    texts[d] = _perturb(texts[s], np.random.default_rng([seed, c, k, d, 7]), vocab, 0.02)
            out = t.set_column(t.schema.get_field_index("text"), "text", pa.array(texts, pa.string()))
            out = out.set_column(out.schema.get_field_index("id"), "id", pa.array([f"{x}#c{c}" for x in ids]))
            pq.write_table(out, dst / f"c{c:02d}-{shards[k].name}", compression="zstd", row_group_size=2000)
            total += n
    done.write_text(str(total))
    return total


def train_model(corpus: Path, work: Path) -> Path:
    model = work / "quality.bin"
    if not model.exists():
        subprocess.run(
            [sys.executable, "-m", "dcurate", "train-quality", "--input", str(corpus / "quality/train.jsonl.zst"),
             "--label-field", "label", "--out", str(model)],
            check=True, stdout=subprocess.DEVNULL,
        )
    return model


def recipe(inp: Path, out: Path, workdir: Path, model: Path, corpus: Path, n_docs: int, workers: int) -> str:
    stages = [
        {"stage": "filter"},
        {"stage": "dedup", "threshold": 0.8},
        {"stage": "quality", "model": str(model), "label": "__label__hq", "keep_top": 0.8},
        {"stage": "select", "method": "dsir", "target": str(corpus / "select/target_wiki.jsonl.zst"),
         "fraction": 0.5},
        {"stage": "mix", "unimax": True, "docs": n_docs // 4, "max_epochs": 1},
    ]
    doc = {"input": str(inp), "output": str(out), "workdir": str(workdir), "seed": 0, "workers": workers,
           "progress": False, "stages": stages}
    path = out.parent / (out.name + ".json")  # JSON is YAML
    path.write_text(json.dumps(doc, indent=1))
    return str(path)


def _tree_bytes(path: Path) -> int:
    n = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                n += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return n


def _cpu_clock_env(folder: Path) -> dict[str, str]:
    """Environment in which every process of the run (driver, fork server, workers) times with
    ``time.process_time``: the per-stage seconds of the run summary become CPU seconds, so a
    machine shared with other jobs does not inflate them (wall time does not measure cost there)."""
    d = folder / "cpu-clock"
    d.mkdir(exist_ok=True)
    (d / "sitecustomize.py").write_text(
        "import time\ntime.perf_counter = time.process_time  # scripts/bench_scale.py: CPU seconds\n"
    )
    path = os.pathsep.join([str(d)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    return dict(os.environ, PYTHONPATH=path)


def run_one(rec: str, out: Path, workdir: Path) -> dict:
    """Run the recipe in a child process; poll its process tree every 0.5 s for peak RSS (the
    driver, and each worker) and CPU seconds, and the work folder for its peak size."""
    import psutil

    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(workdir, ignore_errors=True)
    peak = {"bytes": 0, "driver": 0, "worker": 0}
    cpu: dict[int, float] = {}
    io_rw: dict[int, tuple[int, int]] = {}
    stop = threading.Event()
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "dcurate", "-v", "run", rec], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_cpu_clock_env(workdir.parent))

    def poll() -> None:
        try:
            root = psutil.Process(proc.pid)
        except psutil.NoSuchProcess:
            return
        while not stop.wait(0.5):
            peak["bytes"] = max(peak["bytes"], _tree_bytes(workdir))
            try:
                procs = [root] + root.children(recursive=True)
            except psutil.NoSuchProcess:
                return
            for p in procs:
                try:
                    rss = p.memory_info().rss
                    t = p.cpu_times()
                    io = p.io_counters()
                except psutil.NoSuchProcess:
                    continue
                cpu[p.pid] = t.user + t.system
                io_rw[p.pid] = (io.read_chars, io.write_chars)
                key = "driver" if p.pid == proc.pid else "worker"
                peak[key] = max(peak[key], rss)

    th = threading.Thread(target=poll, daemon=True)
    th.start()
    _, err = proc.communicate()
    wall = time.perf_counter() - t0
    stop.set()
    th.join()
    if proc.returncode != 0:
        sys.exit(f"dcurate run failed:\n{err[-2000:]}")
    for cand in (out / ".dcurate" / "stats.json", out / "stats.json"):
        if cand.exists():
            summary = json.loads(cand.read_text())
            break
    else:
        sys.exit(f"no run summary under {out}")
    reduce_s: dict[str, float] = {}
    for name, sec in re.findall(r"dcurate: (\S+) reduce \d+/\d+ in ([0-9.]+) s", err):
        reduce_s[name] = reduce_s.get(name, 0.0) + float(sec)
    return {"summary": summary, "reduce_s": reduce_s, "wall_s": wall, "cpu_s": sum(cpu.values()), "work_peak_bytes": peak["bytes"],
            "rss_driver": peak["driver"], "rss_worker": peak["worker"],
            "read_bytes": sum(r for r, _ in io_rw.values()), "written_bytes": sum(w for _, w in io_rw.values())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scales", default="1,4,16")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--corpus", default=str(ROOT.parent / "shared" / "corpus"))
    ap.add_argument("--work", default="/tmp/dcurate-scale")
    ap.add_argument("--json", default=None, help="Also write the results here.")
    ap.add_argument("--keep", action="store_true", help="Keep the generated corpora (reused by later runs).")
    a = ap.parse_args()
    corpus, work = Path(a.corpus), Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    model = train_model(corpus, work)
    rows = []
    for scale in [int(x) for x in a.scales.split(",")]:
        t0 = time.perf_counter()
        n = make_corpus(corpus, work / f"corpus-{scale}x", scale)
        gen = time.perf_counter() - t0
        out, wd = work / f"out-{scale}x", work / f"work-{scale}x"
        r = run_one(recipe(work / f"corpus-{scale}x", out, wd, model, corpus, n, a.workers), out, wd)
        s = r["summary"]
        row = {
            "scale": scale, "docs": n, "gen_s": round(gen, 1), "wall_s": round(r["wall_s"], 1),
            "cpu_s": round(r["cpu_s"], 1), "workers": s["workers"], "docs_out": s["docs_out"],
            "rss_driver_mb": round(r["rss_driver"] / 1e6, 1), "rss_worker_mb": round(r["rss_worker"] / 1e6, 1),
            "work_peak_bytes": r["work_peak_bytes"], "work_bytes_per_doc": round(r["work_peak_bytes"] / n, 1),
            "read_bytes_per_doc": round(r["read_bytes"] / n, 1), "written_bytes_per_doc": round(r["written_bytes"] / n, 1),
            "stages": [
                {"stage": st["stage"], "docs_in": st["docs_in"], "docs_out": st["docs_out"],
                 "cpu_s": st["seconds"], "driver_reduce_cpu_s": round(r["reduce_s"].get(st["stage"], 0.0), 3),
                 "docs_per_s_core": round(st["docs_in"] / st["seconds"]) if st["seconds"] else None}
                for st in s["stages"]
            ],
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
        if not a.keep:
            shutil.rmtree(work / f"corpus-{scale}x", ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(wd, ignore_errors=True)
    print()
    print("| scale | docs | wall s | CPU s | " + " | ".join(f"{st['stage']} docs/s/core" for st in rows[0]["stages"])
          + " | driver RSS MB | worker RSS MB | work bytes/doc | read bytes/doc | written bytes/doc |")
    print("|" + "---:|" * (9 + len(rows[0]["stages"])))
    for r in rows:
        print(f"| {r['scale']}x | {r['docs']:,} | {r['wall_s']} | {r['cpu_s']} | "
              + " | ".join(f"{st['docs_per_s_core']:,}" if st["docs_per_s_core"] else "-" for st in r["stages"])
              + f" | {r['rss_driver_mb']} | {r['rss_worker_mb']} | {r['work_bytes_per_doc']:,} "
              f"| {r['read_bytes_per_doc']:,} | {r['written_bytes_per_doc']:,} |")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
