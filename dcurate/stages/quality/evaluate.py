"""``train-quality --eval FILE``: score a held-out labelled set with a trained classifier and
report ROC AUC of P(positive), top-label accuracy and the metrics at the calibrated threshold."""

from __future__ import annotations

from typing import Any

import numpy as np

from dcurate.core.errors import InputError
from dcurate.stages.quality import classifier as ftu


def evaluate(model_path: str, paths: list[str], label_field: str = "label", positive_label: str = "hq",
             text_field: str = "text", id_field: str = "id", preprocess: str = "dclm",
             threshold: float | None = None) -> dict[str, Any]:
    from dcurate.stages.quality.stage import _label_name, _load_labelled

    _, texts, labels = _load_labelled(None, None, paths, label_field, positive_label, "lq", text_field, id_field)
    if not labels:
        raise InputError(f"--eval {', '.join(paths)}: no labelled documents")
    model = ftu.load_model(model_path)
    names = list(model.get_labels())
    pos = _label_name(positive_label)
    probs = ftu.predict_many(model, ftu.preprocess(texts, preprocess), names)
    y = np.array(labels, dtype=object)
    is_pos = y == pos
    p_pos = probs[:, names.index(pos)] if pos in names else np.zeros(len(y), np.float32)
    top = np.array(names, dtype=object)[np.argmax(probs, axis=1)]
    out: dict[str, Any] = {
        "documents": int(len(y)),
        "positive": int(is_pos.sum()),
        "accuracy": float((top == y).mean()),
        "roc_auc": ftu.roc_auc(p_pos, is_pos) if 0 < is_pos.sum() < len(y) else None,
    }
    if threshold is not None:
        out["at_threshold"] = ftu.binary_metrics(p_pos, is_pos, threshold)
    return out


def format_eval(e: dict[str, Any], where: str) -> str:
    auc = f"{e['roc_auc']:.4f}" if e["roc_auc"] is not None else "n/a (one class only)"
    line = (f"eval {where}: {e['documents']:,} documents ({e['positive']:,} positive): top-label accuracy "
            f"{e['accuracy']:.4f}, ROC AUC {auc}")
    a = e.get("at_threshold")
    if a:
        line += f"; at the calibrated threshold: precision {a['precision']:.4f}, recall {a['recall']:.4f}, F1 {a['f1']:.4f}"
    return line
