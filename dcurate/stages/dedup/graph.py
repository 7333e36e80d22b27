"""Candidate edges, verification and connected components for the dedup stage (numba kernels).

Grouping: documents that share a band key form a *bucket group*. For a group of at most
``max_all_pairs`` members every pair is a candidate (so a member that fails verification against
one member can still join through another); larger groups -- almost always exact or
near-exact copies, where all-pairs would be quadratic -- give a star to their first member plus a
chain through consecutive members (2 edges per member).

Components: union-find over the verified edges, always attaching the larger root to the smaller,
so each component's root is its first document in run order. :class:`Components` takes the edges
as a stream of batches (the MinHash reduce verifies the candidate pairs a slice at a time): it
holds a parent array over the *universe* of candidate documents (plus, with ``--against``, each
corpus document's best reference so far), never the edges, so the driver's memory is
O(candidate documents) plus one batch, however many pairs are verified.
"""

from __future__ import annotations

import numpy as np

from dcurate.core.jit import njit
from dcurate.core.workfile import BadWorkFile


@njit(cache=True)
def _count_edges(refs, starts, ends, max_all_pairs, against, flag):
    total = 0
    for g in range(starts.shape[0]):
        s, e = starts[g], ends[g]
        n = e - s
        if not against:
            total += n * (n - 1) // 2 if n <= max_all_pairs else 2 * (n - 1)
        else:
            nref = 0
            for i in range(s, e):
                if refs[i] & flag:
                    nref += 1
            ncorp = n - nref
            total += ncorp * nref if n <= max_all_pairs else (ncorp if nref > 0 else 0)
    return total


@njit(cache=True)
def _fill_edges(refs, starts, ends, max_all_pairs, against, flag, u, v):
    k = 0
    for g in range(starts.shape[0]):
        s, e = starts[g], ends[g]
        n = e - s
        if not against:
            if n <= max_all_pairs:
                for i in range(s, e):
                    for j in range(i + 1, e):
                        u[k] = refs[i]
                        v[k] = refs[j]
                        k += 1
            else:
                for i in range(s + 1, e):
                    u[k] = refs[s]
                    v[k] = refs[i]
                    k += 1
                    u[k] = refs[i - 1]
                    v[k] = refs[i]
                    k += 1
        else:
            # refs are sorted, so reference-set documents (top bit set) come last in the group
            if n <= max_all_pairs:
                for i in range(s, e):
                    if refs[i] & flag:
                        continue
                    for j in range(i + 1, e):
                        if refs[j] & flag:
                            u[k] = refs[i]
                            v[k] = refs[j]
                            k += 1
            else:
                first_ref = -1
                for i in range(s, e):
                    if refs[i] & flag:
                        first_ref = i
                        break
                if first_ref >= 0:
                    for i in range(s, first_ref):
                        u[k] = refs[i]
                        v[k] = refs[first_ref]
                        k += 1
    return k


