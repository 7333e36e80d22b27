"""On-disk work files of the dedup stage: document references, bucketed key files, gathers.

A *document reference* (``ref``) is one ``uint64`` whose order is the run's document order::

    bit 63      reference-set flag (``--against``: documents of REF, which are never removed)
    bits 42-62  shard index   (21 bits: up to 2,097,151 shards)
    bits 28-41  piece number  (14 bits: up to 16,383 pieces per shard)
    bits 0-27   row in piece  (28 bits: up to 268,435,455 rows per piece)

The scan phase writes, per *chunk* (a run of consecutive rows of one shard piece, flushed when it
grows past a size limit so that a piece of any size is scanned in bounded memory):

* ``keys.npy`` / ``refs.npy`` (and an optional ``aux.npy``): one row per (key, document) with the
  rows ordered by *bucket* = the key's top :data:`BUCKET_BITS` bits, and ``boff.npy`` (``int64``,
  ``N_BUCKETS + 1``) the start of every bucket. A reduce task takes a contiguous range of buckets
  from every chunk, so keys are grouped across all shards with only ``1 / tasks`` of them in
  memory, and the number of tasks is chosen at reduce time from the actual volume.
* the per-document data verification and keep policies need: shingle hash sets
  (``soff.npy`` + ``shingles.npy``), signatures (``sigs.npy``), keep values (``value.npy``) and ids
  (``ids.arrow``), all indexed by row within the chunk and read back with memory maps.

A *sparse* chunk (``Chunk.sparse``) holds per-document data for a sorted subset of a piece's
documents only, listed in its ``refs.npy`` (the MinHash method's second scan writes one for the
candidate documents); rows of its other files follow that list. Its shingle sets are stored
compressed (``shingles.zst``: zstd blocks of about :data:`SET_BLOCK` hashes cut at document
boundaries, ``bdoc.npy`` / ``bpos.npy`` the first document and byte offset of each block): sorted
64-bit hashes of one document share their leading bits, and zstd level 3 keeps ~81% of the bytes
at ~500 MB/s; a gather decompresses only the blocks it needs.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from dcurate.core import stagefiles
from dcurate.core.errors import InputError
from dcurate.stages.dedup.graph import copy_segments

REF_FLAG = np.uint64(1 << 63)
SHARD_BITS, PIECE_BITS, ROW_BITS = 21, 14, 28
BUCKET_BITS = 12
N_BUCKETS = 1 << BUCKET_BITS
#: Shingle hashes per compressed block of a sparse chunk (2 MB before compression).
SET_BLOCK = 1 << 18
_ZSTD_LEVEL = 3


def base_ref(index: int, piece: int, flag: bool = False) -> int:
    """The reference of row 0 of a piece."""
    if index >= 1 << SHARD_BITS or piece >= 1 << PIECE_BITS:
        raise InputError(
            f"dedup: shard {index} piece {piece} is beyond what document references hold "
            f"({1 << SHARD_BITS} shards, {1 << PIECE_BITS} pieces per shard); merge input files"
        )
    return (int(flag) << 63) | (index << (PIECE_BITS + ROW_BITS)) | (piece << ROW_BITS)


def check_rows(n_rows: int, where: str) -> None:
    if n_rows >= 1 << ROW_BITS:
        raise InputError(f"{where}: more than {(1 << ROW_BITS) - 1} rows in one piece; split the input file")


def ref_piece(refs: np.ndarray) -> np.ndarray:
    """(index, piece) of each reference packed as one integer (ref >> ROW_BITS)."""
    return (refs >> np.uint64(ROW_BITS)).astype(np.uint64)


def ref_row(refs: np.ndarray) -> np.ndarray:
    return (refs & np.uint64((1 << ROW_BITS) - 1)).astype(np.int64)


def piece_key(packed: int) -> str:
    """``ShardInfo.key`` of a packed (index, piece) value."""
    packed = int(packed) & ((1 << (SHARD_BITS + PIECE_BITS)) - 1)
    return f"{packed >> PIECE_BITS:06d}-{packed & ((1 << PIECE_BITS) - 1):04d}"


@dataclass(frozen=True)
class Chunk:
    """One flushed run of rows of a piece: its folder, first reference and row count."""

    path: str
    first_ref: int
    n: int
    sparse: bool = False

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def load(self, name: str, mmap: bool = True) -> np.ndarray:
        return stagefiles.load_npy(self.file(name), mmap)

    def has(self, name: str) -> bool:
        return os.path.exists(self.file(name))

    def to_json(self) -> dict:
        d = {"path": self.path, "first_ref": int(self.first_ref), "n": int(self.n)}
        if self.sparse:
            d["sparse"] = True
        return d

    @staticmethod
    def from_json(d: dict) -> Chunk:
        return Chunk(d["path"], int(d["first_ref"]), int(d["n"]), bool(d.get("sparse", False)))


def _save(path: str, arr: np.ndarray) -> None:
    tmp = path + ".tmp.npy"
    np.save(tmp, np.ascontiguousarray(arr))
    os.replace(tmp, path)


def write_chunk(
    folder: Path,
    first_ref: int,
    n: int,
    keys: np.ndarray,
    refs: np.ndarray,
    aux: np.ndarray | None = None,
    docs: dict[str, np.ndarray] | None = None,
    ids: pa.Array | None = None,
) -> Chunk:
    """Write one chunk: (key, ref[, aux]) rows bucketed by the key's top bits, plus per-doc data."""
    folder.mkdir(parents=True, exist_ok=True)
    bucket = (keys >> np.uint64(64 - BUCKET_BITS)).astype(np.uint16)
    order = np.argsort(bucket, kind="stable")  # radix sort on uint16
    counts = np.bincount(bucket, minlength=N_BUCKETS)
    boff = np.zeros(N_BUCKETS + 1, dtype=np.int64)
    np.cumsum(counts, out=boff[1:])
    _save(str(folder / "keys.npy"), keys[order])
    _save(str(folder / "refs.npy"), refs[order])
    if aux is not None:
        _save(str(folder / "aux.npy"), aux[order])
    _save(str(folder / "boff.npy"), boff)
    for name, arr in (docs or {}).items():
        _save(str(folder / f"{name}.npy"), arr)
    if ids is not None:
        tmp = str(folder / "ids.arrow.tmp")
        with pa.OSFile(tmp, "wb") as sink, pa.ipc.new_file(sink, pa.schema([("id", pa.string())])) as w:
            w.write_batch(pa.record_batch([ids.cast(pa.string())], names=["id"]))
        os.replace(tmp, str(folder / "ids.arrow"))
    with open(folder / "chunk.json.tmp", "w") as f:
        json.dump({"first_ref": int(first_ref), "n": int(n)}, f)
    os.replace(folder / "chunk.json.tmp", folder / "chunk.json")
    return Chunk(str(folder), int(first_ref), int(n))


