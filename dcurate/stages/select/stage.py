"""``select``: pick the k pool documents that best match a target set (DSIR or ZIP-FIT).

``dcurate select POOL OUT --method dsir|zipfit --target TARGET (--k N | --fraction F | --tokens T)``

DSIR (Xie et al. 2023; :mod:`dcurate.stages.select.dsir`), a global stage in one scan/reduce round:

* scan (parallel over pieces): hashed unigram + bigram counts of every pool piece; the n-gram
  buckets, token counts and ids of each piece are kept in the stage's work folder;
* reduce: raw-pool model + per-bucket log-ratio table against the target model built in
  :meth:`Select.prepare`; then, fanned out over pieces from the kept buckets (no second read
  of the pool), per-document importance log-weights and keys = log-weight + Gumbel noise seeded
  by (seed, document id); the exact global cut-off for k (ties broken by id; for large pools by
  radix select over the pieces' key files, :mod:`dcurate.core.topk_partitioned`); the KL
  reduction of the selection on the hashed features.

ZIP-FIT (Obbad et al. 2024; :mod:`dcurate.stages.select.zipfit`), one round: scan stores the pool texts in
chunks; reduce scores the chunks in parallel against a seeded sample of ``--num-targets`` targets
(the scores stay in files next to the chunks, then in each piece's keys file) and computes the
global top-k cut-off (ties broken by id).

Apply keeps the selected documents (all columns) and adds ``dsir_log_weight`` or ``zipfit_score``.
Documents with fewer than ``--min-words`` word-punct tokens are never selected (DSIR: 100, the
reference's ``min_example_length``, which counts the same tokens).
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dcurate.core import stagefiles
from dcurate.core.errors import InputError, RecipeError
from dcurate.core.params import param
from dcurate.core.stage import Result, ShardInfo, Stage, register, with_column
from dcurate.core.topk import FORMAT as topk_format
from dcurate.core.topk import Cutoff, compute_cutoff, kept_mask, tie_key
from dcurate.core.topk_partitioned import KeyPiece, partitioned_cutoff, use_partitioned
from dcurate.stages.select import dsir, zipfit
from dcurate.text.keys import seeded_keys

DSIR_MIN_WORDS = 100  # data-selection HashedNgramDSIR(min_example_length=100)
ZIPFIT_CHUNK_DOCS = 200  # pool documents per parallel ZIP-FIT scoring task
ZIPFIT_CHUNK_BYTES = 1 << 20


@dataclass
class SelectParams:
    method: str = param(
        "dsir",
        "Selection method: 'dsir' (hashed n-gram importance resampling, Xie et al. 2023) or 'zipfit' "
        "(gzip compression alignment, Obbad et al. 2024).",
        choices=["dsir", "zipfit"],
    )
    target: str | None = param(
        None, "Target documents (file, folder or glob; any supported format). Required.", path=True
    )
    k: int | None = param(None, "Select exactly this many documents (one of --k/--fraction/--tokens).", min=0)
    fraction: float | None = param(
        None, "Select this fraction of the pool's documents, rounded to the nearest count.", min=0.0, max=1.0
    )
    tokens: int | None = param(
        None,
        "Select documents in score order until their total token count reaches this number (tokens = "
        "word-punct tokens: runs of word characters or of punctuation, as data-selection counts them).",
        min=0,
    )
    min_words: int | None = param(
        None,
        "Documents with fewer tokens (word-punct tokens, as data-selection counts them) are not "
        "selectable. Default: 100 for dsir (data-selection's min_example_length), 0 for zipfit "
        "(the zip-fit package has no minimum).",
        min=0,
    )
    num_buckets: int = param(
        10_000,
        "DSIR: hash buckets for unigram+bigram features (paper and data-selection: 10,000).",
        min=1,
        max=2**31 - 1,
    )
    hash: str = param(
        "fast",
        "DSIR features: 'fast' (word-punct tokens of NFKC+lower-cased text, XXH64) or 'reference' "
        "(data-selection's tokens and sha256 hashing, bit for bit; slow).",
        choices=["fast", "reference"],
    )
    laplace: float = param(
        0.0,
        "DSIR: add-alpha pseudo-count per bucket before normalising both models (data-selection: 0).",
        min=0.0,
    )
    log_eps: float = param(
        1e-8, "DSIR: constant added inside the logs of the log-ratio (data-selection: 1e-8).", min=0.0
    )
    noise: bool = param(
        True,
        "DSIR: resample with seeded per-document Gumbel noise (Gumbel-top-k, as the paper); "
        "--no-noise takes the deterministic top-k by importance weight.",
    )
    level: int = param(
        9, "ZIP-FIT: gzip compression level 1-9 (paper's gzip; 0 is refused: it stores without compressing)."
    )
    num_targets: int | None = param(
        100,
        "ZIP-FIT: score against a seeded sample of this many targets (all when there are fewer; "
        "none = all). Default 100.",
        min=1,
    )
    gzip_engine: str = param(
        "auto",
        "ZIP-FIT: how C(x + t) is computed. 'auto': at level 9, dcurate's exact model of zlib's "
        "level-9 deflate (the same sizes, with the work that does not depend on the pair shared; "
        "self-checked against the linked zlib first, zlib for pairs it does not cover); zlib "
        "otherwise. 'zlib': always zlib (the deflate state after x copied per target).",
        choices=["auto", "zlib"],
    )

    def validate(self) -> None:
        given = [n for n in ("k", "fraction", "tokens") if getattr(self, n) is not None]
        if len(given) > 1:
            raise ValueError(
                f"give only one of --k, --fraction, --tokens (got {', '.join('--' + g for g in given)})"
            )
        if self.method == "zipfit":
            zipfit.check_level(self.level)


def _size_mode(p: SelectParams) -> tuple[str, float]:
    if p.tokens is not None:
        return "tokens", float(p.tokens)
    if p.fraction is not None:
        return "fraction", float(p.fraction)
    assert p.k is not None  # validate() requires one of k, fraction, tokens
    return "k", float(p.k)


# -- selection: exact global cut-off (dcurate.core.topk) ------------------------------------------


def _as_str(v) -> str | None:
    v = v.as_py() if isinstance(v, pa.Scalar) else v
    return None if v is None else str(v)


def selected_mask(
    keys: np.ndarray, eligible: np.ndarray, ids, shard: ShardInfo, pos: int, cut: Cutoff
) -> np.ndarray:
    """Rows ``pos..pos+len(keys)`` of a piece: which are selected under ``cut``."""
    return kept_mask(
        keys,
        cut,
        lambda rows: [tie_key(_as_str(ids[i]), shard.index, shard.piece, pos + i) for i in rows.tolist()],
        eligible=eligible,
    )


# -- per-piece work files ----------------------------------------------------------------------------


def _piece_files(workdir: Path, shard: ShardInfo) -> dict[str, Path]:
    base = workdir / shard.key
    return {
        "buckets": Path(f"{base}.buckets.bin"),
        "ngrams": Path(f"{base}.ngrams.bin"),
        "words": Path(f"{base}.words.bin"),
        "keys": Path(f"{base}.keys.npz"),
        "ids": Path(f"{base}.ids.arrow"),
    }


def _write_atomic_npz(path: Path, **arrays: np.ndarray) -> None:
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, allow_pickle=False, **arrays)
    os.replace(tmp, path)


def _write_ids(path: Path, ids: list[pa.Array]) -> None:
    arr = (
        pa.concat_arrays([a.cast(pa.large_string()) for a in ids]) if ids else pa.array([], pa.large_string())
    )
    table = pa.table({"id": arr})
    tmp = path.with_suffix(".tmp")
    with pa.OSFile(str(tmp), "wb") as f, pa.ipc.new_file(f, table.schema) as w:
        w.write_table(table)
    os.replace(tmp, path)


def _read_ids(path: Path) -> pa.Array:
    return stagefiles.read_arrow(path).column("id").combine_chunks()


def _load_keys(path: Path) -> dict[str, np.ndarray]:
    return stagefiles.load_npz(path)


def _bucket_dtype(num_buckets: int):
    return np.uint16 if num_buckets <= 65535 else np.int32


def _dsir_selected_counts(arg: tuple) -> np.ndarray:
    """Driver fan-out: hashed feature counts of one piece's selected documents."""
    files, shard, cut, num_buckets = arg
    k = _load_keys(files["keys"])
    ids = _read_ids(files["ids"]) if cut.last is not None else None
    sel = selected_mask(k["keys"], k["eligible"], ids, shard, 0, cut)
    buckets = np.fromfile(files["buckets"], dtype=_bucket_dtype(num_buckets))
    ngrams = np.fromfile(files["ngrams"], dtype=np.int64)
    keep = np.repeat(sel, ngrams)
    return np.bincount(buckets[keep], minlength=num_buckets).astype(np.int64)


