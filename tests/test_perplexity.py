"""Tests of the perplexity stage (map and global modes) and the train-lm command."""

from __future__ import annotations

import glob
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dcurate.core import params as P
from dcurate.core.errors import DcurateError, ModelError, RecipeError
from dcurate.core.stage import REASON_COLUMN, ShardInfo, StageContext
from dcurate.stages.perplexity import lm
from dcurate.stages.perplexity.stage import Perplexity, PerplexityParams

TRAIN = [
    "the cat sat on the mat",
    "the dog sat on the log",
    "a cat and a dog",
    "the cat saw the dog\nthe dog saw the cat",
    "on the mat sat a cat",
] * 3

DOCS = [
    "the cat sat on the mat",
    "zebra quantum xylophone",
    "",
    "the dog sat on the mat\n\nthe cat sat",
    "a cat saw a log",
    "mat the on sat cat the",
    "   \n  ",
    "the cat and the dog sat on the log",
]


@pytest.fixture
def arpa(tmp_path) -> Path:
    path = tmp_path / "lm.arpa"
    lm.write_arpa(lm.train([TRAIN], order=3), path)
    return path


def make(arpa: Path, tmp_path: Path, **kw) -> Perplexity:
    params = P.build(PerplexityParams, {"lm": str(arpa), "backend": "builtin", **kw}, "test")
    ctx = StageContext(workdir=tmp_path / "work")
    ctx.workdir.mkdir(exist_ok=True)
    st = Perplexity(params, ctx)
    st.prepare()
    st.setup()
    return st


def batch(texts) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict({"id": [f"d{i}" for i in range(len(texts))], "text": texts})


def expected_ppl(arpa: Path, text: str) -> float:
    """Independent of the stage: score each non-blank line with the ARPA model directly."""
    model = lm.read_arpa(arpa)
    total, n = 0.0, 0
    for line in text.split("\n"):
        words = lm.Tokenizer().sentences([line]).tokens.to_list()
        if not words:
            continue
        s, c = model.score_sentences(lm.Tokenizer().sentences([line]))
        total += s[0]
        n += int(c[0])
        assert c[0] == len(words[0]) + 1
    return 10 ** (-total / n) if n else math.nan


def test_annotate_only(arpa, tmp_path):
    st = make(arpa, tmp_path)
    assert st.kind == "map"
    res = st.process(batch(DOCS), ShardInfo("s", 0), 0)
    assert res.dropped is None and res.batch.num_rows == len(DOCS)
    col = res.batch.column("perplexity")
    assert col.type == pa.float64()
    vals = col.to_pylist()
    assert vals[2] is None and vals[6] is None  # no tokens -> null
    for text, v in zip(DOCS, vals, strict=True):
        if v is not None:
            assert v == pytest.approx(expected_ppl(arpa, text), rel=1e-12)
    # in-domain text is more likely than unknown words
    assert vals[0] < vals[1]
    assert res.counters["empty_documents"] == 2


def test_kenlm_backend_agrees(arpa, tmp_path):
    pytest.importorskip("kenlm")
    b = make(arpa, tmp_path).process(batch(DOCS), ShardInfo("s", 0), 0).batch.column("perplexity").to_pylist()
    k = make(arpa, tmp_path, backend="kenlm").process(batch(DOCS), ShardInfo("s", 0), 0)
    k = k.batch.column("perplexity").to_pylist()
    for x, y in zip(b, k, strict=True):
        assert (x is None) == (y is None)
        if x is not None:
            assert abs(x - y) / y < 1e-4


def test_max_perplexity(arpa, tmp_path):
    st = make(arpa, tmp_path)
    ppl = st.process(batch(DOCS), ShardInfo("s", 0), 0).batch.column("perplexity").to_pylist()
    limit = sorted(v for v in ppl if v is not None)[2]
    res = make(arpa, tmp_path, max_perplexity=limit).process(batch(DOCS), ShardInfo("s", 0), 0)
    kept = res.batch.column("id").to_pylist()
    assert kept == [f"d{i}" for i, v in enumerate(ppl) if v is not None and v <= limit]
    reasons = dict(
        zip(res.dropped.column("id").to_pylist(), res.dropped.column(REASON_COLUMN).to_pylist(), strict=True)
    )
    assert reasons["d2"] == reasons["d6"] == "perplexity.empty"
    assert all(r == "perplexity.max_perplexity" for k, r in reasons.items() if k not in ("d2", "d6"))


