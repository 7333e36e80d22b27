"""MinHash / LSH core used by ``dcurate dedup``: shingles, signatures, banding, Jaccard.

Everything here works on whole batches of documents (numba kernels over Arrow buffers); the
dedup stage (:mod:`dcurate.stages.dedup.stage`) builds partitions, clusters and keep policies on top.

Pipeline and public API
-----------------------
1. :func:`shingle_hashes` ``(texts, ngram=5, hash="xxh64", cjk_chars=True) -> (offsets, hashes)``
   Per document the *set* of hashed word n-gram shingles: ``hashes[offsets[i]:offsets[i+1]]`` are
   document ``i``'s shingle hashes, sorted ascending and unique (``np.uint64``; ``np.uint32`` with
   ``hash="xxh32"``). ``offsets`` is ``np.int64[n+1]``.

   * Words: the text is normalised as :func:`dcurate.text.normalize.normalize` (NFKC, then lower-case;
     pure-ASCII documents skip NFKC, which leaves ASCII unchanged) and cut into runs of Unicode
     word characters (``\\w+`` with Python ``re``'s definition of ``\\w``: ``str.isalnum()`` or
     ``_``), exactly the tokenisation of the ground truth in ``../shared/corpus/dedup``.
   * Shingle ``k`` of a document with ``L >= ngram`` words is the string
     ``" ".join(words[k:k+ngram])``; a document with ``1 <= L < ngram`` words has one shingle,
     ``" ".join(words)``; a document with no word (empty, whitespace or punctuation only, null)
     has **no shingle** (``offsets[i] == offsets[i+1]``).
   * The hash of a shingle is ``xxhash.xxh64_intdigest(shingle.encode("utf-8"), seed=0)`` (or
     ``xxh32_intdigest``), bit for bit, so the exact Jaccard of two hash sets equals the Jaccard of
     the shingle strings except for 64-bit hash collisions.
   * Scripts written without spaces (``cjk_chars=True``, the default): ``\\w+`` would make a
     whole run of Han / Hiragana / Katakana / Thai / Lao / Khmer / Myanmar characters one "word"
     (a clause or a whole sentence), so one changed character would change every shingle that
     touches the sentence. With ``cjk_chars`` each word character of these scripts is a token of
     its own (character n-grams, joined by one space in the shingle string), while runs of other
     word characters stay words; ``"東京abc"`` gives tokens ``東, 京, abc``. Text without such
     characters (e.g. the English benchmark) is unaffected. ``cjk_chars=False`` gives plain
     ``\\w+`` everywhere. Korean Hangul is written with spaces and is left as words.

2. :func:`signatures` ``(offsets, hashes, num_perm=128, seed=1, scheme="affine32") -> [n, num_perm]``
   MinHash signatures, bit-identical to ``datasketch.MinHash(num_perm, seed, hashfunc=f,
   scheme=scheme)`` updated with the same shingles, where ``f(shingle)`` returns the shingle's
   hash **as the scheme takes it**: the low 32 bits (``h & 0xFFFFFFFF``) for ``"affine32"`` and
   ``"legacy"`` (datasketch's contract: their hash functions return 32-bit values; its default is
   ``sha1_hash32``), the full 64 bits for ``"affine64"``. Dtypes are datasketch's: ``uint32``
   for affine32, ``uint64`` for legacy (values < 2**32) and affine64. A document with no shingle
   gets the scheme's maximum value in every slot (what an un-updated ``datasketch.MinHash``
   holds), so all empty documents share one signature: callers must not band them (the dedup
   stage treats them separately; their exact Jaccard is 0 by the ground-truth definition).

   Defaults: ``num_perm=128`` (datasketch's default; 128 one-permutation minima estimate J with
   standard error sqrt(J(1-J)/128) <= 0.044, and leave room for the banding rule below);
   ``seed=1`` (datasketch's default, so default sketches are comparable); ``scheme="affine32"``
   (datasketch 2.x's default: a MurmurHash3 32-bit finalizer then ``a*h+b mod 2**32`` with odd
   ``a``, a bijection, so the permutation adds no collisions; half the memory of legacy and no
   modulo). ``"legacy"`` (``(a*h+b) mod (2**61-1)`` truncated to 32 bits, datasketch < 2 and
   datatrove) is kept for compatibility with existing sketches.

3. Banding. :func:`choose_bands` ``(threshold, num_perm, min_recall=0.95) -> (bands, rows)``:
   among all ``bands * rows <= num_perm``, keep those whose candidate probability at
   ``J = threshold`` is at least ``min_recall``, and take the one with the smallest candidate
   volume, measured as datasketch's false-positive area ``int_0^threshold P(J) dJ`` (the
   expected share of pairs below the threshold that become candidates, for J uniform on
   [0, threshold]); ties go to fewer permutations, then fewer bands (less band-key storage).
   Candidates are verified afterwards, so false positives only cost time, while a missed pair is
   lost for good. :func:`classic_bands` is datasketch's rule (minimise the weighted sum of
   false-positive and false-negative areas), which at 0.8 and 128 permutations picks 9 x 13 with
   P(candidate | J = 0.8) = 0.40. :func:`candidate_probability` is ``1 - (1 - J**r)**b`` and
   :func:`s_curve` / :func:`format_s_curve` tabulate it from threshold - 0.2 to threshold + 0.2.

4. :func:`band_keys` ``(signatures, bands, rows) -> np.uint64[n, bands]``: a 64-bit hash of each
   band's ``rows`` signature values with the band index mixed in (equal values in different
   bands give different keys). Two documents are candidates when they share a key in one band.

5. Jaccard: :func:`estimate_jaccard` (share of equal signature slots), :func:`exact_jaccard`
   (two sorted unique hash arrays) and :func:`exact_jaccard_pairs` (many candidate pairs of one
   ``(offsets, hashes)`` batch at once, numba). ``J = |A & B| / |A | B|``, 0 when both are empty.

Determinism: no state and no randomness besides the seeded permutation parameters; results depend
only on the text, never on batching, sharding or worker count.
"""

