"""The word tokenisers of dcurate, named and defined in one place.

Every tokeniser first normalises the text as :func:`dcurate.text.normalize.normalize` (NFKC, then
lower-case). They differ in which code points make words (the tables of
:mod:`dcurate.text.unicode`) and in what they return; each keeps its stage's current behaviour:

============================ ============ =========================================================
name                         used by      definition (on the normalised text)
============================ ============ =========================================================
``gopher_words``             filter       runs of polars/Rust ``\\w`` (``\\w+``, polars regex)
``shingle_words``            dedup        runs of Python ``\\w``; with ``cjk_chars`` every word
                                          character of :data:`~dcurate.text.unicode.NO_SPACE_RANGES`
                                          is a token of its own
``ccnet_lines``              perplexity   per line (``\\n``), runs of Python ``\\w`` joined by one
                                          space; lines without a word dropped
``dsir_word_punct``          select/DSIR  ``\\w+|[^\\w\\s]+`` with polars/Rust classes (word runs and
                                          runs of other non-space characters)
============================ ============ =========================================================

:data:`TOKENIZERS` maps each name to a :class:`Tokenizer`: its scalar reference (plain Python over
one document, the definition) and the dotted name of the vectorised kernel the stage runs. The
kernels are tested against the references (``tests/test_tokenizers.py``); the references are not
meant for bulk use. Kernels are named, not imported, so that stage modules can import this module.
"""

from __future__ import annotations

import functools
import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from dcurate.text import scan
from dcurate.text.normalize import (
    WORD_PATTERN,
    WORD_RE,
    normalize,
    normalize_series,
    normalize_series_ascii_fast,
)
from dcurate.text.unicode import NO_SPACE_RANGES, rust_classes

if TYPE_CHECKING:  # the series forms import polars through dcurate.text.normalize when called
    import polars as pl

__all__ = [
    "Tokenizer",
    "TOKENIZERS",
    "get",
    "GOPHER_WORD_PATTERN",
    "CCNET_WORD_PATTERN",
    "DSIR_TOKEN_PATTERN",
    "gopher_words",
    "gopher_words_series",
    "gopher_word_counts",
    "shingle_words",
    "ccnet_lines",
    "dsir_word_punct",
    "dsir_tokens_series",
    "ccnet_lines_batch",
    "dsir_ngrams",
]

#: The filter's word pattern (polars regex, Rust ``\w``).
GOPHER_WORD_PATTERN = WORD_PATTERN
#: The perplexity model's word pattern (Python ``re``; recorded in the model's metadata).
CCNET_WORD_PATTERN = WORD_RE.pattern
#: DSIR's word-punct pattern (the reference implementation's WordPunctTokenizer), polars regex.
DSIR_TOKEN_PATTERN = r"\w+|[^\w\s]+"


@dataclass(frozen=True)
class Tokenizer:
    """A named tokeniser: ``reference(text)`` gives one document's tokens (``ccnet_lines``: its
    lines); ``kernel`` is ``"module:function"`` of the vectorised form the stage runs."""

    name: str
    stage: str
    word_class: str  # "python" or "rust": whose \w
    reference: Callable[..., list[str]]
    kernel: str
    summary: str

    def load_kernel(self) -> Callable[..., Any]:
        module, _, func = self.kernel.partition(":")
        return getattr(importlib.import_module(module), func)


# -- scalar references ------------------------------------------------------------------------------


def _class_runs(text: str, cls: np.ndarray, keep_other: bool) -> list[str]:
    """Maximal runs of code points of one class (1 word, 2 other when ``keep_other``); class 0 and,
    without ``keep_other``, class 2 separate."""
    out: list[str] = []
    cur: list[str] = []
    prev = 0
    for ch in text:
        c = int(cls[ord(ch)])
        if c == 2 and not keep_other:
            c = 0
        if c != prev and cur:
            out.append("".join(cur))
            cur = []
        if c:
            cur.append(ch)
        prev = c
    if cur:
        out.append("".join(cur))
    return out


def gopher_words(text: str | None) -> list[str]:
    """Filter words: runs of Rust-``\\w`` code points of the normalised text."""
    return _class_runs(normalize(text or ""), rust_classes(), keep_other=False)


