"""The MinHash method's candidate pairs on disk, partitioned, so the driver never holds them all.

The first reduce's grouping tasks each find the pairs of a range of band-key buckets; the same
pair can come from several ranges (two documents sharing keys in several bands). Each task writes
its pairs to the work folder ordered by *pair bucket* -- the top :data:`PAIR_BUCKET_BITS` bits of a
multiplicative hash of the pair's first document ``u`` -- with the bucket offsets. The driver
then cuts the pair buckets into contiguous *partitions* of at most :data:`PAIRS_PER_PARTITION`
pairs (summed over the tasks' counts) and each partition is deduplicated on its own (merge tasks
on the run's workers): all pairs of one ``u`` land in one partition, so per-partition
deduplication is global deduplication, and memory is bounded by a partition (plus the distinct
candidate documents), whatever the number of pairs: an external partitioned sort.

Order: a partition's pairs are sorted by ``(u, v)``; partitions follow the pair-bucket order. What
uses the pairs depends only on the set of pairs and, for ``--against``, on the order of the pairs
of one ``u`` (by ``v`` either way), so the result equals that of one global sort.

``DCURATE_DEDUP_PAIRS_PER_PARTITION`` in the environment overrides the partition size (tests force
tiny partitions with it).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from dcurate.core import stagefiles
from dcurate.stages.dedup import graph

__all__ = [
    "PAIR_BUCKET_BITS",
    "N_PAIR_BUCKETS",
    "pairs_per_partition",
    "pair_bucket",
    "write_task_pairs",
    "partition_ranges",
    "merge_partition",
    "iter_pairs",
    "pair_nodes",
]

PAIR_BUCKET_BITS = 10
N_PAIR_BUCKETS = 1 << PAIR_BUCKET_BITS
#: Pairs per partition (16 bytes each, plus about as much for the sort): about 500 MB at most.
PAIRS_PER_PARTITION = 16_000_000
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def pairs_per_partition() -> int:
    value = os.environ.get("DCURATE_DEDUP_PAIRS_PER_PARTITION")
    return max(1, int(value)) if value else PAIRS_PER_PARTITION


def pair_bucket(u: np.ndarray) -> np.ndarray:
    """The pair bucket of each first document (a multiplicative hash's top bits)."""
    return ((np.asarray(u, dtype=np.uint64) * _GOLDEN) >> np.uint64(64 - PAIR_BUCKET_BITS)).astype(np.int64)


def write_task_pairs(folder: Path, name: str, u: np.ndarray, v: np.ndarray) -> dict:
    """Write one grouping task's pairs ordered by pair bucket; returns their file stem and the
    pair count of every bucket."""
    folder.mkdir(parents=True, exist_ok=True)
    bucket = pair_bucket(u)
    order = np.argsort(bucket, kind="stable")
    counts = np.bincount(bucket, minlength=N_PAIR_BUCKETS).astype(np.int64)
    stem = str(folder / name)
    np.save(stem + "_u.npy", u[order])
    np.save(stem + "_v.npy", v[order])
    return {"stem": stem, "counts": counts}


def partition_ranges(counts: np.ndarray, per_partition: int) -> list[tuple[int, int]]:
    """Contiguous pair-bucket ranges of at most ``per_partition`` pairs each (a single bucket
    may hold more); empty ranges are left out."""
    ranges: list[tuple[int, int]] = []
    start, size = 0, 0
    for b, c in enumerate(np.asarray(counts).tolist()):
        if size and size + c > per_partition:
            ranges.append((start, b))
            start, size = b, 0
        size += c
    if size:
        ranges.append((start, len(counts)))
    return [(a, b) for a, b in ranges if int(np.asarray(counts)[a:b].sum()) > 0]


def merge_partition(task) -> tuple[str, int, str]:
    """Deduplicate the pairs of buckets ``[b0, b1)`` of every task file: writes the sorted unique
    pairs and the partition's distinct documents; returns (pairs stem, pair count, nodes file)."""
    tasks, b0, b1, out = task
    us, vs = [], []
    for t in tasks:
        boff = np.concatenate(([0], np.cumsum(t["counts"])))
        lo, hi = int(boff[b0]), int(boff[b1])
        if hi > lo:
            us.append(np.array(stagefiles.load_npy(t["stem"] + "_u.npy", True)[lo:hi]))
            vs.append(np.array(stagefiles.load_npy(t["stem"] + "_v.npy", True)[lo:hi]))
    u = np.concatenate(us) if us else np.zeros(0, np.uint64)
    v = np.concatenate(vs) if vs else np.zeros(0, np.uint64)
    u, v = graph.unique_pairs(u, v)
    np.save(out + "_u.npy", u)
    np.save(out + "_v.npy", v)
    np.save(out + "_nodes.npy", np.unique(np.concatenate([u, v])))
    return out, len(u), out + "_nodes.npy"


def _read_slices(path: str, size: int):
    """A ``.npy`` array ``size`` items at a time, read (not memory-mapped: mapped pages of a file
    the size of a partition would count in the reader's resident memory)."""
    head = stagefiles.load_npy(path, True)  # checks the header and the file's size
    assert isinstance(head, np.memmap)
    offset, dtype, n = int(head.offset), head.dtype, len(head)
    del head
    with open(path, "rb") as f:
        for a in range(0, n, size):
            f.seek(offset + a * dtype.itemsize)
            yield np.fromfile(f, dtype=dtype, count=min(size, n - a))


def iter_pairs(stems: list[str], size: int):
    """The partitions' pairs, ``size`` at a time: (u, v) slices in memory."""
    for stem in stems:
        yield from zip(_read_slices(stem + "_u.npy", size), _read_slices(stem + "_v.npy", size), strict=True)


def pair_nodes(stems: list[str], size: int) -> np.ndarray:
    """The sorted distinct documents of the partitions' pairs (one pass, ``size`` pairs at a time)."""
    nodes = np.zeros(0, np.uint64)
    for u, v in iter_pairs(stems, size):
        nodes = np.union1d(nodes, np.concatenate([u, v])).astype(np.uint64)
    return nodes
