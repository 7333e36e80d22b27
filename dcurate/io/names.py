"""Data-file names: formats by extension (no I/O, so that every I/O module may import it)."""

from __future__ import annotations

import os

from dcurate.core.errors import InputError

# format name -> file extension
FORMATS = {
    "parquet": ".parquet",
    "jsonl": ".jsonl",
    "jsonl.gz": ".jsonl.gz",
    "jsonl.zst": ".jsonl.zst",
}
_SUFFIXES = [
    (".jsonl.zst", "jsonl.zst"),
    (".jsonl.zstd", "jsonl.zst"),
    (".json.zst", "jsonl.zst"),
    (".ndjson.zst", "jsonl.zst"),
    (".jsonl.gz", "jsonl.gz"),
    (".json.gz", "jsonl.gz"),
    (".ndjson.gz", "jsonl.gz"),
    (".jsonl", "jsonl"),
    (".ndjson", "jsonl"),
    (".json", "jsonl"),
    (".parquet", "parquet"),
    (".pq", "parquet"),
]
STDIN = "-"


def detect_format(path: str, override: str | None = None) -> tuple[str, str]:
    """Return (format, stem-suffix) for ``path``; ``override`` forces the format."""
    name = os.path.basename(path)
    for suf, fmt in _SUFFIXES:
        if name.lower().endswith(suf):
            return (override or fmt), name[: -len(suf)]
    if override:
        return override, os.path.splitext(name)[0]
    raise InputError(
        f"{path}: unknown shard format (expected .parquet, .jsonl, .jsonl.gz or .jsonl.zst; "
        "use --input-format to override)"
    )


def is_data_file(name: str) -> bool:
    """Whether a directory listing should pick this file up. Plain ``.json`` files are only read
    when named explicitly (so ``stats.json`` in an output folder is never taken for data)."""
    low = name.lower()
    return any(low.endswith(s) for s, _ in _SUFFIXES if s != ".json")
