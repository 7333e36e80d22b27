"""Unit tests of the dedup stage: its phases called directly on small record batches."""

from __future__ import annotations

import json
import random
import re

import numpy as np
import pyarrow as pa
import pytest

from dcurate.core.errors import InputError, RecipeError
from dcurate.core.params import build
from dcurate.core.stage import REASON_COLUMN, ShardInfo, StageContext
from dcurate.stages.dedup import graph, store
from dcurate.stages.dedup import stage as dedup_mod
from dcurate.stages.dedup.stage import Dedup, Params

WORDS = (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar "
    "papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu river stone cloud"
).split()


def doc(seed: int, n: int = 120) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) + str(rng.randrange(50)) for _ in range(n))


def edit(text: str, seed: int, frac: float) -> str:
    """Replace a fraction of the words (a near-duplicate)."""
    rng = random.Random(seed)
    w = text.split()
    for i in rng.sample(range(len(w)), int(len(w) * frac)):
        w[i] = "zz" + str(rng.randrange(10**6))
    return " ".join(w)


def shingles(text: str, n: int = 5) -> set[str]:
    t = re.findall(r"\w+", text.lower())
    if not t:
        return set()
    if len(t) < n:
        return {" ".join(t)}
    return {" ".join(t[i : i + n]) for i in range(len(t) - n + 1)}


def jaccard(a: str, b: str) -> float:
    sa, sb = shingles(a), shingles(b)
    return len(sa & sb) / len(sa | sb) if sa | sb else 0.0


def run(shards: list[list[tuple[str, str]] | pa.Table], tmp_path, batch_rows: int = 3, extra=None, **params):
    """Run scan -> reduce -> apply over in-memory shards; return (kept ids, dropped, stats, clusters)."""
    p = build(Params, params, "dedup")
    ctx = StageContext(workdir=tmp_path / "work", out_dir=tmp_path / "out")
    st = Dedup(p, ctx)
    st.prepare()
    tables = []
    for s in shards:
        if isinstance(s, pa.Table):
            tables.append(s)
        else:
            cols = {"id": [i for i, _ in s], "text": [t for _, t in s]}
            cols.update({k: v[len(tables)] for k, v in (extra or {}).items()})
            tables.append(pa.table(cols))
    infos = [ShardInfo(stem=f"s{i}", index=i) for i in range(len(tables))]
    plan = None
    for r in range(st.rounds):
        partials = [
            (sh, st.scan(iter(t.to_batches(max_chunksize=batch_rows)), sh, r, plan))
            for sh, t in zip(infos, tables, strict=True)
        ]
        plan = st.reduce(partials, r, plan)
    kept, dropped = [], []
    for sh, t in zip(infos, tables, strict=True):
        pos = 0
        worker = Dedup(p, ctx.for_worker())  # apply runs in fresh stage objects in the workers
        for b in t.to_batches(max_chunksize=batch_rows):
            r = worker.apply(b, sh, pos, plan)
            pos += b.num_rows
            kept.append(r.batch)
            if r.dropped is not None:
                dropped.append(r.dropped)
    stats = st.finish(plan)
    clusters = pa.ipc.open_file(stats["clusters_file"]).read_all() if stats.get("clusters_file") else None
    kept_t = pa.Table.from_batches(kept) if kept else None
    drop_t = pa.Table.from_batches(dropped) if dropped else None
    return kept_t, drop_t, stats, clusters


def ids(table) -> list[str]:
    return [] if table is None else table.column("id").to_pylist()


# -- graph kernels --------------------------------------------------------------------------------


