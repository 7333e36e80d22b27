"""The MinHash method's candidate documents: set digests, one stored copy per distinct shingle set,
the second scan's candidate lists, and the reduce tasks (grouping, similarity).

Why two scans: the exact shingle sets that verification needs are about 1.2x the input's text
(one 64-bit hash per word), while only candidate documents -- those sharing a band key with
another document -- are ever compared. So the first scan keeps per document only its band keys
(fixed-width ``uint64``, bucketed) and a 128-bit digest of its shingle set (xxh3-128 of the sorted
hashes); the first reduce finds the candidate pairs, and the second scan re-reads only the pieces
that hold candidates and stores data for those documents alone. Documents whose shingle sets have
equal digests are one *class*: their Jaccard is 1 without comparing, and only the class's first
document (its *representative*) stores its shingle set (or signature), which keeps copies of a
document from multiplying the work files. Results are those of comparing every pair's own sets:
equal sets have equal digests, and different sets with equal 128-bit digests are as unlikely as a
collision of the 64-bit shingle hashes themselves is rare.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from dcurate.stages.dedup import graph, pairs, store

__all__ = [
    "MAX_ALL_PAIRS",
    "set_digests",
    "representatives",
    "write_candidate_lists",
    "flush_candidates",
    "group_task",
    "similarity_task",
    "warm_kernels",
]

# Bucket groups of at most this many documents give every pair as a candidate; larger ones a
# star to their first member plus a chain (see dedup_graph).
MAX_ALL_PAIRS = 16


def set_digests(offsets: np.ndarray, hashes: np.ndarray) -> np.ndarray:
    """``uint64[n, 2]``: xxh3-128 of each document's sorted shingle hashes (its bytes)."""
    raw = np.ascontiguousarray(hashes, dtype=np.uint64).view(np.uint8).data
    o = (np.asarray(offsets, dtype=np.int64) * 8).tolist()
    digest = xxhash.xxh3_128_digest
    joined = b"".join([digest(raw[a:b]) for a, b in zip(o[:-1], o[1:], strict=True)])
    return np.frombuffer(joined, dtype=np.uint64).reshape(-1, 2).copy()


def representatives(nodes: np.ndarray, digests: np.ndarray) -> np.ndarray:
    """For each of the sorted ``nodes``, the first node (in run order) with the same digest."""
    if len(nodes) == 0:
        return nodes.copy()
    order = np.lexsort((np.arange(len(nodes)), digests[:, 1], digests[:, 0]))
    d = digests[order]
    new = np.ones(len(order), dtype=bool)
    new[1:] = (d[1:, 0] != d[:-1, 0]) | (d[1:, 1] != d[:-1, 1])
    first = order[new][np.cumsum(new) - 1]  # the smallest index of each run (stable order)
    rep = np.empty(len(nodes), dtype=np.int64)
    rep[order] = first
    return nodes[rep]


def write_candidate_lists(
    folder: Path, nodes: np.ndarray, is_rep: np.ndarray, piece_rows: dict[str, int] | None = None
) -> dict[str, str]:
    """One ``.npz`` per shard piece: the sorted rows of its candidate documents, whether each
    is its class's representative (it then stores its shingle set in the second scan) and the
    number of documents the first scan read in the piece (``n_rows``, from ``piece_rows``)."""
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, str] = {}
    if len(nodes) == 0:
        return out
    packed = store.ref_piece(nodes)
    cuts = np.flatnonzero(np.diff(packed)) + 1
    for s, e in zip(np.concatenate(([0], cuts)), np.concatenate((cuts, [len(nodes)])), strict=True):
        key = store.piece_key(int(packed[s]))
        path = folder / f"{key}.npz"
        extra: dict[str, Any] = {"n_rows": np.int64(piece_rows[key])} if piece_rows and key in piece_rows else {}
        np.savez(path, rows=store.ref_row(nodes[s:e]), rep=is_rep[s:e], **extra)
        out[key] = str(path)
    return out


def flush_candidates(buf: list[dict[str, Any]], folder: Path) -> dict:
    """Write the second scan's buffered candidate data as one sparse chunk (its JSON form)."""
    docs: dict[str, np.ndarray] = {}
    if "lens" in buf[0]:
        lens = np.concatenate([b["lens"] for b in buf])
        soff = np.zeros(len(lens) + 1, dtype=np.int64)
        np.cumsum(lens, out=soff[1:])
        docs["soff"], docs["shingles"] = soff, np.concatenate([b["shingles"] for b in buf])
    for name in ("sigs", "value"):
        if name in buf[0]:
            docs[name] = np.concatenate([b[name] for b in buf], axis=0)
    ids = pa.concat_arrays([pc.cast(b["ids"], pa.string()) for b in buf])
    refs = np.concatenate([b["refs"] for b in buf])
    return store.write_sparse_chunk(folder, refs, docs, ids).to_json()


