"""dcurate.text.keys: seeded per-document keys, equal to the algorithms the stages used before
the merge (written out here in plain Python as oracles) on random ids."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from dcurate.text.keys import seeded_keys, splitmix64, uniform

M = 0xFFFFFFFFFFFFFFFF


def _fmix64(h: int) -> int:
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & M
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & M
    return h ^ (h >> 33)


def _mix_key(s: str, seed: int) -> int:
    """The mix stage's selection key: seeded FNV-1a + fmix64."""
    h = _fmix64((seed & M) ^ 0xCBF29CE484222325)
    b = s.encode()
    for c in b:
        h = ((h ^ c) * 0x100000001B3) & M
    return _fmix64(h ^ len(b))


def _quality_split_keys(ids: list, seed: int, salt: str) -> np.ndarray:
    """train-quality's per-row loop before the merge."""
    h = np.fromiter(
        (xxhash.xxh64_intdigest(f"{salt}\x00{i}".encode(), seed=seed & M) for i in ids), dtype=np.uint64, count=len(ids)
    )
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)  # any valid UTF-8
_ids = st.lists(_text, max_size=30)
_seeds = st.integers(-(2**64), 2**64)


@settings(max_examples=150, deadline=None)
@given(_ids, _seeds)
def test_xxh64_is_dsir_noise_hash(ids, seed):
    want = [xxhash.xxh64_intdigest(s.encode(), seed=seed & M) for s in ids]
    arr = pa.array(ids, pa.string())
    assert seeded_keys(arr, seed).tolist() == want
    assert seeded_keys(pa.chunked_array([arr[:3], arr[3:]], pa.string()), seed).tolist() == want
    if len(ids) > 2:
        assert seeded_keys(arr.slice(2), seed).tolist() == want[2:]  # array offsets


@settings(max_examples=150, deadline=None)
@given(_ids, _seeds)
def test_fnv1a_fmix64_is_mix_keys(ids, seed):
    arr = pa.array(ids, pa.large_string())
    want = [_mix_key(s, seed) for s in ids]
    assert seeded_keys(arr, seed, variant="fnv1a-fmix64").tolist() == want


_any_ids = st.lists(
    st.one_of(_text, st.integers(-(2**70), 2**70), st.none(), st.floats(), st.booleans()),
    max_size=25,
)


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(_ids, st.lists(st.integers(-(2**63), 2**63 - 1), max_size=25), _any_ids),
    _seeds,
    st.sampled_from(["holdout", "order", ""]),
)
def test_salted_xxh64_is_train_quality_split(ids, seed, salt):
    want = _quality_split_keys(ids, seed, salt)
    got = uniform(seeded_keys(ids, seed, salt))
    assert got.tolist() == want.tolist()


def test_uniform_ranges_and_bad_variant():
    k = np.array([0, M], dtype=np.uint64)
    assert uniform(k).tolist() == [0.0, (2**53 - 1) / 2**53]
    lo, hi = uniform(k, open_interval=True)
    assert 0 < lo and math.isfinite(-math.log(-math.log(lo)))
    assert hi == 1.0  # (2**53 - 0.5) / 2**53 rounds up: DSIR's formula, kept as it was
    assert seeded_keys([], 0).dtype == np.uint64 and len(seeded_keys(pa.array([], pa.string()), 1)) == 0
    assert seeded_keys(pa.array([None, ""]), 5).tolist() == [xxhash.xxh64_intdigest(b"", seed=5)] * 2
    with pytest.raises(ValueError, match="unknown seeded-key variant"):
        seeded_keys(["a"], 0, variant="md5")


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, M), max_size=20))
def test_splitmix64_is_the_finaliser_zipfit_used(xs):
    def ref(z: int) -> int:
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M
        return z ^ (z >> 31)

    assert splitmix64(np.array(xs, dtype=np.uint64)).tolist() == [ref(x) for x in xs]
