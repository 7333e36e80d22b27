"""The JSONL reader's blocks (dedup reads each piece up to three times): built with one copy, cut
exactly where the former carry-and-copy loop cut them, for any chunking of the decompressed bytes."""

from __future__ import annotations

import random

from dcurate.io import reader


def _reference_blocks(chunks: list[bytes], block: int) -> list[bytes]:
    """The former loop: the unfinished line carried over and copied at every chunk."""
    out = []
    carry = b""
    for chunk in chunks:
        view = memoryview(chunk)
        start = 0
        while True:
            if len(carry) + len(chunk) - start < block:
                break
            limit = start + max(block - len(carry), 0)
            cut = chunk.rfind(b"\n", start, limit) + 1
            if cut <= start:
                cut = chunk.find(b"\n", limit) + 1
                if cut <= 0:
                    break
            out.append(b"".join((carry, view[start:cut])) if carry else bytes(view[start:cut]))
            carry = b""
            start = cut
        if start < len(chunk):
            carry = b"".join((carry, view[start:])) if carry else bytes(view[start:])
    if carry:
        out.append(carry)
    return out


def test_blocks_cut_as_before_for_any_chunking(monkeypatch):
    rng = random.Random(7)
    for trial in range(300):
        lines = [b"x" * rng.choice([0, 1, 5, 30, 90, 400]) for _ in range(rng.randint(0, 40))]
        data = b"".join(line + b"\n" for line in lines)
        if rng.random() < 0.3:
            data += b"tail without newline" * rng.randint(0, 3)
        cuts = sorted(rng.sample(range(1, max(len(data), 2)), min(rng.randint(0, 8), max(len(data) - 1, 0))))
        chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True) if b > a]
        block = rng.choice([1, 16, 64, 200, 1000, 100_000])
        monkeypatch.setattr(reader, "BLOCK_BYTES", block)
        monkeypatch.setattr(reader, "_raw_chunks", lambda piece, chunks=chunks: iter(chunks))
        got = list(reader._blocks(None))  # type: ignore[arg-type]
        assert all(type(b) is bytes for b in got)
        assert got == _reference_blocks(chunks, block), (trial, block, [len(c) for c in chunks])
        assert b"".join(got) == data


# -- the second MinHash scan's direct read of candidate lines (dcurate.stages.dedup.lines) ----------

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pytest  # noqa: E402

from dcurate import api  # noqa: E402
from dcurate.io.formats import Piece, expand_inputs  # noqa: E402
from dcurate.stages.dedup import lines  # noqa: E402

TEXTS = [
    "plain ascii text",
    'quotes " and \\ backslashes \\n not a newline',
    "unicode: caf\u00e9 \u6771\u4eac \U0001f600 and a no-break\u00a0space",
    "escaped controls \t tab",
    "",
]


def _write(path: Path, recs: list[dict], eol: str = "\n", last_eol: bool = True, ascii_only: bool = False) -> None:
    body = eol.join(json.dumps(r, ensure_ascii=ascii_only) for r in recs)
    path.write_bytes((body + (eol if last_eol else "")).encode())


def _reader_rows(path: Path, rows: np.ndarray) -> list[tuple[str, str]]:
    table = pa.Table.from_batches(list(reader.BatchReader(Piece(expand_inputs(str(path))[0]))))
    sub = table.take(pa.array(rows))
    return list(zip(sub.column("id").to_pylist(), sub.column("text").to_pylist(), strict=True))


def _direct_rows(path: Path, rows: np.ndarray, n_rows: int, n_pieces: int = 1):
    got = lines.candidate_batches(str(path), n_pieces, rows, n_rows, "text", "id")
    if got is None:
        return None
    out: list[tuple[str, str]] = []
    for k, batch in got:
        assert k == len(out)
        out += list(zip(batch.column("id").to_pylist(), batch.column("text").to_pylist(), strict=True))
    return out


