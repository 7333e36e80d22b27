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
    tokens = word-punct tokens of dcurate's shared normalisation (:func:`dcurate.text.normalize_series`:
    NFKC + lower-case), i.e. matches of ``\\w+|[^\\w\\s]+``: runs of word characters and runs of
    punctuation/symbols, as the reference tokenises (punctuation carries signal: mail headers,
    markup, code). Each unigram ``t`` and bigram ``"t1 t2"`` (one space) is hashed with XXH64
    (seed 0) of its UTF-8 bytes, bucket = hash mod ``num_buckets``. Pure-ASCII documents are
    tokenised and hashed in one numba pass over the Arrow buffer; the others are tokenised by
    polars' Rust regex engine (the same engine as every other dcurate stage) and hashed by numba.
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
import pyarrow as pa
from numba import njit

from . import text as _text
from .minhash import _xxh64 as _xxh64_range

#: Number of hash buckets (DSIR paper and ``data-selection``'s default).
DEFAULT_BUCKETS = 10_000
#: Constant the reference adds inside the logs of the log-ratio.
REFERENCE_EPS = 1e-8


@njit(inline="always", cache=True)
def _xxh64(buf, start, length, seed):
    """XXH64 of ``buf[start:start + length]`` (the kernel shared with dcurate.minhash)."""
    return _xxh64_range(buf, start, start + length, seed)


@njit(cache=True)
def _hash_strings(data, offsets, seed):
    n = len(offsets) - 1
    out = np.empty(n, dtype=np.uint64)
    for j in range(n):
        out[j] = _xxh64(data, offsets[j], offsets[j + 1] - offsets[j], seed)
    return out


@njit(inline="always", cache=True)
def _cls(c):
    """ASCII byte class under the Rust regex engine: 1 word (``\\w``), 0 space (``\\s``), 2 other."""
    if (c >= 97 and c <= 122) or (c >= 65 and c <= 90) or (c >= 48 and c <= 57) or c == 95:
        return 1
    if c == 32 or (c >= 9 and c <= 13):
        return 0
    return 2


@njit(cache=True)
def _ascii_token_counts(data, offsets):
    """Per document: is it pure ASCII, and if so its number of tokens (maximal runs of word
    characters or of other non-space characters: what NFKC + lower-case + ``\\w+|[^\\w\\s]+``
    gives on ASCII text)."""
    n = len(offsets) - 1
    is_ascii = np.ones(n, dtype=np.bool_)
    n_tok = np.zeros(n, dtype=np.int64)
    for d in range(n):
        prev = 0
        w = 0
        for i in range(offsets[d], offsets[d + 1]):
            c = data[i]
            if c >= 128:
                is_ascii[d] = False
                break
            k = _cls(c)
            if k != 0 and k != prev:
                w += 1
            prev = k
        n_tok[d] = w if is_ascii[d] else 0
    return is_ascii, n_tok


@njit(cache=True)
def _ascii_buckets(data, offsets, docs, doc_off, n_tok, num_buckets, out):
    """Write the n-gram buckets of the ASCII documents ``docs`` into ``out`` at ``doc_off``: the
    unigrams of a document in order, then its bigrams (lower-cased tokens joined by one space)."""
    nb = np.uint64(num_buckets)
    zero = np.uint64(0)
    scratch = np.empty(64, dtype=np.uint8)
    for d in docs:
        o_uni = doc_off[d]
        o_bi = o_uni + n_tok[d]
        prev_len = -1  # length of the previous token, kept at scratch[0:prev_len]
        i = offsets[d]
        end = offsets[d + 1]
        while i < end:
            k = _cls(data[i])
            if k == 0:
                i += 1
                continue
            j = i + 1
            while j < end and _cls(data[j]) == k:
                j += 1
            ln = j - i
            base = prev_len + 1 if prev_len >= 0 else 0  # the token goes after "prev "
            need = base + ln
            if need > len(scratch):
                bigger = np.empty(2 * need, dtype=np.uint8)
                bigger[:base] = scratch[:base]
                scratch = bigger
            for q in range(ln):
                c = data[i + q]
                scratch[base + q] = c + 32 if (c >= 65 and c <= 90) else c
            out[o_uni] = np.int32(_xxh64(scratch, base, ln, zero) % nb)
            o_uni += 1
            if prev_len >= 0:
                out[o_bi] = np.int32(_xxh64(scratch, 0, need, zero) % nb)
                o_bi += 1
            # the current token becomes the previous one
            for q in range(ln):
                scratch[q] = scratch[base + q]
            scratch[ln] = 32
            prev_len = ln
            i = j
    return out


