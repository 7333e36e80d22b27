"""Shard formats, input expansion and the splitting of large files into pieces of parallel work."""

from __future__ import annotations

import errno
import glob as _glob
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from dcurate.core.errors import InputError
from dcurate.io import storage
from dcurate.io.names import _SUFFIXES, FORMATS, STDIN, detect_format, is_data_file  # noqa: F401 (re-exported)

# Pieces: a plain JSONL file larger than this is cut at line boundaries into byte ranges, and a
# Parquet file's row groups are grouped up to about this many bytes (uncompressed), so that one
# huge file does not run on one core. Compressed JSONL cannot be split (use `dcurate reshard`).
DEFAULT_PIECE_BYTES = 256 * 1024 * 1024


def _hidden(rel: str) -> bool:
    return any(part.startswith((".", "_")) for part in Path(rel).parts)


@dataclass(frozen=True)
class Shard:
    """One input file. ``stem`` is its output name without extension (relative to the input
    directory it was found under, so sub-folders are mirrored)."""

    path: str
    fmt: str
    stem: str
    index: int
    size: int = 0
    mtime: float = 0.0

    def identity(self) -> list:
        return [self.path, self.size, self.mtime]


@dataclass(frozen=True)
class Piece:
    """A unit of parallel work: a whole shard, some of a Parquet file's row groups, or a byte
    range of a plain JSONL file (starting at a line boundary)."""

    shard: Shard
    index: int = 0
    n_pieces: int = 1
    row_groups: tuple[int, ...] | None = None
    byte_range: tuple[int, int] | None = None
    row_offset: int = 0  # index in the shard of the piece's first document
    line_offset: int = 0  # line number (0-based) in the file of the piece's first line
    limit: int | None = None  # read at most this many documents (from --limit)
    extra: dict = field(default_factory=dict, compare=False)


