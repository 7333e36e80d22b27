"""UTF-8 text on Arrow buffers for the numba kernels: per-code-point lookup tables (word classes,
the NFKC + lower-case "fast path"), cached on disk, and the buffer plumbing the kernels read.

* :func:`char_classes` -- ``uint8`` per code point: 0 separator, 1 word character (Python ``re``'s
  ``\\w``), 2 single-character token (scripts written without spaces, :data:`NO_SPACE_RANGES`).
* :func:`fast_path_map` -- ``int32`` per code point: its lower-case form when NFKC leaves a text of
  such code points unchanged, else -1 (such documents go through :func:`dcurate.text.normalize.normalize`).
* :func:`needs_normalization` / :func:`doc_span` -- which documents leave the fast path, and where a
  kernel reads document ``d`` (raw buffer or normalised buffer).
* :func:`large_string_array` / :func:`buffers` -- any string input as one ``LargeStringArray`` and
  its ``(offsets, data)`` numpy views.

Used by :mod:`dcurate.stages.dedup.minhash` (shingles) and :mod:`dcurate.text.scan`.
"""

from __future__ import annotations

import functools
import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numba import njit

__all__ = [
    "NO_SPACE_RANGES",
    "TABLE_LIMIT",
    "disk_cached",
    "char_classes",
    "fast_path_map",
    "doc_span",
    "needs_normalization",
    "large_string_array",
    "buffers",
]

# Word characters of scripts written without spaces, tokenised one character at a time when
# cjk_chars=True (inclusive code point ranges).
NO_SPACE_RANGES = (
    (0x0E00, 0x0E7F),  # Thai
    (0x0E80, 0x0EFF),  # Lao
    (0x1000, 0x109F),  # Myanmar
    (0x1780, 0x17FF),  # Khmer
    (0x3040, 0x309F),  # Hiragana
    (0x30A0, 0x30FF),  # Katakana
    (0x31F0, 0x31FF),  # Katakana phonetic extensions
    (0x3400, 0x4DBF),  # CJK unified ideographs extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0xFF66, 0xFF9F),  # half-width Katakana (NFKC maps most of them to full width)
    (0x20000, 0x3FFFF),  # CJK extensions B and later, compatibility supplement
)


# --------------------------------------------------------------------------------------------
# Character classes
# --------------------------------------------------------------------------------------------


TABLE_LIMIT = 0x40000  # no code point at or above this is a word character (checked in tests)
_TABLE_VERSION = 1  # bump when the table definitions below change


def disk_cached(name: str, build) -> np.ndarray:
    """``build()``, cached as ``.npy`` next to numba's cache (``__pycache__`` of this package, or
    ``$DCURATE_CACHE_DIR``), keyed by the Unicode version of this Python: building the tables
    takes ~0.3 s per process, loading them a few ms. Any I/O problem falls back to building."""
    import hashlib
    import os
    import unicodedata
    from pathlib import Path

    key = hashlib.sha1(
        repr((name, _TABLE_VERSION, unicodedata.unidata_version, TABLE_LIMIT, NO_SPACE_RANGES)).encode()
    ).hexdigest()[:16]
    folder = Path(os.environ.get("DCURATE_CACHE_DIR") or Path(__file__).parent / "__pycache__")
    path = folder / f"text-{name}-{key}.npy"
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        pass
    table = build()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.save(f, table, allow_pickle=False)
        os.replace(tmp, path)
    except OSError:
        pass
    return table


@functools.lru_cache(maxsize=2)
def char_classes(cjk_chars: bool) -> np.ndarray:
    return disk_cached(f"classes{int(cjk_chars)}", lambda: _build_char_classes(cjk_chars))


@functools.lru_cache(maxsize=1)
def fast_path_map() -> np.ndarray:
    return disk_cached("fastpath", _build_fast_path_map)


