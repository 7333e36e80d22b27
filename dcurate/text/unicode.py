"""dcurate's one set of Unicode tables: per-code-point arrays the compiled tokenisers index, built
once per Unicode version and cached on disk by :func:`disk_cached`.

Word-character classes (which code points make words; :mod:`dcurate.text.tokenizers` says which
tokeniser uses which):

* :func:`char_classes` -- ``uint8``: 0 separator, 1 word character under **Python** ``re``'s ``\\w``
  (``str.isalnum()`` or ``_``), 2 word character of a script written without spaces
  (:data:`NO_SPACE_RANGES`) when ``cjk_chars``. :func:`python_word` is its 0/1 form.
* :func:`rust_classes` -- ``uint8`` under the **Rust** regex engine polars uses: 0 ``\\s``,
  1 ``\\w``, 2 anything else. The two ``\\w`` differ on rare code points (Python's also matches
  numeric symbols such as superscripts; Rust's also matches combining marks).
* :data:`NO_SPACE_RANGES` -- the scripts whose word characters are single tokens.

NFKC + lower-case tables (``int32`` per code point), two named variants of one builder,
:func:`nfkc_lower_table`:

* ``"strict"`` (:func:`fast_path_map`; dedup's shingles): the lower-case form of a code point that
  NFKC leaves unchanged and that never composes with a neighbour, else -1. A text of such code points
  is normalised code point by code point; any other text is normalised by CPython first.
* ``"expanding"`` (:func:`nfk_tables`; CCNet lines and DSIR): starts from ``"strict"`` and also maps
  a starter that NFKC *replaces* (NO-BREAK SPACE, superscripts, ligatures, full-width forms, ...) to
  its lower-cased replacement (``<= -2``: index of an expansion, a code point sequence stored after
  the table); then every mapped entry is checked against both CPython and polars and set to -1
  where either disagrees (those two kernels fall back to either engine). So it is neither a subset
  nor a superset of ``"strict"``: it maps more code points, and drops a few that polars' Unicode
  tables treat differently. Both are kept because dedup's kernel reads single code points only and
  must not depend on polars' Unicode version; changing either would change outputs.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable

import numpy as np

__all__ = [
    "NO_SPACE_RANGES",
    "TABLE_LIMIT",
    "MAX_GROWTH",
    "NFKC_VARIANTS",
    "disk_cached",
    "char_classes",
    "python_word",
    "rust_classes",
    "nfkc_lower_table",
    "fast_path_map",
    "nfk_tables",
    "polars_version",
]

# Word characters of scripts written without spaces, tokenised one character at a time when
# cjk_chars=True (inclusive code point ranges).
NO_SPACE_RANGES = (
    (0x0E00, 0x0E7F),  # Thai
    (0x0E80, 0x0EFF),  # Lao
    (0x1000, 0x109F),  # Myanmar
    (0x1780, 0x17FF),  # Khmer
    (0x3040, 0x309F),  # Hiragana
    (0x30A0, 0x30FF),  # Katakana
    (0x31F0, 0x31FF),  # Katakana phonetic extensions
    (0x3400, 0x4DBF),  # CJK unified ideographs extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0xFF66, 0xFF9F),  # half-width Katakana (NFKC maps most of them to full width)
    (0x20000, 0x3FFFF),  # CJK extensions B and later, compatibility supplement
)

TABLE_LIMIT = 0x40000  # no code point at or above this is a word character (checked in tests)
_TABLE_VERSION = 1  # bump when the strict tables (classes, "strict" NFKC) change
_NFK_VERSION = 2  # bump when the "expanding" NFKC table changes
#: Output bytes per input byte the kernels reserve: an expansion is kept in the "expanding" table only
#: when its UTF-8 bytes plus one separating space per code point fit in this many times the input's.
MAX_GROWTH = 4
NFKC_VARIANTS = ("strict", "expanding")


def disk_cached(name: str, build: Callable[[], np.ndarray]) -> np.ndarray:
    """``build()``, cached as ``.npy`` next to numba's cache (``__pycache__`` of this package, or
    ``$DCURATE_CACHE_DIR``), keyed by the Unicode version of this Python: building the tables
    takes ~0.3 s per process, loading them a few ms. Any I/O problem falls back to building."""
    import hashlib
    import os
    from pathlib import Path

    key = hashlib.sha1(
        repr((name, _TABLE_VERSION, unicodedata.unidata_version, TABLE_LIMIT, NO_SPACE_RANGES)).encode()
    ).hexdigest()[:16]
    folder = Path(os.environ.get("DCURATE_CACHE_DIR") or Path(__file__).parent / "__pycache__")
    path = folder / f"text-{name}-{key}.npy"
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        pass
    table = build()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.save(f, table, allow_pickle=False)
        os.replace(tmp, path)
    except OSError:
        pass
    return table


def polars_version() -> str:
    """The installed polars version (tables checked against polars are keyed by it)."""
    from importlib.metadata import version

    try:
        return version("polars")
    except Exception:  # noqa: BLE001 - a vendored polars without metadata
        import polars

        return str(polars.__version__)


# -- word classes -----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=2)
def char_classes(cjk_chars: bool) -> np.ndarray:
    """``uint8`` per code point: 0 separator, 1 Python ``\\w``, 2 single-character token."""
    return disk_cached(f"classes{int(cjk_chars)}", lambda: _build_char_classes(cjk_chars))


def _build_char_classes(cjk_chars: bool) -> np.ndarray:
    """Word characters are exactly Python ``re``'s ``\\w`` (computed by running ``re`` over every
    code point below ``TABLE_LIMIT``)."""
    chars = "".join(map(chr, range(TABLE_LIMIT))).replace("\x01", "\x02")
    marked = re.sub(r"\w", "\x01", chars).encode("utf-32-le", "surrogatepass")
    cls = np.zeros(0x110000, dtype=np.uint8)
    cls[:TABLE_LIMIT] = np.frombuffer(marked, dtype=np.uint32) == 1
    if cjk_chars:
        for lo, hi in NO_SPACE_RANGES:
            seg = cls[lo : hi + 1]
            seg[seg == 1] = 2
    return cls


@functools.lru_cache(maxsize=1)
def python_word() -> np.ndarray:
    """``uint8`` per code point: 1 for Python's ``\\w`` (``str.isalnum()`` or ``_``), else 0."""
    return (char_classes(False) == 1).astype(np.uint8)


