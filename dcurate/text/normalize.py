"""Text normalisation and word tokenisation shared by every dcurate stage.

One definition, used by dedup (shingles), exact hashing, DSIR features, perplexity and filters:

* :func:`normalize` — Unicode NFKC, lower-case; what "the same text" means for hashing.
* :func:`words` — runs of Unicode word characters (``\\w+``) of the normalised text; punctuation and
  whitespace only separate words, they are never glued to them. This matches the tokenisation of
  the ground truth in ``../shared/corpus/dedup`` (``re.findall(r"\\w+", text.lower())``) on text
  that NFKC leaves unchanged.

Vectorised forms (``*_series``) work on whole Arrow/polars columns (Rust regex engine); the
scalar forms use Python's ``re`` and are for tests and small inputs. The two agree on word
characters except for rare code points (Python's ``\\w`` also matches numeric symbols such as
superscripts; the Rust engine also matches combining marks).
"""

from __future__ import annotations

import re
import unicodedata

import polars as pl
import pyarrow as pa

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


def as_series(texts: pa.Array | pa.ChunkedArray | pl.Series | list[str]) -> pl.Series:
    if isinstance(texts, pl.Series):
        return texts
    if isinstance(texts, (pa.Array, pa.ChunkedArray)):
        return pl.Series(values=texts)
    return pl.Series(values=texts, dtype=pl.String)


def normalize_series(texts) -> pl.Series:
    """Vectorised :func:`normalize`."""
    return as_series(texts).str.normalize("NFKC").str.to_lowercase()


def normalize_for_hash_series(texts) -> pl.Series:
    """Vectorised :func:`normalize_for_hash`."""
    return normalize_series(texts).str.replace_all(r"\s+", " ").str.strip_chars(" ")


def words_series(texts) -> pl.Series:
    """Vectorised :func:`words`: a ``list[str]`` series (empty list for empty text)."""
    return normalize_series(texts).str.extract_all(WORD_PATTERN).fill_null([])


def word_counts(texts) -> pl.Series:
    """Number of words per document (vectorised)."""
    return normalize_series(texts).str.count_matches(WORD_PATTERN).fill_null(0)
