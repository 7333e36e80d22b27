"""Sharded streaming I/O: input expansion, pieces of parallel work, readers and atomic writers.

Formats (by extension, ``--input-format`` overrides): ``.parquet``, ``.jsonl``, ``.jsonl.gz``,
``.jsonl.zst``; ``-`` is JSON Lines on standard input.
"""

from dcurate.io.formats import (
    DEFAULT_PIECE_BYTES,
    FORMATS,
    STDIN,
    Piece,
    Shard,
    detect_format,
    expand_inputs,
    output_name,
    plan_pieces,
)
from dcurate.io.reader import BatchReader, iter_batches, read_documents, read_table, spool_stdin
from dcurate.io.writer import ShardWriter, jsonl_bytes, merge_parts, temp_name, write_stdout

__all__ = [
    "DEFAULT_PIECE_BYTES",
    "FORMATS",
    "STDIN",
    "BatchReader",
    "Piece",
    "Shard",
    "ShardWriter",
    "detect_format",
    "expand_inputs",
    "iter_batches",
    "jsonl_bytes",
    "merge_parts",
    "output_name",
    "plan_pieces",
    "read_documents",
    "read_table",
    "spool_stdin",
    "temp_name",
    "write_stdout",
]
