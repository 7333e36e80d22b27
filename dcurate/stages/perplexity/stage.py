"""``perplexity``: CCNet-style n-gram language-model perplexity per document, and ``train-lm``.

Score (Wenzek et al. 2020, "CCNet", ``cc_net/perplexity.py``): every line of a document is a
sentence scored with ``<s>``/``</s>`` (KenLM ``score(line, bos=True, eos=True)``) and

    perplexity = 10 ** (-(sum of log10 p over the document's tokens and one </s> per line)
                        / (number of tokens + number of lines))

over the normalised lines (NFKC, lower-case, ``\\w+`` words of :mod:`dcurate.text.normalize`, or the
sentencepiece pieces of the normalised line when the model was trained with one). Differences
from CCNet, on purpose: lines without any token are skipped (CCNet scores a blank line as
``<s> </s>``), the value is not rounded (CCNet rounds to 0.1 for display), and documents
without any token get a null perplexity (CCNet leaves them unscored) and a null bucket.

Modes: annotate only (default; column ``perplexity``); ``--buckets head,middle,tail`` adds
``perplexity_bucket`` from explicit ``--cutoffs`` (map) or corpus-wide ``--percentiles``
(global; CCNet's 30th/60th by default); ``--max-perplexity X`` drops documents above X (map);
``--keep-top F`` keeps the lowest-perplexity fraction F of all documents (global; ties broken
by input order). In the filtering modes documents without tokens are dropped
(``perplexity.empty``).

Backends: ``kenlm`` (the ``kenlm`` module; ARPA or KenLM binary files such as CCNet's
``en.arpa.bin``) or ``builtin`` (:class:`dcurate.stages.perplexity.lm.NGramModel`, vectorised, ARPA only); both
give the same numbers (relative difference < 1e-4). ``auto`` picks kenlm when installed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from dcurate.core import stagefiles, workfile
from dcurate.core.errors import InputError, ModelError, RecipeError
from dcurate.core.params import param
from dcurate.core.paths import check_writes
from dcurate.core.stage import Result, ShardInfo, Stage, StageContext, register, with_column
from dcurate.core.topk import FORMAT as topk_format
from dcurate.core.topk import Cutoff, compute_cutoff, count_budget, kept_mask, tie_key
from dcurate.core.topk_partitioned import (
    KeyPiece,
    order_statistics,
    partitioned_cutoff,
    percentiles,
    piece_summaries,
    use_partitioned,
)
from dcurate.io import storage
from dcurate.io.atomic import atomic_open
from dcurate.stages.perplexity import lm as ngram_lm

log = logging.getLogger("dcurate")

CCNET_PERCENTILES = ["30", "60"]  # CCNet: head/middle/tail at the 30th and 60th percentiles
CCNET_EN_CUTOFFS = (340.0, 520.0)  # CCNet's published English cut-offs (for documentation)


def _floats(values: list[str], what: str) -> list[float]:
    try:
        out = [float(v) for v in values]
    except ValueError:
        raise ValueError(f"{what} must be numbers, got {','.join(values)}") from None
    if any(not math.isfinite(v) for v in out):
        raise ValueError(f"{what} must be finite numbers, got {','.join(values)}")
    if any(b <= a for a, b in zip(out, out[1:], strict=False)):
        raise ValueError(f"{what} must increase, got {','.join(values)}")
    return out


@dataclass
class PerplexityParams:
    lm: str = param(
        help="Language model: an ARPA file (dcurate train-lm, KenLM lmplz, SRILM) or, with the kenlm "
        "backend, a KenLM binary (e.g. CCNet's en.arpa.bin).", path=True
    )
    backend: str = param(
        "auto",
        "Scorer: kenlm (the kenlm module), builtin (vectorised, ARPA only) or auto (kenlm when "
        "installed). Both agree to 1e-4 relative.",
        choices=["auto", "kenlm", "builtin"],
    )
    sentencepiece: str | None = param(
        None,
        "Sentencepiece model to tokenise lines with (as CCNet); default: the one recorded in the "
        "LM's .json sidecar, else dcurate words (NFKC + lower-case + \\w+).", path=True,
    )
    column: str = param(
        "perplexity", "Output column (float, not rounded; null for documents without tokens)."
    )
    buckets: list[str] = param(
        [], "Bucket names, low to high perplexity (CCNet: head,middle,tail); adds column <column>_bucket."
    )
    percentiles: list[str] = param(
        CCNET_PERCENTILES, "Corpus-wide percentile cut-offs between buckets (CCNet: 30,60); global pass."
    )
    cutoffs: list[str] = param(
        [], "Explicit perplexity cut-offs between buckets instead of percentiles (CCNet English: 340,520)."
    )
    max_perplexity: float | None = param(None, "Drop documents with perplexity above this.", min=0)
    keep_top: float | None = param(
        None,
        "Keep this fraction of all documents with the lowest perplexity (global; e.g. 0.3 = CCNet head).",
        min=0,
        max=1,
    )

    def validate(self) -> None:
        cut = _floats(self.cutoffs, "cutoffs")
        pct = _floats(self.percentiles, "percentiles")
        if any(not 0 < p < 100 for p in pct):
            raise ValueError(
                f"percentiles must lie strictly between 0 and 100, got {','.join(self.percentiles)}"
            )
        if self.buckets:
            want = len(cut or pct) + 1
            if len(self.buckets) != want:
                raise ValueError(
                    f"{len(self.buckets)} bucket names need {len(self.buckets) - 1} cut-offs; got "
                    f"{len(cut or pct)} ({'cutoffs' if cut else 'percentiles'}); e.g. buckets head,middle,tail "
                    "with percentiles 30,60 or cutoffs 340,520"
                )
            if len(set(self.buckets)) != len(self.buckets):
                raise ValueError(f"bucket names must differ, got {','.join(self.buckets)}")
        elif cut:
            raise ValueError("cutoffs need bucket names (e.g. buckets head,middle,tail)")
        if self.keep_top is not None and self.max_perplexity is not None:
            raise ValueError("use either keep_top or max_perplexity, not both")
        if self.keep_top is not None and self.keep_top <= 0:
            raise ValueError("keep_top must be > 0 (a fraction of the corpus, e.g. 0.3)")


# -- scorers -----------------------------------------------------------------------------------------


class _Scorer:
    """Turns document texts into (sum of log10 p, token count) per document."""

    def __init__(self, tokenizer: ngram_lm.Tokenizer):
        self.tokenizer = tokenizer

    def log10_and_count(self, texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def perplexity(self, texts: pa.Array) -> np.ndarray:
        return ngram_lm.perplexity(*self.log10_and_count(texts))


class KenLMScorer(_Scorer):
    def __init__(self, path: str, tokenizer: ngram_lm.Tokenizer):
        super().__init__(tokenizer)
        self.model = load_kenlm(path)

    def log10_and_count(self, texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        sent = self.tokenizer.sentences(texts)
        # UTF-8 bytes straight from the tokeniser's buffer: KenLM's score() would encode a str
        lines = sent.encoded()
        lp = np.fromiter(map(self.model.score, lines), dtype=np.float64, count=len(lines))
        ntok = sent.ntok.astype(np.float64) + 1.0
        sums = np.bincount(sent.doc, weights=lp, minlength=sent.n_docs)
        lens = np.bincount(sent.doc, weights=ntok, minlength=sent.n_docs).astype(np.int64)
        return sums, lens


class BuiltinScorer(_Scorer):
    def __init__(self, model: ngram_lm.NGramModel, tokenizer: ngram_lm.Tokenizer):
        super().__init__(tokenizer)
        self.model = model

    def log10_and_count(self, texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        return self.model.score_sentences(self.tokenizer.sentences(texts))


def kenlm_available() -> bool:
    try:
        import kenlm  # noqa: F401
    except ImportError:
        return False
    return True


@contextlib.contextmanager
def _quiet_fd2() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null for the duration (native code's stderr)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def load_kenlm(path: str):
    if storage.is_uri(path):  # KenLM opens files by name: a local copy, fetched once (errors name the URI)
        with storage.fetched(path) as local:
            return load_kenlm(local)
    try:
        import kenlm
    except ImportError:
        raise ModelError(
            "--backend kenlm needs the kenlm module: pip install kenlm (or use --backend builtin)"
        ) from None
    if not Path(path).is_file():
        raise ModelError(f"{path}: language model file not found")
    _check_kenlm_file(path)
    try:
        with _quiet_fd2():  # KenLM prints a loading banner and progress bar on fd 2 (C++ stderr)
            return kenlm.Model(str(path))
    except (OSError, RuntimeError) as e:
        msg = str(e).split("\n")[0][:300]
        raise ModelError(f"{path}: KenLM cannot load this model ({msg})") from None


def _check_kenlm_file(path: str) -> None:
    """Refuse a file that is neither ARPA text nor a KenLM binary before KenLM reads it (KenLM
    prints progress bars and multi-line C++ errors for those)."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    if head.startswith((b"mmap lm ", b"\x1f\x8b", b"BZh", b"\xfd7zXZ")):  # binary; gzip/bzip2/xz ARPA
        return
    first = next((ln.strip() for ln in head.split(b"\n") if ln.strip()), b"")
    if first != b"\\data\\":
        raise ModelError(
            f"{path}: not an ARPA file or KenLM binary (the first non-empty line is not '\\data\\')"
        )


