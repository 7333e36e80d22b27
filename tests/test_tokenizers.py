"""The named tokenisers (dcurate.text.tokenizers): each stage's kernel equals its scalar reference."""

from __future__ import annotations

import numpy as np
import pytest
import xxhash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dcurate.stages.dedup import small
from dcurate.text import tokenizers as tk
from dcurate.text.normalize import normalize_series, normalize_series_ascii_fast

# ASCII, table entries with one and several code points, code points that take the exact path
# (combining marks, Hangul jamo, final sigma, dotted capital I), scripts without spaces, and code
# points where Python's and Rust's \w differ (superscript two, combining acute).
SPECIAL = (
    "\u00a0\u2009\u202f\u00b2\u00b3\u00bd\u2026\ufb01\ufb03\uff21\uff41\u2122\u00b5\u212a"
    "\u0301\u0308\u05b0\u094d\u1100\u1161\u11a8\u03a3\u03c3\u0130\u00e9\u00c9\u0391\u0416"
    "\u6771\u4eac\u3042\u30ab\uff76\u0e01\u0e31\U0001f600\U00020000\u2028\u0085\u3000\u00ad\uff3f\u2167"
)
ALPHABET = st.sampled_from(list("aZ09_ .,;:!?-'\"\n\t()") + list(SPECIAL))
TEXTS = st.lists(st.text(alphabet=ALPHABET, max_size=40), min_size=1, max_size=8)
EXAMPLES = [
    "Hello World\n\n second  line. x",
    "a\u00a0b \u00b2 \u00bd \u2026 \ufb01ne",
    "\u00c9COLE \u0130stanbul \u03a3\u03af\u03c3\u03c5\u03c6\u03bf\u03c2",
    None,
    "",
    "Re: it's 3.5 -- OK?!\n...\n",
    "e\u0301t\u00e9 \u6771\u4eacabc \u0e01\u0e31x",
]


def test_registry_names_each_kernel():
    assert list(tk.TOKENIZERS) == ["gopher_words", "shingle_words", "ccnet_lines", "dsir_word_punct"]
    for name, t in tk.TOKENIZERS.items():
        assert t.name == name and t.word_class in ("python", "rust")
        assert callable(t.load_kernel()) and t.reference is getattr(tk, name)
    with pytest.raises(ValueError, match="unknown tokeniser"):
        tk.get("nope")


def test_reference_examples():
    assert tk.gopher_words("Ab-c d\u00b2") == ["ab", "c", "d2"]
    assert tk.shingle_words("\u6771\u4eacabc x_y") == ["\u6771", "\u4eac", "abc", "x_y"]
    assert tk.shingle_words("\u6771\u4eacabc", cjk_chars=False) == ["\u6771\u4eacabc"]
    assert tk.ccnet_lines("A\u00a0B\n\n!!\nc") == ["a b", "c"]
    assert tk.dsir_word_punct("It's 3.5?!") == ["it", "'", "s", "3", ".", "5", "?!"]
    # Python's and Rust's \w differ: a combining mark continues a Rust word only
    assert tk.gopher_words("e\u0301x") == tk.dsir_word_punct("e\u0301x") == ["\u00e9x"]
    assert tk.ccnet_lines("e\u0331x") == ["e x"] and tk.gopher_words("e\u0331x") == ["e\u0331x"]


def _check_gopher(texts):
    fast, full = normalize_series_ascii_fast(texts).to_list(), normalize_series(texts).to_list()
    assert fast == full
    assert tk.gopher_words_series(texts).to_list() == [tk.gopher_words(t) for t in texts]
    assert tk.gopher_word_counts(texts).to_list() == [len(tk.gopher_words(t)) for t in texts]


def _check_shingles(texts, cjk_chars, monkeypatch):
    from dcurate.stages.dedup import minhash

    monkeypatch.setattr(small, "SMALL_TEXT_BYTES", -1)  # the numba kernel, not the small path
    refs = [tk.shingle_words(t, cjk_chars) for t in texts]
    # ngram 1: the set of tokens; a huge ngram: the whole token sequence as one shingle
    off, h = minhash.shingle_hashes(texts, ngram=1, cjk_chars=cjk_chars)
    for i, toks in enumerate(refs):
        want = sorted({xxhash.xxh64_intdigest(w.encode()) for w in toks})
        assert h[off[i] : off[i + 1]].tolist() == want
    off, h = minhash.shingle_hashes(texts, ngram=1 << 20, cjk_chars=cjk_chars)
    for i, toks in enumerate(refs):
        want = [xxhash.xxh64_intdigest(" ".join(toks).encode())] if toks else []
        assert h[off[i] : off[i + 1]].tolist() == want


def _check_lines(texts):
    data, starts, doc, ntok = tk.ccnet_lines_batch(texts)
    lines = [bytes(data[a : b - 1]).decode() for a, b in zip(starts[:-1], starts[1:], strict=True)]
    want = [(d, line) for d, t in enumerate(texts) for line in tk.ccnet_lines(t)]
    assert list(zip(doc.tolist(), lines, strict=True)) == want
    assert ntok.tolist() == [len(line.split(" ")) for _, line in want]


def _check_dsir(texts, nb=(1 << 31) - 1):
    refs = [tk.dsir_word_punct(t) for t in texts]
    assert tk.dsir_tokens_series(texts).to_list() == refs
    buckets, offs, n = tk.dsir_ngrams(texts, nb)
    assert n.tolist() == [len(r) for r in refs]
    for i, toks in enumerate(refs):
        grams = toks + [f"{a} {b}" for a, b in zip(toks, toks[1:], strict=False)]
        assert buckets[offs[i] : offs[i + 1]].tolist() == [xxhash.xxh64_intdigest(g.encode()) % nb for g in grams]


def test_kernels_match_references_on_examples(monkeypatch):
    _check_gopher(EXAMPLES)
    _check_lines(EXAMPLES)
    _check_dsir(EXAMPLES)
    for cjk in (True, False):
        _check_shingles(EXAMPLES, cjk, monkeypatch)


@pytest.mark.slow
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(TEXTS, st.booleans())
def test_kernels_match_references(monkeypatch, texts, cjk_chars):
    _check_gopher(texts)
    _check_lines(texts)
    _check_dsir(texts)
    _check_shingles(texts, cjk_chars, monkeypatch)


@pytest.mark.slow
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(max_size=60), min_size=1, max_size=4))
def test_python_word_kernels_match_references_on_any_text(monkeypatch, texts):
    # the Python-\w tokenisers follow CPython alone, so any Unicode text must agree
    _check_lines(texts)
    _check_shingles(texts, True, monkeypatch)


def test_word_classes_agree_with_regex_engines():
    import re

    from dcurate.text import unicode

    py, rust = unicode.python_word(), unicode.rust_classes()
    sample = np.r_[0:0x3000, 0xAC00:0xAC10, 0xFF00:0xFF70, 0x1D400:0x1D410]
    assert all(bool(py[c]) == bool(re.fullmatch(r"\w", chr(c))) for c in sample.tolist())
    assert rust[ord("\u0301")] == 1 and py[ord("\u0301")] == 0  # combining mark: Rust \w only
    assert rust[ord(" ")] == 0 and rust[ord("!")] == 2
