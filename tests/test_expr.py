"""The keep-if expression language: tokenizer, precedence, null logic, errors, no eval."""

from __future__ import annotations

import builtins

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from dcurate.core.errors import InputError, RecipeError
from dcurate.stages.filter.expr import ExprSyntaxError, keep_mask, parse, tokenize


@pytest.fixture
def batch() -> pa.RecordBatch:
    return pa.record_batch(
        {
            "q": [0.1, 0.6, None, 0.9, 0.5],
            "domain": ["wiki", "code", "wiki", None, "forum"],
            "n": [1, 2, 3, 4, 5],
            "flag": [True, False, None, True, False],
            "my-col": [1.0, 2.0, 3.0, 4.0, 5.0],
        }
    )


def mask(src: str, b: pa.RecordBatch) -> list[bool]:
    return keep_mask(parse(src), b).tolist()


@pytest.mark.parametrize(
    ("src", "shown"),
    [
        ("a or b and c", "(a or (b and c))"),
        ("a and b or c", "((a and b) or c)"),
        ("not a and b", "((not a) and b)"),
        ("not a == 1", "(not (a == 1))"),
        ("(a or b) and c", "((a or b) and c)"),
        ("a + b * 2 > 3", "((a + (b * 2)) > 3)"),
        ("a - b - c >= 0", "(((a - b) - c) >= 0)"),
        ("x > -1.5e2", "(x > -150.0)"),
        ("NOT a AND b OR c", "(((not a) and b) or c)"),
        ("d in ('x', \"y\")", '(d in ("x", "y"))'),
        ("d not in (1, 2,)", "(d not in (1, 2))"),
        ("q is not null", "(q is not null)"),
        ("`my col` < 1", "(`my col` < 1)"),
    ],
)
def test_precedence(src: str, shown: str) -> None:
    assert str(parse(src)) == shown


def test_evaluates_comparisons_and_logic(batch: pa.RecordBatch) -> None:
    assert mask('q >= 0.5 and domain != "code"', batch) == [False, False, False, False, True]
    assert mask("q > 0.5 or n >= 3", batch) == [False, True, True, True, True]
    assert mask("n / 2 > 1", batch) == [False, False, True, True, True]  # true division
    assert mask("n * 2 + 1 == 5", batch) == [False, True, False, False, False]
    assert mask("-n < -4", batch) == [False, False, False, False, True]
    assert mask("domain in ('wiki', 'forum')", batch) == [True, False, True, False, True]
    assert mask("flag", batch) == [True, False, False, True, False]
    assert mask("`my-col` <= 2", batch) == [True, True, False, False, False]
    assert mask("true", batch) == [True] * 5
    assert mask("1 > 2", batch) == [False] * 5


def test_null_rows_are_dropped_unless_tested(batch: pa.RecordBatch) -> None:
    # q is null in row 2: every comparison with it is null, and null means "drop"
    assert mask("q < 0.5", batch)[2] is False
    assert mask("not q < 0.5", batch)[2] is False
    assert mask("domain not in ('code')", batch) == [True, False, True, False, True]
    # Kleene logic: null or true is true, null and false is false
    assert mask("q > 0.5 or n == 3", batch)[2] is True
    assert mask("q is null or q > 0.5", batch) == [False, True, True, True, False]
    assert mask("domain is not null", batch) == [True, True, True, False, True]


def test_to_pyarrow_agrees_with_evaluate(batch: pa.RecordBatch) -> None:
    table = pa.Table.from_batches([batch])
    for src in ["q >= 0.5 and domain != 'code'", "n / 2 > 1 or domain in ('wiki')", "q is null or not n < 3"]:
        e = parse(src)
        got = table.filter(e.to_pyarrow()).column("n").to_pylist()
        want = np.asarray(batch.column("n"))[keep_mask(e, batch)].tolist()
        assert got == want, src
        assert isinstance(e.to_pyarrow(), pc.Expression)


def test_columns() -> None:
    assert parse("a > 1 and (b in (1) or `c d` is null)").columns() == {"a", "b", "c d"}


