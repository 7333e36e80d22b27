"""A small, safe expression language for keeping or dropping rows on existing columns.

Used by ``filter --keep-if`` (score once, re-threshold many times)::

    quality_score >= 0.5 and domain != "code"
    not (ppl > 1000 or lang in ("de", "fr")) and `my-col` is not null

Grammar (lowest precedence first; keywords are case-insensitive)::

    expr     := or_expr
    or_expr  := and_expr ("or" and_expr)*
    and_expr := not_expr ("and" not_expr)*
    not_expr := "not" not_expr | cmp
    cmp      := sum [ ("==" | "!=" | "<" | "<=" | ">" | ">=") sum
                    | ["not"] "in" "(" literal ("," literal)* [","] ")"
                    | "is" ["not"] "null" ]
    sum      := term (("+" | "-") term)*
    term     := unary (("*" | "/") unary)*
    unary    := "-" unary | atom
    atom     := NUMBER | STRING | "true" | "false" | COLUMN | "`any column name`" | "(" expr ")"

Strings take single or double quotes with backslash escapes. Comparisons do not chain
(``a < b < c`` is an error; write ``a < b and b < c``).

The text is parsed by a tokenizer and a recursive-descent parser into a small syntax tree; nothing
is ever handed to Python's ``eval``. The tree evaluates directly on an Arrow record batch with
``pyarrow.compute`` (:meth:`Expr.evaluate`) and converts to a ``pyarrow.compute.Expression``
(:meth:`Expr.to_pyarrow`) for use with Arrow datasets.

Nulls follow SQL (Kleene) logic: a comparison with a null is null, ``null and false`` is false,
``null or true`` is true. :func:`keep_mask` treats a null result as *drop*, so rows whose tested
column is null are removed unless the expression says otherwise (``x is null or x > 0.5``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dcurate.core.errors import InputError, RecipeError
from dcurate.core.stage import REASON_ALIASES, REASON_COLUMN, canonical_reason

__all__ = ["Expr", "parse", "keep_mask", "ExprSyntaxError"]


class ExprSyntaxError(RecipeError):
    """An expression that does not parse; the message shows the position with a caret."""


# -- tokenizer -------------------------------------------------------------------------------------

_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<number>(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<quoted>`[^`]*`)
  | (?P<name>[A-Za-z_][A-Za-z0-9_.]*)
  | (?P<op>==|!=|<=|>=|<|>|\(|\)|,|\+|-|\*|/)
  | (?P<bad_eq>=)
  | (?P<bad_string>["'`])
    """,
    re.VERBOSE,
)
KEYWORDS = {"and", "or", "not", "in", "is", "null", "true", "false"}
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "0": "\0"}


@dataclass(frozen=True)
class Token:
    kind: str  # number, string, name, keyword, op, end
    value: Any
    pos: int


def _unescape(body: str) -> str:
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), body, flags=re.S)


def _error(source: str, pos: int, msg: str) -> ExprSyntaxError:
    return ExprSyntaxError(f"keep_if: {msg} at position {pos}:\n  {source}\n  {' ' * pos}^")


def tokenize(source: str) -> list[Token]:
    """Split ``source`` into tokens; raise :class:`ExprSyntaxError` on a character that starts none."""
    out: list[Token] = []
    pos = 0
    while pos < len(source):
        m = _TOKEN_RE.match(source, pos)
        if m is None:
            raise _error(source, pos, f"unexpected character {source[pos]!r}")
        kind, text = m.lastgroup, m.group()
        if kind == "bad_eq":
            raise _error(source, pos, "'=' is not an operator (use '==' to compare)")
        if kind == "bad_string":
            raise _error(source, pos, "unterminated quoted string or column name")
        if kind == "number":
            # Integers past int64 compare as floats (a 5,000-digit literal is inf, not an error).
            big = len(text.lstrip("0")) > 18
            value: Any = float(text) if big or any(c in text for c in ".eE") else int(text)
            out.append(Token("number", value, pos))
        elif kind == "string":
            out.append(Token("string", _unescape(text[1:-1]), pos))
        elif kind == "quoted":
            if len(text) == 2:
                raise _error(source, pos, "empty column name")
            out.append(Token("name", text[1:-1], pos))
        elif kind == "name":
            low = text.lower()
            out.append(Token("keyword", low, pos) if low in KEYWORDS else Token("name", text, pos))
        elif kind == "op":
            out.append(Token("op", text, pos))
        pos = m.end()
    out.append(Token("end", None, len(source)))
    return out