# -- reduce tasks (top-level functions: they run in worker processes) ------------------------------


def group_task(task):
    """Candidate pairs of key buckets ``[b0, b1)``: returned, or with a pair folder (MinHash)
    written there by pair bucket (:func:`dcurate.stages.dedup.pairs.write_task_pairs`)."""
    method, chunks_json, b0, b1, against = task[:5]
    pair_folder = task[5] if len(task) > 5 else None
    chunks = [store.Chunk.from_json(c) for c in chunks_json]
    if method == "minhash":
        keys, refs = store.read_bucket_range(chunks, b0, b1)
        u, v, _ = graph.candidate_edges(keys, refs, MAX_ALL_PAIRS, against)
        if pair_folder is not None:
            return pairs.write_task_pairs(Path(pair_folder), f"g{b0:05d}", u, v)
        return u, v
    keys, refs, aux = store.read_bucket_range(chunks, b0, b1, with_aux=True)
    if method == "exact":
        # dense id per distinct 128-bit hash (hi = key, lo = aux), then star + chain edges
        order = np.lexsort((aux, keys))
        k, a = keys[order], aux[order]
        change = np.ones(len(k), dtype=bool)
        change[1:] = (k[1:] != k[:-1]) | (a[1:] != a[:-1])
        gid = np.empty(len(k), dtype=np.uint64)
        gid[order] = np.cumsum(change).astype(np.uint64)
        u, v, _ = graph.candidate_edges(gid, refs, 1, against)
        return u, v
    # paragraphs: the first occurrence (ref, line) of each line hash stays, later ones are cut
    order = np.lexsort((aux, refs, keys))
    k = keys[order]
    later = np.zeros(len(k), dtype=bool)
    later[1:] = k[1:] == k[:-1]
    return refs[order][later], aux[order][later]


def similarity_task(task) -> np.ndarray:
    """Similarity of pairs ``(u[q], v[q])``: exact shingle Jaccard or the signature estimate."""
    mode, chunks_json, u, v = task
    index = store.ChunkIndex([store.Chunk.from_json(c) for c in chunks_json])
    docs, inv = np.unique(np.concatenate([u, v]), return_inverse=True)
    ia, ib = inv[: len(u)], inv[len(u) :]
    if mode == "exact":
        offsets, hashes = index.gather_sets(docs)
        return graph.set_jaccard(offsets, hashes, ia, ib)
    proto = next(c for c in index.chunks if c.has("sigs.npy")).load("sigs.npy")
    sigs = index.gather_rows(docs, "sigs", proto.dtype, proto.shape[1])
    return (sigs[ia] == sigs[ib]).mean(axis=1)


def warm_kernels() -> None:
    """Load the MinHash and graph kernels (numba cache, lookup tables), so that processes forked
    afterwards (the pool's workers) start with numba's compiler ready; tiny batches would take
    :mod:`dcurate.stages.dedup.small`'s numpy path, so its limits are off meanwhile."""
    from dcurate.stages.dedup import minhash as mh
    from dcurate.stages.dedup import small

    limits = small.SMALL_TEXT_BYTES, small.SMALL_HASHES, small.SMALL_DOCS
    small.SMALL_TEXT_BYTES = small.SMALL_HASHES = small.SMALL_DOCS = -1
    try:
        off, h = mh.shingle_hashes(["warm up the shingle kernel with a few words", "é 東京"])
        for scheme in ("affine32", "legacy"):
            mh.band_keys(mh.signatures(off, h, 128, 1, scheme), 13, 7)
        graph.candidate_edges(np.array([1, 1], np.uint64), np.array([0, 1], np.uint64))
        comp = graph.Components(np.array([0, 1], np.uint64), against=True)
        comp.add(np.array([0], np.uint64), np.array([1], np.uint64))
        comp.finish()
        graph.set_jaccard(off, h, np.array([0]), np.array([1]))
    finally:
        small.SMALL_TEXT_BYTES, small.SMALL_HASHES, small.SMALL_DOCS = limits
