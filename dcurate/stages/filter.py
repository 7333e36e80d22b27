"""``filter``: rule-based document filters (Gopher quality and repetition rules, C4 rules) and
``keep_if`` thresholds on existing columns.

Sources of the rules and their published defaults:

* **Gopher** -- Rae et al. 2021, "Scaling Language Models: Methods, Analysis & Insights from
  Training Gopher", Appendix A.1.1 (quality filters) and Table A1 (repetition removal).
* **C4** -- Raffel et al. 2020, "Exploring the Limits of Transfer Learning with a Unified
  Text-to-Text Transformer" (T5), Section 2.2.

Every rule is one parameter; setting it to ``None`` (``null`` in YAML, ``none`` on the command
line, ``--no-x`` for switches) turns it off. ``preset`` chooses which rules are on; ``rules`` adds
more by name. A document is dropped by the *first* rule it fails, in the order of :data:`RULES`
(cheap document-level checks first), and the drop reason is ``filter.<rule>`` (n-gram rules name
their n: ``filter.max_top_2gram_char_frac``).

Text model (shared with the other stages through :mod:`dcurate.text`): *words* are the runs of
Unicode word characters (``\\w+``) of the NFKC-lower-cased text, so punctuation never counts as
or inside a word; *lines* split at ``\\n`` and a line is counted only if it has a non-space
character; *paragraphs* split at blank lines. When C4 line rules are on, they run first and every
later rule sees the cleaned text, which is also what is written out.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
import polars as pl
import pyarrow as pa

from .. import expr as _expr
from ..params import param
from ..stage import Result, ShardInfo, Stage, register, with_column
from ..text import WORD_PATTERN, normalize_series

# -- published defaults ----------------------------------------------------------------------------

GOPHER_STOP_WORDS = ["the", "be", "to", "of", "and", "that", "have", "with"]
# Gopher Table A1: fraction of characters in the most common word n-gram, n = 2, 3, 4.
GOPHER_TOP_NGRAM = {"2": 0.20, "3": 0.18, "4": 0.16}
# Gopher Table A1: fraction of characters in duplicated word n-grams, n = 5..10.
GOPHER_DUP_NGRAM = {"5": 0.15, "6": 0.14, "7": 0.13, "8": 0.12, "9": 0.11, "10": 0.10}
# C4 (T5 sec. 2.2): lines containing these boilerplate policy strings are removed.
C4_POLICY_STRINGS = [
    "terms of use",
    "privacy policy",
    "cookie policy",
    "uses cookies",
    "use of cookies",
    "use cookies",
]
# C4: a line is kept only if it ends in a terminal punctuation mark: period, exclamation mark,
# question mark or end quotation mark (ASCII '"' or the typographic closing quote).
C4_TERMINAL_PUNCT = '.!?"”'
# Gopher: lines "starting with a bullet point" -- common bullet characters, after indentation.
BULLETS = "•‣⁃◦▪▫●○■□➢➤►▶-*·–"

# Rules in evaluation order: (rule, group, level). The rule name is the parameter name.
RULES: list[tuple[str, str, str]] = [
    ("keep_if", "keep_if", "doc"),
    ("c4_lorem_ipsum", "c4", "doc"),
    ("c4_curly_brace", "c4", "doc"),
    ("c4_javascript_lines", "c4", "line"),
    ("c4_policy_lines", "c4", "line"),
    ("c4_terminal_punct", "c4", "line"),
    ("c4_min_words_per_line", "c4", "line"),
    ("c4_min_sentences", "c4", "doc"),
    ("min_words", "gopher", "doc"),
    ("max_words", "gopher", "doc"),
    ("min_mean_word_length", "gopher", "doc"),
    ("max_mean_word_length", "gopher", "doc"),
    ("max_symbol_word_ratio", "gopher", "doc"),
    ("max_bullet_lines_frac", "gopher", "doc"),
    ("max_ellipsis_lines_frac", "gopher", "doc"),
    ("min_alpha_words_frac", "gopher", "doc"),
    ("min_stop_words", "gopher", "doc"),
    ("max_dup_line_frac", "gopher-repetition", "doc"),
    ("max_dup_para_frac", "gopher-repetition", "doc"),
    ("max_dup_line_char_frac", "gopher-repetition", "doc"),
    ("max_dup_para_char_frac", "gopher-repetition", "doc"),
    ("max_top_ngram_char_frac", "gopher-repetition", "doc"),
    ("max_dup_ngram_char_frac", "gopher-repetition", "doc"),
]
RULE_NAMES = [r for r, _, _ in RULES if r != "keep_if"]
_GROUP = {r: g for r, g, _ in RULES}


def _group(*groups: str) -> list[str]:
    return [r for r in RULE_NAMES if _GROUP[r] in groups]


PRESETS: dict[str, list[str]] = {
    "gopher": _group("gopher"),
    "gopher-repetition": _group("gopher-repetition"),
    "gopher-all": _group("gopher", "gopher-repetition"),
    "c4": _group("c4"),
    "gopher+c4": _group("gopher", "c4"),
    "all": _group("gopher", "gopher-repetition", "c4"),
    "none": [],
}


@dataclass
class FilterParams:
    preset: str = param(
        "gopher",
        "Rule set: gopher (Gopher quality rules), gopher-repetition (Gopher repetition rules), "
        "gopher-all (both), c4 (C4 line/document rules), gopher+c4, all, none (no rules: "
        "pass-through, or keep_if only). Default: gopher.",
        choices=list(PRESETS),
    )
    rules: list[str] = param(
        [],
        "Extra rules to turn on besides the preset's, by parameter name (e.g. c4_curly_brace,max_dup_line_frac).",
    )
    keep_if: str | None = param(
        None,
        "Keep only rows where this expression over columns is true, e.g. 'quality_score >= 0.5 and "
        'domain != "code"\' (and/or/not, == != < <= > >=, in (...), is null, + - * /); rows where it '
        "is null are dropped. Checked before all rules; combine with --preset none to only re-threshold.",
    )
    # Gopher quality filters (Rae et al. 2021, App. A.1.1)
    min_words: int | None = param(50, "Drop documents with fewer words. Gopher: 50.", min=0)
    max_words: int | None = param(100_000, "Drop documents with more words. Gopher: 100,000.", min=0)
    min_mean_word_length: float | None = param(
        3.0, "Drop documents whose mean word length (characters) is below this. Gopher: 3.", min=0
    )
    max_mean_word_length: float | None = param(
        10.0, "Drop documents whose mean word length is above this. Gopher: 10.", min=0
    )
    max_symbol_word_ratio: float | None = param(
        0.1,
        "Drop documents where '#' count / words or ellipsis ('...', '…') count / words exceeds this. Gopher: 0.1.",
        min=0,
    )
    max_bullet_lines_frac: float | None = param(
        0.9,
        "Drop documents where more than this fraction of lines start with a bullet point. Gopher: 0.9.",
        min=0,
        max=1,
    )
    max_ellipsis_lines_frac: float | None = param(
        0.3,
        "Drop documents where more than this fraction of lines end with an ellipsis. Gopher: 0.3.",
        min=0,
        max=1,
    )
    min_alpha_words_frac: float | None = param(
        0.8,
        "Drop documents where fewer than this fraction of words contain an alphabetic character. Gopher: 0.8.",
        min=0,
        max=1,
    )
    min_stop_words: int | None = param(
        2, "Drop documents with fewer occurrences of the stop words (stop_words). Gopher: 2.", min=0
    )
    stop_words: list[str] = param(
        list(GOPHER_STOP_WORDS),
        "Stop words counted by min_stop_words. Gopher: the,be,to,of,and,that,have,with.",
    )
    # Gopher repetition removal (Rae et al. 2021, Table A1)
    max_dup_line_frac: float | None = param(
        0.30,
        "Drop documents where more than this fraction of lines repeat an earlier line. Gopher: 0.30.",
        min=0,
        max=1,
    )
    max_dup_para_frac: float | None = param(
        0.30,
        "Drop documents where more than this fraction of paragraphs repeat an earlier one. Gopher: 0.30.",
        min=0,
        max=1,
    )
    max_dup_line_char_frac: float | None = param(
        0.20,
        "Drop documents where repeated lines hold more than this fraction of the characters. Gopher: 0.20.",
        min=0,
        max=1,
    )
    max_dup_para_char_frac: float | None = param(
        0.20,
        "Drop documents where repeated paragraphs hold more than this fraction of the characters. Gopher: 0.20.",
        min=0,
        max=1,
    )
    max_top_ngram_char_frac: dict[str, float] | None = param(
        dict(GOPHER_TOP_NGRAM),
        "n=limit: drop documents where the most frequent word n-gram covers more than limit of the word characters. Gopher: 2=0.20,3=0.18,4=0.16.",
    )
    max_dup_ngram_char_frac: dict[str, float] | None = param(
        dict(GOPHER_DUP_NGRAM),
        "n=limit: drop documents where repeated word n-grams cover more than limit of the word characters. "
        "Gopher: 5=0.15,6=0.14,7=0.13,8=0.12,9=0.11,10=0.10.",
    )
    # C4 (Raffel et al. 2020, sec. 2.2)
    c4_lorem_ipsum: bool | None = param(True, "Drop documents containing 'lorem ipsum' (any case). C4: on.")
    c4_curly_brace: bool | None = param(True, "Drop documents containing a curly brace '{' (code). C4: on.")
    c4_javascript_lines: bool | None = param(
        True, "Remove lines containing the word 'javascript' (any case). C4: on."
    )
    c4_policy_lines: bool | None = param(
        True,
        "Remove lines containing 'terms of use', 'privacy policy', 'cookie policy', 'uses cookies', 'use of cookies' or 'use cookies'. C4: on.",
    )
    c4_terminal_punct: bool | None = param(
        True, "Remove lines not ending in a terminal punctuation mark (. ! ? or closing quote). C4: on."
    )
    c4_min_words_per_line: int | None = param(
        3,
        "Remove lines with fewer words. C4 paper: 3 (the TFDS code that built the released C4 uses 5).",
        min=0,
    )
    c4_min_sentences: int | None = param(
        5, "After line removal, drop documents with fewer sentences. C4 paper: 5 (TFDS code: 3).", min=0
    )

    def validate(self) -> None:
        unknown = [r for r in self.rules if r not in RULE_NAMES]
        if unknown:
            raise ValueError(
                f"parameter 'rules': unknown rule(s) {', '.join(unknown)}; allowed: {', '.join(RULE_NAMES)}"
            )
        for name in ("max_top_ngram_char_frac", "max_dup_ngram_char_frac"):
            d = getattr(self, name)
            for k, v in (d or {}).items():
                if not str(k).isdigit() or not 1 <= int(k) <= 64:
                    raise ValueError(f"parameter '{name}': n-gram size must be an integer 1..64, got {k!r}")
                if not 0 <= v <= 1:
                    raise ValueError(f"parameter '{name}': limit for n={k} must be in [0, 1], got {v}")
        if self.keep_if is not None:
            _expr.parse(self.keep_if)
        # A threshold changed for a rule that is not on would silently do nothing: say so.
        active = set(self.active_rules())
        defaults = {
            f.name: (f.default if f.default is not dataclasses.MISSING else f.default_factory())
            for f in dataclasses.fields(self)
        }
        for r in RULE_NAMES:
            v = getattr(self, r)
            if r not in active and v is not None and v is not False and v != defaults[r]:
                raise ValueError(
                    f"parameter '{r}' is set but rule '{r}' is not on in preset '{self.preset}'; "
                    f"add it with rules: [{r}] (--rules {r}) or choose a preset that includes it"
                )

    def active_rules(self) -> list[str]:
        """The rules that run, in evaluation order (the preset's plus ``rules``, minus disabled)."""
        on = set(PRESETS[self.preset]) | set(self.rules)
        out = []
        for r in RULE_NAMES:
            v = getattr(self, r)
            if r in on and v is not None and v is not False and v != {}:
                out.append(r)
        return out


# -- vectorised measurements -------------------------------------------------------------------------


def _texts(batch: pa.RecordBatch, field: str) -> pl.Series:
    col = batch.column(field)
    if not (
        pa.types.is_string(col.type)
        or pa.types.is_large_string(col.type)
        or pa.types.is_string_view(col.type)
    ):
        from ..errors import InputError

        raise InputError(f"filter: text field '{field}' has type {col.type}, expected string")
    return pl.Series(values=col).fill_null("")


def c4_clean_lines(text: pl.Series, p: FilterParams, active: set[str]) -> tuple[pl.Series, int]:
    """Apply the C4 line rules; return the cleaned texts and the number of lines removed.

    Kept lines are stripped of surrounding whitespace (as C4 does); blank lines are kept as
    paragraph breaks, with runs of them collapsed to one and none at the start or end."""
    df = pl.DataFrame({"line": text}).with_row_index("i")
    df = (
        df.with_columns(pl.col("line").str.split("\n"))
        .explode("line")
        .with_columns(pl.col("line").fill_null("").str.strip_chars())
    )
    keep = pl.lit(True)
    if "c4_javascript_lines" in active:
        keep = keep & ~pl.col("line").str.contains("(?i)javascript")
    if "c4_policy_lines" in active:
        keep = keep & ~pl.col("line").str.contains_any(C4_POLICY_STRINGS, ascii_case_insensitive=True)
    if "c4_terminal_punct" in active:
        keep = keep & pl.col("line").str.contains(f"[{re.escape(C4_TERMINAL_PUNCT)}]$")
    if "c4_min_words_per_line" in active:
        keep = keep & (pl.col("line").str.count_matches(WORD_PATTERN) >= p.c4_min_words_per_line)
    blank = pl.col("line") == ""
    df = df.with_columns(keep=keep | blank)  # blank lines stay as paragraph separators
    removed = int(df.select((~pl.col("keep")).sum()).item())
    out = df.group_by("i", maintain_order=True).agg(pl.col("line").filter(pl.col("keep")).str.join("\n"))
    # runs of blank lines left where lines were removed collapse to one paragraph break
    return out["line"].str.replace_all(r"\n{3,}", "\n\n").str.strip_chars("\n"), removed


def _normalize(text: pl.Series) -> pl.Series:
    """:func:`dcurate.text.normalize_series` (NFKC + lower-case), with NFKC run only on the texts
    that contain a non-ASCII character (NFKC leaves ASCII unchanged; it is the costly step)."""
    low = text.str.to_lowercase()
    idx = text.str.contains(r"[^\x00-\x7F]").fill_null(False).arg_true()
    if len(idx) == 0:
        return low
    return low.scatter(idx, normalize_series(text.gather(idx)))


_SENTENCE_END = r"[.!?…]+[\"'”’)\]]*(?:\s|$)"


def _element_dups(text: pl.Series, paragraphs: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per document: (elements, repeated elements, characters in repeated elements), where an
    element is a non-blank line or paragraph (stripped) and *repeated* means equal to an earlier
    one in the same document."""
    n = len(text)
    s = text.str.replace_all(r"\n[ \t\r]*\n\s*", "\x00") if paragraphs else text
    df = pl.DataFrame({"el": s}).with_row_index("i")
    df = df.with_columns(pl.col("el").str.split("\x00" if paragraphs else "\n")).explode("el")
    df = df.with_columns(pl.col("el").fill_null("").str.strip_chars()).filter(pl.col("el") != "")
    df = df.with_columns(dup=~pl.struct("i", "el").is_first_distinct())
    g = df.group_by("i").agg(
        n=pl.len(),
        dup=pl.col("dup").sum(),
        dup_chars=pl.col("el").str.len_chars().filter(pl.col("dup")).sum(),
    )
    out_n, out_d, out_c = np.zeros(n), np.zeros(n), np.zeros(n)
    if g.height:
        pos = g["i"].to_numpy().astype(np.int64)
        out_n[pos] = g["n"].to_numpy()
        out_d[pos] = g["dup"].to_numpy()
        out_c[pos] = g["dup_chars"].fill_null(0).to_numpy()
    return out_n, out_d, out_c


_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xBF58476D1CE4E5B9)
_S31 = np.uint64(31)
_S27 = np.uint64(27)


@numba.njit(cache=True, nogil=True)
def _mix(a, b):
    # splitmix-style combination of two 64-bit hashes (wrapping arithmetic)
    x = (a ^ (b + _M1 + (a << np.uint64(6)) + (a >> np.uint64(2)))) * _M2
    return x ^ (x >> _S31)


@numba.njit(cache=True, nogil=True)
def _ngram_kernel(hashes, lens, offsets, top_ns, dup_ns, out_top, out_dup):
    """For each document (words ``offsets[d]:offsets[d+1]`` of ``hashes``/``lens``):

    * ``out_top[d, k]``: characters of the most frequent ``top_ns[k]``-gram times its count, over
      all word characters (0 when no n-gram occurs twice);
    * ``out_dup[d, k]``: characters of the words covered by ``dup_ns[k]``-grams that repeat an
      earlier n-gram of the document (each word counted once), over all word characters.
    """
    n_docs = offsets.shape[0] - 1
    max_m = 0
    for d in range(n_docs):
        max_m = max(max_m, offsets[d + 1] - offsets[d])
    size = 16
    while size < 2 * max_m:
        size *= 2
    keys = np.zeros(size, np.uint64)
    counts = np.zeros(size, np.int64)
    chars = np.zeros(size, np.int64)
    stamp = np.zeros(size, np.int64)
    gen = 0
    max_n = 1
    for n in top_ns:
        max_n = max(max_n, n)
    for n in dup_ns:
        max_n = max(max_n, n)
    for d in range(n_docs):
        s = offsets[d]
        m = offsets[d + 1] - s
        total = 0
        for j in range(m):
            total += lens[s + j]
        if m < 2 or total == 0:
            continue
        tsize = 16
        while tsize < 2 * m:
            tsize *= 2
        mask = np.uint64(tsize - 1)
        g = hashes[s : s + m].copy()  # rolling n-gram hashes, g[i] = hash of words i..i+n-1
        glen = lens[s : s + m].astype(np.int64)  # characters of that n-gram's words
        for n in range(1, max_n + 1):
            if n > m:
                break
            cnt = m - n + 1
            if n > 1:
                for i in range(cnt):
                    g[i] = _mix(g[i], hashes[s + i + n - 1])
                    glen[i] += lens[s + i + n - 1]
            want_top = -1
            for k in range(top_ns.shape[0]):
                if top_ns[k] == n:
                    want_top = k
            want_dup = -1
            for k in range(dup_ns.shape[0]):
                if dup_ns[k] == n:
                    want_dup = k
            if want_top < 0 and want_dup < 0:
                continue
            gen += 1
            best_count = 0
            best_chars = 0
            cover_end = 0
            dup_chars = 0
            for i in range(cnt):
                h = g[i]
                slot = (h ^ (h >> _S27)) & mask
                while stamp[slot] == gen and keys[slot] != h:
                    slot = (slot + np.uint64(1)) & mask
                if stamp[slot] != gen:
                    stamp[slot] = gen
                    keys[slot] = h
                    counts[slot] = 1
                    chars[slot] = glen[i]
                    c = 1
                else:
                    counts[slot] += 1
                    c = counts[slot]
                    if want_dup >= 0:
                        start = max(i, cover_end)
                        for j in range(start, i + n):
                            dup_chars += lens[s + j]
                        cover_end = i + n
                if c > best_count or (c == best_count and chars[slot] > best_chars):
                    best_count = c
                    best_chars = chars[slot]
            if want_top >= 0 and best_count >= 2:
                out_top[d, want_top] = best_count * best_chars / total
            if want_dup >= 0:
                out_dup[d, want_dup] = dup_chars / total
    return out_top, out_dup


def ngram_fractions(norm: pl.Series, top_ns: list[int], dup_ns: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Top and duplicate n-gram character fractions of each (normalised) text; see
    :func:`_ngram_kernel`."""
    n = len(norm)
    words = norm.str.extract_all(WORD_PATTERN).fill_null([])
    counts = words.list.len().to_numpy().astype(np.int64)
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    flat = words.explode().drop_nulls()
    hashes = flat.hash(seed=0).to_numpy().astype(np.uint64) if len(flat) else np.zeros(0, np.uint64)
    lens = flat.str.len_chars().to_numpy().astype(np.int64) if len(flat) else np.zeros(0, np.int64)
    out_top = np.zeros((n, len(top_ns)))
    out_dup = np.zeros((n, len(dup_ns)))
    _ngram_kernel(
        hashes, lens, offsets, np.array(top_ns, np.int64), np.array(dup_ns, np.int64), out_top, out_dup
    )
    return out_top, out_dup


class _Verdict:
    """The first failing rule of each row of a batch (0 = kept so far)."""

    def __init__(self, n: int, stage: str):
        self.code = np.zeros(n, dtype=np.int32)
        self.names: list[str] = [""]
        self.stage = stage

    def fail(self, rule: str, mask: Any) -> None:
        m = np.asarray(mask, dtype=bool)
        self.names.append(f"{self.stage}.{rule}")
        self.code[(self.code == 0) & m] = len(self.names) - 1

    def all_kept(self) -> bool:
        return bool((self.code == 0).all())

    def reasons(self) -> np.ndarray:
        return np.array(self.names, dtype=object)[self.code]


# -- the stage -----------------------------------------------------------------------------------------


@register
class Filter(Stage):
    """Drop documents by rule-based quality filters, or by an expression over existing columns.

    Rules: the Gopher quality rules (Rae et al. 2021, App. A; the default preset), the Gopher
    repetition rules (Table A1) and the C4 rules (Raffel et al. 2020, sec. 2.2), with the published
    thresholds as defaults. --preset picks a rule set, --rules adds rules by name, and setting a
    rule's parameter to none (or --no-RULE for switches) turns it off.

    A document is dropped by the first rule it fails, in this order: keep_if, C4 document rules,
    C4 line rules (they rewrite the text: removed lines are gone), c4_min_sentences, Gopher quality
    rules, Gopher repetition rules. Each drop is counted as filter.RULE (n-gram rules name their
    n, e.g. filter.max_dup_5gram_char_frac).

    --keep-if 'quality_score >= 0.5 and domain != "code"' keeps rows where the expression is true
    (rows where it is null are dropped); use it with --preset none to re-threshold a score column
    without applying any rule.
    """

    name = "filter"
    Params = FilterParams
    summary = "Drop documents by Gopher quality/repetition and C4 rules, or by an expression over columns."
    example = "dcurate filter data/ out/ --preset gopher+c4 --min-words 100 --keep-if 'quality_score >= 0.5'"
    kind = "map"

    def __init__(self, params: FilterParams, ctx):
        super().__init__(params, ctx)
        self.active = params.active_rules()
        self._keep_if = _expr.parse(params.keep_if) if params.keep_if is not None else None
        self._reason_names: list[str] = []

    def describe(self) -> dict[str, Any]:
        d = dataclasses.asdict(self.params)
        d["active_rules"] = (["keep_if"] if self._keep_if is not None else []) + self.active
        return d

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_keep_if"] = None  # re-parsed on unpickling
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        if self.params.keep_if is not None:
            self._keep_if = _expr.parse(self.params.keep_if)

    def process(self, batch: pa.RecordBatch, shard: ShardInfo, pos: int) -> Result:
        p = self.params
        n = batch.num_rows
        active = set(self.active)
        if n == 0 or (not active and self._keep_if is None):
            return Result(batch)
        v = _Verdict(n, self.name)
        fail = v.fail

        if self._keep_if is not None:
            fail("keep_if", ~_expr.keep_mask(self._keep_if, batch))
        counters: dict[str, int] = {}
        if active:
            text = _texts(batch, self.ctx.text_field)
            orig_text = text
            # C4 document rules on the original text
            if "c4_lorem_ipsum" in active:
                fail("c4_lorem_ipsum", text.str.contains("(?i)lorem ipsum").to_numpy())
            if "c4_curly_brace" in active:
                fail("c4_curly_brace", text.str.contains("{", literal=True).to_numpy())
            line_rules = [
                r
                for r in (
                    "c4_javascript_lines",
                    "c4_policy_lines",
                    "c4_terminal_punct",
                    "c4_min_words_per_line",
                )
                if r in active
            ]
            if line_rules:
                text, removed = c4_clean_lines(text, p, active)
                counters["c4_lines_removed"] = removed
                if "c4_min_sentences" not in active:  # otherwise that rule catches it
                    fail("c4_no_lines_left", (text == "").to_numpy())
            if "c4_min_sentences" in active:
                fail(
                    "c4_min_sentences",
                    (text.str.count_matches(_SENTENCE_END) < p.c4_min_sentences).to_numpy(),
                )
            self._gopher(text, active, v)
            if text is not orig_text:
                changed = (text != orig_text).to_numpy() & (v.code == 0)
                if changed.any():
                    # Only kept rows get the cleaned text; dropped rows keep the original
                    # (what --rejected shows).
                    col = batch.column(self.ctx.text_field)
                    merged = text.zip_with(pl.Series(changed), pl.Series(values=col))
                    batch = with_column(batch, self.ctx.text_field, merged.to_arrow().cast(col.type))
        if v.all_kept():
            return Result(batch, None, counters)
        return Result.keep_where(batch, v.code == 0, v.reasons(), counters)

    def _gopher(self, text: pl.Series, active: set[str], v: _Verdict) -> None:
        p = self.params
        fail = v.fail
        quality = [r for r in RULE_NAMES if _GROUP[r] == "gopher" and r in active]
        repetition = [r for r in RULE_NAMES if _GROUP[r] == "gopher-repetition" and r in active]
        if not quality and not repetition:
            return
        norm = _normalize(text)
        if quality:
            t, nt = pl.col("t"), pl.col("n")
            cols = {"words": nt.str.count_matches(WORD_PATTERN)}
            if {"min_mean_word_length", "max_mean_word_length"} & active:
                cols["word_chars"] = nt.str.len_chars() - nt.str.count_matches(
                    r"\W"
                )  # cheaper than counting \w
            if "max_symbol_word_ratio" in active:
                cols["hash"] = t.str.count_matches("#", literal=True)
                cols["ellipsis"] = t.str.count_matches(r"\.\.\.|…")
            if {"max_bullet_lines_frac", "max_ellipsis_lines_frac"} & active:
                cols["lines"] = t.str.count_matches(r"(?m)^[ \t]*\S")
                cols["bullet_lines"] = t.str.count_matches(f"(?m)^[ \\t]*[{re.escape(BULLETS)}]")
                cols["ellipsis_lines"] = t.str.count_matches(r"(?m)(?:\.\.\.|…)[ \t\r]*$")
            if "min_alpha_words_frac" in active:
                cols["alpha_words"] = nt.str.count_matches(r"\w*[^\W\d_]\w*")
            if "min_stop_words" in active:
                alt = "|".join(re.escape(w.lower()) for w in p.stop_words) or "(?!)"
                cols["stop"] = nt.str.count_matches(rf"\b(?:{alt})\b")
            # one select: polars evaluates the independent counts in parallel
            res = pl.DataFrame({"t": text, "n": norm}).select(**cols)
            f = {k: res[k].fill_null(0).to_numpy().astype(np.float64) for k in cols}
            words = f["words"]
            safe_words = np.maximum(words, 1)
            lines = np.maximum(f.get("lines", np.ones(1)), 1)
            for r in quality:
                lim = getattr(p, r)
                if r == "min_words":
                    fail(r, words < lim)
                elif r == "max_words":
                    fail(r, words > lim)
                elif r == "min_mean_word_length":
                    fail(r, f["word_chars"] / safe_words < lim)
                elif r == "max_mean_word_length":
                    fail(r, f["word_chars"] / safe_words > lim)
                elif r == "max_symbol_word_ratio":
                    fail(r, (f["hash"] / safe_words > lim) | (f["ellipsis"] / safe_words > lim))
                elif r == "max_bullet_lines_frac":
                    fail(r, f["bullet_lines"] / lines > lim)
                elif r == "max_ellipsis_lines_frac":
                    fail(r, f["ellipsis_lines"] / lines > lim)
                elif r == "min_alpha_words_frac":
                    fail(r, f["alpha_words"] / safe_words < lim)
                elif r == "min_stop_words":
                    fail(r, f["stop"] < lim)
        if repetition:
            self._repetition(text, norm, active, v)

    def _repetition(self, text: pl.Series, norm: pl.Series, active: set[str], v: _Verdict) -> None:
        """Gopher repetition rules, computed only for documents no earlier rule dropped."""
        p = self.params
        fail = v.fail
        n = len(text)
        rows = np.flatnonzero(v.code == 0)
        if rows.size == 0:
            return
        sel = pl.Series(rows)
        t_alive, norm_alive = text.gather(sel), norm.gather(sel)
        chars = np.maximum(t_alive.str.len_chars().to_numpy().astype(np.float64), 1)

        def put(vals: np.ndarray) -> np.ndarray:
            out = np.zeros(n)
            out[rows] = vals
            return out

        if {"max_dup_line_frac", "max_dup_line_char_frac"} & active:
            ln, ld, lc = _element_dups(t_alive, paragraphs=False)
            if "max_dup_line_frac" in active:
                fail("max_dup_line_frac", put(ld / np.maximum(ln, 1)) > p.max_dup_line_frac)
        if {"max_dup_para_frac", "max_dup_para_char_frac"} & active:
            pn, pd_, pc_ = _element_dups(t_alive, paragraphs=True)
            if "max_dup_para_frac" in active:
                fail("max_dup_para_frac", put(pd_ / np.maximum(pn, 1)) > p.max_dup_para_frac)
        if "max_dup_line_char_frac" in active:
            fail("max_dup_line_char_frac", put(lc / chars) > p.max_dup_line_char_frac)
        if "max_dup_para_char_frac" in active:
            fail("max_dup_para_char_frac", put(pc_ / chars) > p.max_dup_para_char_frac)
        top = (
            sorted((int(k), v) for k, v in (p.max_top_ngram_char_frac or {}).items())
            if "max_top_ngram_char_frac" in active
            else []
        )
        dup = (
            sorted((int(k), v) for k, v in (p.max_dup_ngram_char_frac or {}).items())
            if "max_dup_ngram_char_frac" in active
            else []
        )
        if top or dup:
            ft, fd = ngram_fractions(norm_alive, [k for k, _ in top], [k for k, _ in dup])
            for j, (k, lim) in enumerate(top):
                fail(f"max_top_{k}gram_char_frac", put(ft[:, j]) > lim)
            for j, (k, lim) in enumerate(dup):
                fail(f"max_dup_{k}gram_char_frac", put(fd[:, j]) > lim)
