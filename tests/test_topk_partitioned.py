"""dcurate.core.topk_partitioned: the radix-select cut-off over per-piece files equals
compute_cutoff over the gathered keys, field for field."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dcurate.core import topk_partitioned
from dcurate.core.topk import compute_cutoff, tie_key
from dcurate.core.topk_partitioned import (
    KeyPiece,
    from_ordered,
    order_statistics,
    ordered_u64,
    partitioned_cutoff,
    percentiles,
    piece_summaries,
    use_partitioned,
)


def _serial(fn, items):
    return [fn(x) for x in items]


_VALUES = [math.nan, math.inf, -math.inf, -0.0, 0.0, 0.5, -0.5, 1.0, 1.0, 2.0, 1e300, -1e-300, 5e-324]

_doc = st.tuples(
    st.sampled_from(_VALUES),  # key
    st.booleans() | st.just(True),  # eligible (mostly)
    st.integers(0, 5),  # size
    st.sampled_from([None, "a", "b", "c", "a1", "zz"]),  # id
)
_piece = st.tuples(st.lists(_doc, max_size=25), st.booleans())  # documents, has ids file
_budget = st.sampled_from([0.0, 1.0, 2.0, 2.5, 3.0, 7.0, 10.0, 30.0, 1000.0]) | st.floats(-2.0, 80.0)


def _write(tmp: Path, pieces_docs: list, with_sizes: bool) -> list[KeyPiece]:
    out = []
    for pi, (docs, has_ids) in enumerate(pieces_docs):
        keys = np.array([d[0] for d in docs], dtype=np.float64)
        elig = np.array([d[1] for d in docs], dtype=bool)
        sizes = np.array([d[2] for d in docs], dtype=np.int64)
        path = tmp / f"p{pi}.npz"
        np.savez(path, keys=keys, eligible=elig, sizes=sizes)
        ids_path = None
        if has_ids:
            ids_path = tmp / f"p{pi}.ids.arrow"
            t = pa.table({"id": pa.array([d[3] for d in docs], pa.large_string())})
            with pa.OSFile(str(ids_path), "wb") as f, pa.ipc.new_file(f, t.schema) as w:
                w.write_table(t)
        out.append(
            KeyPiece(
                str(path),
                field="keys",
                eligible="eligible",
                sizes="sizes" if with_sizes else None,
                ids=None if ids_path is None else str(ids_path),
                id_str=True,
                shard_index=pi // 2,
                piece=pi % 2,
            )
        )
    return out


def _reference(pieces_docs: list, budget: float, with_sizes: bool):
    keys, elig, sizes, tk = [], [], [], []
    for pi, (docs, has_ids) in enumerate(pieces_docs):
        for row, (k, e, s, i) in enumerate(docs):
            keys.append(k)
            elig.append(e)
            sizes.append(s)
            tk.append(tie_key(i if has_ids else None, pi // 2, pi % 2, row))
    return compute_cutoff(
        np.array(keys, dtype=np.float64),
        budget,
        lambda idx: [tk[i] for i in idx],
        eligible=np.array(elig, dtype=bool),
        sizes=np.array(sizes, dtype=np.float64) if with_sizes else None,
    )


def _same(a, b) -> None:
    assert (a.value == b.value) or (math.isnan(a.value) and math.isnan(b.value))
    assert a.last == b.last
    assert (a.selected, a.requested, a.eligible) == (b.selected, b.requested, b.eligible)


@settings(max_examples=300, deadline=None)
@given(st.lists(_piece, min_size=0, max_size=5), _budget, st.booleans(), st.sampled_from([1, 2, 1024]))
def test_partitioned_equals_in_memory(pieces_docs, budget, with_sizes, chunk):
    with tempfile.TemporaryDirectory() as d, mock.patch.object(topk_partitioned, "MAP_CHUNK", chunk):
        pieces = _write(Path(d), pieces_docs, with_sizes)
        got = partitioned_cutoff(_serial, pieces, budget, use_sizes=with_sizes)
    _same(got, _reference(pieces_docs, budget, with_sizes))


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.floats(allow_nan=False) | st.sampled_from([0.0, -0.0, 1.0]), min_size=1, max_size=60),
    st.integers(1, 4),
    st.data(),
)
def test_random_floats_many_pieces(values, n_pieces, data):
    """Arbitrary finite and infinite floats (all 16-bit rounds matter), count and size budgets."""
    chunks = np.array_split(np.array(values, dtype=np.float64), n_pieces)
    docs = [([(float(k), True, 1 + (i % 3), f"id{i % 7}") for i, k in enumerate(c)], True) for c in chunks]
    budget = float(data.draw(st.integers(0, len(values) * 3 + 1)))
    with tempfile.TemporaryDirectory() as d:
        for sized in (False, True):
            pieces = _write(Path(d), docs, sized)
            got = partitioned_cutoff(_serial, pieces, budget, use_sizes=sized)
            _same(got, _reference(docs, budget, sized))


def test_ordered_image_round_trips_and_orders():
    vals = np.array([-math.inf, -1e308, -1.0, -5e-324, 0.0, 5e-324, 1.0, 1e308, math.inf])
    u = ordered_u64(vals)
    assert (np.diff(u.astype(object)) > 0).all()
    assert [from_ordered(int(x)) for x in u] == vals.tolist()
    assert ordered_u64(np.array([-0.0]))[0] == ordered_u64(np.array([0.0]))[0]


def test_npy_columns_negation_and_no_ids(tmp_path):
    """Quality (2-D float32, column 0) and perplexity (minus a 1-D array) layouts."""
    rng = np.random.default_rng(3)
    a = rng.integers(0, 4, size=(50, 2)).astype(np.float32)
    b = rng.integers(0, 4, size=(30, 2)).astype(np.float32)
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    pieces = [
        KeyPiece(str(tmp_path / "a.npy"), column=0, shard_index=0),
        KeyPiece(str(tmp_path / "b.npy"), column=0, shard_index=1),
    ]
    allv = np.concatenate([a[:, 0], b[:, 0]])
    tk = [tie_key(None, 0, 0, r) for r in range(50)] + [tie_key(None, 1, 0, r) for r in range(30)]
    for budget in (0, 1, 17, 40, 79, 80, 81):
        ref = compute_cutoff(allv, budget, lambda idx: [tk[i] for i in idx])
        _same(partitioned_cutoff(_serial, pieces, budget), ref)
    ppl = np.array([3.0, math.nan, 2.0, 2.0, 9.0])
    np.save(tmp_path / "p.npy", ppl)
    neg = [KeyPiece(str(tmp_path / "p.npy"), negate=True)]
    for budget in range(0, 6):
        ref = compute_cutoff(-ppl, budget, lambda idx: [tie_key(None, 0, 0, int(i)) for i in idx])
        _same(partitioned_cutoff(_serial, neg, budget), ref)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(st.floats(0.5, 1e6) | st.just(math.nan) | st.sampled_from([2.0, 3.0]), max_size=20), max_size=4))
def test_order_statistics_give_numpy_median(parts):
    with tempfile.TemporaryDirectory() as d:
        pieces = []
        for i, p in enumerate(parts):
            np.save(Path(d) / f"{i}.npy", np.array(p, dtype=np.float64))
            pieces.append(KeyPiece(str(Path(d) / f"{i}.npy")))
        summ = piece_summaries(_serial, pieces)
        allv = np.array([x for p in parts for x in p], dtype=np.float64)
        valid = allv[~np.isnan(allv)]
        assert sum(s.documents for s in summ) == len(allv)
        assert sum(s.eligible for s in summ) == len(valid)
        mx = [s.max_key for s in summ if s.max_key is not None]
        assert (max(mx) if mx else None) == (float(valid.max()) if len(valid) else None)
        n = len(valid)
        if n:
            # ascending position m is the (n - m)-th largest
            lo, hi = order_statistics(_serial, pieces, [n - (n - 1) // 2, n - n // 2])
            assert lo == np.sort(valid)[(n - 1) // 2] and hi == np.sort(valid)[n // 2]
            assert float(np.mean(np.array([lo, hi]))) == float(np.median(valid))


def test_threshold_and_forcing(monkeypatch):
    monkeypatch.delenv("DCURATE_TOPK_PARTITIONED", raising=False)
    assert not use_partitioned(10) and use_partitioned(10**9)
    monkeypatch.setenv("DCURATE_TOPK_PARTITIONED", "1")
    assert use_partitioned(0)
    monkeypatch.setenv("DCURATE_TOPK_PARTITIONED", "0")
    assert not use_partitioned(10**9)


def test_size_budget_needs_sizes(tmp_path):
    np.savez(tmp_path / "k.npz", keys=np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="sizes"):
        partitioned_cutoff(_serial, [KeyPiece(str(tmp_path / "k.npz"), field="keys")], 1, use_sizes=True)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.lists(st.floats(1.0, 1e6) | st.just(math.nan) | st.sampled_from([2.0, 3.0]), max_size=25), max_size=4),
    st.lists(st.floats(0.0, 100.0) | st.sampled_from([0.0, 30.0, 50.0, 60.0, 99.9, 100.0]), min_size=1, max_size=4),
)
def test_percentiles_equal_numpy(parts, pct):
    allv = np.array([x for p in parts for x in p], dtype=np.float64)
    valid = allv[~np.isnan(allv)]
    if not len(valid):
        return
    with tempfile.TemporaryDirectory() as d:
        pieces = []
        for i, p in enumerate(parts):
            np.save(Path(d) / f"{i}.npy", np.array(p, dtype=np.float64))
            pieces.append(KeyPiece(str(Path(d) / f"{i}.npy")))
        got = percentiles(_serial, pieces, len(valid), pct)
    assert got == [float(x) for x in np.percentile(valid, pct)]
