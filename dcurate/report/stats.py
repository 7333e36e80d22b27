"""``dcurate stats``: summarise any shard set (streaming: one pass, bounded memory).

Documents, bytes, columns; document-length quantiles (characters and words, and tokens with a
Hugging Face ``tokenizers`` JSON file); value counts of one column (only the top values when it
has many); numeric quantiles; a per-group breakdown (``by``, e.g. per domain).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dcurate.core.errors import ModelError, RecipeError
from dcurate.io import BatchReader, Piece, expand_inputs

QUANTILES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)
_SAMPLE = 200_000  # numeric values kept per column for quantiles (the first values)
_GROUP_SAMPLE = 50_000  # document lengths kept per group
MAX_GROUPS = 10_000


def _load_tokenizer(path: str) -> Any:
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise ModelError("--tokenizer needs the tokenizers package: pip install tokenizers") from None
    from dcurate.io import storage

    with storage.fetched(path) as local:  # a URI: a cached local copy
        try:
            return Tokenizer.from_file(local)
        except Exception as e:  # noqa: BLE001 - the library raises plain Exceptions
            raise ModelError(f"--tokenizer {path}: not a tokenizers JSON file ({e})") from None


def _quant(vals: np.ndarray) -> dict[str, float]:
    if not len(vals):
        return {}
    q = {f"p{int(x * 100)}": float(np.quantile(vals, x)) for x in QUANTILES}
    q["mean"] = float(vals.mean())
    return q


def _unknown(what: str, name: str, columns: dict[str, str]) -> RecipeError:
    from dcurate.core.params import did_you_mean

    return RecipeError(f"{what}: unknown column '{name}'{did_you_mean(name, set(columns))}; "
                       f"columns: {', '.join(columns)}")


def describe(paths: list[str] | str, text_field: str = "text", column: str | None = None, by: str | None = None,
             top: int = 20, tokenizer: str | None = None) -> dict[str, Any]:
    shards = expand_inputs(paths)
    tok = _load_tokenizer(tokenizer) if tokenizer else None
    docs = 0
    text_bytes = 0
    tokens = 0
    columns: dict[str, str] = {}
    counts: Counter = Counter()
    numeric: dict[str, list[np.ndarray]] = {}
    lengths: dict[str, list[np.ndarray]] = {"chars": [], "words": []}
    if tok is not None:
        lengths["tokens"] = []
    kept_lengths = 0
    groups: dict[Any, dict[str, Any]] = {}
    per_shard = []
    count_col = column
    for sh in shards:
        reader = BatchReader(Piece(sh), text_field=text_field, id_field="id", require_text=False)
        n = 0
        for b in reader:
            n += b.num_rows
            for f in b.schema:
                columns.setdefault(f.name, str(f.type))
            doc_bytes = None
            if text_field in b.schema.names:
                col = b.column(text_field)
                if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
                    doc_bytes = pc.binary_length(col).to_numpy(zero_copy_only=False)
                    text_bytes += int(np.nansum(doc_bytes))
                    if kept_lengths < _SAMPLE or by:
                        chars = pc.utf8_length(col).to_numpy(zero_copy_only=False).astype(np.float64)
                        words = pc.list_value_length(pc.utf8_split_whitespace(col)).to_numpy(
                            zero_copy_only=False).astype(np.float64)
                        if kept_lengths < _SAMPLE:
                            lengths["chars"].append(chars[~np.isnan(chars)])
                            lengths["words"].append(words[~np.isnan(words)])
                            kept_lengths += b.num_rows
                    if tok is not None:
                        texts = [t or "" for t in col.to_pylist()]
                        ntok = np.array([len(e.ids) for e in tok.encode_batch(texts, add_special_tokens=False)],
                                        dtype=np.float64)
                        tokens += int(ntok.sum())
                        held = lengths["tokens"]
                        if sum(len(a) for a in held) < _SAMPLE:
                            held.append(ntok)
            if count_col is None and "domain" in b.schema.names:
                count_col = "domain"
            if count_col and count_col in b.schema.names:
                vc = pc.value_counts(b.column(count_col))
                for item in vc.to_pylist():
                    counts[item["values"]] += item["counts"]
            if by and by in b.schema.names and doc_bytes is not None:
                enc = pc.dictionary_encode(b.column(by))
                codes = pc.fill_null(enc.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
                values = enc.dictionary.to_pylist() + [None]  # code -1 (null) -> last
                order = np.argsort(codes, kind="stable")
                sorted_codes = codes[order]
                starts = np.flatnonzero(np.r_[True, np.diff(sorted_codes) != 0])
                for lo, hi in zip(starts, np.r_[starts[1:], len(order)], strict=True):
                    idx = order[lo:hi]
                    key = values[sorted_codes[lo]]
                    g = groups.get(key)
                    if g is None:
                        if len(groups) >= MAX_GROUPS:
                            raise RecipeError(f"--by {by}: more than {MAX_GROUPS:,} distinct values; "
                                              "group by a column with fewer values (e.g. domain)")
                        g = groups[key] = {"docs": 0, "text_bytes": 0, "words": []}
                    g["docs"] += len(idx)
                    g["text_bytes"] += int(np.nansum(doc_bytes[idx]))
                    if sum(len(a) for a in g["words"]) < _GROUP_SAMPLE:
                        w = words[idx]
                        g["words"].append(w[~np.isnan(w)])
            for f in b.schema:
                if pa.types.is_integer(f.type) or pa.types.is_floating(f.type):
                    arr = b.column(f.name).to_numpy(zero_copy_only=False).astype(np.float64)
                    held = numeric.setdefault(f.name, [])
                    if sum(len(a) for a in held) < _SAMPLE:
                        held.append(arr[~np.isnan(arr)])
        docs += n
        per_shard.append({"shard": sh.stem, "docs": n, "bytes_on_disk": sh.size})
    if column is not None and column not in columns:
        raise _unknown("--column", column, columns)
    if by is not None and by not in columns:
        raise _unknown("--by", by, columns)
    quant = {}
    for name, arrs in numeric.items():
        q = _quant(np.concatenate(arrs) if arrs else np.array([]))
        if q:
            quant[name] = q
    length_q = {k: _quant(np.concatenate(v)) for k, v in lengths.items() if v}
    length_q = {k: v for k, v in length_q.items() if v}
    by_group = []
    for key, g in sorted(groups.items(), key=lambda kv: (-kv[1]["docs"], str(kv[0]))):
        w = np.concatenate(g["words"]) if g["words"] else np.array([])
        by_group.append({"value": key, "docs": g["docs"], "text_bytes": g["text_bytes"],
                         "words_p50": float(np.median(w)) if len(w) else None,
                         "words_mean": float(w.mean()) if len(w) else None})
    distinct = len(counts)
    out: dict[str, Any] = {
        "shards": len(shards),
        "docs": docs,
        "text_bytes": text_bytes,
        "columns": columns,
        "count_column": count_col,
        "distinct": distinct,
        "counts": dict(counts.most_common(top if top and distinct > top else None)),
        "length_quantiles": length_q,
        "quantiles": quant,
        "per_shard": per_shard,
    }
    if by:
        out["by"] = by
        out["groups"] = by_group
    if tok is not None:
        out["tokens"] = tokens
        out["tokenizer"] = tokenizer
    return out


def format_description(d: dict[str, Any]) -> str:
    first = f"shards: {d['shards']}   documents: {d['docs']:,}   text: {d['text_bytes'] / 1e6:.2f} MB"
    if "tokens" in d:
        first += f"   tokens: {d['tokens']:,} ({d['tokenizer']})"
    lines = [first, "columns: " + ", ".join(f"{k} ({v})" for k, v in d["columns"].items())]
    for name, q in d.get("length_quantiles", {}).items():
        lines.append(f"document {name}: " + "  ".join(f"{k}={v:,.0f}" for k, v in q.items()))
    if d["counts"] and d.get("by") != d["count_column"]:  # --by shows the same counts
        distinct = d.get("distinct", len(d["counts"]))
        shown = len(d["counts"])
        title = f"{d['count_column']}:" if shown == distinct else \
            f"{d['count_column']}: top {shown} of {distinct:,} distinct values"
        lines.append(title)
        total = max(d["docs"], 1)
        for k, v in d["counts"].items():
            lines.append(f"  {str(k):<30}{v:>12,}  {100 * v / total:6.2f}%")
        if shown < distinct:
            rest = d["docs"] - sum(d["counts"].values())
            lines.append(f"  ({distinct - shown:,} more values: {rest:,} documents; --top N shows more)")
    if d.get("groups"):
        lines.append(f"by {d['by']}:")
        lines.append(f"  {'value':<24}{'docs':>12}{'share':>9}{'MB':>10}{'words p50':>11}{'words mean':>12}")
        total = max(d["docs"], 1)
        for g in d["groups"]:
            p50 = f"{g['words_p50']:,.0f}" if g["words_p50"] is not None else "-"
            mean = f"{g['words_mean']:,.1f}" if g["words_mean"] is not None else "-"
            lines.append(f"  {str(g['value']):<24}{g['docs']:>12,}{100 * g['docs'] / total:>8.2f}%"
                         f"{g['text_bytes'] / 1e6:>10.2f}{p50:>11}{mean:>12}")
    for name, q in d["quantiles"].items():
        lines.append(f"{name}: " + "  ".join(f"{k}={v:.4g}" for k, v in q.items()))
    return "\n".join(lines)
