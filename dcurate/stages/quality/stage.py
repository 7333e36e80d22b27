"""``quality``: fastText classifier scores as columns, optionally a threshold or a corpus-wide
top fraction; and ``train-quality``, which trains such a classifier.

Scoring (``dcurate quality IN OUT --model model.bin --label __label__hq``):

* The score of a document is the probability fastText reports for ``label`` (it adds 1e-5
  smoothing, so values lie in about [1e-5, 1 + 1e-5]); 0 when the label is not among the
  document's top ``top_k`` labels (``-1``: all labels). **Empty documents** (null, or nothing but
  whitespace) score 0 for every label: they carry no evidence for any class.
* Texts are preprocessed as the model was trained (:mod:`dcurate.stages.quality.classifier`): ``auto`` reads
  the ``model.bin.json`` sidecar that ``train-quality`` writes, and falls back to DCLM's (lines
  joined with spaces, case kept) for published models.
* Annotate only (default): a map stage that adds the score column (``quality_score``).
  ``threshold``: also drop documents whose score is below it (``auto``: the threshold calibrated on
  held-out data by ``train-quality``, read from the sidecar). ``keep_top F``: a global stage that
  keeps exactly ``round(F * N)`` documents of the whole corpus, the highest scores, ties broken by
  document id (then input order), as DCLM kept its top 10%.
* Several models/labels in one pass: ``model``, ``label`` and ``column`` are parallel lists (a
  single model or label is used for every entry). Filters use the first entry; chain two quality
  stages to filter on two scores (e.g. language ID, then quality).

Training (``dcurate train-quality``): see :func:`train_quality`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from dcurate.core import stagefiles
from dcurate.core.errors import InputError, ModelError, RecipeError
from dcurate.core.params import param
from dcurate.core.paths import check_writes
from dcurate.core.stage import Result, ShardInfo, Stage, register, with_column
from dcurate.core.topk import FORMAT as topk_format
from dcurate.core.topk import Cutoff, compute_cutoff, count_budget, kept_mask, tie_key
from dcurate.core.topk_partitioned import KeyPiece, partitioned_cutoff, use_partitioned
from dcurate.io import storage
from dcurate.stages.quality import classifier

DEFAULT_COLUMN = "quality_score"
DEFAULT_LABEL = "__label__hq"


@dataclass
class QualityParams:
    model: list[str] = param(
        [],
        "fastText supervised model file(s) (.bin), e.g. DCLM's published classifier or lid.176.bin. "
        "Several: comma-separated, one per label (or one model for all labels). Required.", path=True,
    )
    label: list[str] = param(
        [DEFAULT_LABEL],
        "Label(s) whose probability is the score, one per model/column (default __label__hq, "
        "the positive class of DCLM's classifier and of train-quality's default).",
    )
    column: list[str] = param(
        [],
        f"Output score column(s), one per label (default {DEFAULT_COLUMN}; required when scoring "
        "several labels).",
    )
    threshold: str | None = param(
        None,
        "Drop documents whose (first) score is below this number; 'auto' = the threshold "
        "calibrated by train-quality on held-out data (from model.bin.json). Default: none "
        "(annotate only). Language ID with lid.176.bin: FineWeb keeps English at >= 0.65, CCNet used 0.5.",
    )
    keep_top: float | None = param(
        None,
        "Keep the top fraction F of the whole corpus by (first) score: exactly round(F*N) documents, "
        "ties broken by document id (a global stage). DCLM kept the top 10%: 0.1. Default: none.",
        min=0.0,
        max=1.0,
    )
    preprocess: str = param(
        "auto",
        "Text preprocessing before fastText: dclm = lines joined with spaces (DCLM), lower = dclm + "
        "lower-case, normalize = dclm + NFKC + lower-case; auto = what the model's sidecar says, "
        "else dclm.",
        choices=["auto", *classifier.PREPROCESS_MODES],
    )
    top_k: int = param(
        -1,
        "Labels fastText returns per document; a label outside them scores 0 (default -1 = all, "
        "exact; a small k speeds up models with many labels such as lid.176).",
        min=-1,
    )

    def validate(self) -> None:
        if not self.model:
            raise ValueError("give the fastText model file: --model model.bin (recipe key 'model')")
        if not self.label:
            raise ValueError("give at least one label, e.g. --label __label__hq")
        n = max(len(self.model), len(self.label), len(self.column), 1)
        for name, vals in (("model", self.model), ("label", self.label)):
            if len(vals) not in (1, n):
                raise ValueError(f"'{name}' has {len(vals)} entries; give 1 or {n} (one per score column)")
        if n > 1 and len(self.column) != n:
            raise ValueError(
                f"scoring {n} model/label pairs needs {n} column names: --column a,b (got {len(self.column)})"
            )
        cols = self.columns()
        if len(set(cols)) != len(cols):
            raise ValueError(f"column names must be distinct; got {', '.join(cols)}")
        if self.top_k == 0:
            raise ValueError("top_k must be -1 (all labels) or >= 1")
        if self.threshold is not None and self.keep_top is not None:
            raise ValueError("give either threshold or keep_top, not both")
        if self.threshold is not None and self.threshold != "auto":
            try:
                float(self.threshold)
            except ValueError:
                raise ValueError(f"threshold must be a number or 'auto'; got {self.threshold!r}") from None
        if self.keep_top is not None and self.keep_top <= 0:
            raise ValueError("keep_top must be > 0 (a fraction of the corpus, e.g. 0.1)")

    def columns(self) -> list[str]:
        n = max(len(self.model), len(self.label), len(self.column), 1)
        return list(self.column) if self.column else [DEFAULT_COLUMN] * n

    def triples(self) -> list[tuple[str, str, str]]:
        """(model path, label, column) per score column."""
        cols = self.columns()
        n = len(cols)
        models = self.model * n if len(self.model) == 1 else list(self.model)
        labels = self.label * n if len(self.label) == 1 else list(self.label)
        return list(zip(models, labels, cols, strict=True))


@register
class Quality(Stage):
    """Score documents with fastText classifiers (DCLM-style quality, language ID, any supervised
    model); annotate, filter by threshold, or keep the corpus-wide top fraction."""

    name = "quality"
    Params = QualityParams
    summary = "fastText classifier scores as columns; --threshold or --keep-top to filter."
    example = "dcurate quality data/demo/corpus data/demo/scored --model data/demo/models/quality.bin --keep-top 0.5"

    def __init__(self, params: QualityParams, ctx):
        super().__init__(params, ctx)
        self._models: dict[str, Any] = {}
        self._modes: dict[str, str] = {}
        self._threshold: float | None = None
        self._score_cache: tuple[str, np.ndarray] | None = None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_models"] = {}
        state["_score_cache"] = None
        return state

    @property
    def kind(self) -> str:  # type: ignore[override]
        return "global" if self.params.keep_top is not None else "map"

    # -- lifecycle --------------------------------------------------------------------------------
    def _resolve(self, load: bool) -> None:
        """Resolve preprocessing per model and the 'auto' threshold; optionally load the models
        and check every label (errors name the model file and list its labels)."""
        p = self.params
        triples = p.triples()
        for path, label, _ in triples:
            if path not in self._modes:
                side = classifier.read_sidecar(path) if p.preprocess == "auto" else None
                mode = p.preprocess
                if mode == "auto":
                    mode = (side or {}).get("preprocess", "dclm")
                    if mode not in classifier.PREPROCESS_MODES:
                        raise ModelError(f"{classifier.sidecar_path(path)}: unknown preprocess {mode!r}")
                self._modes[path] = mode
            if load:
                if path not in self._models:
                    self._models[path] = classifier.load_model(path)
                classifier.check_label(self._models[path], label, path)
        if p.threshold == "auto":
            path, label, _ = triples[0]
            side = classifier.read_sidecar(path)
            if side is None or side.get("threshold") is None:
                raise ModelError(
                    f"--threshold auto needs the sidecar {classifier.sidecar_path(path)} written by train-quality "
                    "(with a calibrated threshold); give a number instead"
                )
            if side.get("positive_label") not in (None, label):
                raise ModelError(
                    f"{classifier.sidecar_path(path)}: the calibrated threshold is for {side['positive_label']}, "
                    f"not {label}; give a number instead of 'auto'"
                )
            self._threshold = float(side["threshold"])
        elif p.threshold is not None:
            self._threshold = float(p.threshold)

    def prepare(self) -> None:
        self._resolve(load=True)
        if self.params.threshold == "auto":
            self.ctx.log.info("quality: calibrated threshold %.6g from the model's sidecar", self._threshold)

    def setup(self) -> None:
        self._resolve(load=True)

    def describe(self) -> dict[str, Any]:
        d = dataclasses.asdict(self.params)
        d["scores"] = [{"model": m, "label": lab, "column": c} for m, lab, c in self.params.triples()]
        return d

    def fingerprint(self) -> Any:
        out = []
        for path in dict.fromkeys(m for m, _, _ in self.params.triples()):
            files = ([path, f"{path}.json"] if storage.is_uri(path)  # a URI: its size and LastModified
                     else [str(Path(path)), str(classifier.sidecar_path(path))])
            for f in files:
                st = storage.stamp(f)
                out.append([f, *(st or [None, None])])
        return {"models": out, "topk": topk_format} if self.params.keep_top is not None else out

    # -- scoring ---------------------------------------------------------------------------------
    def scores(self, batch: pa.RecordBatch) -> np.ndarray:
        """float32 ``[rows, columns]``: one column per (model, label, column) entry."""
        if not self._models:
            self._resolve(load=True)
        triples = self.params.triples()
        out = np.zeros((batch.num_rows, len(triples)), dtype=np.float32)
        if batch.num_rows == 0:
            return out
        texts = batch.column(self.ctx.text_field)
        prepared: dict[str, Any] = {}
        for path in dict.fromkeys(m for m, _, _ in triples):
            idx = [j for j, t in enumerate(triples) if t[0] == path]
            mode = self._modes[path]
            if mode not in prepared:
                prepared[mode] = classifier.preprocess(texts, mode)
            out[:, idx] = classifier.predict_many(
                self._models[path], prepared[mode], [triples[j][1] for j in idx], self.params.top_k
            )
        return out

    def columns_added(self) -> set[str] | None:
        return set(self.params.columns())

    def _annotate(self, batch: pa.RecordBatch, scores: np.ndarray) -> pa.RecordBatch:
        for j, (_, _, col) in enumerate(self.params.triples()):
            batch = with_column(batch, col, pa.array(scores[:, j], type=pa.float32()))
        return batch

    def process(self, batch: pa.RecordBatch, shard: ShardInfo, pos: int) -> Result:
        s = self.scores(batch)
        out = self._annotate(batch, s)
        if self._threshold is None:
            return Result(out)
        keep = s[:, 0] >= np.float32(self._threshold)
        return Result.keep_where(out, keep, self.reason("below_threshold"))

    # -- keep-top (global) -----------------------------------------------------------------------
    def _score_path(self, key: str) -> Path:
        return Path(self.ctx.workdir) / f"scores-{key}.npy"

    def _ids_path(self, key: str) -> Path:
        return Path(self.ctx.workdir) / f"ids-{key}.arrow"

    def scan(self, batches: Iterable[pa.RecordBatch], shard: ShardInfo, round: int, plan: Any) -> Any:
        parts, ids = [], []
        for b in batches:
            parts.append(self.scores(b))
            if self.ctx.id_field in b.schema.names:
                ids.append(b.column(self.ctx.id_field))
        ncol = len(self.params.triples())
        scores = np.concatenate(parts) if parts else np.zeros((0, ncol), np.float32)
        os.makedirs(self.ctx.workdir, exist_ok=True)
        sp = self._score_path(shard.key)
        tmp = sp.with_suffix(".tmp.npy")
        np.save(tmp, scores)
        os.replace(tmp, sp)
        has_ids = bool(ids) and len(ids) == len(parts)
        if has_ids:
            arr = (
                pa.chunked_array(ids)
                if len({a.type for a in ids}) == 1
                else pa.chunked_array([a.cast(pa.string()) for a in ids])
            )
            t = pa.table({"id": arr})
            ip = self._ids_path(shard.key)
            with pa.OSFile(str(ip) + ".tmp", "wb") as f, pa.ipc.new_file(f, t.schema) as w:
                w.write_table(t)
            os.replace(str(ip) + ".tmp", ip)
        return {"rows": int(scores.shape[0]), "ids": has_ids}

    def reduce(self, partials: list[tuple[ShardInfo, Any]], round: int, plan: Any) -> Any:
        n_docs = sum(int(part.get("rows", 0)) for _, part in partials)
        if use_partitioned(n_docs):  # the keys stay in the score files (dcurate.core.topk_partitioned)
            pieces = [
                KeyPiece(
                    str(self._score_path(sh.key)),
                    column=0,
                    ids=str(self._ids_path(sh.key)) if part.get("ids") else None,
                    shard_index=sh.index,
                    piece=sh.piece,
                )
                for sh, part in partials
            ]
            budget = count_budget(float(self.params.keep_top or 0.0), n_docs)
            return {"cutoff": partitioned_cutoff(self.ctx.map, pieces, budget), "n": n_docs}
        firsts = [stagefiles.load_npy(self._score_path(sh.key))[:, 0] for sh, _ in partials]
        n = int(sum(len(a) for a in firsts))
        allv = np.concatenate(firsts) if firsts else np.zeros(0, np.float32)
        starts = np.cumsum([0] + [len(a) for a in firsts])

        def tie_keys(idx: np.ndarray) -> list[tuple]:
            out: list[tuple] = []
            piece_of = np.searchsorted(starts, idx, side="right") - 1
            for pi in np.unique(piece_of):  # idx is ascending, so pieces come in order
                sh, part = partials[pi]
                rows = idx[piece_of == pi] - int(starts[pi])
                if part.get("ids"):
                    tid = self._read_ids(sh.key).take(pa.array(rows)).to_pylist()
                else:
                    tid = [None] * len(rows)
                out.extend(tie_key(i, sh.index, sh.piece, int(r)) for i, r in zip(tid, rows, strict=True))
            return out

        cut = compute_cutoff(allv, count_budget(float(self.params.keep_top or 0.0), n), tie_keys)
        return {"cutoff": cut, "n": n}

    def _read_ids(self, key: str) -> pa.Array:
        return stagefiles.read_arrow(self._ids_path(key)).column("id").combine_chunks()

    def apply(self, batch: pa.RecordBatch, shard: ShardInfo, pos: int, plan: Any) -> Result:
        if self._score_cache is None or self._score_cache[0] != shard.key:
            self._score_cache = (shard.key, stagefiles.load_npy(self._score_path(shard.key)))
        all_s = self._score_cache[1]
        n = batch.num_rows
        if pos + n <= len(all_s):
            s = all_s[pos : pos + n]
        else:  # pragma: no cover - the runner guarantees scan and apply see the same rows
            s = self.scores(batch)
        out = self._annotate(batch, s)
        cut: Cutoff = plan["cutoff"]
        ids = batch.column(self.ctx.id_field) if self.ctx.id_field in batch.schema.names else None

        def tie_keys(rows: np.ndarray) -> list[tuple]:
            tid = ids.take(pa.array(rows)).to_pylist() if ids is not None else [None] * len(rows)
            return [tie_key(i, shard.index, shard.piece, pos + int(r)) for r, i in zip(rows, tid, strict=True)]

        keep = kept_mask(s[:, 0], cut, tie_keys)
        return Result.keep_where(out, keep, self.reason("below_cutoff"))

    def finish(self, plan: Any) -> dict[str, Any]:
        if not plan:
            return {}
        cut: Cutoff = plan["cutoff"]
        return {
            "keep_top": self.params.keep_top,
            "documents": plan["n"],
            "kept": cut.selected,
            "cutoff_score": cut.value if math.isfinite(cut.value) else None,
        }


# -- training ---------------------------------------------------------------------------------------

TRAIN_DEFAULTS: dict[str, Any] = {
    # fastText's defaults are lr 0.1, epoch 5, dim 100, wordNgrams 1, bucket 2,000,000. Its text
    # classification tutorial improves them with epoch 25, wordNgrams 2, dim 50, bucket 200,000;
    # DCLM's classifier also uses word bigrams. Measured on ../shared/corpus/quality (train ->
    # test): epoch 5 + bigrams gives AUC 0.979 / accuracy 0.78; these defaults AUC 0.995 / 0.98.
    "lr": 0.1,
    "epoch": 25,
    "word_ngrams": 2,
    "dim": 50,
    "min_count": 1,
    "bucket": 200_000,
    "loss": "softmax",
    "minn": 0,
    "maxn": 0,
}


def _label_name(value: Any) -> str:
    s = "_".join(str(value).split())
    return s if s.startswith("__label__") else f"__label__{s}"


def _split_keys(ids: list[Any], seed: int, salt: str) -> np.ndarray:
    """A uniform number in [0, 1) per document from (seed, salt, id): seeded, order-independent."""
    from dcurate.text.keys import seeded_keys, uniform  # numba: only train-quality needs it

    return uniform(seeded_keys(ids, seed, salt))


def _load_labelled(
    positive: list[str] | None,
    negative: list[str] | None,
    input: list[str] | None,
    label_field: str,
    positive_label: str,
    negative_label: str,
    text_field: str,
    id_field: str,
) -> tuple[list[Any], pa.ChunkedArray, list[str]]:
    from dcurate.io import read_table

    if input:
        if positive or negative:
            raise RecipeError("give either --input (with --label-field) or --positive/--negative, not both")
        t = read_table(input, text_field=text_field, id_field=id_field)
        if label_field not in t.column_names:
            raise InputError(
                f"{', '.join(input)}: no label field {label_field!r}; columns: {', '.join(t.column_names)} "
                "(choose one with --label-field)"
            )
        lab = t.column(label_field)
        if lab.null_count:
            bad = t.filter(lab.is_null()).column(id_field).to_pylist()[:5]
            raise InputError(
                f"{', '.join(input)}: {lab.null_count} document(s) have no value in label field "
                f"{label_field!r} (ids {', '.join(map(str, bad))} ...)"
            )
        labels = [_label_name(v) for v in lab.to_pylist()]
        return t.column(id_field).to_pylist(), t.column(text_field), labels
    if not positive or not negative:
        raise RecipeError("give --positive P and --negative N (or --input D --label-field label)")
    tp = read_table(positive, text_field=text_field, id_field=id_field)
    tn = read_table(negative, text_field=text_field, id_field=id_field)
    ids = [f"pos\x00{i}" for i in tp.column(id_field).to_pylist()] + [
        f"neg\x00{i}" for i in tn.column(id_field).to_pylist()
    ]
    texts = pa.chunked_array(tp.column(text_field).chunks + tn.column(text_field).chunks, type=pa.string())
    labels = [_label_name(positive_label)] * tp.num_rows + [_label_name(negative_label)] * tn.num_rows
    return ids, texts, labels


def train_quality(
    out: str,
    *,
    positive: list[str] | None = None,
    negative: list[str] | None = None,
    input: list[str] | None = None,
    label_field: str = "label",
    positive_label: str = "hq",
    negative_label: str = "lq",
    text_field: str = "text",
    id_field: str = "id",
    holdout: float = 0.1,
    seed: int = 0,
    threads: int = 1,
    preprocess: str = "dclm",
    calibrate: str = "f1",
    lr: float = TRAIN_DEFAULTS["lr"],
    epoch: int = TRAIN_DEFAULTS["epoch"],
    word_ngrams: int = TRAIN_DEFAULTS["word_ngrams"],
    dim: int = TRAIN_DEFAULTS["dim"],
    min_count: int = TRAIN_DEFAULTS["min_count"],
    bucket: int = TRAIN_DEFAULTS["bucket"],
    loss: str = TRAIN_DEFAULTS["loss"],
    minn: int = TRAIN_DEFAULTS["minn"],
    maxn: int = TRAIN_DEFAULTS["maxn"],
) -> dict[str, Any]:
    """Train a supervised fastText classifier; write ``out`` and the sidecar ``out + '.json'``.

    A seeded, id-based ``holdout`` fraction is kept out of training (xxh64 of (seed, id)), scored,
    and gives precision/recall/accuracy of the top label, ROC AUC of P(positive), and the threshold
    on P(positive) maximising ``calibrate`` (``f1`` or ``accuracy``). Training lines are written to
    a temporary file (fastText trains from a file) in a seeded, input-order-independent order;
    one thread and a fixed seed make the model reproducible (``threads > 1`` is faster but not).
    Returns the sidecar's content. ``out`` may be an ``s3://`` URI (the model, then the sidecar,
    published atomically).
    """
    if storage.is_uri(out):
        args = dict(locals())
        check_writes([*(positive or []), *(negative or []), *(input or [])], {"--out": out})
        with storage.local_target(out) as args["out"]:
            return train_quality(**args)
    check_writes([*(positive or []), *(negative or []), *(input or [])], {"--out": out, "the sidecar": out + ".json"})
    if preprocess not in classifier.PREPROCESS_MODES:
        raise RecipeError(
            f"--preprocess must be one of {', '.join(classifier.PREPROCESS_MODES)}; got {preprocess!r}"
        )
    if calibrate not in ("f1", "accuracy"):
        raise RecipeError(f"--calibrate must be f1 or accuracy; got {calibrate!r}")
    if not 0.0 <= holdout < 1.0:
        raise RecipeError(f"--holdout must be in [0, 1); got {holdout}")
    if threads < 1:
        raise RecipeError(f"--threads must be >= 1; got {threads}")
    classifier._import_fasttext()
    t0 = time.perf_counter()
    ids, texts, labels = _load_labelled(
        positive, negative, input, label_field, positive_label, negative_label, text_field, id_field
    )
    pos_name = _label_name(positive_label)
    distinct = sorted(set(labels))
    if len(distinct) < 2:
        raise InputError(
            f"training data has {len(distinct)} label(s) ({', '.join(distinct)}); need at least 2"
        )
    if pos_name not in distinct:
        raise InputError(
            f"positive label {pos_name} is not in the training data; its labels: {', '.join(distinct)} "
            "(choose one with --positive-label)"
        )
    prepared = classifier.preprocess(texts, preprocess)
    nonempty = (prepared.str.strip_chars().str.len_bytes() > 0).to_numpy()
    y = np.array(labels, dtype=object)
    held = _split_keys(ids, seed, "holdout") < holdout
    train_rows = np.flatnonzero(~held & nonempty)
    test_rows = np.flatnonzero(held)
    if len(train_rows) == 0:
        raise InputError("no non-empty training documents left after the held-out split")
    # Seeded order independent of input order: SGD must not see all of one class first.
    order = train_rows[np.argsort(_split_keys([ids[i] for i in train_rows], seed, "order"), kind="stable")]
    lines = training_lines(y[order], prepared, order)
    targs = {
        "lr": lr, "epoch": epoch, "wordNgrams": word_ngrams, "dim": dim, "minCount": min_count,
        "bucket": bucket, "loss": loss, "minn": minn, "maxn": maxn, "thread": threads, "seed": seed,
    }  # fmt: skip
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    # fastText's Python wrapper sets bucket = 0 when wordNgrams <= 1 and maxn == 0; with the
    # fasttext 0.9.2 bindings that configuration trains non-reproducibly (models change with the
    # process's memory layout, sometimes "Encountered NaN"). Bigrams (the default) are stable.
    unstable = word_ngrams <= 1 and maxn == 0
    if unstable:
        print(
            "train-quality: --word-ngrams 1 without subwords is not reproducible with the fastText "
            "0.9.2 bindings (use --word-ngrams 2, the default, for a deterministic model)",
            file=sys.stderr,
        )
    if threads > 1:
        print(
            f"train-quality: --threads {threads}: faster, but fastText's parallel SGD makes the model "
            "non-deterministic (use --threads 1 to reproduce it exactly)",
            file=sys.stderr,
        )
    with tempfile.TemporaryDirectory(prefix="dcurate-train-quality-") as td:
        train_file = os.path.join(td, "train.txt")
        with open(train_file, "w", encoding="utf-8") as f:
            f.write(lines)
        tmp_model = str(out_path) + ".tmp"
        classifier.train_supervised_isolated(train_file, tmp_model, targs)
    os.replace(tmp_model, out_path)
    model = classifier.load_model(out_path)
    seconds = time.perf_counter() - t0

    metrics: dict[str, Any] = {"documents": int(len(test_rows))}
    threshold = None
    if len(test_rows):
        probs = classifier.predict_many(model, prepared.gather(test_rows), model.get_labels())
        yt = y[test_rows]
        is_pos = yt == pos_name
        pcol = model.get_labels().index(pos_name) if pos_name in model.get_labels() else None
        p_pos = probs[:, pcol] if pcol is not None else np.zeros(len(test_rows), np.float32)
        top = np.array(model.get_labels(), dtype=object)[np.argmax(probs, axis=1)]
        top[probs.max(axis=1) <= 0] = ""  # empty documents have no top label
        tp = int(((top == pos_name) & is_pos).sum())
        fp = int(((top == pos_name) & ~is_pos).sum())
        fn = int(((top != pos_name) & is_pos).sum())
        metrics.update(
            {
                "positive": int(is_pos.sum()),
                "top_label": {
                    "accuracy": float((top == yt).mean()),
                    "precision": tp / (tp + fp) if tp + fp else 0.0,
                    "recall": tp / (tp + fn) if tp + fn else 0.0,
                },
                "roc_auc": classifier.roc_auc(p_pos, is_pos),
            }
        )
        if 0 < is_pos.sum() < len(is_pos):
            threshold = classifier.calibrate_threshold(p_pos, is_pos, calibrate)
            metrics["at_threshold"] = classifier.binary_metrics(p_pos, is_pos, threshold)
            metrics["at_0.5"] = classifier.binary_metrics(p_pos, is_pos, 0.5)
    sidecar = {
        "format": "dcurate-fasttext-sidecar/1",
        "model": out_path.name,
        "labels": list(model.get_labels()),
        "positive_label": pos_name,
        "preprocess": preprocess,
        "threshold": threshold,
        "calibrated_for": calibrate,
        "training": {
            **{k: v for k, v in targs.items()},
            "deterministic": threads == 1 and not unstable,
            "holdout": holdout,
            "documents": int(len(ids)),
            "trained_on": int(len(train_rows)),
            "skipped_empty": int((~held & ~nonempty).sum()),
            "label_counts": {lab: int((y == lab).sum()) for lab in distinct},
            "inputs": {
                "input": input,
                "positive": positive,
                "negative": negative,
                "label_field": label_field if input else None,
            },
            "seconds": round(seconds, 2),
        },
        "heldout": metrics,
        "versions": {"dcurate": _dcurate_version(), "fasttext": _fasttext_version()},
    }
    side = classifier.sidecar_path(out_path)
    tmp = str(side) + ".tmp"
    Path(tmp).write_text(json.dumps(sidecar, indent=2, default=_json_default) + "\n")
    os.replace(tmp, side)
    return sidecar


def training_lines(labels: np.ndarray, prepared: Any, rows: np.ndarray) -> str:
    """fastText training lines '__label__x text' for ``rows`` (vectorised), newline-terminated."""
    import polars as pl

    df = pl.DataFrame({"l": pl.Series(labels.tolist(), dtype=pl.String), "t": prepared.gather(rows)})
    s = df.select(pl.concat_str([pl.col("l"), pl.col("t")], separator=" ")).to_series()
    return "\n".join(s.to_list()) + "\n"


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    return str(o)


def _fasttext_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("fasttext-numpy2-wheel")
    except Exception:
        return None


def _dcurate_version() -> str:
    from dcurate.core.version import __version__

    return __version__


def format_report(side: dict[str, Any], out: str) -> str:
    h = side["heldout"]
    lines = [f"wrote {out} and {classifier.sidecar_path(out)}"]
    tr = side["training"]
    lines.append(
        f"trained on {tr['trained_on']} documents ({tr['seconds']} s; epoch {tr['epoch']}, lr {tr['lr']}, "
        f"wordNgrams {tr['wordNgrams']}, dim {tr['dim']}; {'deterministic' if tr['deterministic'] else 'NOT deterministic (see above)'})"
    )
    if h.get("documents"):
        tl = h["top_label"]
        lines.append(
            f"held out {h['documents']} documents: top-label accuracy {tl['accuracy']:.4f}, precision "
            f"{tl['precision']:.4f}, recall {tl['recall']:.4f}; ROC AUC {h['roc_auc']:.4f}"
        )
        if side["threshold"] is not None:
            a = h["at_threshold"]
            lines.append(
                f"calibrated threshold on P({side['positive_label']}) (max {side['calibrated_for']}): "
                f"{side['threshold']:.6g} -> precision {a['precision']:.4f}, recall {a['recall']:.4f}, "
                f"F1 {a['f1']:.4f}, accuracy {a['accuracy']:.4f}  (use --threshold auto)"
            )
    else:
        lines.append("no held-out documents (--holdout 0): no metrics, no calibrated threshold")
    return "\n".join(lines)


def register_cli(app: Any) -> None:
    import typer

    d = TRAIN_DEFAULTS

    @app.command(
        "train-quality",
        epilog="Example: dcurate train-quality --input data/demo/extra/quality_train.jsonl "
        "--label-field label --out data/demo/models/quality.bin",
    )
    def train_quality_command(
        out: str = typer.Option(
            ..., "--out", help="Model file to write (.bin); the sidecar goes to OUT.json."
        ),
        input: list[str] | None = typer.Option(
            None, "--input", help="Labelled shard set (repeatable); the label column names the class."
        ),
        label_field: str = typer.Option(
            "label", "--label-field", help="Column naming each document's class (with --input)."
        ),
        positive: list[str] | None = typer.Option(
            None, "--positive", help="Shards of positive (high-quality) examples (repeatable)."
        ),
        negative: list[str] | None = typer.Option(
            None, "--negative", help="Shards of negative examples (repeatable)."
        ),
        positive_label: str = typer.Option(
            "hq", "--positive-label", help="Class whose probability is the score (metrics, threshold)."
        ),
        negative_label: str = typer.Option(
            "lq", "--negative-label", help="Class name of --negative examples."
        ),
        text_field: str = typer.Option("text", "--text-field", help="Column holding the text."),
        id_field: str = typer.Option(
            "id", "--id-field", help="Column holding document ids (seeds the split)."
        ),
        holdout: float = typer.Option(
            0.1, "--holdout", help="Fraction held out (by seeded hash of the id) for metrics and calibration."
        ),
        seed: int = typer.Option(0, "--seed", help="Seed of the split, the example order and fastText."),
        threads: int = typer.Option(
            1, "--threads", help="fastText threads; > 1 is faster but NOT deterministic."
        ),
        preprocess: str = typer.Option(
            "dclm", "--preprocess", help="dclm (lines joined), lower, or normalize (NFKC + lower)."
        ),
        calibrate: str = typer.Option(
            "f1", "--calibrate", help="Threshold objective on held-out data: f1 or accuracy."
        ),
        lr: float = typer.Option(d["lr"], "--lr", help="Learning rate (fastText default 0.1)."),
        epoch: int = typer.Option(
            d["epoch"], "--epoch", help="Epochs (fastText tutorial: 25; fastText default 5)."
        ),
        word_ngrams: int = typer.Option(
            d["word_ngrams"], "--word-ngrams", help="Word n-gram length (2: bigrams, as DCLM)."
        ),
        dim: int = typer.Option(
            d["dim"], "--dim", help="Embedding size (fastText tutorial: 50; default 100)."
        ),
        min_count: int = typer.Option(
            d["min_count"], "--min-count", help="Minimum word count (fastText default 1)."
        ),
        bucket: int = typer.Option(
            d["bucket"],
            "--bucket",
            help="Hash buckets for n-grams (fastText tutorial: 200000; default 2000000).",
        ),
        loss: str = typer.Option(
            d["loss"], "--loss", help="softmax, hs, ova or ns (fastText default softmax)."
        ),
        eval_: list[str] | None = typer.Option(
            None, "--eval", help="Labelled held-out shard set (--label-field) to score after training: AUC, accuracy."
        ),
    ) -> None:
        """Train a fastText quality classifier, hold out a split, report metrics and a calibrated threshold."""
        side = train_quality(
            out, positive=positive, negative=negative, input=input, label_field=label_field,
            positive_label=positive_label, negative_label=negative_label, text_field=text_field,
            id_field=id_field, holdout=holdout, seed=seed, threads=threads, preprocess=preprocess,
            calibrate=calibrate, lr=lr, epoch=epoch, word_ngrams=word_ngrams, dim=dim,
            min_count=min_count, bucket=bucket, loss=loss,
        )  # fmt: skip
        typer.echo(format_report(side, out))
        if eval_:
            _, texts, labels = _load_labelled(None, None, eval_, label_field, positive_label, negative_label,
                                              text_field, id_field)
            if not labels:
                raise InputError(f"--eval {', '.join(eval_)}: no labelled documents")
            e = classifier.evaluate(out, texts, labels, _label_name(positive_label), preprocess, side["threshold"])
            typer.echo(classifier.format_eval(e, ", ".join(eval_)))
