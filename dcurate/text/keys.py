"""Seeded per-document keys: a 64-bit hash of (seed, salt, document id), independent of sharding,
batching and worker count. One vectorised entry point, :func:`seeded_keys`, with the algorithms the
stages have always used kept as named variants (their outputs must not change):

``xxh64``
    XXH64 of the id's UTF-8 bytes with the seed as XXH64 seed. DSIR's Gumbel noise and target
    sample (no salt) and ``train-quality``'s held-out split and training order (salts ``holdout``
    and ``order``).
``fnv1a-fmix64``
    FNV-1a over the id's bytes from the basis ``fmix64(seed ^ FNV offset basis)``, then
    ``fmix64(h ^ length)`` (MurmurHash3's 64-bit finaliser, so the top bits are well mixed). The
    mix stage's selection keys.

With a salt the hashed string is ``salt + "\\0" + id``. Ids given as an Arrow array are cast to
strings by Arrow (nulls hash as the empty string); ids given as a Python sequence are formatted
with ``str()`` (``None`` becomes ``"None"``), which is what ``train-quality`` always did.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dcurate.core.jit import njit
from dcurate.text.hashing import fmix64, xxh64

__all__ = ["VARIANTS", "seeded_keys", "splitmix64", "uniform"]

VARIANTS = ("xxh64", "fnv1a-fmix64")

_MASK = 0xFFFFFFFFFFFFFFFF


@njit(cache=True)
def _xxh64_each(data, offsets, seed):
    n = len(offsets) - 1
    out = np.empty(n, dtype=np.uint64)
    for j in range(n):
        out[j] = xxh64(data, offsets[j], offsets[j + 1], seed)
    return out


@njit(cache=True)
def _fnv1a_fmix64_each(data, offsets, seed):
    n = len(offsets) - 1
    out = np.empty(n, dtype=np.uint64)
    basis = fmix64(seed ^ np.uint64(0xCBF29CE484222325))
    prime = np.uint64(0x100000001B3)
    for i in range(n):
        h = basis
        for p in range(offsets[i], offsets[i + 1]):
            h ^= np.uint64(data[p])
            h *= prime
        out[i] = fmix64(h ^ np.uint64(offsets[i + 1] - offsets[i]))
    return out


def _as_large_strings(ids: Any) -> pa.Array:
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks()
    if isinstance(ids, pa.Array):
        arr = ids if pa.types.is_large_string(ids.type) else pc.cast(ids, pa.large_string())
        return arr.fill_null("") if arr.null_count else arr
    seq: Sequence[Any] = ids
    try:  # strings and integers format the same in Arrow as with str(): no Python loop
        arr = pa.array(seq)
        simple = arr.null_count == 0 and (
            pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type) or pa.types.is_integer(arr.type)
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        simple = False
    if not simple:
        arr = pa.array([str(i) for i in seq], pa.large_string())
    return pc.cast(arr, pa.large_string())


def _buffers(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    if len(arr) == 0:
        return np.zeros(1, np.int64), np.zeros(1, np.uint8)
    _, obuf, dbuf = arr.buffers()
    offsets = np.frombuffer(obuf, dtype=np.int64)[arr.offset : arr.offset + len(arr) + 1]
    data = np.frombuffer(dbuf, dtype=np.uint8) if dbuf is not None and dbuf.size else np.zeros(1, np.uint8)
    return offsets, data


def seeded_keys(ids: Any, seed: int, salt: str | None = None, *, variant: str = "xxh64") -> np.ndarray:
    """A uint64 key per document id from (seed, salt, id); see the module docstring for variants."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown seeded-key variant {variant!r}; one of {', '.join(VARIANTS)}")
    arr = _as_large_strings(ids)
    if salt is not None and len(arr):
        sep = pa.scalar("\x00", pa.large_string())
        arr = pc.binary_join_element_wise(pa.scalar(salt, pa.large_string()), arr, sep)
    offsets, data = _buffers(arr)
    s = np.uint64(int(seed) & _MASK)
    if variant == "xxh64":
        return _xxh64_each(data, offsets, s)
    return _fnv1a_fmix64_each(data, offsets, s)


def uniform(keys: np.ndarray, *, open_interval: bool = False) -> np.ndarray:
    """The top 53 bits of each key as a float64 in [0, 1), or with ``open_interval`` the centre of
    the key's 2**-53 cell (DSIR's noise): > 0, so safe under ``log``; the topmost cell's centre
    rounds to 1.0 in float64 (one key in 2**53; kept so that DSIR's outputs do not change)."""
    top = (np.asarray(keys, dtype=np.uint64) >> np.uint64(11)).astype(np.float64)
    if open_interval:
        return (top + 0.5) * (1.0 / 9007199254740992.0)
    return top / float(1 << 53)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser over a uint64 array (wrapping arithmetic): mixes keys that are
    already per-document (ZIP-FIT's self-check sample combines a document key and a target key)."""
    x = np.asarray(x, dtype=np.uint64)
    with np.errstate(over="ignore"):
        x = x ^ (x >> np.uint64(30))
        x = x * np.uint64(0xBF58476D1CE4E5B9)
        x = x ^ (x >> np.uint64(27))
        x = x * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))