def test_buckets_with_explicit_cutoffs(arpa, tmp_path):
    st = make(arpa, tmp_path, buckets="head,middle,tail", cutoffs="50,200")
    assert st.kind == "map"
    out = st.process(batch(DOCS), ShardInfo("s", 0), 0).batch
    for v, b in zip(
        out.column("perplexity").to_pylist(), out.column("perplexity_bucket").to_pylist(), strict=True
    ):
        want = None if v is None else ("head" if v < 50 else "middle" if v < 200 else "tail")
        assert b == want


def run_global(st: Perplexity, shards: list[list[str]], rows_per_batch: int = 3) -> list[pa.RecordBatch]:
    """scan -> reduce -> apply as the runner does, with several shards and batches."""
    infos = [ShardInfo(f"s{i}", i) for i in range(len(shards))]
    batches = [[batch(t).slice(j, rows_per_batch) for j in range(0, len(t), rows_per_batch)] for t in shards]
    partials = [(info, st.scan(iter(bs), info, 0, None)) for info, bs in zip(infos, batches, strict=True)]
    plan = st.reduce(partials, 0, None)
    st._plan = plan
    out = []
    for info, bs in zip(infos, batches, strict=True):
        pos = 0
        for b in bs:
            out.append(st.apply(b, info, pos, plan))
            pos += b.num_rows
    return out


def test_percentile_buckets_are_corpus_wide(tmp_path, arpa):
    texts = [" ".join(["the cat sat on the mat"][0].split()[: 1 + i % 6]) + " dog" * i for i in range(10)]
    st = make(arpa, tmp_path, buckets="head,middle,tail")
    assert st.kind == "global"
    results = run_global(st, [texts[:4], texts[4:]])
    got = pa.concat_tables([pa.Table.from_batches([r.batch]) for r in results])
    ppl = np.array(got.column("perplexity").to_pylist())
    assert len(set(ppl)) == 10
    cut = st._plan["cutoffs"]
    assert cut == pytest.approx(list(np.percentile(ppl, [30, 60])))
    buckets = got.column("perplexity_bucket").to_pylist()
    assert buckets.count("head") == 3 and buckets.count("middle") == 3 and buckets.count("tail") == 4
    order = np.argsort(ppl)
    assert [buckets[i] for i in order] == ["head"] * 3 + ["middle"] * 3 + ["tail"] * 4
    assert st.finish(st._plan)["cutoffs"] == cut


def test_keep_top_exact_with_ties_across_shards(tmp_path, arpa):
    good, mid, bad = "the cat sat on the mat", "a dog and a cat", "zebra quantum"
    shard0 = [bad, mid, good, "", mid]
    shard1 = [mid, good, bad, mid, bad]
    st = make(arpa, tmp_path, keep_top=0.4)  # 10 documents -> exactly 4 kept
    one = st.scores(batch([good, mid, bad]))
    assert one[0] < one[1] < one[2]
    results = run_global(st, [shard0, shard1], rows_per_batch=2)
    kept = [(r.batch.column("id").to_pylist()) for r in results]
    # ranking: the two 'good' (s0:d2, s1:d1), then the 'mid' ties by id, then input order:
    # s1:d0, s0:d1, s1:d3, s0:d4 (core.topk's rule; before it, ties went in input order)
    assert kept == [["d1"], ["d2"], [], ["d0", "d1"], [], []]
    # the plan layout is part of the stage key: a run interrupted under an older layout restarts
    from dcurate.core import topk

    assert st.fingerprint()["topk"] == topk.FORMAT and "topk" not in make(arpa, tmp_path).fingerprint()
    stats = st.finish(st._plan)
    assert stats["kept_top"] == 4 and stats["threshold"] == pytest.approx(float(one[1]))
    dropped = [
        (i, r)
        for res in results
        if res.dropped is not None
        for i, r in zip(
            res.dropped.column("id").to_pylist(), res.dropped.column(REASON_COLUMN).to_pylist(), strict=True
        )
    ]
    assert dropped == [
        ("d0", "perplexity.below_cutoff"),
        ("d3", "perplexity.empty"),
        ("d4", "perplexity.below_cutoff"),
        ("d2", "perplexity.below_cutoff"),
        ("d3", "perplexity.below_cutoff"),
        ("d4", "perplexity.below_cutoff"),
    ]


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"buckets": "head,tail", "cutoffs": "1,2"}, "2 bucket names need 1 cut-offs"),
        ({"buckets": "head,middle,tail", "percentiles": "30,130"}, "between 0 and 100"),
        ({"buckets": "a,b,c", "cutoffs": "5,2"}, "must increase"),
        ({"cutoffs": "1,2"}, "need bucket names"),
        ({"keep_top": 0.1, "max_perplexity": 100}, "either keep_top or max_perplexity"),
        ({"keep_top": 0}, "keep_top must be > 0"),
        ({"backend": "gpu"}, "must be one of"),
    ],
)
def test_param_errors(kw, match):
    with pytest.raises(RecipeError, match=match):
        P.build(PerplexityParams, {"lm": "x.arpa", **kw}, "stage 1 (perplexity)")


