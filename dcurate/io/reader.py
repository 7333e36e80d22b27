"""Streaming readers: Parquet and JSONL (plain, gzip, zstd, stdin) as bounded Arrow record batches.

Memory stays bounded whatever the shard size: Parquet is read a few thousand rows at a time and
JSONL a block of a few MB at a time (cut at a line boundary), parsed by Arrow's JSON reader. When
a block fails to parse, it is re-read line by line to name the exact line and field (or, with
``on_bad_record="skip"``, to drop the bad lines and count them). Every error names the file.
"""

from __future__ import annotations

import gzip
import os
import sys
import zlib
from collections.abc import Iterator

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as paj
import pyarrow.parquet as pq
import zstandard

from dcurate.core.errors import InputError
from dcurate.io.formats import STDIN, Piece

BLOCK_BYTES = 4 * 1024 * 1024  # JSONL block (decompressed bytes) parsed at once
PARQUET_BATCH_ROWS = 4096
_READ_CHUNK = 1024 * 1024


def _raw_chunks(piece: Piece) -> Iterator[bytes]:
    """Decompressed bytes of a JSONL piece, in chunks. Detects truncated .zst/.gz files."""
    shard = piece.shard
    path = shard.path
    if path == STDIN:
        src = sys.stdin.buffer
        while True:
            b = src.read(_READ_CHUNK)
            if not b:
                return
            yield b
    if shard.fmt == "jsonl":
        with open(path, "rb") as f:
            if piece.byte_range:
                start, end = piece.byte_range
                f.seek(start)
                left = end - start
                while left > 0:
                    b = f.read(min(_READ_CHUNK, left))
                    if not b:
                        return
                    left -= len(b)
                    yield b
                return
            while True:
                b = f.read(_READ_CHUNK)
                if not b:
                    return
                yield b
    elif shard.fmt == "jsonl.zst":
        dctx = zstandard.ZstdDecompressor()
        with open(path, "rb") as f:
            obj = dctx.decompressobj()
            started = False
            while True:
                b = f.read(_READ_CHUNK)
                if not b:
                    break
                while b:
                    started = True
                    out = obj.decompress(b)
                    if out:
                        yield out
                    if obj.eof:  # frame finished; the rest (if any) starts a new frame
                        b = obj.unused_data
                        obj = dctx.decompressobj()
                        started = bool(b)
                    else:
                        b = b""
            if started and not obj.eof:
                raise InputError(f"{path}: truncated or corrupt zstd file (the last frame is incomplete)")
    elif shard.fmt == "jsonl.gz":
        try:
            with gzip.open(path, "rb") as f:
                while True:
                    b = f.read(_READ_CHUNK)
                    if not b:
                        return
                    yield b
        except (EOFError, OSError, zlib.error) as e:
            raise InputError(f"{path}: truncated or corrupt gzip file ({e})") from None
    else:
        raise InputError(f"{path}: not a JSONL format: {shard.fmt}")


def _blocks(piece: Piece) -> Iterator[bytes]:
    """Blocks of whole lines (each ends with a newline, except possibly the very last).

    Each block is built with a single copy: the unfinished line carried over from the previous
    chunk plus a slice of the current one, or slices of one large chunk."""
    carry = b""
    try:
        for chunk in _raw_chunks(piece):
            view = memoryview(chunk)
            start = 0
            while True:
                if len(carry) + len(chunk) - start < BLOCK_BYTES:
                    break
                limit = start + max(BLOCK_BYTES - len(carry), 0)
                cut = chunk.rfind(b"\n", start, limit) + 1
                if cut <= start:  # no line end within the block: extend to the next line end
                    cut = chunk.find(b"\n", limit) + 1
                    if cut <= 0:
                        break
                yield b"".join((carry, view[start:cut])) if carry else bytes(view[start:cut])
                carry = b""
                start = cut
            if start < len(chunk):
                carry = b"".join((carry, view[start:])) if carry else bytes(view[start:])
    except zstandard.ZstdError as e:
        raise InputError(f"{piece.shard.path}: corrupt zstd data ({e})") from None
    if carry:
        yield carry


