"""The shingle kernel's extended fast path (minhash.shingle_map): every mapped code point, in any
neighbourhood, gives the shingles of the reference definition (NFKC + lower-case, Python \\w)."""

from __future__ import annotations

import unicodedata

import numpy as np
import xxhash

from dcurate.stages.dedup import minhash as mh
from dcurate.stages.dedup import small
from dcurate.text.unicode import fast_path_map

NEIGHBOURS = ["a", "Z", "é", "1", "_", " ", ".", "\u0301", "\u0308", "Σ", "東", "ก", "한", "\u1161", "İ", "\u00a0", "²"]


def _ref(text: str, ngram: int, cjk: bool) -> list[int]:
    return sorted({xxhash.xxh64_intdigest(s.encode()) for s in mh.reference_shingles(text, ngram, cjk_chars=cjk)})


def test_mapped_code_points_follow_their_nfkc_form():
    m, base = mh.shingle_map(), fast_path_map()
    mapped = np.flatnonzero((m >= 0) & (base < 0))
    assert len(mapped) > 100 and {0xA0, 0x2026, 0xB2} <= set(mapped.tolist())
    for cp in mapped.tolist():
        form = unicodedata.normalize("NFKC", chr(cp))
        assert all(base[ord(c)] >= 0 for c in form)
        assert m[cp] == (base[ord(form)] if len(form) == 1 else 0x20)


def test_mapped_code_points_in_every_neighbourhood_equal_the_reference(monkeypatch):
    monkeypatch.setattr(small, "SMALL_TEXT_BYTES", -1)  # the numba kernel, not the small path
    m, base = mh.shingle_map(), fast_path_map()
    mapped = [chr(c) for c in np.flatnonzero((m >= 0) & (base < 0)).tolist()]
    texts = []
    for i, c in enumerate(mapped):
        left, right = NEIGHBOURS[i % len(NEIGHBOURS)], NEIGHBOURS[(i * 7 + 3) % len(NEIGHBOURS)]
        texts += [f"ab{c}cd ef gh", f"x{left}{c}{right}y one two three", f"{c}{c} Word{c}word {right}{c}"]
    for ngram, cjk in ((1, True), (2, False), (5, True)):
        off, h = mh.shingle_hashes(texts, ngram=ngram, cjk_chars=cjk)
        for i, t in enumerate(texts):
            assert h[off[i] : off[i + 1]].tolist() == _ref(t, ngram, cjk), repr(t)


def test_documents_off_the_fast_path_are_normalised_and_put_back_in_place(monkeypatch):
    """Documents with a code point off the fast path (decomposable accents, ligatures, ...) are
    normalised apart from the others; every document's set lands at its own place, whatever the mix."""
    monkeypatch.setattr(small, "SMALL_TEXT_BYTES", -1)
    off = ["ﬁne ﬂow of the ﬁrst words", "Cafe\u0301 au lait and more words", "x" * 3 + " \u2460 circled one two"]
    fast = ["plain ascii words one two three four", "", "caf\u00e9 in composed form here and there", "\u00a0 nbsp ok"]
    rng = np.random.default_rng(3)
    for _ in range(20):
        texts = [str(x) for x in rng.choice(off + fast, size=int(rng.integers(1, 12)))]
        if rng.random() < 0.3:
            texts.append(None)  # type: ignore[arg-type]
        offsets, hashes = mh.shingle_hashes(texts, ngram=3)
        got = [hashes[a:b].tolist() for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
        assert got == [_ref(t or "", 3, True) for t in texts]