@njit(cache=True)
def _list_buckets(data, str_off, list_off, docs, doc_off, num_buckets, out):
    """Like :func:`_ascii_buckets` for already tokenised documents: document ``docs[r]``'s words
    are strings ``list_off[r]:list_off[r + 1]`` of (``data``, ``str_off``)."""
    maxlen = 0
    for j in range(len(str_off) - 1):
        ln = str_off[j + 1] - str_off[j]
        if ln > maxlen:
            maxlen = ln
    scratch = np.empty(2 * maxlen + 1, dtype=np.uint8)
    nb = np.uint64(num_buckets)
    zero = np.uint64(0)
    for r in range(len(docs)):
        a = list_off[r]
        b = list_off[r + 1]
        o = doc_off[docs[r]]
        for j in range(a, b):
            out[o] = np.int32(_xxh64(data, str_off[j], str_off[j + 1] - str_off[j], zero) % nb)
            o += 1
        for j in range(a, b - 1):
            s1 = str_off[j]
            l1 = str_off[j + 1] - s1
            s2 = str_off[j + 1]
            l2 = str_off[j + 2] - s2
            for c in range(l1):
                scratch[c] = data[s1 + c]
            scratch[l1] = 32  # one space between the two words
            for c in range(l2):
                scratch[l1 + 1 + c] = data[s2 + c]
            out[o] = np.int32(_xxh64(scratch, 0, l1 + 1 + l2, zero) % nb)
            o += 1
    return out


def _string_buffers(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(UTF-8 bytes, int64 offsets) of a string array; nulls read as empty strings."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    if not pa.types.is_large_string(arr.type):
        arr = arr.cast(pa.large_string())
    if arr.null_count:
        arr = arr.fill_null("")
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset : arr.offset + len(arr) + 1]
    data_buf = arr.buffers()[2]
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    return data, offsets


def hash_strings(values: pa.Array | pa.ChunkedArray | list[str], seed: int = 0) -> np.ndarray:
    """XXH64 (uint64) of each string's UTF-8 bytes with ``seed``; nulls hash as ``""``."""
    if isinstance(values, list):
        values = pa.array(values, type=pa.large_string())
    data, offsets = _string_buffers(values)
    return _hash_strings(data, offsets, np.uint64(seed & 0xFFFFFFFFFFFFFFFF))


#: Word-punct tokens (the reference's WordPunctTokenizer pattern), on dcurate's normalised text.
TOKEN_PATTERN = r"\w+|[^\w\s]+"


def tokens_series(texts) -> pl.Series:
    """Word-punct tokens of the normalised texts (``list[str]`` series, vectorised)."""
    return _text.normalize_series(texts).str.extract_all(TOKEN_PATTERN).fill_null([])


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
    arr = (
        texts
        if isinstance(texts, (pa.Array, pa.ChunkedArray))
        else pa.array(list(texts), type=pa.large_string())
    )
    data, offsets = _string_buffers(arr)
    # Pure-ASCII documents (NFKC and lower-casing are trivial there) are tokenised and hashed in one
    # numba pass; the others go through polars. Both give the same tokens.
    is_ascii, n_words = _ascii_token_counts(data, offsets)
    other = np.flatnonzero(~is_ascii)
    lists = None
    if len(other):
        sub = arr.take(pa.array(other)) if len(other) < len(arr) else arr
        lists = tokens_series(sub).to_arrow(compat_level=pl.CompatLevel.oldest())
        if isinstance(lists, pa.ChunkedArray):
            lists = lists.combine_chunks()
        list_off = lists.offsets.to_numpy().astype(np.int64, copy=False)
        n_words[other] = np.diff(list_off)
    per_doc = np.where(n_words > 0, 2 * n_words - 1, 0)
    doc_off = np.zeros(len(n_words) + 1, dtype=np.int64)
    np.cumsum(per_doc, out=doc_off[1:])
    out = np.empty(int(doc_off[-1]), dtype=np.int32)
    _ascii_buckets(data, offsets, np.flatnonzero(is_ascii), doc_off, n_words, np.int64(num_buckets), out)
    if lists is not None:
        wdata, str_off = _string_buffers(lists.values)
        _list_buckets(wdata, str_off, list_off, other, doc_off, np.int64(num_buckets), out)
    return Features(out, doc_off, n_words)


def token_counts(texts) -> np.ndarray:
    """Number of word-punct tokens of each text (what ``--min-words`` and ``--tokens`` count)."""
    arr = (
        texts
        if isinstance(texts, (pa.Array, pa.ChunkedArray))
        else pa.array(list(texts), type=pa.large_string())
    )
    data, offsets = _string_buffers(arr)
    is_ascii, n = _ascii_token_counts(data, offsets)
    other = np.flatnonzero(~is_ascii)
    if len(other):
        sub = arr.take(pa.array(other)) if len(other) < len(arr) else arr
        n[other] = _text.normalize_series(sub).str.count_matches(TOKEN_PATTERN).fill_null(0).to_numpy()
    return n


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
    h = hash_strings(ids, seed)
    u = ((h >> np.uint64(11)).astype(np.float64) + 0.5) * (1.0 / 9007199254740992.0)  # (0, 1)
    return -np.log(-np.log(u))


def kl_divergence(p_counts: np.ndarray, q_counts: np.ndarray, smoothing: float = 1.0) -> float:
    """KL(p || q) of two bucket-count vectors, each add-``smoothing`` smoothed and normalised."""
    p = probabilities(p_counts, smoothing)
    q = probabilities(q_counts, smoothing)
    return float(np.sum(p * np.log(p / q)))