# -- syntax tree -----------------------------------------------------------------------------------

_CMP = {
    "==": (pc.equal, "__eq__"),
    "!=": (pc.not_equal, "__ne__"),
    "<": (pc.less, "__lt__"),
    "<=": (pc.less_equal, "__le__"),
    ">": (pc.greater, "__gt__"),
    ">=": (pc.greater_equal, "__ge__"),
}
_ARITH = {"+": pc.add_checked, "-": pc.subtract_checked, "*": pc.multiply_checked, "/": pc.divide}


class Expr:
    """A node of a parsed expression."""

    pos: int = 0

    def columns(self) -> set[str]:
        """Column names the expression reads."""
        out: set[str] = set()
        for child in self.children():
            out |= child.columns()
        return out

    def children(self) -> tuple[Expr, ...]:
        return ()

    def evaluate(self, batch: pa.RecordBatch) -> Any:
        """Evaluate on ``batch``: an Arrow array, or a scalar for a constant expression."""
        raise NotImplementedError

    def to_pyarrow(self) -> pc.Expression:
        """The equivalent ``pyarrow.compute.Expression`` (e.g. for ``dataset.to_table(filter=)``)."""
        raise NotImplementedError


@dataclass(frozen=True)
class Literal(Expr):
    value: Any
    pos: int = 0

    def evaluate(self, batch):
        return pa.scalar(self.value)

    def to_pyarrow(self):
        return pc.scalar(self.value)

    def __str__(self) -> str:
        if isinstance(self.value, str):
            return '"' + self.value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(self.value, bool):
            return "true" if self.value else "false"
        return repr(self.value)


@dataclass(frozen=True)
class Column(Expr):
    name: str
    pos: int = 0

    def columns(self):
        return {self.name}

    def evaluate(self, batch):
        idx = batch.schema.get_field_index(self.name)
        if idx < 0:
            names = ", ".join(batch.schema.names)
            raise InputError(
                f"keep_if: unknown column '{self.name}' (position {self.pos}); available columns: {names}"
            )
        col = batch.column(idx)
        return _canonical_reasons(col) if self.name == REASON_COLUMN else col

    def to_pyarrow(self):
        return pc.field(self.name)

    def __str__(self) -> str:
        return (
            self.name
            if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", self.name) and self.name.lower() not in KEYWORDS
            else f"`{self.name}`"
        )


@dataclass(frozen=True)
class Compare(Expr):
    op: str
    left: Expr
    right: Expr
    pos: int = 0

    def children(self):
        return (self.left, self.right)

    def evaluate(self, batch):
        return _apply(_CMP[self.op][0], self, self.left.evaluate(batch), self.right.evaluate(batch))

    def to_pyarrow(self):
        return getattr(self.left.to_pyarrow(), _CMP[self.op][1])(self.right.to_pyarrow())

    def __str__(self) -> str:
        return f"({self.left} {self.op} {self.right})"


@dataclass(frozen=True)
class Arith(Expr):
    op: str
    left: Expr
    right: Expr
    pos: int = 0

    def children(self):
        return (self.left, self.right)

    def evaluate(self, batch):
        left, right = self.left.evaluate(batch), self.right.evaluate(batch)
        if self.op == "/":  # true division, as users expect from "a / b"
            left, right = _as_float(left), _as_float(right)
        return _apply(_ARITH[self.op], self, left, right)

    def to_pyarrow(self):
        left, right = self.left.to_pyarrow(), self.right.to_pyarrow()
        if self.op == "/":
            left, right = left.cast(pa.float64()), right.cast(pa.float64())
        return _ARITH[self.op](left, right)

    def __str__(self) -> str:
        return f"({self.left} {self.op} {self.right})"


@dataclass(frozen=True)
class Negate(Expr):
    operand: Expr
    pos: int = 0

    def children(self):
        return (self.operand,)

    def evaluate(self, batch):
        return _apply(pc.negate_checked, self, self.operand.evaluate(batch))

    def to_pyarrow(self):
        return pc.negate_checked(self.operand.to_pyarrow())

    def __str__(self) -> str:
        return f"(-{self.operand})"


