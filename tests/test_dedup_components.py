"""Streaming connected components (graph.Components): the MinHash reduce folds verified pairs in
slice by slice and never holds all of them; results equal the whole-array computation."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_dedup import doc, ids, run
from test_dedup_pairs import _corpus

from dcurate.core import stagefiles
from dcurate.core.workfile import BadWorkFile
from dcurate.stages.dedup import candidates, graph, pairs
from dcurate.stages.dedup import stage as dedup_stage
from dcurate.stages.dedup.stage import Dedup

FLAG = 1 << 63


def table_bytes(t: pa.Table) -> bytes:
    """A table's Arrow IPC stream (byte-equal tables, NaN included, unlike Table.equals)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, t.schema) as w:
        w.write_table(t.combine_chunks())
    return sink.getvalue().to_pybytes()


def whole_array_result(u: np.ndarray, v: np.ndarray, jac: np.ndarray, against: bool):
    """What the reduce computed before streaming: components over all edges at once, and each
    first node's best second node by a stable lexsort (largest jac, NaN as 0, first edge on ties)."""
    nodes = np.unique(np.concatenate([u, v]))
    ui, vi = np.searchsorted(nodes, u), np.searchsorted(nodes, v)
    root = graph.components(len(nodes), ui, vi)
    if not against:
        return nodes, root, None, None
    order = np.lexsort((-np.nan_to_num(jac, nan=0.0), ui))
    first = np.ones(len(order), dtype=bool)
    first[1:] = ui[order][1:] != ui[order][:-1]
    best = order[first]
    rep = np.zeros(len(nodes), dtype=np.int64)
    rep_j = np.full(len(nodes), np.nan)
    rep[ui[best]] = vi[best]
    rep_j[ui[best]] = jac[best]
    has = np.zeros(len(nodes), dtype=bool)
    has[ui[best]] = True
    return nodes, root, np.where(has, nodes[rep], 0).astype(np.uint64), rep_j


@st.composite
def edge_stream(draw):
    against = draw(st.booleans())
    n_corpus = draw(st.integers(1, 25))
    n_ref = draw(st.integers(1, 10)) if against else 0
    corpus = np.array(sorted(draw(st.sets(st.integers(0, 10_000), min_size=n_corpus, max_size=n_corpus))), np.uint64)
    ref = np.array(sorted(draw(st.sets(st.integers(0, 10_000), min_size=n_ref, max_size=n_ref))), np.uint64)
    ref = ref | np.uint64(FLAG)
    n_edges = draw(st.integers(0, 60))
    u, v = [], []
    for _ in range(n_edges):
        if against:
            u.append(corpus[draw(st.integers(0, len(corpus) - 1))])
            v.append(ref[draw(st.integers(0, len(ref) - 1))])
        else:
            a, b = draw(st.integers(0, len(corpus) - 1)), draw(st.integers(0, len(corpus) - 1))
            u.append(corpus[min(a, b)])
            v.append(corpus[max(a, b)])
    # few distinct values, so ties and NaN (counted as 0) are common
    jac = draw(st.lists(st.sampled_from([0.0, 0.5, 0.8, 0.9, 1.0, float("nan")]), min_size=n_edges, max_size=n_edges))
    cuts = sorted(draw(st.lists(st.integers(0, n_edges), max_size=6)))
    extra = np.array(sorted(draw(st.sets(st.integers(20_000, 30_000), max_size=5))), np.uint64)
    universe = np.unique(np.concatenate([corpus, ref, extra]))  # untouched members are left out
    return against, universe, np.array(u, np.uint64), np.array(v, np.uint64), np.array(jac, np.float64), cuts


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edge_stream())
def test_components_in_random_batches_equal_the_whole_array_result(case):
    against, universe, u, v, jac, cuts = case
    comp = graph.Components(universe, against)
    bounds = [0, *cuts, len(u)]
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        comp.add(u[a:b], v[a:b], jac[a:b])
    assert comp.edges == len(u)
    got = comp.finish()
    want = whole_array_result(u, v, jac, against)
    assert np.array_equal(got[0], want[0]) and got[0].dtype == np.uint64
    assert np.array_equal(got[1], want[1])
    if against:
        corpus = (want[0] & np.uint64(FLAG)) == 0  # the reduce reads these of corpus nodes only
        assert np.array_equal(got[2][corpus], want[2][corpus])
        assert np.array_equal(got[3][corpus], want[3][corpus], equal_nan=True)
    else:
        assert got[2] is None and got[3] is None


def test_components_rejects_an_edge_outside_the_universe():
    comp = graph.Components(np.array([1, 3], np.uint64))
    with pytest.raises(BadWorkFile, match="candidate list"):  # one line, exit 1 (a DcurateError)
        comp.add(np.array([1], np.uint64), np.array([2], np.uint64))
    nodes, root, _, _ = comp.finish()
    assert len(nodes) == 0 and len(root) == 0


