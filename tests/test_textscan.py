"""The compiled normalise-while-tokenising kernels agree with the Unicode libraries they stand for."""

from __future__ import annotations

import re
import unicodedata

import numpy as np
import polars as pl
import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from dcurate.text import scan as T
from dcurate.text.normalize import normalize

# Characters chosen to exercise every path: ASCII, the table's single-code-point and expansion
# entries, and code points that send a document to the exact path (combining marks, Hangul jamo,
# final sigma, the dotted capital I whose lower case is two code points).
SPECIAL = (
    "\u00a0\u2009\u202f\u00b2\u00b3\u00bd\u2026\ufb01\ufb03\uff21\uff41\u2122\u00b5\u212a"
    "\u0301\u0308\u05b0\u094d\u1100\u1161\u11a8\u03a3\u03c3\u0130\u00e9\u00c9\u0391\u0416"
    "\u6771\u4eac\u3042\u30ab\uff76\u0e01\U0001f600\U00020000\u2028\u0085\u3000\u00ad"
)
ALPHABET = st.sampled_from(list("aZ09_ .,;:!?-'\"\n\t()") + list(SPECIAL))
TEXTS = st.lists(st.text(alphabet=ALPHABET, max_size=40), min_size=1, max_size=8)


def _ref_lines(texts):
    lines, docs, ntok = [], [], []
    for d, t in enumerate(texts):
        for line in normalize(t or "").split("\n"):
            w = re.findall(r"\w+", line)
            if w:
                lines.append(" ".join(w).encode())
                docs.append(d)
                ntok.append(len(w))
    return lines, docs, ntok


def _check_lines(texts):
    data, starts, doc, ntok = T.ccnet_lines(texts)
    got = [bytes(data[a : b - 1]) for a, b in zip(starts[:-1], starts[1:], strict=True)]
    assert all(data[b - 1] == 10 for b in starts[1:])
    want, wdoc, wntok = _ref_lines(texts)
    assert got == want
    assert doc.tolist() == wdoc
    assert ntok.tolist() == wntok


def _ref_ngrams(texts, nb):
    toks = (
        pl.Series(texts, dtype=pl.String)
        .fill_null("")
        .str.normalize("NFKC")
        .str.to_lowercase()
        .str.extract_all(r"\w+|[^\w\s]+")
        .fill_null([])
        .to_list()
    )
    out, offs = [], [0]
    for tk in toks:
        grams = tk + [f"{a} {b}" for a, b in zip(tk, tk[1:], strict=False)]
        out += [xxhash.xxh64_intdigest(g.encode()) % nb for g in grams]
        offs.append(len(out))
    return out, offs, [len(t) for t in toks]


def _check_ngrams(texts, nb=1000):
    buckets, offs, n = T.word_punct_ngrams(texts, nb)
    want, woffs, wn = _ref_ngrams(texts, nb)
    assert buckets.tolist() == want
    assert offs.tolist() == woffs
    assert n.tolist() == wn
    assert T.word_punct_ngrams(texts, nb, count_only=True)[2].tolist() == wn


def test_lines_examples():
    texts = [
        "Hello World\n\n second  line. x",
        "a\u00a0b \u00b2 \u00bd \u2026 \ufb01ne",
        "\u00c9COLE \u0130stanbul \u03a3\u03af\u03c3\u03c5\u03c6\u03bf\u03c2",
        None,
        "",
        "no\nwords\n...\n",
        "e\u0301t\u00e9",
    ]
    _check_lines(texts)
    data, starts, doc, ntok = T.ccnet_lines(["A\u00a0B\n\n!!\nc"])
    assert data.tobytes() == b"a b\nc\n"
    assert doc.tolist() == [0, 0] and ntok.tolist() == [2, 1]


def test_ngrams_examples():
    _check_ngrams(["Re: it's 3.5 -- OK?!", "a\u00a0b\u2026c", "", None, "\u0130I \u03a3\u03a3", "x" * 300])


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(TEXTS)
def test_lines_match_unicode_reference(texts):
    _check_lines(texts)


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(TEXTS)
def test_ngrams_match_polars_reference(texts):
    _check_ngrams(texts)


def test_table_is_a_per_code_point_normalisation():
    """Any string made only of table code points normalises (NFKC + lower) one code point at a
    time: the entries never compose with a neighbour or depend on context."""
    nfk, exp_off, exp_cps = T.nfk_tables()
    supported = np.flatnonzero(nfk[:0x40000] != -1)
    expanded = np.flatnonzero(nfk <= -2)
    assert len(expanded) > 1000 and nfk[0xA0] <= -2  # NO-BREAK SPACE is an expansion
    assert nfk[0x3A3] == -1 and nfk[0x301] == -1 and nfk[0x1161] == -1

    def mapped(c):
        v = int(nfk[c])
        if v >= 0:
            return chr(v)
        k = -2 - v
        return "".join(map(chr, exp_cps[exp_off[k] : exp_off[k + 1]]))

    rng = np.random.default_rng(0)
    for _ in range(200):
        pick = np.concatenate([rng.choice(supported, 30), rng.choice(expanded, 30)])
        rng.shuffle(pick)
        s = "".join(map(chr, pick))
        assert "".join(mapped(int(c)) for c in pick) == unicodedata.normalize("NFKC", s).lower()


@pytest.mark.parametrize("size", [0, 1, 1000])
def test_large_and_empty_batches(size):
    texts = ["Word\u00a0w\u00f6rd \u00bd\n" * (i % 7) for i in range(size)]
    _check_lines(texts)
    _check_ngrams(texts)


def test_exact_path_found_at_every_alignment():
    """The ASCII skip reads eight bytes at a time: a code point needing the exact path is found
    whatever its offset in the buffer and in the document."""
    texts = [
        "x" * j + "Ab cd" * (k % 3) + "e\u0301 \u03a3\u03a3 f" + "g" * k for j in range(9) for k in range(17)
    ]
    _check_lines(texts)
    _check_ngrams(texts)
    _check_lines(["y" * 37] + texts[5:])  # shifted starts
