"""dcurate.core.topk: the shared corpus-wide cut-off, checked against the implementations quality and
select had before they were merged (kept here as oracles) and against a brute-force sort."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from dcurate.core.topk import Cutoff, compute_cutoff, count_budget, kept_mask, tie_key
from dcurate.core.workfile import dumps, loads

# -- oracles: the code the stages had before the merge ------------------------------------------------


def _old_quality(scores: np.ndarray, ids: list, frac: float) -> tuple[float, tuple | None, int]:
    """stages/quality reduce + apply before core.topk (one piece, shard 0): returns (cutoff, boundary, k)
    and the keep mask via _old_quality_mask."""
    n = len(scores)
    k = min(n, int(math.floor(frac * n + 0.5)))
    if k == 0:
        return math.inf, None, 0
    if k == n:
        return -math.inf, None, n
    cut = np.partition(scores, n - k)[n - k]
    need = k - int((scores > cut).sum())
    rows = np.flatnonzero(scores == cut)
    ties = sorted((ids[r] is None, "" if ids[r] is None else ids[r], 0, 0, int(r)) for r in rows)
    return float(cut), ties[need - 1], k


def _old_quality_mask(scores, ids, cut, boundary) -> np.ndarray:
    c = np.float32(cut) if math.isfinite(cut) else cut
    keep = scores > c
    for r in np.flatnonzero(scores == c):
        if boundary is not None:
            keep[r] = (ids[r] is None, "" if ids[r] is None else ids[r], 0, 0, int(r)) <= boundary
    return keep


def _old_select(keys, eligible, sizes, budget, ids) -> np.ndarray:
    """stages/select compute_cutoff + selected_mask before core.topk (one piece): the selected mask."""
    elig_idx = np.flatnonzero(eligible)
    total = float(sizes[elig_idx].sum()) if len(elig_idx) else 0.0
    if budget <= 0:
        return np.zeros(len(keys), bool)
    if total <= budget:
        return eligible.copy()
    ke = keys[elig_idx]
    order = np.argsort(-ke, kind="stable")
    cum = np.cumsum(sizes[elig_idx][order], dtype=np.float64)
    p = int(np.searchsorted(cum, budget, side="left"))
    v = float(ke[order[p]])
    acc = float(sizes[elig_idx][ke > v].sum())
    tie = elig_idx[ke == v]
    last = None
    for t in sorted((ids[g], 0, 0, int(g)) for g in tie):
        if acc >= budget:
            break
        acc += float(sizes[t[3]])
        last = t
    sel = eligible & (keys > v)
    if last is not None:
        for i in np.flatnonzero(eligible & (keys == v)):
            if (ids[i], 0, 0, int(i)) <= last:
                sel[i] = True
    return sel


def _ties_of(ids):
    return lambda idx: [tie_key(ids[i], 0, 0, int(i)) for i in idx]


# few distinct values so that ties at the cut-off are common
_scores = st.lists(st.sampled_from([0.0, 0.25, 0.5, 0.5, 0.75, 1.0]), min_size=0, max_size=40)


@settings(max_examples=200, deadline=None)
@given(_scores, st.data(), st.floats(0.0, 1.2))
def test_quality_values_unchanged(values, data, frac):
    scores = np.asarray(values, dtype=np.float32)
    n = len(scores)
    ids = data.draw(st.lists(st.one_of(st.none(), st.sampled_from("abcde")), min_size=n, max_size=n))
    cut_old, boundary, k = _old_quality(scores, ids, frac)
    want = _old_quality_mask(scores, ids, cut_old, boundary)
    cut = compute_cutoff(scores, count_budget(frac, n), _ties_of(ids))
    assert cut.value == cut_old and cut.last == boundary and cut.selected == k
    got = kept_mask(scores, cut, _ties_of(ids))
    assert got.tolist() == want.tolist()
    assert int(got.sum()) == k


@settings(max_examples=200, deadline=None)
@given(_scores, st.data(), st.booleans(), st.integers(-1, 60))
def test_select_values_unchanged(values, data, tokens, budget):
    keys = np.asarray(values, dtype=np.float64)
    n = len(keys)
    ids = data.draw(st.lists(st.sampled_from(["a", "b", "c", "d"]), min_size=n, max_size=n))
    elig = np.asarray(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)
    sizes = np.asarray(data.draw(st.lists(st.integers(1, 9), min_size=n, max_size=n)), dtype=np.float64)
    unit = sizes if tokens else np.ones(n)
    want = _old_select(keys, elig, unit, float(budget), ids)
    cut = compute_cutoff(keys, float(budget), _ties_of(ids), eligible=elig, sizes=sizes if tokens else None)
    got = kept_mask(keys, cut, _ties_of(ids), eligible=elig)
    assert got.tolist() == want.tolist()
    assert cut.selected == int(got.sum())


@settings(max_examples=100, deadline=None)
@given(_scores, st.data(), st.integers(0, 45))
def test_count_cutoff_is_a_sort(values, data, k):
    """Count mode keeps exactly the first k documents of (key desc, tie key asc), NaN never."""
    keys = np.asarray(values, dtype=np.float64)
    n = len(keys)
    nan = data.draw(st.lists(st.booleans(), min_size=n, max_size=n))
    keys[np.asarray(nan, dtype=bool)] = np.nan
    ids = data.draw(st.lists(st.one_of(st.none(), st.sampled_from("xyz")), min_size=n, max_size=n))
    valid = [i for i in range(n) if not math.isnan(keys[i])]
    ranked = sorted(valid, key=lambda i: (-keys[i], tie_key(ids[i], 0, 0, i)))
    want = set(ranked[:k])
    cut = compute_cutoff(keys, k, _ties_of(ids))
    got = kept_mask(keys, cut, _ties_of(ids))
    assert set(np.flatnonzero(got).tolist()) == want
    assert cut.selected == len(want) and cut.eligible == len(valid)


def test_tie_order_and_input_order_across_pieces():
    # equal keys and ids: input order (shard, piece, row) decides; missing ids go last
    assert tie_key("a", 1, 0, 5) < tie_key("a", 1, 1, 0) < tie_key("b", 0, 0, 0) < tie_key(None, 0, 0, 0)
    keys = np.array([2.0, 1.0, 1.0, 1.0])
    ids = ["q", None, "p", "p"]
    cut = compute_cutoff(keys, 3, _ties_of(ids))
    assert cut.value == 1.0 and cut.last == (False, "p", 0, 0, 3) and cut.selected == 3
    assert kept_mask(keys, cut, _ties_of(ids)).tolist() == [True, False, True, True]


def test_edges_and_work_file_round_trip():
    keys = np.array([3.0, 1.0, 2.0])
    ids = ["a", "b", "c"]
    assert compute_cutoff(keys, 0, _ties_of(ids)) == Cutoff(math.inf, None, 0, 0, 3)
    assert compute_cutoff(keys, 3, _ties_of(ids)) == Cutoff(-math.inf, None, 3, 0, 3)
    assert count_budget(0.5, 5) == 3 and count_budget(0.1, 4) == 0 and count_budget(2.0, 4) == 4
    cut = compute_cutoff(np.array([1.0, 1.0, 0.0]), 1, _ties_of(ids))
    back = loads(dumps({"cutoff": cut}))["cutoff"]
    assert back == cut and isinstance(back.last, tuple)