@dataclass(frozen=True)
class BoolOp(Expr):
    op: str  # "and" | "or"
    left: Expr
    right: Expr
    pos: int = 0

    def children(self):
        return (self.left, self.right)

    def evaluate(self, batch):
        fn = pc.and_kleene if self.op == "and" else pc.or_kleene
        return _apply(fn, self, self.left.evaluate(batch), self.right.evaluate(batch))

    def to_pyarrow(self):
        left, right = self.left.to_pyarrow(), self.right.to_pyarrow()
        return (left & right) if self.op == "and" else (left | right)

    def __str__(self) -> str:
        return f"({self.left} {self.op} {self.right})"


@dataclass(frozen=True)
class Not(Expr):
    operand: Expr
    pos: int = 0

    def children(self):
        return (self.operand,)

    def evaluate(self, batch):
        return _apply(pc.invert, self, self.operand.evaluate(batch))

    def to_pyarrow(self):
        return ~self.operand.to_pyarrow()

    def __str__(self) -> str:
        return f"(not {self.operand})"


@dataclass(frozen=True)
class InList(Expr):
    operand: Expr
    values: tuple[Any, ...]
    negated: bool = False
    pos: int = 0

    def children(self):
        return (self.operand,)

    def _value_set(self, type_: pa.DataType | None = None) -> pa.Array:
        vals = list(self.values)
        if type_ is not None:
            try:
                return pa.array(vals).cast(type_)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
                pass
        return pa.array(vals)

    def evaluate(self, batch):
        arr = self.operand.evaluate(batch)
        typ = arr.type if isinstance(arr, (pa.Array, pa.ChunkedArray)) else None
        found = _apply(lambda a: pc.is_in(a, value_set=self._value_set(typ)), self, arr)
        # SQL semantics: null IN (...) is null (dropped by keep_mask), not false.
        found = pc.if_else(pc.is_null(arr), pa.scalar(None, pa.bool_()), found)
        return pc.invert(found) if self.negated else found

    def to_pyarrow(self):
        e = pc.is_in(self.operand.to_pyarrow(), value_set=self._value_set())
        return ~e if self.negated else e

    def __str__(self) -> str:
        vals = ", ".join(str(Literal(v)) for v in self.values)
        return f"({self.operand} {'not in' if self.negated else 'in'} ({vals}))"


@dataclass(frozen=True)
class IsNull(Expr):
    operand: Expr
    negated: bool = False
    pos: int = 0

    def children(self):
        return (self.operand,)

    def evaluate(self, batch):
        v = self.operand.evaluate(batch)
        return pc.is_valid(v) if self.negated else pc.is_null(v)

    def to_pyarrow(self):
        e = self.operand.to_pyarrow()
        return e.is_valid() if self.negated else e.is_null()

    def __str__(self) -> str:
        return f"({self.operand} is {'not ' if self.negated else ''}null)"


def _as_float(v: Any) -> Any:
    t = v.type
    if pa.types.is_integer(t) or pa.types.is_boolean(t):
        return pc.cast(v, pa.float64())
    return v


def _describe(v: Any) -> str:
    return str(v.type)


def _apply(fn, node: Expr, *args: Any) -> Any:
    """Call a compute function; turn Arrow type errors into a message naming the sub-expression."""
    try:
        return fn(*args)
    except (pa.ArrowNotImplementedError, pa.ArrowTypeError, pa.ArrowInvalid) as e:
        types = ", ".join(_describe(a) for a in args)
        raise InputError(
            f"keep_if: cannot evaluate {node} (position {node.pos}) on values of type {types}: {e}"
        ) from None


# -- parser ----------------------------------------------------------------------------------------


