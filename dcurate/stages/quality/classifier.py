"""fastText helpers shared by the ``quality`` stage, ``train-quality`` and the mix stage's domain
classifier: model loading with clear errors, the text preprocessing used both at training and at
scoring time, batched label probabilities, and the held-out metrics (ROC AUC, calibrated threshold).

Preprocessing modes (the same function prepares training lines and texts to score):

* ``dclm`` — DCLM's: the text is stripped and its lines joined with single spaces
  (``" ".join(text.strip().splitlines())`` in DCLM's ``fasttext_filter``); case is kept.
* ``lower`` — ``dclm`` then lower-cased.
* ``normalize`` — ``dclm`` then dcurate's shared normalisation (Unicode NFKC + lower-case,
  :mod:`dcurate.text.normalize`).

fastText needs one line per document (it reads ``\\n`` as the end of an example), hence the joining.
Whitespace runs inside a line do not matter to fastText: it splits on them.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from dcurate.core.errors import ModelError
from dcurate.io import storage
from dcurate.text.normalize import as_series

PREPROCESS_MODES = ("dclm", "lower", "normalize")
# Line breaks Python's str.splitlines() honours (DCLM joins lines with one space).
_LINE_BREAKS = r"\r\n|[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]"

_MODEL_CACHE: dict[tuple[str, int, int], Any] = {}


def _import_fasttext():
    try:
        import fasttext
    except ImportError:  # pragma: no cover - runtime dependency
        raise ModelError(
            "the fastText bindings are not installed; pip install fasttext-numpy2-wheel"
        ) from None
    # fastText prints a warning on every load_model(); keep stderr for dcurate's own messages.
    if hasattr(fasttext, "FastText"):
        fasttext.FastText.eprint = lambda *a, **k: None
    return fasttext


def sidecar_path(model_path: str | os.PathLike) -> Path:
    """The JSON sidecar ``train-quality`` writes next to a model (``model.bin.json``)."""
    return Path(str(model_path) + ".json")


def read_sidecar(model_path: str | os.PathLike) -> dict[str, Any] | None:
    """The model's sidecar as a dict, or None when there is none."""
    if storage.is_uri(str(model_path)):  # a model on object storage: its sidecar is beside it there
        uri = f"{model_path}.json"
        if not storage.is_file(uri):
            return None
        try:
            return json.loads(storage.read_bytes(uri))
        except ValueError as e:
            raise ModelError(f"{uri}: cannot read the model's JSON sidecar: {e}") from None
    p = sidecar_path(model_path)
    if not p.exists():
        return None
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise ModelError(f"{p}: cannot read the model's JSON sidecar: {e}") from None


def load_model(path: str | os.PathLike) -> Any:
    """Load a supervised fastText model (cached per process by path, size and mtime).

    Raises :class:`ModelError` naming the file when it is missing, unreadable, not a fastText
    model, or an unsupervised (word-vector) model. A URI is fetched once into the local cache
    (:func:`dcurate.io.storage.local_copy`); errors name the URI.
    """
    if storage.is_uri(str(path)):
        with storage.fetched(str(path)) as local:
            return load_model(local)
    p = Path(path)
    if not p.exists():
        raise ModelError(f"fastText model not found: {p}")
    if not p.is_file():
        raise ModelError(f"fastText model is not a file: {p}")
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key in _MODEL_CACHE:
        return _MODEL_CACHE[key]
    ft = _import_fasttext()
    try:
        model = ft.load_model(str(p))
    except Exception as e:  # fastText raises ValueError/RuntimeError/MemoryError on bad files
        raise ModelError(
            f"cannot load fastText model {p}: {e}. Is it a fastText .bin file (not .vec/.ftz text)?"
        ) from None
    try:
        supervised = model.f.getArgs().model == ft.FastText.model_name.supervised
    except Exception:  # pragma: no cover - very old bindings
        supervised = True
    if not supervised:
        raise ModelError(f"{p} is a fastText word-vector model, not a supervised classifier")
    _MODEL_CACHE.clear()  # keep at most one model per process resident (they can be GBs)
    _MODEL_CACHE[key] = model
    return model


def model_labels(model: Any) -> list[str]:
    return list(model.get_labels())


def check_label(model: Any, label: str, path: str | os.PathLike = "") -> None:
    """Raise :class:`ModelError` listing the model's labels when ``label`` is not one of them."""
    labels = model_labels(model)
    if label not in labels:
        shown = ", ".join(labels[:40]) + (f", ... ({len(labels)} in all)" if len(labels) > 40 else "")
        hint = ""
        if not label.startswith("__label__") and f"__label__{label}" in labels:
            hint = f" (did you mean __label__{label}?)"
        raise ModelError(f"label {label!r} is not in fastText model {path}{hint}; its labels: {shown}")


