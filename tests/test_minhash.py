"""dcurate.stages.dedup.minhash: shingle definition, datasketch oracle, banding math, Jaccard helpers."""

from __future__ import annotations

import re
import unicodedata

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
import xxhash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dcurate.stages.dedup import minhash as mh
from dcurate.stages.dedup import small
from dcurate.text import hashing, utf8

datasketch = pytest.importorskip("datasketch")


def setup_module():
    # the tests below exercise the numba kernels; small batches would take dedup/small.py's path
    global _SMALL
    _SMALL = (small.SMALL_TEXT_BYTES, small.SMALL_HASHES, small.SMALL_DOCS)
    small.SMALL_TEXT_BYTES = small.SMALL_HASHES = small.SMALL_DOCS = -1


def teardown_module():
    small.SMALL_TEXT_BYTES, small.SMALL_HASHES, small.SMALL_DOCS = _SMALL


EDGE_TEXTS = [
    "Hello, World! This is a test of the shingle definition, with punctuation-separated words.",
    "",
    None,
    "   \n\t  ",
    "...!!!",
    "one",
    "two words",
    "exactly five words in here",
    "snake_case and CamelCase and ALLCAPS 12345 x2",
    "Ünïcödé text: naïve café, Straße, ΣΊΣΥΦΟΣ and ﬁne ligatures; full-width ＡＢＣ１２３",
    "東京は日本の首都です。Tokyo is big. 北京abc",
    "ภาษาไทย เป็น ภาษา",
    "한국어 문장 은 띄어쓰기 를 합니다",
    "İstanbul İZMİR",
    "e\u0301 combining  a\u0308 marks",
    "word " * 40,
]


def ref_hashes(text, ngram=5, cjk_chars=True, hasher=xxhash.xxh64_intdigest):
    return sorted(
        {hasher(s.encode("utf-8")) for s in mh.reference_shingles(text, ngram, cjk_chars=cjk_chars)}
    )


def doc(offsets, hashes, i):
    return hashes[offsets[i] : offsets[i + 1]].tolist()


# --------------------------------------------------------------------------------------------
# shingles
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ngram", [1, 3, 5])
@pytest.mark.parametrize("cjk_chars", [True, False])
def test_shingles_match_reference(ngram, cjk_chars):
    off, h = mh.shingle_hashes(EDGE_TEXTS, ngram=ngram, cjk_chars=cjk_chars)
    assert off.dtype == np.int64 and h.dtype == np.uint64 and len(off) == len(EDGE_TEXTS) + 1
    for i, t in enumerate(EDGE_TEXTS):
        assert doc(off, h, i) == ref_hashes(t, ngram, cjk_chars), (i, t)


def test_xxh32_option():
    off, h = mh.shingle_hashes(EDGE_TEXTS, hash="xxh32")
    assert h.dtype == np.uint32
    for i, t in enumerate(EDGE_TEXTS):
        assert doc(off, h, i) == ref_hashes(t, hasher=xxhash.xxh32_intdigest)


def test_short_and_empty_documents():
    off, h = mh.shingle_hashes(["", None, "!!", "a b c", "A  B,C"])
    assert np.diff(off).tolist() == [0, 0, 0, 1, 1]
    # case and separators never matter: "a b c" == "A  B,C"
    assert doc(off, h, 3) == doc(off, h, 4) == [xxhash.xxh64_intdigest(b"a b c")]


def test_cjk_tokens():
    assert mh.reference_shingles("東京abc", 5) == {"東 京 abc"}
    assert mh.reference_shingles("東京abc", 5, cjk_chars=False) == {"東京abc"}
    off, h = mh.shingle_hashes(["東京は日本の首都です"], ngram=2)
    assert np.diff(off)[0] == 9  # ten characters -> nine distinct character bigrams


