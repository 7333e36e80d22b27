"""Tests of the ``mix`` stage: exact per-domain counts, epochs, determinism, bad input."""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dcurate.core import params as P
from dcurate.core.errors import InputError, PlanError, RecipeError
from dcurate.core.stage import ShardInfo, StageContext
from dcurate.stages.mix.stage import (
    EPOCH_COLUMN,
    Mix,
    MixParams,
    apportion,
    selection_keys,
    temperature_shares,
    unimax_budget,
)

SHARED = Path(__file__).resolve().parents[2] / "shared"

# a small corpus with unequal domains: a 60, b 25, c 10, d 5 documents
SIZES = {"a": 60, "b": 25, "c": 10, "d": 5}


def corpus() -> list[dict]:
    rows = []
    for dom, n in SIZES.items():
        for i in range(n):
            rows.append({"id": f"{dom}-{i:03d}", "text": f"{dom} " + "x" * (4 * (i % 7) + 3), "domain": dom})
    rng = np.random.default_rng(1)
    return [rows[i] for i in rng.permutation(len(rows))]


def shards_of(rows: list[dict], cuts: list[int], batch_size: int = 7) -> list[list[pa.RecordBatch]]:
    """Cut ``rows`` into shards at ``cuts``, each a list of record batches."""
    out = []
    bounds = [0, *cuts, len(rows)]
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        part = rows[lo:hi]
        batches = [
            pa.RecordBatch.from_pylist(part[s : s + batch_size]) for s in range(0, len(part), batch_size)
        ]
        out.append(batches)
    return out


def make(tmp_path: Path, seed: int = 0, **kw) -> Mix:
    params = P.build(MixParams, kw, "test")
    ctx = StageContext(seed=seed, workdir=tmp_path / "work", out_dir=tmp_path / "out")
    return Mix(params, ctx)


def run_stage(stage: Mix, shards: list[list[pa.RecordBatch]], paths: list[str] | None = None):
    """Drive the stage's phases like the runner does; return (kept table, dropped rows, plan)."""
    infos = [
        ShardInfo(stem=f"s{i}", index=i, path=(paths or [f"/data/s{i}.parquet"] * len(shards))[i])
        for i in range(len(shards))
    ]
    stage.prepare()
    stage.setup()
    plan = None
    for r in range(stage.rounds):
        partials = [(info, stage.scan(iter(b), info, r, plan)) for info, b in zip(infos, shards, strict=True)]
        plan = stage.reduce(partials, r, plan)
    kept, dropped = [], 0
    for info, batches in zip(infos, shards, strict=True):
        pos = 0
        for b in batches:
            res = stage.apply(b, info, pos, plan)
            kept.append(res.batch)
            dropped += 0 if res.dropped is None else res.dropped.num_rows
            pos += b.num_rows
    stage.finish(plan)
    return pa.Table.from_batches([k for k in kept if k.num_rows] or kept[:1]), dropped, plan


def counts(table: pa.Table) -> Counter:
    return Counter(table.column("domain").to_pylist())


# -- pure functions --------------------------------------------------------------------------------


def test_apportion_exact_total_and_largest_remainder():
    got = apportion(np.array([1 / 3, 1 / 3, 1 / 3]), 10)
    assert got.sum() == 10 and sorted(got.tolist()) == [3, 3, 4]
    assert apportion(np.array([0.5, 0.3, 0.2]), 4000).tolist() == [2000, 1200, 800]
    assert apportion(np.array([0.0, 1.0]), 7).tolist() == [0, 7]
    assert apportion(np.array([0.7, 0.3]), 0).tolist() == [0, 0]


def test_unimax_caps_small_domains_and_redistributes():
    # budget 100 over sizes 5, 10, 1000 with at most 2 epochs: 10 (cap), 20 (cap), the rest 70
    alloc = unimax_budget(np.array([5.0, 10.0, 1000.0]), 100, 2)
    assert alloc.tolist() == pytest.approx([10, 20, 70])
    # no cap binds: uniform
    assert unimax_budget(np.array([100.0, 200.0]), 60, 1).tolist() == pytest.approx([30, 30])


