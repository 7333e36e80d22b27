"""Compiled tokenisers over UTF-8 Arrow buffers that apply dcurate's normalisation on the fly.

:func:`dcurate.text.normalize.normalize` is NFKC followed by lower-casing. Running it through Unicode
libraries for every document costs more than the tokenising itself, and almost always changes
nothing but the case. The kernels here normalise while they tokenise, one code point at a time,
through a table built once per Unicode version (and cached on disk, like dedup's tables):

* a code point that NFKC leaves alone and that never composes with a neighbour maps to its
  lower-case form (dedup's "fast path", :func:`dcurate.text.utf8.fast_path_map`);
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
import unicodedata

import numpy as np
import pyarrow as pa
from numba import njit

from dcurate.text.hashing import xxh64
from dcurate.text.utf8 import (
    TABLE_LIMIT,
    buffers,
    char_classes,
    disk_cached,
    doc_span,
    fast_path_map,
    large_string_array,
)

_NFK_VERSION = 2  # bump when the table definition changes
#: Output bytes per input byte the kernels reserve: an expansion is kept in the table only when its
#: UTF-8 bytes plus one separating space per code point fit in this many times the input's bytes.
MAX_GROWTH = 4


def _second_halves() -> set[int]:
    """Code points that are the second element of a canonical two-character decomposition (so a
    preceding character can compose with them)."""
    out = set()
    for c in range(TABLE_LIMIT):
        dec = unicodedata.decomposition(chr(c))
        if dec and dec[0] != "<":
            parts = dec.split()
            if len(parts) == 2:
                out.add(int(parts[1], 16))
    out.update(range(0x1160, 0x1200))  # Hangul vowel and trailing jamo
    return out


def _build_nfk() -> np.ndarray:
    """One int32 array: ``[0:0x110000]`` the per-code-point entry (``>= 0`` the lower-case code point
    it maps to, ``-1`` exact path, ``<= -2`` expansion ``-2 - v``), then the expansions' offsets and
    code points (see :func:`nfk_tables`)."""
    import polars as pl

    fast = fast_path_map()
    table = fast.copy()
    table[TABLE_LIMIT:] = -1
    halves = _second_halves()
    exp_off = [0]
    exp_cps: list[int] = []
    cands = [
        c
        for c in range(1, TABLE_LIMIT)
        if table[c] < 0
        and not 0xD800 <= c < 0xE000
        and unicodedata.category(chr(c)) != "Cn"
        and unicodedata.combining(chr(c)) == 0
        and c not in halves
    ]
    for c in cands:
        nf = unicodedata.normalize("NFKC", chr(c))
        if nf == chr(c) or not nf:
            continue
        mapped = [int(fast[ord(d)]) for d in nf]
        if any(m < 0 for m in mapped) or ord(nf[0]) in halves or 10 in mapped:
            continue
        width = len(chr(c).encode("utf-8"))
        grown = sum(len(chr(m).encode("utf-8")) + 1 for m in mapped)
        if grown > MAX_GROWTH * width:
            continue
        table[c] = -2 - (len(exp_off) - 1)
        exp_cps.extend(mapped)
        exp_off.append(len(exp_cps))
    # Cross-check every supported code point against polars (the DSIR and fallback engine).
    cps = np.flatnonzero(table[:TABLE_LIMIT] != -1)
    cps = cps[(cps < 0xD800) | (cps >= 0xE000)]
    chars = pl.Series([chr(c) for c in cps], dtype=pl.String)
    want = chars.str.normalize("NFKC").str.to_lowercase().to_list()
    offs = np.asarray(exp_off, dtype=np.int64)
    for c, w in zip(cps.tolist(), want, strict=True):
        v = int(table[c])
        got = chr(v) if v >= 0 else "".join(chr(x) for x in exp_cps[offs[-2 - v] : offs[-1 - v]])
        py = unicodedata.normalize("NFKC", chr(c)).lower()
        if got != w or got != py:
            table[c] = -1
    table[0] = 0
    head = np.asarray([len(exp_off)], dtype=np.int32)
    return np.concatenate(
        [table, head, np.asarray(exp_off, dtype=np.int32), np.asarray(exp_cps, dtype=np.int32)]
    ).astype(np.int32)


def _polars_version() -> str:
    from importlib.metadata import version

    try:
        return version("polars")
    except Exception:  # noqa: BLE001 - a vendored polars without metadata
        import polars

        return polars.__version__


@functools.lru_cache(maxsize=1)
def nfk_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(nfk, exp_off, exp_cps)``: per code point its normalised form (see :func:`_build_nfk`);
    expansion ``k`` is ``exp_cps[exp_off[k]:exp_off[k + 1]]``."""
    # keyed by polars' version too: the table is cross-checked against its Unicode tables
    flat = disk_cached(f"nfk{_NFK_VERSION}-pl{_polars_version()}", _build_nfk)
    n = 0x110000
    table = flat[:n]
    k = int(flat[n])
    exp_off = flat[n + 1 : n + 1 + k]
    exp_cps = flat[n + 1 + k :]
    if len(exp_cps) == 0:
        exp_cps = np.zeros(1, dtype=np.int32)
    return table, exp_off, exp_cps


