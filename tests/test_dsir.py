"""DSIR building blocks: XXH64 kernel, hashed n-gram features, models, weights, noise, KL."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import xxhash

from dcurate.stages.select import dsir
from dcurate.text.keys import seeded_keys

TEXTS = [
    "",
    "Hello, World! Hello again.",
    "From: someone@example.org\nSubject: Re: the <b>markup</b> -- and (parens)...",
    "x" * 31 + " " + "y" * 32 + " " + "z" * 33 + " " + "w" * 70,
    "Ünïcödé text: café, naïve — ﬁne ﬂour ² and الطّوب words",
    "tab\tseparated\x0bvertical\x0cform feed\r\nlines",
    "   leading and trailing   ",
    "a",
]


def _expected_buckets(text: str, nb: int) -> list[int]:
    toks = dsir.tokens_series([text]).to_list()[0]
    grams = toks + [f"{a} {b}" for a, b in zip(toks, toks[1:], strict=False)]
    return [xxhash.xxh64_intdigest(g.encode("utf-8")) % nb for g in grams]


@pytest.mark.parametrize("seed", [0, 1, 12345, 2**63 + 7])
def test_xxh64_matches_xxhash(seed):
    strs = ["", "a", "ab", "abcd", "abcdefgh", "x" * 31, "y" * 32, "z" * 33, "ü" * 40, "0123456789" * 13]
    got = seeded_keys(strs, seed)
    assert [int(v) for v in got] == [xxhash.xxh64_intdigest(s.encode(), seed=seed) for s in strs]


def test_seeded_keys_nulls_and_slices():
    arr = pa.array(["skip", "a", None, "b"])[1:]
    got = seeded_keys(arr, 3)
    assert [int(v) for v in got] == [xxhash.xxh64_intdigest(s.encode(), seed=3) for s in ["a", "", "b"]]


@pytest.mark.parametrize("nb", [10_000, 7, 65_536])
def test_fast_features_match_definition(nb):
    f = dsir.featurize(pa.array(TEXTS), nb)
    assert f.n_docs == len(TEXTS)
    for i, t in enumerate(TEXTS):
        assert f.buckets[f.offsets[i] : f.offsets[i + 1]].tolist() == _expected_buckets(t, nb), t
        assert f.n_words[i] == len(dsir.tokens_series([t]).to_list()[0])


def test_tokens_are_word_punct_runs():
    assert dsir.tokens_series(["Re: it's 3.5 -- OK?!"]).to_list()[0] == [
        "re",
        ":",
        "it",
        "'",
        "s",
        "3",
        ".",
        "5",
        "--",
        "ok",
        "?!",
    ]
    assert dsir.token_counts(pa.array(TEXTS)).tolist() == [
        len(x) for x in dsir.tokens_series(TEXTS).to_list()
    ]


def test_features_do_not_depend_on_batching():
    whole = dsir.featurize(pa.array(TEXTS))
    parts = [dsir.featurize(pa.array(TEXTS[:3])), dsir.featurize(pa.array(TEXTS[3:]))]
    assert np.array_equal(whole.buckets, np.concatenate([p.buckets for p in parts]))
    assert np.array_equal(whole.n_words, np.concatenate([p.n_words for p in parts]))


def test_counts_weights_and_model():
    nb = 50
    f = dsir.featurize(pa.array(TEXTS), nb)
    dense = dsir.doc_counts(f, nb)
    assert np.array_equal(dense.sum(axis=0), dsir.ngram_counts(f, nb))
    mask = np.array([i % 2 == 0 for i in range(len(TEXTS))])
    assert np.array_equal(dense[mask].sum(axis=0), dsir.ngram_counts(f, nb, mask))
    target = dense[1:3].sum(axis=0)
    raw = dense.sum(axis=0)
    table = dsir.log_ratio(target, raw)
    pt, pr = target / target.sum(), raw / raw.sum()
    assert np.allclose(table, np.log(pt + 1e-8) - np.log(pr + 1e-8))
    assert np.allclose(dsir.log_weights(f, table), dense @ table)
    smoothed = dsir.log_ratio(target, raw, laplace=1.0, eps=0.0)
    assert np.allclose(
        smoothed, np.log((target + 1) / (target + 1).sum()) - np.log((raw + 1) / (raw + 1).sum())
    )


def test_gumbel_noise_is_seeded_per_id():
    ids = [f"doc-{i}" for i in range(20_000)]
    a = dsir.gumbel_noise(ids, 0)
    assert np.array_equal(a[5:10], dsir.gumbel_noise(ids[5:10], 0))  # independent of batching
    assert not np.array_equal(a, dsir.gumbel_noise(ids, 1))
    assert np.isfinite(a).all()
    assert abs(a.mean() - 0.5772) < 0.05  # Euler-Mascheroni: the mean of a standard Gumbel
    assert abs(a.var() - np.pi**2 / 6) < 0.1


def test_kl_divergence():
    p = np.array([5, 3, 0, 2])
    assert dsir.kl_divergence(p, p) == pytest.approx(0.0)
    assert dsir.kl_divergence(p, np.array([0, 1, 9, 0])) > 0.5


def test_bad_mode():
    with pytest.raises(ValueError, match="unknown DSIR hash mode"):
        dsir.featurize(["a"], mode="sha1")


def test_reference_mode_matches_data_selection():
    ds = pytest.importorskip("data_selection.hashed_ngram_dsir")
    texts = TEXTS + ["The quick brown fox, jumps over the lazy dog. " * 5, "x = f(a, b) + 1  # code?"]
    for nb in (10_000, 97):
        f = dsir.featurize(texts, nb, mode="reference")
        dense = dsir.doc_counts(f, nb)
        for i, t in enumerate(texts):
            assert np.array_equal(dense[i], ds.get_ngram_counts(t, num_buckets=nb)), t