def test_ground_truth_definition_on_benchmark_like_text():
    """The shared corpus's definition: re.findall(r"\\w+", text.lower()), 5 words joined by a space."""
    text = "The quick brown fox -- jumps over the lazy dog; THE QUICK brown fox again!"
    toks = re.findall(r"\w+", text.lower())
    truth = {" ".join(toks[i : i + 5]) for i in range(len(toks) - 4)}
    off, h = mh.shingle_hashes([text])
    assert doc(off, h, 0) == sorted(xxhash.xxh64_intdigest(s.encode()) for s in truth)


_ALPHABET = st.sampled_from(
    list("abcXYZ019_ ,.;-\n\t'\"")
    + ["é", "É", "ß", "ﬁ", "Σ", "ς", "İ", "\u0301", "\u0308", "東", "京", "ア", "ก", "\u0e31", "한", "\u1161"]
    + ["\u11a8", "가", "²", "Ⅻ", "ｶ", "＿", "\u00a0", "\u200b", "😀", "𠀀", "\U0001d400"]
)


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.text(_ALPHABET, max_size=60), min_size=1, max_size=6), st.integers(1, 6), st.booleans())
def test_shingles_property(texts, ngram, cjk_chars):
    off, h = mh.shingle_hashes(texts, ngram=ngram, cjk_chars=cjk_chars)
    for i, t in enumerate(texts):
        assert doc(off, h, i) == ref_hashes(t, ngram, cjk_chars)


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_shingles_arbitrary_unicode(text):
    off, h = mh.shingle_hashes([text, text.upper()])
    assert doc(off, h, 0) == ref_hashes(text)


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_plain_words_equal_ground_truth_for_nfkc_stable_text(text):
    if (
        unicodedata.normalize("NFKC", text) != text
        or unicodedata.normalize("NFKC", text.lower()) != text.lower()
    ):
        return
    toks = re.findall(r"\w+", text.lower())
    if not toks:
        truth = set()
    elif len(toks) < 5:
        truth = {" ".join(toks)}
    else:
        truth = {" ".join(toks[i : i + 5]) for i in range(len(toks) - 4)}
    off, h = mh.shingle_hashes([text], cjk_chars=False)
    assert doc(off, h, 0) == sorted(xxhash.xxh64_intdigest(s.encode()) for s in truth)


@pytest.mark.slow
def test_word_character_table_is_python_re():
    cls = utf8.char_classes(False)
    sample = list(range(0, 0x3000)) + list(range(0x3000, utf8.TABLE_LIMIT, 7))
    for cp in sample:
        if 0xD800 <= cp < 0xE000:
            continue
        assert bool(cls[cp]) == bool(re.match(r"\w", chr(cp))), hex(cp)
    high = "".join(map(chr, range(utf8.TABLE_LIMIT, 0x110000)))
    assert re.search(r"\w", high) is None
    assert not cls[utf8.TABLE_LIMIT :].any()


_FAST = utf8.fast_path_map()
_FAST_CPS = np.flatnonzero(_FAST >= 0)


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, len(_FAST_CPS) - 1), max_size=40))
def test_fast_path_map_equals_normalize(picks):
    text = "".join(chr(int(_FAST_CPS[i])) for i in picks)
    mapped = "".join(chr(int(_FAST[ord(c)])) for c in text)
    assert unicodedata.normalize("NFKC", text).lower() == mapped


def test_fast_path_excludes_composing_characters():
    for ch in ["\u0301", "\u1161", "\u11a8", "Σ", "İ", "ﬁ", "²", "Ａ"]:
        assert _FAST[ord(ch)] < 0, ch
    assert _FAST[ord("A")] == ord("a") and _FAST[ord("É")] == ord("é") and _FAST[ord("東")] == ord("東")