def test_temperature_shares():
    sizes = np.array([10.0, 30.0, 60.0])
    assert temperature_shares(sizes, 1.0) == pytest.approx([0.1, 0.3, 0.6])
    flat = temperature_shares(sizes, 1e6)
    assert flat == pytest.approx([1 / 3] * 3, abs=1e-4)
    sharp = temperature_shares(sizes, 0.01)  # no overflow; all mass on the largest
    assert sharp[2] == pytest.approx(1.0) and np.isfinite(sharp).all()


def test_selection_keys_depend_on_seed_and_id_only():
    ids = pa.array(["a", "b", "c", "dd", ""])
    k0 = selection_keys(ids, 0)
    assert len(set(k0.tolist())) == 5
    assert (selection_keys(ids, 0) == k0).all()
    assert (selection_keys(ids, 1) != k0).all()
    assert (selection_keys(ids.slice(2), 0) == k0[2:]).all()  # slices (array offsets) are handled
    ints = selection_keys(pa.array([1, 2, 3]), 0)
    assert (ints == selection_keys(pa.array(["1", "2", "3"]), 0)).all()
    assert len(selection_keys(pa.array([], pa.string()), 0)) == 0


# -- the stage, driven phase by phase ----------------------------------------------------------------


def test_exact_counts_downsampling(tmp_path):
    out, dropped, plan = run_stage(
        make(tmp_path, weights={"a": 0.5, "b": 0.3, "c": 0.2}, docs=20), shards_of(corpus(), [30, 70])
    )
    assert counts(out) == {"a": 10, "b": 6, "c": 4}
    assert dropped == 100 - 20
    assert set(out.column(EPOCH_COLUMN).to_pylist()) == {0}
    assert len(set(out.column("id").to_pylist())) == 20
    report = json.loads((tmp_path / "out" / ".dcurate" / "mix_plan.json").read_text())
    by = {r["domain"]: r for r in report["domains"]}
    assert by["a"]["selected_docs"] == 10 and by["d"]["selected_docs"] == 0
    assert by["c"]["available_docs"] == 10 and by["c"]["target_share"] == 0.2


def test_selection_independent_of_sharding_and_batching(tmp_path):
    rows = corpus()
    kw = {"weights": {"a": 0.4, "b": 0.3, "c": 0.2, "d": 0.1}, "docs": 40, "max_epochs": 2}
    one, _, _ = run_stage(make(tmp_path / "1", **kw), shards_of(rows, [], batch_size=100))
    many, _, _ = run_stage(make(tmp_path / "2", **kw), shards_of(rows, [13, 14, 50, 77], batch_size=3))
    assert sorted(one.column("id").to_pylist()) == sorted(many.column("id").to_pylist())
    assert counts(one) == {"a": 16, "b": 12, "c": 8, "d": 4}
    other_seed, _, _ = run_stage(make(tmp_path / "3", seed=7, **kw), shards_of(rows, [50]))
    assert counts(other_seed) == counts(one)
    assert sorted(other_seed.column("id").to_pylist()) != sorted(one.column("id").to_pylist())


def test_upsampling_whole_epochs_then_sample(tmp_path):
    # d has 5 docs; target 0.5 of 26 = 13 docs = 2 whole epochs + 3 sampled
    stage = make(tmp_path, weights={"a": 0.5, "d": 0.5}, docs=26, max_epochs=3)
    out, _, plan = run_stage(stage, shards_of(corpus(), [40]))
    assert counts(out) == {"a": 13, "d": 13}
    d = out.filter(pa.compute.equal(out.column("domain"), "d"))
    epochs = Counter(d.column(EPOCH_COLUMN).to_pylist())
    assert epochs == {0: 5, 1: 5, 2: 3}
    ids = out.column("id").to_pylist()
    assert len(set(ids)) == len(ids)  # repeated copies have unique ids
    assert {i for i in ids if i.startswith("d-")} >= {"d-000", "d-000#e1", "d-000#e2"} or any(
        "#e2" in i for i in ids
    )
    for row in d.to_pylist():
        assert (row["id"].endswith(f"#e{row['epoch']}")) == (row["epoch"] > 0)
    assert set(out.column_names) >= {"id", "text", "domain", EPOCH_COLUMN}