@functools.lru_cache(maxsize=2)
def _shingle_regex(cjk_chars: bool) -> re.Pattern[str]:
    if not cjk_chars:
        return WORD_RE
    cls = "".join(f"\\U{lo:08x}-\\U{hi:08x}" for lo, hi in NO_SPACE_RANGES)
    return re.compile(rf"(?:(?![{cls}])\w)+|(?=[{cls}])\w")


def shingle_words(text: str | None, cjk_chars: bool = True) -> list[str]:
    """Dedup tokens: runs of Python-``\\w`` characters of the normalised text; with ``cjk_chars``
    each word character of a script written without spaces is a token of its own."""
    return _shingle_regex(bool(cjk_chars)).findall(normalize(text or ""))


def ccnet_lines(text: str | None) -> list[str]:
    """Perplexity sentences: per line of the normalised text its Python-``\\w`` runs joined by one
    space; lines without a word are dropped."""
    out = []
    for line in normalize(text or "").split("\n"):
        words = WORD_RE.findall(line)
        if words:
            out.append(" ".join(words))
    return out


def dsir_word_punct(text: str | None) -> list[str]:
    """DSIR tokens: maximal runs of Rust-``\\w`` code points and of other non-space code points
    (``\\w+|[^\\w\\s]+``) of the normalised text."""
    return _class_runs(normalize(text or ""), rust_classes(), keep_other=True)


# -- vectorised forms run by the stages (polars) ----------------------------------------------------


def gopher_words_series(texts) -> pl.Series:
    """:func:`gopher_words` of a column (``list[str]`` series; empty list for null or empty), as the
    filter computes them (:mod:`dcurate.stages.filter.rules`: the pattern over
    :func:`~dcurate.text.normalize.normalize_series_ascii_fast`)."""
    return normalize_series_ascii_fast(texts).str.extract_all(GOPHER_WORD_PATTERN).fill_null([])


def gopher_word_counts(texts) -> pl.Series:
    """Number of :func:`gopher_words` per document."""
    return normalize_series_ascii_fast(texts).str.count_matches(GOPHER_WORD_PATTERN).fill_null(0)


def dsir_tokens_series(texts) -> pl.Series:
    """:func:`dsir_word_punct` of a column (``list[str]`` series), DSIR's ``reference`` mode."""
    return normalize_series(texts).str.extract_all(DSIR_TOKEN_PATTERN).fill_null([])


#: Compiled :func:`ccnet_lines` of a batch: ``(data, starts, doc, ntok)`` (:func:`dcurate.text.scan.ccnet_lines`).
ccnet_lines_batch = scan.ccnet_lines
#: Compiled :func:`dsir_word_punct` of a batch, hashed as unigrams + bigrams
#: (:func:`dcurate.text.scan.word_punct_ngrams`).
dsir_ngrams = scan.word_punct_ngrams


TOKENIZERS: dict[str, Tokenizer] = {
    t.name: t
    for t in (
        Tokenizer(
            "gopher_words",
            "filter",
            "rust",
            gopher_words,
            "dcurate.text.tokenizers:gopher_words_series",
            "polars \\w+ on NFKC-lower text (word counts, mean word length, stop words)",
        ),
        Tokenizer(
            "shingle_words",
            "dedup",
            "python",
            shingle_words,
            "dcurate.stages.dedup.minhash:shingle_hashes",
            "Python \\w runs, CJK/Thai/... characters single tokens; hashed as word n-gram shingles",
        ),
        Tokenizer(
            "ccnet_lines",
            "perplexity",
            "python",
            ccnet_lines,
            "dcurate.text.scan:ccnet_lines",
            "per line, Python \\w runs joined by one space (CCNet sentences for the n-gram LM)",
        ),
        Tokenizer(
            "dsir_word_punct",
            "select",
            "rust",
            dsir_word_punct,
            "dcurate.text.scan:word_punct_ngrams",
            "word-punct tokens (\\w+|[^\\w\\s]+, Rust classes); hashed unigrams and bigrams",
        ),
    )
}


def get(name: str) -> Tokenizer:
    """The tokeniser called ``name`` (:data:`TOKENIZERS`)."""
    try:
        return TOKENIZERS[name]
    except KeyError:
        raise ValueError(f"unknown tokeniser {name!r}; known: {', '.join(TOKENIZERS)}") from None