from __future__ import annotations

import functools
import unicodedata

import numpy as np
import pyarrow as pa

from dcurate.core.jit import njit
from dcurate.stages.dedup import small
from dcurate.stages.dedup.small import reference_shingles
from dcurate.text.hashing import (
    P64_1,
    P64_4,
    P64_5,
    fmix32,
    fmix64,
    rotl64,
    sort_hashes,
    xxh32,
    xxh64,
    xxh64_round,
)
from dcurate.text.normalize import normalize_array
from dcurate.text.unicode import char_classes, fast_path_map
from dcurate.text.utf8 import (
    buffers,
    decode,
    doc_span,
    large_string_array,
    needs_normalization,
    put_utf8,
)

__all__ = [
    "DEFAULT_NGRAM",
    "DEFAULT_NUM_PERM",
    "DEFAULT_SEED",
    "DEFAULT_SCHEME",
    "SCHEMES",
    "HASHES",
    "shingle_hashes",
    "reference_shingles",
    "signatures",
    "empty_signature",
    "permutations",
    "estimate_jaccard",
    "exact_jaccard",
    "exact_jaccard_pairs",
    "candidate_probability",
    "false_positive_area",
    "false_negative_area",
    "choose_bands",
    "classic_bands",
    "s_curve",
    "format_s_curve",
    "band_keys",
]

DEFAULT_NGRAM = 5  # word 5-grams: the ground truth's definition, datatrove's and FineWeb's default
DEFAULT_NUM_PERM = 128  # datasketch's default number of permutations
DEFAULT_SEED = 1  # datasketch's default seed
DEFAULT_SCHEME = "affine32"  # datasketch 2.x's default permutation scheme
SCHEMES = ("affine32", "legacy", "affine64")
HASHES = ("xxh64", "xxh32")

