"""DSIR building blocks: hashed n-gram features, bag-of-n-grams models, importance weights.

Xie et al. 2023, "Data Selection for Language Models via Importance Resampling" (DSIR), with the
defaults of its reference package ``data-selection`` 1.0.3 (``HashedNgramDSIR``):

* **features**: unigrams and bigrams of the lower-cased tokens of a document, each hashed into one
  of ``num_buckets`` buckets (10,000), counted per bucket;
* **models**: the bucket counts summed over the target set and over the raw pool, normalised to
  probabilities ``p_target`` and ``p_raw``;
* **importance log-weight** of a document: ``sum_buckets count * (log(p_target + eps) - log(p_raw +
  eps))`` with ``eps = 1e-8`` (the reference's constant);
* **resampling** without replacement by the Gumbel-top-k trick: ``key = log_weight + Gumbel noise``,
  keep the k largest keys.

Two feature modes:

``fast`` (default)
    tokens = word-punct tokens of dcurate's shared normalisation (:func:`dcurate.text.normalize.normalize_series`:
    NFKC + lower-case), i.e. matches of ``\\w+|[^\\w\\s]+``: runs of word characters and runs of
    punctuation/symbols, as the reference tokenises (punctuation carries signal: mail headers,
    markup, code). Each unigram ``t`` and bigram ``"t1 t2"`` (one space) is hashed with XXH64
    (seed 0) of its UTF-8 bytes, bucket = hash mod ``num_buckets``. One compiled pass over the
    Arrow buffer normalises, tokenises and hashes (:func:`dcurate.text.scan.word_punct_ngrams`:
    the Rust regex engine's ``\\w``/``\\s`` classes, as polars' ``str.extract_all`` gives; the rare
    document NFKC cannot normalise one code point at a time is normalised by polars first).
``reference``
    bit-for-bit the reference package's features: ``nltk`` ``WordPunctTokenizer`` (regex
    ``\\w+|[^\\w\\s]+`` on ``str.lower()``, so punctuation runs are tokens too) and
    ``int(sha256(ngram).hexdigest(), 16) % num_buckets``. It is a compatibility/oracle mode: it
    hashes each distinct n-gram of a batch once with ``hashlib``, so it is much slower than
    ``fast``.

The Gumbel noise of a document is a pure function of (seed, document id): XXH64 of the id's UTF-8
bytes with the seed as XXH64 seed, top 53 bits -> ``u`` in (0, 1), ``g = -log(-log u)``. It does not
depend on sharding, worker count or batch boundaries.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

import numpy as np
import polars as pl

from dcurate.text import normalize as _text
from dcurate.text import tokenizers
from dcurate.text.keys import seeded_keys, uniform

#: Number of hash buckets (DSIR paper and ``data-selection``'s default).
DEFAULT_BUCKETS = 10_000
#: Constant the reference adds inside the logs of the log-ratio.
REFERENCE_EPS = 1e-8


#: Word-punct tokens (the reference's WordPunctTokenizer pattern), on dcurate's normalised text.
TOKEN_PATTERN = tokenizers.DSIR_TOKEN_PATTERN


def tokens_series(texts) -> pl.Series:
    """Word-punct tokens of the normalised texts (``list[str]`` series, vectorised)."""
    return tokenizers.dsir_tokens_series(texts)


# -- features ---------------------------------------------------------------------------------------


class Features(NamedTuple):
    """Hashed n-grams of a batch: ``buckets[offsets[i]:offsets[i + 1]]`` are document i's n-gram
    buckets; ``n_words[i]`` its number of tokens (words in ``fast`` mode, word-punct tokens in
    ``reference`` mode)."""

    buckets: np.ndarray  # int32
    offsets: np.ndarray  # int64, len n_docs + 1
    n_words: np.ndarray  # int64

    @property
    def n_docs(self) -> int:
        return len(self.offsets) - 1

    def doc_index(self) -> np.ndarray:
        """Document number of every entry of ``buckets``."""
        return np.repeat(np.arange(self.n_docs, dtype=np.int64), np.diff(self.offsets))


def featurize(texts, num_buckets: int = DEFAULT_BUCKETS, mode: str = "fast") -> Features:
    """Hashed unigram + bigram features of each text (see the module docstring for ``mode``)."""
    if mode == "reference":
        return _featurize_reference(texts, num_buckets)
    if mode != "fast":
        raise ValueError(f"unknown DSIR hash mode {mode!r}; use 'fast' or 'reference'")
    buckets, offsets, n_words = tokenizers.dsir_ngrams(texts, int(num_buckets))
    return Features(buckets, offsets, n_words)


def token_counts(texts) -> np.ndarray:
    """Number of word-punct tokens of each text (what ``--min-words`` and ``--tokens`` count)."""
    return tokenizers.dsir_ngrams(texts, 1, count_only=True)[2]


def _featurize_reference(texts, num_buckets: int) -> Features:
    # Compatibility mode: data-selection's get_ngram_counts, bit for bit. Python's str.lower() as the
    # reference; its tokenizer (nltk's WordPunctTokenizer, run by the `regex` engine in nltk >= 3.9)
    # agrees with polars' Rust engine on \w (both count combining marks as word characters). Each
    # distinct n-gram of the batch is hashed once with sha256 (slow; documented).
    low = pl.Series(
        [t.lower() if t is not None else "" for t in _text.as_series(texts).to_list()], dtype=pl.String
    )
    toks = low.str.extract_all(TOKEN_PATTERN).fill_null([])
    n_words = toks.list.len().to_numpy().astype(np.int64)
    df = pl.DataFrame(
        {"doc": np.repeat(np.arange(len(n_words), dtype=np.int64), n_words), "g": toks.explode()}
    )
    df = df.filter(pl.col("g").is_not_null()).with_columns(kind=pl.lit(0, pl.Int8))
    bi = (
        df.with_columns(nxt=pl.col("g").shift(-1), nd=pl.col("doc").shift(-1))
        .filter(pl.col("nd") == pl.col("doc"))
        .select("doc", g=pl.concat_str([pl.col("g"), pl.lit(" "), pl.col("nxt")]), kind=pl.lit(1, pl.Int8))
    )
    grams = pl.concat([df, bi]).sort(["doc", "kind"], maintain_order=True)
    uniq = grams.get_column("g").unique(maintain_order=True)
    hashed = [int(hashlib.sha256(g.encode("utf-8")).hexdigest(), 16) % num_buckets for g in uniq.to_list()]
    lut = pl.DataFrame({"g": uniq, "b": pl.Series(hashed, dtype=pl.Int32)})
    buckets = grams.join(lut, on="g", how="left", maintain_order="left").get_column("b").to_numpy()
    per_doc = np.where(n_words > 0, 2 * n_words - 1, 0)
    offsets = np.zeros(len(n_words) + 1, dtype=np.int64)
    np.cumsum(per_doc, out=offsets[1:])
    return Features(np.asarray(buckets, dtype=np.int32), offsets, n_words)


def ngram_counts(feats: Features, num_buckets: int, mask: np.ndarray | None = None) -> np.ndarray:
    """Bucket counts (int64) summed over the documents (those where ``mask`` is true)."""
    buckets = feats.buckets
    if mask is not None:
        keep = np.repeat(np.asarray(mask, dtype=bool), np.diff(feats.offsets))
        buckets = buckets[keep]
    return np.bincount(buckets, minlength=num_buckets).astype(np.int64)


def doc_counts(feats: Features, num_buckets: int) -> np.ndarray:
    """Per-document feature vectors, dense ``(n_docs, num_buckets)`` (small inputs and tests)."""
    out = np.zeros((feats.n_docs, num_buckets), dtype=np.int64)
    np.add.at(out, (feats.doc_index(), feats.buckets), 1)
    return out


# -- models and weights -----------------------------------------------------------------------------


def probabilities(counts: np.ndarray, laplace: float = 0.0) -> np.ndarray:
    """Bag-of-n-grams model: ``(counts + laplace) / sum``."""
    c = np.asarray(counts, dtype=np.float64) + laplace
    total = c.sum()
    if total <= 0:
        raise ValueError("no n-grams to build a model from")
    return c / total


def log_ratio(
    target_counts: np.ndarray, raw_counts: np.ndarray, laplace: float = 0.0, eps: float = REFERENCE_EPS
) -> np.ndarray:
    """Per-bucket ``log(p_target + eps) - log(p_raw + eps)``; the reference uses laplace 0, eps 1e-8."""
    pt = probabilities(target_counts, laplace)
    pr = probabilities(raw_counts, laplace)
    return np.log(pt + eps) - np.log(pr + eps)


def log_weights(feats: Features, table: np.ndarray) -> np.ndarray:
    """Importance log-weight of each document: sum of ``table[bucket]`` over its n-grams."""
    if feats.n_docs == 0:
        return np.zeros(0, dtype=np.float64)
    return np.bincount(feats.doc_index(), weights=table[feats.buckets], minlength=feats.n_docs)


def gumbel_noise(ids, seed: int) -> np.ndarray:
    """Standard Gumbel noise, one value per document id, a pure function of (seed, id)."""
    u = uniform(seeded_keys(ids, seed), open_interval=True)  # XXH64 of the id, top 53 bits -> (0, 1)
    return -np.log(-np.log(u))


def kl_divergence(p_counts: np.ndarray, q_counts: np.ndarray, smoothing: float = 1.0) -> float:
    """KL(p || q) of two bucket-count vectors, each add-``smoothing`` smoothed and normalised."""
    p = probabilities(p_counts, smoothing)
    q = probabilities(q_counts, smoothing)
    return float(np.sum(p * np.log(p / q)))