def write_sparse_chunk(
    folder: Path, refs: np.ndarray, docs: dict[str, np.ndarray], ids: pa.Array | None = None
) -> Chunk:
    """Write per-document data for the sorted documents ``refs`` only (a sparse chunk)."""
    refs = np.asarray(refs, dtype=np.uint64)
    folder.mkdir(parents=True, exist_ok=True)
    _save(str(folder / "refs.npy"), refs)
    docs = dict(docs)
    if "shingles" in docs:
        _write_sets(folder, docs["soff"], docs.pop("shingles"))
    for name, arr in docs.items():
        _save(str(folder / f"{name}.npy"), arr)
    if ids is not None:
        tmp = str(folder / "ids.arrow.tmp")
        with pa.OSFile(tmp, "wb") as sink, pa.ipc.new_file(sink, pa.schema([("id", pa.string())])) as w:
            w.write_batch(pa.record_batch([ids.cast(pa.string())], names=["id"]))
        os.replace(tmp, str(folder / "ids.arrow"))
    first = int(refs[0]) if len(refs) else 0
    return Chunk(str(folder), first, len(refs), sparse=True)


def _write_sets(folder: Path, soff: np.ndarray, hashes: np.ndarray) -> None:
    """``shingles.zst`` + ``bdoc.npy`` + ``bpos.npy``: the sets in zstd blocks cut at documents."""
    n = len(soff) - 1
    cuts = np.unique(np.searchsorted(soff[:-1], np.arange(0, int(soff[-1]), SET_BLOCK), side="left"))
    bdoc = np.concatenate((cuts[cuts < n], [n])).astype(np.int64) if n else np.zeros(1, np.int64)
    if n and bdoc[0] != 0:
        bdoc = np.concatenate(([0], bdoc))
    codec = pa.Codec("zstd", compression_level=_ZSTD_LEVEL)
    bpos = np.zeros(len(bdoc), dtype=np.int64)
    tmp = str(folder / "shingles.zst.tmp")
    with open(tmp, "wb") as f:
        for k in range(len(bdoc) - 1):
            part = np.ascontiguousarray(hashes[soff[bdoc[k]] : soff[bdoc[k + 1]]], dtype=np.uint64)
            data = codec.compress(part.tobytes(), asbytes=True)
            f.write(data)
            bpos[k + 1] = bpos[k] + len(data)
    os.replace(tmp, str(folder / "shingles.zst"))
    _save(str(folder / "bdoc.npy"), bdoc)
    _save(str(folder / "bpos.npy"), bpos)


def _read_sets(c: Chunk, soff: np.ndarray, local: np.ndarray) -> np.ndarray:
    """A chunk's shingle hashes with (at least) the blocks holding documents ``local`` filled."""
    if not c.sparse:  # a first-scan chunk keeps its sets whole; a sparse one in zstd blocks
        return c.load("shingles.npy")
    bdoc = c.load("bdoc.npy", mmap=False)
    bpos = c.load("bpos.npy", mmap=False)
    out = np.empty(int(soff[-1]), dtype=np.uint64)
    codec = pa.Codec("zstd")
    blocks = np.unique(np.searchsorted(bdoc, local, side="right") - 1)
    with open(c.file("shingles.zst"), "rb") as f:
        for k in blocks.tolist():
            lo, hi = int(soff[bdoc[k]]), int(soff[bdoc[k + 1]])
            if hi == lo:
                continue
            f.seek(int(bpos[k]))
            raw = codec.decompress(f.read(int(bpos[k + 1] - bpos[k])), decompressed_size=8 * (hi - lo))
            out[lo:hi] = np.frombuffer(raw, dtype=np.uint64)
    return out


