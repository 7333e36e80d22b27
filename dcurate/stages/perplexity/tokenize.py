"""Tokenisation for the n-gram LMs, shared by training and scoring: documents cut into lines and
words in one compiled pass (:mod:`dcurate.text.scan`) or SentencePiece pieces, and sentences framed
as one id stream ``<s> w.. </s> <s> ...`` with lmplz's ids for the special tokens."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from dcurate.core.errors import ModelError
from dcurate.text import tokenizers
from dcurate.text.normalize import as_series
from dcurate.text.utf8 import string_buffers

UNK, BOS, EOS = "<unk>", "<s>", "</s>"
UNK_ID, BOS_ID, EOS_ID = 0, 1, 2  # the ids lmplz gives them too


@dataclass
class Sentences:
    """Sentences of a batch of documents.

    ``data`` holds one line per sentence that has at least one token, its tokens joined by single
    spaces, each line followed by ``"\\n"`` (UTF-8 bytes); sentence ``i`` is
    ``data[starts[i]:starts[i + 1] - 1]``; ``ntok`` its number of tokens; ``doc`` the document (row
    of the batch) it belongs to.
    """

    data: np.ndarray
    starts: np.ndarray
    ntok: np.ndarray
    doc: np.ndarray
    n_docs: int

    @classmethod
    def from_lines(cls, lines: pl.Series, ntok: np.ndarray, doc: np.ndarray, n_docs: int) -> Sentences:
        arr = (lines + "\n").to_arrow()
        _, starts, data = string_buffers(arr)
        first = int(starts[0])
        return cls(data[first : int(starts[-1])], starts - first, ntok, doc, n_docs)

    @classmethod
    def from_tokens(cls, tokens: pl.Series, doc: np.ndarray, n_docs: int) -> Sentences:
        """From a ``list[str]`` series of token lists (empty lists are dropped)."""
        lens = tokens.list.len().fill_null(0).to_numpy()
        keep = lens > 0
        t = tokens.filter(pl.Series(keep))
        return cls.from_lines(
            t.list.join(" "), lens[keep].astype(np.int64), np.asarray(doc, dtype=np.int64)[keep], n_docs
        )

    def __len__(self) -> int:
        return len(self.doc)

    @property
    def lines(self) -> pl.Series:
        """The sentences as strings (``pl.String``)."""
        if len(self.doc) == 0:
            return pl.Series([], dtype=pl.String)
        arr = pa.LargeStringArray.from_buffers(
            len(self.doc), pa.py_buffer(self.starts), pa.py_buffer(self.data)
        )
        return pl.Series(arr).str.strip_suffix("\n")

    @property
    def tokens(self) -> pl.Series:
        """Tokens of each sentence (``list[str]``)."""
        return self.lines.str.split(" ")

    def joined(self) -> list[str]:
        """Sentences as space-separated strings (what KenLM's ``score`` takes)."""
        return self.lines.to_list()

    def encoded(self) -> list[bytes]:
        """Sentences as UTF-8 ``bytes`` (KenLM's ``score`` takes them without re-encoding)."""
        if len(self.doc) == 0:
            return []
        out = self.data.tobytes().split(b"\n")
        out.pop()  # after the last newline
        return out


def split_words_lines(texts) -> Sentences:
    """Vectorised CCNet sentences with dcurate words: per non-blank line, the ``\\w+`` words of
    the NFKC-lower-cased text (Python's definition of ``\\w``, as :func:`dcurate.text.normalize.words`)
    joined by one space, in one compiled pass over the UTF-8 bytes that also normalises
    (the ``ccnet_lines`` tokeniser of :mod:`dcurate.text.tokenizers`)."""
    if isinstance(texts, pl.Series):
        texts = texts.cast(pl.String).to_arrow()
    data, starts, doc, ntok = tokenizers.ccnet_lines_batch(texts)
    return Sentences(data, starts, ntok, doc, len(texts))


class Tokenizer:
    """CCNet-style sentences: one per non-blank line; words of :mod:`dcurate.text.normalize`, or
    sentencepiece pieces of the normalised line when ``sentencepiece`` names a model file."""

    def __init__(self, sentencepiece: str | None = None):
        self.sentencepiece = sentencepiece
        self._sp = None
        if sentencepiece:
            try:
                import sentencepiece as spm
            except ImportError:
                raise ModelError(
                    f"{sentencepiece}: a sentencepiece model was given but the 'sentencepiece' module "
                    "is not installed; pip install sentencepiece"
                ) from None
            from dcurate.io import storage

            if storage.is_uri(sentencepiece):  # opened by name: a cached local copy
                if not storage.is_file(sentencepiece):
                    raise ModelError(f"{sentencepiece}: sentencepiece model file not found")
            elif not Path(sentencepiece).is_file():
                raise ModelError(f"{sentencepiece}: sentencepiece model file not found")
            with storage.fetched(sentencepiece) as local:
                try:
                    self._sp = spm.SentencePieceProcessor(model_file=local)
                except Exception as e:  # sentencepiece raises OSError/RuntimeError
                    raise ModelError(f"{sentencepiece}: not a sentencepiece model ({e})") from None

    def describe(self) -> dict[str, Any]:
        return {
            "sentencepiece": self.sentencepiece,
            "words": None if self.sentencepiece else tokenizers.CCNET_WORD_PATTERN,
            "normalize": "NFKC+lower",
            "sentence": "line",
        }

    def sentences(self, texts: pa.Array | pa.ChunkedArray | pl.Series | list[str]) -> Sentences:
        if self._sp is None:
            return split_words_lines(texts)
        s = as_series(texts).cast(pl.String)
        lines = (
            pl.DataFrame({"t": s})
            .with_row_index("doc")
            .select(
                pl.col("doc"),
                pl.col("t")
                .fill_null("")
                .str.normalize("NFKC")
                .str.to_lowercase()
                .str.split("\n")
                .alias("line"),
            )
            .explode("line")
            .with_columns(pl.col("line").str.strip_chars())
            .filter(pl.col("line").str.len_bytes() > 0)
        )
        pieces = self._sp.encode(lines["line"].to_list(), out_type=str) if len(lines) else []
        toks = pl.Series(pieces, dtype=pl.List(pl.String))
        return Sentences.from_tokens(toks, lines["doc"].to_numpy(), len(s))


def encode_sentences(
    tokens: pl.Series, vocab_words: pl.Series, vocab_ids: pl.Series
) -> tuple[np.ndarray, np.ndarray]:
    """Map sentences of words to one flat id stream ``<s> w.. </s> <s> ...`` (unknown words ->
    ``<unk>``). Returns (ids int64, sentence start offsets)."""
    lengths = tokens.list.len().to_numpy().astype(np.int64)
    flat = tokens.explode().drop_nulls()
    if len(vocab_words):
        ids = flat.replace_strict(vocab_words, vocab_ids, default=UNK_ID, return_dtype=pl.Int64).to_numpy()
    else:
        ids = np.full(len(flat), UNK_ID, dtype=np.int64)
    return frame_sentences(ids, lengths)


def frame_sentences(
    ids: np.ndarray, lengths: np.ndarray, bos: int = BOS_ID, eos: int = EOS_ID
) -> tuple[np.ndarray, np.ndarray]:
    total = int(lengths.sum() + 2 * len(lengths))
    out = np.empty(total, dtype=np.int64)
    starts = np.zeros(len(lengths), dtype=np.int64)
    if len(lengths):
        starts[1:] = np.cumsum(lengths + 2)[:-1]
    mask = np.ones(total, dtype=bool)
    mask[starts] = False
    mask[starts + lengths + 1] = False
    out[starts] = bos
    out[starts + lengths + 1] = eos
    out[mask] = ids
    return out, starts
