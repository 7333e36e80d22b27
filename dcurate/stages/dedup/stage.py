"""``dcurate dedup``: exact, MinHash-LSH and paragraph (CCNet) deduplication across all shards.

Phases (a global stage, see :mod:`dcurate.core.stage`):

* **scan** (each shard piece, in parallel): per document, the method's keys -- MinHash band keys,
  the xxh3-128 of the normalised text, or one hash per normalised line -- are written to bucketed
  work files (:mod:`dcurate.stages.dedup.store`), with what verification and the keep policy need.
  The MinHash method scans twice (:mod:`dcurate.stages.dedup.candidates`): the first scan keeps
  only band keys and a digest of each shingle set; after the first reduce has found the candidate
  pairs, the second scan stores ids, keep values and shingle sets for candidate documents only.
* **reduce** (driver, fanned out with ``ctx.map``): each task groups a range of key buckets across
  every shard piece into candidate pairs (:mod:`dcurate.stages.dedup.graph`); candidates are verified
  (exact shingle Jaccard by default), joined by union-find into clusters (connected components
  of the verified pairs, as the ground truth in ``../shared/corpus/dedup`` defines them), and one
  document per cluster is kept. The MinHash method streams the pairs: they wait on disk, are
  verified :func:`verify_slice` at a time and each slice's verified pairs are folded into
  :class:`~dcurate.stages.dedup.graph.Components`, so the driver holds the candidate documents and
  one slice of pairs, never all verified pairs (``DCURATE_DEDUP_VERIFY_SLICE`` in the environment
  sets the slice; tests lower it). The plan is one small file per shard piece: the rows to remove
  (or to annotate) and their clusters.
* **apply** (each batch): drop or annotate the planned rows.

Everything is ordered by the run's document order (shard, piece, row), never by worker timing, so
the output is identical for any number of workers.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash

from dcurate.core import stagefiles
from dcurate.core.errors import InputError
from dcurate.core.stage import Result, ShardInfo, Stage, register, with_column
from dcurate.io.atomic import atomic_open
from dcurate.stages.dedup import candidates, graph, lines, pairs, store
from dcurate.stages.dedup import params as dedup_params
from dcurate.stages.dedup.params import Params
from dcurate.text.normalize import normalize_for_hash_series

if TYPE_CHECKING:  # polars: only the paragraphs method uses it, imported there
    import polars as pl

# A chunk of a piece is flushed to disk once it holds this many shingle hashes / documents, so a
# piece of any size is scanned in bounded memory (~16 bytes per buffered shingle hash: about 64 MB).
FLUSH_SHINGLES = 4_000_000
FLUSH_DOCS = 100_000
MAX_ALL_PAIRS = candidates.MAX_ALL_PAIRS
# Reduce sizing: keys per grouping task, pairs per verification task.
KEYS_PER_TASK = 8_000_000
PAIRS_PER_TASK = 200_000
# The second MinHash reduce reads the candidate pairs from the work folder this many at a time,
# verifies them and folds the verified ones into the union-find (see verify_slice): about 70 bytes
# of driver memory per pair of a slice while it is verified, so about 280 MB at most.
VERIFY_SLICE = 4_000_000


def verify_slice() -> int:
    """:data:`VERIFY_SLICE`, or ``DCURATE_DEDUP_VERIFY_SLICE`` from the environment (tests lower it)."""
    value = os.environ.get("DCURATE_DEDUP_VERIFY_SLICE")
    return max(1, int(value)) if value else VERIFY_SLICE


def _minhash():
    from dcurate.stages.dedup import minhash

    return minhash


def s_curve_points(threshold: float, b: int, r: int) -> list[tuple[float, float]]:
    """P(candidate | J) at threshold -0.2 ... +0.2 in steps of 0.05 (clipped to [0, 1])."""
    pts = []
    for d in np.arange(-0.2, 0.2001, 0.05):
        j = round(float(threshold + d), 4)
        if 0.0 <= j <= 1.0:
            pts.append((j, float(1.0 - (1.0 - j**r) ** b)))
    return pts


@register
class Dedup(Stage):
    name = "dedup"
    Params = Params
    summary = "Remove exact, near-duplicate (MinHash LSH) or repeated-paragraph content across all shards."
    example = "dcurate dedup data/demo/corpus data/demo/dedup --threshold 0.8 --keep longest"
    kind = "global"

    def __init__(self, params: dedup_params.Params, ctx):
        super().__init__(params, ctx)
        self._bands: tuple[int, int] | None = None
        self._cache: dict[str, dict[str, np.ndarray]] = {}
        self._reps: tuple[np.ndarray, np.ndarray] | None = None  # (nodes, their representatives)

    @property
    def rounds(self) -> int:  # type: ignore[override]
        """MinHash scans twice: keys first, then candidate documents only."""
        return 2 if self.params.method == "minhash" else 1

    # -- plan of the LSH ------------------------------------------------------------------------
    @property
    def bands_rows(self) -> tuple[int, int]:
        if self._bands is None:
            p = self.params
            if p.bands is not None and p.rows is not None:
                self._bands = (p.bands, p.rows)
            else:
                b, r = _minhash().choose_bands(p.threshold, p.num_perm)
                self._bands = (int(b), int(r))
        return self._bands

    def describe(self) -> dict[str, Any]:
        d = dataclasses.asdict(self.params)
        if self.params.method == "minhash":
            b, r = self.bands_rows
            d["lsh"] = {
                "bands": b,
                "rows": r,
                "s_curve": {f"{j:.2f}": round(p, 4) for j, p in s_curve_points(self.params.threshold, b, r)},
            }
        return d

    def prepare(self) -> None:
        p = self.params
        if p.method == "minhash":
            b, r = self.bands_rows
            curve = "  ".join(f"J={j:.2f}: {q:.3f}" for j, q in s_curve_points(p.threshold, b, r))
            msg = (
                f"dedup: MinHash {p.num_perm} permutations ({p.scheme}), {p.ngram}-word shingles, "
                f"LSH {b} bands x {r} rows; P(candidate | J): {curve}; verify={p.verify}"
            )
            self.ctx.log.info(msg)
        if p.against:
            folder = self.ctx.workdir / "ref"
            shutil.rmtree(folder, ignore_errors=True)
            from dcurate.io import read_documents

            batches = read_documents(p.against, text_field=self.ctx.text_field, id_field=self.ctx.id_field)
            chunks = self._scan_into(
                batches, folder, index=0, piece=0, flag=True, where=f"--against {p.against}", full=True
            )
            import json

            with open(self.ctx.workdir / "ref.json", "w") as f:
                json.dump([c.to_json() for c in chunks], f)

    def input_paths(self) -> list[str]:
        return [self.params.against] if self.params.against else []

    def output_paths(self) -> dict[str, str]:
        return {"--clusters": self.params.clusters} if self.params.clusters else {}

    def fingerprint(self) -> Any:
        if not self.params.against:
            return None
        from dcurate.io import expand_inputs, storage

        return [  # a URI: its size and LastModified
            (s.path, *(storage.stamp(s.path) or [])) if storage.is_uri(s.path)
            else (s.path, os.path.getsize(s.path), os.path.getmtime(s.path))
            for s in expand_inputs(self.params.against)
        ]

    # -- scan -----------------------------------------------------------------------------------
    def scan(self, batches: Iterable[pa.RecordBatch], shard: ShardInfo, round: int, plan: Any) -> Any:
        folder = self.ctx.workdir / "scan" / shard.key
        shutil.rmtree(folder, ignore_errors=True)  # round 1: the first scan's keys are read already
        if round == 1:
            return {"chunks": self._scan_candidates(batches, shard, plan)}
        full = self.params.method != "minhash"
        chunks = self._scan_into(batches, folder, shard.index, shard.piece, False, shard.path or shard.stem, full)
        return {"chunks": [c.to_json() for c in chunks]}

    def _scan_candidates(self, batches, shard: ShardInfo, plan: Any) -> list[dict]:
        """Second MinHash scan: ids, keep values and (for each class representative) the shingle
        set or signature of this piece's candidate documents, flushed in bounded chunks. A plain
        JSONL piece is read candidate lines only (:mod:`dcurate.stages.dedup.lines`) when that
        gives the reader's documents, else through the reader."""
        folder = self.ctx.workdir / "cand" / shard.key
        shutil.rmtree(folder, ignore_errors=True)
        path = plan["cand"].get(shard.key)
        if path is None:
            return []  # no candidate here: the piece is not read at all
        z = stagefiles.load_npz(path)
        rows = z["rows"]
        n_rows = int(z["n_rows"]) if "n_rows" in z else None
        if not self.params.keep.startswith("max:"):  # a numeric column's type: as the reader's
            direct = lines.candidate_batches(
                shard.path, shard.n_pieces, rows, n_rows, self.ctx.text_field, self.ctx.id_field
            )
            if direct is not None:
                try:
                    return self._store_candidates(direct, shard, z, folder)
                except lines.NotEqual:
                    shutil.rmtree(folder, ignore_errors=True)
        return self._store_candidates(self._reader_candidates(batches, rows), shard, z, folder)

    @staticmethod
    def _reader_candidates(batches, rows: np.ndarray):
        """``(k, batch)``: the candidate documents ``rows[k:k + batch.num_rows]`` of the reader's
        batches (the rest of the piece is not read after the last candidate)."""
        pos = 0
        last = int(rows[-1]) if len(rows) else -1
        for batch in batches:
            if pos > last:
                break
            lo, hi = np.searchsorted(rows, [pos, pos + batch.num_rows])
            pos += batch.num_rows
            if hi > lo:
                yield int(lo), batch.take(pa.array(rows[lo:hi] - (pos - batch.num_rows)))

    def _store_candidates(self, groups, shard: ShardInfo, z: dict[str, np.ndarray], folder: Path) -> list[dict]:
        rows, is_rep = z["rows"], z["rep"]
        p = self.params
        where = shard.path or shard.stem
        base = store.base_ref(shard.index, shard.piece)
        out: list[dict] = []
        buf: list[dict[str, Any]] = []
        size = 0
        for lo, sub in groups:
            hi = lo + sub.num_rows
            part: dict[str, Any] = {"refs": np.uint64(base) + rows[lo:hi].astype(np.uint64)}
            part["ids"] = sub.column(self.ctx.id_field)
            values = self._keep_values(sub, where)
            if values is not None:
                part["value"] = values
            # the verification data (signatures with --verify signature or none: the cluster
            # table's similarity to the kept document) of class representatives
            sel = is_rep[lo:hi]
            texts = self.texts(sub).filter(pa.array(sel))
            mh = _minhash()
            offsets, hashes = mh.shingle_hashes(texts, ngram=p.ngram, cjk_chars=p.cjk_chars)
            lens = np.zeros(hi - lo, dtype=np.int64)
            lens[sel] = np.diff(offsets)
            if p.verify == "exact":
                part["lens"], part["shingles"] = lens, np.asarray(hashes, dtype=np.uint64)
            else:
                sig = np.asarray(mh.signatures(offsets, hashes, p.num_perm, p.hash_seed, p.scheme))
                full_sig = np.zeros((hi - lo, p.num_perm), dtype=sig.dtype)
                full_sig[sel] = sig
                part["sigs"] = full_sig
            size += int(lens.sum())
            buf.append(part)
            if size >= FLUSH_SHINGLES or sum(len(b["refs"]) for b in buf) >= FLUSH_DOCS:
                out.append(candidates.flush_candidates(buf, folder / f"c{len(out):05d}"))
                buf, size = [], 0
        if buf:
            out.append(candidates.flush_candidates(buf, folder / f"c{len(out):05d}"))
        return out

    def _scan_into(
        self, batches, folder: Path, index: int, piece: int, flag: bool, where: str, full: bool = True
    ) -> list[store.Chunk]:
        base = store.base_ref(index, piece, flag)
        chunks: list[store.Chunk] = []
        buf: list[dict[str, Any]] = []
        row = 0
        chunk_start = 0
        size = 0
        for batch in batches:
            if batch.num_rows == 0:
                continue
            out = self._scan_batch(batch, base + row, where, full)
            buf.append(out)
            row += batch.num_rows
            size += out.get("weight", 0)
            if size >= FLUSH_SHINGLES or row - chunk_start >= FLUSH_DOCS:
                chunks.append(
                    self._flush(buf, folder / f"c{len(chunks):05d}", base + chunk_start, row - chunk_start)
                )
                buf, size, chunk_start = [], 0, row
        store.check_rows(row, where)
        if row > chunk_start or not chunks:
            chunks.append(
                self._flush(buf, folder / f"c{len(chunks):05d}", base + chunk_start, row - chunk_start)
            )
        return chunks

    def _keep_values(self, batch: pa.RecordBatch, where: str) -> np.ndarray | None:
        keep = self.params.keep
        if keep == "first" or self.params.method == "paragraphs":
            return None
        if keep == "longest":
            lens = pc.binary_length(self.texts(batch).cast(pa.string()))
            return np.asarray(lens.fill_null(0).to_numpy(zero_copy_only=False), dtype=np.float64)
        col = keep[4:]
        if col not in batch.schema.names:
            raise InputError(
                f"{where}: --keep {keep}: no column '{col}'; available: {', '.join(batch.schema.names)}"
            )
        arr = batch.column(col)
        try:
            vals = pc.cast(arr, pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise InputError(f"{where}: --keep {keep}: column '{col}' is {arr.type}, not numeric") from None
        return np.asarray(vals.fill_null(-np.inf).to_numpy(zero_copy_only=False), dtype=np.float64)

    def _scan_batch(self, batch: pa.RecordBatch, first_ref: int, where: str, full: bool = True) -> dict[str, Any]:
        """Keys of one batch; with ``full`` also ids, keep values and verification data (without,
        MinHash keeps only band keys and shingle-set digests for its second scan)."""
        p = self.params
        texts = self.texts(batch)
        n = batch.num_rows
        refs = np.uint64(first_ref) + np.arange(n, dtype=np.uint64)
        out: dict[str, Any] = {"n": n}
        if full:
            out["ids"] = batch.column(self.ctx.id_field)
            values = self._keep_values(batch, where)
            if values is not None:
                out["value"] = values
        elif p.keep.startswith("max:"):
            self._keep_values(batch.slice(0, 0), where)  # a missing column fails in the first scan
        if p.method == "minhash":
            b, r = self.bands_rows
            mh = _minhash()
            offsets, hashes = mh.shingle_hashes(texts, ngram=p.ngram, cjk_chars=p.cjk_chars)
            offsets = np.asarray(offsets, dtype=np.int64)
            hashes = np.asarray(hashes, dtype=np.uint64)
            sigs = np.asarray(mh.signatures(offsets, hashes, p.num_perm, p.hash_seed, p.scheme))
            keys = np.asarray(mh.band_keys(sigs, b, r), dtype=np.uint64)
            valid = np.diff(offsets) > 0  # documents without words have no shingles: never duplicates
            out["keys"] = keys[valid].ravel()
            out["refs"] = np.repeat(refs[valid], b)
            if not full:
                out["digest"] = candidates.set_digests(offsets, hashes)
            elif p.verify == "exact":
                out["soff"] = offsets
                out["shingles"] = hashes
            else:
                out["sigs"] = sigs.astype(np.uint32) if sigs.size == 0 or sigs.max() < 2**32 else sigs
            out["weight"] = (len(hashes) + n) if full else (b + 1) * n
        elif p.method == "exact":
            norm = normalize_for_hash_series(texts.cast(pa.string())).fill_null("")
            data = norm.to_arrow().cast(pa.large_binary()).to_pylist()
            digest = np.frombuffer(b"".join(map(xxhash.xxh3_128_digest, data)), dtype=">u8").reshape(-1, 2)
            hi = digest[:, 0].astype(np.uint64)
            lo = digest[:, 1].astype(np.uint64)
            out["keys"], out["aux"], out["refs"] = hi, lo, refs
            out["weight"] = n
        else:  # paragraphs
            import polars as pl

            lines = _lines_frame(texts)
            norm = normalize_for_hash_series(lines["line"])
            nonblank = (norm.str.len_bytes() > 0).to_numpy()
            data = norm.filter(pl.Series(nonblank)).to_arrow().cast(pa.large_binary()).to_pylist()
            h = np.fromiter(map(xxhash.xxh3_64_intdigest, data), dtype=np.uint64, count=len(data))
            out["keys"] = h
            out["refs"] = refs[lines["row"].to_numpy()[nonblank]]
            out["aux"] = lines["lineno"].to_numpy()[nonblank].astype(np.uint32)
            out["weight"] = len(h)
        return out

    def _flush(self, buf: list[dict[str, Any]], folder: Path, first_ref: int, n: int) -> store.Chunk:
        def cat(name: str):
            parts = [b[name] for b in buf if name in b]
            return np.concatenate(parts) if parts else None

        keys = cat("keys")
        refs = cat("refs")
        if keys is None:
            keys = np.zeros(0, np.uint64)
            refs = np.zeros(0, np.uint64)
        docs: dict[str, np.ndarray] = {}
        if any("soff" in b for b in buf):
            lens = np.concatenate([np.diff(b["soff"]) for b in buf])
            soff = np.zeros(len(lens) + 1, dtype=np.int64)
            np.cumsum(lens, out=soff[1:])
            docs["soff"], docs["shingles"] = soff, cat("shingles")
        elif not buf and self.params.method == "minhash" and self.params.verify == "exact":
            docs["soff"], docs["shingles"] = np.zeros(1, np.int64), np.zeros(0, np.uint64)
        if any("sigs" in b for b in buf):
            docs["sigs"] = np.concatenate([b["sigs"] for b in buf], axis=0)
        if any("value" in b for b in buf):
            docs["value"] = cat("value")
        if any("digest" in b for b in buf):
            docs["digest"] = np.concatenate([b["digest"] for b in buf], axis=0)
        aux = cat("aux")
        if aux is None and self.params.method != "minhash":
            aux = np.zeros(0, np.uint64 if self.params.method == "exact" else np.uint32)
        if any("ids" in b for b in buf) or (not buf and self.params.method != "minhash"):
            ids = pa.concat_arrays([pc.cast(b["ids"], pa.string()) for b in buf]) if buf else pa.array([], pa.string())
        else:
            ids = None
        return store.write_chunk(folder, first_ref, n, keys, refs, aux, docs, ids)

    # -- reduce ---------------------------------------------------------------------------------
    def _ref_chunks(self) -> list[store.Chunk]:
        if not self.params.against:
            return []

        return [store.Chunk.from_json(d) for d in stagefiles.load_json(self.ctx.workdir / "ref.json")]

    def reduce(self, partials: list[tuple[ShardInfo, Any]], round: int, plan: Any) -> Any:
        p = self.params
        chunks = [store.Chunk.from_json(c) for _, part in partials for c in part["chunks"]]
        chunks += self._ref_chunks()
        chunks.sort(key=lambda c: c.first_ref)
        if round == 1:
            return self._reduce_candidates(chunks, plan)
        ranges = self._bucket_ranges(chunks)
        tasks: list[tuple] = [(p.method, [c.to_json() for c in chunks], b0, b1, bool(p.against)) for b0, b1 in ranges]
        pair_dir = self.ctx.workdir / "pairs"
        if p.method == "minhash":  # the pairs go to disk, partitioned (see dedup.pairs)
            shutil.rmtree(pair_dir, ignore_errors=True)
            tasks = [t + (str(pair_dir / "tasks"),) for t in tasks]
        results = self.ctx.map(candidates.group_task, tasks)
        stats: dict[str, Any] = {
            "method": p.method,
            "docs": int(sum(c.n for c in chunks if not c.first_ref >> 63)),
        }
        if p.method == "paragraphs":
            return self._plan_paragraphs(results, stats)
        index = store.ChunkIndex(chunks)
        if p.method == "minhash":
            return self._plan_candidates(index, results, pair_dir, stats)
        u = np.concatenate([r[0] for r in results]) if results else np.zeros(0, np.uint64)
        v = np.concatenate([r[1] for r in results]) if results else np.zeros(0, np.uint64)
        u, v = graph.unique_pairs(u, v)
        stats["candidate_pairs"] = len(u)
        comp = graph.Components(np.unique(np.concatenate([u, v])), bool(p.against))
        comp.add(u, v)
        return self._plan_clusters(index, comp, stats)

    def _plan_candidates(self, index: store.ChunkIndex, written: list[dict], pair_dir: Path, stats) -> dict[str, Any]:
        """First MinHash reduce: the grouping tasks' pairs deduplicated partition by partition
        (they wait there for the second reduce); the candidate documents of each piece and their
        classes (equal shingle-set digests)."""
        counts = np.sum([w["counts"] for w in written], axis=0) if written else np.zeros(1, np.int64)
        ranges = pairs.partition_ranges(counts, pairs.pairs_per_partition())
        merge = [(written, b0, b1, str(pair_dir / f"p{k:05d}")) for k, (b0, b1) in enumerate(ranges)]
        merged = self.ctx.map(pairs.merge_partition, merge)
        nodes = np.zeros(0, np.uint64)
        for _, _, node_file in merged:
            nodes = np.union1d(nodes, stagefiles.load_npy(node_file, mmap=False))
            os.unlink(node_file)
        shutil.rmtree(pair_dir / "tasks", ignore_errors=True)
        stats["candidate_pairs"] = int(sum(n for _, n, _ in merged))
        stats["pair_partitions"] = len(merged)
        corpus = nodes[(nodes & store.REF_FLAG) == 0]
        rep = candidates.representatives(corpus, index.gather_rows(corpus, "digest", np.uint64, 2))
        work = self.ctx.workdir
        np.savez(work / "pairs.npz", nodes=corpus, rep=rep, all=nodes)
        piece_rows: dict[str, int] = {}  # documents of each piece, as the first scan read them
        for c in index.chunks:
            if not c.first_ref >> 63:
                key = store.piece_key(int(store.ref_piece(np.array([c.first_ref], np.uint64))[0]))
                piece_rows[key] = piece_rows.get(key, 0) + c.n
        files = candidates.write_candidate_lists(work / "candidates", corpus, rep == corpus, piece_rows)
        parts = [stem for stem, _, _ in merged]
        return {"cand": files, "pairs": str(work / "pairs.npz"), "pair_parts": parts, "stats": stats}

    def _rep_of(self, refs: np.ndarray) -> np.ndarray:
        """The class representative of each document (reference-set documents are their own)."""
        if self._reps is None:
            return refs
        nodes, rep = self._reps
        i = np.clip(np.searchsorted(nodes, refs), 0, max(len(nodes) - 1, 0))
        found = (nodes[i] == refs) if len(nodes) else np.zeros(len(refs), dtype=bool)
        return np.where(found, rep[i] if len(nodes) else refs, refs)

    def _reduce_candidates(self, chunks: list[store.Chunk], plan: Any) -> Any:
        """Second MinHash reduce: verify the pairs on the candidates' stored data a slice at a
        time, folding each slice's verified pairs into the components (never all of them at once)."""
        p = self.params
        z = stagefiles.load_npz(plan["pairs"])
        self._reps = (z["nodes"], z["rep"])
        # the partitions' pair files (a plan written before partitioning named one pair of files)
        parts = plan.get("pair_parts", [str(Path(plan["pairs"]).parent / "pairs")])
        stats = dict(plan["stats"])
        index = store.ChunkIndex(chunks)
        step = verify_slice()
        # every candidate document, corpus and reference (a plan of an older version lacks it)
        universe = z["all"] if "all" in z else pairs.pair_nodes(parts, step)
        comp = graph.Components(universe, bool(p.against))
        for u, v in pairs.iter_pairs(parts, step):
            if p.verify != "none":
                jac = self._pair_similarity(index, u, v)
                ok = jac >= p.threshold
                comp.add(u[ok], v[ok], jac[ok])
            else:
                comp.add(u, v, np.full(len(u), np.nan))
        if p.verify != "none":
            stats["verified_pairs"] = comp.edges
            stats["false_positives"] = int(stats.get("candidate_pairs", comp.edges)) - comp.edges
        b, r = self.bands_rows
        stats.update(bands=b, rows=r, num_perm=p.num_perm)
        return self._plan_clusters(index, comp, stats)

    def _bucket_ranges(self, chunks: list[store.Chunk]) -> list[tuple[int, int]]:
        """Split the key buckets into contiguous ranges of about equal key counts."""
        per_bucket = np.zeros(store.N_BUCKETS, dtype=np.int64)
        for c in chunks:
            per_bucket += np.diff(c.load("boff.npy", mmap=False))
        total = int(per_bucket.sum())
        n_tasks = max(1, math.ceil(total / KEYS_PER_TASK))
        if self.ctx.workers > 1 and total > 200_000:
            n_tasks = max(n_tasks, 2 * self.ctx.workers)
        n_tasks = min(n_tasks, store.N_BUCKETS)
        cum = np.cumsum(per_bucket)
        cuts = np.searchsorted(cum, np.arange(1, n_tasks) * total / n_tasks, side="left") + 1
        bounds = np.unique(np.concatenate(([0], np.clip(cuts, 1, store.N_BUCKETS - 1), [store.N_BUCKETS])))
        return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

    def _pair_similarity(self, index: store.ChunkIndex, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Jaccard of each pair: exact from stored shingle sets, or estimated from signatures;
        1 for two documents of one class (equal shingle sets), which are not compared."""
        u, v = self._rep_of(u), self._rep_of(v)
        out = np.ones(len(u))
        diff = np.flatnonzero(u != v)
        if len(diff):
            out[diff] = self._compare(index, u[diff], v[diff])
        return out

    def _compare(self, index: store.ChunkIndex, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        mode = "exact" if self.params.verify == "exact" else "signature"
        n_tasks = max(1, math.ceil(len(u) / PAIRS_PER_TASK))
        if self.ctx.workers > 1 and len(u) > 20_000:
            n_tasks = max(n_tasks, self.ctx.workers)
        cuts = np.linspace(0, len(u), n_tasks + 1).astype(np.int64)
        chunks_json = [c.to_json() for c in index.chunks]
        tasks = [(mode, chunks_json, u[a:b], v[a:b]) for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
        return np.concatenate(self.ctx.map(candidates.similarity_task, tasks))

    def _plan_clusters(self, index, comp: graph.Components, stats) -> dict[str, Any]:
        p = self.params
        nodes, root, best_node, best_jac = comp.finish()
        if p.against:
            assert best_node is not None and best_jac is not None
            # every corpus document with a verified match in REF goes; its representative is
            # its most similar reference document (the first such edge, i.e. the smallest id)
            mi = np.flatnonzero((nodes & store.REF_FLAG) == 0)
            comp_root = root[mi]
            member_rep = best_node[mi]
            member_j = best_jac[mi]
            kept = np.zeros(len(mi), dtype=bool)
            member_refs = nodes[mi]
        else:
            keeper = self._keepers(index, nodes, root)
            mi = np.arange(len(nodes))
            comp_root = root
            member_refs = nodes
            member_rep = nodes[keeper[root]]
            kept = keeper[root] == mi
            member_j = np.ones(len(nodes))
            need = ~kept
            if p.method == "minhash" and need.any():
                member_j[need] = self._member_similarity(index, nodes[need], member_rep[need])
            member_j[kept] = 1.0
        # cluster id: rank of the component's first document in run order
        roots, comp_id, sizes = np.unique(comp_root, return_inverse=True, return_counts=True)
        size = sizes[comp_id]
        big = sizes > p.max_cluster_size
        if big.any():
            self.ctx.log.warning(
                "dedup: %d cluster(s) larger than --max-cluster-size %d (largest %d documents): "
                "often a chain of false matches; see the cluster table",
                int(big.sum()),
                p.max_cluster_size,
                int(sizes.max()),
            )
        drop = ~kept
        stats.update(
            clusters=len(roots),
            duplicates=int(drop.sum()),
            largest_cluster=int(sizes.max()) if len(sizes) else 0,
            oversized_clusters=int(big.sum()),
        )
        table = pa.table(
            {
                "cluster": pa.array(comp_id.astype(np.int64)),
                "id": index.gather_ids(member_refs),
                "representative": index.gather_ids(member_rep),
                "kept": pa.array(kept),
                "jaccard": pa.array(member_j, type=pa.float64()),
                "size": pa.array(size.astype(np.int64)),
            }
        )
        table = table.take(pa.array(np.lexsort((member_refs, comp_id))))
        cpath = self.ctx.workdir / "clusters.pqw"  # Parquet, named so no reader of OUT takes it for data
        pq.write_table(table, str(cpath))
        files = self._write_piece_files(
            member_refs, {"drop": drop, "cluster": comp_id.astype(np.int64), "size": size.astype(np.int64)}
        )
        return {"pieces": files, "clusters_file": str(cpath), "stats": stats}

    def _keepers(self, index: store.ChunkIndex, nodes: np.ndarray, root: np.ndarray) -> np.ndarray:
        """For each component root (node index), the node index of the document to keep."""
        keeper = np.arange(len(nodes))
        if self.params.keep == "first" or len(nodes) == 0:
            return keeper  # the root is the first member
        values = index.gather_rows(nodes, "value", np.float64)
        order = np.lexsort((np.arange(len(nodes)), -values, root))
        first = np.ones(len(order), dtype=bool)
        first[1:] = root[order][1:] != root[order][:-1]
        best = order[first]
        keeper[root[best]] = best
        return keeper

    def _member_similarity(self, index, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        a, b = self._rep_of(a), self._rep_of(b)
        out = np.ones(len(a))
        diff = np.flatnonzero(a != b)
        if len(diff):
            mode = "exact" if self.params.verify == "exact" else "signature"
            out[diff] = candidates.similarity_task((mode, [c.to_json() for c in index.chunks], a[diff], b[diff]))
        return out

    def _write_piece_files(self, refs: np.ndarray, cols: dict[str, np.ndarray]) -> dict[str, str]:
        """One .npz per shard piece with the planned rows (sorted) and their columns."""
        folder = self.ctx.workdir / "plan"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        corpus = (refs & store.REF_FLAG) == 0
        refs = refs[corpus]
        order = np.argsort(refs, kind="stable")
        refs = refs[order]
        cols = {k: v[corpus][order] for k, v in cols.items()}
        packed = store.ref_piece(refs)
        rows = store.ref_row(refs)
        files: dict[str, str] = {}
        if len(refs) == 0:
            return files
        cuts = np.flatnonzero(np.diff(packed)) + 1
        starts = np.concatenate(([0], cuts))
        ends = np.concatenate((cuts, [len(refs)]))
        for s, e in zip(starts, ends, strict=True):
            key = store.piece_key(int(packed[s]))
            path = folder / f"{key}.npz"
            arrays: dict[str, Any] = {k: v[s:e] for k, v in cols.items()}
            np.savez(path, rows=rows[s:e], **arrays)
            files[key] = str(path)
        return files

    def _plan_paragraphs(self, results, stats) -> dict[str, Any]:
        refs = np.concatenate([r[0] for r in results]) if results else np.zeros(0, np.uint64)
        lines = np.concatenate([r[1] for r in results]) if results else np.zeros(0, np.uint32)
        order = np.lexsort((lines, refs))
        refs, lines = refs[order], lines[order]
        stats["lines_removed"] = len(refs)
        stats["docs_modified"] = int(len(np.unique(refs)))
        files = self._write_piece_files(refs, {"line": lines.astype(np.int64)})
        return {"pieces": files, "clusters_file": None, "stats": stats}

    # -- apply ----------------------------------------------------------------------------------
    def _piece(self, plan: Any, shard: ShardInfo) -> dict[str, np.ndarray] | None:
        path = plan["pieces"].get(shard.key)
        if path is None:
            return None
        if path not in self._cache:
            self._cache = {path: stagefiles.load_npz(path)}  # one piece at a time
        return self._cache[path]

    def columns_read(self) -> set[str]:
        return {self.params.keep[4:]} if self.params.keep.startswith("max:") else set()

    def columns_added(self) -> set[str] | None:
        return {"dup_cluster", "dup_cluster_size", "dup_kept"} if self.params.annotate else set()

    def apply(self, batch: pa.RecordBatch, shard: ShardInfo, pos: int, plan: Any) -> Result:
        p = self.params
        n = batch.num_rows
        piece = self._piece(plan, shard)
        lo = hi = 0
        if piece is not None:
            lo, hi = np.searchsorted(piece["rows"], [pos, pos + n])
        if p.method == "paragraphs":
            if piece is None or hi == lo:
                return Result(batch)
            return self._apply_paragraphs(batch, piece["rows"][lo:hi] - pos, piece["line"][lo:hi])
        if p.annotate:
            cluster = np.full(n, -1, dtype=np.int64)
            size = np.ones(n, dtype=np.int64)
            kept = np.ones(n, dtype=bool)  # the member of its cluster that dedup would keep
            if piece is not None:
                r = piece["rows"][lo:hi] - pos
                cluster[r] = piece["cluster"][lo:hi]
                size[r] = piece["size"][lo:hi]
                kept[r[piece["drop"][lo:hi]]] = False
            batch = with_column(batch, "dup_cluster", pa.array(cluster, mask=cluster < 0))
            batch = with_column(batch, "dup_cluster_size", pa.array(size))
            batch = with_column(batch, "dup_kept", pa.array(kept))
            return Result(batch)
        if piece is None or hi == lo:
            return Result(batch)
        keep = np.ones(n, dtype=bool)
        sel = piece["drop"][lo:hi]
        keep[piece["rows"][lo:hi][sel] - pos] = False
        rule = "against" if p.against else p.method
        return Result.keep_where(batch, keep, self.reason(rule))

    def _apply_paragraphs(self, batch: pa.RecordBatch, rows: np.ndarray, lines: np.ndarray) -> Result:
        import polars as pl

        texts = self.texts(batch)
        affected = np.unique(rows)
        sub = texts.take(pa.array(affected))
        frame = _lines_frame(sub)
        frame = frame.with_columns(pl.Series("row", affected[frame["row"].to_numpy()]))
        cut = pl.DataFrame({"row": rows.astype(np.int64), "lineno": lines.astype(np.int64)})
        kept = frame.with_columns(pl.col("row").cast(pl.Int64), pl.col("lineno").cast(pl.Int64)).join(
            cut, on=["row", "lineno"], how="anti", maintain_order="left"
        )
        new = (
            pl.DataFrame({"row": affected.astype(np.int64)})
            .join(
                kept.group_by("row", maintain_order=True).agg(pl.col("line").str.join("\n")),
                on="row",
                how="left",
            )
            .with_columns(pl.col("line").fill_null(""))
        )
        idx = np.full(batch.num_rows, -1, dtype=np.int64)
        idx[affected] = np.arange(len(affected))
        new_text = new["line"].to_arrow().cast(pa.large_string()).take(pa.array(np.clip(idx, 0, None)))
        merged = pl.Series(values=pc.if_else(pa.array(idx >= 0), new_text, texts.cast(pa.large_string())))
        empty = (merged.str.strip_chars().str.len_bytes() == 0).to_numpy() & (idx >= 0)
        field_type = batch.schema.field(self.ctx.text_field).type
        batch = with_column(batch, self.ctx.text_field, merged.to_arrow().cast(field_type))
        changed = {"docs_changed": int(((idx >= 0) & ~empty).sum()), "lines_removed": len(rows)}
        return Result.keep_where(batch, ~empty, self.reason("paragraphs"), changed)

    # -- finish ---------------------------------------------------------------------------------
    def finish(self, plan: Any) -> dict[str, Any]:
        stats = dict(plan.get("stats", {}))
        src = plan.get("clusters_file")
        if src and os.path.exists(src):
            if self.params.clusters:
                dest: str | None = self.params.clusters
            elif self.ctx.out_dir is not None:
                dest = str(self.ctx.report_dir / "clusters.arrow")
            else:
                dest = None
            if dest is not None:
                from dcurate.io import storage

                with storage.local_target(dest) as local:  # an s3:// --clusters: written, then published
                    _write_cluster_table(src, Path(local))
                stats["clusters_file"] = dest
        self._remove_scratch()
        return stats

    def _remove_scratch(self) -> None:
        """Remove the scan's work files once the plans are final (every phase is done; a resumed
        run finds the plans and never reads them again). Plans and the cluster table stay."""
        work = self.ctx.workdir
        for name in ("scan", "cand", "candidates", "ref", "pairs"):
            shutil.rmtree(work / name, ignore_errors=True)
        for name in ("pairs.npz", "pairs_u.npy", "pairs_v.npy", "ref.json"):
            (work / name).unlink(missing_ok=True)


def _write_cluster_table(src: str, dest: Path) -> None:
    """Copy the cluster table to ``dest`` atomically: Parquet for a .parquet name, else Arrow IPC."""
    if dest.name.endswith(".parquet"):
        with atomic_open(str(dest)) as f, open(src, "rb") as r:
            shutil.copyfileobj(r, f, 1 << 20)
        return
    table = pq.read_table(src)
    with atomic_open(str(dest)) as f, pa.ipc.new_file(f, table.schema) as w:
        w.write_table(table)


def _lines_frame(texts) -> pl.DataFrame:
    """One row per line: (row, lineno, line)."""
    import polars as pl

    s = pl.Series("t", values=texts.cast(pa.large_string())).fill_null("")
    return (
        pl.DataFrame({"t": s})
        .with_row_index("row")
        .select(pl.col("row").cast(pl.Int64), pl.col("t").str.split("\n").alias("line"))
        .with_columns(pl.int_ranges(pl.col("line").list.len()).alias("lineno"))
        .explode(["line", "lineno"])
        .drop_nulls("line")
    )


def warmup() -> None:
    """Load the MinHash kernels once in the pool's fork server (see candidates.warm_kernels)."""
    candidates.warm_kernels()