def read_bucket_range(chunks: list[Chunk], b0: int, b1: int, with_aux: bool = False):
    """Concatenate buckets [b0, b1) of every chunk: (keys, refs[, aux])."""
    ks, rs, xs = [], [], []
    for c in chunks:
        boff = c.load("boff.npy", mmap=False)
        lo, hi = int(boff[b0]), int(boff[b1])
        if hi <= lo:
            continue
        ks.append(np.asarray(c.load("keys.npy")[lo:hi]))
        rs.append(np.asarray(c.load("refs.npy")[lo:hi]))
        if with_aux:
            xs.append(np.asarray(c.load("aux.npy")[lo:hi]))

    def cat(parts: list[np.ndarray], dtype) -> np.ndarray:
        return np.concatenate(parts) if parts else np.zeros(0, dtype)

    out = (cat(ks, np.uint64), cat(rs, np.uint64))
    if with_aux:
        aux_dtype = chunks[0].load("aux.npy").dtype if chunks else np.uint64
        return out + (cat(xs, aux_dtype),)
    return out


class ChunkIndex:
    """Find the chunk and row of any reference (chunks sorted by first reference)."""

    def __init__(self, chunks: list[Chunk]):
        self.chunks = sorted(chunks, key=lambda c: c.first_ref)
        self.first = np.array([c.first_ref for c in self.chunks], dtype=np.uint64)
        self.n = np.array([c.n for c in self.chunks], dtype=np.int64)

    def locate(self, refs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        refs = np.asarray(refs, dtype=np.uint64)
        ci = np.searchsorted(self.first, refs, side="right").astype(np.int64) - 1
        if len(refs) and ci.min() < 0:
            raise RuntimeError("dedup: document reference before the first chunk (corrupt work files)")
        local = (refs - self.first[ci]).astype(np.int64)
        sparse = np.array([c.sparse for c in self.chunks], dtype=bool)
        if len(refs) and sparse.any():
            for k in np.unique(ci[sparse[ci]]):
                sel = np.flatnonzero(ci == k)
                listed = self.chunks[int(k)].load("refs.npy", mmap=False)
                pos = np.searchsorted(listed, refs[sel])
                if (pos >= len(listed)).any() or (listed[np.minimum(pos, len(listed) - 1)] != refs[sel]).any():
                    raise RuntimeError("dedup: document missing from the candidate files (corrupt work files)")
                local[sel] = pos
        if len(refs) and (local >= self.n[ci]).any():
            raise RuntimeError("dedup: document reference outside its chunk (corrupt work files)")
        return ci, local

    def _groups(self, refs: np.ndarray):
        """Yield (chunk, positions in refs, local rows) per chunk (refs need not be sorted)."""
        ci, local = self.locate(refs)
        order = np.argsort(ci, kind="stable")
        cs = ci[order]
        cuts = np.flatnonzero(np.diff(cs)) + 1
        for part in np.split(order, cuts) if len(order) else []:
            yield self.chunks[int(ci[part[0]])], part, local[part]

    def gather_rows(self, refs: np.ndarray, name: str, dtype, width: int | None = None) -> np.ndarray:
        """Per-document rows of ``name.npy`` (1-D values, or 2-D rows of ``width``) for ``refs``."""
        shape = (len(refs),) if width is None else (len(refs), width)
        out = np.empty(shape, dtype=dtype)
        for c, pos, local in self._groups(refs):
            out[pos] = c.load(f"{name}.npy")[local]
        return out

    def gather_ids(self, refs: np.ndarray) -> pa.Array:
        out = np.empty(len(refs), dtype=object)
        for c, pos, local in self._groups(refs):
            col = stagefiles.read_arrow(c.file("ids.arrow")).column(0)
            out[pos] = np.asarray(col.take(pa.array(local)).to_pylist(), dtype=object)
        return pa.array(out, type=pa.string())

    def gather_sets(self, refs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Shingle hash sets of ``refs`` as one ragged array: (offsets int64[n+1], hashes)."""
        lens = np.zeros(len(refs), dtype=np.int64)
        parts = []
        for c, pos, local in self._groups(refs):
            soff = c.load("soff.npy", mmap=False)
            starts, ends = soff[local], soff[local + 1]
            lens[pos] = ends - starts
            parts.append((c, pos, starts, ends - starts, soff, local))
        offsets = np.zeros(len(refs) + 1, dtype=np.int64)
        np.cumsum(lens, out=offsets[1:])
        hashes = np.empty(int(offsets[-1]), dtype=np.uint64)
        for c, pos, starts, ln, soff, local in parts:
            total = int(ln.sum())
            if total == 0:
                continue
            src = np.ascontiguousarray(_read_sets(c, soff, local), dtype=np.uint64)
            copy_segments(hashes, offsets[pos], src, starts.astype(np.int64), ln)
        return offsets, hashes