def expand_inputs(inputs: list[str] | str, input_format: str | None = None) -> list[Shard]:
    """Resolve files, directories (recursive; names starting with '_' or '.' are skipped) and
    globs into an ordered list of shards with unique output stems."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [str(inputs)]
    if not inputs:
        raise InputError("no input given")
    found: list[tuple[str, str]] = []  # (path, stem)
    remote: dict[str, tuple[int, float]] = {}  # URI -> (size, mtime) from the listing
    for item in inputs:
        item = str(item)
        if item == STDIN:
            found.append((STDIN, "stdin"))
            continue
        if storage.is_uri(item):
            for path, stem, size, mtime in storage.expand_input(item, input_format):
                found.append((path, stem))
                remote[path] = (size, mtime)
            continue
        if os.path.isdir(item):
            files = []
            for root, _dirs, names in _walk(item):
                for n in names:
                    rel = os.path.relpath(os.path.join(root, n), item)
                    if not _hidden(rel) and (is_data_file(n) or input_format):
                        files.append(rel)
            if not files:
                raise InputError(f"{item}: directory has no .parquet/.jsonl/.jsonl.gz/.jsonl.zst files")
            for rel in sorted(files):
                _, stem = detect_format(rel, input_format)
                found.append((os.path.join(item, rel), os.path.join(os.path.dirname(rel), stem)))
        elif any(c in item for c in "*?["):
            matches = sorted(p for p in _glob.glob(item, recursive=True) if os.path.isfile(p))
            if not matches:
                raise InputError(f"{item}: the glob matches no file")
            for p in matches:
                found.append((p, detect_format(p, input_format)[1]))
        elif os.path.isfile(item):
            found.append((item, detect_format(item, input_format)[1]))
        else:
            raise InputError(f"{item}: no such file or directory")
    shards: list[Shard] = []
    seen: dict[str, str] = {}
    for i, (path, stem) in enumerate(found):
        if stem in seen:
            raise InputError(
                f"two inputs map to the same output shard '{stem}': {seen[stem]} and {path} "
                "(rename one, or give their parent directory as input)"
            )
        seen[stem] = path
        if path == STDIN:
            shards.append(Shard(STDIN, input_format or "jsonl", stem, i))
            continue
        fmt, _ = detect_format(path, input_format)
        if path in remote:
            shards.append(Shard(path, fmt, stem, i, *remote[path]))
            continue
        try:
            st = os.stat(path)
        except OSError as e:
            raise InputError(f"{path}: cannot read ({_why(e)})") from None
        shards.append(Shard(os.path.abspath(path), fmt, stem, i, st.st_size, st.st_mtime))
    return shards


def _why(e: OSError) -> str:
    if e.errno == errno.ELOOP:
        return "a symlink loop"
    return e.strerror or str(e)


def _walk(top: str):
    """``os.walk`` that follows symlinked sub-directories but enters each real directory once
    (a symlink back to an ancestor, or two links to one folder, are read once), in sorted order,
    skipping names that start with '.' or '_'. An unreadable directory is an error, not skipped."""
    seen: set[tuple[int, int]] = set()

    def onerror(e: OSError) -> None:
        raise InputError(f"{e.filename}: cannot read directory ({_why(e)})")

    for root, dirs, names in os.walk(top, followlinks=True, onerror=onerror):
        st = os.stat(root)
        key = (st.st_dev, st.st_ino)
        if key in seen:
            dirs[:] = []
            continue
        seen.add(key)
        keep = []
        for d in sorted(dirs):
            if d.startswith((".", "_")):
                continue
            try:
                os.stat(os.path.join(root, d))
            except OSError as e:
                raise InputError(f"{os.path.join(root, d)}: cannot read directory ({_why(e)})") from None
            keep.append(d)
        dirs[:] = keep
        yield root, dirs, names


_BLANK_LINE = re.compile(rb"(?m)^[ \t\r]*$")


def _count_rows(data: bytes) -> int:
    """Records in a chunk of JSONL that ends at a line boundary (blank lines are not records)."""
    lines = data.count(b"\n") + (0 if not data or data.endswith(b"\n") else 1)
    blanks = len(_BLANK_LINE.findall(data))
    # findall also matches the empty string after a final newline
    if data.endswith(b"\n") or not data:
        blanks -= 1
    return lines - max(blanks, 0)


def plan_pieces(shard: Shard, piece_bytes: int = DEFAULT_PIECE_BYTES) -> list[Piece]:
    """Cut a shard into pieces of parallel work. Boundaries depend only on the file, never on the
    worker count, so outputs are identical whatever the parallelism."""
    if shard.path == STDIN or piece_bytes <= 0:
        return [Piece(shard)]
    if shard.fmt == "parquet":
        try:
            md = pq.ParquetFile(storage.parquet_source(shard.path)).metadata
        except Exception as e:  # noqa: BLE001 - pyarrow raises several types
            raise InputError(f"{shard.path}: not a readable Parquet file ({e})") from None
        groups: list[list[int]] = [[]]
        size = 0
        for rg in range(md.num_row_groups):
            b = md.row_group(rg).total_byte_size
            if groups[-1] and size + b > piece_bytes:
                groups.append([])
                size = 0
            groups[-1].append(rg)
            size += b
        if len(groups) <= 1:
            return [Piece(shard)]
        pieces, offset = [], 0
        for i, g in enumerate(groups):
            pieces.append(Piece(shard, i, len(groups), tuple(g), None, offset))
            offset += sum(md.row_group(rg).num_rows for rg in g)
        return pieces
    if shard.fmt == "jsonl" and shard.size > piece_bytes:
        bounds = [0]
        with storage.open_read(shard.path) as f:
            while bounds[-1] + piece_bytes < shard.size:
                f.seek(bounds[-1] + piece_bytes)
                f.readline()
                pos = f.tell()
                if pos >= shard.size:
                    break
                bounds.append(pos)
            bounds.append(shard.size)
            pieces, rows, lines = [], 0, 0
            n = len(bounds) - 1
            for i in range(n):
                start, end = bounds[i], bounds[i + 1]
                pieces.append(Piece(shard, i, n, None, (start, end), rows, lines))
                f.seek(start)
                data = f.read(end - start)
                rows += _count_rows(data)
                lines += data.count(b"\n")
        return pieces
    return [Piece(shard)]


def output_name(stem: str, fmt: str) -> str:
    return stem + FORMATS[fmt]