@functools.lru_cache(maxsize=1)
def rust_classes() -> np.ndarray:
    """``uint8`` per code point under the Rust regex engine (polars): 0 ``\\s``, 1 ``\\w``, 2 other."""
    return disk_cached(f"rustcls1-pl{polars_version()}", _build_rust_classes)


def _build_rust_classes() -> np.ndarray:
    import polars as pl

    cps = np.concatenate([np.arange(0, 0xD800), np.arange(0xE000, 0x110000)])
    s = pl.Series([chr(c) for c in cps], dtype=pl.String)
    word = s.str.contains(r"^\w$").to_numpy()
    space = s.str.contains(r"^\s$").to_numpy()
    cls = np.full(0x110000, 2, dtype=np.uint8)
    cls[cps[space]] = 0
    cls[cps[word]] = 1
    return cls


# -- NFKC + lower-case ------------------------------------------------------------------------------


def _second_halves() -> np.ndarray:
    """Bool per code point below ``TABLE_LIMIT``: the second element of a canonical two-character
    decomposition, or a Hangul vowel / trailing jamo (a preceding character can compose with it)."""
    out = np.zeros(TABLE_LIMIT, dtype=np.bool_)
    for c in range(TABLE_LIMIT):
        dec = unicodedata.decomposition(chr(c))
        if dec and dec[0] != "<":
            parts = dec.split()
            if len(parts) == 2:
                out[int(parts[1], 16)] = True
    out[0x1160:0x1200] = True
    return out


def nfkc_lower_table(variant: str) -> np.ndarray:
    """Build one NFKC + lower-case table (see the module docstring for the variants).

    ``"strict"``: ``int32[0x110000]``, the lower-case code point or -1. ``"expanding"``: one ``int32``
    array, ``[0:0x110000]`` the entries (``>= 0`` a code point, -1 exact path, ``<= -2`` expansion
    ``-2 - v``), then the number of expansion offsets, the offsets and the expansions' code points
    (:func:`nfk_tables` splits it). Uncached: use :func:`fast_path_map` / :func:`nfk_tables`."""
    if variant == "strict":
        return _build_strict(_second_halves())
    if variant == "expanding":
        return _build_expanding(fast_path_map(), _second_halves())
    raise ValueError(f"unknown NFKC table variant {variant!r}; use one of {', '.join(NFKC_VARIANTS)}")


@functools.lru_cache(maxsize=1)
def fast_path_map() -> np.ndarray:
    """The ``"strict"`` NFKC + lower-case table (dedup)."""
    return disk_cached("fastpath", lambda: nfkc_lower_table("strict"))


