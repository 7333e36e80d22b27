"""Tests of dcurate.stages.perplexity.lm: modified Kneser-Ney training checked against hand-computed numbers (and
KenLM's lmplz when available), ARPA round trips and errors, the builtin scorer against kenlm."""

from __future__ import annotations

import math
import os
import random
import shutil
import subprocess
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from dcurate.core.errors import InputError, ModelError
from dcurate.stages.perplexity import lm

# Tiny corpus, order 2. Each line a sentence: <s> b </s> | <s> a </s> | <s> a c </s> | <s> c </s> x2
TINY = [["b"], ["a"], ["a", "c"], ["c"], ["c"]]

# Hand computation (Chen & Goodman modified KN, interpolated, as lmplz):
# bigram raw counts (adjusted = raw at the highest order):
#   <s> b 1, b </s> 1, <s> a 2, a </s> 1, a c 1, c </s> 3, <s> c 2
#   count-of-counts t1=4 t2=2 t3=1 t4=0 -> Y = 4/(4+2*2) = 0.5
#   D1 = 1 - 2*0.5*2/4 = 0.5, D2 = 2 - 3*0.5*1/2 = 1.25, D3 = 3 - 4*0.5*0/1 = 3
# unigram adjusted counts (distinct left neighbours): a {<s>} 1, b {<s>} 1, c {a,<s>} 2,
#   </s> {b,a,c} 3, <s> 0, <unk> 0 -> t1=2 t2=1 t3=1 t4=0 -> Y = 2/(2+2) = 0.5
#   D1 = 1 - 2*0.5*1/2 = 0.5, D2 = 2 - 3*0.5*1/1 = 0.5, D3 = 3 - 0 = 3
# unigrams: denominator 1+1+2+3 = 7, gamma = (0.5*2 + 0.5*1 + 3*1)/7 = 4.5/7,
#   |V| = 5 (<unk>, </s>, a, b, c; <s> excluded) -> uniform share 4.5/35
P_A = (1 - 0.5) / 7 + 4.5 / 35  # = 7/35 = 0.2
P_B = P_A
P_C = (2 - 0.5) / 7 + 4.5 / 35  # = 12/35
P_EOS = (3 - 3) / 7 + 4.5 / 35  # = 4.5/35
P_UNK = 4.5 / 35
# bigram contexts: <s> -> {b:1, a:2, c:2}, denominator 5, gamma = (0.5*1 + 1.25*2)/5 = 0.6
G_BOS = (0.5 * 1 + 1.25 * 2) / 5
P_B_BOS = (1 - 0.5) / 5 + G_BOS * P_B  # 0.22
P_A_BOS = (2 - 1.25) / 5 + G_BOS * P_A  # 0.27
P_C_BOS = (2 - 1.25) / 5 + G_BOS * P_C
# a -> {</s>:1, c:1}, denominator 2, gamma = (0.5 + 0.5)/2 = 0.5
G_A = (0.5 + 0.5) / 2
P_EOS_A = (1 - 0.5) / 2 + G_A * P_EOS
P_C_A = (1 - 0.5) / 2 + G_A * P_C
# b -> {</s>:1}: gamma = 0.5/1;  c -> {</s>:3}: gamma = 3*1/3 = 1
G_B = 0.5 / 1
P_EOS_B = (1 - 0.5) / 1 + G_B * P_EOS
G_C = 3 * 1 / 3
P_EOS_C = (3 - 3) / 3 + G_C * P_EOS

EXPECTED = {
    # n-gram: (probability, back-off or None)
    "<unk>": (P_UNK, 1.0),
    "<s>": (1.0, G_BOS),
    "</s>": (P_EOS, 1.0),
    "a": (P_A, G_A),
    "b": (P_B, G_B),
    "c": (P_C, G_C),
    "<s> b": (P_B_BOS, None),
    "<s> a": (P_A_BOS, None),
    "<s> c": (P_C_BOS, None),
    "a </s>": (P_EOS_A, None),
    "a c": (P_C_A, None),
    "b </s>": (P_EOS_B, None),
    "c </s>": (P_EOS_C, None),
}