def preprocess(
    texts: pa.Array | pa.ChunkedArray | pl.Series | Sequence[str], mode: str = "dclm"
) -> pl.Series:
    """Vectorised preprocessing (see the module docstring); nulls become empty strings."""
    if mode not in PREPROCESS_MODES:
        raise ValueError(f"unknown preprocessing {mode!r}; choose one of {', '.join(PREPROCESS_MODES)}")
    s = as_series(texts if not isinstance(texts, tuple) else list(texts)).cast(pl.String).fill_null("")
    s = s.str.strip_chars().str.replace_all(_LINE_BREAKS, " ")
    if mode == "lower":
        s = s.str.to_lowercase()
    elif mode == "normalize":
        s = s.str.normalize("NFKC").str.to_lowercase()
    return s


def predict_many(
    model: Any, texts: pl.Series | Sequence[str], labels: Sequence[str], k: int = -1
) -> np.ndarray:
    """Probabilities of ``labels`` for each (already preprocessed) text: float32 ``[n, len(labels)]``.

    One batched fastText call for all texts. A label outside a document's top ``k`` scores 0;
    an empty text (nothing but whitespace) scores 0 for every label.
    """
    s = texts if isinstance(texts, pl.Series) else pl.Series(values=list(texts), dtype=pl.String)
    n = len(s)
    out = np.zeros((n, len(labels)), dtype=np.float32)
    if n == 0:
        return out
    nonempty = (s.str.strip_chars().str.len_bytes() > 0).to_numpy()
    idx = np.flatnonzero(nonempty)
    if len(idx) == 0:
        return out
    lines = (s.filter(pl.Series(nonempty)) + "\n").to_list() if len(idx) < n else (s + "\n").to_list()
    f = getattr(model, "f", None)
    if f is not None and hasattr(f, "multilinePredict"):
        # What model.predict(list) does, minus its per-text "\n" check (preprocess removed them).
        labs, probs = f.multilinePredict(lines, k, 0.0, "strict")
    else:  # pragma: no cover - other bindings
        labs, probs = model.predict([x[:-1] for x in lines], k=k)
    lens = np.fromiter(map(len, labs), dtype=np.int64, count=len(labs))
    flat_labels = np.array(list(chain.from_iterable(labs)), dtype=object)
    flat_probs = (
        np.concatenate([np.asarray(p, dtype=np.float32) for p in probs])
        if lens.sum()
        else np.zeros(0, np.float32)
    )
    doc = np.repeat(idx, lens)
    for j, lab in enumerate(labels):
        m = flat_labels == lab
        out[doc[m], j] = flat_probs[m]
    return out


def predict_proba(model: Any, texts: pl.Series | Sequence[str], label: str, k: int = -1) -> np.ndarray:
    """Probability of ``label`` per (already preprocessed) text, float32 ``[n]`` (see
    :func:`predict_many`)."""
    return predict_many(model, texts, [label], k)[:, 0]


_TRAIN_CHILD = (
    "import json, sys\n"
    "import fasttext\n"
    "train_file, out, args = json.loads(sys.argv[1])\n"
    "try:\n"
    "    model = fasttext.train_supervised(input=train_file, verbose=0, **args)\n"
    "except Exception as e:\n"
    "    sys.stderr.write('DCURATE-TRAIN-ERROR: %s\\n' % e)\n"
    "    sys.exit(3)\n"
    "model.save_model(out)\n"
)


def train_supervised_isolated(train_file: str, out: str, args: dict[str, Any]) -> None:
    """``fasttext.train_supervised(train_file, **args)`` in a fresh Python process; the model
    goes to ``out``.

    A fresh process per training run, because the fastText 0.9.2 bindings are not re-entrant:
    a second ``train_supervised`` call in one process can fail with a spurious "Encountered NaN"
    or give a different model (seen on small training sets), while the same call in a new process
    succeeds and gives the same bytes every time. It also keeps a C++ abort from taking the caller
    down. (A plain subprocess, not multiprocessing, so callers need no ``__main__`` guard.)
    """
    import subprocess

    payload = json.dumps([str(train_file), str(out), args])
    proc = subprocess.run([sys.executable, "-c", _TRAIN_CHILD, payload], capture_output=True, text=True)
    if proc.returncode != 0:
        err = proc.stderr.strip().splitlines()
        msg = next((x.split(":", 1)[1].strip() for x in err if x.startswith("DCURATE-TRAIN-ERROR:")), None)
        if msg is not None:
            raise ModelError(f"fastText training failed: {msg} (a lower --lr often helps)")
        tail = err[-1] if err else f"exit status {proc.returncode}"
        raise ModelError(f"fastText training crashed: {tail}")