@functools.lru_cache(maxsize=1)
def nfk_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``"expanding"`` table as ``(nfk, exp_off, exp_cps)``: per code point its normalised form;
    expansion ``k`` is ``exp_cps[exp_off[k]:exp_off[k + 1]]``."""
    # keyed by polars' version too: the table is cross-checked against its Unicode tables
    flat = disk_cached(f"nfk{_NFK_VERSION}-pl{polars_version()}", lambda: nfkc_lower_table("expanding"))
    n = 0x110000
    table = flat[:n]
    k = int(flat[n])
    exp_off = flat[n + 1 : n + 1 + k]
    exp_cps = flat[n + 1 + k :]
    if len(exp_cps) == 0:
        exp_cps = np.zeros(1, dtype=np.int32)
    return table, exp_off, exp_cps


def _build_strict(halves: np.ndarray) -> np.ndarray:
    """A code point is on the strict fast path when NFKC maps it to itself, its combining class is 0,
    it is not the second half of a canonical composition (so it never merges with its neighbour;
    Hangul vowel and trailing jamo included), and ``str.lower`` maps it to one code point without
    context (the final-sigma rule excludes U+03A3). This is the Unicode quick-check idea, restricted
    to starters so that no reordering can occur."""
    n = TABLE_LIMIT
    chars = [chr(c) for c in range(n)]
    chars[0] = "a"  # NUL is the joiner below; set by hand
    for c in range(0xD800, 0xE000):
        chars[c] = "a"  # surrogates never occur in valid UTF-8
    joined = "\x00".join(chars)
    nf = unicodedata.normalize("NFKC", joined).split("\x00")
    low = joined.lower().split("\x00")
    assert len(nf) == n and len(low) == n
    ok = np.fromiter(map(str.__eq__, nf, chars), dtype=np.bool_, count=n)
    ok &= np.fromiter(map(unicodedata.combining, chars), dtype=np.int64, count=n) == 0
    ok &= np.fromiter(map(len, low), dtype=np.int64, count=n) == 1
    ok &= ~halves
    ok[0x03A3] = False  # final sigma: context-dependent lower-casing
    ok[0xD800:0xE000] = False
    out = np.full(0x110000, -1, dtype=np.int32)
    lowered = np.array([ord(x) if len(x) == 1 else -1 for x in low], dtype=np.int32)
    out[:n] = np.where(ok, lowered, -1)
    out[0] = 0
    return out


def _build_expanding(fast: np.ndarray, halves: np.ndarray) -> np.ndarray:
    import polars as pl

    table = fast.copy()
    table[TABLE_LIMIT:] = -1
    exp_off = [0]
    exp_cps: list[int] = []
    cands = [
        c
        for c in range(1, TABLE_LIMIT)
        if table[c] < 0
        and not 0xD800 <= c < 0xE000
        and unicodedata.category(chr(c)) != "Cn"
        and unicodedata.combining(chr(c)) == 0
        and not halves[c]
    ]
    for c in cands:
        nf = unicodedata.normalize("NFKC", chr(c))
        if nf == chr(c) or not nf:
            continue
        mapped = [int(fast[ord(d)]) for d in nf]
        if any(m < 0 for m in mapped) or 10 in mapped:
            continue
        if ord(nf[0]) < TABLE_LIMIT and halves[ord(nf[0])]:
            continue
        width = len(chr(c).encode("utf-8"))
        grown = sum(len(chr(m).encode("utf-8")) + 1 for m in mapped)
        if grown > MAX_GROWTH * width:
            continue
        table[c] = -2 - (len(exp_off) - 1)
        exp_cps.extend(mapped)
        exp_off.append(len(exp_cps))
    # Cross-check every supported code point against CPython and polars (the fallback engines).
    cps = np.flatnonzero(table[:TABLE_LIMIT] != -1)
    cps = cps[(cps < 0xD800) | (cps >= 0xE000)]
    chars = pl.Series([chr(c) for c in cps], dtype=pl.String)
    want = chars.str.normalize("NFKC").str.to_lowercase().to_list()
    offs = np.asarray(exp_off, dtype=np.int64)
    for c, w in zip(cps.tolist(), want, strict=True):
        v = int(table[c])
        got = chr(v) if v >= 0 else "".join(chr(x) for x in exp_cps[offs[-2 - v] : offs[-1 - v]])
        py = unicodedata.normalize("NFKC", chr(c)).lower()
        if got != w or got != py:
            table[c] = -1
    table[0] = 0
    head = np.asarray([len(exp_off)], dtype=np.int32)
    return np.concatenate(
        [table, head, np.asarray(exp_off, dtype=np.int32), np.asarray(exp_cps, dtype=np.int32)]
    ).astype(np.int32)