def parse_arpa(path: Path) -> dict[str, tuple[float, float | None]]:
    """A deliberately simple ARPA parser for tests (dict of n-gram -> (log10 p, log10 b))."""
    out: dict[str, tuple[float, float | None]] = {}
    section = 0
    for line in path.read_text().splitlines():
        if line.startswith("\\") and line.endswith("-grams:"):
            section = int(line[1:].split("-")[0])
            continue
        if not section or not line or line.startswith("\\"):
            continue
        f = line.split("\t")
        out[f[1]] = (float(f[0]), float(f[2]) if len(f) > 2 else None)
    return out


def random_corpus(seed: int, n: int = 1500, vocab: int = 2000) -> list[list[str]]:
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(vocab)]
    return [
        [words[min(int(rng.paretovariate(0.7)), vocab - 1)] for _ in range(rng.randint(1, 12))]
        for _ in range(n)
    ]


def test_hand_computed_modified_kneser_ney(tmp_path):
    assert abs(P_A + P_B + P_C + P_EOS + P_UNK - 1) < 1e-12  # the hand numbers are a distribution
    m = lm.train_sentences(TINY, 2, discount_fallback=False)
    assert m.discounts[0] == pytest.approx((0.5, 0.5, 3.0))
    assert m.discounts[1] == pytest.approx((0.5, 1.25, 3.0))
    path = tmp_path / "tiny.arpa"
    lm.write_arpa(m, path)
    got = parse_arpa(path)
    assert set(got) == set(EXPECTED)
    for gram, (p, b) in EXPECTED.items():
        assert got[gram][0] == pytest.approx(math.log10(p), abs=1e-6), gram
        if b is None:
            assert got[gram][1] is None, gram
        else:
            assert got[gram][1] == pytest.approx(math.log10(b), abs=1e-6), gram
    head = path.read_text().split("\n\n")[0].splitlines()
    assert head == ["\\data\\", "ngram 1=6", "ngram 2=7"]


def test_hand_computed_scores_builtin_and_kenlm(tmp_path):
    m = lm.train_sentences(TINY, 2, discount_fallback=False)
    path = tmp_path / "tiny.arpa"
    lm.write_arpa(m, path)
    # "a c" then an unknown word "zzz" (blank line in between is skipped)
    want = (
        math.log10(P_A_BOS)
        + math.log10(P_C_A)
        + math.log10(P_EOS_C)  # <s> a c </s>
        + math.log10(G_BOS * P_UNK)
        + math.log10(P_EOS)  # <s> zzz </s>: back off from <s>, <unk> is no context
    )
    tok = lm.Tokenizer()
    model = lm.read_arpa(path)
    sums, lens = model.score_sentences(tok.sentences(["A c\n\nzzz", "", None]))
    assert sums[0] == pytest.approx(want, abs=1e-6)
    assert list(lens) == [5, 0, 0]
    ppl = lm.perplexity(sums, lens)
    assert ppl[0] == pytest.approx(10 ** (-want / 5), rel=1e-6)
    assert np.isnan(ppl[1]) and np.isnan(ppl[2])
    kenlm = pytest.importorskip("kenlm")
    k = kenlm.Model(str(path))
    assert k.score("a c", bos=True, eos=True) + k.score("zzz", bos=True, eos=True) == pytest.approx(
        want, abs=1e-5
    )


def test_discount_fallback():
    with pytest.raises(ModelError, match="discount"):
        lm.train_sentences([["a", "b"], ["a"]], 2, discount_fallback=False)
    m = lm.train_sentences([["a", "b"], ["a"]], 2)
    assert m.discounts == [lm.FALLBACK_DISCOUNTS, lm.FALLBACK_DISCOUNTS]
    assert m.fallback_orders == [1, 2]


