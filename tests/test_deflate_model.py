"""The exact level-9 deflate size model against zlib itself."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dcurate.stages.select import deflate_model as DM
from dcurate.stages.select import zipfit as Z

# The model reproduces zlib's own deflate (madler/zlib 1.2.x-1.3.x); another deflate behind
# Python's zlib module (zlib-ng) gives other sizes, and dcurate then uses zlib (tested below).
STANDARD_ZLIB = "ng" not in zlib.ZLIB_RUNTIME_VERSION.lower()
needs_zlib = pytest.mark.skipif(not STANDARD_ZLIB, reason="Python's zlib is not madler/zlib")

ALPHABETS = [b"ab", b"abc ", b"the quick brown fox\n", bytes(range(256)), b"a"]


def _sizes(x: bytes, targets: list[bytes]) -> list[int]:
    return DM.PreparedTargets(targets).sizes(x).tolist()


@needs_zlib
def test_self_check_passes():
    assert DM.self_check()


@needs_zlib
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(ALPHABETS),
    st.lists(st.integers(0, 255), min_size=0, max_size=900),
    st.lists(st.lists(st.integers(0, 255), min_size=0, max_size=700), min_size=1, max_size=4),
)
@pytest.mark.slow
def test_equals_zlib_on_small_inputs(alphabet, xs, ts):
    # Small alphabets make long matches, many ties between candidates and matches that run from
    # x into t; short inputs are always covered by the model (no -1).
    x = bytes(alphabet[i % len(alphabet)] for i in xs)
    targets = [bytes(alphabet[i % len(alphabet)] for i in t) for t in ts]
    got = _sizes(x, targets)
    for g, t in zip(got, targets, strict=True):
        if len(x) >= 1 and len(t) >= DM.MIN_MATCH:
            assert g == DM.zlib_size(x + t)
        else:
            assert g == -1


def _text(rng, n_words: int, vocab: int = 400) -> bytes:
    words = [bytes(rng.integers(97, 123, size=int(k), dtype=np.uint8)) for k in rng.integers(1, 10, size=vocab)]
    return b" ".join(words[i] for i in rng.integers(0, vocab, size=n_words)) + b"\n"


@needs_zlib
def test_equals_zlib_on_text_blocks_and_runs():
    rng = np.random.default_rng(7)
    noise = bytes(rng.integers(0, 256, size=20_000, dtype=np.uint8))
    xs = [_text(rng, 800), _text(rng, 40), noise[:3000], b"=" * 5000 + _text(rng, 30), b"q"]
    targets = [
        _text(rng, 1500),  # text
        noise,  # stored blocks, and a second block (more than 16,383 symbols)
        _text(rng, 5) * 300,  # long repeats
        b" " * 4000 + _text(rng, 20),  # runs: long hash chains, nice_length reached at once
        b"abc",
    ]
    for x in xs:
        got = _sizes(x, targets)
        want = [DM.zlib_size(x + t) for t in targets]
        assert [g for g in got if g >= 0] == [w for g, w in zip(got, want, strict=True) if g >= 0]
        assert sum(g < 0 for g in got) == 0


@needs_zlib
def test_max_chain_cut_falls_back_instead_of_guessing():
    # 5,000 positions share "abc" after the one that matches t best: zlib's walk (max_chain 4096)
    # stops before reaching it, which the model does not reproduce, so it must answer -1.
    x = b"_abcQQQQQQQQ" + b"".join(b"abc" + bytes([1 + i % 250, 1 + i // 250]) for i in range(5000))
    far, near = b"abcQQQQQQQQ", b"abcZZ" * 3
    got = _sizes(x, [far, near])
    assert got[0] == -1
    assert got[1] == DM.zlib_size(x + near)
    # a long periodic x: long chains, but nice_length ends every walk early, so no fallback
    period = bytes(range(97, 97 + 26)) * 3
    t = b"".join(bytes([97 + (i % 26)]) + b"zz" for i in range(3000))
    assert _sizes(period * 200, [t]) == [DM.zlib_size(period * 200 + t)]


def test_inputs_beyond_the_window_are_left_to_zlib():
    x = b"a" * 20_000
    assert _sizes(x, [b"b" * 20_000, b"abc" * 10])[0] == -1


@needs_zlib
def test_targetset_uses_the_model_and_agrees_with_zlib_engine():
    rng = np.random.default_rng(3)
    targets = [_text(rng, 300) for _ in range(5)] + [b"z" * 40_000]
    pool = [_text(rng, 200) for _ in range(6)] + [b"", b"z" * 33_000]
    auto = Z.TargetSet(targets, 9)
    assert auto.model is not None
    assert np.array_equal(auto.scores(pool), Z.TargetSet(targets, 9, engine="zlib").scores(pool))


def test_failed_self_check_means_zlib(monkeypatch):
    monkeypatch.setattr(DM, "_CHECKED", False)
    ts = Z.TargetSet(["some target text " * 20], 9)
    assert ts.model is None
    assert ts.scores(["a pool document " * 10])[0] == Z.TargetSet(
        ["some target text " * 20], 9, engine="zlib"
    ).scores(["a pool document " * 10])[0]


def test_other_levels_and_bad_engine():
    assert Z.TargetSet(["abc def"], 6).model is None
    with pytest.raises(ValueError, match="engine"):
        Z.TargetSet(["abc"], 9, engine="fast")
