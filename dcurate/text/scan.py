"""Compiled tokenisers over UTF-8 Arrow buffers that apply dcurate's normalisation on the fly.

:func:`dcurate.text.normalize.normalize` is NFKC followed by lower-casing. Running it through Unicode
libraries for every document costs more than the tokenising itself, and almost always changes
nothing but the case. The kernels here normalise while they tokenise, one code point at a time,
through the "expanding" table of :mod:`dcurate.text.unicode` (built once per Unicode version, cached on disk):

* a code point that NFKC leaves alone and that never composes with a neighbour maps to its
  lower-case form (the "strict" table of :mod:`dcurate.text.unicode`, dedup's fast path);
* a code point that NFKC replaces by such code points (NO-BREAK SPACE -> space, superscript two
  -> ``2``, the ellipsis -> ``...``, ligatures, full-width forms) maps to the lower-cased
  replacement, when it is a starter that no preceding character can compose with, so the
  replacement does not depend on its neighbours;
* any other code point (combining marks, Hangul jamo, final sigma, ...) sends its document to
  the exact path: the whole text is normalised by the Unicode library first and tokenised as it
  is.

Every table entry is checked against both CPython's ``unicodedata`` + ``str.lower`` and polars'
``str.normalize("NFKC").str.to_lowercase()``; a code point on which they disagree takes the exact
path. On the shared English corpus 5% of documents hold a code point outside the fast path, almost
all of them a NO-BREAK SPACE, and the extended table sends 0.4% of them to the exact path.

Two tokenisers use it:

* :func:`ccnet_lines` (perplexity, ``train-lm``): per line, the runs of word characters (Python's
  ``\\w``) joined by one space; lines without words are dropped.
* :func:`word_punct_ngrams` (DSIR): tokens ``\\w+|[^\\w\\s]+`` with the Rust regex engine's
  classes (what polars' ``str.extract_all`` gives), hashed as unigrams and space-joined bigrams.
"""

from __future__ import annotations

import functools

import numpy as np
import pyarrow as pa

from dcurate.core.jit import njit
from dcurate.text.hashing import xxh64
from dcurate.text.normalize import normalize_array, normalize_series
from dcurate.text.unicode import MAX_GROWTH, nfk_tables, python_word, rust_classes
from dcurate.text.utf8 import decode, doc_span, put_utf8, string_buffers

__all__ = [
    "MAX_GROWTH",
    "nfk_tables",
    "python_word",
    "rust_classes",
    "string_buffers",
    "ccnet_lines",
    "word_punct_ngrams",
]

# -- helpers ----------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _needs_exact(offsets, data, words, nfk):
    """Per document: does it hold a code point the table sends to the exact path? ``words`` is
    ``data`` viewed as uint64 (its first ``len(data) // 8`` words): ASCII runs are skipped eight
    bytes at a time."""
    n = offsets.shape[0] - 1
    out = np.zeros(n, dtype=np.bool_)
    high = np.uint64(0x8080808080808080)
    zero = np.uint64(0)
    nwords = words.shape[0]
    for d in range(n):
        p = offsets[d]
        hi = offsets[d + 1]
        while p < hi:
            if data[p] < 0x80:
                p += 1
                if p & 7 == 0:
                    while p + 8 <= hi and (p >> 3) < nwords and (words[p >> 3] & high) == zero:
                        p += 8
                continue
            cp, w = decode(data, p)
            p += w
            if nfk[cp] == -1:
                out[d] = True
                break
    return out