def _ref_file(tmp_path, shards):
    ref = tmp_path / "ref.jsonl"
    ref.write_text("".join(json.dumps({"id": f"r{i}", "text": t}) + "\n" for i, (_, t) in enumerate(shards[1][:12])))
    return str(ref)


@pytest.mark.parametrize("verify", ["exact", "none"])
@pytest.mark.parametrize("against", [False, True])
def test_tiny_slices_and_partitions_give_the_default_result(tmp_path, monkeypatch, against, verify):
    shards = _corpus()
    extra = {"against": _ref_file(tmp_path, shards)} if against else {}
    extra["verify"] = verify
    k1, d1, s1, c1 = run(shards, tmp_path / "one", threshold=0.8, **extra)
    seen: list[int] = []
    add = graph.Components.add

    def spy(self, u, v, jac=None):
        seen.append(len(u))
        return add(self, u, v, jac)

    monkeypatch.setattr(graph.Components, "add", spy)
    monkeypatch.setenv("DCURATE_DEDUP_PAIRS_PER_PARTITION", "3")
    monkeypatch.setenv("DCURATE_DEDUP_VERIFY_SLICE", "2")
    k2, d2, s2, c2 = run(shards, tmp_path / "many", threshold=0.8, **extra)
    assert len(seen) > 10 and max(seen) <= 2  # streamed, one slice at a time
    assert k1.equals(k2) and ids(d1) == ids(d2) and c1.num_rows > 5
    assert table_bytes(c1) == table_bytes(c2)
    skip = ("pair_partitions", "clusters_file")
    assert {k: v for k, v in s1.items() if k not in skip} == {k: v for k, v in s2.items() if k not in skip}
    assert s1.get("verified_pairs", s1["candidate_pairs"]) > 10


def test_plan_without_the_node_set_is_resumed_with_the_same_result(tmp_path, monkeypatch):
    """A plan written by the version before streaming has no ``all`` array in pairs.npz: the
    universe comes from one pass over the pair files, with the same result."""
    shards = _corpus()
    k1, d1, s1, c1 = run(shards, tmp_path / "one", threshold=0.8)
    load, passes = stagefiles.load_npz, []

    def old_plan(path, require=()):
        return {k: a for k, a in load(path, require).items() if k != "all"}

    def pair_nodes(stems, size):
        passes.append(size)
        return nodes(stems, size)

    nodes = pairs.pair_nodes
    monkeypatch.setattr(stagefiles, "load_npz", old_plan)
    monkeypatch.setattr(pairs, "pair_nodes", pair_nodes)
    monkeypatch.setenv("DCURATE_DEDUP_PAIRS_PER_PARTITION", "4")
    monkeypatch.setenv("DCURATE_DEDUP_VERIFY_SLICE", "3")
    k2, d2, s2, c2 = run(shards, tmp_path / "old", threshold=0.8)
    assert passes == [3]
    assert k1.equals(k2) and ids(d1) == ids(d2) and c1.equals(c2)


def test_second_reduce_never_holds_all_verified_pairs(tmp_path, monkeypatch):
    """Groups of identical documents bigger than usual all-pairs groups give ~N^2/2 verified pairs
    per group; with small slices the second reduce's peak traced memory stays under what the
    verified pairs alone take as (u, v, jac) arrays (24 bytes a pair), which whole-array
    clustering needs at least once (twice while concatenating)."""
    monkeypatch.setattr(candidates, "MAX_ALL_PAIRS", 1000)  # the grouping tasks run in-process here
    monkeypatch.setenv("DCURATE_DEDUP_VERIFY_SLICE", "4000")
    texts = [doc(1000 + g, 60) for g in range(8)]
    shards = [[(f"s{s}g{g}d{i}", texts[g]) for g in range(8) for i in range(50)] for s in range(3)]
    peak: list[int] = []
    reduce = Dedup._reduce_candidates

    def traced(self, chunks, plan):
        tracemalloc.start()
        try:
            return reduce(self, chunks, plan)
        finally:
            peak.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()

    monkeypatch.setattr(Dedup, "_reduce_candidates", traced)
    kept, _, stats, _ = run(shards, tmp_path / "big", batch_rows=200, threshold=0.8)
    assert len(ids(kept)) == 8
    n = stats["verified_pairs"]
    assert n == 8 * 150 * 149 // 2  # every pair of a group's 150 copies
    assert peak and peak[0] < 24 * n, (peak, 24 * n)


def test_verify_slice_reads_the_environment(monkeypatch):
    monkeypatch.delenv("DCURATE_DEDUP_VERIFY_SLICE", raising=False)
    assert dedup_stage.verify_slice() == dedup_stage.VERIFY_SLICE
    monkeypatch.setenv("DCURATE_DEDUP_VERIFY_SLICE", "7")
    assert dedup_stage.verify_slice() == 7