class _Parser:
    def __init__(self, source: str):
        self.source = source
        self.tokens = tokenize(source)
        self.i = 0

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def error(self, msg: str, tok: Token | None = None) -> ExprSyntaxError:
        return _error(self.source, (tok or self.tok).pos, msg)

    def at(self, kind: str, value: Any = None) -> bool:
        t = self.tok
        return t.kind == kind and (value is None or t.value == value)

    def take(self) -> Token:
        t = self.tok
        self.i += 1
        return t

    def expect(self, kind: str, value: Any, what: str) -> Token:
        if not self.at(kind, value):
            raise self.error(f"expected {what}, found {self._found()}")
        return self.take()

    def _found(self) -> str:
        t = self.tok
        if t.kind == "end":
            return "end of expression"
        if t.kind == "string":
            return f"string {Literal(t.value)}"
        return f"'{self.source[t.pos :].split()[0] if t.kind != 'op' else t.value}'"

    def parse(self) -> Expr:
        if self.at("end"):
            raise self.error("empty expression")
        e = self.or_expr()
        if not self.at("end"):
            raise self.error(f"unexpected {self._found()} (missing 'and'/'or'?)")
        return e

    def or_expr(self) -> Expr:
        e = self.and_expr()
        while self.at("keyword", "or"):
            t = self.take()
            e = BoolOp("or", e, self.and_expr(), t.pos)
        return e

    def and_expr(self) -> Expr:
        e = self.not_expr()
        while self.at("keyword", "and"):
            t = self.take()
            e = BoolOp("and", e, self.not_expr(), t.pos)
        return e

    def not_expr(self) -> Expr:
        if self.at("keyword", "not"):
            t = self.take()
            return Not(self.not_expr(), t.pos)
        return self.cmp()

    def cmp(self) -> Expr:
        left = self.sum()
        t = self.tok
        if t.kind == "op" and t.value in _CMP:
            self.take()
            right = self.sum()
            left, right = _reason_literal(left, right), _reason_literal(right, left)
            e: Expr = Compare(t.value, left, right, t.pos)
            if self.tok.kind == "op" and self.tok.value in _CMP:
                raise self.error("comparisons do not chain (write 'a < b and b < c')")
            return e
        if self.at("keyword", "in") or (
            self.at("keyword", "not")
            and self.tokens[self.i + 1].kind == "keyword"
            and self.tokens[self.i + 1].value == "in"
        ):
            negated = self.take().value == "not"
            if negated:
                self.take()
            values = self.literal_list()
            if _is_reason(left):
                values = tuple(canonical_reason(v) if isinstance(v, str) else v for v in values)
            return InList(left, values, negated, t.pos)
        if self.at("keyword", "is"):
            self.take()
            negated = False
            if self.at("keyword", "not"):
                self.take()
                negated = True
            self.expect("keyword", "null", "'null' after 'is'")
            return IsNull(left, negated, t.pos)
        return left

    def literal_list(self) -> tuple[Any, ...]:
        self.expect("op", "(", "'(' after 'in'")
        values: list[Any] = []
        while True:
            if self.at("op", ")") and values:
                break
            values.append(self.literal())
            if self.at("op", ","):
                self.take()
                continue
            break
        self.expect("op", ")", "',' or ')' in the value list")
        kinds = {type(v) if not isinstance(v, (int, float)) or isinstance(v, bool) else float for v in values}
        if len(kinds) > 1:
            raise self.error(
                "the values of an 'in (...)' list must all be numbers or all strings", self.tokens[self.i - 1]
            )
        return tuple(values)

    def literal(self) -> Any:
        t = self.tok
        sign = 1
        if self.at("op", "-"):
            self.take()
            sign = -1
            t = self.tok
            if t.kind != "number":
                raise self.error("expected a number after '-'")
        if t.kind in ("number", "string"):
            self.take()
            return t.value * sign if t.kind == "number" else t.value
        if t.kind == "keyword" and t.value in ("true", "false"):
            self.take()
            return t.value == "true"
        raise self.error(f"expected a number or string, found {self._found()}")

    def sum(self) -> Expr:
        e = self.term()
        while self.tok.kind == "op" and self.tok.value in ("+", "-"):
            t = self.take()
            e = Arith(t.value, e, self.term(), t.pos)
        return e

    def term(self) -> Expr:
        e = self.unary()
        while self.tok.kind == "op" and self.tok.value in ("*", "/"):
            t = self.take()
            e = Arith(t.value, e, self.unary(), t.pos)
        return e

    def unary(self) -> Expr:
        if self.at("op", "-"):
            t = self.take()
            operand = self.unary()
            if (
                isinstance(operand, Literal)
                and isinstance(operand.value, (int, float))
                and not isinstance(operand.value, bool)
            ):
                return Literal(-operand.value, t.pos)
            return Negate(operand, t.pos)
        return self.atom()

    def atom(self) -> Expr:
        t = self.tok
        if t.kind == "number" or t.kind == "string":
            self.take()
            return Literal(t.value, t.pos)
        if t.kind == "name":
            self.take()
            return Column(t.value, t.pos)
        if t.kind == "keyword" and t.value in ("true", "false"):
            self.take()
            return Literal(t.value == "true", t.pos)
        if self.at("op", "("):
            self.take()
            e = self.or_expr()
            self.expect("op", ")", "')'")
            return e
        if t.kind == "keyword" and t.value == "null":
            raise self.error("'null' can only be tested with 'is null' / 'is not null'")
        if t.kind == "end":
            raise self.error("expected a value (column, number or string), found end of expression")
        raise self.error(f"expected a value (column, number or string), found {self._found()}")