def _build_char_classes(cjk_chars: bool) -> np.ndarray:
    """uint8 per code point: 0 separator, 1 word character, 2 single-character token.

    Word characters are exactly Python ``re``'s ``\\w`` (computed by running ``re`` over every
    code point below ``TABLE_LIMIT``)."""
    chars = "".join(map(chr, range(TABLE_LIMIT))).replace("\x01", "\x02")
    marked = re.sub(r"\w", "\x01", chars).encode("utf-32-le", "surrogatepass")
    cls = np.zeros(0x110000, dtype=np.uint8)
    cls[:TABLE_LIMIT] = np.frombuffer(marked, dtype=np.uint32) == 1
    if cjk_chars:
        for lo, hi in NO_SPACE_RANGES:
            seg = cls[lo : hi + 1]
            seg[seg == 1] = 2
    return cls


def _build_fast_path_map() -> np.ndarray:
    """int32 per code point: its lower-case form when a text made only of such code points is
    unchanged by NFKC (so ``normalize(text)`` is a per-code-point map), else -1.

    A code point is on the fast path when NFKC maps it to itself, its combining class is 0, it is
    not the second half of a canonical composition (so it never merges with its neighbour; Hangul
    vowel and trailing jamo included), and ``str.lower`` maps it to one code point without context
    (the final-sigma rule excludes U+03A3). This is the Unicode quick-check idea, restricted to
    starters so that no reordering can occur."""
    import unicodedata

    n = TABLE_LIMIT
    chars = [chr(c) for c in range(n)]
    chars[0] = "a"  # NUL is the joiner below; set by hand
    for c in range(0xD800, 0xE000):
        chars[c] = "a"  # surrogates never occur in valid UTF-8
    joined = "\x00".join(chars)
    nf = unicodedata.normalize("NFKC", joined).split("\x00")
    low = joined.lower().split("\x00")
    assert len(nf) == n and len(low) == n
    ok = np.fromiter(map(str.__eq__, nf, chars), dtype=np.bool_, count=n)
    ok &= np.fromiter(map(unicodedata.combining, chars), dtype=np.int64, count=n) == 0
    ok &= np.fromiter(map(len, low), dtype=np.int64, count=n) == 1
    for dec in map(unicodedata.decomposition, chars):
        if dec and dec[0] != "<":
            parts = dec.split()
            if len(parts) == 2:
                ok[int(parts[1], 16)] = False
    ok[0x1160 : 0x11FF + 1] = False  # Hangul vowel/trailing jamo compose with a preceding syllable
    ok[0x03A3] = False  # final sigma: context-dependent lower-casing
    ok[0xD800:0xE000] = False
    out = np.full(0x110000, -1, dtype=np.int32)
    lowered = np.array([ord(x) if len(x) == 1 else -1 for x in low], dtype=np.int32)
    out[:n] = np.where(ok, lowered, -1)
    out[0] = 0
    return out


@njit(cache=True, inline="always")
def doc_span(src, offs_a, offs_b, d):
    """Where document ``d`` is read: ``(start, end, raw)``; raw text ``offs_a[d]:offs_a[d + 1]`` of
    buffer a when ``src[d] < 0``, else row ``src[d]`` of buffer b (its normalised text)."""
    s = src[d]
    if s < 0:
        return offs_a[d], offs_a[d + 1], True
    return offs_b[s], offs_b[s + 1], False


@njit(cache=True)
def needs_normalization(offsets, data, cp_map):
    """Per document: does it hold a code point outside the fast path (cp_map < 0)?"""
    n = offsets.shape[0] - 1
    out = np.zeros(n, dtype=np.bool_)
    for d in range(n):
        p = offsets[d]
        hi = offsets[d + 1]
        while p < hi:
            b0 = data[p]
            if b0 < 0x80:
                p += 1
                continue
            if b0 < 0xE0:
                cp = (np.int64(b0 & 0x1F) << 6) | np.int64(data[p + 1] & 0x3F)
                p += 2
            elif b0 < 0xF0:
                cp = (
                    (np.int64(b0 & 0x0F) << 12)
                    | (np.int64(data[p + 1] & 0x3F) << 6)
                    | np.int64(data[p + 2] & 0x3F)
                )
                p += 3
            else:
                cp = (
                    (np.int64(b0 & 0x07) << 18)
                    | (np.int64(data[p + 1] & 0x3F) << 12)
                    | (np.int64(data[p + 2] & 0x3F) << 6)
                    | np.int64(data[p + 3] & 0x3F)
                )
                p += 4
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
