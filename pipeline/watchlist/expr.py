"""A small, safe filter language for facility lists (``--where``): parsed by hand, never ``eval``-ed.

Grammar (keywords are case-insensitive)::

    expr     := and ("or" and)*
    and      := not ("and" not)*
    not      := "not" not | "(" expr ")" | test
    test     := column op literal | column "is" ["not"] "null" | column ["not"] "in" "(" literal ("," literal)* ")"
    op       := "=" | "==" | "!=" | "<" | "<=" | ">" | ">="
    column   := name (letters, digits, _ : #) | `any text in backticks`
    literal  := number | 'text' | "text"

Examples: ``Tier >= 3``, ```Number of Buildings in 2019` > 10 and Prefecture = 'Kashgar'``,
``Prefecture in ('Hotan', 'Aksu')``, ```Number of Buildings in 2020` is null``.

Missing values (``None``) make every comparison false (as in SQL); numbers compare as numbers and text as
text (``Tier >= '3'`` compares ``3`` with ``3.0``: text that reads as a number is taken as one).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.errors import ConfigError

__all__ = ["Predicate", "parse_where"]

#: A compiled filter: properties of one row → keep it?
Predicate = Callable[[Mapping[str, Any]], bool]

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<num>-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)
      | (?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
      | (?P<col>`[^`]+`)
      | (?P<op><=|>=|==|!=|=|<|>)
      | (?P<punct>[(),])
      | (?P<word>[A-Za-z_][A-Za-z0-9_:#?]*)
    )""",
    re.VERBOSE,
)
_KEYWORDS = {"and", "or", "not", "is", "null", "in"}


@dataclass(frozen=True)
class _Tok:
    kind: str  # num, str, col, op, punct, kw, end
    text: str
    pos: int


def _tokens(text: str) -> list[_Tok]:
    out: list[_Tok] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise ConfigError(
                f"--where {text!r}: cannot read the text at position {pos + 1} ({text[pos:pos + 12]!r}); quote "
                "column names with spaces in backticks (`Number of Buildings in 2019` > 10) and text in quotes"
            )
        group = m.lastgroup or ""
        kind, value, start = group, m.group(group), m.start(group)
        if kind == "word" and value.lower() in _KEYWORDS:
            kind, value = "kw", value.lower()
        elif kind == "word":
            kind = "col"
        elif kind == "col":
            value = value[1:-1]
        out.append(_Tok(kind, value, start))
        pos = m.end()
    out.append(_Tok("end", "", len(text)))
    return out


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _compare(left: Any, op: str, right: Any) -> bool:
    if left is None or right is None:
        return False
    a, b = _number(left), _number(right)
    if a is not None and b is not None:
        x: Any = a
        y: Any = b
    else:
        x, y = str(left), str(right)
        if op not in ("=", "==", "!="):
            return False  # text has no order here: 'abc' < 3 is neither true nor an error worth stopping for
    if op in ("=", "=="):
        return bool(x == y)
    if op == "!=":
        return bool(x != y)
    if op == "<":
        return bool(x < y)
    if op == "<=":
        return bool(x <= y)
    if op == ">":
        return bool(x > y)
    return bool(x >= y)


class _Parser:
    def __init__(self, text: str, columns: Sequence[str]) -> None:
        self.text = text
        self.toks = _tokens(text)
        self.i = 0
        self.columns = list(columns)
        self._lower = {c.lower(): c for c in columns}

    # helpers
    def peek(self) -> _Tok:
        return self.toks[self.i]

    def take(self) -> _Tok:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def fail(self, tok: _Tok, want: str) -> ConfigError:
        got = "the end" if tok.kind == "end" else repr(tok.text)
        return ConfigError(f"--where {self.text!r}: expected {want} at position {tok.pos + 1}, got {got}; "
                           "e.g. --where \"Tier >= 3\"")

    def expect(self, kind: str, text: str | None, want: str) -> _Tok:
        tok = self.take()
        if tok.kind != kind or (text is not None and tok.text != text):
            raise self.fail(tok, want)
        return tok

    def column(self, tok: _Tok) -> str:
        if tok.text in self.columns:
            return tok.text
        if tok.text.lower() in self._lower:
            return self._lower[tok.text.lower()]
        close = difflib.get_close_matches(tok.text, self.columns, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}" if close else ""
        raise ConfigError(f"--where {self.text!r}: the list has no column {tok.text!r}{hint} "
                          "(quote names with spaces in backticks)")

    def literal(self) -> Any:
        tok = self.take()
        if tok.kind == "num":
            return float(tok.text)
        if tok.kind == "str":
            return re.sub(r"\\(.)", r"\1", tok.text[1:-1])
        raise self.fail(tok, "a number or quoted text")

    # grammar
    def parse(self) -> Predicate:
        pred = self.expr()
        if self.peek().kind != "end":
            raise self.fail(self.peek(), "'and', 'or' or the end")
        return pred

    def expr(self) -> Predicate:
        parts = [self.conj()]
        while self.peek().kind == "kw" and self.peek().text == "or":
            self.take()
            parts.append(self.conj())
        if len(parts) == 1:
            return parts[0]
        return lambda row: any(p(row) for p in parts)

    def conj(self) -> Predicate:
        parts = [self.neg()]
        while self.peek().kind == "kw" and self.peek().text == "and":
            self.take()
            parts.append(self.neg())
        if len(parts) == 1:
            return parts[0]
        return lambda row: all(p(row) for p in parts)

    def neg(self) -> Predicate:
        tok = self.peek()
        if tok.kind == "kw" and tok.text == "not":
            self.take()
            inner = self.neg()
            return lambda row: not inner(row)
        if tok.kind == "punct" and tok.text == "(":
            self.take()
            inner = self.expr()
            self.expect("punct", ")", "')'")
            return inner
        return self.test()

    def test(self) -> Predicate:
        tok = self.take()
        if tok.kind != "col":
            raise self.fail(tok, "a column name")
        col = self.column(tok)
        nxt = self.take()
        if nxt.kind == "op":
            value = self.literal()
            op = nxt.text
            return lambda row: _compare(row.get(col), op, value)
        if nxt.kind == "kw" and nxt.text == "is":
            negate = self.peek().kind == "kw" and self.peek().text == "not"
            if negate:
                self.take()
            self.expect("kw", "null", "'null'")
            return (lambda row: row.get(col) is not None) if negate else (lambda row: row.get(col) is None)
        negate = nxt.kind == "kw" and nxt.text == "not"
        if negate:
            nxt = self.take()
        if nxt.kind == "kw" and nxt.text == "in":
            self.expect("punct", "(", "'('")
            values = [self.literal()]
            while self.peek().kind == "punct" and self.peek().text == ",":
                self.take()
                values.append(self.literal())
            self.expect("punct", ")", "')'")

            def member(row: Mapping[str, Any]) -> bool:
                v = row.get(col)
                return v is not None and any(_compare(v, "==", x) for x in values)

            return (lambda row: not member(row)) if negate else member
        raise self.fail(nxt, "a comparison (=, !=, <, <=, >, >=), 'is null' or 'in (…)'")


def parse_where(text: str, columns: Sequence[str]) -> Predicate:
    """Compile a ``--where`` expression over rows with ``columns``.

    Raises
    ------
    ConfigError
        When the text does not follow the grammar (the message names the position) or names an unknown
        column (the message suggests close names).
    """
    if not text.strip():
        raise ConfigError("--where is empty; give a condition such as \"Tier >= 3\"")
    return _Parser(text, columns).parse()