def _dsir_piece_keys(arg: tuple) -> int:
    """Driver fan-out: importance log-weights and Gumbel keys of one piece (from its kept buckets)."""
    files, table, seed, noise, min_words, num_buckets = arg
    buckets = np.fromfile(files["buckets"], dtype=_bucket_dtype(num_buckets))
    ngrams = np.fromfile(files["ngrams"], dtype=np.int64)
    words = np.fromfile(files["words"], dtype=np.int64)
    doc = np.repeat(np.arange(len(ngrams), dtype=np.int64), ngrams)
    weights = np.bincount(doc, weights=table[buckets], minlength=len(ngrams))
    keys = weights + dsir.gumbel_noise(_read_ids(files["ids"]), seed) if noise else weights.copy()
    _write_atomic_npz(files["keys"], keys=keys, score=weights, eligible=words >= min_words, sizes=words)
    return len(ngrams)


_TARGETS: dict[str, zipfit.TargetSet] = {}


def _id_strings(col) -> pa.Array:
    """Document ids as strings (the self-check's sample is a hash of them)."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        return col.cast(pa.string())
    try:
        return pc.cast(col, pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return pa.array([str(v) for v in col.to_pylist()], pa.string())


def _zipfit_score_chunk(arg: tuple) -> tuple[np.ndarray, int, int]:
    """Worker: ZIP-FIT scores of one chunk file of pool texts, with the pairs the sampled
    self-check compared with zlib and how many of them disagreed."""
    chunk, targets_path, level, engine, seed = arg
    key = f"{targets_path}:{level}:{engine}"
    ts = _TARGETS.get(key)
    if ts is None:
        texts = stagefiles.read_arrow(targets_path).column("text").to_pylist()
        _TARGETS.clear()
        ts = _TARGETS[key] = zipfit.TargetSet(texts, level, engine)
    ts.seed = seed
    table = stagefiles.read_arrow(chunk)
    ids = table.column("id").to_pylist() if "id" in table.column_names else None
    checked, mismatched = ts.checked, ts.mismatched
    scores = ts.scores(table.column("text").to_pylist(), ids)
    return scores, ts.checked - checked, ts.mismatched - mismatched


def _zipfit_score_chunk_file(arg: tuple) -> tuple[int, int]:
    """Worker: :func:`_zipfit_score_chunk`, the scores kept next to the chunk (not sent back)."""
    scores, checked, mismatched = _zipfit_score_chunk(arg)
    path = Path(f"{arg[0]}.scores.npy")
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, np.asarray(scores, dtype=np.float64))
    os.replace(tmp, path)
    return checked, mismatched


def _zipfit_piece_keys(arg: tuple) -> int:
    """Worker: one piece's keys file from its chunks' scores and its documents' word counts."""
    files, score_files, min_words, sizes = arg
    parts = [stagefiles.load_npy(f) for f in score_files]
    sc = np.concatenate(parts) if parts else np.zeros(0)
    if sizes is None:  # written by the scan (older scans sent the counts to the driver)
        sizes = np.fromfile(files["words"], dtype=np.int64)
    _write_atomic_npz(files["keys"], keys=sc, score=sc, eligible=sizes >= min_words, sizes=sizes)
    return len(sc)