class BatchReader:
    """Iterate a piece as record batches with the text column validated and an id column ensured.

    ``bad_records`` counts records skipped with ``on_bad_record="skip"``.
    """

    def __init__(
        self,
        piece: Piece,
        text_field: str = "text",
        id_field: str = "id",
        on_bad_record: str = "error",
        require_text: bool = True,
    ):
        self.piece = piece
        self.text_field = text_field
        self.id_field = id_field
        self.on_bad_record = on_bad_record
        self.require_text = require_text
        self.bad_records = 0
        self.rows = 0
        self.schema: pa.Schema | None = None

    @property
    def path(self) -> str:
        p = self.piece.shard.path
        return "<stdin>" if p == STDIN else p

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        limit = self.piece.limit
        if limit is not None and limit <= 0:
            return
        src = self._parquet() if self.piece.shard.fmt == "parquet" else self._jsonl()
        for batch in src:
            if limit is not None and self.rows + batch.num_rows > limit:
                batch = batch.slice(0, limit - self.rows)
            if batch.num_rows == 0:
                continue
            batch = self._ensure_id(batch)
            self.rows += batch.num_rows
            yield batch
            if limit is not None and self.rows >= limit:
                return

    # -- parquet ----------------------------------------------------------------------------------
    def _parquet(self) -> Iterator[pa.RecordBatch]:
        try:
            pf = pq.ParquetFile(self.piece.shard.path)
        except Exception as e:  # noqa: BLE001
            raise InputError(f"{self.path}: not a readable Parquet file ({e})") from None
        self.schema = pf.schema_arrow
        self._check_schema(pf.schema_arrow)
        row = self.piece.row_offset
        try:
            it = pf.iter_batches(
                batch_size=PARQUET_BATCH_ROWS, row_groups=self.piece.row_groups, use_threads=False
            )
            for batch in it:
                batch = self._check_text(batch, row, None)
                row += batch.num_rows
                yield batch
        except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as e:
            raise InputError(f"{self.path}: corrupt or truncated Parquet data near row {row} ({e})") from None

    # -- jsonl ------------------------------------------------------------------------------------
    def _jsonl(self) -> Iterator[pa.RecordBatch]:
        line = self.piece.line_offset  # 0-based line number of the block's first line
        row = self.piece.row_offset
        explicit: pa.Schema | None = None
        for block in _blocks(self.piece):
            nlines = block.count(b"\n") + (0 if block.endswith(b"\n") else 1)
            table = self._parse_block(block, line, explicit)
            if table is not None and table.num_rows:
                if explicit is None:
                    # Later blocks are parsed against the first block's types (null-typed
                    # fields become strings) so that all batches of a shard share one schema.
                    explicit = pa.schema(
                        [f.with_type(pa.string()) if pa.types.is_null(f.type) else f for f in table.schema]
                    )
                    table = table.cast(explicit)
                    self.schema = explicit
                    self._check_schema(explicit)
                elif table.schema != explicit:
                    table = self._conform(table, explicit, line)
                brow = 0  # row of the batch within the block
                for batch in table.to_batches():
                    n = batch.num_rows
                    batch = self._check_text(batch, row, (block, line, brow))
                    row += batch.num_rows
                    brow += n
                    yield batch
            line += nlines

    def _conform(self, table: pa.Table, schema: pa.Schema, line: int) -> pa.Table:
        cols = []
        for f in schema:
            if f.name in table.column_names:
                col = table.column(f.name)
                try:
                    cols.append(col.cast(f.type) if col.type != f.type else col)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    raise InputError(
                        f"{self.path}: line {line + 1} onwards: field '{f.name}' has type {col.type}, "
                        f"earlier lines had {f.type}"
                    ) from None
            else:
                cols.append(pa.nulls(table.num_rows, f.type))
        extra = [n for n in table.column_names if n not in schema.names]
        if extra:
            raise InputError(
                f"{self.path}: line {line + 1} onwards: new field(s) {', '.join(extra)} not present in earlier lines"
            )
        return pa.Table.from_arrays(cols, schema=schema)

    def _parse_block(self, block: bytes, line: int, explicit: pa.Schema | None) -> pa.Table | None:
        try:
            # Arrow's JSON parser silently replaces invalid UTF-8; Arrow's cast validates it fast.
            pa.array([block], pa.binary()).cast(pa.string())
            return self._arrow_parse(block, explicit)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            first_error = e
        # Slow path: find the bad lines.
        good: list[bytes] = []
        for i, raw in enumerate(block.split(b"\n")):
            if not raw.strip():
                continue
            problem = None
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as e:
                problem = f"invalid UTF-8 at byte {e.start} of the line"
            if problem is None:
                try:
                    obj = orjson.loads(raw)
                    if not isinstance(obj, dict):
                        problem = f"expected a JSON object, got {type(obj).__name__}"
                except orjson.JSONDecodeError as e:
                    problem = f"malformed JSON ({e})"
            if problem is not None:
                if self.on_bad_record == "skip":
                    self.bad_records += 1
                    continue
                raise InputError(f"{self.path}: line {line + i + 1}: {problem}")
            good.append(raw)
        if not good:
            return None
        try:
            return self._arrow_parse(b"\n".join(good) + b"\n", explicit)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            last = line + block.count(b"\n") + 1
            raise InputError(
                f"{self.path}: lines {line + 1}-{last}: values do not fit the schema of earlier lines ({first_error})"
            ) from None

    @staticmethod
    def _arrow_parse(block: bytes, explicit: pa.Schema | None) -> pa.Table:
        ropts = paj.ReadOptions(use_threads=False, block_size=max(len(block) + 1, 1 << 16))
        popts = (
            paj.ParseOptions(explicit_schema=explicit, unexpected_field_behavior="infer")
            if explicit is not None
            else paj.ParseOptions()
        )
        return paj.read_json(pa.BufferReader(block), read_options=ropts, parse_options=popts)

    # -- validation -------------------------------------------------------------------------------
    def _check_schema(self, schema: pa.Schema) -> None:
        if not self.require_text:
            return
        if self.text_field not in schema.names:
            raise InputError(
                f"{self.path}: no text field '{self.text_field}'; available columns: "
                f"{', '.join(schema.names) or '(none)'} (use --text-field)"
            )
        t = schema.field(self.text_field).type
        if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t)):
            raise InputError(
                f"{self.path}: field '{self.text_field}' must hold strings, but has type {t}"
            )

    def _line_of_row(self, block: bytes, line: int, k: int) -> int:
        """1-based file line number of the k-th record of a block."""
        seen = -1
        for i, raw in enumerate(block.split(b"\n")):
            if raw.strip():
                seen += 1
                if seen == k:
                    return line + i + 1
        return line + 1

    def _check_text(self, batch: pa.RecordBatch, row: int, block_info) -> pa.RecordBatch:
        if not self.require_text:
            return batch
        col = batch.column(self.text_field)
        if pa.types.is_null(col.type):
            col = pa.nulls(len(col), pa.string())
            batch = batch.set_column(batch.schema.get_field_index(self.text_field), self.text_field, col)
        if col.null_count == 0:
            return batch
        nulls = np.asarray(col.is_null().to_numpy(zero_copy_only=False))
        if self.on_bad_record == "skip":
            self.bad_records += int(nulls.sum())
            return batch.filter(pa.array(~nulls))
        k = int(np.argmax(nulls))
        if block_info is not None:
            block, line, brow = block_info
            where = f"line {self._line_of_row(block, line, brow + k)}"
        else:
            where = f"row {row + k}"
        raise InputError(
            f"{self.path}: {where}: field '{self.text_field}' is null or missing "
            "(use --on-bad-record skip to skip such records)"
        )

    def _ensure_id(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        if self.id_field in batch.schema.names:
            return batch
        start = self.piece.row_offset + self.rows
        idx = pc.cast(pa.array(np.arange(start, start + batch.num_rows, dtype=np.int64)), pa.string())
        ids = pc.binary_join_element_wise(pa.scalar(self.piece.shard.stem + "/"), idx, "")
        return batch.append_column(pa.field(self.id_field, pa.string()), ids)


def iter_batches(piece: Piece, **kw) -> Iterator[pa.RecordBatch]:
    return iter(BatchReader(piece, **kw))


def read_documents(
    paths,
    text_field: str = "text",
    id_field: str = "id",
    columns: list[str] | None = None,
    input_format: str | None = None,
    require_text: bool = True,
) -> Iterator[pa.RecordBatch]:
    """Stream every document of a shard set (files, dirs, globs) in order, as record batches.

    For side inputs (targets, training sets, reference sets). ``columns`` selects columns (the
    id column is added when the data has none)."""
    from dcurate.io.formats import expand_inputs

    for shard in expand_inputs(paths, input_format):
        reader = BatchReader(Piece(shard), text_field, id_field, "error", require_text)
        for batch in reader:
            if columns is not None:
                missing = [c for c in columns if c not in batch.schema.names]
                if missing:
                    raise InputError(
                        f"{reader.path}: missing column(s) {', '.join(missing)}; available: "
                        f"{', '.join(batch.schema.names)}"
                    )
                batch = batch.select(columns)
            yield batch


def read_table(paths, **kw) -> pa.Table:
    """All documents of a (small) shard set as one table."""
    tables = [pa.Table.from_batches([b]) for b in read_documents(paths, **kw)]
    if not tables:
        return pa.table(
            {kw.get("id_field", "id"): pa.array([], pa.string()), kw.get("text_field", "text"): pa.array([], pa.string())}
        )
    return pa.concat_tables(tables, promote_options="permissive")


def spool_stdin(dest: str) -> str:
    """Copy standard input to ``dest`` (so that global stages can read it more than once)."""
    tmp = dest + ".tmp"
    with open(tmp, "wb") as f:
        src = sys.stdin.buffer
        while True:
            b = src.read(_READ_CHUNK)
            if not b:
                break
            f.write(b)
    os.replace(tmp, dest)
    return dest


__all__ = ["BatchReader", "iter_batches", "read_documents", "read_table", "spool_stdin"]
