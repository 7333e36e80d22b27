"""Text normalisation shared by every dcurate stage: what "the same text" means.

* :func:`normalize` — Unicode NFKC, lower-case (CPython's ``unicodedata``); :func:`normalize_array`
  is the same over an Arrow array, :func:`normalize_series` the vectorised polars form (Rust crates,
  whose Unicode version can be newer than this Python's).
* :func:`normalize_for_hash` — the above with whitespace runs collapsed (exact dedup).
* :func:`words` — runs of Python ``\\w`` of the normalised text (``WORD_RE``; ``WORD_PATTERN`` is the
  same pattern for polars, where ``\\w`` follows the Rust engine's classes).

Which stage splits text into words how is defined in :mod:`dcurate.text.tokenizers`; the word
classes behind each ``\\w`` are tabulated in :mod:`dcurate.text.unicode`.
"""

from __future__ import annotations

import re
import unicodedata
from typing import TYPE_CHECKING

import pyarrow as pa

if TYPE_CHECKING:  # polars is imported where used: a command that only needs normalize() skips it
    import polars as pl

WORD_RE = re.compile(r"\w+")
WORD_PATTERN = r"\w+"


def normalize(text: str) -> str:
    """NFKC + lower-case."""
    return unicodedata.normalize("NFKC", text).lower()


def words(text: str) -> list[str]:
    """Words of the normalised text."""
    return WORD_RE.findall(normalize(text))


def normalize_for_hash(text: str) -> str:
    """Normalised text with whitespace runs collapsed to one space and ends stripped (exact dedup)."""
    return " ".join(normalize(text).split())


def normalize_array(texts: pa.Array) -> pa.LargeStringArray:
    """:func:`normalize` of each string of an Arrow array (nulls become ``""``), with CPython's
    ``unicodedata``; its quick check returns already-normalised text untouched."""
    nf = unicodedata.normalize
    isn = unicodedata.is_normalized
    out = [(t if isn("NFKC", t) else nf("NFKC", t)).lower() for t in texts.to_pylist()]
    return pa.array(out, type=pa.large_string())


def as_series(texts: pa.Array | pa.ChunkedArray | pl.Series | list[str]) -> pl.Series:
    import polars as pl

    if isinstance(texts, pl.Series):
        return texts
    if isinstance(texts, (pa.Array, pa.ChunkedArray)):
        return pl.Series(values=texts)
    return pl.Series(values=texts, dtype=pl.String)


def normalize_series(texts) -> pl.Series:
    """Vectorised :func:`normalize`."""
    return as_series(texts).str.normalize("NFKC").str.to_lowercase()


def normalize_series_ascii_fast(texts) -> pl.Series:
    """:func:`normalize_series` with NFKC run only on the texts that hold a non-ASCII character (NFKC
    leaves ASCII unchanged; it is the costly step). Same values."""
    text = as_series(texts)
    low = text.str.to_lowercase()
    idx = text.str.contains(r"[^\x00-\x7F]").fill_null(False).arg_true()
    if len(idx) == 0:
        return low
    return low.scatter(idx, normalize_series(text.gather(idx)))


def normalize_for_hash_series(texts) -> pl.Series:
    """Vectorised :func:`normalize_for_hash`."""
    return normalize_series(texts).str.replace_all(r"\s+", " ").str.strip_chars(" ")
