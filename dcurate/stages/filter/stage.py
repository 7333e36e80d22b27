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

Text model (shared with the other stages through :mod:`dcurate.text.normalize`): *words* are the runs of
Unicode word characters (``\\w+``) of the NFKC-lower-cased text, so punctuation never counts as
or inside a word; *lines* split at ``\\n`` and a line is counted only if it has a non-space
character; *paragraphs* split at blank lines. When C4 line rules are on, they run first and every
later rule sees the cleaned text, which is also what is written out.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from dcurate.core.params import param
from dcurate.core.stage import Result, ShardInfo, Stage, register
from dcurate.stages.filter import expr as _expr

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
    example = "dcurate filter data/demo/corpus data/demo/filtered --preset gopher+c4 --keep-if \"domain != 'forum'\""
    kind = "map"

    def __init__(self, params: FilterParams, ctx):
        super().__init__(params, ctx)
        self.active = params.active_rules()
        self._keep_if = _expr.parse(params.keep_if) if params.keep_if is not None else None
        self._reason_names: list[str] = []

    def preload_modules(self) -> list[str]:
        return [__name__] + (["dcurate.stages.filter.rules"] if self.active else [])

    def columns_read(self) -> set[str]:
        return set(self._keep_if.columns()) if self._keep_if is not None else set()

    def columns_added(self) -> set[str] | None:
        return set()

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
            from dcurate.stages.filter import rules as filter_rules

            batch = filter_rules.apply(batch, p, active, v, self.ctx.text_field, counters)
        if v.all_kept():
            return Result(batch, None, counters)
        return Result.keep_where(batch, v.code == 0, v.reasons(), counters)