def _split_exact(arr: pa.Array, offsets: np.ndarray, data: np.ndarray, normalize):
    """The ``src`` routing of the kernels: -1 = tokenise the raw text with the table, else the row
    of the exactly normalised texts ``(offsets_b, data_b)`` (``normalize(sub_array)``)."""
    nfk, _, _ = nfk_tables()
    src = np.full(len(arr), -1, dtype=np.int64)
    words = data[: len(data) // 8 * 8].view(np.uint64)
    idx = np.flatnonzero(_needs_exact(offsets, data, words, nfk))
    if idx.size:
        norm = normalize(arr.take(pa.array(idx, type=pa.int64())))
        _, offs_b, data_b = string_buffers(norm)
        src[idx] = np.arange(idx.size, dtype=np.int64)
    else:
        offs_b = np.zeros(1, dtype=np.int64)
        data_b = np.zeros(1, dtype=np.uint8)
    return src, offs_b, data_b


# -- CCNet lines ------------------------------------------------------------------------------------


@njit(cache=True, inline="always")
def _line_cp(m, out, o, ntok, in_word, is_word):
    if is_word[m]:
        if not in_word:
            if ntok > 0:
                out[o] = 32
                o += 1
            ntok += 1
            in_word = 1
        o = put_utf8(out, o, m)
    else:
        in_word = 0
    return o, ntok, in_word


def _ascii_classes(word: np.ndarray, newline: int) -> np.ndarray:
    """Classes of the 128 ASCII bytes for the kernels' hot loop, plus 3 for every byte >= 0x80
    (and for ``newline`` when it is given)."""
    t = np.full(256, 3, dtype=np.uint8)
    t[:128] = word[:128]
    if newline >= 0:
        t[newline] = 3
    return t


#: ASCII lower-casing as a byte table.
_LOWER = np.arange(256, dtype=np.uint8)
_LOWER[65:91] += 32


@njit(cache=True, nogil=True)
def _lines_kernel(offs_a, data_a, src, offs_b, data_b, nfk, exp_off, exp_cps, is_word, acls, lower, line_cap):
    n = src.shape[0]
    out = np.empty(16, dtype=np.uint8)
    starts = np.empty(line_cap + 1, dtype=np.int64)
    ldoc = np.empty(line_cap, dtype=np.int64)
    lntok = np.empty(line_cap, dtype=np.int64)
    o = 0
    nl = 0
    starts[0] = 0
    for d in range(n):
        p, hi, mapped = doc_span(src, offs_a, offs_b, d)
        data = data_a if mapped else data_b
        need = o + 4 * (hi - p) + 8
        if need > out.shape[0]:
            bigger = np.empty(max(need, 2 * out.shape[0]), dtype=np.uint8)
            bigger[:o] = out[:o]
            out = bigger
        buf = out
        ntok = 0
        in_word = 0
        while True:
            if p < hi:
                b = data[p]
                c = np.int64(acls[b])
                if c < 3:
                    # ASCII other than newline, branch-free: a space before each word but the
                    # first of the line, the byte lower-cased when it is a word character
                    p += 1
                    start = c & (1 - in_word)
                    buf[o] = 32
                    o += start & np.int64(ntok > 0)
                    ntok += start
                    buf[o] = lower[b]
                    o += c
                    in_word = c
                    continue
                if b >= 0x80:
                    cp, w = decode(data, p)
                    p += w
                    if not mapped:
                        o, ntok, in_word = _line_cp(cp, buf, o, ntok, in_word, is_word)
                        continue
                    v = nfk[cp]
                    if v >= 0:
                        o, ntok, in_word = _line_cp(v, buf, o, ntok, in_word, is_word)
                    elif v == -1:  # not reached: such documents take the exact path
                        o, ntok, in_word = _line_cp(cp, buf, o, ntok, in_word, is_word)
                    else:
                        k = -2 - v
                        for q in range(exp_off[k], exp_off[k + 1]):
                            o, ntok, in_word = _line_cp(exp_cps[q], buf, o, ntok, in_word, is_word)
                    continue
                p += 1  # newline
            if ntok > 0:
                buf[o] = 10
                o += 1
                ldoc[nl] = d
                lntok[nl] = ntok
                nl += 1
                starts[nl] = o
            ntok = 0
            in_word = 0
            if p >= hi:
                break
    return out[:o], starts[: nl + 1], ldoc[:nl], lntok[:nl]


def ccnet_lines(texts) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """CCNet sentences of each document: per line of the normalised text, its ``\\w+`` words joined
    by one space; lines without a word are dropped.

    Returns ``(data, starts, doc, ntok)``: ``data`` holds every line followed by ``"\\n"`` (uint8),
    line ``i`` is ``data[starts[i]:starts[i + 1] - 1]``, from document ``doc[i]``, with ``ntok[i]``
    words."""
    arr, offs_a, data_a = string_buffers(texts)
    src, offs_b, data_b = _split_exact(arr, offs_a, data_a, normalize_array)
    nfk, exp_off, exp_cps = nfk_tables()
    line_cap = int(np.count_nonzero(data_a[offs_a[0] : offs_a[-1]] == 10))
    line_cap += int(np.count_nonzero(data_b[offs_b[0] : offs_b[-1]] == 10)) + len(arr) + 1
    word = python_word()
    return _lines_kernel(
        offs_a, data_a, src, offs_b, data_b, nfk, exp_off, exp_cps, word, _line_acls(), _LOWER, line_cap
    )


@functools.lru_cache(maxsize=1)
def _line_acls() -> np.ndarray:
    return _ascii_classes(python_word(), 10)


# -- word-punct n-grams (DSIR) ----------------------------------------------------------------------


@njit(cache=True, inline="always")
def _wp_cp(m, stream, slen, wstart, nw, prev, cls):
    c = np.int64(cls[m])
    if c == 0:
        return slen, nw, 0
    if c != prev:
        if nw > 0:
            stream[slen] = 32
            slen += 1
        wstart[nw] = slen
        nw += 1
    slen = put_utf8(stream, slen, m)
    return slen, nw, c


@njit(cache=True, nogil=True)
def _wp_kernel(
    offs_a, data_a, src, offs_b, data_b, nfk, exp_off, exp_cps, cls, acls, lower, num_buckets, count_only
):
    """Per document: tokens (maximal runs of one class, 1 word or 2 other, of the normalised text)
    joined by one space into a scratch stream; unigrams then bigrams hashed (XXH64, seed 0) into
    ``num_buckets``. Returns (buckets int32, per-document offsets, token counts)."""
    n = src.shape[0]
    n_tok = np.zeros(n, dtype=np.int64)
    doc_off = np.zeros(n + 1, dtype=np.int64)
    out = np.empty(16, dtype=np.int32)
    stream = np.empty(16, dtype=np.uint8)
    wstart = np.empty(16, dtype=np.int64)
    nb = np.uint64(max(num_buckets, 1))
    zero = np.uint64(0)
    pos = 0
    for d in range(n):
        p, hi, mapped = doc_span(src, offs_a, offs_b, d)
        data = data_a if mapped else data_b
        if stream.shape[0] < 4 * (hi - p) + 8:
            stream = np.empty(8 * (hi - p) + 8, dtype=np.uint8)
            wstart = np.empty(4 * (hi - p) + 4, dtype=np.int64)
        st = stream
        ws = wstart
        slen = 0
        nw = 0
        prev = 0
        while p < hi:
            b = data[p]
            c = np.int64(acls[b])
            if c < 3:
                # ASCII, branch-free: a token starts where a non-space class changes
                p += 1
                nz = np.int64(c != 0)
                start = nz & np.int64(c != prev)
                st[slen] = 32
                slen += start & np.int64(nw > 0)
                ws[nw] = slen
                nw += start
                st[slen] = lower[b]
                slen += nz
                prev = c
                continue
            cp, w = decode(data, p)
            p += w
            if not mapped:
                slen, nw, prev = _wp_cp(cp, st, slen, ws, nw, prev, cls)
                continue
            v = nfk[cp]
            if v >= 0:
                slen, nw, prev = _wp_cp(v, st, slen, ws, nw, prev, cls)
            elif v == -1:  # not reached: such documents take the exact path
                slen, nw, prev = _wp_cp(cp, st, slen, ws, nw, prev, cls)
            else:
                k = -2 - v
                for q in range(exp_off[k], exp_off[k + 1]):
                    slen, nw, prev = _wp_cp(exp_cps[q], st, slen, ws, nw, prev, cls)
        n_tok[d] = nw
        if count_only:
            continue
        m = 2 * nw - 1 if nw > 0 else 0
        if pos + m > out.shape[0]:
            bigger = np.empty(max(2 * out.shape[0], pos + m), dtype=np.int32)
            bigger[:pos] = out[:pos]
            out = bigger
        for k in range(nw):
            end = ws[k + 1] - 1 if k + 1 < nw else slen
            out[pos + k] = np.int32(xxh64(st, ws[k], end, zero) % nb)
        for k in range(nw - 1):
            end = ws[k + 2] - 1 if k + 2 < nw else slen
            out[pos + nw + k] = np.int32(xxh64(st, ws[k], end, zero) % nb)
        pos += m
        doc_off[d + 1] = pos
    return out[:pos].copy(), doc_off, n_tok


@functools.lru_cache(maxsize=1)
def _wp_acls() -> np.ndarray:
    return _ascii_classes(rust_classes(), -1)


def _nfkc_lower_polars(sub: pa.Array):
    return normalize_series(sub).to_arrow()


def word_punct_ngrams(texts, num_buckets: int, count_only: bool = False):
    """Hashed unigram + bigram buckets of the word-punct tokens of each normalised text.

    Returns ``(buckets, offsets, n_tokens)``: document ``i``'s buckets are
    ``buckets[offsets[i]:offsets[i + 1]]``, its unigrams in order then its bigrams (the tokens
    joined by one space), each ``XXH64(utf8) mod num_buckets``. With ``count_only`` only the token
    counts are computed (``buckets`` empty, ``offsets`` zeros)."""
    arr, offs_a, data_a = string_buffers(texts)
    src, offs_b, data_b = _split_exact(arr, offs_a, data_a, _nfkc_lower_polars)
    nfk, exp_off, exp_cps = nfk_tables()
    return _wp_kernel(
        offs_a,
        data_a,
        src,
        offs_b,
        data_b,
        nfk,
        exp_off,
        exp_cps,
        rust_classes(),
        _wp_acls(),
        _LOWER,
        np.int64(num_buckets),
        bool(count_only),
    )