@pytest.mark.parametrize("eol,last_eol,ascii_only", [("\n", True, False), ("\r\n", True, True), ("\n", False, False)])
def test_direct_read_gives_the_readers_documents(tmp_path, monkeypatch, eol, last_eol, ascii_only):
    monkeypatch.setattr(lines, "READ_BYTES", 97)  # lines cut across reads
    monkeypatch.setattr(lines, "PARSE_BYTES", 150)  # several parse groups
    recs = [{"id": f"d{i}", "x": i, "text": TEXTS[i % len(TEXTS)] * (i % 4 + 1)} for i in range(40)]
    path = tmp_path / "in.jsonl"
    _write(path, recs, eol, last_eol, ascii_only)
    for rows in ([0], [39], [0, 1, 2, 39], list(range(0, 40, 3)), list(range(40))):
        r = np.array(rows, dtype=np.int64)
        assert _direct_rows(path, r, 40) == _reader_rows(path, r), rows


def test_direct_read_refuses_what_it_cannot_show_equal(tmp_path):
    recs = [{"id": f"d{i}", "text": f"text {i}"} for i in range(5)]
    rows = np.array([1, 3], dtype=np.int64)
    path = tmp_path / "in.jsonl"
    _write(path, recs)
    assert _direct_rows(path, rows, 5) is not None
    assert _direct_rows(path, rows, 5, n_pieces=2) is None  # a piece of a file
    assert _direct_rows(path, rows, None) is None  # a plan written before n_rows  # type: ignore[arg-type]
    gz = tmp_path / "in.jsonl.gz"
    gz.write_bytes(b"")
    assert _direct_rows(gz, rows, 5) is None
    with pytest.raises(lines.NotEqual):  # the first scan saw fewer documents (--limit, skipped)
        _direct_rows(path, rows, 4)
    blank = tmp_path / "blank.jsonl"
    blank.write_text(json.dumps(recs[0]) + "\n\n" + "".join(json.dumps(r) + "\n" for r in recs[1:]))
    with pytest.raises(lines.NotEqual):  # row r is not line r
        _direct_rows(blank, rows, 5)
    for bad in ({"id": 7, "text": "numeric id"}, {"text": "no id"}, {"id": None, "text": "null id"}):
        other = tmp_path / "other.jsonl"
        _write(other, recs[:3] + [bad] + recs[4:])
        with pytest.raises(lines.NotEqual):
            _direct_rows(other, rows, 5)


def _dup_corpus(folder: Path, bad_line: bool = False, blank: bool = False) -> None:
    words = [f"w{k}" for k in range(400)]
    folder.mkdir(parents=True)
    for s in range(2):
        out = []
        for i in range(30):
            base = " ".join(words[(i * 7) % 50 : (i * 7) % 50 + 120])
            text = base if i % 3 else base + " plus a small edit"
            out.append(json.dumps({"id": f"s{s}-{i}", "text": text, "n": i}))
            if bad_line and s == 1 and i == 4:
                out.append('{"id": "broken", "text": ')
            if blank and s == 0 and i == 10:
                out.append("   ")
        (folder / f"part-{s}.jsonl").write_text("\n".join(out) + "\n")


@pytest.mark.parametrize("case", ["plain", "bad_line_skipped", "blank_line", "limit"])
def test_dedup_output_is_the_same_with_and_without_the_direct_read(tmp_path, monkeypatch, case):
    _dup_corpus(tmp_path / "in", bad_line=case == "bad_line_skipped", blank=case == "blank_line")
    opts: dict = {"workers": 1}
    if case == "bad_line_skipped":
        opts["on_bad_record"] = "skip"
    if case == "limit":
        opts["limit"] = 45
    used: list[bool] = []
    real = lines.candidate_batches

    def spy(*a, **kw):
        got = real(*a, **kw)
        used.append(got is not None)
        return got

    monkeypatch.setattr(lines, "candidate_batches", spy)
    api.curate(str(tmp_path / "in"), str(tmp_path / "a"), [{"stage": "dedup"}], **opts)
    assert used and all(used)
    monkeypatch.setattr(lines, "candidate_batches", lambda *a, **kw: None)
    api.curate(str(tmp_path / "in"), str(tmp_path / "b"), [{"stage": "dedup"}], **opts)
    for name in ("part-0.jsonl", "part-1.jsonl"):
        a, b = tmp_path / "a" / name, tmp_path / "b" / name
        assert a.exists() == b.exists()
        if a.exists():
            assert a.read_bytes() == b.read_bytes(), name
    ca = pa.ipc.open_file(tmp_path / "a" / ".dcurate" / "clusters.arrow").read_all()
    cb = pa.ipc.open_file(tmp_path / "b" / ".dcurate" / "clusters.arrow").read_all()
    assert ca.num_rows > 0 and ca.equals(cb)