@pytest.mark.parametrize(
    ("src", "pos", "fragment"),
    [
        ("q >= ", 5, "expected a value"),
        ("q = 1", 2, "use '=='"),
        ("q > 1 < 2", 6, "do not chain"),
        ("(q > 1", 6, "expected ')'"),
        ("q > 'abc", 4, "unterminated"),
        ("q == null", 5, "is null"),
        ("q in ()", 6, "expected a number or string"),
        ("q in (1, 'a')", 12, "all be numbers or all strings"),
        ("", 0, "empty expression"),
        ("a b", 2, "missing 'and'/'or'"),
        ("q is nul", 5, "'null' after 'is'"),
        ("q > 1 $", 6, "unexpected character '$'"),
        ("q in 1", 5, "'(' after 'in'"),
        ("``", 0, "empty column name"),
    ],
)
def test_syntax_errors_name_the_position(src: str, pos: int, fragment: str) -> None:
    with pytest.raises(ExprSyntaxError) as ei:
        parse(src)
    msg = str(ei.value)
    assert f"at position {pos}" in msg and fragment in msg
    assert msg.splitlines()[-1] == "  " + " " * pos + "^"
    assert isinstance(ei.value, RecipeError)


def test_unknown_column_lists_available(batch: pa.RecordBatch) -> None:
    with pytest.raises(
        InputError,
        match=r"unknown column 'score' \(position 0\); available columns: q, domain, n, flag, my-col",
    ):
        keep_mask(parse("score > 1"), batch)


def test_type_errors_are_clear(batch: pa.RecordBatch) -> None:
    with pytest.raises(InputError, match=r"cannot evaluate \(domain > 1\).*string, int64"):
        keep_mask(parse("domain > 1"), batch)
    with pytest.raises(InputError, match="not true/false"):
        keep_mask(parse("q + 1"), batch)


def test_no_eval(monkeypatch: pytest.MonkeyPatch, batch: pa.RecordBatch) -> None:
    def boom(*a, **k):
        raise AssertionError("eval/exec must not be used")

    monkeypatch.setattr(builtins, "eval", boom)
    monkeypatch.setattr(builtins, "exec", boom)
    assert mask("n > 2 and domain == 'wiki'", batch) == [False, False, True, False, False]
    # Python syntax that would do something under eval is simply not part of the language
    for src in ["__import__('os').system('true')", "[1][0] > 0", "q if q else 1", "lambda: 1", "q; 1"]:
        with pytest.raises(ExprSyntaxError):
            parse(src)
    # a dotted name is only ever a column name to look up
    with pytest.raises(InputError, match="unknown column 'q.__class__'"):
        keep_mask(parse("q.__class__ > 0"), batch)


def test_tokenizer_strings_and_numbers() -> None:
    toks = tokenize(r"""a_1 >= 1e3 and b == 'it\'s' or c != "x\"y" and d < .5""")
    vals = [(t.kind, t.value) for t in toks]
    assert ("number", 1000.0) in vals and ("number", 0.5) in vals
    assert ("string", "it's") in vals and ("string", 'x"y') in vals
    assert vals[-1] == ("end", None)
    assert [t.value for t in tokenize("1 2.0")[:2]] == [1, 2.0]
    assert isinstance(tokenize("7")[0].value, int)


def test_non_string_expression() -> None:
    with pytest.raises(ExprSyntaxError):
        parse(3)  # type: ignore[arg-type]


def test_chunked_and_empty_batch() -> None:
    empty = pa.record_batch({"q": pa.array([], pa.float64())})
    assert keep_mask(parse("q > 1"), empty).tolist() == []
    assert keep_mask(parse("true"), empty).tolist() == []


def test_old_drop_reason_names_still_match():
    """Renamed drop reasons (<stage>.below_cutoff): an old name in a query matches new rejected data
    and a new name matches data written with the old one, for one release."""
    from dcurate.core.stage import REASON_ALIASES, canonical_reason

    assert set(REASON_ALIASES.values()) == {"quality.below_cutoff", "perplexity.below_cutoff", "select.below_cutoff"}
    assert canonical_reason("perplexity.keep_top") == "perplexity.below_cutoff"
    assert canonical_reason("filter.min_words") == "filter.min_words"
    b = pa.record_batch(
        {"dcurate_reason": ["select.not_selected", "select.below_cutoff", "perplexity.keep_top", None, "x"]}
    )
    got = lambda src: keep_mask(parse(src), b).tolist()  # noqa: E731
    assert got("dcurate_reason == 'select.not_selected'") == [True, True, False, False, False]
    assert got("'select.below_cutoff' == dcurate_reason") == [True, True, False, False, False]
    assert got("dcurate_reason in ('perplexity.below_cutoff', 'x')") == [False, False, True, False, True]
    assert got("dcurate_reason not in ('quality.below_top_fraction')") == [True, True, True, False, True]
    assert got("dcurate_reason != 'perplexity.keep_top'") == [True, True, False, False, True]