@pytest.mark.slow
def test_candidate_edges_small_group_gives_all_pairs_big_group_star_and_chain():
    keys = np.array([7, 7, 7, 9, 9, 5], dtype=np.uint64)
    refs = np.array([3, 1, 2, 8, 4, 6], dtype=np.uint64)
    u, v, groups = graph.candidate_edges(keys, refs, max_all_pairs=3)
    assert groups == 2
    assert sorted(zip(u.tolist(), v.tolist(), strict=True)) == [(1, 2), (1, 3), (2, 3), (4, 8)]
    u, v, _ = graph.candidate_edges(keys, refs, max_all_pairs=2)
    # group {1, 2, 3} is now "big": star to 1 plus chain 1-2, 2-3
    assert sorted(zip(u.tolist(), v.tolist(), strict=True)) == [(1, 2), (1, 3), (2, 3), (4, 8)]
    keys = np.full(5, 1, dtype=np.uint64)
    refs = np.arange(10, 15, dtype=np.uint64)
    u, v, _ = graph.candidate_edges(keys, refs, max_all_pairs=2)
    assert sorted(zip(u.tolist(), v.tolist(), strict=True)) == [
        (10, 11),
        (10, 12),
        (10, 13),
        (10, 14),
        (11, 12),
        (12, 13),
        (13, 14),
    ]


def test_candidate_edges_against_only_pairs_corpus_to_reference():
    f = 1 << 63
    keys = np.array([1, 1, 1, 1, 2, 2], dtype=np.uint64)
    refs = np.array([5, 6, f | 1, f | 2, 7, 8], dtype=np.uint64)
    u, v, _ = graph.candidate_edges(keys, refs, 16, against=True)
    assert sorted(zip(u.tolist(), v.tolist(), strict=True)) == [
        (5, f | 1),
        (5, f | 2),
        (6, f | 1),
        (6, f | 2),
    ]
    u, v, _ = graph.candidate_edges(keys, refs, 2, against=True)
    assert sorted(zip(u.tolist(), v.tolist(), strict=True)) == [(5, f | 1), (6, f | 1)]


def test_components_root_is_smallest_member():
    root = graph.components(6, np.array([4, 1, 2]), np.array([5, 2, 3]))
    assert root.tolist() == [0, 1, 1, 1, 4, 4]


def test_set_jaccard_matches_python_sets():
    rng = np.random.default_rng(0)
    sets = [np.unique(rng.integers(0, 40, size=rng.integers(0, 30)).astype(np.uint64)) for _ in range(20)]
    offsets = np.concatenate(([0], np.cumsum([len(s) for s in sets]))).astype(np.int64)
    hashes = np.concatenate(sets)
    ia, ib = rng.integers(0, 20, 50), rng.integers(0, 20, 50)
    got = graph.set_jaccard(offsets, hashes, ia, ib)
    for a, b, j in zip(ia, ib, got, strict=True):
        sa, sb = set(sets[a].tolist()), set(sets[b].tolist())
        assert j == pytest.approx(len(sa & sb) / len(sa | sb) if sa | sb else 0.0)


def test_refs_sort_in_run_order_and_name_pieces():
    a = store.base_ref(0, 1) + 5
    b = store.base_ref(1, 0)
    c = store.base_ref(0, 0, flag=True)
    assert a < b < c
    assert store.piece_key(int(store.ref_piece(np.array([a], np.uint64))[0])) == ShardInfo("x", 0, 1).key
    assert store.ref_row(np.array([a], np.uint64)).tolist() == [5]
    with pytest.raises(InputError):
        store.base_ref(1 << 21, 0)


# -- parameters -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params, msg",
    [
        ({"bands": 4}, "both --bands and --rows"),
        ({"bands": 20, "rows": 8}, "exceeds num_perm"),
        ({"keep": "biggest"}, "keep must be"),
        ({"method": "paragraphs", "against": "x.jsonl"}, "not paragraphs"),
        ({"verify": "maybe"}, "must be one of"),
    ],
)
def test_bad_parameters_name_the_problem(params, msg):
    with pytest.raises(RecipeError, match=msg):
        build(Params, params, "stage 1 (dedup)")


def test_describe_and_prepare_show_bands_and_s_curve(tmp_path, caplog):
    st = Dedup(build(Params, {"threshold": 0.8}, "dedup"), StageContext(workdir=tmp_path))
    with caplog.at_level("INFO", logger="dcurate"):
        st.prepare()
    err = caplog.text
    b, r = st.bands_rows
    assert f"{b} bands x {r} rows" in err and "J=0.80" in err
    d = st.describe()["lsh"]
    assert (d["bands"], d["rows"]) == (b, r)
    assert d["s_curve"]["0.80"] >= 0.95  # the banding rule's recall target at the threshold
    assert set(d["s_curve"]) == {"0.60", "0.65", "0.70", "0.75", "0.80", "0.85", "0.90", "0.95", "1.00"}
    st = Dedup(
        build(Params, {"bands": 14, "rows": 8, "num_perm": 112}, "dedup"), StageContext(workdir=tmp_path)
    )
    assert st.bands_rows == (14, 8)


