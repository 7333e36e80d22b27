"""``dcurate stats``: summarise any shard set (streaming: one pass, bounded memory)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dcurate.io import BatchReader, Piece, expand_inputs

QUANTILES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)
_SAMPLE = 200_000  # numeric values kept per column for quantiles (reservoir of the first values)


def describe(paths: list[str] | str, text_field: str = "text", column: str | None = None) -> dict[str, Any]:
    shards = expand_inputs(paths)
    docs = 0
    text_bytes = 0
    columns: dict[str, str] = {}
    counts: Counter = Counter()
    numeric: dict[str, list[np.ndarray]] = {}
    per_shard = []
    count_col = column
    for sh in shards:
        reader = BatchReader(Piece(sh), text_field=text_field, id_field="id", require_text=False)
        n = 0
        for b in reader:
            n += b.num_rows
            for f in b.schema:
                columns.setdefault(f.name, str(f.type))
            if text_field in b.schema.names:
                col = b.column(text_field)
                if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
                    text_bytes += int(pc.sum(pc.binary_length(col)).as_py() or 0)
            if count_col is None and "domain" in b.schema.names:
                count_col = "domain"
            if count_col and count_col in b.schema.names:
                vc = pc.value_counts(b.column(count_col))
                for item in vc.to_pylist():
                    counts[item["values"]] += item["counts"]
            for f in b.schema:
                if pa.types.is_integer(f.type) or pa.types.is_floating(f.type):
                    arr = b.column(f.name).to_numpy(zero_copy_only=False).astype(np.float64)
                    held = numeric.setdefault(f.name, [])
                    if sum(len(a) for a in held) < _SAMPLE:
                        held.append(arr[~np.isnan(arr)])
        docs += n
        per_shard.append({"shard": sh.stem, "docs": n, "bytes_on_disk": sh.size})
    quant = {}
    for name, arrs in numeric.items():
        vals = np.concatenate(arrs) if arrs else np.array([])
        if len(vals):
            quant[name] = {f"p{int(q * 100)}": float(np.quantile(vals, q)) for q in QUANTILES}
            quant[name]["mean"] = float(vals.mean())
    return {
        "shards": len(shards),
        "docs": docs,
        "text_bytes": text_bytes,
        "columns": columns,
        "count_column": count_col,
        "counts": dict(counts.most_common()),
        "quantiles": quant,
        "per_shard": per_shard,
    }


def format_description(d: dict[str, Any]) -> str:
    lines = [
        f"shards: {d['shards']}   documents: {d['docs']:,}   text: {d['text_bytes'] / 1e6:.2f} MB",
        "columns: " + ", ".join(f"{k} ({v})" for k, v in d["columns"].items()),
    ]
    if d["counts"]:
        lines.append(f"{d['count_column']}:")
        total = max(d["docs"], 1)
        for k, v in d["counts"].items():
            lines.append(f"  {str(k):<30}{v:>12,}  {100 * v / total:6.2f}%")
    for name, q in d["quantiles"].items():
        lines.append(f"{name}: " + "  ".join(f"{k}={v:.4g}" for k, v in q.items()))
    return "\n".join(lines)