@pytest.mark.parametrize(
    "make",
    [
        lambda t: pa.array(t, type=pa.string()),
        lambda t: pa.array(t, type=pa.large_string()),
        lambda t: pa.chunked_array([pa.array(t[:5]), pa.array(t[5:])]),
        lambda t: pa.array(["pad", "pad"] + t, type=pa.string()).slice(2),
        lambda t: pl.Series(values=t, dtype=pl.String),
        lambda t: t,
    ],
)
def test_input_types_and_batching_invariance(make):
    expected_off, expected_h = mh.shingle_hashes(EDGE_TEXTS)
    off, h = mh.shingle_hashes(make(EDGE_TEXTS))
    assert np.array_equal(off, expected_off) and np.array_equal(h, expected_h)
    # batching does not change any document's set
    parts = [mh.shingle_hashes(EDGE_TEXTS[i : i + 3]) for i in range(0, len(EDGE_TEXTS), 3)]
    joined = [doc(o, x, i) for o, x in parts for i in range(len(o) - 1)]
    assert joined == [doc(expected_off, expected_h, i) for i in range(len(EDGE_TEXTS))]


@pytest.mark.slow
def test_large_document():
    rng = np.random.default_rng(3)
    vocab = np.array([f"w{i}" for i in range(5000)])
    text = " ".join(vocab[rng.integers(0, 5000, 300_000)])  # ~1.9 MB
    off, h = mh.shingle_hashes([text, "tiny doc"])
    assert doc(off, h, 0) == ref_hashes(text)
    assert doc(off, h, 1) == ref_hashes("tiny doc")


def test_shingle_errors():
    with pytest.raises(ValueError, match="ngram"):
        mh.shingle_hashes(["a"], ngram=0)
    with pytest.raises(ValueError, match="hash must be one of"):
        mh.shingle_hashes(["a"], hash="md5")


# --------------------------------------------------------------------------------------------
# signatures: datasketch oracle
# --------------------------------------------------------------------------------------------


def _oracle(off, h, num_perm, seed, scheme):
    if scheme == "affine64":
        fn = int
    else:

        def fn(x):
            return int(x) & 0xFFFFFFFF

    rows = []
    for i in range(len(off) - 1):
        m = datasketch.MinHash(num_perm=num_perm, seed=seed, hashfunc=fn, scheme=scheme)
        vals = h[off[i] : off[i + 1]]
        if len(vals):
            m.update_batch(list(vals))
        rows.append(m.hashvalues)
    return rows


@pytest.mark.parametrize("scheme", ["affine32", "legacy", "affine64"])
@pytest.mark.parametrize("num_perm,seed", [(128, 1), (16, 7), (256, 42), (1, 3)])
def test_signatures_bit_identical_to_datasketch(scheme, num_perm, seed):
    off, h = mh.shingle_hashes(EDGE_TEXTS)
    sig = mh.signatures(off, h, num_perm=num_perm, seed=seed, scheme=scheme)
    assert sig.shape == (len(EDGE_TEXTS), num_perm)
    for i, expected in enumerate(_oracle(off, h, num_perm, seed, scheme)):
        assert sig.dtype == expected.dtype
        assert np.array_equal(sig[i], expected), (scheme, i)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.text(_ALPHABET, max_size=200), min_size=1, max_size=4),
    st.sampled_from(["affine32", "legacy", "affine64"]),
    st.integers(1, 2**31 - 1),
)
@pytest.mark.slow
def test_signatures_oracle_property(texts, scheme, seed):
    off, h = mh.shingle_hashes(texts)
    sig = mh.signatures(off, h, num_perm=32, seed=seed, scheme=scheme)
    for i, expected in enumerate(_oracle(off, h, 32, seed, scheme)):
        assert np.array_equal(sig[i], expected)


def test_signature_update_order_and_duplicates_do_not_matter():
    off, h = mh.shingle_hashes(["a b c d e f g h i j k"])
    rev = h[::-1].copy()
    dup = np.concatenate([h, h])
    base = mh.signatures(off, h)
    assert np.array_equal(mh.signatures(off, rev), base)
    assert np.array_equal(mh.signatures(np.array([0, len(dup)]), dup), base)