# -- minhash --------------------------------------------------------------------------------------


def corpus():
    base = [doc(i) for i in range(12)]
    near = edit(base[0], 1, 0.02)  # J well above 0.8
    far = edit(base[1], 2, 0.25)  # J well below 0.8
    s0 = [("a0", base[0]), ("a1", base[1]), ("a2", base[2]), ("a3", base[3]), ("a4", "")]
    s1 = [("b0", base[4]), ("b1", near), ("b2", far), ("b3", base[2].upper()), ("b4", "   ")]
    s2 = [("c0", base[5]), ("c1", base[0]), ("c2", base[6]), ("c3", "tiny text"), ("c4", "tiny  TEXT!")]
    return [s0, s1, s2]


@pytest.mark.slow
def test_minhash_removes_near_duplicates_across_shards_keeping_the_first(tmp_path):
    shards = corpus()
    kept, dropped, stats, clusters = run(shards, tmp_path, threshold=0.8)
    assert sorted(ids(dropped)) == ["b1", "b3", "c1", "c4"]
    assert set(dropped.column(REASON_COLUMN).to_pylist()) == {"dedup.minhash"}
    assert ids(kept) == ["a0", "a1", "a2", "a3", "a4", "b0", "b2", "b4", "c0", "c2", "c3"]
    assert stats["clusters"] == 3 and stats["duplicates"] == 4
    assert stats["false_positives"] + stats["verified_pairs"] == stats["candidate_pairs"]
    rows = {r["id"]: r for r in clusters.to_pylist()}
    text = {i: t for s in shards for i, t in s}
    for member, rep in [("b1", "a0"), ("c1", "a0"), ("b3", "a2"), ("c4", "c3")]:
        assert rows[member]["representative"] == rep and not rows[member]["kept"]
        assert rows[member]["jaccard"] == pytest.approx(jaccard(text[member], text[rep]))
        assert rows[rep]["kept"] and rows[rep]["jaccard"] == 1.0
    assert rows["a0"]["size"] == 3 and rows["a0"]["cluster"] == 0  # cluster ids follow run order
    assert rows["a2"]["cluster"] == 1 and rows["c3"]["cluster"] == 2


def test_transitive_chain_is_one_cluster(tmp_path):
    """A~B and B~C above the threshold, A~C below: one cluster (connected components), one kept."""
    w = doc(99, 400).split()
    a = " ".join(w)
    b = " ".join(w[:200] + ["q" + x for x in w[200:230]] + w[230:])
    c = " ".join(
        w[:100] + ["q" + x for x in w[100:130]] + w[130:200] + ["q" + x for x in w[200:230]] + w[230:]
    )
    assert jaccard(a, b) >= 0.8 and jaccard(b, c) >= 0.8 and jaccard(a, c) < 0.8
    kept, dropped, stats, _ = run([[("a", a), ("b", b), ("c", c)]], tmp_path, threshold=0.8)
    assert ids(kept) == ["a"] and stats["clusters"] == 1


@pytest.mark.parametrize("verify", ["exact", "signature", "none"])
def test_verify_modes(tmp_path, verify):
    kept, dropped, stats, clusters = run(corpus(), tmp_path, threshold=0.8, verify=verify)
    assert {"b1", "c1", "b3"} <= set(ids(dropped))
    assert "b2" in ids(kept)
    if verify == "none":
        assert "false_positives" not in stats
    assert clusters.num_rows == stats["clusters"] + stats["duplicates"]