def resolve_backend(backend: str, path: str) -> str:
    if backend == "auto":
        return "kenlm" if kenlm_available() else "builtin"
    return backend


# -- the stage ---------------------------------------------------------------------------------------


@register
class Perplexity(Stage):
    name = "perplexity"
    Params = PerplexityParams
    summary = "CCNet-style n-gram LM perplexity per document (column, buckets, threshold or top fraction)."
    example = "dcurate perplexity data/demo/corpus data/demo/ppl --lm data/demo/models/wiki.arpa --buckets head,middle,tail"

    def __init__(self, params: PerplexityParams, ctx: StageContext):
        super().__init__(params, ctx)
        self._scorer: _Scorer | None = None
        self._cache: tuple[str, np.ndarray] | None = None

    @property
    def kind(self) -> str:  # type: ignore[override]
        p = self.params
        return "global" if p.keep_top is not None or (p.buckets and not p.cutoffs) else "map"

    @property
    def bucket_column(self) -> str:
        return f"{self.params.column}_bucket"

    # -- model -------------------------------------------------------------------------------------
    def _sentencepiece(self) -> str | None:
        if self.params.sentencepiece:
            return self.params.sentencepiece
        return ngram_lm.read_sidecar(self.params.lm).get("sentencepiece") or None

    def _model_cache(self) -> Path:
        return Path(self.ctx.workdir) / "model.npz"

    def fingerprint(self) -> Any:
        out = {}
        for p in (self.params.lm, self._sentencepiece()):
            st = storage.stamp(p) if p else None  # a URI: its size and LastModified
            if st is not None:
                out[str(p)] = st
        if self.params.keep_top is not None:
            return {"models": out, "topk": topk_format}
        return out

    def describe(self) -> dict[str, Any]:
        d = dataclasses.asdict(self.params)
        d["backend_resolved"] = resolve_backend(self.params.backend, self.params.lm)
        d["sentencepiece_resolved"] = self._sentencepiece()
        return d

    def prepare(self) -> None:
        path = self.params.lm
        if not (storage.is_file(path) if storage.is_uri(path) else Path(path).is_file()):
            raise ModelError(f"{path}: language model file not found")
        backend = resolve_backend(self.params.backend, path)
        ngram_lm.Tokenizer(self._sentencepiece())  # fails early on a missing sentencepiece setup
        if backend == "kenlm":
            load_kenlm(path)
            return
        with storage.fetched(path) as local:  # a URI: read from a cached local copy
            if not ngram_lm.is_arpa(local):
                raise ModelError(
                    f"{local}: not an ARPA file; the builtin scorer reads ARPA only (a KenLM binary needs "
                    "--backend kenlm and the kenlm module)"
                )
            model = ngram_lm.read_arpa(local)
        cache = self._model_cache()
        workfile.dump({"order": model.order, "vocab": list(model.vocab), "keys": list(model.keys),
                       "logprob": list(model.logprob), "backoff": list(model.backoff)}, cache)

    def setup(self) -> None:
        tokenizer = ngram_lm.Tokenizer(self._sentencepiece())
        backend = resolve_backend(self.params.backend, self.params.lm)
        if backend == "kenlm":
            self._scorer = KenLMScorer(self.params.lm, tokenizer)
            return
        cache = self._model_cache()
        model = None
        if cache.is_file():
            try:
                d = workfile.load(cache)
                model = ngram_lm.NGramModel(d["order"], d["vocab"], d["keys"], d["logprob"], d["backoff"])
            except (workfile.BadWorkFile, KeyError, TypeError):
                log.warning("ignoring the malformed model cache %s", cache)
        if model is None:
            with storage.fetched(self.params.lm) as local:
                if not ngram_lm.is_arpa(local):
                    raise ModelError(f"{local}: not an ARPA file (use --backend kenlm for KenLM binaries)")
                model = ngram_lm.read_arpa(local)
        self._scorer = BuiltinScorer(model, tokenizer)

    def scores(self, batch: pa.RecordBatch) -> np.ndarray:
        """Perplexity of each document of ``batch`` (NaN when it has no token)."""
        if self._scorer is None:
            self.setup()
        assert self._scorer is not None
        if self.ctx.text_field not in batch.schema.names:
            raise InputError(
                f"stage perplexity: needs column '{self.ctx.text_field}'; input has {batch.schema.names}"
            )
        return self._scorer.perplexity(self.texts(batch))

    # -- columns and decisions ---------------------------------------------------------------------
    def columns_added(self) -> set[str] | None:
        return {self.params.column} | ({self.bucket_column} if self.params.buckets else set())

    def _annotate(
        self, batch: pa.RecordBatch, ppl: np.ndarray, cutoffs: list[float] | None
    ) -> pa.RecordBatch:
        empty = np.isnan(ppl)
        out = with_column(batch, self.params.column, pa.array(ppl, type=pa.float64(), mask=empty))
        if self.params.buckets:
            names = np.array(self.params.buckets, dtype=object)
            if cutoffs is None or any(math.isnan(c) for c in cutoffs):
                vals = pa.nulls(len(ppl), pa.string())
            else:
                idx = np.searchsorted(
                    np.asarray(cutoffs, dtype=np.float64), np.where(empty, 0.0, ppl), side="right"
                )
                vals = pa.array(names[idx], type=pa.string(), mask=empty)
            out = with_column(out, self.bucket_column, vals)
        return out

    def _decide(self, batch: pa.RecordBatch, ppl: np.ndarray, keep: np.ndarray, reason: str) -> Result:
        empty = np.isnan(ppl)
        reasons = np.where(empty, self.reason("empty"), reason)
        return Result.keep_where(batch, keep & ~empty, reasons, {"empty_documents": int(empty.sum())})

    def process(self, batch: pa.RecordBatch, shard: ShardInfo, pos: int) -> Result:
        ppl = self.scores(batch)
        cut = _floats(self.params.cutoffs, "cutoffs") if self.params.cutoffs else None
        out = self._annotate(batch, ppl, cut)
        if self.params.max_perplexity is None:
            return Result(out, None, {"empty_documents": int(np.isnan(ppl).sum())})
        with np.errstate(invalid="ignore"):
            keep = ppl <= self.params.max_perplexity
        return self._decide(out, ppl, keep, self.reason("max_perplexity"))

    # -- global: scan -> reduce -> apply -------------------------------------------------------------
    def _score_file(self, shard: ShardInfo) -> Path:
        return Path(self.ctx.workdir) / f"scores-{shard.key}.npy"

    def _ids_file(self, shard: ShardInfo) -> Path:
        return Path(self.ctx.workdir) / f"ids-{shard.key}.arrow"

    def scan(self, batches, shard: ShardInfo, round: int, plan: Any) -> Any:
        parts, ids = [], []
        for b in batches:
            parts.append(self.scores(b))
            if self.ctx.id_field in b.schema.names:
                ids.append(b.column(self.ctx.id_field))
        ppl = np.concatenate(parts) if parts else np.zeros(0)
        path = self._score_file(shard)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp.npy")
        np.save(tmp, ppl)
        os.replace(tmp, path)
        has_ids = self.params.keep_top is not None and bool(ids) and len(ids) == len(parts)
        if has_ids:  # tie-breaks of keep_top: the ids of the documents tied at the cut-off
            arr = (
                pa.chunked_array(ids)
                if len({a.type for a in ids}) == 1
                else pa.chunked_array([a.cast(pa.string()) for a in ids])
            )
            t = pa.table({"id": arr})
            with atomic_open(str(self._ids_file(shard))) as f, pa.ipc.new_file(f, t.schema) as w:
                w.write_table(t)
        return {"n": len(ppl), "file": str(path), "ids": has_ids}

    def reduce(self, partials: list[tuple[ShardInfo, Any]], round: int, plan: Any) -> Any:
        parts = sorted(partials, key=lambda sp: (sp[0].index, sp[0].piece))
        if use_partitioned(sum(int(p["n"]) for _, p in parts)):
            return self._reduce_partitioned(parts)
        arrays = [stagefiles.load_npy(p["file"]) for _, p in parts]
        ppl = np.concatenate(arrays) if arrays else np.zeros(0)
        valid = ppl[~np.isnan(ppl)]
        out: dict[str, Any] = {
            "documents": int(len(ppl)),
            "empty_documents": int(len(ppl) - len(valid)),
            "median": float(np.median(valid)) if len(valid) else None,
        }
        if self.params.buckets:
            if self.params.cutoffs:
                out["cutoffs"] = _floats(self.params.cutoffs, "cutoffs")
            else:
                pct = _floats(self.params.percentiles, "percentiles")
                out["cutoffs"] = (
                    [float(x) for x in np.percentile(valid, pct)] if len(valid) else [math.nan] * len(pct)
                )
        if self.params.keep_top is not None:
            cut = out["keep"] = self._keep_top_plan(parts, arrays)
            if math.isfinite(cut.value):
                out["keep_threshold"] = -cut.value
            else:  # everything scored (-inf) or nothing (+inf)
                out["keep_threshold"] = float(valid.max()) if cut.selected else None
        return out

    def _reduce_partitioned(self, parts: list[tuple[ShardInfo, Any]]) -> dict[str, Any]:
        """:meth:`reduce` with the perplexities left in the score files: per-piece summaries, the
        median, the percentile cut-offs and the keep_top cut-off by exact radix select
        (dcurate.core.topk_partitioned)."""
        pieces = [
            KeyPiece(
                p["file"],
                ids=str(self._ids_file(sh)) if p.get("ids") else None,
                shard_index=sh.index,
                piece=sh.piece,
            )
            for sh, p in parts
        ]
        summ = piece_summaries(self.ctx.map, pieces)
        docs = sum(s.documents for s in summ)
        nv = sum(s.eligible for s in summ)
        median = None
        if nv:  # ascending position m is the (nv - m)-th largest; np.median: mean of the middle two
            middle = [nv - nv // 2] if nv % 2 else [nv - nv // 2 + 1, nv - nv // 2]
            values = order_statistics(self.ctx.map, pieces, middle)
            median = values[0] if nv % 2 else float(np.mean(np.array(values)))
        out: dict[str, Any] = {"documents": docs, "empty_documents": docs - nv, "median": median}
        if self.params.buckets:
            if self.params.cutoffs:
                out["cutoffs"] = _floats(self.params.cutoffs, "cutoffs")
            else:
                pct = _floats(self.params.percentiles, "percentiles")
                out["cutoffs"] = percentiles(self.ctx.map, pieces, nv, pct) if nv else [math.nan] * len(pct)
        if self.params.keep_top is not None:
            neg = [dataclasses.replace(k, negate=True) for k in pieces]
            budget = count_budget(float(self.params.keep_top or 0.0), docs)
            cut = out["keep"] = partitioned_cutoff(self.ctx.map, neg, budget)
            if math.isfinite(cut.value):
                out["keep_threshold"] = -cut.value
            else:
                maxes = [s.max_key for s in summ if s.max_key is not None]
                out["keep_threshold"] = max(maxes) if cut.selected and maxes else None
        return out

    def _keep_top_plan(self, parts: list[tuple[ShardInfo, Any]], arrays: list[np.ndarray]) -> Cutoff:
        """The k = round(keep_top * documents) lowest-perplexity documents (documents without a
        token never), ties by id then input order (:mod:`dcurate.core.topk`)."""
        ppl = np.concatenate(arrays) if arrays else np.zeros(0)
        starts = np.cumsum([0] + [len(a) for a in arrays])

        def tie_keys(idx: np.ndarray) -> list[tuple]:
            out: list[tuple] = []
            piece_of = np.searchsorted(starts, idx, side="right") - 1
            for pi in np.unique(piece_of):
                sh, part = parts[pi]
                rows = idx[piece_of == pi] - int(starts[pi])
                if part.get("ids"):
                    with pa.memory_map(str(self._ids_file(sh))) as f:
                        col = pa.ipc.open_file(f).read_all().column("id").combine_chunks()
                    tid = col.take(pa.array(rows)).to_pylist()
                else:
                    tid = [None] * len(rows)
                out.extend(tie_key(i, sh.index, sh.piece, int(r)) for i, r in zip(tid, rows, strict=True))
            return out

        return compute_cutoff(-ppl, count_budget(float(self.params.keep_top or 0.0), len(ppl)), tie_keys)

    def _piece_scores(self, shard: ShardInfo) -> np.ndarray:
        key = shard.key
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, stagefiles.load_npy(self._score_file(shard)))
        return self._cache[1]

    def apply(self, batch: pa.RecordBatch, shard: ShardInfo, pos: int, plan: Any) -> Result:
        allp = self._piece_scores(shard)
        if pos + batch.num_rows > len(allp):
            raise RuntimeError(
                f"perplexity: piece {shard.key} scanned {len(allp)} rows, apply asks for {pos + batch.num_rows}"
            )
        ppl = allp[pos : pos + batch.num_rows]
        out = self._annotate(batch, ppl, plan.get("cutoffs"))
        if self.params.keep_top is None:
            return Result(out, None, {})
        ids = batch.column(self.ctx.id_field) if self.ctx.id_field in batch.schema.names else None

        def tie_keys(rows: np.ndarray) -> list[tuple]:
            tid = ids.take(pa.array(rows)).to_pylist() if ids is not None else [None] * len(rows)
            return [tie_key(i, shard.index, shard.piece, pos + int(r)) for r, i in zip(rows, tid, strict=True)]

        keep = kept_mask(-ppl, plan["keep"], tie_keys)
        return self._decide(out, ppl, keep, self.reason("below_cutoff"))

    def finish(self, plan: Any) -> dict[str, Any]:
        out = {k: v for k, v in plan.items() if k not in ("keep", "keep_threshold")}
        if "keep" in plan:
            cut: Cutoff = plan["keep"]
            out["kept_top"] = cut.selected
            out["threshold"] = plan.get("keep_threshold")
        return out


