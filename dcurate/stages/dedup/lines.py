"""The second MinHash scan's direct read of candidate documents from a plain JSONL piece.

The first scan read every document through the runner's reader; the second needs only the
candidate rows (about a quarter of the documents on the benchmark set). For a whole plain ``.jsonl``
file whose line count equals the number of documents the first scan saw, row ``r`` is line ``r``
(the reader skips blank lines and, with ``--on-bad-record skip``, bad ones: with equal counts there
were none), so the candidate lines are sliced out of the file and only they are parsed, by the
same Arrow JSON parser. Their text is then the reader's: a JSON string decodes the same alone as
in a block, and the first scan has already checked the file's UTF-8, nesting and text field.
Anything that cannot be shown equal -- compressed or remote files, pieces of a file, a line count
that differs (bad records skipped, blank lines, ``--limit``, a file changed since), ids that are not
strings on every candidate line, a ``--keep max:COLUMN`` -- returns ``None``, and the caller reads
the piece through the reader as before.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.json as paj

__all__ = ["NotEqual", "candidate_batches"]

#: Bytes read from the file at a time (memory stays bounded whatever the piece's size).
READ_BYTES = 16 << 20
#: Candidate lines parsed at once (bytes of JSON).
PARSE_BYTES = 4 << 20


class NotEqual(Exception):
    """The direct read cannot be shown to give the reader's documents (raised at any point of
    the iteration: the caller discards what it made of the batches so far and uses the reader)."""


def _is_string(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _parse(lines: list[bytes], text_field: str, id_field: str) -> pa.RecordBatch:
    data = b"\n".join(lines) + b"\n"
    ropts = paj.ReadOptions(use_threads=False, block_size=max(len(data) + 1, 1 << 16))
    try:
        table = paj.read_json(pa.BufferReader(data), read_options=ropts)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        raise NotEqual from None
    if table.num_rows != len(lines):
        raise NotEqual
    for name in (text_field, id_field):
        if name not in table.column_names:
            raise NotEqual
        col = table.column(name)
        if not _is_string(col.type) or col.null_count:
            raise NotEqual
    return table.select([id_field, text_field]).combine_chunks().to_batches()[0]


def _line_groups(path: str, rows: np.ndarray, n_rows: int) -> Iterator[list[bytes]]:
    """The file's lines ``rows`` (sorted), without their newlines, in groups of about
    :data:`PARSE_BYTES`; reads the file to its end and raises :class:`NotEqual` unless it has
    exactly ``n_rows`` lines."""
    k = 0  # candidates passed so far
    group: list[bytes] = []
    size = 0
    line = 0  # index of the first line in buf
    carry = b""  # the unfinished last line of the bytes read so far
    with open(path, "rb") as f:
        while True:
            data = f.read(READ_BYTES)
            if not data:
                break
            if k >= len(rows):  # past the last candidate: only count the lines
                n = data.count(b"\n")
                line += n
                carry = data[data.rfind(b"\n") + 1 :] if n else carry + data
                continue
            buf = carry + data if carry else data
            nl = np.flatnonzero(np.frombuffer(buf, dtype=np.uint8) == 10)
            if len(nl) == 0:
                carry = buf
                continue
            end = int(np.searchsorted(rows, line + len(nl)))
            sel = rows[k:end] - line
            starts = np.where(sel > 0, nl[np.maximum(sel - 1, 0)] + 1, 0)
            for s, e in zip(starts.tolist(), nl[sel].tolist(), strict=True):
                group.append(buf[s:e])
                size += e - s
                if size >= PARSE_BYTES:
                    yield group
                    group, size = [], 0
            k = end
            line += len(nl)
            carry = buf[int(nl[-1]) + 1 :]
    if carry:  # a last line without a newline
        if k < len(rows) and rows[k] == line:
            group.append(carry)
            k += 1
        line += 1
    if line != n_rows or k != len(rows):
        raise NotEqual
    if group:
        yield group


def candidate_batches(
    path: str, n_pieces: int, rows: np.ndarray, n_rows: int | None, text_field: str, id_field: str
) -> Iterator[tuple[int, pa.RecordBatch]] | None:
    """``(k, batch)`` pairs: the candidate documents ``rows[k:k + batch.num_rows]`` (columns id
    and text, as the reader gives them) read straight from the file, or ``None`` when the piece
    does not qualify (see the module docstring). The iteration raises :class:`NotEqual` when the
    file turns out not to match the first scan."""
    if n_rows is None or n_pieces != 1 or not path.endswith(".jsonl") or "://" in path or id_field == text_field:
        return None
    if not os.path.isfile(path) or len(rows) == 0:
        return None

    def gen() -> Iterator[tuple[int, pa.RecordBatch]]:
        k = 0
        try:
            for group in _line_groups(path, np.asarray(rows, dtype=np.int64), n_rows):
                batch = _parse(group, text_field, id_field)
                yield k, batch
                k += batch.num_rows
        except OSError:
            raise NotEqual from None

    return gen()