def unique_pairs(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique (u, v) pairs."""
    if len(u) == 0:
        return u, v
    order = np.lexsort((v, u))
    u, v = u[order], v[order]
    keep = np.ones(len(u), dtype=bool)
    keep[1:] = (u[1:] != u[:-1]) | (v[1:] != v[:-1])
    return u[keep], v[keep]


def group_bounds(keys: np.ndarray, min_size: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Start/end of runs of equal values in sorted ``keys`` with at least ``min_size`` members."""
    if len(keys) == 0:
        z = np.zeros(0, dtype=np.int64)
        return z, z
    change = np.flatnonzero(keys[1:] != keys[:-1]) + 1
    starts = np.concatenate(([0], change)).astype(np.int64)
    ends = np.concatenate((change, [len(keys)])).astype(np.int64)
    big = (ends - starts) >= min_size
    return starts[big], ends[big]


def candidate_edges(
    keys: np.ndarray, refs: np.ndarray, max_all_pairs: int = 16, against: bool = False
) -> tuple[np.ndarray, np.ndarray, int]:
    """Unique candidate pairs (u < v) of documents sharing a key; also the number of bucket groups.

    ``keys``/``refs`` in any order. With ``against``, only pairs of one corpus document and one
    reference document (flag bit 63) are produced."""
    order = np.lexsort((refs, keys))
    k, r = keys[order], refs[order]
    starts, ends = group_bounds(k)
    if len(starts) == 0:  # no shared key (no compiled kernel needed)
        z = np.zeros(0, dtype=np.uint64)
        return z, z.copy(), 0
    flag = np.uint64(1 << 63)
    n = _count_edges(r, starts, ends, max_all_pairs, against, flag)
    u = np.empty(n, dtype=np.uint64)
    v = np.empty(n, dtype=np.uint64)
    m = _fill_edges(r, starts, ends, max_all_pairs, against, flag, u, v)
    u, v = unique_pairs(u[:m], v[:m])
    return u, v, len(starts)


@njit(cache=True)
def _sort_segments(offsets, hashes):
    for d in range(offsets.shape[0] - 1):
        a, b = offsets[d], offsets[d + 1]
        if b - a > 1:
            hashes[a:b] = np.sort(hashes[a:b])


@njit(cache=True)
def _pair_jaccard(offsets, hashes, ia, ib, out):
    """Exact Jaccard of sorted hash sets (duplicates inside a set are counted once)."""
    for p in range(ia.shape[0]):
        i, j = offsets[ia[p]], offsets[ib[p]]
        ie, je = offsets[ia[p] + 1], offsets[ib[p] + 1]
        inter = 0
        union = 0
        while i < ie or j < je:
            if j >= je or (i < ie and hashes[i] < hashes[j]):
                x = hashes[i]
                i += 1
                while i < ie and hashes[i] == x:
                    i += 1
            elif i >= ie or hashes[j] < hashes[i]:
                x = hashes[j]
                j += 1
                while j < je and hashes[j] == x:
                    j += 1
            else:
                x = hashes[i]
                inter += 1
                i += 1
                j += 1
                while i < ie and hashes[i] == x:
                    i += 1
                while j < je and hashes[j] == x:
                    j += 1
            union += 1
        out[p] = inter / union if union > 0 else 0.0


def set_jaccard(
    offsets: np.ndarray, hashes: np.ndarray, ia: np.ndarray, ib: np.ndarray, presorted: bool = True
) -> np.ndarray:
    """Exact Jaccard of pairs (ia[p], ib[p]) of the ragged sets (each sorted, or sorted here in
    place when ``presorted`` is false)."""
    out = np.empty(len(ia), dtype=np.float64)
    if len(ia) == 0:
        return out
    if not presorted:
        _sort_segments(offsets, hashes)
    _pair_jaccard(offsets, hashes, ia.astype(np.int64), ib.astype(np.int64), out)
    return out


@njit(cache=True)
def _find(parent, x):
    while parent[x] != x:
        parent[x] = parent[parent[x]]
        x = parent[x]
    return x


@njit(cache=True)
def _components(n, a, b):
    parent = np.arange(n)
    for e in range(a.shape[0]):
        ra = _find(parent, a[e])
        rb = _find(parent, b[e])
        if ra < rb:
            parent[rb] = ra
        elif rb < ra:
            parent[ra] = rb
    for x in range(n):
        parent[x] = _find(parent, x)
    return parent


def components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Root (smallest member index) of every node 0..n-1 given edges (a, b)."""
    if len(a) == 0:
        return np.arange(n)
    return _components(n, a.astype(np.int64), b.astype(np.int64))


@njit(cache=True)
def _add_edges(parent, touched, a, b, jac, best, best_key, best_jac):
    """Fold edges (a, b) (universe indices) into the union-find; with ``best`` non-empty, keep
    per first node the edge of the largest jac (NaN as 0), the first one seen on ties."""
    track = best.shape[0] > 0
    for e in range(a.shape[0]):
        x, y = a[e], b[e]
        touched[x] = True
        touched[y] = True
        ra = _find(parent, x)
        rb = _find(parent, y)
        if ra < rb:
            parent[rb] = ra
        elif rb < ra:
            parent[ra] = rb
        if track:
            j = jac[e]
            k = 0.0 if np.isnan(j) else j
            if best[x] < 0 or k > best_key[x]:
                best[x] = y
                best_key[x] = k
                best_jac[x] = j


class Components:
    """Connected components of a stream of edges over a known set of node ids.

    ``universe``: sorted unique uint64 node ids that every edge's ends belong to. :meth:`add` folds
    a batch of edges ``(u, v, jac)`` in; :meth:`finish` gives the same result as
    :func:`components` over the concatenated batches, restricted to the nodes that some edge
    touches, and with ``against`` each first node's best second node: the edge of the largest
    ``jac`` (NaN counted as 0), ties to the first edge added. Memory: about 17 bytes per universe
    node (41 with ``against``), whatever the number of edges.
    """

    def __init__(self, universe: np.ndarray, against: bool = False):
        self.universe = np.asarray(universe, dtype=np.uint64)
        n = len(self.universe)
        self.parent = np.arange(n, dtype=np.int64)
        self.touched = np.zeros(n, dtype=bool)
        self.against = against
        m = n if against else 0
        self.best = np.full(m, -1, dtype=np.int64)
        self.best_key = np.zeros(m, dtype=np.float64)
        self.best_jac = np.full(m, np.nan, dtype=np.float64)
        self.edges = 0

    def _index(self, ids: np.ndarray) -> np.ndarray:
        i = np.searchsorted(self.universe, ids)
        if len(ids) and (i.max() >= len(self.universe) or (self.universe[i] != ids).any()):
            raise BadWorkFile(
                "dedup work files disagree: a candidate pair names a document missing from the "
                "candidate list (pairs.npz); re-run with --force"
            )
        return i.astype(np.int64, copy=False)

    def add(self, u: np.ndarray, v: np.ndarray, jac: np.ndarray | None = None) -> None:
        """Fold in edges (u[k], v[k]) with similarity jac[k] (1 when None)."""
        if len(u) == 0:
            return  # no kernel call (nor numba start-up) for nothing
        a = self._index(np.asarray(u, dtype=np.uint64))
        b = self._index(np.asarray(v, dtype=np.uint64))
        j = np.ones(len(a)) if jac is None else np.asarray(jac, dtype=np.float64)
        _add_edges(self.parent, self.touched, a, b, j, self.best, self.best_key, self.best_jac)
        self.edges += len(a)

    def finish(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
        """``(nodes, root, best_node, best_jac)``: the touched nodes (sorted ids), each one's
        component root as an index into ``nodes`` (its smallest member), and with ``against`` the
        best second node's id (0 where none) and its jac (NaN where none); None otherwise."""
        idx = np.flatnonzero(self.touched)
        nodes = self.universe[idx]
        parent = self.parent
        while True:  # pointer jumping to the roots (numpy: no second kernel to load in the driver)
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand
        root = np.searchsorted(idx, parent[idx])
        if not self.against:
            return nodes, root, None, None
        b = self.best[idx]
        best_node = np.where(b >= 0, self.universe[np.maximum(b, 0)] if len(b) else b, 0).astype(np.uint64)
        return nodes, root, best_node, self.best_jac[idx]


@njit(cache=True)
def copy_segments(dst, dst_start, src, src_start, lens):
    """``dst[dst_start[k]:][:lens[k]] = src[src_start[k]:][:lens[k]]`` for every ``k`` (gathering
    shingle sets without index arrays as long as the sets)."""
    for k in range(lens.shape[0]):
        a = dst_start[k]
        b = src_start[k]
        for j in range(lens[k]):
            dst[a + j] = src[b + j]