# -- training ----------------------------------------------------------------------------------------


def parse_prune(prune: str | list | None, order: int) -> list[int] | None:
    if prune is None or prune == "" or prune == []:
        return None
    items = prune if isinstance(prune, list) else str(prune).replace(",", " ").split()
    try:
        vals = [int(x) for x in items]
    except ValueError:
        raise RecipeError(f"--prune: expected integers per order (e.g. 0,1,1), got {prune!r}") from None
    if len(vals) > order or any(v < 0 for v in vals):
        raise RecipeError(f"--prune: at most {order} non-negative thresholds (one per order), got {prune!r}")
    return vals


def train_lm(
    inputs: list[str] | str,
    out: str,
    order: int = 5,
    prune: str | list | None = None,
    sentencepiece: str | None = None,
    text_field: str = "text",
    discount_fallback: bool = True,
    limit: int | None = None,
) -> dict[str, Any]:
    """Train a modified Kneser-Ney LM on the documents of ``inputs`` and write ``out`` (ARPA)
    plus ``out.json``; returns the sidecar's content. ``out`` may be an ``s3://`` URI (the ARPA
    file, then the sidecar, published atomically)."""
    from dcurate.io import read_documents

    if storage.is_uri(out):
        check_writes([inputs] if isinstance(inputs, str) else inputs, {"--out": out})
        with storage.local_target(out) as local:
            return train_lm(inputs, local, order, prune, sentencepiece, text_field, discount_fallback, limit)

    if order < 2:
        raise RecipeError("--order must be >= 2 (KenLM cannot load unigram-only models)")
    check_writes([inputs] if isinstance(inputs, str) else inputs, {"--out": out, "the sidecar": out + ".json"})
    thresholds = parse_prune(prune, order)
    tokenizer = ngram_lm.Tokenizer(sentencepiece)
    t0 = time.perf_counter()
    docs = 0

    def texts():
        nonlocal docs
        for b in read_documents(inputs, text_field=text_field, columns=[text_field]):
            if limit is not None and docs >= limit:
                return
            if limit is not None and docs + b.num_rows > limit:
                b = b.slice(0, limit - docs)
            docs += b.num_rows
            yield b.column(text_field)

    model = ngram_lm.train(
        texts(), order=order, prune=thresholds, tokenizer=tokenizer, discount_fallback=discount_fallback
    )
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "documents": docs,
        "inputs": [inputs] if isinstance(inputs, str) else list(inputs),
        "prune": thresholds,
        "seconds": round(time.perf_counter() - t0, 3),
        "trainer": "dcurate interpolated modified Kneser-Ney (lmplz-compatible)",
        **ngram_lm.Tokenizer(sentencepiece).describe(),
    }
    return ngram_lm.write_arpa(model, out, meta)