def test_keep_longest_and_max_column(tmp_path):
    t = doc(5)
    shards = [[("x", t), ("y", t + " extra words here"), ("z", t.upper())]]
    kept, *_ = run(shards, tmp_path / "l", threshold=0.8, keep="longest")
    assert ids(kept) == ["y"]
    kept, _, _, clusters = run(
        shards, tmp_path / "m", threshold=0.8, keep="max:q", extra={"q": [[0.1, None, 0.9]]}
    )
    assert ids(kept) == ["z"]
    assert set(clusters.column("representative").to_pylist()) == {"z"}
    with pytest.raises(InputError, match="no column 'q'"):
        run(shards, tmp_path / "e", keep="max:q")


def test_annotate_keeps_everything(tmp_path):
    kept, dropped, stats, _ = run(corpus(), tmp_path, threshold=0.8, annotate=True)
    assert dropped is None and kept.num_rows == 15
    d = {
        i: (c, s)
        for i, c, s in zip(
            ids(kept),
            kept.column("dup_cluster").to_pylist(),
            kept.column("dup_cluster_size").to_pylist(),
            strict=True,
        )
    }
    assert d["a0"] == d["b1"] == d["c1"] == (0, 3)
    assert d["a1"] == (None, 1)


@pytest.mark.slow
def test_sharding_and_batching_do_not_change_the_result(tmp_path):
    shards = corpus()
    flat = [x for s in shards for x in s]
    k1, _, s1, c1 = run(shards, tmp_path / "a", batch_rows=2)
    k2, _, s2, c2 = run([flat], tmp_path / "b", batch_rows=7)
    assert ids(k1) == ids(k2)
    assert c1.equals(c2)


@pytest.mark.slow
def test_flushing_chunks_does_not_change_the_result(tmp_path, monkeypatch):
    shards = corpus()
    k1, _, _, c1 = run(shards, tmp_path / "a")
    monkeypatch.setattr(dedup_mod, "FLUSH_DOCS", 2)
    written = []
    scan_into = Dedup._scan_into

    def spy(self, batches, folder, *a, **k):
        chunks = scan_into(self, batches, folder, *a, **k)
        written.append((folder.name, len(chunks)))
        return chunks

    monkeypatch.setattr(Dedup, "_scan_into", spy)
    k2, _, _, c2 = run(shards, tmp_path / "b", batch_rows=1)
    assert ids(k1) == ids(k2) and c1.equals(c2)
    assert written[0] == ("000000-0000", 3)  # 2 + 2 + 1 rows


def test_empty_short_and_cjk_text(tmp_path):
    zh = "我们今天去公园散步然后回家吃晚饭大家都很开心" * 3
    zh2 = zh.replace("晚饭", "午饭", 1)
    shards = [
        [("e1", ""), ("e2", "!!! ..."), ("s1", "hi"), ("s2", "Hi!"), ("z1", zh), ("z2", zh2), ("n", None)]
    ]
    kept, dropped, stats, _ = run(shards, tmp_path, threshold=0.8)
    # empty / punctuation-only / null texts have no shingle: never duplicates; "hi" == "Hi!";
    # CJK text gets character 5-grams, so one changed word is a near-duplicate
    assert sorted(ids(dropped)) == ["s2", "z2"]
    kept, dropped, *_ = run(shards, tmp_path / "w", threshold=0.8, cjk_chars=False)
    assert sorted(ids(dropped)) == ["s2"]


def test_all_duplicate_shard(tmp_path):
    t = doc(1)
    shards = [[(f"a{i}", t) for i in range(40)], [(f"b{i}", t) for i in range(10)]]
    kept, dropped, stats, clusters = run(shards, tmp_path, threshold=0.8)
    assert ids(kept) == ["a0"] and dropped.num_rows == 49
    assert stats["clusters"] == 1 and stats["largest_cluster"] == 50
    kept, _, stats, _ = run(shards, tmp_path / "m", threshold=0.8, max_cluster_size=20)
    assert stats["oversized_clusters"] == 1