def _build_rust_classes() -> np.ndarray:
    import polars as pl

    cps = np.concatenate([np.arange(0, 0xD800), np.arange(0xE000, 0x110000)])
    s = pl.Series([chr(c) for c in cps], dtype=pl.String)
    word = s.str.contains(r"^\w$").to_numpy()
    space = s.str.contains(r"^\s$").to_numpy()
    cls = np.full(0x110000, 2, dtype=np.uint8)
    cls[cps[space]] = 0
    cls[cps[word]] = 1
    return cls


@functools.lru_cache(maxsize=1)
def rust_classes() -> np.ndarray:
    """uint8 per code point under the Rust regex engine (polars): 0 ``\\s``, 1 ``\\w``, 2 other."""
    return disk_cached(f"rustcls1-pl{_polars_version()}", _build_rust_classes)


@functools.lru_cache(maxsize=1)
def python_word() -> np.ndarray:
    """uint8 per code point: 1 for Python's ``\\w`` (``str.isalnum()`` or ``_``), else 0."""
    return (char_classes(False) == 1).astype(np.uint8)


# -- helpers ----------------------------------------------------------------------------------------


def string_buffers(arr) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """``(array, offsets, data)`` of the texts as a large_string array with nulls as empty
    strings (any array, polars Series or list); ``data`` is never empty (numba needs a buffer)."""
    arr = large_string_array(arr)
    offsets, data = buffers(arr)
    return arr, offsets, data


@njit(cache=True, inline="always")
def _decode(data, p):
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
def _put(out, o, m):
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
            cp, w = _decode(data, p)
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
        o = _put(out, o, m)
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
                    cp, w = _decode(data, p)
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


def _nfkc_lower(sub: pa.Array):
    # dcurate.text.normalize.normalize with CPython's unicodedata, the Unicode version the word table
    # follows; its quick check returns already-normalised text untouched.
    nf = unicodedata.normalize
    isn = unicodedata.is_normalized
    texts = [(t if isn("NFKC", t) else nf("NFKC", t)).lower() for t in sub.to_pylist()]
    return pa.array(texts, type=pa.large_string())


def ccnet_lines(texts) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """CCNet sentences of each document: per line of the normalised text, its ``\\w+`` words joined
    by one space; lines without a word are dropped.

    Returns ``(data, starts, doc, ntok)``: ``data`` holds every line followed by ``"\\n"`` (uint8),
    line ``i`` is ``data[starts[i]:starts[i + 1] - 1]``, from document ``doc[i]``, with ``ntok[i]``
    words."""
    arr, offs_a, data_a = string_buffers(texts)
    src, offs_b, data_b = _split_exact(arr, offs_a, data_a, _nfkc_lower)
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
    slen = _put(stream, slen, m)
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
            cp, w = _decode(data, p)
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
    from dcurate.text.normalize import normalize_series

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
