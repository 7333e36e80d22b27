"""Hash kernels on byte buffers (numba): xxHash64 / xxHash32 of a slice of a ``uint8`` array, bit for
bit the reference algorithms (``xxhash.xxh64_intdigest`` / ``xxh32_intdigest``), the MurmurHash3
finalisers and a sort for uniformly distributed 64-bit hashes.

Shared by the MinHash shingles (:mod:`dcurate.stages.dedup.minhash`), the compiled text scanners
(:mod:`dcurate.text.scan`), DSIR's hashed n-grams (:mod:`dcurate.stages.select.dsir`) and the
seeded per-document keys (:mod:`dcurate.text.keys`).
"""

from __future__ import annotations

import numpy as np

from dcurate.core.jit import njit

__all__ = [
    "P64_1",
    "P64_2",
    "P64_3",
    "P64_4",
    "P64_5",
    "P32_1",
    "P32_2",
    "P32_3",
    "P32_4",
    "P32_5",
    "rotl64",
    "rotl32",
    "read64",
    "read32",
    "m32",
    "xxh64_round",
    "xxh32_round",
    "xxh64",
    "xxh32",
    "fmix32",
    "fmix64",
    "insertion_sort",
    "sort_hashes",
]

# xxHash constants (https://github.com/Cyan4973/xxHash/blob/dev/doc/xxhash_spec.md)
P64_1 = np.uint64(0x9E3779B185EBCA87)
P64_2 = np.uint64(0xC2B2AE3D27D4EB4F)
P64_3 = np.uint64(0x165667B19E3779F9)
P64_4 = np.uint64(0x85EBCA77C2B2AE63)
P64_5 = np.uint64(0x27D4EB2F165667C5)
P32_1 = np.uint64(0x9E3779B1)
P32_2 = np.uint64(0x85EBCA77)
P32_3 = np.uint64(0xC2B2AE3D)
P32_4 = np.uint64(0x27D4EB2F)
P32_5 = np.uint64(0x165667B1)


@njit(cache=True, inline="always")
def rotl64(x, r):
    return (x << np.uint64(r)) | (x >> np.uint64(64 - r))


@njit(cache=True, inline="always")
def rotl32(x, r):
    x = x & np.uint64(0xFFFFFFFF)
    return ((x << np.uint64(r)) | (x >> np.uint64(32 - r))) & np.uint64(0xFFFFFFFF)


@njit(cache=True, inline="always")
def read64(buf, p):
    v = np.uint64(0)
    for k in range(8):
        v |= np.uint64(buf[p + k]) << np.uint64(8 * k)
    return v


@njit(cache=True, inline="always")
def read32(buf, p):
    v = np.uint64(0)
    for k in range(4):
        v |= np.uint64(buf[p + k]) << np.uint64(8 * k)
    return v


@njit(cache=True, inline="always")
def xxh64_round(acc, lane):
    acc = acc + lane * P64_2
    acc = rotl64(acc, 31)
    return acc * P64_1


@njit(cache=True)
def xxh64(buf, start, end, seed):
    """xxHash64 of buf[start:end] (uint8 array)."""
    length = end - start
    p = start
    if length >= 32:
        v1 = seed + P64_1 + P64_2
        v2 = seed + P64_2
        v3 = seed
        v4 = seed - P64_1
        limit = end - 32
        while p <= limit:
            v1 = xxh64_round(v1, read64(buf, p))
            v2 = xxh64_round(v2, read64(buf, p + 8))
            v3 = xxh64_round(v3, read64(buf, p + 16))
            v4 = xxh64_round(v4, read64(buf, p + 24))
            p += 32
        h = rotl64(v1, 1) + rotl64(v2, 7) + rotl64(v3, 12) + rotl64(v4, 18)
        h = (h ^ xxh64_round(np.uint64(0), v1)) * P64_1 + P64_4
        h = (h ^ xxh64_round(np.uint64(0), v2)) * P64_1 + P64_4
        h = (h ^ xxh64_round(np.uint64(0), v3)) * P64_1 + P64_4
        h = (h ^ xxh64_round(np.uint64(0), v4)) * P64_1 + P64_4
    else:
        h = seed + P64_5
    h = h + np.uint64(length)
    while p + 8 <= end:
        h = h ^ xxh64_round(np.uint64(0), read64(buf, p))
        h = rotl64(h, 27) * P64_1 + P64_4
        p += 8
    if p + 4 <= end:
        h = h ^ (read32(buf, p) * P64_1)
        h = rotl64(h, 23) * P64_2 + P64_3
        p += 4
    while p < end:
        h = h ^ (np.uint64(buf[p]) * P64_5)
        h = rotl64(h, 11) * P64_1
        p += 1
    h = h ^ (h >> np.uint64(33))
    h = h * P64_2
    h = h ^ (h >> np.uint64(29))
    h = h * P64_3
    h = h ^ (h >> np.uint64(32))
    return h