def test_arpa_round_trip(tmp_path):
    m = lm.train_sentences(random_corpus(1), 3)
    path = tmp_path / "m.arpa"
    info = lm.write_arpa(m, path, {"note": "x"})
    assert info["counts"] == m.counts() and info["note"] == "x"
    assert lm.read_sidecar(path)["order"] == 3
    model = lm.read_arpa(path)
    assert model.order == 3 and model.counts == m.counts()
    text = parse_arpa(path)
    # every n-gram of the file is in the model with the same numbers
    vid = {w: i for i, w in enumerate(model.vocab)}
    for gram, (p, b) in list(text.items())[:: max(1, len(text) // 300)]:
        ws = gram.split(" ")
        gid = vid[ws[0]]
        for j, w in enumerate(ws[1:], start=1):
            key = gid * len(model.vocab) + vid[w]
            gid = int(np.searchsorted(model.keys[j], key))
            assert model.keys[j][gid] == key
        n = len(ws)
        assert model.logprob[n - 1][gid] == pytest.approx(p, abs=1e-7)
        assert model.backoff[n - 1][gid] == pytest.approx(b or 0.0, abs=1e-7)


def test_tokenizer_lines_and_normalisation():
    s = lm.Tokenizer().sentences(["Ｈello, World!\n\n  \nsecond line", "", None, "x"])
    assert s.tokens.to_list() == [["hello", "world"], ["second", "line"], ["x"]]
    assert s.doc.tolist() == [0, 0, 3] and s.n_docs == 4
    assert s.joined() == ["hello world", "second line", "x"]


def test_sentencepiece_errors(tmp_path):
    try:
        import sentencepiece  # noqa: F401
    except ImportError:
        with pytest.raises(ModelError, match="pip install sentencepiece"):
            lm.Tokenizer(str(tmp_path / "sp.model"))
    else:
        with pytest.raises(ModelError, match="not found"):
            lm.Tokenizer(str(tmp_path / "sp.model"))


def test_empty_training_text():
    with pytest.raises(InputError, match="no tokens"):
        lm.train([["", "  \n "]], order=3)


def test_prune_rules():
    sents = random_corpus(2, 500)
    full = lm.train_sentences(sents, 3)
    pruned = lm.train_sentences(sents, 3, prune=[0, 1, 1])
    assert pruned.counts()[0] == full.counts()[0]
    assert pruned.counts()[1] < full.counts()[1] and pruned.counts()[2] < full.counts()[2]
    with pytest.raises(ModelError, match="unigrams"):
        lm.train_sentences(sents, 3, prune=[1, 1, 1])
    with pytest.raises(ModelError, match="decrease"):
        lm.train_sentences(sents, 3, prune=[0, 2, 1])


# -- ARPA errors ---------------------------------------------------------------------------------

GOOD = """\\data\\
ngram 1=3
ngram 2=1

\\1-grams:
-1.0\t<s>\t-0.5
-0.5\t</s>
-0.7\ta\t-0.2

\\2-grams:
-0.3\t<s> a

\\end\\
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "x.arpa"
    p.write_text(text)
    return p


def test_arpa_minimal_and_unk_added(tmp_path):
    m = lm.read_arpa(write(tmp_path, GOOD))
    assert m.order == 2 and m.vocab[-1] == "<unk>" and m.logprob[0][-1] == -100.0


@pytest.mark.parametrize(
    "text, line, match",
    [
        (GOOD.replace("\\data\\", "data"), 1, "expected '\\\\data\\\\'"),
        (GOOD.replace("ngram 2=1", "ngram 3=1"), 3, "expected 'ngram 2=COUNT'"),
        (GOOD.replace("ngram 2=1", "ngram 2=x"), 3, "malformed count line"),
        (GOOD.replace("ngram 1=3", "ngram 1=4"), 6, "section has 3 entries"),
        (GOOD.replace("\\2-grams:", "\\3-grams:"), 10, "expected section header '\\\\2-grams:'"),
        (GOOD.replace("-0.3\t<s> a", "-0.3\t<s> a a"), 11, "malformed entry|non-numeric"),
        (GOOD.replace("-0.3\t<s> a", "-0.3\t<s>"), 11, "malformed entry"),
        (GOOD.replace("-0.5\t</s>", "x\t</s>"), 7, "non-numeric"),
        (GOOD.replace("-0.3\t<s> a", "-0.3\t<s> b"), 11, "missing from the unigrams"),
        (GOOD.replace("\\end\\", "\\3-grams:"), 13, "expected '\\\\end\\\\'"),
        (GOOD.replace("\\end\\\n", ""), 13, "not followed by"),
        (GOOD.replace("-0.7\ta\t-0.2", "-0.7\ta\t-0.2\n\n-0.1\tb"), 9, "blank line inside"),
    ],
)
def test_arpa_errors_name_the_line(tmp_path, text, line, match):
    with pytest.raises(ModelError, match=match) as e:
        lm.read_arpa(write(tmp_path, text))
    assert f"x.arpa:{line}:" in str(e.value)


def test_arpa_wrong_order_and_bad_files(tmp_path):
    with pytest.raises(ModelError, match="order 2, expected 3"):
        lm.read_arpa(write(tmp_path, GOOD), expected_order=3)
    with pytest.raises(ModelError, match="not found"):
        lm.read_arpa(tmp_path / "missing.arpa")
    b = tmp_path / "bin.arpa"
    b.write_bytes(b"mmap lm http://kheafield.com/code format version 5\x00\xff\xfe")
    with pytest.raises(ModelError, match="UTF-8"):
        lm.read_arpa(b)


# -- oracles --------------------------------------------------------------------------------------


def test_builtin_scorer_matches_kenlm(tmp_path):
    kenlm = pytest.importorskip("kenlm")
    for order in (2, 3, 5):
        m = lm.train_sentences(random_corpus(order), order)
        path = tmp_path / f"m{order}.arpa"
        lm.write_arpa(m, path)
        k = kenlm.Model(str(path))
        model = lm.read_arpa(path)
        test = random_corpus(100 + order, 300, 2300)  # includes words the model has not seen
        want = np.array([k.score(" ".join(s), bos=True, eos=True) for s in test])
        sent = lm.Sentences.from_tokens(pl.Series(test), np.arange(len(test)), len(test))
        got, lens = model.score_sentences(sent)
        assert list(lens) == [len(s) + 1 for s in test]
        ppl_k = 10 ** (-want / lens)
        ppl_b = 10 ** (-got / lens)
        assert np.max(np.abs(ppl_b - ppl_k) / ppl_k) < 1e-4


def _lmplz() -> str | None:
    return os.environ.get("DCURATE_LMPLZ") or shutil.which("lmplz")


@pytest.mark.skipif(_lmplz() is None, reason="KenLM lmplz not found (set DCURATE_LMPLZ or put lmplz on PATH)")
@pytest.mark.parametrize("order, prune", [(2, None), (3, None), (5, None), (3, [0, 1, 1]), (4, [0, 0, 1, 2])])
def test_same_arpa_as_lmplz(tmp_path, order, prune):
    sents = random_corpus(7, 3000, 3000)
    txt = tmp_path / "c.txt"
    txt.write_text("".join(" ".join(s) + "\n" for s in sents))
    ref = tmp_path / "ref.arpa"
    cmd = [
        _lmplz(),
        "-o",
        str(order),
        "--text",
        str(txt),
        "--arpa",
        str(ref),
        "-S",
        "5%",
        "--discount_fallback",
    ]
    if prune:
        cmd += ["--prune", *map(str, prune)]
    subprocess.run(cmd, check=True, capture_output=True)
    mine = tmp_path / "mine.arpa"
    lm.write_arpa(lm.train_sentences(sents, order, prune=prune), mine)
    a, b = parse_arpa(mine), parse_arpa(ref)
    assert set(a) == set(b)
    for g in b:
        assert a[g][0] == pytest.approx(b[g][0], abs=2e-6), g
        assert (a[g][1] or 0.0) == pytest.approx(b[g][1] or 0.0, abs=2e-6), g


def test_tokenizer_matches_scalar_words_on_unicode():
    from dcurate.text import normalize as text

    docs = [
        "Ｆｕｌｌ width, ﬁne ligature and x² superscript",
        "café e\u0301 combining; İstanbul ΟΔΟΣ final sigma\nsnake_case 3.14 -- don't",
        "tab\tseparated\r\nwindows line",
        "日本語のテキスト 和 emoji 🙂 ok",
    ]
    got = lm.Tokenizer().sentences(docs)
    want = [" ".join(text.WORD_RE.findall(line)) for d in docs for line in text.normalize(d).split("\n")]
    assert got.joined() == [w for w in want if w]
    assert got.ntok.tolist() == [len(w.split(" ")) for w in want if w]


def test_sentences_from_tokens_slices_and_bytes():
    toks = pl.Series([["x", "y"], ["a", "b"], [], ["c"]], dtype=pl.List(pl.String))[1:]
    s = lm.Sentences.from_tokens(toks, np.array([0, 1, 2]), 3)
    assert s.joined() == ["a b", "c"]
    assert s.encoded() == [b"a b", b"c"]
    assert s.doc.tolist() == [0, 2] and s.ntok.tolist() == [2, 1] and len(s) == 2
    assert s.tokens.to_list() == [["a", "b"], ["c"]]
    empty = lm.Sentences.from_tokens(pl.Series([[]], dtype=pl.List(pl.String)), np.array([0]), 1)
    assert len(empty) == 0 and empty.joined() == [] and empty.encoded() == []