def test_empty_document_signature_is_all_max():
    off, h = mh.shingle_hashes(["", "words here"])
    for scheme in mh.SCHEMES:
        sig = mh.signatures(off, h, scheme=scheme)
        assert np.array_equal(sig[0], mh.empty_signature(128, scheme))
    assert int(mh.empty_signature(4, "affine32")[0]) == 2**32 - 1
    assert int(mh.empty_signature(4, "legacy")[0]) == 2**32 - 1
    assert int(mh.empty_signature(4, "affine64")[0]) == 2**64 - 1


def test_permutations_match_datasketch():
    for scheme in mh.SCHEMES:
        a, b = mh.permutations(64, 5, scheme)
        m = datasketch.MinHash(num_perm=64, seed=5, scheme=scheme)
        assert np.array_equal(a, np.asarray(m.permutations[0]).astype(a.dtype))
        assert np.array_equal(b, np.asarray(m.permutations[1]).astype(b.dtype))


def test_signature_errors():
    with pytest.raises(ValueError, match="scheme"):
        mh.signatures(np.array([0]), np.array([], np.uint64), scheme="affine16")
    with pytest.raises(ValueError, match="num_perm"):
        mh.signatures(np.array([0]), np.array([], np.uint64), num_perm=0)


# --------------------------------------------------------------------------------------------
# Jaccard
# --------------------------------------------------------------------------------------------


def _pair(j_target, n=400, seed=0):
    """Two documents of n distinct words each whose 1-gram Jaccard is known exactly."""
    shared = int(round(2 * n * j_target / (1 + j_target)))
    a = [f"s{i}" for i in range(shared)] + [f"a{i}" for i in range(n - shared)]
    b = [f"s{i}" for i in range(shared)] + [f"b{i}" for i in range(n - shared)]
    return " ".join(a), " ".join(b), shared / (2 * n - shared)


def test_exact_and_estimated_jaccard():
    ta, tb, j = _pair(0.7)
    off, h = mh.shingle_hashes([ta, tb, ""], ngram=1)
    assert mh.exact_jaccard(h[off[0] : off[1]], h[off[1] : off[2]]) == pytest.approx(j)
    assert mh.exact_jaccard(h[:0], h[:0]) == 0.0
    pairs = mh.exact_jaccard_pairs(off, h, [0, 0, 2, 1], [1, 0, 2, 2])
    assert pairs == pytest.approx([j, 1.0, 0.0, 0.0])
    sig = mh.signatures(off, h, num_perm=256)
    est = mh.estimate_jaccard(sig[0], sig[1])
    # standard error sqrt(j(1-j)/256) ~ 0.029; 4 sigma
    assert abs(est - j) < 0.12
    assert mh.estimate_jaccard(sig[:2], sig[:2]).tolist() == [1.0, 1.0]


@pytest.mark.slow
@settings(max_examples=100, deadline=None)
@given(st.lists(st.text("abcde ", max_size=40), min_size=2, max_size=5))
def test_exact_jaccard_pairs_property(texts):
    off, h = mh.shingle_hashes(texts, ngram=2)
    sets = [mh.reference_shingles(t, 2) for t in texts]
    left = [i for i in range(len(texts)) for _ in range(len(texts))]
    right = [k for _ in range(len(texts)) for k in range(len(texts))]
    got = mh.exact_jaccard_pairs(off, h, left, right)
    for q, (i, k) in enumerate(zip(left, right, strict=True)):
        union = sets[i] | sets[k]
        want = len(sets[i] & sets[k]) / len(union) if union else 0.0
        assert got[q] == pytest.approx(want)
        assert mh.exact_jaccard(h[off[i] : off[i + 1]], h[off[k] : off[k + 1]]) == pytest.approx(want)


# --------------------------------------------------------------------------------------------
# banding
# --------------------------------------------------------------------------------------------


def test_candidate_probability_formula():
    assert mh.candidate_probability(0.8, 9, 13) == pytest.approx(1 - (1 - 0.8**13) ** 9)
    assert mh.candidate_probability(0.8, 9, 13) == pytest.approx(0.40, abs=0.01)
    assert mh.candidate_probability([0.0, 1.0], 4, 4).tolist() == [0.0, 1.0]