# -- the stage ----------------------------------------------------------------------------------------


@register
class Select(Stage):
    name = "select"
    Params = SelectParams
    summary = "Select the pool documents closest to a target set (DSIR importance resampling or ZIP-FIT)."
    example = "dcurate select data/demo/corpus data/demo/picked --method dsir --target data/demo/extra/target.jsonl --k 500"
    kind = "global"

    def __init__(self, params: SelectParams, ctx):
        super().__init__(params, ctx)
        self._piece_cache: tuple[str, dict] | None = None

    def preload_modules(self) -> list[str]:
        # ZIP-FIT's deflate model: the fork server loads its kernels and runs its self-check once
        from dcurate.stages.select import preload_modules as zipfit_preload

        return [*super().preload_modules(), *zipfit_preload(dataclasses.asdict(self.params))]

    @property
    def rounds(self) -> int:  # type: ignore[override]
        return 1

    @property
    def min_words(self) -> int:
        if self.params.min_words is not None:
            return self.params.min_words
        return DSIR_MIN_WORDS if self.params.method == "dsir" else 0

    @property
    def score_column(self) -> str:
        return "dsir_log_weight" if self.params.method == "dsir" else "zipfit_score"

    def _wd(self, name: str) -> Path:
        return Path(self.ctx.workdir) / name

    # -- driver --------------------------------------------------------------------------------------
    def fingerprint(self) -> Any:
        from dcurate.io import expand_inputs

        if not self.params.target:
            return None
        try:
            shards = expand_inputs([self.params.target], None)
        except Exception:  # reported by prepare()
            return None
        out = []
        from dcurate.io import storage

        for s in shards:
            st = storage.stamp(s.path)  # a URI: its size and LastModified
            out.append([s.path, *st] if st is not None else [s.path])
        return {"targets": out, "topk": topk_format}

    def _read_targets(self) -> pa.Table:
        from dcurate.io import read_table

        p = self.params
        if not p.target:
            raise RecipeError("select: --target is required (the documents to match)")
        if p.k is None and p.fraction is None and p.tokens is None:
            raise RecipeError("select: give one of --k N, --fraction F or --tokens T")
        tf, idf = self.ctx.text_field, self.ctx.id_field
        table = read_table([p.target], text_field=tf, id_field=idf, columns=[idf, tf])
        if table.num_rows == 0:
            raise InputError(f"{p.target}: the target set is empty (no documents)")
        texts = table.column(tf)
        lengths = np.asarray(pc.utf8_length(texts.fill_null("")).to_numpy(zero_copy_only=False))
        if not (lengths > 0).any():
            raise InputError(f"{p.target}: all {table.num_rows} target documents have an empty '{tf}' field")
        return table

    def prepare(self) -> None:
        p = self.params
        table = self._read_targets()
        tf, idf = self.ctx.text_field, self.ctx.id_field
        os.makedirs(self.ctx.workdir, exist_ok=True)
        if p.method == "dsir":
            counts = np.zeros(p.num_buckets, dtype=np.int64)
            for b in table.to_batches(max_chunksize=4096):
                counts += dsir.ngram_counts(dsir.featurize(b.column(tf), p.num_buckets, p.hash), p.num_buckets)
            if counts.sum() == 0:
                raise InputError(f"{p.target}: the target documents contain no words")
            np.save(self._wd("target_counts.npy"), counts)
            self.ctx.log.info(
                "select: DSIR target model from %d documents (%d n-grams)", table.num_rows, int(counts.sum())
            )
        else:
            texts = table.column(tf).fill_null("")
            nonempty = np.asarray(pc.greater(pc.utf8_length(texts), 0).to_numpy(zero_copy_only=False))
            table = table.filter(pa.array(nonempty))
            ids = table.column(idf).cast(pa.large_string())
            h = seeded_keys(ids, self.ctx.seed)
            id_list = ids.to_pylist()
            order = sorted(range(table.num_rows), key=lambda i: (int(h[i]), id_list[i]))
            n = p.num_targets if p.num_targets is not None else len(order)
            order = order[:n]
            sample = pa.table(
                {"id": ids.take(pa.array(order)), "text": table.column(tf).take(pa.array(order))}
            )
            tmp = self._wd("targets.arrow.tmp")
            with pa.OSFile(str(tmp), "wb") as f, pa.ipc.new_file(f, sample.schema) as w:
                w.write_table(sample)
            os.replace(tmp, self._wd("targets.arrow"))
            self.ctx.log.info(
                "select: ZIP-FIT against %d of %d non-empty targets (gzip level %d)",
                len(order),
                len(id_list),
                p.level,
            )

    # -- scan ------------------------------------------------------------------------------------------
    def scan(self, batches, shard: ShardInfo, round: int, plan: Any) -> Any:
        if self.params.method == "dsir":
            return self._scan_dsir(batches, shard)
        return self._scan_zipfit(batches, shard)

    def _scan_dsir(self, batches, shard: ShardInfo) -> Any:
        p = self.params
        files = _piece_files(Path(self.ctx.workdir), shard)
        counts = np.zeros(p.num_buckets, dtype=np.int64)
        n = 0
        ids = []
        dt = _bucket_dtype(p.num_buckets)
        tmp = {k: files[k].with_suffix(".tmp") for k in ("buckets", "ngrams", "words")}
        with (
            open(tmp["buckets"], "wb") as fb,
            open(tmp["ngrams"], "wb") as fn,
            open(tmp["words"], "wb") as fw,
        ):
            for batch in batches:
                f = dsir.featurize(batch.column(self.ctx.text_field), p.num_buckets, p.hash)
                counts += np.bincount(f.buckets, minlength=p.num_buckets)
                fb.write(f.buckets.astype(dt).tobytes())
                fn.write(np.diff(f.offsets).astype(np.int64).tobytes())
                fw.write(f.n_words.astype(np.int64).tobytes())
                ids.append(batch.column(self.ctx.id_field))
                n += batch.num_rows
        for k, t in tmp.items():
            os.replace(t, files[k])
        _write_ids(files["ids"], ids)
        return {"counts": counts, "n": n}

    def _scan_zipfit(self, batches, shard: ShardInfo) -> Any:
        wd = Path(self.ctx.workdir)
        files = _piece_files(wd, shard)
        chunks: list[str] = []
        ids: list[pa.Array] = []
        words: list[np.ndarray] = []
        pending: list[pa.Array] = []
        pending_ids: list[pa.Array] = []  # the documents' ids: the self-check samples by id
        pending_docs = pending_bytes = 0

        def flush():
            nonlocal pending, pending_ids, pending_docs, pending_bytes
            if not pending_docs:
                return
            path = wd / f"{shard.key}.chunk{len(chunks):06d}.arrow"
            table = pa.table({"text": pa.concat_arrays(pending), "id": pa.concat_arrays(pending_ids)})
            tmp = path.with_suffix(".tmp")
            opts = pa.ipc.IpcWriteOptions(compression="lz4")
            with pa.OSFile(str(tmp), "wb") as f, pa.ipc.new_file(f, table.schema, options=opts) as w:
                w.write_table(table)
            os.replace(tmp, path)
            chunks.append(str(path))
            pending, pending_ids, pending_docs, pending_bytes = [], [], 0, 0

        for batch in batches:
            text = batch.column(self.ctx.text_field).cast(pa.large_string())
            ids.append(batch.column(self.ctx.id_field))
            id_text = _id_strings(batch.column(self.ctx.id_field))
            words.append(dsir.token_counts(text).astype(np.int64))
            nbytes = np.asarray(pc.binary_length(text.fill_null("")).to_numpy(zero_copy_only=False))
            start = 0
            while start < len(text):
                # fill the current chunk up to its document and byte limits
                room_docs = ZIPFIT_CHUNK_DOCS - pending_docs
                csum = np.cumsum(nbytes[start : start + room_docs])
                take = int(np.searchsorted(csum, ZIPFIT_CHUNK_BYTES - pending_bytes, side="right")) + 1
                take = max(1, min(take, room_docs, len(text) - start))
                pending.append(text.slice(start, take))
                pending_ids.append(id_text.slice(start, take))
                pending_docs += take
                pending_bytes += int(nbytes[start : start + take].sum())
                start += take
                if pending_docs >= ZIPFIT_CHUNK_DOCS or pending_bytes >= ZIPFIT_CHUNK_BYTES:
                    flush()
        flush()
        _write_ids(files["ids"], ids)
        sizes = np.concatenate(words) if words else np.zeros(0, np.int64)
        tmp = files["words"].with_suffix(".tmp")
        with open(tmp, "wb") as fw:
            fw.write(sizes.astype(np.int64).tobytes())
        os.replace(tmp, files["words"])
        return {"chunks": chunks, "n": len(sizes)}

    # -- reduce ----------------------------------------------------------------------------------------
    def reduce(self, partials: list[tuple[ShardInfo, Any]], round: int, plan: Any) -> Any:
        p = self.params
        if p.method == "dsir" and round == 0:
            raw = np.zeros(p.num_buckets, dtype=np.int64)
            n = 0
            for _, part in partials:
                raw += part["counts"]
                n += part["n"]
            target = stagefiles.load_npy(self._wd("target_counts.npy"))
            if raw.sum() == 0:
                table = np.zeros(p.num_buckets)
            else:
                table = dsir.log_ratio(target, raw, p.laplace, p.log_eps)
            plan = {"table": table, "raw_counts": raw, "target_counts": target, "n": n}
            # per-document keys from the buckets kept by the scan, in parallel over pieces
            wd = Path(self.ctx.workdir)
            args = [
                (_piece_files(wd, shard), table, self.ctx.seed, p.noise, self.min_words, p.num_buckets)
                for shard, _ in partials
            ]
            self.ctx.map(_dsir_piece_keys, args)
            return self._reduce_dsir_select(partials, plan)
        return self._reduce_zipfit(partials)

    def _gather(self, partials) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list]:
        wd = Path(self.ctx.workdir)
        keys, elig, sizes, starts, files = [], [], [], [], []
        start = 0
        for shard, _ in partials:
            f = _piece_files(wd, shard)
            k = _load_keys(f["keys"])
            keys.append(k["keys"])
            elig.append(k["eligible"])
            sizes.append(k["sizes"])
            starts.append(start)
            start += len(k["keys"])
            files.append((shard, f))
        cat = lambda xs, dt: np.concatenate(xs) if xs else np.zeros(0, dt)  # noqa: E731
        return (
            cat(keys, np.float64),
            cat(elig, bool),
            cat(sizes, np.int64),
            np.asarray(starts + [start]),
            files,
        )

    def _cutoff_partitioned(self, partials, n_docs: int) -> tuple[Cutoff, list]:
        """The cut-off with the keys left in the per-piece work files (dcurate.core.topk_partitioned)."""
        wd = Path(self.ctx.workdir)
        files = [(shard, _piece_files(wd, shard)) for shard, _ in partials]
        pieces = [
            KeyPiece(
                str(f["keys"]),
                field="keys",
                eligible="eligible",
                sizes="sizes",
                ids=str(f["ids"]),
                id_str=True,
                shard_index=shard.index,
                piece=shard.piece,
            )
            for shard, f in files
        ]
        mode, amount = _size_mode(self.params)
        budget = amount if mode != "fraction" else float(math.floor(amount * n_docs + 0.5))
        cut = partitioned_cutoff(self.ctx.map, pieces, budget, use_sizes=mode == "tokens")
        return cut, files

    def _cutoff(self, partials) -> tuple[Cutoff, list]:
        p = self.params
        mode, amount = _size_mode(p)
        n_docs = sum(int(part["n"]) for _, part in partials)
        if use_partitioned(n_docs):
            cut, files = self._cutoff_partitioned(partials, n_docs)
        else:
            cut, files = self._cutoff_in_memory(partials)
        budget = amount if mode != "fraction" else float(math.floor(amount * n_docs + 0.5))
        cut.requested = int(budget)
        if cut.value == -math.inf and cut.eligible < budget:
            unit_name = "words" if mode == "tokens" else "documents"
            self.ctx.log.warning(
                "select: asked for %d %s but the pool has only %d eligible documents (of %d; min_words=%d); "
                "selecting all of them",
                int(budget),
                unit_name,
                cut.eligible,
                n_docs,
                self.min_words,
            )
        return cut, files

    def _cutoff_in_memory(self, partials) -> tuple[Cutoff, list]:
        p = self.params
        keys, elig, sizes, starts, files = self._gather(partials)
        mode, amount = _size_mode(p)
        unit: np.ndarray | None = None
        if mode == "tokens":
            budget, unit = amount, sizes.astype(np.float64)
        else:
            k = amount if mode == "k" else math.floor(amount * len(keys) + 0.5)
            budget = float(k)

        def tie_info(idx: np.ndarray) -> list[tuple]:
            out = []
            piece_of = np.searchsorted(starts, idx, side="right") - 1
            for pi in np.unique(piece_of):
                shard, f = files[pi]
                ids = _read_ids(f["ids"])
                for g in idx[piece_of == pi].tolist():
                    row = g - int(starts[pi])
                    out.append((g, tie_key(_as_str(ids[row]), shard.index, shard.piece, row)))
            out.sort(key=lambda gt: gt[0])
            return [t for _, t in out]

        return compute_cutoff(keys, budget, tie_info, eligible=elig, sizes=unit), files

    def _reduce_dsir_select(self, partials, plan: dict) -> dict:
        p = self.params
        cut, files = self._cutoff(partials)
        plan = dict(plan, cutoff=cut)
        if cut.selected:
            parts = self.ctx.map(
                _dsir_selected_counts, [(f, shard, cut, p.num_buckets) for shard, f in files]
            )
            sel = np.sum(parts, axis=0)
            before = dsir.kl_divergence(plan["target_counts"], plan["raw_counts"])
            after = dsir.kl_divergence(plan["target_counts"], sel)
            plan["kl"] = {
                "kl_target_pool": before,
                "kl_target_selected": after,
                "kl_reduction": before - after,
            }
            self.ctx.log.info(
                "select: DSIR KL reduction %.4f (KL(target||pool) %.4f -> KL(target||selected) %.4f, hashed features)",
                before - after,
                before,
                after,
            )
        return plan

    def _reduce_zipfit(self, partials) -> dict:
        p = self.params
        wd = Path(self.ctx.workdir)
        tasks = []
        for _, part in partials:
            for c in part["chunks"]:
                tasks.append((c, str(wd / "targets.arrow"), p.level, p.gzip_engine, self.ctx.seed))
        results = self.ctx.map(_zipfit_score_chunk_file, tasks)
        check = {"checked_pairs": sum(r[0] for r in results), "mismatches": sum(r[1] for r in results)}
        if check["mismatches"]:
            # The deflate model disagreed with zlib: every pair is rescored with zlib, so the
            # output is the same whichever chunk (or worker) found the mismatch.
            self.ctx.log.warning(
                "select: the deflate model disagreed with zlib on %d of %d sampled pairs; "
                "rescoring every pair with zlib", check["mismatches"], check["checked_pairs"],
            )
            self.ctx.map(_zipfit_score_chunk_file, [(*t[:3], "zlib", t[4]) for t in tasks])
            check["rescored_with_zlib"] = True
        # the scores stay on storage: each piece's keys file is written from its chunks' scores
        self.ctx.map(
            _zipfit_piece_keys,
            [
                (_piece_files(wd, shard), [f"{c}.scores.npy" for c in part["chunks"]], self.min_words, part.get("sizes"))
                for shard, part in partials
            ],
        )
        for c, *_ in tasks:
            os.remove(c)
            os.remove(f"{c}.scores.npy")
        cut, _ = self._cutoff(partials)
        return {"cutoff": cut, "deflate_check": check}

    # -- apply -------------------------------------------------------------------------------------------
    def _piece(self, shard: ShardInfo) -> dict:
        if self._piece_cache is None or self._piece_cache[0] != shard.key:
            self._piece_cache = (shard.key, _load_keys(_piece_files(Path(self.ctx.workdir), shard)["keys"]))
        return self._piece_cache[1]

    def apply(self, batch: pa.RecordBatch, shard: ShardInfo, pos: int, plan: Any) -> Result:
        k = self._piece(shard)
        n = batch.num_rows
        keys = k["keys"][pos : pos + n]
        elig = k["eligible"][pos : pos + n]
        if len(keys) != n:
            raise RuntimeError(f"select: piece {shard.key} changed between scan and apply")
        cut: Cutoff = plan["cutoff"]
        ids = batch.column(self.ctx.id_field) if cut.last is not None else None
        sel = selected_mask(keys, elig, ids.to_pylist() if ids is not None else None, shard, pos, cut)
        batch = with_column(batch, self.score_column, pa.array(k["score"][pos : pos + n], pa.float64()))
        reasons = np.where(elig, self.reason("below_cutoff"), self.reason("too_short"))
        return Result.keep_where(batch, sel, reasons, {"selected": int(sel.sum())})

    def finish(self, plan: Any) -> dict[str, Any]:
        cut: Cutoff = plan["cutoff"]
        out: dict[str, Any] = {
            "method": self.params.method,
            "selected": cut.selected,
            "eligible": cut.eligible,
            "min_words": self.min_words,
        }
        if "kl" in plan:
            out.update({k: round(v, 6) for k, v in plan["kl"].items()})
        if self.params.method == "zipfit":
            out["level"] = self.params.level
            if plan.get("deflate_check"):
                out["deflate_check"] = plan["deflate_check"]
        return out

    def describe(self) -> dict[str, Any]:
        d = dataclasses.asdict(self.params)
        d["min_words"] = self.min_words
        return d
