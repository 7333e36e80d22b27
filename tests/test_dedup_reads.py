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
