"""UTF-8 text on Arrow buffers for the numba kernels: the buffer plumbing the kernels read. The
per-code-point tables they index (word classes, NFKC + lower-case) are in :mod:`dcurate.text.unicode`
(``char_classes``, ``fast_path_map``, ``disk_cached`` are re-exported here).

* :func:`decode` -- one UTF-8 code point at a byte position.
* :func:`needs_normalization` / :func:`doc_span` -- which documents leave the fast path, and where a
  kernel reads document ``d`` (raw buffer or normalised buffer).
* :func:`large_string_array` / :func:`buffers` / :func:`string_buffers` -- any string input as one
  ``LargeStringArray`` and its ``(offsets, data)`` numpy views.

Used by :mod:`dcurate.stages.dedup.minhash` (shingles) and :mod:`dcurate.text.scan`.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dcurate.core.jit import njit

# The tables live in dcurate.text.unicode; re-exported here for existing callers.
from dcurate.text.unicode import NO_SPACE_RANGES, TABLE_LIMIT, char_classes, disk_cached, fast_path_map

__all__ = [
    "NO_SPACE_RANGES",
    "TABLE_LIMIT",
    "disk_cached",
    "char_classes",
    "fast_path_map",
    "decode",
    "put_utf8",
    "doc_span",
    "needs_normalization",
    "large_string_array",
    "buffers",
    "string_buffers",
]


@njit(cache=True, inline="always")
def doc_span(src, offs_a, offs_b, d):
    """Where document ``d`` is read: ``(start, end, raw)``; raw text ``offs_a[d]:offs_a[d + 1]`` of
    buffer a when ``src[d] < 0``, else row ``src[d]`` of buffer b (its normalised text)."""
    s = src[d]
    if s < 0:
        return offs_a[d], offs_a[d + 1], True
    return offs_b[s], offs_b[s + 1], False


@njit(cache=True, inline="always")
def decode(data, p):
    """``(code point, byte length)`` of the UTF-8 sequence that starts with the non-ASCII byte
    ``data[p]`` (valid UTF-8 assumed, as Arrow strings are)."""
    b0 = np.int64(data[p])
    if b0 < 0xE0:
        return ((b0 & 0x1F) << 6) | (np.int64(data[p + 1]) & 0x3F), 2
    if b0 < 0xF0:
        return ((b0 & 0x0F) << 12) | ((np.int64(data[p + 1]) & 0x3F) << 6) | (np.int64(data[p + 2]) & 0x3F), 3
    return (
        ((b0 & 0x07) << 18)
        | ((np.int64(data[p + 1]) & 0x3F) << 12)
        | ((np.int64(data[p + 2]) & 0x3F) << 6)
        | (np.int64(data[p + 3]) & 0x3F)
    ), 4


@njit(cache=True, inline="always")
def put_utf8(out, o, m):
    """UTF-8 encode code point ``m`` at ``out[o]``; returns the new end."""
    if m < 0x80:
        out[o] = m
        return o + 1
    if m < 0x800:
        out[o] = 0xC0 | (m >> 6)
        out[o + 1] = 0x80 | (m & 0x3F)
        return o + 2
    if m < 0x10000:
        out[o] = 0xE0 | (m >> 12)
        out[o + 1] = 0x80 | ((m >> 6) & 0x3F)
        out[o + 2] = 0x80 | (m & 0x3F)
        return o + 3
    out[o] = 0xF0 | (m >> 18)
    out[o + 1] = 0x80 | ((m >> 12) & 0x3F)
    out[o + 2] = 0x80 | ((m >> 6) & 0x3F)
    out[o + 3] = 0x80 | (m & 0x3F)
    return o + 4


@njit(cache=True)
def needs_normalization(offsets, data, cp_map):
    """Per document: does it hold a code point outside the fast path (cp_map < 0)?"""
    n = offsets.shape[0] - 1
    out = np.zeros(n, dtype=np.bool_)
    for d in range(n):
        p = offsets[d]
        hi = offsets[d + 1]
        while p < hi:
            if data[p] < 0x80:
                p += 1
                continue
            cp, w = decode(data, p)
            p += w
            if cp_map[cp] < 0:
                out[d] = True
                break
    return out


def large_string_array(texts) -> pa.LargeStringArray:
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks() if texts.num_chunks != 1 else texts.chunk(0)
    elif not isinstance(texts, pa.Array):
        try:
            import polars as pl

            if isinstance(texts, pl.Series):
                texts = texts.to_arrow()
                if isinstance(texts, pa.ChunkedArray):
                    texts = texts.combine_chunks()
        except ImportError:  # pragma: no cover - polars is a runtime dependency
            pass
        if not isinstance(texts, pa.Array):
            texts = pa.array(list(texts), type=pa.large_string())
    if texts.type != pa.large_string():
        texts = texts.cast(pa.large_string())
    if texts.null_count:
        texts = pc.fill_null(texts, "")
    return texts


def buffers(arr: pa.LargeStringArray) -> tuple[np.ndarray, np.ndarray]:
    n = len(arr)
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], dtype=np.int64, count=arr.offset + n + 1)[arr.offset :]
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else None
    if data is None or data.size == 0:
        data = np.frombuffer(b"\x00", dtype=np.uint8)
    return offsets, data


def string_buffers(arr) -> tuple[pa.LargeStringArray, np.ndarray, np.ndarray]:
    """``(array, offsets, data)`` of the texts as a large_string array with nulls as empty
    strings (any array, polars Series or list); ``data`` is never empty (numba needs a buffer)."""
    arr = large_string_array(arr)
    offsets, data = buffers(arr)
    return arr, offsets, data
