#!/usr/bin/env python3
"""Benchmark `dcurate select` (DSIR, ZIP-FIT) against the reference packages on ../shared/corpus/select.

For each target domain: dcurate-DSIR vs data-selection 1.0.3 (HashedNgramDSIR), and dcurate-ZIP-FIT
vs zip-fit 1.0.9 (gzip level 9, the same first N targets, so the scores are identical), all with
k = 400 documents, one core each (dcurate workers=1; data-selection num_proc=1; zip-fit's process
pool limited to one process). Precision and KL reduction come from ../shared/eval/score_select.py.
Times are wall-clock medians of --runs runs, in process, after one untimed warm-up of dcurate
(numba's compiled-kernel cache and imports). Each dcurate call in one process uses distinct
parameters: the runner caches stage objects by parameters within a process. Also one run of dcurate-ZIP-FIT with its defaults
(a seeded sample of 100 targets) and one with 2 workers.

    .venv-bench/bin/python scripts/bench_select.py [--domains wiki,forum,docs] [--runs 3] [--zipfit-targets 20]
    .venv-bench/bin/python scripts/bench_select.py --zipfit-bound    # ZIP-FIT's unavoidable work only
"""

# ruff: noqa: B023  (the lambdas run at once, inside their loop iteration)
from __future__ import annotations

import argparse
import io
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import zstandard

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SEL = SHARED / "corpus" / "select"
SCORE = SHARED / "eval" / "score_select.py"
K = 400


def unzst(src: Path, dst: Path, first: int | None = None) -> Path:
    data = zstandard.ZstdDecompressor().stream_reader(open(src, "rb")).read()
    lines = [x for x in data.decode("utf-8").splitlines() if x.strip()]
    if first is not None:
        lines = lines[:first]
    dst.write_text("\n".join(lines) + "\n")
    return dst


