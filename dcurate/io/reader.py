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
import xxhash
import zstandard

from dcurate.core.errors import InputError
from dcurate.io import storage
from dcurate.io.formats import STDIN, Piece

BLOCK_BYTES = 4 * 1024 * 1024  # JSONL block (decompressed bytes) parsed at once
PARQUET_BATCH_ROWS = 4096
_READ_CHUNK = 1024 * 1024


#: Deepest nesting of objects/arrays accepted in a record (the record itself is level 1). Deeper
#: records are a located error (or skipped with --on-bad-record skip): Arrow's JSON reader crashes
#: far deeper, and Parquet refuses schemas nested past about this depth.
MAX_NESTING = 32

def _escaped(a: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Which of the quotes at positions ``q`` are escaped (preceded by an odd run of backslashes)."""
    esc = np.zeros(q.size, dtype=bool)
    run = (q >= 1) & (a[np.maximum(q - 1, 0)] == 92)
    k = 1
    while run.any():
        if k > 64:  # long backslash runs: their lengths in one linear pass instead
            idx = np.arange(a.size, dtype=np.int64)
            last_other = np.maximum.accumulate(np.where(a == 92, -1, idx))
            prev = np.maximum(q - 1, 0)
            return (q >= 1) & ((prev - last_other[prev]) % 2 == 1)
        esc ^= run
        k += 1
        run &= (q >= k) & (a[np.maximum(q - k, 0)] == 92)
    return esc


def max_depth(data: bytes) -> int:
    """Deepest nesting of JSON objects/arrays in ``data`` (brackets inside strings ignored).

    Vectorised over the positions of quotes and brackets only: a bracket is inside a string when
    an odd number of unescaped quotes precede it (valid JSON lines; an invalid line fails the
    parse anyway and is then checked on its own)."""
    a = np.frombuffer(data, dtype=np.uint8)
    q = np.flatnonzero(a == 34)
    if q.size:
        q = q[~_escaped(a, q)]
    folded = a | np.uint8(0x20)  # '[' -> '{', ']' -> '}'
    opening = np.flatnonzero(folded == 0x7B)
    if opening.size == 0:
        return 0
    closing = np.flatnonzero(folded == 0x7D)
    opening = opening[(np.searchsorted(q, opening) & 1) == 0]
    closing = closing[(np.searchsorted(q, closing) & 1) == 0]
    pos = np.concatenate([opening, closing])
    step = np.concatenate([np.ones(opening.size, np.int32), np.full(closing.size, -1, np.int32)])
    return int(np.cumsum(step[np.argsort(pos, kind="stable")]).max(initial=0))


def block_stats(block: bytes) -> tuple[int, bool]:
    """Lines of a block, and whether every line is certainly nested at most :data:`MAX_NESTING`
    deep (the cheap check; :func:`max_depth` settles the lines it cannot clear).

    A line holding at most ``MAX_NESTING`` opening brackets (inside strings or not) cannot nest
    deeper, so only lines with more brackets than that -- rare outside code or JSON-in-text --
    need the exact count, which ignores brackets inside strings."""
    a = np.frombuffer(block, dtype=np.uint8)
    ends = np.flatnonzero(a == 10)
    nlines = ends.size + (0 if block.endswith(b"\n") else 1)
    opening = np.flatnonzero((a == 0x7B) | (a == 0x5B))  # '{' or '['
    if opening.size <= MAX_NESTING:
        return nlines, True
    line = np.searchsorted(ends, opening)  # the line of each bracket (0-based in the block)
    per_line = np.bincount(line)
    heavy = np.flatnonzero(per_line > MAX_NESTING).tolist()
    if not heavy:
        return nlines, True
    # the heavy lines at once: each valid line is balanced, so their depths do not add up (an
    # invalid line fails Arrow's parse and is then checked on its own)
    starts = np.concatenate(([0], ends + 1)).tolist()
    bounds = ends.tolist() + [len(block)]
    view = memoryview(block)
    heavy_lines = b"\n".join(view[starts[k] : bounds[k]] for k in heavy)
    return nlines, max_depth(heavy_lines) <= MAX_NESTING


#: Verdicts of blocks already checked in this process, keyed by (file, block number, xxh3-128 of
#: the bytes): a global stage reads each piece two or three times, and the same bytes at the same
#: place get the same verdict. Cleared when full.
_CHECKED: dict[tuple, tuple[int, bool, bool]] = {}
_CHECKED_MAX = 1 << 16


def checked_block(block: bytes, where: tuple | None) -> tuple[int, bool, bool]:
    """(lines, valid UTF-8, shallow) of a block (:func:`block_stats`, :func:`valid_utf8`),
    remembered for ``where`` (None: not remembered)."""
    key = None
    if where is not None:
        key = (*where, xxhash.xxh3_128_digest(block))
        hit = _CHECKED.get(key)
        if hit is not None:
            return hit
    nlines, shallow = block_stats(block)
    verdict = (nlines, valid_utf8(block), shallow)
    if key is not None:
        if len(_CHECKED) >= _CHECKED_MAX:
            _CHECKED.clear()
        _CHECKED[key] = verdict
    return verdict


def valid_utf8(block: bytes) -> bool:
    """Whether ``block`` is valid UTF-8 (Arrow's vectorised validation, no copy)."""
    if block.isascii():
        return True
    offsets = pa.py_buffer(np.array([0, len(block)], dtype=np.int64))
    try:
        pa.LargeStringArray.from_buffers(1, offsets, pa.py_buffer(block)).validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


def _type_depth(t: pa.DataType) -> int:
    """Levels of nesting of an Arrow type (0 for a scalar), without recursion."""
    depth, level = 0, [(t, 0)]
    while level:
        cur, d = level.pop()
        depth = max(depth, d)
        level.extend((cur.field(i).type, d + 1) for i in range(cur.num_fields))
    return depth


def _json_kind(v: object) -> str:
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, (int, float)):
        return "a number"
    if isinstance(v, dict):
        return "an object"
    if isinstance(v, list):
        return "a list"
    if isinstance(v, str):
        return "a string"
    return "null"


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
        with storage.open_read(path) as f:
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
        with storage.open_read(path) as f:
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
            with storage.open_read(path) as raw, gzip.GzipFile(fileobj=raw, mode="rb") as f:
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

    Each block is built with at most one copy: the pieces of chunks that make it up are kept as
    views and joined once (a chunk that is a whole block is passed on as it is)."""
    parts: list[bytes | memoryview] = []  # the unfinished block: views of the chunks read so far
    pending = 0  # their total length
    try:
        for chunk in _raw_chunks(piece):
            view = memoryview(chunk)
            start = 0
            while pending + len(chunk) - start >= BLOCK_BYTES:
                limit = start + max(BLOCK_BYTES - pending, 0)
                cut = chunk.rfind(b"\n", start, limit) + 1
                if cut <= start:  # no line end within the block: extend to the next line end
                    cut = chunk.find(b"\n", limit) + 1
                    if cut <= 0:
                        break
                parts.append(chunk if start == 0 and cut == len(chunk) else view[start:cut])
                yield _joined(parts)
                parts, pending = [], 0
                start = cut
            if start < len(chunk):
                parts.append(chunk if start == 0 else view[start:])
                pending += len(chunk) - start
    except zstandard.ZstdError as e:
        raise InputError(f"{piece.shard.path}: corrupt zstd data ({e})") from None
    if parts:
        yield _joined(parts)


def _joined(parts: list[bytes | memoryview]) -> bytes:
    """The parts as one ``bytes`` (one copy; none for a single whole chunk)."""
    if len(parts) == 1 and isinstance(parts[0], bytes):
        return parts[0]
    return b"".join(parts)


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
            pf = pq.ParquetFile(storage.parquet_source(self.piece.shard.path))
            schema = pf.schema_arrow
        except Exception as e:  # noqa: BLE001
            raise InputError(f"{self.path}: not a readable Parquet file ({e})") from None
        self.schema = schema
        for f in schema:
            depth = _type_depth(f.type)
            if depth > MAX_NESTING - 1:
                raise InputError(
                    f"{self.path}: field '{f.name}' is nested {depth + 1} levels deep (the limit is {MAX_NESTING})"
                )
        self._check_schema(schema)
        row = self.piece.row_offset  # 0-based index of the batch's first row in the file
        try:
            it = pf.iter_batches(
                batch_size=PARQUET_BATCH_ROWS, row_groups=self.piece.row_groups, use_threads=False
            )
            for batch in it:
                n = batch.num_rows
                batch = self._check_utf8(batch, row)
                batch = self._check_text(batch, row, None)
                row += n
                yield batch
        except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as e:
            raise InputError(f"{self.path}: corrupt or truncated Parquet data near row {row + 1} ({e})") from None

    def _check_utf8(self, batch: pa.RecordBatch, row: int) -> pa.RecordBatch:
        """Parquet does not check that string columns hold valid UTF-8; Arrow's full validation
        does (fast, vectorised). Bad rows are located one by one, only when a batch fails."""
        try:
            batch.validate(full=True)
            return batch
        except pa.ArrowInvalid:
            pass
        bad = np.zeros(batch.num_rows, dtype=bool)
        first: tuple[int, str] | None = None
        for name, col in zip(batch.schema.names, batch.columns, strict=True):
            try:
                col.validate(full=True)
                continue
            except pa.ArrowInvalid:
                pass
            for k in range(batch.num_rows):
                if bad[k]:
                    continue
                try:
                    col.slice(k, 1).validate(full=True)
                except pa.ArrowInvalid:
                    bad[k] = True
                    if first is None or k < first[0]:
                        first = (k, name)
        if first is None:  # invalid, but not row by row: report the batch
            raise InputError(f"{self.path}: rows {row + 1}-{row + batch.num_rows}: invalid data (not valid UTF-8?)")
        if self.on_bad_record == "skip":
            self.bad_records += int(bad.sum())
            return batch.filter(pa.array(~bad))
        k, name = first
        raise InputError(
            f"{self.path}: row {row + k + 1}: field '{name}' is not valid UTF-8 "
            "(use --on-bad-record skip to skip such records)"
        )

    # -- jsonl ------------------------------------------------------------------------------------
    def _jsonl(self) -> Iterator[pa.RecordBatch]:
        line = self.piece.line_offset  # 0-based line number of the block's first line
        row = self.piece.row_offset
        explicit: pa.Schema | None = None
        shard = self.piece.shard
        place = None if shard.path == STDIN else (shard.path, shard.fmt, self.piece.byte_range)
        for k, block in enumerate(_blocks(self.piece)):
            nlines, utf8_ok, shallow = checked_block(block, None if place is None else (*place, k))
            table, lines = self._parse_block(block, line, explicit, shallow, utf8_ok)
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
                brow = 0  # row of the batch within the block
                for batch in table.to_batches():
                    n = batch.num_rows
                    batch = self._check_text(batch, row, (block, line, brow, lines))
                    row += batch.num_rows
                    brow += n
                    yield batch
            line += nlines

    def _conform(self, table: pa.Table, schema: pa.Schema) -> pa.Table | None:
        """``table`` cast to ``schema`` (missing fields null), or None when it does not fit."""
        if table.schema == schema:
            return table
        if any(n not in schema.names for n in table.column_names):
            return None
        cols = []
        for f in schema:
            if f.name in table.column_names:
                col = table.column(f.name)
                try:
                    cols.append(col.cast(f.type) if col.type != f.type else col)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
                    return None
            else:
                cols.append(pa.nulls(table.num_rows, f.type))
        return pa.Table.from_arrays(cols, schema=schema)

    def _fits(self, table: pa.Table, explicit: pa.Schema | None) -> pa.Table | None:
        """The parsed block, conformed to the earlier blocks' schema, when its text column holds
        strings; None when the block needs the line-by-line path."""
        if self.require_text and self.text_field in table.column_names:
            t = table.schema.field(self.text_field).type
            if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t)):
                return None
        return self._conform(table, explicit) if explicit is not None else table

    def _parse_block(
        self,
        block: bytes,
        line: int,
        explicit: pa.Schema | None,
        shallow: bool | None = None,
        utf8_ok: bool | None = None,
    ) -> tuple[pa.Table | None, list[int] | None]:
        """Parse a block of lines. Returns the table and, when lines were dropped or checked one by
        one, the 1-based file line of each row (None: rows are the block's non-blank lines).
        ``shallow`` and ``utf8_ok``: the block's verdicts (:func:`checked_block`), when the caller
        has them."""
        if shallow is None:
            shallow = block_stats(block)[1]
        if utf8_ok is None:
            utf8_ok = valid_utf8(block)
        first_error = "values do not fit"
        try:
            # Arrow's JSON parser silently replaces invalid UTF-8, so it is validated first.
            if not utf8_ok:
                first_error = "invalid UTF-8"
            elif shallow:
                table = self._fits(self._arrow_parse(block, explicit), explicit)
                if table is not None:
                    return table, None
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            first_error = str(e)
        # Slow path: check line by line, to name the bad lines (or skip them).
        good: list[bytes] = []
        numbers: list[int] = []
        for i, raw in enumerate(block.split(b"\n")):
            if not raw.strip():
                continue
            problem = self._line_problem(raw)
            if problem is not None:
                self._bad(line + i + 1, problem)
                continue
            good.append(raw)
            numbers.append(line + i + 1)
        if not good:
            return None, None
        try:
            table = self._fits(self._arrow_parse(b"\n".join(good) + b"\n", explicit), explicit)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            table = None
        if table is not None:
            return table, numbers
        # Types change within the block: find the lines that do not fit the earlier lines' types.
        schema = explicit
        keep: list[bytes] = []
        kept: list[int] = []
        for raw, num in zip(good, numbers, strict=True):
            try:
                t = self._arrow_parse(raw + b"\n", explicit)
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                t = None
            ok = False
            if t is not None and explicit is not None:
                ok = self._conform(t, explicit) is not None
            elif t is not None:
                try:
                    schema = t.schema if schema is None else pa.unify_schemas([schema, t.schema], promote_options="permissive")
                    ok = True
                except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
                    ok = False
            if ok:
                keep.append(raw)
                kept.append(num)
                continue
            what = ""
            if t is None and schema is not None:  # its own types, for the message
                try:
                    t = self._arrow_parse(raw + b"\n", None)
                except (pa.ArrowInvalid, pa.ArrowTypeError):
                    t = None
            if t is not None and schema is not None:
                for f in t.schema:
                    if f.name in schema.names and schema.field(f.name).type != f.type:
                        what = f"field '{f.name}' has type {f.type}, earlier lines had {schema.field(f.name).type}"
                        break
                    if f.name not in schema.names:
                        what = f"new field '{f.name}' not present in earlier lines"
                        break
            self._bad(num, what or f"values do not fit the types of earlier lines ({first_error})")
        if not keep:
            return None, None
        try:
            table = self._fits(self._arrow_parse(b"\n".join(keep) + b"\n", explicit), explicit)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            table = None
        if table is None:
            raise InputError(
                f"{self.path}: lines {kept[0]}-{kept[-1]}: values do not fit the types of earlier lines ({first_error})"
            )
        return table, kept

    def _line_problem(self, raw: bytes) -> str | None:
        """What is wrong with one JSONL line, or None."""
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as e:
            return f"invalid UTF-8 at byte {e.start} of the line"
        depth = max_depth(raw)
        if depth > MAX_NESTING:
            return f"nested {depth} levels deep (the limit is {MAX_NESTING})"
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            return f"malformed JSON ({e})"
        if not isinstance(obj, dict):
            return f"expected a JSON object, got {_json_kind(obj)}"
        if self.require_text:
            v = obj.get(self.text_field)
            if v is not None and not isinstance(v, str):
                return (
                    f"field '{self.text_field}' holds {_json_kind(v)}, not a string "
                    "(use --on-bad-record skip to skip such records)"
                )
        return None

    def _bad(self, line: int, problem: str) -> None:
        if self.on_bad_record == "skip":
            self.bad_records += 1
            return
        raise InputError(f"{self.path}: line {line}: {problem}")

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
            block, line, brow, lines = block_info
            where = f"line {lines[brow + k] if lines is not None else self._line_of_row(block, line, brow + k)}"
        else:
            where = f"row {row + k + 1}"
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
