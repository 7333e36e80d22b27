"""Tests of the fastText ``quality`` stage, ``train-quality`` and :mod:`dcurate.stages.quality.classifier`."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dcurate.api import curate
from dcurate.core.errors import ModelError, RecipeError
from dcurate.core.params import build
from dcurate.core.stage import REASON_COLUMN, ShardInfo, StageContext
from dcurate.stages.quality import classifier as ftu
from dcurate.stages.quality.stage import Quality, QualityParams, train_quality

SHARED = Path(__file__).resolve().parents[2] / "shared"


def _vocab(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    return [
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9))) for _ in range(n)
    ]


# Class-specific vocabularies plus shared function words (a realistic Zipf-free toy).
HQ_WORDS = ["the", "theorem", "proof", "history", "treaty", "orchestra"] + _vocab(1, 60)
LQ_WORDS = ["buy", "cheap", "spam", "lol", "omg", "winner"] + _vocab(2, 60)
COMMON = ["of", "and", "to", "a", "in", "is", "it", "that"] + _vocab(3, 60)
# Tiny, fast training settings (the defaults are tuned for real corpora).
FAST = dict(epoch=20, dim=16, bucket=5000, lr=0.2, word_ngrams=2)


def make_doc(rng: random.Random, words: list[str], other: list[str]) -> str:
    n = rng.randint(10, 40)
    toks = []
    for _ in range(n):
        r = rng.random()
        toks.append(rng.choice(words) if r < 0.5 else rng.choice(COMMON) if r < 0.9 else rng.choice(other))
    lines = [" ".join(toks[i : i + 6]) for i in range(0, n, 6)]
    return "\n".join(lines)


def labelled(n: int, seed: int = 0, prefix: str = "d") -> pa.Table:
    rng = random.Random(seed)
    ids, texts, labels = [], [], []
    for i in range(n):
        hq = i % 2 == 0
        ids.append(f"{prefix}{i:04d}")
        texts.append(make_doc(rng, HQ_WORDS if hq else LQ_WORDS, LQ_WORDS if hq else HQ_WORDS))
        labels.append("hq" if hq else "lq")
    return pa.table({"id": ids, "text": texts, "label": labels})


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("model")
    pq.write_table(labelled(400), d / "train.parquet")
    out = d / "m.bin"
    train_quality(str(out), input=[str(d / "train.parquet")], holdout=0.25, **FAST)
    return out


def write_shards(tmp_path: Path, table: pa.Table, n_shards: int, name: str = "in") -> Path:
    d = tmp_path / name
    d.mkdir()
    rows = table.num_rows
    for k in range(n_shards):
        lo, hi = k * rows // n_shards, (k + 1) * rows // n_shards
        pq.write_table(table.slice(lo, hi - lo), d / f"part-{k}.parquet")
    return d


def read_out(out: Path) -> pa.Table:
    files = sorted(out.glob("*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files])


def auc(scores, y) -> float:
    s, y = np.asarray(scores), np.asarray(y, bool)
    pos, neg = s[y], s[~y]
    return float(
        ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum())
        / (len(pos) * len(neg))
    )


# -- fasttext_util ----------------------------------------------------------------------------------


def test_preprocess_modes():
    texts = pa.array(["  Hello\nWorld \r\nAgain\n\n", None, "ＡＢＣ\u2028x", ""])
    assert ftu.preprocess(texts, "dclm").to_list() == ["Hello World  Again", "", "ＡＢＣ x", ""]
    assert ftu.preprocess(texts, "lower").to_list()[0] == "hello world  again"
    assert ftu.preprocess(texts, "normalize").to_list()[2] == "abc x"
    # DCLM's own preprocessing: " ".join(text.strip().splitlines())
    raw = "  a\nb\r\nc\rd\x0be\n\nf  "
    assert ftu.preprocess([raw], "dclm").to_list() == [" ".join(raw.strip().splitlines())]
    with pytest.raises(ValueError, match="unknown preprocessing"):
        ftu.preprocess(["x"], "nope")


def test_roc_auc_matches_brute_force():
    rng = np.random.default_rng(1)
    s = rng.integers(0, 20, 300) / 20.0  # many ties
    y = rng.random(300) < 0.4
    assert ftu.roc_auc(s, y) == pytest.approx(auc(s, y), abs=1e-12)
    assert np.isnan(ftu.roc_auc(s, np.ones(300, bool)))


@pytest.mark.parametrize("objective", ["f1", "accuracy"])
def test_calibrate_threshold_is_optimal(objective):
    rng = np.random.default_rng(2)
    y = rng.random(200) < 0.5
    s = np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1).round(3)
    t = ftu.calibrate_threshold(s, y, objective)
    best = max(ftu.binary_metrics(s, y, c)[objective] for c in np.unique(s))
    assert ftu.binary_metrics(s, y, t)[objective] == pytest.approx(best)
    assert not np.any(s == t)  # the cut sits between two scores


@pytest.mark.slow
def test_load_model_errors(tmp_path, model):
    with pytest.raises(ModelError, match="not found: .*nope.bin"):
        ftu.load_model(tmp_path / "nope.bin")
    bad = tmp_path / "corrupt.bin"
    bad.write_bytes(b"this is not a fastText model" * 10)
    with pytest.raises(ModelError, match="corrupt.bin"):
        ftu.load_model(bad)
    m = ftu.load_model(model)
    with pytest.raises(ModelError, match=r"__label__en.*__label__(hq|lq), __label__(hq|lq)"):
        ftu.check_label(m, "__label__en", model)
    with pytest.raises(ModelError, match="did you mean __label__hq"):
        ftu.check_label(m, "hq", model)


def test_predict_batched_and_empty(model):
    m = ftu.load_model(model)
    texts = ftu.preprocess(["the theorem proof\nhistory", "", "   ", "buy cheap spam lol", None])
    p = ftu.predict_many(m, texts, ["__label__hq", "__label__lq"])
    assert p.dtype == np.float32 and p.shape == (5, 2)
    assert p[0, 0] > 0.5 > p[3, 0]
    assert (p[[1, 2, 4]] == 0).all()  # empty documents score 0 for every label
    np.testing.assert_allclose(p[[0, 3]].sum(axis=1), 1.0, atol=1e-4)
    # same as fastText's own predict, one document at a time
    for i in (0, 3):
        labs, probs = m.predict(texts[i], k=-1)
        assert p[i, 0] == pytest.approx(float(dict(zip(labs, probs, strict=True))["__label__hq"]), rel=1e-6)
    # top_k=1: a label outside the top 1 scores 0
    p1 = ftu.predict_proba(m, texts, "__label__hq", k=1)
    assert p1[0] == pytest.approx(p[0, 0]) and p1[3] == 0


# -- train-quality ----------------------------------------------------------------------------------


def test_sidecar_content(model):
    side = json.loads(ftu.sidecar_path(model).read_text())
    assert side["labels"] and set(side["labels"]) == {"__label__hq", "__label__lq"}
    assert side["positive_label"] == "__label__hq"
    assert side["preprocess"] == "dclm"
    tr = side["training"]
    for key in ("lr", "epoch", "wordNgrams", "dim", "minCount", "bucket", "loss", "thread", "seed"):
        assert key in tr
    assert tr["epoch"] == 20 and tr["dim"] == 16 and tr["thread"] == 1 and tr["deterministic"]
    h = side["heldout"]
    assert 60 < h["documents"] < 140  # about 25% of 400, chosen by hash of (seed, id)
    assert tr["trained_on"] + h["documents"] == 400
    assert h["roc_auc"] > 0.95
    for key in ("accuracy", "precision", "recall"):
        assert 0.8 < h["top_label"][key] <= 1.0
    assert 0 < side["threshold"] < 1.001
    assert h["at_threshold"]["f1"] >= h["at_0.5"]["f1"]


@pytest.mark.slow
def test_training_is_deterministic_and_order_independent(tmp_path):
    t = labelled(200, seed=3)
    pq.write_table(t, tmp_path / "a.parquet")
    pq.write_table(t.take(np.random.default_rng(0).permutation(200)), tmp_path / "b.parquet")
    sides = []
    for name in ("a", "b", "a2"):
        src = tmp_path / f"{name[0]}.parquet"
        sides.append(train_quality(str(tmp_path / f"{name}.bin"), input=[str(src)], **FAST))
    assert (tmp_path / "a.bin").read_bytes() == (tmp_path / "a2.bin").read_bytes()
    assert (tmp_path / "a.bin").read_bytes() == (tmp_path / "b.bin").read_bytes()
    assert sides[0]["heldout"] == sides[1]["heldout"]
    other = train_quality(str(tmp_path / "s1.bin"), input=[str(tmp_path / "a.parquet")], seed=1, **FAST)
    assert other["heldout"]["documents"] != sides[0]["heldout"]["documents"] or (
        (tmp_path / "s1.bin").read_bytes() != (tmp_path / "a.bin").read_bytes()
    )


@pytest.mark.slow
def test_train_positive_negative(tmp_path):
    t = labelled(200, seed=5)
    hq = t.filter(pa.compute.equal(t["label"], "hq")).drop_columns(["label"])
    lq = t.filter(pa.compute.equal(t["label"], "lq")).drop_columns(["label"])
    pq.write_table(hq, tmp_path / "pos.parquet")
    pq.write_table(lq, tmp_path / "neg.parquet")
    side = train_quality(
        str(tmp_path / "pn.bin"),
        positive=[str(tmp_path / "pos.parquet")],
        negative=[str(tmp_path / "neg.parquet")],
        threads=2,
        **FAST,
    )
    assert side["training"]["label_counts"] == {"__label__hq": 100, "__label__lq": 100}
    assert side["training"]["thread"] == 2 and side["training"]["deterministic"] is False
    assert side["heldout"]["roc_auc"] > 0.95


def test_train_errors(tmp_path):
    t = labelled(40)
    pq.write_table(t, tmp_path / "t.parquet")
    with pytest.raises(RecipeError, match="--positive"):
        train_quality(str(tmp_path / "x.bin"), positive=[str(tmp_path / "t.parquet")])
    with pytest.raises(Exception, match="no label field 'klass'"):
        train_quality(str(tmp_path / "x.bin"), input=[str(tmp_path / "t.parquet")], label_field="klass")
    with pytest.raises(Exception, match="positive label __label__good .*__label__hq, __label__lq"):
        train_quality(str(tmp_path / "x.bin"), input=[str(tmp_path / "t.parquet")], positive_label="good")
    one = t.filter(pa.compute.equal(t["label"], "hq"))
    pq.write_table(one, tmp_path / "one.parquet")
    with pytest.raises(Exception, match="need at least 2"):
        train_quality(str(tmp_path / "x.bin"), input=[str(tmp_path / "one.parquet")])


# -- the stage --------------------------------------------------------------------------------------


def corpus(n: int = 120, seed: int = 11) -> pa.Table:
    t = labelled(n, seed=seed, prefix="c")
    # shuffle ids so that input order and id order differ
    perm = np.random.default_rng(seed).permutation(n)
    return t.take(perm)


def test_annotate_keeps_everything(tmp_path, model):
    t = corpus()
    d = write_shards(tmp_path, t, 3)
    stats = curate(
        [str(d)], str(tmp_path / "out"), stages=[{"stage": "quality", "model": str(model)}], workers=1
    )
    out = read_out(tmp_path / "out")
    assert out.num_rows == t.num_rows
    assert out.schema.field("quality_score").type == pa.float32()
    assert out["id"].to_pylist() == t["id"].to_pylist()
    assert auc(out["quality_score"].to_numpy(), np.array(out["label"].to_pylist()) == "hq") > 0.95
    assert stats


def test_threshold_and_auto(tmp_path, model):
    t = corpus()
    d = write_shards(tmp_path, t, 2)
    curate([str(d)], str(tmp_path / "a"), stages=[{"stage": "quality", "model": str(model)}], workers=1)
    scores = read_out(tmp_path / "a")["quality_score"].to_numpy()
    side = json.loads(ftu.sidecar_path(model).read_text())
    for thr, name in ((0.5, "t"), ("auto", "auto")):
        value = side["threshold"] if thr == "auto" else thr
        curate(
            [str(d)], str(tmp_path / name), stages=[{"stage": "quality", "model": str(model), "threshold": thr}],
            workers=1, rejected=str(tmp_path / f"{name}-rej"),
        )  # fmt: skip
        kept = read_out(tmp_path / name)
        assert kept["id"].to_pylist() == [
            i for i, s in zip(t["id"].to_pylist(), scores, strict=True) if s >= np.float32(value)
        ]
        rej = pa.concat_tables(
            [pq.read_table(f) for f in sorted((tmp_path / f"{name}-rej").rglob("*.parquet"))]
        )
        assert set(rej[REASON_COLUMN].to_pylist()) == {"quality.below_threshold"}
        assert kept.num_rows + rej.num_rows == t.num_rows


@pytest.mark.slow
def test_keep_top_exact_and_deterministic(tmp_path, model):
    t = corpus(150)
    base = dict(stage="quality", model=str(model), keep_top=0.3)
    outs = []
    for shards, workers in ((1, 1), (4, 2), (3, 1)):
        d = write_shards(tmp_path, t, shards, name=f"in{shards}")
        o = tmp_path / f"o{shards}"
        curate([str(d)], str(o), stages=[base], workers=workers)
        outs.append(read_out(o))
    # exact: round(0.3 * 150) = 45 documents, the highest scores
    ann = tmp_path / "ann"
    curate(
        [str(write_shards(tmp_path, t, 1, "inann"))],
        str(ann),
        stages=[{"stage": "quality", "model": str(model)}],
    )
    a = read_out(ann)
    order = sorted(zip((-a["quality_score"].to_numpy()).tolist(), a["id"].to_pylist(), strict=True))
    expected = {i for _, i in order[:45]}
    for o in outs:
        assert o.num_rows == 45
        assert set(o["id"].to_pylist()) == expected
    # same documents and scores whatever the sharding / worker count
    assert sorted(outs[0]["id"].to_pylist()) == sorted(outs[1]["id"].to_pylist())
    by_id = [dict(zip(o["id"].to_pylist(), o["quality_score"].to_pylist(), strict=True)) for o in outs]
    assert by_id[0] == by_id[1] == by_id[2]


@pytest.mark.slow
def test_keep_top_ties_broken_by_id(tmp_path, model):
    # 12 identical documents (identical scores) + 8 clearly worse: keep-top 0.25 -> 5 of the ties,
    # the 5 smallest ids, whatever the shard order.
    ids = [f"t{i:02d}" for i in range(12)] + [f"z{i:02d}" for i in range(8)]
    texts = ["the theorem proof history"] * 12 + ["buy cheap spam lol omg"] * 8
    perm = np.random.default_rng(4).permutation(20)
    t = pa.table({"id": ids, "text": texts}).take(perm)
    for shards in (1, 3):
        d = write_shards(tmp_path, t, shards, name=f"tie{shards}")
        o = tmp_path / f"tieo{shards}"
        stats = curate(
            [str(d)], str(o), stages=[{"stage": "quality", "model": str(model), "keep_top": 0.25}], workers=2
        )
        assert sorted(read_out(o)["id"].to_pylist()) == ids[:5]
        assert stats["stages"][0]["removed"] == {"quality.below_cutoff": 15}


@pytest.mark.slow
def test_keep_top_edges(tmp_path, model):
    t = corpus(20)
    d = write_shards(tmp_path, t, 2)
    curate(
        [str(d)], str(tmp_path / "all"), stages=[{"stage": "quality", "model": str(model), "keep_top": 1.0}]
    )
    assert read_out(tmp_path / "all").num_rows == 20
    curate(
        [str(d)], str(tmp_path / "few"), stages=[{"stage": "quality", "model": str(model), "keep_top": 0.01}]
    )
    assert read_out(tmp_path / "few").num_rows == 0  # round(0.2) = 0


def test_multiple_labels_one_pass(tmp_path, model):
    t = corpus(30)
    d = write_shards(tmp_path, t, 1)
    stage = {
        "stage": "quality",
        "model": str(model),
        "label": ["__label__hq", "__label__lq"],
        "column": ["hq", "lq"],
    }
    curate([str(d)], str(tmp_path / "o"), stages=[stage])
    o = read_out(tmp_path / "o")
    np.testing.assert_allclose(o["hq"].to_numpy() + o["lq"].to_numpy(), 1.0, atol=1e-4)


def test_direct_process_empty_docs_and_kind(model, tmp_path):
    ctx = StageContext(workdir=tmp_path)
    st = Quality(build(QualityParams, {"model": str(model)}, "t"), ctx)
    assert st.kind == "map"
    assert Quality(build(QualityParams, {"model": str(model), "keep_top": 0.1}, "t"), ctx).kind == "global"
    st.prepare()
    st.setup()
    batch = pa.record_batch({"id": ["a", "b", "c"], "text": ["", None, "the theorem proof"]})
    res = st.process(batch, ShardInfo("s", 0), 0)
    s = res.batch.column("quality_score").to_pylist()
    assert s[0] == 0.0 and s[1] == 0.0 and s[2] > 0.5


@pytest.mark.parametrize(
    "params, match",
    [
        ({}, "give the fastText model"),
        ({"model": "m.bin", "threshold": 0.5, "keep_top": 0.1}, "either threshold or keep_top"),
        ({"model": "m.bin", "threshold": "high"}, "number or 'auto'"),
        ({"model": "m.bin", "label": ["a", "b"]}, "needs 2 column names"),
        ({"model": ["a", "b", "c"], "label": ["a", "b"], "column": ["x", "y", "z"]}, "'label' has 2 entries"),
        ({"model": "m.bin", "keep_top": 0}, "keep_top must be > 0"),
    ],
)
def test_param_errors(params, match):
    with pytest.raises(RecipeError, match=match):
        build(QualityParams, params, "stage 0 (quality)")


@pytest.mark.slow
def test_stage_model_errors(tmp_path, model):
    d = write_shards(tmp_path, corpus(10), 1)
    with pytest.raises(ModelError, match="not found: .*missing.bin"):
        curate(
            [str(d)],
            str(tmp_path / "o1"),
            stages=[{"stage": "quality", "model": str(tmp_path / "missing.bin")}],
        )
    with pytest.raises(ModelError, match=r"'__label__en' is not in fastText model .*labels: "):
        curate(
            [str(d)],
            str(tmp_path / "o2"),
            stages=[{"stage": "quality", "model": str(model), "label": "__label__en"}],
        )
    bare = tmp_path / "bare.bin"
    bare.write_bytes(model.read_bytes())  # no sidecar
    with pytest.raises(ModelError, match="threshold auto needs the sidecar"):
        curate(
            [str(d)],
            str(tmp_path / "o3"),
            stages=[{"stage": "quality", "model": str(bare), "threshold": "auto"}],
        )


@pytest.mark.slow
def test_cli_train_and_score(tmp_path):
    from typer.testing import CliRunner

    from dcurate.cli.app import app

    pq.write_table(labelled(200, seed=9), tmp_path / "train.parquet")
    runner = CliRunner()
    args = ["train-quality", "--input", str(tmp_path / "train.parquet"), "--out", str(tmp_path / "m.bin")]
    args += ["--epoch", "20", "--dim", "16", "--bucket", "5000", "--lr", "0.2", "--word-ngrams", "2"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "ROC AUC" in r.output and "calibrated threshold" in r.output
    d = write_shards(tmp_path, corpus(30), 2)
    r = runner.invoke(
        app,
        ["quality", str(d), str(tmp_path / "o"), "--model", str(tmp_path / "m.bin"), "--threshold", "auto"],
    )
    assert r.exit_code == 0, r.output
    assert 0 < read_out(tmp_path / "o").num_rows < 30
    r = runner.invoke(app, ["quality", str(d), str(tmp_path / "o2"), "--model", str(tmp_path / "nope.bin")])
    assert r.exit_code == 1 and "nope.bin" in r.output


@pytest.mark.slow
@pytest.mark.shared
@pytest.mark.skipif(not (SHARED / "corpus" / "quality").exists(), reason="needs ../shared/corpus/quality")
def test_shared_quality_auc(tmp_path):
    q = SHARED / "corpus" / "quality"
    side = train_quality(str(tmp_path / "m.bin"), input=[str(q / "train.jsonl.zst")])
    assert side["heldout"]["roc_auc"] >= 0.95
    curate(
        [str(q / "test.jsonl.zst")],
        str(tmp_path / "o"),
        stages=[{"stage": "quality", "model": str(tmp_path / "m.bin")}],
    )
    from dcurate.io import read_table

    t = read_table([str(tmp_path / "o" / "test.jsonl.zst")])
    y = np.array(t["label"].to_pylist()) == "hq"
    assert ftu.roc_auc(np.asarray(t["quality_score"].to_pylist()), y) >= 0.95


def test_train_quality_eval_scores_a_held_out_set(tmp_path):
    from typer.testing import CliRunner

    from dcurate.cli.app import app

    pq.write_table(labelled(300), tmp_path / "train.parquet")
    pq.write_table(labelled(100, seed=7, prefix="e"), tmp_path / "eval.parquet")
    args = ["train-quality", "--input", str(tmp_path / "train.parquet"), "--out", str(tmp_path / "m.bin"),
            "--epoch", "20", "--dim", "16", "--bucket", "5000", "--lr", "0.2", "--eval", str(tmp_path / "eval.parquet")]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    line = [x for x in r.output.splitlines() if x.startswith("eval ")][0]
    assert "100 documents (50 positive)" in line
    auc = float(line.split("ROC AUC ")[1].split(";")[0])
    assert auc > 0.9  # the two classes have distinct vocabularies
