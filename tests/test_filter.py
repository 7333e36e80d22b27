"""The filter stage: each rule at its threshold, presets, overrides, keep_if, text rewriting."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from dcurate.core.errors import InputError, RecipeError
from dcurate.core.params import build
from dcurate.core.stage import REASON_COLUMN, ShardInfo, StageContext, registry
from dcurate.stages.filter.params import PRESETS, RULE_NAMES, FilterParams
from dcurate.stages.filter.rules import ngram_fractions
from dcurate.stages.filter.stage import Filter
from dcurate.text.normalize import normalize_series, words

SHARD = ShardInfo("s", 0)


def make_stage(**params: Any) -> Filter:
    return Filter(build(FilterParams, params, "stage 0 (filter)"), StageContext())


def run(
    texts: list[str | None], extra: dict | None = None, **params: Any
) -> tuple[list[str], list[str | None]]:
    """Process one batch; return (kept texts, reason per input row or None if kept)."""
    cols = {"id": [str(i) for i in range(len(texts))], "text": texts, **(extra or {})}
    batch = pa.record_batch(cols)
    res = make_stage(**params).process(batch, SHARD, 0)
    reasons: list[str | None] = [None] * len(texts)
    if res.dropped is not None:
        for i, r in zip(
            res.dropped.column("id").to_pylist(), res.dropped.column(REASON_COLUMN).to_pylist(), strict=True
        ):
            reasons[int(i)] = r
    return res.batch.column("text").to_pylist(), reasons


def only(rule: str, texts: list[str], **params: Any) -> list[str | None]:
    """Reasons with only ``rule`` on."""
    return run(texts, preset="none", rules=[rule], **params)[1]


def uniq_words(k: int, length: int = 4, start: int = 0) -> list[str]:
    """k distinct alphabetic words of ``length`` letters."""
    out = []
    for i in range(start, start + k):
        w, x = "", i
        for _ in range(length):
            w = "abcdefghijklmnopqrstuvwxyz"[x % 26] + w
            x //= 26
        out.append(w)
    return out


def prose(k: int) -> str:
    return " ".join(uniq_words(k))


# -- registry and presets ---------------------------------------------------------------------


def test_registered() -> None:
    assert registry()["filter"] is Filter
    assert Filter.kind == "map" and Filter.example.startswith("dcurate filter")


def test_default_is_gopher_quality_with_published_defaults() -> None:
    p = build(FilterParams, {}, "x")
    assert p.preset == "gopher"
    assert (
        p.active_rules()
        == PRESETS["gopher"]
        == [
            "min_words",
            "max_words",
            "min_mean_word_length",
            "max_mean_word_length",
            "max_symbol_word_ratio",
            "max_bullet_lines_frac",
            "max_ellipsis_lines_frac",
            "min_alpha_words_frac",
            "min_stop_words",
        ]
    )
    assert (p.min_words, p.max_words, p.min_mean_word_length, p.max_mean_word_length) == (50, 100_000, 3, 10)
    assert (p.max_symbol_word_ratio, p.max_bullet_lines_frac, p.max_ellipsis_lines_frac) == (0.1, 0.9, 0.3)
    assert (p.min_alpha_words_frac, p.min_stop_words) == (0.8, 2)
    assert p.stop_words == ["the", "be", "to", "of", "and", "that", "have", "with"]
    assert (p.max_dup_line_frac, p.max_dup_para_frac, p.max_dup_line_char_frac, p.max_dup_para_char_frac) == (
        0.3,
        0.3,
        0.2,
        0.2,
    )
    assert p.max_top_ngram_char_frac == {"2": 0.2, "3": 0.18, "4": 0.16}
    assert p.max_dup_ngram_char_frac == {"5": 0.15, "6": 0.14, "7": 0.13, "8": 0.12, "9": 0.11, "10": 0.10}
    assert (p.c4_min_words_per_line, p.c4_min_sentences) == (3, 5)  # the paper's numbers


def test_presets() -> None:
    assert PRESETS["none"] == []
    assert set(PRESETS["gopher+c4"]) == set(PRESETS["gopher"]) | set(PRESETS["c4"])
    assert set(PRESETS["all"]) == set(RULE_NAMES)
    assert all(r.startswith("max_dup") or r.startswith("max_top") for r in PRESETS["gopher-repetition"])
    assert all(r.startswith("c4_") for r in PRESETS["c4"])


def test_none_preset_is_pass_through() -> None:
    batch = pa.record_batch({"id": ["a"], "text": ["x"]})
    res = make_stage(preset="none").process(batch, SHARD, 0)
    assert res.batch is batch and res.dropped is None


def test_good_document_passes_every_rule() -> None:
    text = (
        "The river rises in the northern hills and flows south to the sea. "
        "Its valley has been farmed for centuries, and the towns along it grew with the trade in wool. "
        "Today the water is used to power mills, to irrigate fields and to supply the city with drinking water. "
        "Visitors come to walk the paths that follow the banks of the river.\n\n"
        "A railway line was built along the valley in the nineteenth century. "
        "It carried coal, grain and passengers, and it made the market towns richer than they had ever been."
    )
    kept, reasons = run([text], preset="all")
    assert reasons == [None] and kept == [text]


def test_overrides_and_disabling() -> None:
    short = prose(10) + " the of"
    assert run([short])[1] == ["filter.min_words"]
    assert run([short], min_words=5)[1] == [None]
    assert run([short], min_words=None)[1] == [None]
    assert run([short], min_words="none")[1] == [None]  # CLI spelling
    p = build(FilterParams, {"min-words": None, "c4-curly-brace": False, "preset": "gopher+c4"}, "x")
    assert "min_words" not in p.active_rules() and "c4_curly_brace" not in p.active_rules()
    assert "c4_lorem_ipsum" in p.active_rules()


def test_threshold_for_rule_that_is_off_is_an_error() -> None:
    with pytest.raises(
        RecipeError, match=r"parameter 'c4_min_sentences' is set but rule .* not on in preset 'gopher'"
    ):
        build(FilterParams, {"c4_min_sentences": 7}, "stage 0 (filter)")
    # naming it in `rules` turns it on
    p = build(FilterParams, {"c4_min_sentences": 7, "rules": "c4_min_sentences"}, "x")
    assert "c4_min_sentences" in p.active_rules()
    with pytest.raises(RecipeError, match="unknown rule"):
        build(FilterParams, {"rules": ["min_wrods"]}, "x")
    with pytest.raises(RecipeError, match="must be one of"):
        build(FilterParams, {"preset": "gopher2"}, "x")
    with pytest.raises(RecipeError, match="n-gram size"):
        build(FilterParams, {"max_top_ngram_char_frac": "x=0.2"}, "x")
    with pytest.raises(RecipeError, match=r"<= 1"):
        build(FilterParams, {"max_dup_line_frac": 1.5}, "x")


def test_first_failing_rule_in_order() -> None:
    # fails min_words, min_stop_words and min_alpha_words_frac: min_words comes first
    _, reasons = run(["123 456 789"])
    assert reasons == ["filter.min_words"]
    _, reasons = run(["123 456 789"], min_words=None)
    assert reasons == ["filter.min_alpha_words_frac"]


# -- Gopher quality rules at their thresholds ------------------------------------------------------


def test_min_max_words() -> None:
    assert only("min_words", [prose(49), prose(50)]) == ["filter.min_words", None]
    assert only("max_words", [prose(10), prose(11)], max_words=10) == [None, "filter.max_words"]
    # punctuation is not a word; NFKC + \w+ words
    assert only("min_words", ["a , b . c ; ! ?"], min_words=3) == [None]
    assert only("min_words", ["a , b . ! ?"], min_words=3) == ["filter.min_words"]


def test_mean_word_length() -> None:
    three = " ".join(uniq_words(10, 3))
    two = " ".join(uniq_words(10, 2))
    ten = " ".join(uniq_words(10, 10))
    eleven = " ".join(uniq_words(10, 11))
    assert only("min_mean_word_length", [three, two]) == [None, "filter.min_mean_word_length"]
    assert only("max_mean_word_length", [ten, eleven]) == [None, "filter.max_mean_word_length"]


def test_symbol_word_ratio() -> None:
    base = uniq_words(100)
    at = " ".join(base) + " #" * 10  # 10 / 100 = 0.1: kept
    over = " ".join(base) + " #" * 11
    assert only("max_symbol_word_ratio", [at, over]) == [None, "filter.max_symbol_word_ratio"]
    ell_at = " ".join(w + ("..." if i < 10 else "") for i, w in enumerate(base))
    ell_over = " ".join(w + ("…" if i < 11 else "") for i, w in enumerate(base))
    assert only("max_symbol_word_ratio", [ell_at, ell_over]) == [None, "filter.max_symbol_word_ratio"]
    # "for either symbol": 8% hashes + 8% ellipses is fine
    mixed = " ".join(w + ("..." if i < 8 else "") for i, w in enumerate(base)) + " #" * 8
    assert only("max_symbol_word_ratio", [mixed]) == [None]


def test_bullet_and_ellipsis_lines() -> None:
    lines = [" ".join(uniq_words(5, start=10 * i)) for i in range(10)]
    nine = "\n".join(("- " if i < 9 else "") + ln for i, ln in enumerate(lines))
    ten = "\n".join(("  • " if i % 2 else "* ") + ln for i, ln in enumerate(lines))
    assert only("max_bullet_lines_frac", [nine, ten]) == [None, "filter.max_bullet_lines_frac"]
    three = "\n\n".join(
        ln + ("..." if i < 3 else ".") for i, ln in enumerate(lines)
    )  # blank lines don't count
    four = "\n".join(ln + ("…  " if i < 4 else ".") for i, ln in enumerate(lines))
    assert only("max_ellipsis_lines_frac", [three, four]) == [None, "filter.max_ellipsis_lines_frac"]


def test_alpha_words() -> None:
    eight = " ".join(uniq_words(8) + ["12", "3_4"])
    seven = " ".join(uniq_words(7) + ["12", "34", "56"])
    mixed = " ".join(uniq_words(7) + ["a1", "2b", "é9"])  # a letter anywhere counts
    assert only("min_alpha_words_frac", [eight, seven, mixed]) == [None, "filter.min_alpha_words_frac", None]


def test_stop_words() -> None:
    assert only("min_stop_words", ["The cat sat on a mat", "The cat OF mat", "theory tothe"]) == [
        "filter.min_stop_words",
        None,
        "filter.min_stop_words",
    ]
    assert only("min_stop_words", ["cat and cat and cat"], stop_words=["cat"], min_stop_words=3) == [None]


# -- Gopher repetition rules ----------------------------------------------------------------------


def test_duplicate_lines() -> None:
    lines = [" ".join(uniq_words(6, start=10 * i)) for i in range(10)]
    three = "\n".join(lines[:7] + [lines[0], lines[1], lines[0]])  # 3 of 10 repeat an earlier line
    four = "\n".join(lines[:6] + [lines[0]] * 4)
    assert only("max_dup_line_frac", [three, four]) == [None, "filter.max_dup_line_frac"]
    # whitespace around a line and blank lines are ignored
    spaced = "\n\n".join(lines[:6] + ["  " + lines[0] + " "] * 4)
    assert only("max_dup_line_frac", [spaced]) == ["filter.max_dup_line_frac"]


def test_duplicate_paragraphs() -> None:
    paras = ["\n".join(" ".join(uniq_words(4, start=100 * i + 10 * j)) for j in range(2)) for i in range(10)]
    three = "\n\n".join(paras[:7] + [paras[1]] * 3)
    four = "\n\n \n".join(paras[:6] + [paras[2]] * 4)
    assert only("max_dup_para_frac", [three, four]) == [None, "filter.max_dup_para_frac"]
    # lines inside repeated paragraphs are repeated lines too, but that rule is off here


def test_duplicate_line_characters() -> None:
    a, b = "a" * 60, "b" * 20
    # text of 100 chars (4 newlines): lines aaaa.. (60), b*20 and a repeat of "x"*5 ...
    keep = "\n".join(["a" * 75, "b" * 5, "c" * 5, "c" * 5, "c" * 6])  # dup chars 5 of 100 total
    assert len(keep) == 100
    drop = "\n".join([a, b, b])  # dup chars 20 of 102 -> 0.196: kept at 0.2 ...
    assert only("max_dup_line_char_frac", [keep, drop]) == [None, None]
    drop2 = "\n".join([a, b, b, b])  # 40 / 123 = 0.33
    assert only("max_dup_line_char_frac", [drop2]) == ["filter.max_dup_line_char_frac"]
    assert only("max_dup_line_char_frac", [drop], max_dup_line_char_frac=0.19) == [
        "filter.max_dup_line_char_frac"
    ]


def test_duplicate_paragraph_characters() -> None:
    p1, p2 = "x" * 50 + "\n" + "y" * 10, "z" * 20
    text = "\n\n".join([p1, p2, p2])  # 20 of 106 chars
    assert only("max_dup_para_char_frac", [text]) == [None]
    assert only("max_dup_para_char_frac", [text], max_dup_para_char_frac=0.18) == [
        "filter.max_dup_para_char_frac"
    ]


def test_top_ngram_fraction_at_threshold() -> None:
    w = uniq_words(20)  # 20 words x 4 chars = 80 word chars
    two = w[:16] + [w[0], w[1], w[0], w[1]]  # "w0 w1" x3 = 24/80 = 0.3
    one_repeat = w[:18] + [w[0], w[1]]  # "w0 w1" x2 = 16/80 = 0.2: kept (limit is "more than")
    texts = [" ".join(one_repeat), " ".join(two)]
    assert only("max_top_ngram_char_frac", texts, max_top_ngram_char_frac={"2": 0.2}) == [
        None,
        "filter.max_top_2gram_char_frac",
    ]
    # the 3-gram limit is only applied to 3-grams
    assert only("max_top_ngram_char_frac", texts, max_top_ngram_char_frac={"3": 0.2}) == [None, None]


def test_dup_ngram_fraction_at_threshold() -> None:
    w = uniq_words(100)  # 400 word chars
    five = w[:95] + w[:5]  # one repeated 5-gram: 20 / 400 = 0.05
    six = w[:94] + w[:6]  # two overlapping repeated 5-grams cover 6 words: 24 / 400
    texts = [" ".join(five), " ".join(six)]
    assert only("max_dup_ngram_char_frac", texts, max_dup_ngram_char_frac={"5": 0.05}) == [
        None,
        "filter.max_dup_5gram_char_frac",
    ]
    assert only("max_dup_ngram_char_frac", texts, max_dup_ngram_char_frac={"7": 0.05}) == [None, None]


def test_repetition_defaults_catch_repetitive_text() -> None:
    good = prose(200)
    spam = ("buy cheap pills now " * 30).strip()
    _, reasons = run([good, spam], preset="gopher-repetition")
    assert reasons[0] is None and reasons[1] is not None and reasons[1].startswith("filter.max_")


def _ref_fractions(ws: list[str], n: int) -> tuple[float, float]:
    total = sum(len(x) for x in ws)
    grams = [tuple(ws[i : i + n]) for i in range(len(ws) - n + 1)]
    top = 0.0
    if grams:
        cnt = Counter(grams)
        g, c = max(cnt.items(), key=lambda kv: (kv[1], sum(map(len, kv[0]))))
        top = c * sum(map(len, g)) / total if c >= 2 else 0.0
    seen: set = set()
    covered = [False] * len(ws)
    for i, g in enumerate(grams):
        if g in seen:
            covered[i : i + n] = [True] * n
        seen.add(g)
    dup = sum(len(x) for x, cv in zip(ws, covered, strict=True) if cv) / total if total else 0.0
    return top, dup


def test_ngram_kernel_matches_reference() -> None:
    rng = random.Random(7)
    vocab = ["a", "bb", "ccc", "dd", "e", "fff", "the", "of", "x9"]
    docs = []
    for _ in range(60):
        k = rng.randint(0, 40)
        docs.append(" ".join(rng.choice(vocab[: rng.randint(2, len(vocab))]) for _ in range(k)))
    docs += ["", "!!!", "one", "Ünïcode ÉTÉ été été"]
    ns_top, ns_dup = [2, 3, 4], [5, 6, 7, 8, 9, 10, 1]
    top, dup = ngram_fractions(normalize_series(docs), ns_top, ns_dup)
    for d, text in enumerate(docs):
        ws = words(text)
        for j, n in enumerate(ns_top):
            assert top[d, j] == pytest.approx(_ref_fractions(ws, n)[0]), (text, n)
        for j, n in enumerate(ns_dup):
            assert dup[d, j] == pytest.approx(_ref_fractions(ws, n)[1]), (text, n)


# -- C4 rules ---------------------------------------------------------------------------------------


def sentence(i: int, end: str = ".") -> str:
    return "The " + " ".join(uniq_words(5, start=7 * i)) + end


def test_c4_document_rules() -> None:
    ok = " ".join(sentence(i) for i in range(3))
    assert only("c4_lorem_ipsum", [ok, ok + " Lorem Ipsum dolor."]) == [None, "filter.c4_lorem_ipsum"]
    assert only("c4_curly_brace", [ok, ok + " f(x) { return x }"]) == [None, "filter.c4_curly_brace"]


def test_c4_line_rules_rewrite_text() -> None:
    lines = [
        sentence(0),
        "Please enable JavaScript to view this page properly today.",
        "This site uses cookies to improve your reading experience.",
        "Read our Privacy Policy before you continue reading here.",
        sentence(1, "!"),
        "Menu Home About Contact Blog",  # no terminal punctuation
        "Too short.",  # fewer than 5 words
        '  "' + sentence(2, '?"') + "  ",  # closing quote counts; surrounding spaces stripped
        "",
        sentence(3, "”"),
    ]
    text = "\n".join(lines)
    kept, reasons = run([text], preset="c4", c4_min_words_per_line=5, c4_min_sentences=3)
    assert reasons == [None]
    assert kept[0] == "\n".join(
        [sentence(0), sentence(1, "!"), '"' + sentence(2, '?"'), "", sentence(3, "”")]
    )
    # each line rule alone
    assert "JavaScript" not in run([text], preset="none", rules=["c4_javascript_lines"])[0][0]
    assert "cookies" not in run([text], preset="none", rules=["c4_policy_lines"])[0][0]
    assert "Menu Home" not in run([text], preset="none", rules=["c4_terminal_punct"])[0][0]
    assert "Too short." not in run([text], preset="none", rules=["c4_min_words_per_line"])[0][0]
    assert (
        "Menu Home"
        in run([text], preset="none", rules=["c4_min_words_per_line"], c4_min_words_per_line=5)[0][0]
    )
    assert (
        "Menu Home"
        not in run([text], preset="none", rules=["c4_min_words_per_line"], c4_min_words_per_line=6)[0][0]
    )
    assert (
        "Too short."
        in run([text], preset="none", rules=["c4_min_words_per_line"], c4_min_words_per_line=2)[0][0]
    )


def test_c4_min_sentences_and_empty_result() -> None:
    four = " ".join(sentence(i) for i in range(4))
    five = four + "\n" + sentence(4, "?")
    assert run([four, five], preset="c4")[1] == ["filter.c4_min_sentences", None]
    assert run([four], preset="c4", c4_min_sentences=4)[1] == [None]
    assert run(["Menu Home About"], preset="c4")[1] == ["filter.c4_min_sentences"]
    # with min_sentences off, a document left without lines is dropped as such
    assert run(["Menu Home About", four], preset="c4", c4_min_sentences=None)[1] == [
        "filter.c4_no_lines_left",
        None,
    ]


def test_dropped_rows_keep_original_text_and_counters() -> None:
    good = "\n".join([sentence(0), "Menu", sentence(1), sentence(2), sentence(3), sentence(4)])
    bad = "\n".join([sentence(5), "Menu"])
    batch = pa.record_batch({"id": ["g", "b"], "text": pa.array([good, bad], pa.large_string())})
    res = make_stage(preset="c4").process(batch, SHARD, 0)
    assert res.batch.column("text").to_pylist() == ["\n".join([sentence(i) for i in range(5)])]
    assert res.batch.schema.field("text").type == pa.large_string()
    assert res.dropped.column("text").to_pylist() == [bad]
    assert res.counters["c4_lines_removed"] == 2


def test_gopher_sees_c4_cleaned_text() -> None:
    # 30 words of menu lines + 5 sentences of 6 words: 60 words, 30 after C4 cleaning
    text = "\n".join(
        ["Home About Contact Shop Blog Careers News Help Login Cart"] * 3 + [sentence(i) for i in range(5)]
    )
    assert run([text], preset="gopher+c4", min_stop_words=None, min_words=40)[1] == ["filter.min_words"]
    assert run([text], preset="gopher", min_stop_words=None, min_words=40)[1] == [None]


# -- keep_if ----------------------------------------------------------------------------------------


def test_keep_if() -> None:
    texts = ["a", "b", "c", "d"]
    extra = {"score": [0.1, 0.7, None, 0.9], "domain": ["wiki", "code", "wiki", "wiki"]}
    kept, reasons = run(texts, extra, preset="none", keep_if="score >= 0.5 and domain != 'code'")
    assert kept == ["d"]
    assert reasons == ["filter.keep_if", "filter.keep_if", "filter.keep_if", None]
    # keep_if is checked before the rules
    _, reasons = run(texts, extra, keep_if="score > 0.8")
    assert reasons == ["filter.keep_if", "filter.keep_if", "filter.keep_if", "filter.min_words"]


def test_keep_if_errors() -> None:
    with pytest.raises(RecipeError, match="position 9"):
        build(FilterParams, {"keep_if": "score >= and"}, "stage 0 (filter)")
    with pytest.raises(InputError, match="unknown column 'scor'.*available columns: id, text"):
        run(["a"], preset="none", keep_if="scor > 1")


def test_pickles_and_describes() -> None:
    import pickle

    st = make_stage(preset="c4", keep_if="x > 1")
    st2 = pickle.loads(pickle.dumps(st))
    assert str(st2._keep_if) == "(x > 1)"
    d = st.describe()
    assert d["active_rules"][0] == "keep_if" and "c4_min_sentences" in d["active_rules"]


# -- edge cases -----------------------------------------------------------------------------------


def test_null_empty_and_unicode_text() -> None:
    good = " ".join(sentence(i) for i in range(12))
    kept, reasons = run([None, "", "   \n ", good, "Ｔｈｅ ｃａｔ"], preset="all", min_words=3)
    assert reasons[:3] == ["filter.c4_min_sentences"] * 3 and reasons[3] is None
    kept, reasons = run([None, "", good], preset="gopher")
    assert reasons == ["filter.min_words", "filter.min_words", None]


def test_non_string_text_column() -> None:
    batch = pa.record_batch({"id": ["a"], "text": [1]})
    with pytest.raises(InputError, match="text field 'text' has type int64"):
        make_stage().process(batch, SHARD, 0)


def test_batch_split_does_not_change_results() -> None:
    rng = random.Random(3)
    texts = []
    for i in range(40):
        k = rng.randint(1, 120)
        body = " ".join(rng.choice(["the", "of", "cat", "river", "…", "#", "12", "and"]) for _ in range(k))
        texts.append(body + ("\n" + sentence(i)) * rng.randint(0, 8))
    stage = make_stage(preset="all", min_words=10, c4_min_sentences=3)
    ids = [str(i) for i in range(len(texts))]
    whole = stage.process(pa.record_batch({"id": ids, "text": texts}), SHARD, 0)
    parts = [
        stage.process(pa.record_batch({"id": ids[a:b], "text": texts[a:b]}), SHARD, a)
        for a, b in [(0, 13), (13, 14), (14, 40)]
    ]
    assert (
        sum((p.batch.column("text").to_pylist() for p in parts), []) == whole.batch.column("text").to_pylist()
    )
    got = sum((p.dropped.column(REASON_COLUMN).to_pylist() for p in parts if p.dropped is not None), [])
    assert got == whole.dropped.column(REASON_COLUMN).to_pylist()
    assert np.unique(got).size > 1


# -- end to end: curate() and the CLI ----------------------------------------------------------------


def _write_corpus(root) -> list[dict]:
    import json

    import pyarrow.parquet as pq

    good = [" ".join(sentence(i + k) for k in range(10)) for i in range(6)]
    recs = [{"id": f"g{i}", "text": t, "score": i / 10} for i, t in enumerate(good)]
    recs += [
        {"id": "short", "text": "Too short to keep.", "score": 0.9},
        {
            "id": "menu",
            "text": good[0] + "\nHome | About | Contact\nPlease enable JavaScript now or this page fails.",
            "score": 0.9,
        },
        {"id": "lorem", "text": good[1] + " Lorem ipsum dolor sit amet.", "score": 0.9},
    ]
    (root / "in").mkdir()
    (root / "in" / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs[:5]))
    pq.write_table(pa.Table.from_pylist(recs[5:]), root / "in" / "b.parquet")
    return recs


def _read(out) -> dict[str, dict]:
    from dcurate.io import read_table

    return {r["id"]: r for r in read_table([str(out)]).to_pylist()}


def test_end_to_end_curate(tmp_path) -> None:
    from dcurate.api import curate

    recs = _write_corpus(tmp_path)
    stats = curate(
        str(tmp_path / "in"),
        str(tmp_path / "out"),
        stages=[{"stage": "filter", "preset": "gopher+c4", "min_words": 20}],
        workers=1,
        rejected=str(tmp_path / "rej"),
        progress=False,
    )
    st = stats["stages"][0]
    assert st["removed"] == {"filter.c4_min_sentences": 1, "filter.c4_lorem_ipsum": 1}
    kept = _read(tmp_path / "out")
    assert set(kept) == {f"g{i}" for i in range(6)} | {"menu"}
    assert kept["menu"]["text"] == recs[0]["text"]  # C4 removed the menu and javascript lines
    assert kept["g3"]["score"] == 0.3  # other columns preserved
    rejected = _read(tmp_path / "rej")
    assert {r: rejected[r]["dcurate_reason"] for r in rejected} == {
        "short": "filter.c4_min_sentences",
        "lorem": "filter.c4_lorem_ipsum",
    }
    assert rejected["lorem"]["text"] == recs[-1]["text"]


def test_end_to_end_keep_if_and_worker_count(tmp_path) -> None:
    from dcurate.api import curate

    _write_corpus(tmp_path)
    outs = []
    for w in (1, 2):
        out = tmp_path / f"out{w}"
        stats = curate(
            str(tmp_path / "in"),
            str(out),
            stages=[{"stage": "filter", "preset": "none", "keep_if": "score >= 0.3 and id != 'menu'"}],
            workers=w,
            progress=False,
        )
        assert stats["stages"][0]["removed"] == {"filter.keep_if": 4}
        outs.append({p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != "stats.json"})
    assert outs[0] == outs[1]
    assert set(_read(tmp_path / "out1")) == {"g3", "g4", "g5", "short", "lorem"}


def test_cli_filter(tmp_path) -> None:
    from typer.testing import CliRunner

    from dcurate.cli.app import app

    _write_corpus(tmp_path)
    runner = CliRunner()
    res = runner.invoke(
        app,
        [
            "filter",
            str(tmp_path / "in"),
            str(tmp_path / "o1"),
            "--preset",
            "c4",
            "--no-c4-lorem-ipsum",
            "--c4-min-sentences",
            "2",
            "--workers",
            "1",
            "--no-progress",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "lorem" in _read(tmp_path / "o1") and "short" not in _read(tmp_path / "o1")
    res = runner.invoke(
        app, ["filter", str(tmp_path / "in"), str(tmp_path / "o2"), "--keep-if", "score >= = 1"]
    )
    assert res.exit_code == 2 and "position 9" in res.output
    res = runner.invoke(
        app,
        [
            "filter",
            str(tmp_path / "in"),
            str(tmp_path / "o3"),
            "--preset",
            "none",
            "--keep-if",
            "qual > 1",
            "--workers",
            "1",
            "--no-progress",
        ],
    )
    # the recipe is checked against the input's columns before any work: a usage error
    assert res.exit_code == 2 and "unknown column 'qual'" in res.output and "score" in res.output
    res = runner.invoke(
        app, ["filter", str(tmp_path / "in"), str(tmp_path / "o4"), "--c4-min-sentences", "9"]
    )
    assert res.exit_code == 2 and "rules" in res.output


@pytest.mark.slow
def test_rule_free_filter_imports_neither_polars_nor_numba(tmp_path) -> None:
    """A pass-through or --keep-if-only filter (re-thresholding, re-sharding) starts without the
    rule machinery: each process start is ~0.4 s shorter."""
    import subprocess
    import sys

    src = tmp_path / "in.jsonl"
    src.write_text('{"id": "a", "text": "x", "s": 1}\n{"id": "b", "text": "y", "s": 0}\n')
    code = (
        "import sys; from dcurate.api import curate; "
        f"curate({str(src)!r}, {str(tmp_path / 'out')!r}, "
        "[{'stage': 'filter', 'preset': 'none', 'keep_if': 's > 0'}], workers=1, progress=False); "
        "print(sorted(m for m in ('polars', 'numba', 'dcurate.stages.filter.rules') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
    assert Filter(build(FilterParams, {"preset": "none"}, "t"), StageContext()).preload_modules() == [
        "dcurate.stages.filter.stage"
    ]
    assert "dcurate.stages.filter.rules" in Filter(build(FilterParams, {}, "t"), StageContext()).preload_modules()


def test_entry_preloads_rules_only_when_on() -> None:
    from dcurate.cli.entry import _stage_modules

    assert _stage_modules(["dcurate", "filter", "a", "b", "--preset", "none"]) == ["dcurate.stages.filter.stage"]
    assert _stage_modules(["dcurate", "filter", "a", "b"]) == ["dcurate.stages.filter.stage", "dcurate.stages.filter.rules"]
    assert _stage_modules(["dcurate", "filter", "a", "b", "--preset", "none", "--rules", "min_words"]) == [
        "dcurate.stages.filter.stage",
        "dcurate.stages.filter.rules",
    ]
