"""MinHash for small batches in plain Python and numpy, bit-identical to the numba kernels of
:mod:`dcurate.stages.dedup.minhash`.

Even with :mod:`dcurate.core.jit`'s lean cache loading, the first kernel of a process costs about
0.1 CPU s (numba's runtime and the cached code's linking; numba's import is paid either way), a
large part of a command on a few documents. Batches under the limits below take this path instead; larger ones use
the kernels. Both produce the same values: the shingles are the reference definition the kernels
are tested against (NFKC + lower-case, Python ``re``'s ``\\w``, scripts without spaces one
character per token) hashed with ``xxhash``, and the permutation and band-key arithmetic is the
kernels', written with wrapping ``uint64`` arrays.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xxhash

from dcurate.text.tokenizers import shingle_words

__all__ = [
    "SMALL_TEXT_BYTES",
    "SMALL_HASHES",
    "SMALL_DOCS",
    "reference_shingles",
    "shingle_hashes",
    "signatures",
    "band_keys",
]

#: Batches with at most this many bytes of text are shingled here.
SMALL_TEXT_BYTES = 1 << 16
#: Signatures of at most this many shingle hashes are computed here.
SMALL_HASHES = 1 << 14
#: Band keys of at most this many documents are computed here.
SMALL_DOCS = 256

_M32 = np.uint64(0xFFFFFFFF)
_P64_1 = np.uint64(0x9E3779B185EBCA87)
_P64_2 = np.uint64(0xC2B2AE3D27D4EB4F)
_P64_4 = np.uint64(0x85EBCA77C2B2AE63)
_P64_5 = np.uint64(0x27D4EB2F165667C5)
_PRIME61 = np.uint64((1 << 61) - 1)


def reference_shingles(text: str | None, ngram: int = 5, *, cjk_chars: bool = True) -> set[str]:
    """The shingle set of one document as strings (the definition the kernels implement)."""
    if not text:
        return set()
    toks = shingle_words(text, cjk_chars)
    if not toks:
        return set()
    if len(toks) < ngram:
        return {" ".join(toks)}
    return {" ".join(toks[i : i + ngram]) for i in range(len(toks) - ngram + 1)}


def shingle_hashes(texts: list[str | None], ngram: int, use32: bool, cjk_chars: bool):
    """``(offsets, hashes)`` as :func:`dcurate.stages.dedup.minhash.shingle_hashes`."""
    digest = xxhash.xxh32_intdigest if use32 else xxhash.xxh64_intdigest
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    parts = []
    for i, t in enumerate(texts):
        h = sorted({digest(s.encode("utf-8")) for s in reference_shingles(t, ngram, cjk_chars=cjk_chars)})
        parts.append(np.array(h, dtype=np.uint64))
        offsets[i + 1] = offsets[i] + len(h)
    hashes = np.concatenate(parts) if parts else np.zeros(0, np.uint64)
    return offsets, hashes.astype(np.uint32) if use32 else hashes


def _rotl(x: np.ndarray, r: int) -> np.ndarray:
    return (x << np.uint64(r)) | (x >> np.uint64(64 - r))


def _fmix32(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint64(16))
    h = (h * np.uint64(0x85EBCA6B)) & _M32
    h = h ^ (h >> np.uint64(13))
    h = (h * np.uint64(0xC2B2AE35)) & _M32
    return h ^ (h >> np.uint64(16))


def _fmix64(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> np.uint64(33))


def signatures(
    offsets: np.ndarray, hashes: np.ndarray, a: np.ndarray, b: np.ndarray, scheme: str
) -> np.ndarray:
    """MinHash signatures as the kernels compute them (``[n, len(a)]``)."""
    n, k = len(offsets) - 1, len(a)
    h = np.asarray(hashes).astype(np.uint64)
    a64, b64 = a.astype(np.uint64)[None, :], b.astype(np.uint64)[None, :]
    dtype: np.dtype[Any]
    if scheme == "affine64":
        v = _fmix64(h)[:, None] * a64 + b64
        dtype, top = np.dtype(np.uint64), np.uint64(0xFFFFFFFFFFFFFFFF)
    elif scheme == "affine32":
        v = (_fmix32(h & _M32)[:, None] * a64 + b64) & _M32
        dtype, top = np.dtype(np.uint32), _M32
    else:  # legacy: (a x + b) mod (2**61 - 1), 32 low bits
        v = (h & _M32)[:, None] * a64 + b64
        v = (v & _PRIME61) + (v >> np.uint64(61))
        v = np.where(v >= _PRIME61, v - _PRIME61, v) & _M32
        dtype, top = np.dtype(np.uint64), _M32
    out = np.full((n, k), top, dtype=np.uint64)
    for d in range(n):
        lo, hi = int(offsets[d]), int(offsets[d + 1])
        if hi > lo:
            out[d] = v[lo:hi].min(axis=0)
    return out.astype(dtype)


def band_keys(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """``uint64[n, bands]`` band keys as the kernel computes them."""
    s = np.asarray(sig).astype(np.uint64)
    acc = np.broadcast_to(_P64_5 + np.arange(1, bands + 1, dtype=np.uint64) * _P64_1, (len(s), bands))
    for t in range(rows):
        lane = s[:, t : bands * rows : rows]
        acc = _rotl(acc + lane * _P64_2, 31) * _P64_1
        acc = _rotl(acc, 27) * _P64_1 + _P64_4
    return _fmix64(acc ^ np.uint64(rows))
