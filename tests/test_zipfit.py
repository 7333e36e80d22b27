"""ZIP-FIT scores: gzip sizes, 1 - NCD aggregation, reused compressor state, reference oracle."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from dcurate.stages.select import zipfit as Z

POOL = [
    "def f(x):\n    return x + 1\n",
    "The cat sat on the mat. " * 20,
    "",
    "Ünïcödé café naïve — ² " * 7,
    "import os\nimport sys\nprint(os.getcwd())\n" * 3,
    "z" * 40_000 + "tail",  # longer than deflate's 32 KiB window
]
TARGETS = [
    "def g(y):\n    return y * 2\n",
    "The dog sat on the log. " * 9,
    "import re\nre.compile('x')\n",
    "a" * 35_000,
]


def _naive(x: str, targets: list[str], level: int) -> float:
    c = lambda s: len(gzip.compress(s.encode("utf-8"), compresslevel=level))  # noqa: E731
    sims = []
    for t in targets:
        cx, ct, cxt = c(x), c(t), c(x + t)
        sims.append(1 - (cxt - min(cx, ct)) / max(cx, ct))
    return float(np.mean(sims))


@pytest.mark.parametrize("level", [1, 6, 9])
def test_compressed_size_is_gzip_length(level):
    for s in POOL:
        assert Z.compressed_size(s.encode(), level) == len(gzip.compress(s.encode(), compresslevel=level))


@pytest.mark.parametrize("level", [1, 9])
def test_scores_equal_naive_concatenation(level):
    ts = Z.TargetSet(TARGETS, level)
    got = ts.scores(POOL)
    want = [_naive(x, TARGETS, level) for x in POOL]
    assert got.tolist() == pytest.approx(want, rel=0, abs=1e-12)


def test_similar_document_scores_higher():
    ts = Z.TargetSet(["The quick brown fox jumps over the lazy dog. " * 10], 9)
    a, b = ts.scores(
        ["The quick brown fox jumps over the lazy cat. " * 10, "0123456789 abcdefghij ~!@#$%^&*" * 10]
    )
    assert a > b


def test_level_zero_refused():
    with pytest.raises(ValueError, match="level 0 stores without compressing"):
        Z.TargetSet(TARGETS, 0)
    with pytest.raises(ValueError):
        Z.check_level(10)


def test_no_targets():
    with pytest.raises(ValueError, match="no target"):
        Z.TargetSet([], 9)


def test_oracle_against_zip_fit_package():
    zf = pytest.importorskip("zip_fit")
    pool = [p for p in POOL if p] + ["Another document about cats and mats.", "SELECT * FROM t WHERE x = 1;"]
    ref = zf.ZIPFIT("unused", "unused", k=len(pool), compress_level=9)
    ranked = ref.rank_sequences_by_alignment(pool, TARGETS)
    ref_scores = {text: score for text, score in ranked}
    ours = Z.TargetSet(TARGETS, 9).scores(pool)
    assert len(ref_scores) == len(pool)
    for text, s in zip(pool, ours, strict=True):
        assert s == pytest.approx(ref_scores[text], rel=1e-12, abs=1e-12)