def _is_reason(e: Expr) -> bool:
    return isinstance(e, Column) and e.name == REASON_COLUMN


def _reason_literal(e: Expr, other: Expr) -> Expr:
    """A string compared with ``dcurate_reason``: an old drop-reason name means the new one."""
    if isinstance(e, Literal) and isinstance(e.value, str) and _is_reason(other):
        return Literal(canonical_reason(e.value), e.pos)
    return e


def _canonical_reasons(col: Any) -> Any:
    """``dcurate_reason`` values with old names renamed (rejected data written by older releases)."""
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        return col
    old = pa.array(list(REASON_ALIASES), col.type)
    idx = pc.index_in(col, value_set=old)
    if idx.null_count == len(idx):
        return col
    new = pa.array(list(REASON_ALIASES.values()), col.type)
    return pc.if_else(pc.is_null(idx), col, pc.take(new, pc.fill_null(idx, 0)))


def parse(source: str) -> Expr:
    """Parse an expression; raise :class:`ExprSyntaxError` (a ``RecipeError``) naming the position."""
    if not isinstance(source, str):
        raise ExprSyntaxError(f"keep_if: expected an expression string, got {source!r}")
    depth = _paren_depth(source)
    if depth > MAX_DEPTH:
        raise ExprSyntaxError(f"keep_if: parentheses nested {depth} deep (the limit is {MAX_DEPTH})")
    try:
        return _Parser(source).parse()
    except RecursionError:
        raise ExprSyntaxError("keep_if: expression nested too deeply") from None


#: Deepest parenthesis nesting accepted in a keep_if expression.
MAX_DEPTH = 100


def _paren_depth(source: str) -> int:
    """Deepest nesting of parentheses outside quotes (an upper bound is enough here)."""
    depth = top = 0
    quote = ""
    for c in source:
        if quote:
            if c == quote:
                quote = ""
        elif c in "'\"`":
            quote = c
        elif c == "(":
            depth += 1
            top = max(top, depth)
        elif c == ")":
            depth -= 1
    return top


def keep_mask(expr: Expr, batch: pa.RecordBatch) -> np.ndarray:
    """Evaluate ``expr`` on ``batch`` as a row filter: a boolean numpy mask, null -> False.

    Raises :class:`InputError` for an unknown column (listing the available ones), a result that is
    not boolean, or operand types that cannot be compared.
    """
    n = batch.num_rows
    try:
        v = expr.evaluate(batch)
    except RecursionError:
        raise ExprSyntaxError("keep_if: expression nested too deeply") from None
    if not pa.types.is_boolean(v.type):
        raise InputError(
            f"keep_if: the expression {expr} gives values of type {v.type}, not true/false; "
            "compare it with something (e.g. 'score >= 0.5')"
        )
    if isinstance(v, pa.Scalar):
        return np.full(n, bool(v.as_py()), dtype=bool) if v.is_valid else np.zeros(n, dtype=bool)
    if isinstance(v, pa.ChunkedArray):
        v = v.combine_chunks()
    return np.asarray(pc.fill_null(v, False).to_numpy(zero_copy_only=False), dtype=bool)
