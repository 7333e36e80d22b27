"""The exact top-k cut-off of :mod:`dcurate.core.topk`, computed without gathering the keys.

:func:`compute_cutoff` needs every key of the corpus in the driver's memory. For large corpora the
keys stay in the per-piece work files the scans wrote, and the reduce fans out over the pieces
(``ctx.map``; the tasks get file paths, never arrays):

* every float64 key is mapped to an order-preserving ``uint64`` (NaN keys and ineligible documents
  are left out, ``-0.0`` counts as ``0.0``);
* radix select, 16 bits a round, at most 4 rounds: each task returns the sparse 65,536-bin histogram
  (counts, and sums of ``sizes`` for a token budget) of its keys whose higher bits equal the prefix
  found so far; the driver sums them and finds the bin where the budget is reached. Only pieces
  with keys in that bin take part in the next round. After the last round the prefix is the exact
  key ``v`` at which the budget is reached;
* the pieces holding keys equal to ``v`` return the tie keys of those documents, and ``last`` is
  chosen exactly as :func:`compute_cutoff` chooses it.

The driver holds histograms, per-piece summaries and the tied documents' tie keys only. The result
equals :func:`compute_cutoff`'s field for field. :func:`order_statistics` uses the same rounds for
exact k-th largest values (the perplexity stage's median).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from dcurate.core import stagefiles
from dcurate.core.topk import Cutoff, tie_key

__all__ = [
    "THRESHOLD",
    "KeyPiece",
    "from_ordered",
    "order_statistics",
    "ordered_u64",
    "partitioned_cutoff",
    "percentiles",
    "piece_summaries",
    "use_partitioned",
]

#: Corpora with more documents than this take the partitioned path (below it gathering the keys in
#: the driver is cheaper). ``DCURATE_TOPK_PARTITIONED=1`` forces the partitioned path, ``=0`` the
#: in-memory one.
THRESHOLD = 2_000_000
ENV = "DCURATE_TOPK_PARTITIONED"

#: Pieces per ``ctx.map`` call of a round: their histograms are summed before the next call.
MAP_CHUNK = 1024

_BITS = 16
_BINS = 1 << _BITS
_ROUNDS = 64 // _BITS
_SIGN = np.uint64(1 << 63)
_ALL = np.uint64(0xFFFF_FFFF_FFFF_FFFF)

Mapper = Callable[[Callable[[Any], Any], list], list]


def use_partitioned(documents: int) -> bool:
    """Whether a corpus of ``documents`` documents takes the partitioned path."""
    force = os.environ.get(ENV, "").strip()
    if force in ("1", "0"):
        return force == "1"
    return documents > THRESHOLD


@dataclass(frozen=True)
class KeyPiece:
    """Where one piece's keys live (picklable; paths only, so that tasks may run on other nodes).

    ``keys`` is a ``.npy`` file (``field`` None) or an ``.npz`` archive (``field`` names the array);
    ``column`` picks a column of a 2-D array; ``negate`` uses minus the stored values (the lowest
    value is the best). ``eligible`` / ``sizes`` name arrays of the same ``.npz``. ``ids`` is an
    Arrow IPC file with an ``id`` column (None: the piece's documents have no id); ``id_str``
    turns ids into strings, as the stage's in-memory path does."""

    keys: str
    field: str | None = None
    column: int | None = None
    negate: bool = False
    eligible: str | None = None
    sizes: str | None = None
    ids: str | None = None
    id_str: bool = False
    shard_index: int = 0
    piece: int = 0


def ordered_u64(keys: np.ndarray) -> np.ndarray:
    """The order-preserving ``uint64`` image of float64 keys (not NaN): ``a < b`` iff
    ``u(a) < u(b)``, with ``-0.0`` and ``0.0`` equal."""
    k = np.asarray(keys, dtype=np.float64) + 0.0  # -0.0 + 0.0 == +0.0
    u = k.view(np.uint64)
    return np.where((u & _SIGN) != 0, u ^ _ALL, u | _SIGN)


def from_ordered(u: int) -> float:
    """The float64 whose :func:`ordered_u64` image is ``u``."""
    x = np.uint64(u)
    bits = x ^ _SIGN if (x & _SIGN) else x ^ _ALL
    return float(np.array([bits], dtype=np.uint64).view(np.float64)[0])


def _load(p: KeyPiece, use_sizes: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(keys, rows, sizes) of the piece's eligible documents with a key that is not NaN."""
    if p.field is None:
        arr = stagefiles.load_npy(p.keys)
        extra: dict[str, np.ndarray] = {}
    else:
        extra = stagefiles.load_npz(p.keys)
        arr = extra[p.field]
    keys = np.asarray(arr if p.column is None else arr[:, p.column], dtype=np.float64)
    if p.negate:
        keys = -keys
    ok = ~np.isnan(keys)
    if p.eligible is not None:
        ok &= np.asarray(extra[p.eligible], dtype=bool)
    rows = np.flatnonzero(ok)
    sizes = None
    if use_sizes:
        if p.sizes is None:
            raise ValueError(f"{p.keys}: a size budget needs the documents' sizes")
        sizes = np.asarray(extra[p.sizes])[rows].astype(np.int64)
    return keys[rows], rows, sizes


def _histogram_task(arg: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, int, int]:
    """Task: sparse histogram of one piece's keys under ``prefix`` (round ``r``): bins, counts,
    size sums (or None), and the piece's eligible documents and their total size."""
    piece, r, prefix, use_sizes = arg
    keys, _, sizes = _load(piece, use_sizes)
    n_ok = len(keys)
    total = int(sizes.sum()) if sizes is not None else n_ok
    u = ordered_u64(keys)
    shift = np.uint64(64 - _BITS * (r + 1))
    if r:
        m = (u >> np.uint64(64 - _BITS * r)) == np.uint64(prefix)
        u = u[m]
        sizes = sizes[m] if sizes is not None else None
    bins = ((u >> shift) & np.uint64(_BINS - 1)).astype(np.int64)
    uniq, inv = np.unique(bins, return_inverse=True)
    counts = np.bincount(inv, minlength=len(uniq)).astype(np.int64)
    size_sums = None
    if sizes is not None:
        size_sums = np.zeros(len(uniq), dtype=np.int64)
        np.add.at(size_sums, inv, sizes)
    return uniq, counts, size_sums, n_ok, total


def _ties_task(arg: tuple) -> list[tuple[tuple, int]]:
    """Task: (tie key, size) of the piece's documents whose key's image is ``u``."""
    piece, u, use_sizes = arg
    keys, rows, sizes = _load(piece, use_sizes)
    hit = np.flatnonzero(ordered_u64(keys) == np.uint64(u))
    if not len(hit):
        return []
    rows_hit = rows[hit]
    if piece.ids is not None:
        col = stagefiles.read_arrow(piece.ids).column("id").combine_chunks()
        import pyarrow as pa

        ids: list[Any] = col.take(pa.array(rows_hit)).to_pylist()
        if piece.id_str:
            ids = [None if i is None else str(i) for i in ids]
    else:
        ids = [None] * len(rows_hit)
    unit = sizes[hit].tolist() if sizes is not None else [1] * len(hit)
    return [
        (tie_key(i, piece.shard_index, piece.piece, int(r)), int(s))
        for i, r, s in zip(ids, rows_hit.tolist(), unit, strict=True)
    ]


@dataclass
class _Select:
    """Where the radix rounds ended: the key image ``u``, and the count and size of the keys above."""

    u: int
    above_n: int
    above_s: int
    pieces: list[int]  # indices of the pieces holding keys equal to u


@dataclass
class _Round:
    """One round's histograms summed over the pieces, and which bins each piece has."""

    counts: np.ndarray
    sizes: np.ndarray
    piece_bins: list[np.ndarray]  # per piece asked, its non-empty bins (uint16)
    eligible: int
    total: int


def _round(mapper: Mapper, pieces: list[KeyPiece], r: int, prefix: int, use_sizes: bool) -> _Round:
    """Round ``r`` over ``pieces``, mapped in chunks whose histograms are summed as they come
    (the driver never holds more than a chunk's sparse histograms)."""
    cnt = np.zeros(_BINS, dtype=np.int64)
    siz = np.zeros(_BINS, dtype=np.int64)
    piece_bins: list[np.ndarray] = []
    eligible = total = 0
    for lo in range(0, len(pieces), MAP_CHUNK):
        for bins, c, s, n_ok, tot in mapper(
            _histogram_task, [(p, r, prefix, use_sizes) for p in pieces[lo : lo + MAP_CHUNK]]
        ):
            cnt[bins] += c  # bins are unique within a piece
            if s is not None:
                siz[bins] += s
            piece_bins.append(np.asarray(bins, dtype=np.uint16))
            eligible += int(n_ok)
            total += int(tot)
    return _Round(cnt, siz, piece_bins, eligible, total)


def _radix(
    mapper: Mapper, pieces: list[KeyPiece], budget: float, use_sizes: bool, first: _Round | None = None
) -> _Select:
    """Largest key v with (count or size of keys >= v) >= budget (which must be reachable)."""
    active = list(range(len(pieces)))
    prefix = 0
    above_n = above_s = 0
    for r in range(_ROUNDS):
        res = first if r == 0 and first is not None else _round(mapper, [pieces[i] for i in active], r, prefix, use_sizes)
        amount = res.sizes if use_sizes else res.counts
        from_top = np.cumsum(amount[::-1])
        reach = np.flatnonzero((from_top + (above_s if use_sizes else above_n)) >= budget)
        if not len(reach):  # pragma: no cover - guarded by the callers' totals
            raise RuntimeError("top-k: the budget is not reachable in the partitioned histogram")
        b = _BINS - 1 - int(reach[0])
        above_n += int(res.counts[b + 1 :].sum())
        above_s += int(res.sizes[b + 1 :].sum())
        prefix = (prefix << _BITS) | b
        active = [i for i, bins in zip(active, res.piece_bins, strict=True) if np.any(bins == b)]
    return _Select(prefix, above_n, above_s, active)


def partitioned_cutoff(
    mapper: Mapper, pieces: list[KeyPiece], budget: float, *, use_sizes: bool = False
) -> Cutoff:
    """:func:`dcurate.core.topk.compute_cutoff` over the keys of ``pieces`` (documents counted,
    or, with ``use_sizes``, their integer sizes), fanned out with ``mapper`` (``ctx.map``)."""
    first = _round(mapper, pieces, 0, 0, use_sizes)
    n_elig, total = first.eligible, first.total
    if budget <= 0:
        return Cutoff(math.inf, None, 0, 0, n_elig)
    if total <= budget:
        return Cutoff(-math.inf, None, n_elig, 0, n_elig)
    sel = _radix(mapper, pieces, budget, use_sizes, first)
    v = from_ordered(sel.u)
    found = mapper(_ties_task, [(pieces[i], sel.u, use_sizes) for i in sel.pieces])
    ties = sorted(t for part in found for t in part)
    acc = sel.above_s if use_sizes else sel.above_n
    n_sel = sel.above_n
    last = None
    for t, s in ties:
        if acc >= budget:
            break
        acc += s
        n_sel += 1
        last = t
    return Cutoff(v, last, n_sel, 0, n_elig)


@dataclass
class PieceSummary:
    """One piece's keys in brief (NaN keys not counted as eligible)."""

    documents: int
    eligible: int
    max_key: float | None  # largest eligible key (None: none)


def _summary_task(piece: KeyPiece) -> PieceSummary:
    keys, _, _ = _load(piece, False)
    if piece.field is None:
        n = int(stagefiles.load_npy(piece.keys, mmap=True).shape[0])
    else:
        n = int(stagefiles.load_npz(piece.keys)[piece.field].shape[0])
    return PieceSummary(n, len(keys), float(keys.max()) if len(keys) else None)


def piece_summaries(mapper: Mapper, pieces: list[KeyPiece]) -> list[PieceSummary]:
    """Per piece: documents, eligible keys (not NaN), largest key."""
    return mapper(_summary_task, list(pieces))


def order_statistics(mapper: Mapper, pieces: list[KeyPiece], ranks: list[int]) -> list[float]:
    """The ``k``-th largest eligible key (1-based ``k`` in ``ranks``; each at most the number of
    eligible keys), exactly, without gathering the keys."""
    out = []
    for k in ranks:
        if k < 1:
            raise ValueError(f"order statistic rank {k} < 1")
        out.append(from_ordered(_radix(mapper, pieces, float(k), False).u))
    return out


def percentiles(mapper: Mapper, pieces: list[KeyPiece], eligible: int, pct: list[float]) -> list[float]:
    """``np.percentile(keys, pct)`` (its default 'linear' method) over the ``eligible`` keys that
    are not NaN, from the two order statistics around each percentile (numpy's arithmetic,
    checked against numpy by the tests)."""
    if eligible < 1:
        raise ValueError("percentiles of no keys")
    q = np.true_divide(np.asarray(pct, dtype=np.float64), 100)
    virtual = (eligible - 1) * q
    prev = np.floor(virtual)
    top = virtual >= eligible - 1
    lo = np.where(top, eligible - 1, prev).astype(np.int64)  # ascending positions
    hi = np.where(top, eligible - 1, prev + 1).astype(np.int64)
    ranks = sorted({int(eligible - p) for p in np.concatenate([lo, hi]).tolist()})
    value = dict(zip(ranks, order_statistics(mapper, pieces, ranks), strict=True))
    a = np.array([value[int(eligible - p)] for p in lo.tolist()], dtype=np.float64)
    b = np.array([value[int(eligible - p)] for p in hi.tolist()], dtype=np.float64)
    gamma = virtual - prev
    diff = b - a
    out = a + diff * gamma
    np.subtract(b, diff * (1 - gamma), out=out, where=gamma >= 0.5)
    return [float(x) for x in out]
