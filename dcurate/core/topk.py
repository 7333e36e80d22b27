"""The corpus-wide top-k cut-off shared by every global "keep the best documents" stage.

Documents are taken in decreasing key order until a budget is reached: a number of documents
(every size 1) or of tokens (the last document taken may cross the budget). Documents whose key
equals the key at which the budget is reached are tie-broken by :func:`tie_key`: id (documents
without an id after those with one), then input order (shard index, piece, row). NaN keys and
ineligible documents are never taken.

The reduce phase calls :func:`compute_cutoff` once on the keys of the whole corpus (above
:data:`dcurate.core.topk_partitioned.THRESHOLD` documents, the same cut-off comes from
:func:`dcurate.core.topk_partitioned.partitioned_cutoff` without gathering the keys); the apply phase
calls :func:`kept_mask` per batch, which needs the ids of tied rows only. The :class:`Cutoff` is a
JSON work file value (it travels inside plans).

Stages use it with keys: quality (first score column, largest kept), select (DSIR / ZIP-FIT
keys, eligible = long enough), perplexity (minus the perplexity, so the lowest is kept).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dcurate.core.workfile import work_type

__all__ = ["FORMAT", "Cutoff", "compute_cutoff", "count_budget", "kept_mask", "tie_key"]

#: Version of the plans built on :class:`Cutoff`; stages put it in their fingerprint so that a run
#: interrupted under an older plan layout starts its global stages again instead of resuming.
FORMAT = 1

TieKey = tuple[Any, ...]


def tie_key(doc_id: Any, shard_index: int, piece: int, row: int) -> TieKey:
    """Order among documents with equal keys: by id (missing ids last), then input order."""
    return (doc_id is None, "" if doc_id is None else doc_id, int(shard_index), int(piece), int(row))


def count_budget(fraction: float, n: int) -> int:
    """``round(fraction * n)`` with halves rounded up, at most ``n``."""
    return min(int(n), int(math.floor(fraction * n + 0.5)))


@work_type
@dataclass
class Cutoff:
    """Kept = eligible and (key > value, or key == value and tie key <= last)."""

    value: float  # +inf: nothing kept; -inf: every eligible document
    last: tuple | None = None  # tie key of the last kept document with key == value
    selected: int = 0  # documents kept
    requested: int = 0  # the budget (documents or tokens), as the stage reports it
    eligible: int = 0  # eligible documents with a key that is not NaN


def compute_cutoff(
    keys: np.ndarray,
    budget: float,
    tie_keys: Callable[[np.ndarray], Sequence[TieKey]],
    *,
    eligible: np.ndarray | None = None,
    sizes: np.ndarray | None = None,
) -> Cutoff:
    """The exact cut-off over ``keys`` (all documents of the corpus, in any fixed order).

    ``sizes`` None counts documents; otherwise each document costs its size and documents are taken
    until the running total reaches ``budget``. ``tie_keys(idx)`` returns the :func:`tie_key` of
    the documents at indices ``idx`` (called once, with the documents tied at the cut-off)."""
    keys = np.asarray(keys)
    ok = ~np.isnan(keys) if keys.dtype.kind == "f" else np.ones(len(keys), dtype=bool)
    if eligible is not None:
        ok &= np.asarray(eligible, dtype=bool)
    elig_idx = np.flatnonzero(ok)
    n_elig = len(elig_idx)
    ke = keys[elig_idx]
    unit = None if sizes is None else np.asarray(sizes)[elig_idx].astype(np.float64)
    total = float(n_elig) if unit is None else (float(unit.sum()) if n_elig else 0.0)
    if budget <= 0:
        return Cutoff(math.inf, None, 0, 0, n_elig)
    if total <= budget:
        return Cutoff(-math.inf, None, n_elig, 0, n_elig)
    if unit is None:
        k = int(math.ceil(budget))  # documents needed to reach the budget
        v = float(np.partition(ke, n_elig - k)[n_elig - k])  # the k-th largest key
    else:
        order = np.argsort(-ke, kind="stable")
        cum = np.cumsum(unit[order], dtype=np.float64)
        p = int(np.searchsorted(cum, budget, side="left"))  # first position reaching the budget
        v = float(ke[order[p]])
    greater = ke > v
    acc = float(greater.sum()) if unit is None else float(unit[greater].sum())
    n_sel = int(greater.sum())
    tied = elig_idx[ke == v]
    tied_unit = np.ones(len(tied)) if unit is None else unit[ke == v]
    info = sorted(zip(tie_keys(tied), range(len(tied)), strict=True))
    last = None
    for t, j in info:
        if acc >= budget:
            break
        acc += float(tied_unit[j])
        n_sel += 1
        last = t
    return Cutoff(v, last, n_sel, 0, n_elig)


def kept_mask(
    keys: np.ndarray,
    cut: Cutoff,
    tie_keys: Callable[[np.ndarray], Sequence[TieKey]],
    *,
    eligible: np.ndarray | None = None,
) -> np.ndarray:
    """Which of a batch's documents the cut-off keeps. ``tie_keys(rows)`` gives the tie keys of
    the batch rows ``rows`` (only rows whose key equals the cut-off are asked for)."""
    keys = np.asarray(keys)
    ok = np.ones(len(keys), dtype=bool) if eligible is None else np.asarray(eligible, dtype=bool).copy()
    with np.errstate(invalid="ignore"):
        keep = ok & (keys > cut.value)
        if cut.last is not None:
            rows = np.flatnonzero(ok & (keys == cut.value))
            if len(rows):
                last = tuple(cut.last)
                for r, t in zip(rows.tolist(), tie_keys(rows), strict=True):
                    if t <= last:
                        keep[r] = True
    return keep