def test_max_epochs_exceeded_is_a_plan_error(tmp_path):
    with pytest.raises(
        PlanError, match=r"max-epochs 2: d needs 2\.60 epochs \(13 of 5 docs\)\. At most 20 docs"
    ):
        run_stage(
            make(tmp_path, weights={"a": 0.5, "d": 0.5}, docs=26, max_epochs=2), shards_of(corpus(), [40])
        )


def test_tokens_target_within_one_document(tmp_path):
    stage = make(tmp_path, weights={"a": 0.25, "b": 0.25, "c": 0.25, "d": 0.25}, tokens=200, max_epochs=10)
    out, _, plan = run_stage(stage, shards_of(corpus(), [33, 66]))
    tokens = {}
    for row in out.to_pylist():
        tokens[row["domain"]] = tokens.get(row["domain"], 0) + (len(row["text"].encode()) + 3) // 4
    longest = max((len(r["text"].encode()) + 3) // 4 for r in corpus())
    for dom in "abcd":
        assert abs(tokens[dom] - 50) <= longest, (dom, tokens)
        assert tokens[dom] == plan.sel_tokens[plan.domains.index(dom)]


def test_temperature_and_default_size(tmp_path):
    # T=1: the natural mixture; default size = the largest that repeats nothing = everything
    out, dropped, _ = run_stage(make(tmp_path / "t1", temperature=1.0), shards_of(corpus(), [50]))
    assert counts(out) == SIZES and dropped == 0
    # T large: nearly uniform; the largest no-repeat size is bounded by d (5 docs)
    out, _, plan = run_stage(make(tmp_path / "t100", temperature=100.0), shards_of(corpus(), [50]))
    c = counts(out)
    assert c["d"] == 5 and max(c.values()) - min(c.values()) <= 1


def test_unimax(tmp_path):
    out, _, _ = run_stage(make(tmp_path, unimax=True, docs=60, max_epochs=1), shards_of(corpus(), [50]))
    # uniform 15 each, capped at one epoch for c (10) and d (5); leftover to a and b
    assert counts(out) == {"a": 22, "b": 23, "c": 10, "d": 5} or counts(out) == {
        "a": 23,
        "b": 22,
        "c": 10,
        "d": 5,
    }
    with pytest.raises(PlanError, match="UniMax cannot place"):
        run_stage(make(tmp_path / "x", unimax=True, docs=101, max_epochs=1), shards_of(corpus(), [50]))


def test_domains_from_paths(tmp_path):
    rows = [{"id": f"r{i}", "text": "t" * i} for i in range(30)]
    shards = shards_of(rows, [10, 20])
    stage = make(
        tmp_path,
        weights={"web": 0.5, "code": 0.5},
        docs=10,
        domain_paths=["*/web-*.jsonl=web", "code/*=code"],
    )
    out, _, _ = run_stage(stage, shards, paths=["/in/web-0.jsonl", "/in/code/x.jsonl", "/in/web-1.jsonl"])
    assert counts(out) == {"web": 5, "code": 5}
    with pytest.raises(InputError, match="matches none of the --domain-paths"):
        run_stage(
            make(tmp_path / "2", weights={"web": 1}, domain_paths=["web*=web"]),
            shards,
            paths=["/a", "/b", "/c"],
        )


class FakeClassifier:
    """Stands in for a fastText model: label by the first word (fastText's own training is not
    deterministic enough for a unit test on tiny data)."""

    def predict(self, texts, k=1):
        assert all("\n" not in t for t in texts)  # fastText needs one line per document
        return [[f"__label__{t.split()[0]}"] for t in texts], [np.array([1.0]) for _ in texts]


def test_domains_from_classifier(tmp_path, monkeypatch):
    import dcurate.stages.mix.stage as mix_mod

    monkeypatch.setattr(mix_mod, "_fasttext_model", lambda path: FakeClassifier())
    rows = [{"id": f"a{i}", "text": "alpha apple\napricot"} for i in range(12)]
    rows += [{"id": f"b{i}", "text": "beta banana"} for i in range(8)]
    stage = make(tmp_path, weights={"alpha": 0.5, "beta": 0.5}, docs=8, domain_model="model.bin")
    out, _, _ = run_stage(stage, shards_of(rows, [9]))
    assert counts(out) == {"alpha": 4, "beta": 4}
    pairs = zip(out.column("id").to_pylist(), out.column("domain").to_pylist(), strict=True)
    assert all(i.startswith("a") == (d == "alpha") for i, d in pairs)


def test_missing_classifier_is_a_model_error(tmp_path):
    from dcurate.core.errors import ModelError

    with pytest.raises(ModelError, match="no-such.bin"):
        make(tmp_path, weights={"a": 1}, domain_model=str(tmp_path / "no-such.bin")).prepare()


# -- bad input ---------------------------------------------------------------------------------------


def test_absent_weighted_domain_lists_found_domains(tmp_path):
    with pytest.raises(
        PlanError, match=r"weighted domain\(s\) zzz not found.*domains found: a \(60 docs\), b"
    ):
        run_stage(make(tmp_path, weights={"a": 0.5, "zzz": 0.5}), shards_of(corpus(), [50]))


def test_weights_not_summing_to_one(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="dcurate"):
        out, _, plan = run_stage(make(tmp_path, weights={"a": 2, "b": 2}, docs=10), shards_of(corpus(), [50]))
    assert "sum to 4" in caplog.text and counts(out) == {"a": 5, "b": 5}
    with pytest.raises(RecipeError, match=r"sum to 4.*--strict"):
        make(tmp_path / "s", weights={"a": 2, "b": 2}, strict=True).prepare()


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"weights": {"a": -0.5, "b": 1.5}}, "must be finite and >= 0"),
        ({}, "give the target mixture"),
        ({"weights": {"a": 1}, "unimax": True}, "alternatives"),
        ({"weights": {"a": 1}, "docs": 3, "tokens": 3}, "--docs or --tokens"),
        ({"weights": {"a": 1}, "domain_paths": ["nodomain"]}, "GLOB=DOMAIN"),
        ({"weights": {"a": 1}, "max_epochs": 0}, "max_epochs"),
    ],
)
def test_bad_parameters(kw, message):
    with pytest.raises(RecipeError, match=message):
        P.build(MixParams, kw, "stage 1 (mix)")


