"""The JSONL reader's cheap block checks agree with the exact ones they stand in for."""

from __future__ import annotations

import json
import random

import pytest

from dcurate.io.reader import MAX_NESTING, block_stats, max_depth, valid_utf8


def _nested(depth: int) -> str:
    """A list nested so that a record holding it is ``depth`` levels deep."""
    return "[" * (depth - 1) + "]" * (depth - 1)


def test_block_stats_counts_lines_like_bytes_count():
    for block in (b"", b"\n", b'{"a": 1}', b'{"a": 1}\n', b'{"a": 1}\n\n{"b": 2}', b"\n\n\n"):
        assert block_stats(block)[0] == block.count(b"\n") + (0 if block.endswith(b"\n") else 1)


def test_block_stats_clears_exactly_the_blocks_max_depth_clears():
    rng = random.Random(3)
    for _ in range(300):
        rows = []
        for _ in range(rng.randint(1, 6)):
            r = rng.random()
            if r < 0.3:  # brackets inside a string: many, yet depth 1
                v: object = "{[" * rng.randint(0, 3 * MAX_NESTING)
            elif r < 0.6:
                v = json.loads(_nested(rng.randint(2, MAX_NESTING + 3)))
            else:
                v = [{"k": "[" * rng.randint(0, 40)}] * rng.randint(0, 3)
            rows.append(json.dumps({"id": "x", "v": v}))
        block = ("\n".join(rows) + ("\n" if rng.random() < 0.5 else "")).encode()
        assert block_stats(block)[1] == (max_depth(block) <= MAX_NESTING), block


def test_a_deep_line_among_bracket_heavy_lines_is_found():
    heavy = json.dumps({"id": "a", "text": "{" * 100})
    deep = '{"id": "b", "v": ' + "[" * MAX_NESTING + "]" * MAX_NESTING + "}"
    assert block_stats(f"{heavy}\n{heavy}\n".encode())[1]
    assert not block_stats(f"{heavy}\n{deep}\n{heavy}".encode())[1]
    at_limit = '{"id": "b", "v": ' + _nested(MAX_NESTING) + "}"
    assert block_stats(f"{heavy}\n{at_limit}\n".encode())[1]


def test_valid_utf8_agrees_with_python():
    rng = random.Random(7)
    samples = [b"", b"ascii", "é東京😀".encode(), b"\xff", b"\xc3", b"\xed\xa0\x80", b"a\xe6\x9d\xb1"]
    for _ in range(500):
        raw = bytearray("ab é東😀\n".encode() * rng.randint(0, 3))
        for _ in range(rng.randint(0, 2)):
            raw.insert(rng.randint(0, len(raw)), rng.randint(0x80, 0xFF))
        samples.append(bytes(raw))
    for s in samples:
        try:
            s.decode("utf-8")
            ok = True
        except UnicodeDecodeError:
            ok = False
        assert valid_utf8(s) == ok, s


def _read(path) -> list[dict]:
    from dcurate.io.formats import Piece, expand_inputs
    from dcurate.io.reader import BatchReader

    return [r for b in BatchReader(Piece(expand_inputs([str(path)])[0])) for r in b.to_pylist()]


def test_a_block_read_again_reuses_its_verdict_only_for_the_same_bytes(tmp_path, monkeypatch):
    from dcurate.core.errors import InputError
    from dcurate.io import reader

    monkeypatch.setattr(reader, "BLOCK_BYTES", 64)
    monkeypatch.setattr(reader, "_CHECKED", {})
    p = tmp_path / "a.jsonl"
    good = b"".join(b'{"id": "d%02d", "text": "caf\xc3\xa9 %02d"}\n' % (i, i) for i in range(20))
    p.write_bytes(good)
    first = _read(p)
    n = len(reader._CHECKED)
    assert n > 3 and _read(p) == first and len(reader._CHECKED) == n  # second read: all cached
    bad = good.replace(b"caf\xc3\xa9 17", b"caf\xff\xfe 17")  # same length, same place
    assert len(bad) == len(good)
    p.write_bytes(bad)
    with pytest.raises(InputError, match=r"a\.jsonl: line 18: invalid UTF-8"):
        _read(p)
    deep = good.replace(b'"text": "caf\xc3\xa9 03"', b'"text": "x", "n": ' + b"[" * 40 + b"]" * 40)
    p.write_bytes(deep)
    with pytest.raises(InputError, match=r"a\.jsonl: line 4: nested 41 levels deep"):
        _read(p)
