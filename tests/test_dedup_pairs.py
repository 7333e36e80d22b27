"""The MinHash candidate pairs spilled in partitions: tiny partitions give the same result."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_dedup import doc, edit, ids, run

from dcurate.stages.dedup import graph, pairs


def _corpus():
    base = [doc(i, 80) for i in range(30)]
    shards = []
    for s in range(3):
        rows = []
        for i in range(30):
            k = (i * 7 + s) % 30
            text = base[k] if (i + s) % 3 else edit(base[k], 100 * s + i, 0.03)
            rows.append((f"s{s}d{i}", text))
        shards.append(rows)
    return shards


def test_partition_ranges_cover_every_nonempty_bucket_in_order():
    counts = np.array([0, 3, 0, 5, 1, 0, 0, 9, 2, 0])
    for size in (1, 3, 5, 9, 100):
        ranges = pairs.partition_ranges(counts, size)
        assert all(a < b for a, b in ranges)
        assert all(b <= c for (_, b), (c, _) in zip(ranges, ranges[1:], strict=False))
        assert sum(int(counts[a:b].sum()) for a, b in ranges) == counts.sum()
        assert all(int(counts[a:b].sum()) <= size or np.count_nonzero(counts[a:b]) == 1 for a, b in ranges)
    assert pairs.partition_ranges(np.zeros(4, np.int64), 5) == []


def test_merged_partitions_equal_one_global_unique(tmp_path):
    rng = np.random.default_rng(0)
    tasks = []
    all_u, all_v = [], []
    for t in range(4):
        u = rng.integers(0, 50, 400).astype(np.uint64)
        v = u + rng.integers(1, 5, 400).astype(np.uint64)
        u, v = graph.unique_pairs(u, v)  # unique within a task, repeated across tasks
        all_u.append(u)
        all_v.append(v)
        tasks.append(pairs.write_task_pairs(tmp_path / "tasks", f"g{t:05d}", u, v))
    want_u, want_v = graph.unique_pairs(np.concatenate(all_u), np.concatenate(all_v))
    counts = np.sum([t["counts"] for t in tasks], axis=0)
    ranges = pairs.partition_ranges(counts, 7)
    assert len(ranges) > 5
    merged = [pairs.merge_partition((tasks, a, b, str(tmp_path / f"p{k}"))) for k, (a, b) in enumerate(ranges)]
    got = list(pairs.iter_pairs([m[0] for m in merged], 5))
    u = np.concatenate([g[0] for g in got])
    v = np.concatenate([g[1] for g in got])
    assert sum(m[1] for m in merged) == len(want_u) == len(u)
    order = np.lexsort((v, u))
    assert np.array_equal(u[order], want_u) and np.array_equal(v[order], want_v)
    nodes = np.unique(np.concatenate([np.load(m[2]) for m in merged]))
    assert np.array_equal(nodes, np.unique(np.concatenate([want_u, want_v])))


@pytest.mark.parametrize("verify", ["exact", "none"])
def test_tiny_partitions_give_the_unpartitioned_result(tmp_path, monkeypatch, verify):
    shards = _corpus()
    k1, d1, s1, c1 = run(shards, tmp_path / "one", threshold=0.8, verify=verify)
    assert s1["pair_partitions"] == 1 and s1["duplicates"] > 10
    monkeypatch.setenv("DCURATE_DEDUP_PAIRS_PER_PARTITION", "2")
    k2, d2, s2, c2 = run(shards, tmp_path / "many", threshold=0.8, verify=verify)
    assert s2["pair_partitions"] > 10
    assert ids(k1) == ids(k2) and ids(d1) == ids(d2) and c1.equals(c2)
    assert {k: v for k, v in s1.items() if k not in ("pair_partitions", "clusters_file")} == {
        k: v for k, v in s2.items() if k not in ("pair_partitions", "clusters_file")
    }
    assert not (tmp_path / "many" / "work" / "pairs").exists()  # removed with the scratch


def test_tiny_partitions_against_a_reference_set(tmp_path, monkeypatch):
    shards = _corpus()
    ref = tmp_path / "ref.jsonl"
    ref.write_text("".join(json.dumps({"id": f"r{i}", "text": t}) + "\n" for i, (_, t) in enumerate(shards[1][:12])))
    k1, _, _, c1 = run(shards, tmp_path / "one", threshold=0.8, against=str(ref))
    monkeypatch.setenv("DCURATE_DEDUP_PAIRS_PER_PARTITION", "1")
    k2, _, _, c2 = run(shards, tmp_path / "many", threshold=0.8, against=str(ref))
    assert ids(k1) == ids(k2) and c1.equals(c2) and c1.num_rows > 5