def score(selected: Path, domain: str, target: Path) -> dict:
    out = subprocess.run(
        [
            sys.executable,
            str(SCORE),
            "--selected",
            str(selected),
            "--target-domain",
            domain,
            "--target",
            str(target),
            "--pool",
            str(SEL / "pool.jsonl.zst"),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def quiet(fn):
    buf = io.StringIO()
    with redirect_stdout(buf), redirect_stderr(buf):
        return fn()


CPU: list[float] = []  # CPU seconds (self + reaped children) of the last timed() call, per run


def _cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def timed(fn, runs: int) -> tuple[float, object]:
    """Median wall seconds of ``runs`` calls (CPU seconds of each run go to ``CPU``: on a shared
    machine the per-core comparison uses CPU time, which the load of other processes does not
    inflate)."""
    times, res = [], None
    CPU.clear()
    for _ in range(runs):
        t0, c0 = time.perf_counter(), _cpu()
        res = quiet(fn)
        times.append(time.perf_counter() - t0)
        CPU.append(_cpu() - c0)
    return statistics.median(times), res


def run_dcurate(out: Path, target: Path, workers: int = 1, **params) -> dict:
    from dcurate.api import curate

    if out.exists():
        shutil.rmtree(out)
    return curate(
        str(SEL / "pool.jsonl.zst"),
        str(out),
        stages=[{"stage": "select", "target": str(target), "k": K, **params}],
        workers=workers,
        seed=0,
        progress=False,
    )


def run_data_selection(tmp: Path, pool: Path, target: Path) -> Path:
    from data_selection import HashedNgramDSIR

    cache = tmp / "ds-cache"
    out = tmp / "ds-out"
    for p in (cache, out, tmp / "ds-resample"):
        shutil.rmtree(p, ignore_errors=True)
    np.random.seed(0)  # the package resamples with numpy's global state
    d = HashedNgramDSIR([str(pool)], [str(target)], cache_dir=str(cache), num_proc=1)
    d.fit_importance_estimator(num_tokens_to_fit="auto")
    d.compute_importance_weights()
    d.resample(out_dir=str(out), num_to_sample=K, cache_dir=str(tmp / "ds-resample"))
    return out


def run_zip_fit(tmp: Path, pool: Path, target: Path) -> Path:
    import zip_fit.zipfit as zf

    zf.cpu_count = lambda: 1  # one worker process: a per-core figure
    out = tmp / "zf-out"
    out.mkdir(exist_ok=True)
    zf.ZIPFIT(str(pool), str(target), k=K, output_file=str(out / "top.jsonl"), compress_level=9).run()
    # the package writes only {"text"}; give the scorer ids/domains by matching texts to the pool
    by_text = {}
    for line in pool.read_text().splitlines():
        r = json.loads(line)
        by_text.setdefault(r["text"], r)
    rows = [by_text[json.loads(x)["text"]] for x in (out / "top.jsonl").read_text().splitlines() if x]
    (out / "top.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


def selected_texts(out: Path) -> set[str]:
    sys.path.insert(0, str(SHARED / "eval"))
    from _shards import expand, read_records

    return {r["text"] for p in expand([str(out)]) for r in read_records(p, ["text"])}


def zipfit_bound(domain: str, n_targets: int) -> None:
    """ZIP-FIT's scoring work without either tool's overheads (no runner, no I/O): the reference's
    per-pair ``zlib.compress(x + t, 9)`` loop vs dcurate's scorer with its default engine (the exact
    deflate model) and with ``engine="zlib"`` (the deflate state after x copied per target), CPU
    seconds over the whole pool; the scores of both engines are checked equal."""
    import zlib

    from dcurate.io import read_table
    from dcurate.stages.select.zipfit import TargetSet

    pool = read_table(str(SEL / "pool.jsonl.zst")).column("text").to_pylist()
    targets = read_table(str(SEL / f"target_{domain}.jsonl.zst")).column("text").to_pylist()[:n_targets]
    TargetSet(targets[:2], 9).scores(pool[:2])  # numba kernels loaded, model self-checked
    t0 = time.process_time()
    model_scores = TargetSet(targets, 9).scores(pool)
    ours = time.process_time() - t0
    t0 = time.process_time()
    zlib_scores = TargetSet(targets, 9, engine="zlib").scores(pool)
    ours_zlib = time.process_time() - t0
    assert np.array_equal(model_scores, zlib_scores), "engines disagree"
    tb = [t.encode() for t in targets]
    t0 = time.process_time()
    for x in pool:
        xb = x.encode()
        for t in tb:
            zlib.compress(xb + t, 9, -15)
    ref = time.process_time() - t0
    mx = statistics.mean(len(x.encode()) for x in pool)
    mt = statistics.mean(map(len, tb))
    print(
        f"{domain}: per-pair compress(x + t) {ref:.2f} s; dcurate scorer {ours:.2f} s ({ref / ours:.2f}x), "
        f"with engine=zlib {ours_zlib:.2f} s ({ref / ours_zlib:.2f}x); scores identical "
        f"(mean bytes: pool {mx:.0f}, targets {mt:.0f}, {len(targets)} targets)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--domains", default="wiki,forum,docs")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--zipfit-targets", type=int, default=20)
    ap.add_argument("--skip", default="", help="comma list of: dsir, zipfit, defaults")
    ap.add_argument(
        "--zipfit-bound",
        action="store_true",
        help="only time the per-pair compressions identical ZIP-FIT scores need (no runner, no peer overheads)",
    )
    a = ap.parse_args()
    if a.zipfit_bound:
        for dom in a.domains.split(","):
            zipfit_bound(dom, a.zipfit_targets)
        return
    logging.getLogger("dcurate").setLevel(logging.WARNING)
    skip = set(a.skip.split(","))
    tmp = Path(tempfile.mkdtemp(prefix="bench_select_"))
    pool = unzst(SEL / "pool.jsonl.zst", tmp / "pool.jsonl")
    mb = pool.stat().st_size / 1e6
    rows = []
    try:
        for dom in a.domains.split(","):
            tz = SEL / f"target_{dom}.jsonl.zst"
            tj = unzst(tz, tmp / f"target_{dom}.jsonl")
            if "dsir" not in skip:
                quiet(lambda: run_dcurate(tmp / "warm", tz, method="dsir", k=10))
                t_dc, st = timed(lambda: run_dcurate(tmp / "dc-dsir", tz, method="dsir"), a.runs)
                c_dc = statistics.median(CPU)
                s_dc = score(tmp / "dc-dsir", dom, tz)
                t_ds, out = timed(lambda: run_data_selection(tmp, pool, tj), a.runs)
                c_ds = statistics.median(CPU)
                s_ds = score(out, dom, tz)
                rows.append(
                    dict(
                        domain=dom,
                        method="DSIR",
                        ours=t_dc,
                        ref=t_ds,
                        cpu_ours=c_dc,
                        cpu_ref=c_ds,
                        p_ours=s_dc["precision"],
                        p_ref=s_ds["precision"],
                        kl_ours=s_dc["kl_reduction"],
                        kl_ref=s_ds["kl_reduction"],
                        kl_internal=st["stages"][0].get("kl_reduction"),
                    )
                )
                print(json.dumps(rows[-1]), flush=True)
            if "zipfit" not in skip:
                n = a.zipfit_targets
                tn = unzst(tz, tmp / f"target_{dom}_first{n}.jsonl", first=n)
                quiet(lambda: run_dcurate(tmp / "warm", tn, method="zipfit", num_targets=None, k=10))
                t_dc, _ = timed(
                    lambda: run_dcurate(tmp / "dc-zf", tn, method="zipfit", num_targets=None), a.runs
                )
                c_dc = statistics.median(CPU)
                s_dc = score(tmp / "dc-zf", dom, tz)
                t_2w, _ = timed(
                    lambda: run_dcurate(
                        tmp / "dc-zf2", tn, workers=2, method="zipfit", num_targets=None, min_words=0
                    ),
                    1,
                )
                t_zf, out = timed(lambda: run_zip_fit(tmp, pool, tn), a.runs)
                c_zf = statistics.median(CPU)
                s_zf = score(out, dom, tz)
                agree = len(selected_texts(tmp / "dc-zf") & selected_texts(out)) / K
                rows.append(
                    dict(
                        domain=dom,
                        method=f"ZIP-FIT first {n} targets",
                        ours=t_dc,
                        ours_2w=t_2w,
                        ref=t_zf,
                        cpu_ours=c_dc,
                        cpu_ref=c_zf,
                        p_ours=s_dc["precision"],
                        p_ref=s_zf["precision"],
                        kl_ours=s_dc["kl_reduction"],
                        kl_ref=s_zf["kl_reduction"],
                        same_selection=agree,
                        pairs_per_s=4000 * n / t_dc,
                    )
                )
                print(json.dumps(rows[-1]), flush=True)
            if "defaults" not in skip:
                t, _ = timed(lambda: run_dcurate(tmp / "dc-zf100", tz, workers=2, method="zipfit"), 1)
                s = score(tmp / "dc-zf100", dom, tz)
                rows.append(
                    dict(
                        domain=dom,
                        method="ZIP-FIT default (100 seeded targets, 2 workers)",
                        ours=t,
                        p_ours=s["precision"],
                        kl_ours=s["kl_reduction"],
                    )
                )
                print(json.dumps(rows[-1]), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(
        f"\npool: {mb:.1f} MB, 4,000 documents; k = {K}; machine: {os.cpu_count()} cores; medians of {a.runs} runs"
    )
    print(
        "| target | method | dcurate s | reference s | speed-up (per core) | precision dcurate / ref | KL reduction dcurate / ref |"
    )
    print("|---|---|---:|---:|---:|---|---|")
    for r in rows:
        ours = f"{r['ours']:.2f} ({r['cpu_ours']:.2f})" if "cpu_ours" in r else f"{r['ours']:.2f}"
        ref = f"{r['ref']:.2f} ({r['cpu_ref']:.2f})" if "ref" in r else "-"
        sp = f"{r['cpu_ref'] / r['cpu_ours']:.1f}x" if "ref" in r else "-"
        pr = f"{r['p_ours']:.3f} / {r['p_ref']:.3f}" if "p_ref" in r else f"{r['p_ours']:.3f}"
        kl = f"{r['kl_ours']:.4f} / {r['kl_ref']:.4f}" if "kl_ref" in r else f"{r['kl_ours']:.4f}"
        print(f"| {r['domain']} | {r['method']} | {ours} | {ref} | {sp} | {pr} | {kl} |")
    for r in rows:
        if "same_selection" in r:
            print(
                f"{r['domain']}: ZIP-FIT same selection as the reference {r['same_selection']:.3f}; "
                f"{r['pairs_per_s']:.0f} pairs/s on one core; 2 workers {r['ours_2w']:.2f} s"
            )


if __name__ == "__main__":
    main()