def test_against_removes_contaminated_docs_only(tmp_path):
    ref = tmp_path / "ref.jsonl"
    base = [doc(i) for i in range(6)]
    ref.write_text(
        "\n".join(
            json.dumps({"id": f"r{i}", "text": t})
            for i, t in enumerate([base[0], edit(base[1], 3, 0.02), doc(77)])
        )
        + "\n"
    )
    shards = [[("a", base[0]), ("b", base[1]), ("c", base[2]), ("d", base[2]), ("e", base[0])]]
    kept, dropped, stats, clusters = run(shards, tmp_path, threshold=0.8, against=str(ref))
    assert sorted(ids(dropped)) == ["a", "b", "e"]  # c and d are duplicates of each other, kept
    assert set(dropped.column(REASON_COLUMN).to_pylist()) == {"dedup.against"}
    reps = dict(zip(ids(clusters), clusters.column("representative").to_pylist(), strict=True))
    assert reps == {"a": "r0", "b": "r1", "e": "r0"}
    kept, dropped, *_ = run(shards, tmp_path / "x", method="exact", against=str(ref))
    assert sorted(ids(dropped)) == ["a", "e"]


# -- exact ----------------------------------------------------------------------------------------


def test_exact_ignores_case_and_whitespace_only(tmp_path):
    shards = [
        [("a", "Hello  World\n"), ("b", "hello world"), ("c", "hello world!")],
        [("d", " HELLO\tworld  "), ("e", ""), ("f", "")],
    ]
    kept, dropped, stats, clusters = run(shards, tmp_path, method="exact")
    assert ids(kept) == ["a", "c", "e"]
    assert set(dropped.column(REASON_COLUMN).to_pylist()) == {"dedup.exact"}
    assert stats["duplicates"] == 3 and stats["clusters"] == 2
    assert set(clusters.column("jaccard").to_pylist()) == {1.0}
    kept, *_ = run(shards, tmp_path / "l", method="exact", keep="longest")
    assert ids(kept) == ["c", "d", "e"]


# -- paragraphs -----------------------------------------------------------------------------------


def test_paragraphs_cut_later_repeats_and_drop_emptied_docs(tmp_path):
    shards = [
        [
            ("a", "Share this: Facebook\nReal content one.\n\nFooter © 2020"),
            ("b", "Real content two.\nshare THIS:  facebook"),
        ],
        [("c", "footer © 2020\n\nSHARE this: Facebook"), ("d", "Unique.\nUnique.\nOther")],
    ]
    kept, dropped, stats, _ = run(shards, tmp_path, method="paragraphs")
    got = dict(zip(ids(kept), kept.column("text").to_pylist(), strict=True))
    assert got == {
        "a": "Share this: Facebook\nReal content one.\n\nFooter © 2020",
        "b": "Real content two.",
        "d": "Unique.\nOther",
    }
    assert ids(dropped) == ["c"] and dropped.column(REASON_COLUMN).to_pylist() == ["dedup.paragraphs"]
    assert stats["lines_removed"] == 4 and stats["docs_modified"] == 3


@pytest.mark.parametrize("method", ["minhash", "exact", "paragraphs"])
def test_empty_input_and_text_less_documents(tmp_path, method):
    empty = pa.table({"id": pa.array([], pa.string()), "text": pa.array([], pa.string())})
    kept, dropped, stats, _ = run([empty], tmp_path / "e", method=method)
    assert kept is None and dropped is None and stats["docs"] == 0
    kept, dropped, stats, _ = run([[("a", ""), ("b", "  \n ")]], tmp_path / "b", method=method)
    # no words: never a near-duplicate; exact dedup sees two equal (empty) normalised texts
    assert ids(kept) == (["a"] if method == "exact" else ["a", "b"])


@pytest.mark.slow
def test_a_50_mb_document(tmp_path):
    rng = np.random.default_rng(0)
    vocab = np.array([f"w{i}" for i in range(5000)])
    big = " ".join(vocab[rng.integers(0, len(vocab), 8_000_000)])  # ~50 MB
    assert len(big) > 45_000_000
    kept, dropped, stats, clusters = run(
        [[("big", big), ("copy", big + " tail"), ("x", doc(1))]], tmp_path, batch_rows=1
    )
    assert ids(kept) == ["big", "x"] and ids(dropped) == ["copy"]
    assert clusters.column("jaccard").to_pylist()[1] > 0.99
