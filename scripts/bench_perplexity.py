"""Benchmark of ``dcurate train-lm`` and the ``perplexity`` stage on ../shared/corpus/parquet.

* trains an order-N modified Kneser-Ney LM on the wiki domain (even-numbered wiki documents;
  the odd-numbered ones are held out and scored with everything else);
* reports per-domain median perplexity and the ROC AUC of (low) perplexity separating wiki/books
  (high quality) from forum/short/legal/code/docs;
* throughput, median of --runs runs, one process, one core: the perplexity stage with the kenlm
  backend vs bare ``kenlm.Model.score`` over the same normalised lines (target >= 0.80; given as
  ``str``, and, as the stage does, as UTF-8 ``bytes``, which ``score`` takes without encoding), and
  the builtin scorer relative to kenlm.

Usage: .venv-bench/bin/python scripts/bench_perplexity.py [--order 5] [--runs 3]
"""

from __future__ import annotations

import argparse
import glob
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dcurate.core import params as P
from dcurate.core.stage import ShardInfo, StageContext
from dcurate.stages.perplexity import lm
from dcurate.stages.perplexity.stage import Perplexity, PerplexityParams

SHARED = Path(__file__).resolve().parents[2] / "shared"
HQ = {"wiki", "books"}
LQ = {"forum", "short", "legal", "code", "docs"}


def roc_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(score_pos > score_neg) + 0.5 P(equal), by ranks."""
    s = np.concatenate([pos, neg])
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    # average ranks for ties
    _, first, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def stage(arpa: str, backend: str, work: Path) -> Perplexity:
    st = Perplexity(P.build(PerplexityParams, {"lm": arpa, "backend": backend}, "bench"), StageContext(workdir=work))
    work.mkdir(parents=True, exist_ok=True)
    st.prepare()
    st.setup()
    return st


def batches(table: pa.Table, rows: int = 1000) -> list[pa.RecordBatch]:
    return table.to_batches(max_chunksize=rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--order", type=int, default=5)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--corpus", default=str(SHARED / "corpus" / "parquet"))
    args = ap.parse_args()

    t = pa.concat_tables(
        [
            pq.read_table(f, columns=["id", "text", "domain"])
            for f in sorted(glob.glob(args.corpus + "/*.parquet"))
        ]
    )
    is_wiki = pc.equal(t["domain"], "wiki").to_numpy(zero_copy_only=False)
    wiki_rank = np.cumsum(is_wiki) - 1
    train_mask = is_wiki & (wiki_rank % 2 == 0)
    train = t.filter(pa.array(train_mask))
    evalt = t.filter(pa.array(~train_mask))
    tmp = Path(tempfile.mkdtemp(prefix="bench_ppl_"))
    arpa = str(tmp / "wiki.arpa")

    t0 = time.perf_counter()
    model = lm.train(train.column("text").chunks, order=args.order)
    train_s = time.perf_counter() - t0
    info = lm.write_arpa(model, arpa)
    write_s = time.perf_counter() - t0 - train_s
    print(
        f"train-lm: {train.num_rows} wiki docs, {info['tokens']} tokens, order {args.order}, counts {info['counts']}, "
        f"estimate {train_s:.1f}s + ARPA write {write_s:.1f}s",
        flush=True,
    )

    import kenlm

    st_k = stage(arpa, "kenlm", tmp / "wk")
    st_b = stage(arpa, "builtin", tmp / "wb")
    text_mb = sum(len(s.encode()) for s in evalt.column("text").to_pylist()) / 1e6
    bs = batches(evalt.select(["id", "text"]))

    def run_stage(st):
        return np.concatenate(
            [
                st.process(b, ShardInfo("x", 0), 0).batch.column("perplexity").to_numpy(zero_copy_only=False)
                for b in bs
            ]
        )

    # bare kenlm over the same normalised lines (tokenisation done beforehand, not timed)
    tok = lm.Tokenizer()
    pre = [tok.sentences(b.column("text")) for b in bs]
    lines = [s.joined() for s in pre]
    lines_b = [s.encoded() for s in pre]  # the same lines as UTF-8 bytes (score() skips encoding)
    km = kenlm.Model(arpa)

    def run_bare(src=lines):
        out = []
        for ls in src:
            score = km.score
            out.append([score(s, True, True) for s in ls])
        return out

    timings: dict[str, list[float]] = {
        "stage_kenlm": [],
        "bare_kenlm": [],
        "bare_kenlm_bytes": [],
        "stage_builtin": [],
    }
    ppl_k = ppl_b = None
    for _ in range(args.runs):
        t0 = time.perf_counter()
        ppl_k = run_stage(st_k)
        timings["stage_kenlm"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        run_bare()
        timings["bare_kenlm"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        run_bare(lines_b)
        timings["bare_kenlm_bytes"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ppl_b = run_stage(st_b)
        timings["stage_builtin"].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in timings.items()}
    both = ~np.isnan(ppl_k)
    rel = float(np.max(np.abs(ppl_b[both] - ppl_k[both]) / ppl_k[both]))

    domains = np.array(evalt.column("domain").to_pylist())
    per_domain = {}
    for d in sorted(set(domains)):
        v = ppl_k[(domains == d) & both]
        per_domain[d] = {
            "docs": int((domains == d).sum()),
            "scored": int(len(v)),
            "median_perplexity": round(float(np.median(v)), 1),
        }
    hq = np.isin(domains, list(HQ)) & both
    lq = np.isin(domains, list(LQ)) & both
    auc = roc_auc(-ppl_k[hq], -ppl_k[lq])
    res = {
        "order": args.order,
        "train_docs": train.num_rows,
        "eval_docs": evalt.num_rows,
        "eval_text_mb": round(text_mb, 2),
        "per_domain": per_domain,
        "roc_auc_hq_vs_lq": round(auc, 4),
        "builtin_vs_kenlm_max_rel_err": rel,
        "seconds_median": {k: round(v, 3) for k, v in med.items()},
        "mb_per_s": {k: round(text_mb / v, 2) for k, v in med.items()},
        "stage_kenlm_vs_bare_kenlm": round(med["bare_kenlm"] / med["stage_kenlm"], 3),
        "stage_kenlm_vs_bare_kenlm_bytes": round(med["bare_kenlm_bytes"] / med["stage_kenlm"], 3),
        "builtin_vs_kenlm_stage": round(med["stage_kenlm"] / med["stage_builtin"], 3),
        "runs": args.runs,
    }
    print("domain   docs  median perplexity")
    for d, v in per_domain.items():
        print(f"{d:8s} {v['docs']:5d}  {v['median_perplexity']:.1f}")
    print(f"ROC AUC (low perplexity = wiki/books vs forum/short/legal/code/docs): {auc:.4f}")
    print(
        f"throughput over {text_mb:.1f} MB (median of {args.runs}): stage kenlm {res['mb_per_s']['stage_kenlm']} MB/s, "
        f"bare kenlm {res['mb_per_s']['bare_kenlm']} MB/s (ratio {res['stage_kenlm_vs_bare_kenlm']}), "
        f"bare kenlm over bytes {res['mb_per_s']['bare_kenlm_bytes']} MB/s "
        f"(ratio {res['stage_kenlm_vs_bare_kenlm_bytes']}), "
        f"stage builtin {res['mb_per_s']['stage_builtin']} MB/s ({res['builtin_vs_kenlm_stage']}x kenlm stage)"
    )
    print(json.dumps(res))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