def test_null_or_missing_domain_is_an_input_error(tmp_path):
    rows = [{"id": "x1", "text": "a", "domain": "a"}, {"id": "x2", "text": "b", "domain": None}]
    with pytest.raises(InputError, match=r"s0.parquet: row 2: field 'domain' is null"):
        run_stage(make(tmp_path, weights={"a": 1}), [[pa.RecordBatch.from_pylist(rows)]])
    with pytest.raises(InputError, match=r"no domain column 'lang'.*--domain-field"):
        run_stage(make(tmp_path / "m", weights={"a": 1}, domain_field="lang"), shards_of(corpus(), []))


def test_zero_token_domain_with_weight(tmp_path):
    rows = [{"id": f"e{i}", "text": "", "domain": "empty"} for i in range(3)] + corpus()
    with pytest.raises(PlanError, match="empty have a target share but no tokens"):
        run_stage(make(tmp_path, weights={"a": 0.5, "empty": 0.5}, tokens=100), shards_of(rows, []))


def test_weights_file(tmp_path):
    from dcurate.stages.mix.regmix import write_weights_file

    wf = tmp_path / "w.yaml"
    write_weights_file(wf, {"a": 0.75, "b": 0.25}, {"target": "loss"})
    out, _, _ = run_stage(make(tmp_path, weights_file=str(wf), docs=8), shards_of(corpus(), [50]))
    assert counts(out) == {"a": 6, "b": 2}
    plain = tmp_path / "plain.yaml"
    plain.write_text("a: 1\nb: 1\n")
    out, _, _ = run_stage(make(tmp_path / "p", weights_file=str(plain), docs=8), shards_of(corpus(), [50]))
    assert counts(out) == {"a": 4, "b": 4}