def register_cli(app) -> None:
    import typer

    @app.command("train-lm")
    def train_lm_command(
        input: list[str] = typer.Option(
            ..., "--input", "-i", help="Reference text: files, dirs or globs (repeatable)."
        ),
        out: str = typer.Option(
            ..., "--out", "-o", help="ARPA file to write (plus OUT.json with tokenizer and statistics)."
        ),
        order: int = typer.Option(5, "--order", help="N-gram order (CCNet: 5).", min=2),
        prune: str | None = typer.Option(
            None,
            "--prune",
            help="Per-order raw-count thresholds, as lmplz --prune (e.g. 0,1,1: drop singleton 2- and 3-grams).",
        ),
        sentencepiece: str | None = typer.Option(
            None, "--sentencepiece", help="Tokenise lines with this sentencepiece model."
        ),
        text_field: str = typer.Option("text", "--text-field", help="Column holding the text."),
        discount_fallback: bool = typer.Option(
            True,
            "--discount-fallback/--no-discount-fallback",
            help="Use discounts 0.5,1,1.5 when the data cannot support Kneser-Ney estimates (lmplz --discount_fallback).",
        ),
        limit: int | None = typer.Option(None, "--limit", help="Train on the first N documents only.", min=1),
    ) -> None:
        """Train a word n-gram LM (interpolated modified Kneser-Ney, as KenLM lmplz) and write ARPA.

        Example: dcurate train-lm --input data/demo/extra/target.jsonl --order 3 --out data/demo/models/wiki.arpa
        """
        info = train_lm(input, out, order, prune, sentencepiece, text_field, discount_fallback, limit)
        counts = " ".join(f"{n + 1}-grams={c}" for n, c in enumerate(info["counts"]))
        typer.echo(
            f"wrote {out}: order {info['order']}, {info['documents']} documents, {info['sentences']} lines, "
            f"{info['tokens']} tokens, {counts} ({info['seconds']}s)"
        )
        if info["fallback_discount_orders"]:
            typer.echo(
                f"note: fallback discounts used for orders {info['fallback_discount_orders']} (little data)"
            )
