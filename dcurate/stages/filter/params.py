"""The filter's parameters and the published rule defaults they start from (Gopher: Rae et al.
2021, App. A and Table A1; C4: Raffel et al. 2020, sec. 2.2), shared by the stage and its rules."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from dcurate.core.params import param
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
GROUP = {r: g for r, g, _ in RULES}


def _group(*groups: str) -> list[str]:
    return [r for r in RULE_NAMES if GROUP[r] in groups]


PRESETS: dict[str, list[str]] = {
    "gopher": _group("gopher"),
    "gopher-repetition": _group("gopher-repetition"),
    "gopher-all": _group("gopher", "gopher-repetition"),
    "c4": _group("c4"),
    "gopher+c4": _group("gopher", "c4"),
    "all": _group("gopher", "gopher-repetition", "c4"),
    "none": [],
}


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


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
        defaults = {f.name: _field_default(f) for f in dataclasses.fields(self)}
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