# -- end to end: the runner and the CLI ---------------------------------------------------------------


def write_corpus(dirpath: Path, n_shards: int = 3) -> Path:
    dirpath.mkdir(parents=True, exist_ok=True)
    rows = corpus()
    per = -(-len(rows) // n_shards)
    for i in range(n_shards):
        pq.write_table(pa.Table.from_pylist(rows[i * per : (i + 1) * per]), dirpath / f"part-{i}.parquet")
    return dirpath


def read_out(out: Path) -> pa.Table:
    return pa.concat_tables([pq.read_table(p) for p in sorted(out.glob("*.parquet"))])


@pytest.mark.slow
def test_curate_end_to_end_worker_invariant(tmp_path):
    from dcurate import api
    src = write_corpus(tmp_path / "in")
    stage = {"stage": "mix", "weights": {"a": 0.4, "b": 0.4, "d": 0.2}, "docs": 30, "max_epochs": 2}
    api.curate(str(src), str(tmp_path / "o1"), stages=[stage], workers=1, progress=False)
    api.curate(str(src), str(tmp_path / "o2"), stages=[stage], workers=2, progress=False)
    t1, t2 = read_out(tmp_path / "o1"), read_out(tmp_path / "o2")
    assert counts(t1) == {"a": 12, "b": 12, "d": 6}
    assert t1.equals(t2)
    for p in sorted((tmp_path / "o1").glob("*.parquet")):
        assert p.read_bytes() == (tmp_path / "o2" / p.name).read_bytes()
    plan = json.loads((tmp_path / "o1" / ".dcurate" / "mix_plan.json").read_text())
    assert {r["domain"]: r["selected_docs"] for r in plan["domains"]} == {"a": 12, "b": 12, "c": 0, "d": 6}


@pytest.mark.slow
def test_cli_mix(tmp_path):
    from typer.testing import CliRunner

    from dcurate.cli import app as cli

    src = write_corpus(tmp_path / "in")
    res = CliRunner().invoke(
        cli.app,
        [
            "mix",
            str(src),
            str(tmp_path / "out"),
            "--weights",
            "a=0.5,b=0.5",
            "--docs",
            "10",
            "--workers",
            "1",
        ],
    )
    assert res.exit_code == 0, res.output
    assert counts(read_out(tmp_path / "out")) == {"a": 5, "b": 5}
    res = CliRunner().invoke(
        cli.app, ["mix", str(src), str(tmp_path / "bad"), "--weights", "a=0.5,q=0.5", "--workers", "1"]
    )
    assert res.exit_code != 0
    assert "not found in the data" in str(res.exception) + res.output


@pytest.mark.shared
@pytest.mark.slow
@pytest.mark.skipif(not SHARED.exists(), reason="needs ../shared")
def test_shared_corpus_exact_counts(tmp_path):
    from dcurate import api
    stats = api.curate(
        str(SHARED / "corpus" / "parquet"),
        str(tmp_path / "out"),
        stages=[{"stage": "mix", "weights": {"wiki": 0.5, "forum": 0.3, "code": 0.2}, "docs": 4000}],
        workers=2,
        progress=False,
    )
    assert stats is not None
    assert counts(read_out(tmp_path / "out")) == {"wiki": 2000, "forum": 1200, "code": 800}


def test_without_scan_cache_the_selection_is_the_same(tmp_path, monkeypatch):
    kw = {"weights": {"a": 0.3, "b": 0.3, "c": 0.2, "d": 0.2}, "docs": 30, "max_epochs": 2}
    cached, _, _ = run_stage(make(tmp_path / "c", **kw), shards_of(corpus(), [45]))
    assert list((tmp_path / "c" / "work").glob("scan-*.npz"))
    monkeypatch.setattr(Mix, "_save_cache", lambda self, *a: None)
    fresh, _, _ = run_stage(make(tmp_path / "f", **kw), shards_of(corpus(), [45]))
    assert not list((tmp_path / "f" / "work").glob("scan-*.npz"))
    assert cached.equals(fresh)