# -- metrics ---------------------------------------------------------------------------------------


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC (Mann-Whitney U, ties count one half); NaN when one class is absent."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(positive, dtype=bool)
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ss = s[order]
    # average ranks of tied groups
    starts = np.flatnonzero(np.r_[True, ss[1:] != ss[:-1]])
    ends = np.r_[starts[1:], len(ss)]
    avg = (starts + ends + 1) / 2.0  # 1-based average rank of each group
    ranks = np.empty(len(s))
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def binary_metrics(scores: np.ndarray, positive: np.ndarray, threshold: float) -> dict[str, float]:
    """Precision, recall, F1 and accuracy of ``score >= threshold`` as the positive decision."""
    y = np.asarray(positive, dtype=bool)
    pred = np.asarray(scores) >= threshold
    tp = int((pred & y).sum())
    fp = int((pred & ~y).sum())
    fn = int((~pred & y).sum())
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    acc = float((pred == y).mean()) if len(y) else float("nan")
    return {"threshold": float(threshold), "precision": prec, "recall": rec, "f1": f1, "accuracy": acc}


def calibrate_threshold(scores: np.ndarray, positive: np.ndarray, objective: str = "f1") -> float:
    """The threshold ``t`` (decision ``score >= t``) maximising ``objective`` (``f1`` or
    ``accuracy``) on labelled scores; among equal optima the midpoint between the chosen score and
    the next lower one, so that the cut does not sit on a training example. Vectorised."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(positive, dtype=bool)
    if len(s) == 0 or y.all() or (~y).all():
        return 0.5
    order = np.argsort(-s, kind="mergesort")
    ss, yy = s[order], y[order]
    # candidate cut after each distinct score (predict positive for everything >= that score)
    last = np.flatnonzero(np.r_[ss[1:] != ss[:-1], True])
    tp = np.cumsum(yy)[last]
    fp = np.cumsum(~yy)[last]
    n1 = int(y.sum())
    n0 = len(y) - n1
    if objective == "f1":
        val = 2 * tp / (tp + fp + n1)
    elif objective == "accuracy":
        val = (tp + (n0 - fp)) / len(y)
    else:
        raise ValueError(f"unknown calibration objective {objective!r}; choose f1 or accuracy")
    best = int(np.argmax(val))
    hi = ss[last[best]]
    lo = ss[last[best] + 1] if last[best] + 1 < len(ss) else hi - 1e-6
    return float((hi + lo) / 2.0)


def evaluate(model_path: str, texts: Any, labels: list[str], pos: str, mode: str = "dclm",
             threshold: float | None = None) -> dict[str, Any]:
    """``train-quality --eval``: score a labelled held-out set (``labels`` as ``__label__x``) with
    the model: top-label accuracy, ROC AUC of P(``pos``), metrics at ``threshold``."""
    model = load_model(model_path)
    names = list(model.get_labels())
    probs = predict_many(model, preprocess(texts, mode), names)
    y = np.array(labels, dtype=object)
    is_pos = y == pos
    p_pos = probs[:, names.index(pos)] if pos in names else np.zeros(len(y), np.float32)
    top = np.array(names, dtype=object)[np.argmax(probs, axis=1)]
    out: dict[str, Any] = {
        "documents": int(len(y)),
        "positive": int(is_pos.sum()),
        "accuracy": float((top == y).mean()),
        "roc_auc": roc_auc(p_pos, is_pos) if 0 < is_pos.sum() < len(y) else None,
    }
    if threshold is not None:
        out["at_threshold"] = binary_metrics(p_pos, is_pos, threshold)
    return out


def format_eval(e: dict[str, Any], where: str) -> str:
    auc = f"{e['roc_auc']:.4f}" if e["roc_auc"] is not None else "n/a (one class only)"
    line = (f"eval {where}: {e['documents']:,} documents ({e['positive']:,} positive): top-label accuracy "
            f"{e['accuracy']:.4f}, ROC AUC {auc}")
    a = e.get("at_threshold")
    if a:
        line += f"; at the calibrated threshold: precision {a['precision']:.4f}, recall {a['recall']:.4f}, F1 {a['f1']:.4f}"
    return line