def test_model_errors(tmp_path, arpa):
    with pytest.raises(ModelError, match="not found"):
        make(tmp_path / "nope.arpa", tmp_path)
    binary = tmp_path / "lm.bin"
    binary.write_bytes(b"mmap lm http://kheafield.com/code format version 5\x00\x01")
    with pytest.raises(ModelError, match="not an ARPA file"):
        make(binary, tmp_path)
    bad = tmp_path / "bad.arpa"
    bad.write_text(arpa.read_text().replace("\\2-grams:", "\\3-grams:"))
    with pytest.raises(ModelError, match=r"bad\.arpa:\d+: expected section header"):
        make(bad, tmp_path)


# -- end to end -----------------------------------------------------------------------------------


def write_corpus(d: Path) -> list[str]:
    d.mkdir(parents=True, exist_ok=True)
    texts = DOCS * 3
    for i in range(3):
        part = texts[i * 8 : (i + 1) * 8]
        pq.write_table(
            pa.table({"id": [f"p{i}-{j}" for j in range(len(part))], "text": part}), d / f"part-{i}.parquet"
        )
    return texts


def read_out(d: Path) -> pa.Table:
    return pa.concat_tables([pq.read_table(f) for f in sorted(glob.glob(str(d / "*.parquet")))])


def test_end_to_end_api(tmp_path, arpa):
    from dcurate import api
    write_corpus(tmp_path / "in")
    stage = {
        "stage": "perplexity",
        "lm": str(arpa),
        "backend": "builtin",
        "keep_top": 0.5,
        "buckets": ["head", "middle", "tail"],
    }
    s1 = api.curate(str(tmp_path / "in"), str(tmp_path / "o1"), [stage], workers=1)
    api.curate(str(tmp_path / "in"), str(tmp_path / "o2"), [stage], workers=2)
    t1, t2 = read_out(tmp_path / "o1"), read_out(tmp_path / "o2")
    assert t1.equals(t2)
    assert t1.num_rows == 12  # round(0.5 * 24)
    assert t1.column("perplexity").null_count == 0
    assert set(t1.column("perplexity_bucket").to_pylist()) <= {"head", "middle", "tail"}
    assert s1 is not None


@pytest.mark.slow
def test_end_to_end_cli(tmp_path):
    typer_testing = pytest.importorskip("typer.testing")
    from dcurate.cli.app import app

    runner = typer_testing.CliRunner()
    ref = tmp_path / "ref"
    ref.mkdir()
    pq.write_table(pa.table({"id": [str(i) for i in range(len(TRAIN))], "text": TRAIN}), ref / "ref.parquet")
    out = tmp_path / "m.arpa"
    r = runner.invoke(
        app, ["train-lm", "--input", str(ref), "--order", "3", "--out", str(out), "--prune", "0,0,1"]
    )
    assert r.exit_code == 0, r.output
    assert "order 3" in r.output and out.exists() and lm.read_sidecar(out)["prune"] == [0, 0, 1]
    write_corpus(tmp_path / "in")
    r = runner.invoke(
        app,
        [
            "perplexity",
            str(tmp_path / "in"),
            str(tmp_path / "o"),
            "--lm",
            str(out),
            "--backend",
            "builtin",
            "--max-perplexity",
            "1e9",
        ],
    )
    assert r.exit_code == 0, r.output
    t = read_out(tmp_path / "o")
    assert t.num_rows == 18 and t.column("perplexity").null_count == 0  # the 6 empty documents dropped
    r = runner.invoke(
        app,
        ["perplexity", str(tmp_path / "in"), str(tmp_path / "o3"), "--lm", str(tmp_path / "missing.arpa")],
    )
    assert r.exit_code == 1 and "missing.arpa" in r.output
    r = runner.invoke(
        app, ["train-lm", "--input", str(ref), "--order", "3", "--out", str(out), "--prune", "1,x"]
    )
    assert r.exit_code == 2 and "--prune" in r.output


def test_errors_are_dcurate_errors():
    assert issubclass(ModelError, DcurateError)
