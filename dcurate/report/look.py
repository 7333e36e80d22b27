"""``dcurate head`` and ``dcurate sample``: look at documents of any shard set (an output, an
input, a ``--rejected`` folder), with their annotation columns, text wrapped and truncated.

``sample`` draws a uniform sample without replacement in one streaming pass (bottom-k of one
random key per document from ``numpy.random.default_rng(seed)``; keys are drawn in document
order, so the sample depends only on the data and the seed, not on batch sizes).
"""

from __future__ import annotations

import shutil
import textwrap
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from dcurate.core.errors import RecipeError
from dcurate.io import BatchReader, Piece, expand_inputs


def _batches(paths: list[str] | str, text_field: str, where: str | None) -> Iterator[tuple[str, int, pa.RecordBatch]]:
    """(shard stem, row of the batch's first document in its shard, batch) of matching rows;
    filtered batches carry their original row numbers in a ``__row`` column."""
    from dcurate.stages.filter import expr as _expr

    expr = _expr.parse(where) if where else None
    for sh in expand_inputs(paths):
        row = 0
        for b in BatchReader(Piece(sh), text_field=text_field, id_field="id", require_text=False):
            rows = pa.array(np.arange(row, row + b.num_rows, dtype=np.int64))
            row += b.num_rows
            mask = pa.array(_expr.keep_mask(expr, b), type=pa.bool_()) if expr is not None else None
            b = b.append_column("__row", rows)
            if mask is not None:
                b = b.filter(mask)
            if b.num_rows:
                yield sh.stem, row - b.num_rows, b


def _check_columns(batch_schema: list[str], columns: list[str] | None) -> None:
    from dcurate.core.params import did_you_mean

    for c in columns or []:
        if c not in batch_schema:
            names = ", ".join(n for n in batch_schema if n != "__row")
            raise RecipeError(f"--columns: unknown column '{c}'{did_you_mean(c, batch_schema)}; columns: {names}")


def _records(stem: str, b: pa.RecordBatch, idx: np.ndarray) -> list[dict[str, Any]]:
    out = []
    for rec in b.take(pa.array(idx, type=pa.int64())).to_pylist():
        rec["__shard"] = stem
        out.append(rec)
    return out


def head(paths: list[str] | str, n: int = 5, where: str | None = None, text_field: str = "text",
         columns: list[str] | None = None) -> list[dict[str, Any]]:
    """The first ``n`` documents (matching ``where``), in shard order."""
    out: list[dict[str, Any]] = []
    if n <= 0:
        return out
    for stem, _, b in _batches(paths, text_field, where):
        _check_columns(b.schema.names, columns)
        out.extend(_records(stem, b, np.arange(min(n - len(out), b.num_rows))))
        if len(out) >= n:
            break
    return out


def sample(paths: list[str] | str, n: int = 5, seed: int = 0, where: str | None = None, text_field: str = "text",
           columns: list[str] | None = None) -> list[dict[str, Any]]:
    """A uniform random sample of ``n`` documents (matching ``where``), deterministic by ``seed``,
    returned in shard order."""
    if n <= 0:
        return []
    rng = np.random.default_rng(seed)
    held: list[tuple[float, int, dict[str, Any]]] = []  # (key, order, record)
    order = 0
    for stem, _, b in _batches(paths, text_field, where):
        _check_columns(b.schema.names, columns)
        keys = rng.random(b.num_rows)
        limit = held[-1][0] if len(held) >= n else np.inf
        idx = np.flatnonzero(keys < limit)
        if len(idx) > n:  # only the n smallest of this batch can enter
            idx = np.sort(idx[np.argpartition(keys[idx], n - 1)[:n]])
        if len(idx):
            recs = _records(stem, b, idx)
            held.extend((float(keys[i]), order + int(i), r) for i, r in zip(idx, recs, strict=True))
            held.sort(key=lambda t: t[0])
            del held[n:]
        order += b.num_rows
    return [r for _, _, r in sorted(held, key=lambda t: t[1])]


def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    s = str(v)
    return s if len(s) <= 60 else s[:57] + "..."


def format_docs(docs: list[dict[str, Any]], text_field: str = "text", columns: list[str] | None = None,
                max_chars: int = 600, width: int | None = None) -> str:
    """Documents as readable blocks: a header (shard, row, id), the annotation columns, then the
    text wrapped to the terminal and cut after ``max_chars`` characters (0 = whole text)."""
    width = width or min(shutil.get_terminal_size((100, 24)).columns, 120)
    blocks = []
    for i, d in enumerate(docs, 1):
        head = f"--- {i}. {d.get('__shard')} row {d.get('__row', 0) + 1:,}"
        if "id" in d:
            head += f"  id={d['id']}"
        head = head + " " + "-" * max(3, width - len(head) - 1)
        names = columns if columns is not None else [k for k in d if k not in (text_field, "id", "__shard", "__row")]
        meta = "  ".join(f"{k}={_value(d.get(k))}" for k in names if k != text_field)
        text = d.get(text_field)
        text = "" if text is None else str(text)
        cut = ""
        if max_chars and len(text) > max_chars:
            cut = f" [... {len(text) - max_chars:,} more characters]"
            text = text[:max_chars]
        lines = []
        for para in text.splitlines() or [""]:
            lines.extend(textwrap.wrap(para, width=width - 4, replace_whitespace=False, drop_whitespace=True) or [""])
        body = "\n".join("    " + ln for ln in lines) + cut
        blocks.append("\n".join([head] + ([meta] if meta else []) + [body]))
    return "\n".join(blocks) if blocks else "(no documents)"
