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
from typing import Any

import numpy as np
import pyarrow as pa

from dcurate.core.stage import Result, ShardInfo, Stage, register
from dcurate.stages.filter import expr as _expr
from dcurate.stages.filter.params import FilterParams


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