def test_areas_match_datasketch():
    from datasketch.lsh import _false_negative_probability, _false_positive_probability

    for t, b, r in [(0.8, 9, 13), (0.5, 20, 5), (0.9, 16, 8), (0.3, 128, 1)]:
        assert mh.false_positive_area(t, b, r) == pytest.approx(
            _false_positive_probability(t, b, r), abs=1e-9
        )
        assert mh.false_negative_area(t, b, r) == pytest.approx(
            _false_negative_probability(t, b, r), abs=1e-9
        )


@pytest.mark.parametrize("threshold,num_perm", [(0.8, 128), (0.5, 48), (0.9, 32)])
def test_classic_rule_matches_datasketch(threshold, num_perm):
    from datasketch.lsh import _optimal_param

    assert mh.classic_bands(threshold, num_perm) == _optimal_param(threshold, num_perm, 0.5, 0.5)


def test_classic_rule_has_low_recall_at_threshold():
    b, r = mh.classic_bands(0.8, 128)
    assert (b, r) == (9, 13)
    assert mh.candidate_probability(0.8, b, r) < 0.5


@pytest.mark.slow
@pytest.mark.parametrize("threshold", [0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95])
@pytest.mark.parametrize("num_perm", [64, 128, 256])
def test_choose_bands_rule(threshold, num_perm):
    b, r = mh.choose_bands(threshold, num_perm, min_recall=0.95)
    assert b * r <= num_perm
    assert mh.candidate_probability(threshold, b, r) >= 0.95
    fp = mh.false_positive_area(threshold, b, r)
    # brute force: no feasible split has a smaller false-positive area
    for rr in range(1, num_perm + 1):
        for bb in range(1, num_perm // rr + 1):
            if mh.candidate_probability(threshold, bb, rr) >= 0.95:
                assert mh.false_positive_area(threshold, bb, rr) >= fp - 1e-12
                break  # larger bb only grows the area (checked below for this rr)
    for bb in range(1, num_perm // r):
        assert mh.false_positive_area(threshold, bb + 1, r) > mh.false_positive_area(threshold, bb, r)


def test_choose_bands_known_values_and_recall_knob():
    assert mh.choose_bands(0.8, 128) == (13, 7)
    b, r = mh.choose_bands(0.8, 128, min_recall=0.99)
    assert mh.candidate_probability(0.8, b, r) >= 0.99
    assert mh.false_positive_area(0.8, b, r) > mh.false_positive_area(0.8, 13, 7)
    # impossible target: best effort
    b, r = mh.choose_bands(0.05, 4, min_recall=0.999)
    assert (b, r) == (4, 1)


def test_banding_errors():
    with pytest.raises(ValueError, match="threshold"):
        mh.choose_bands(1.0, 128)
    with pytest.raises(ValueError, match="min_recall"):
        mh.choose_bands(0.8, 128, min_recall=1.0)
    with pytest.raises(ValueError, match="permutations"):
        mh.band_keys(np.zeros((2, 8), np.uint32), 3, 3)


def test_s_curve_table():
    pts = mh.s_curve(0.8, 13, 7)
    js = [j for j, _ in pts]
    assert js[0] == pytest.approx(0.6) and js[-1] == pytest.approx(1.0) and 0.8 in js
    ps = [p for _, p in pts]
    assert ps == sorted(ps)
    assert mh.s_curve(0.1, 20, 5)[0][0] == 0.0  # clipped at 0
    text = mh.format_s_curve(0.8, 13, 7)
    assert "13 bands x 7 rows" in text and "0.953" in text


def test_band_keys():
    rng = np.random.default_rng(0)
    sig = rng.integers(0, 2**32, size=(5, 12), dtype=np.uint64).astype(np.uint32)
    sig[1] = sig[0]
    sig[2, :4] = sig[0, :4]  # shares band 0 only
    sig[3, :4] = sig[0, 4:8]  # band 0 of doc 3 equals band 1 of doc 0: must not collide
    keys = mh.band_keys(sig, 3, 4)
    assert keys.shape == (5, 3) and keys.dtype == np.uint64
    assert np.array_equal(keys[0], keys[1])
    assert keys[2, 0] == keys[0, 0] and keys[2, 1] != keys[0, 1]
    assert keys[3, 0] != keys[0, 1]
    # only the first bands*rows slots are used; dtype of the signature values does not matter
    assert np.array_equal(mh.band_keys(sig[:, :12], 2, 5), mh.band_keys(sig.astype(np.uint64), 2, 5))
    # pinned values: band keys are stored on disk between phases, so they must not change
    pinned = mh.band_keys(np.arange(8, dtype=np.uint32).reshape(1, 8), 2, 4)
    assert pinned.tolist() == [[PINNED_BAND_KEYS[0], PINNED_BAND_KEYS[1]]]


PINNED_BAND_KEYS = (2423078024948068308, 16154216031585575340)


@pytest.mark.parametrize("kind", ["uniform", "skewed", "duplicates", "small"])
def test_sort_hashes_kernel(kind):
    rng = np.random.default_rng(1)
    n = {"uniform": 5000, "skewed": 3000, "duplicates": 2000, "small": 20}[kind]
    x = rng.integers(0, 2**63, size=n, dtype=np.uint64) * np.uint64(2)
    if kind == "skewed":
        x >>= np.uint64(30)  # every value in the lowest buckets: exercises the large-bucket path
    if kind == "duplicates":
        x[::2] = x[0]
    seg = x.copy()
    hashing.sort_hashes(seg, np.empty(n, np.uint64), np.zeros((1 << 20) + 1, np.int64))
    assert np.array_equal(seg, np.sort(x))


def test_table_disk_cache(tmp_path, monkeypatch):
    calls = []

    def build():
        calls.append(1)
        return np.arange(5, dtype=np.int32)

    monkeypatch.setenv("DCURATE_CACHE_DIR", str(tmp_path / "cache"))
    first = utf8.disk_cached("unit", build)
    second = utf8.disk_cached("unit", build)
    assert np.array_equal(first, second) and len(calls) == 1
    assert len(list((tmp_path / "cache").glob("text-unit-*.npy"))) == 1
    # an unusable cache location falls back to building
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("DCURATE_CACHE_DIR", str(blocker))
    assert np.array_equal(utf8.disk_cached("unit", build), first) and len(calls) == 2


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.one_of(st.none(), st.text(_ALPHABET, max_size=120), st.text(max_size=40)), min_size=1, max_size=5
    ),
    st.integers(1, 6),
    st.booleans(),
    st.sampled_from(["affine32", "legacy", "affine64"]),
)
def test_small_batch_path_is_bit_identical_to_the_kernels(texts, ngram, cjk_chars, scheme):
    """dedup/small.py (no numba) gives the kernels' shingles, signatures and band keys."""
    for use32 in (False, True):
        off, h = mh.shingle_hashes(
            texts, ngram=ngram, hash="xxh32" if use32 else "xxh64", cjk_chars=cjk_chars
        )
        off2, h2 = small.shingle_hashes(texts, ngram, use32, cjk_chars)
        assert off.tolist() == off2.tolist() and h.dtype == h2.dtype and h.tolist() == h2.tolist()
    off, h = mh.shingle_hashes(texts + EDGE_TEXTS, ngram=ngram, cjk_chars=cjk_chars)
    a, b = mh.permutations(128, 7, scheme)
    sig = mh.signatures(off, h, 128, 7, scheme)
    sig2 = small.signatures(off, h, a, b, scheme)
    assert sig.dtype == sig2.dtype and np.array_equal(sig, sig2)
    assert np.array_equal(mh.band_keys(sig, 9, 13), small.band_keys(sig, 9, 13))
    assert np.array_equal(mh.band_keys(sig, 16, 8), small.band_keys(sig, 16, 8))
