"""dcurate.text.unicode: the cached tables are the builder's, and the two NFKC variants differ as
documented."""

from __future__ import annotations

import unicodedata

import numpy as np
import polars as pl
import pytest

from dcurate.text import unicode as U


def test_unknown_variant_is_an_error():
    with pytest.raises(ValueError, match="unknown NFKC table variant"):
        U.nfkc_lower_table("loose")


def test_variants_differ_as_documented():
    strict = U.fast_path_map()
    nfk, exp_off, exp_cps = U.nfk_tables()
    def expansion(c):
        k = -2 - int(nfk[c])
        assert k >= 0
        return "".join(map(chr, exp_cps[exp_off[k] : exp_off[k + 1]]))

    # "expanding" maps code points NFKC replaces (NO-BREAK SPACE -> space; U+FB01 -> "fi")
    assert strict[0xA0] == -1 and expansion(0xA0) == " "
    assert strict[0xFB01] == -1 and expansion(0xFB01) == "fi"
    # and drops only code points on which polars' Unicode tables disagree with CPython's
    dropped = [chr(c) for c in np.flatnonzero((strict >= 0) & (nfk == -1)).tolist()]
    by_polars = pl.Series(dropped, dtype=pl.String).str.normalize("NFKC").str.to_lowercase().to_list()
    assert all(p != unicodedata.normalize("NFKC", c).lower() for c, p in zip(dropped, by_polars, strict=True))
    # where both map a code point to one code point they agree; neither maps final sigma
    both = (strict >= 0) & (nfk >= 0)
    assert np.array_equal(strict[both], nfk[both])
    assert strict[0x03A3] == -1 and nfk[0x03A3] == -1
    for c in np.flatnonzero(strict[: U.TABLE_LIMIT] >= 0)[::997].tolist():
        assert chr(int(strict[c])) == unicodedata.normalize("NFKC", chr(c)).lower()


@pytest.mark.slow
def test_cached_tables_equal_fresh_builds():
    assert np.array_equal(U.fast_path_map(), U.nfkc_lower_table("strict"))
    nfk, exp_off, exp_cps = U.nfk_tables()
    flat = U.nfkc_lower_table("expanding")
    n = 0x110000
    assert np.array_equal(flat[:n], nfk) and np.array_equal(flat[n + 1 : n + 1 + len(exp_off)], exp_off)
    for cjk in (False, True):
        assert np.array_equal(U.char_classes(cjk), U._build_char_classes(cjk))
    assert np.array_equal(U.rust_classes(), U._build_rust_classes())