@njit(cache=True, inline="always")
def m32(x):
    return x & np.uint64(0xFFFFFFFF)


@njit(cache=True, inline="always")
def xxh32_round(acc, lane):
    acc = m32(acc + lane * P32_2)
    acc = rotl32(acc, 13)
    return m32(acc * P32_1)


@njit(cache=True)
def xxh32(buf, start, end, seed):
    """xxHash32 of buf[start:end] (uint8 array), returned in a uint64."""
    length = end - start
    p = start
    if length >= 16:
        v1 = m32(seed + P32_1 + P32_2)
        v2 = m32(seed + P32_2)
        v3 = m32(seed)
        v4 = m32(seed - P32_1)
        limit = end - 16
        while p <= limit:
            v1 = xxh32_round(v1, read32(buf, p))
            v2 = xxh32_round(v2, read32(buf, p + 4))
            v3 = xxh32_round(v3, read32(buf, p + 8))
            v4 = xxh32_round(v4, read32(buf, p + 12))
            p += 16
        h = m32(rotl32(v1, 1) + rotl32(v2, 7) + rotl32(v3, 12) + rotl32(v4, 18))
    else:
        h = m32(seed + P32_5)
    h = m32(h + np.uint64(length))
    while p + 4 <= end:
        h = m32(h + read32(buf, p) * P32_3)
        h = m32(rotl32(h, 17) * P32_4)
        p += 4
    while p < end:
        h = m32(h + np.uint64(buf[p]) * P32_5)
        h = m32(rotl32(h, 11) * P32_1)
        p += 1
    h = h ^ (h >> np.uint64(15))
    h = m32(h * P32_2)
    h = h ^ (h >> np.uint64(13))
    h = m32(h * P32_3)
    h = h ^ (h >> np.uint64(16))
    return h


@njit(cache=True, inline="always")
def fmix32(h):
    h = h ^ (h >> np.uint64(16))
    h = (h * np.uint64(0x85EBCA6B)) & np.uint64(0xFFFFFFFF)
    h = h ^ (h >> np.uint64(13))
    h = (h * np.uint64(0xC2B2AE35)) & np.uint64(0xFFFFFFFF)
    return h ^ (h >> np.uint64(16))


@njit(cache=True, inline="always")
def fmix64(h):
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> np.uint64(33))


@njit(cache=True)
def insertion_sort(x, lo, hi):
    for i in range(lo + 1, hi):
        v = x[i]
        j = i
        while j > lo and x[j - 1] > v:
            x[j] = x[j - 1]
            j -= 1
        x[j] = v


@njit(cache=True)
def sort_hashes(seg, tmp, cnt):
    """Sort uniformly distributed 64-bit hashes in place: one counting pass on the top bits into
    about one element per bucket, then insertion sort per bucket (``np.sort`` for a large one)."""
    m = seg.shape[0]
    if m <= 32:
        insertion_sort(seg, 0, m)
        return
    bits = 1
    while (1 << bits) < m and bits < 20:
        bits += 1
    nb = 1 << bits
    shift = np.uint64(64 - bits)
    cnt[: nb + 1] = 0
    for i in range(m):
        cnt[np.int64(seg[i] >> shift) + 1] += 1
    for b in range(nb):
        cnt[b + 1] += cnt[b]
    for i in range(m):
        b = np.int64(seg[i] >> shift)
        tmp[cnt[b]] = seg[i]
        cnt[b] += 1
    lo = 0
    for b in range(nb):
        hi = cnt[b]  # after the scatter, cnt[b] is the end of bucket b
        if hi - lo > 64:
            tmp[lo:hi].sort()
        elif hi - lo > 1:
            insertion_sort(tmp, lo, hi)
        lo = hi
    seg[:] = tmp[:m]