_MERSENNE = np.uint64((1 << 61) - 1)
_SCHEME_DTYPE: dict[str, type[np.uint32] | type[np.uint64]] = {"affine32": np.uint32, "legacy": np.uint64, "affine64": np.uint64}
_SCHEME_MAX = {"affine32": (1 << 32) - 1, "legacy": (1 << 32) - 1, "affine64": (1 << 64) - 1}


# --------------------------------------------------------------------------------------------
# Shingles (numba kernel; UTF-8 tables in dcurate.text.utf8, hashes in dcurate.text.hashing)
# --------------------------------------------------------------------------------------------


@njit(cache=True)
def _shingle_kernel(offs_a, data_a, src, offs_b, data_b, cp_map, cls, ngram, use32, cap):
    """Tokenise, join the tokens by one space into a scratch stream and hash every n-gram slice
    of the stream; per document sort + unique.

    Document ``d`` is read from ``data_a`` when ``src[d] < 0`` (raw text made only of fast-path
    code points: ``cp_map`` gives each one's lower-case form, NFKC leaves it unchanged), else
    from ``data_b`` row ``src[d]`` (text already normalised by :func:`dcurate.text.normalize.normalize`, whose
    code points outside the fast path are kept as they are)."""
    n = src.shape[0]
    out_off = np.zeros(n + 1, dtype=np.int64)
    out = np.empty(max(cap, 16), dtype=np.uint64)
    stream = np.empty(64, dtype=np.uint8)
    wstart = np.empty(32, dtype=np.int64)
    tmp = np.empty(32, dtype=np.uint64)
    cnt = np.zeros((1 << 20) + 1, dtype=np.int64)
    pos = 0
    seed = np.uint64(0)
    for d in range(n):
        lo, hi, raw = doc_span(src, offs_a, offs_b, d)
        data = data_a if raw else data_b
        nbytes = hi - lo
        if stream.shape[0] < 2 * nbytes + 2:
            stream = np.empty(2 * nbytes + 2, dtype=np.uint8)
        if wstart.shape[0] < nbytes // 2 + 2:
            wstart = np.empty(nbytes // 2 + 2, dtype=np.int64)
        # --- tokenise into stream
        slen = 0
        nw = 0
        in_word = False
        p = lo
        while p < hi:
            b0 = data[p]
            if b0 < 0x80:
                # ASCII: word bytes are [0-9A-Za-z_]; lower-case A-Z inline
                if cls[b0] == 0:
                    in_word = False
                else:
                    if not in_word:
                        if nw > 0:
                            stream[slen] = 32
                            slen += 1
                        wstart[nw] = slen
                        nw += 1
                        in_word = True
                    stream[slen] = b0 + 32 if 65 <= b0 <= 90 else b0
                    slen += 1
                p += 1
                continue
            cp, size = decode(data, p)
            p += size
            m = np.int64(cp_map[cp])
            if m < 0:
                m = cp
            c = cls[m]
            if c == 0:
                in_word = False
                continue
            if c == 2 or not in_word:
                if nw > 0:
                    stream[slen] = 32
                    slen += 1
                wstart[nw] = slen
                nw += 1
                in_word = c == 1
            slen = put_utf8(stream, slen, m)
        # --- hash shingles
        if nw == 0:
            out_off[d + 1] = pos
            continue
        m = nw - ngram + 1 if nw >= ngram else 1
        if pos + m > out.shape[0]:
            new = np.empty(max(2 * out.shape[0], pos + m), dtype=np.uint64)
            new[:pos] = out[:pos]
            out = new
        span = ngram if nw >= ngram else nw
        for k in range(m):
            e = k + span
            end = wstart[e] - 1 if e < nw else slen
            if use32:
                out[pos + k] = xxh32(stream, wstart[k], end, seed)
            else:
                out[pos + k] = xxh64(stream, wstart[k], end, seed)
        seg = out[pos : pos + m]
        if tmp.shape[0] < m:
            tmp = np.empty(m, dtype=np.uint64)
        sort_hashes(seg, tmp, cnt)
        u = 1
        for k in range(1, m):
            if seg[k] != seg[u - 1]:
                seg[u] = seg[k]
                u += 1
        pos += u
        out_off[d + 1] = pos
    return out_off, out[:pos].copy()


#: Where compatibility characters live (Latin-1, general punctuation to enclosed alphanumerics,
#: CJK symbols and compatibility, half- and full-width forms); other code points are not mapped.
_COMPAT_RANGES = ((0x80, 0x2500), (0x3000, 0x3400), (0xFE30, 0xFFF0))


@functools.lru_cache(maxsize=1)
def shingle_map() -> np.ndarray:
    """The fast-path map (:func:`dcurate.text.unicode.fast_path_map`) extended, for the shingle
    kernel, with code points off the fast path whose NFKC form

    * is one fast-path code point ``d`` (e.g. ``²`` -> ``2``, ``µ`` -> ``μ``): mapped to ``d``'s
      lower-case form, as the fast path maps ``d`` itself;
    * or only fast-path non-word characters (no-break and other spaces, ``…`` -> ``...``): mapped
      to a space, which splits words as they do.

    A text made of fast-path and such code points has no character that composes with or reorders
    around another after NFKC's decomposition (every one is a starter that is no second half of a
    composition), so its NFKC + lower-case is the per-character mapping, and its words -- all the
    kernel takes from it -- are those of the full normalisation. Such texts (most of the ones with a
    no-break space) then skip CPython's normaliser; the tests compare the kernel with the reference."""
    base = fast_path_map()
    out = base.copy()
    words = char_classes(False)
    nfkc = unicodedata.normalize
    for lo, hi in _COMPAT_RANGES:
        for cp in range(lo, hi):
            if base[cp] >= 0 or not unicodedata.decomposition(chr(cp)):
                continue
            form = [ord(c) for c in nfkc("NFKC", chr(cp))]
            if any(c >= len(base) or base[c] < 0 for c in form):
                continue
            if len(form) == 1:
                out[cp] = base[form[0]]
            elif all(words[c] == 0 for c in form):
                out[cp] = 0x20
    out.setflags(write=False)
    return out


def shingle_hashes(
    texts, ngram: int = DEFAULT_NGRAM, hash: str = "xxh64", *, cjk_chars: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Hashed shingle sets of a batch of documents (see the module docstring for the definition).

    Args:
        texts: ``pa.Array``/``pa.ChunkedArray`` of strings, a polars ``Series`` or a list of
            ``str`` (``None`` counts as empty).
        ngram: words per shingle (>= 1).
        hash: ``"xxh64"`` (``np.uint64`` hashes, the default) or ``"xxh32"`` (``np.uint32``).
        cjk_chars: tokenise Han/Kana/Thai/Lao/Khmer/Myanmar one character at a time.

    Returns:
        ``(offsets, hashes)``: ``offsets`` ``np.int64[n + 1]``; document ``i``'s sorted unique
        shingle hashes are ``hashes[offsets[i]:offsets[i + 1]]``.
    """
    if ngram < 1:
        raise ValueError(f"ngram must be >= 1, got {ngram}")
    if hash not in HASHES:
        raise ValueError(f"hash must be one of {', '.join(HASHES)}; got {hash!r}")
    arr = large_string_array(texts)
    offs_a, data_a = buffers(arr)
    if int(offs_a[-1] - offs_a[0]) <= small.SMALL_TEXT_BYTES:
        return small.shingle_hashes(arr.to_pylist(), int(ngram), hash == "xxh32", bool(cjk_chars))
    cp_map = shingle_map()
    src = np.full(len(arr), -1, dtype=np.int64)
    idx = np.flatnonzero(needs_normalization(offs_a, data_a, cp_map))
    if idx.size:

        # CPython's unicodedata + str.lower, the definition the word table follows (polars' Rust
        # crates can know a newer Unicode version: a letter unassigned for Python would become a word)
        norm = normalize_array(arr.take(pa.array(idx, type=pa.int64())))
        offs_b, data_b = buffers(norm)
        src[idx] = np.arange(idx.size, dtype=np.int64)
    else:
        offs_b = np.frombuffer(np.zeros(1, np.int64).tobytes(), dtype=np.int64)
        data_b = np.frombuffer(b"\x00", dtype=np.uint8)
    cls = char_classes(bool(cjk_chars))
    cap = int(offs_a[-1] - offs_a[0]) // 5 + len(arr) + 16
    offsets, hashes = _shingle_kernel(
        offs_a, data_a, src, offs_b, data_b, cp_map, cls, int(ngram), hash == "xxh32", cap
    )
    if hash == "xxh32":
        hashes = hashes.astype(np.uint32)
    return offsets, hashes


# --------------------------------------------------------------------------------------------
# Signatures
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=32)
def _perm_cached(num_perm: int, seed: int, scheme: str) -> tuple[np.ndarray, np.ndarray]:
    gen = np.random.RandomState(seed)
    if scheme == "legacy":
        ab = np.array(
            [
                (gen.randint(1, _MERSENNE, dtype=np.uint64), gen.randint(0, _MERSENNE, dtype=np.uint64))
                for _ in range(num_perm)
            ],
            dtype=np.uint64,
        ).T
        a, b = ab[0].copy(), ab[1].copy()
    else:
        width = 32 if scheme == "affine32" else 64
        dt = _SCHEME_DTYPE[scheme]
        a = gen.randint(0, 1 << (width - 1), num_perm, dtype=dt) * dt(2) + dt(1)
        b = gen.randint(0, 1 << width, num_perm, dtype=dt)
    a.setflags(write=False)
    b.setflags(write=False)
    return a, b


def permutations(num_perm: int = DEFAULT_NUM_PERM, seed: int = DEFAULT_SEED, scheme: str = DEFAULT_SCHEME):
    """datasketch's permutation parameters ``(a, b)`` for (num_perm, seed, scheme) (read-only)."""
    _check_scheme(scheme)
    if num_perm < 1:
        raise ValueError(f"num_perm must be >= 1, got {num_perm}")
    return _perm_cached(int(num_perm), int(seed), scheme)


def _check_scheme(scheme: str) -> None:
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {', '.join(SCHEMES)}; got {scheme!r}")


@njit(cache=True)
def _sig_affine32(offsets, hashes, a, b):
    n = offsets.shape[0] - 1
    k = a.shape[0]
    out = np.full((n, k), np.uint32(0xFFFFFFFF), dtype=np.uint32)
    for d in range(n):
        row = out[d]
        for i in range(offsets[d], offsets[d + 1]):
            x = np.uint32(fmix32(np.uint64(hashes[i]) & np.uint64(0xFFFFFFFF)))
            for j in range(k):
                v = np.uint32(a[j] * x + b[j])
                if v < row[j]:
                    row[j] = v
    return out


@njit(cache=True)
def _sig_legacy(offsets, hashes, a, b):
    n = offsets.shape[0] - 1
    k = a.shape[0]
    out = np.full((n, k), np.uint64(0xFFFFFFFF), dtype=np.uint64)
    prime = np.uint64((1 << 61) - 1)
    for d in range(n):
        row = out[d]
        for i in range(offsets[d], offsets[d + 1]):
            x = np.uint64(hashes[i]) & np.uint64(0xFFFFFFFF)
            for j in range(k):
                v = a[j] * x + b[j]  # wraps mod 2**64, as datasketch's uint64 arithmetic
                v = (v & prime) + (v >> np.uint64(61))  # v mod (2**61 - 1), then < 2 * prime
                if v >= prime:
                    v -= prime
                v &= np.uint64(0xFFFFFFFF)
                if v < row[j]:
                    row[j] = v
    return out


@njit(cache=True)
def _sig_affine64(offsets, hashes, a, b):
    n = offsets.shape[0] - 1
    k = a.shape[0]
    out = np.full((n, k), np.uint64(0xFFFFFFFFFFFFFFFF), dtype=np.uint64)
    for d in range(n):
        row = out[d]
        for i in range(offsets[d], offsets[d + 1]):
            x = fmix64(np.uint64(hashes[i]))
            for j in range(k):
                v = a[j] * x + b[j]
                if v < row[j]:
                    row[j] = v
    return out


def signatures(
    offsets: np.ndarray,
    hashes: np.ndarray,
    num_perm: int = DEFAULT_NUM_PERM,
    seed: int = DEFAULT_SEED,
    scheme: str = DEFAULT_SCHEME,
) -> np.ndarray:
    """MinHash signatures ``[n, num_perm]`` of the shingle sets ``(offsets, hashes)``.

    Bit-identical to datasketch's MinHash (see the module docstring for the hash each scheme
    takes and for empty documents). ``uint32`` for affine32, ``uint64`` for legacy/affine64.
    """
    a, b = permutations(num_perm, seed, scheme)
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    hashes = np.ascontiguousarray(hashes)
    if hashes.dtype not in (np.uint64, np.uint32):
        hashes = hashes.astype(np.uint64)
    if len(hashes) <= small.SMALL_HASHES:
        return small.signatures(offsets, hashes, a, b, scheme)
    if scheme == "affine32":
        return _sig_affine32(offsets, hashes, a, b)
    if scheme == "legacy":
        return _sig_legacy(offsets, hashes, a, b)
    return _sig_affine64(offsets, hashes, a, b)


def empty_signature(num_perm: int = DEFAULT_NUM_PERM, scheme: str = DEFAULT_SCHEME) -> np.ndarray:
    """The signature of a document with no shingle (all slots at the scheme's maximum)."""
    _check_scheme(scheme)
    return np.full(num_perm, _SCHEME_MAX[scheme], dtype=_SCHEME_DTYPE[scheme])


# --------------------------------------------------------------------------------------------
# Jaccard
# --------------------------------------------------------------------------------------------


def estimate_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> np.ndarray | float:
    """Share of equal slots: the MinHash estimate of J (row-wise for 2-D inputs)."""
    sig_a = np.asarray(sig_a)
    sig_b = np.asarray(sig_b)
    if sig_a.shape[-1] != sig_b.shape[-1]:
        raise ValueError(f"signatures differ in length: {sig_a.shape[-1]} vs {sig_b.shape[-1]}")
    eq = np.mean(sig_a == sig_b, axis=-1)
    return float(eq) if np.ndim(eq) == 0 else eq


def exact_jaccard(hashes_a: np.ndarray, hashes_b: np.ndarray) -> float:
    """Exact Jaccard of two sorted unique hash arrays (0.0 when both are empty)."""
    na, nb = len(hashes_a), len(hashes_b)
    if na + nb == 0:
        return 0.0
    inter = np.intersect1d(hashes_a, hashes_b, assume_unique=True).size
    return inter / (na + nb - inter)


@njit(cache=True)
def _pairs_kernel(offsets, hashes, left, right):
    m = left.shape[0]
    out = np.zeros(m, dtype=np.float64)
    for q in range(m):
        i0 = offsets[left[q]]
        i1 = offsets[left[q] + 1]
        j0 = offsets[right[q]]
        j1 = offsets[right[q] + 1]
        na = i1 - i0
        nb = j1 - j0
        if na + nb == 0:
            continue
        inter = 0
        while i0 < i1 and j0 < j1:
            x = hashes[i0]
            y = hashes[j0]
            if x == y:
                inter += 1
                i0 += 1
                j0 += 1
            elif x < y:
                i0 += 1
            else:
                j0 += 1
        out[q] = inter / (na + nb - inter)
    return out


def exact_jaccard_pairs(offsets: np.ndarray, hashes: np.ndarray, left, right) -> np.ndarray:
    """Exact Jaccard of documents ``left[q]`` and ``right[q]`` of one ``(offsets, hashes)`` set
    (indices into the documents); ``np.float64[len(left)]``."""
    left = np.ascontiguousarray(left, dtype=np.int64)
    right = np.ascontiguousarray(right, dtype=np.int64)
    if left.shape != right.shape:
        raise ValueError("left and right must have the same length")
    return _pairs_kernel(
        np.ascontiguousarray(offsets, dtype=np.int64), np.ascontiguousarray(hashes), left, right
    )


# --------------------------------------------------------------------------------------------
# Banding
# --------------------------------------------------------------------------------------------


def candidate_probability(j, bands: int, rows: int):
    """P(two documents of Jaccard ``j`` share a band) = 1 - (1 - j**rows)**bands."""
    j = np.asarray(j, dtype=np.float64)
    p = 1.0 - (1.0 - j**rows) ** bands
    return float(p) if p.ndim == 0 else p


@functools.lru_cache(maxsize=16)
def _legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.polynomial.legendre.leggauss(n)


def _gauss(lo: float, hi: float, degree: int) -> tuple[np.ndarray, np.ndarray]:
    # Gauss-Legendre with n nodes is exact for polynomials of degree <= 2n - 1; P(J) has degree b*r.
    x, w = _legendre(max(8, degree // 2 + 2))
    return 0.5 * (hi - lo) * x + 0.5 * (hi + lo), 0.5 * (hi - lo) * w


def _fp_fn_areas(threshold: float, bands, rows) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised false-positive and false-negative areas for arrays of (bands, rows)."""
    bands = np.asarray(bands, dtype=np.float64)[:, None]
    rows = np.asarray(rows, dtype=np.float64)[:, None]
    degree = int(np.max(bands * rows)) if bands.size else 1
    x0, w0 = _gauss(0.0, threshold, degree)
    x1, w1 = _gauss(threshold, 1.0, degree)
    fp = (1.0 - (1.0 - x0[None, :] ** rows) ** bands) @ w0
    fn = ((1.0 - x1[None, :] ** rows) ** bands) @ w1
    return fp, fn


def false_positive_area(threshold: float, bands: int, rows: int) -> float:
    """``int_0^threshold P(J) dJ`` (datasketch's false-positive probability), exact quadrature."""
    return float(_fp_fn_areas(threshold, [bands], [rows])[0][0])


def false_negative_area(threshold: float, bands: int, rows: int) -> float:
    """``int_threshold^1 (1 - P(J)) dJ`` (datasketch's false-negative probability)."""
    return float(_fp_fn_areas(threshold, [bands], [rows])[1][0])


def _check_threshold(threshold: float, num_perm: int) -> None:
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    if num_perm < 2:
        raise ValueError(f"num_perm must be >= 2, got {num_perm}")


def _all_splits(num_perm: int) -> tuple[np.ndarray, np.ndarray]:
    bs, rs = [], []
    for r in range(1, num_perm + 1):
        b = np.arange(1, num_perm // r + 1)
        bs.append(b)
        rs.append(np.full(b.size, r))
    return np.concatenate(bs), np.concatenate(rs)


def choose_bands(
    threshold: float, num_perm: int = DEFAULT_NUM_PERM, min_recall: float = 0.95
) -> tuple[int, int]:
    """(bands, rows) with P(candidate | J = threshold) >= ``min_recall`` and the smallest
    false-positive area (ties: fewer permutations used, then fewer bands). If no split reaches
    ``min_recall``, the one with the highest P at the threshold (then the fewest bands)."""
    _check_threshold(threshold, num_perm)
    if not 0.0 < min_recall < 1.0:
        raise ValueError(f"min_recall must be in (0, 1), got {min_recall}")
    bs, rs = _all_splits(num_perm)
    p = 1.0 - (1.0 - threshold ** rs.astype(np.float64)) ** bs
    ok = p >= min_recall
    if not ok.any():
        i = np.lexsort((bs, -p))[0]
        return int(bs[i]), int(rs[i])
    bs, rs = bs[ok], rs[ok]
    fp, _ = _fp_fn_areas(threshold, bs, rs)
    i = np.lexsort((bs, bs * rs, np.round(fp, 12)))[0]
    return int(bs[i]), int(rs[i])


def classic_bands(
    threshold: float,
    num_perm: int = DEFAULT_NUM_PERM,
    false_positive_weight: float = 0.5,
    false_negative_weight: float = 0.5,
) -> tuple[int, int]:
    """datasketch ``MinHashLSH``'s rule: minimise the weighted sum of the false-positive and
    false-negative areas over ``bands * rows <= num_perm`` (for comparison; low recall at the
    threshold itself). Ties go to the split datasketch visits first (fewer bands, then fewer rows)."""
    _check_threshold(threshold, num_perm)
    bs, rs = _all_splits(num_perm)
    fp, fn = _fp_fn_areas(threshold, bs, rs)
    err = false_positive_weight * fp + false_negative_weight * fn
    i = np.lexsort((rs, bs, err))[0]
    return int(bs[i]), int(rs[i])


def s_curve(
    threshold: float, bands: int, rows: int, span: float = 0.2, step: float = 0.05
) -> list[tuple[float, float]]:
    """``[(J, P(candidate | J))]`` for J from threshold - span to threshold + span (clipped to [0, 1])."""
    k = int(round(span / step))
    out = []
    for i in range(-k, k + 1):
        j = round(threshold + i * step, 10)
        if 0.0 <= j <= 1.0:
            out.append((j, candidate_probability(j, bands, rows)))
    return out


def format_s_curve(threshold: float, bands: int, rows: int) -> str:
    """A printable two-line table of :func:`s_curve`."""
    pts = s_curve(threshold, bands, rows)
    head = "J            " + " ".join(f"{j:6.2f}" for j, _ in pts)
    body = "P(candidate) " + " ".join(f"{p:6.3f}" for _, p in pts)
    return (
        f"LSH {bands} bands x {rows} rows = {bands * rows} permutations; "
        f"P(candidate | J={threshold:g}) = {candidate_probability(threshold, bands, rows):.3f}\n{head}\n{body}"
    )


@njit(cache=True)
def _band_kernel(sig, bands, rows):
    n = sig.shape[0]
    out = np.empty((n, bands), dtype=np.uint64)
    for d in range(n):
        for j in range(bands):
            acc = P64_5 + np.uint64(j + 1) * P64_1
            base = j * rows
            for t in range(rows):
                acc = xxh64_round(acc, np.uint64(sig[d, base + t]))
                acc = rotl64(acc, 27) * P64_1 + P64_4
            acc = acc ^ np.uint64(rows)
            out[d, j] = fmix64(acc)
    return out


def band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """``np.uint64[n, bands]``: a 64-bit hash of each band's ``rows`` consecutive signature
    slots (band ``j`` uses slots ``j*rows .. (j+1)*rows - 1``) mixed with the band index."""
    sig = np.ascontiguousarray(signatures)
    if sig.ndim != 2:
        raise ValueError("signatures must be 2-D [n, num_perm]")
    if bands < 1 or rows < 1 or bands * rows > sig.shape[1]:
        raise ValueError(
            f"bands x rows = {bands} x {rows} needs {bands * rows} permutations; signatures have {sig.shape[1]}"
        )
    if sig.shape[0] <= small.SMALL_DOCS:
        return small.band_keys(sig, int(bands), int(rows))
    return _band_kernel(sig, int(bands), int(rows))
