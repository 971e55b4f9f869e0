"""The circuit breaker's expression language (oxy ``cbreaker`` predicates).

An expression compares metric functions with numbers and joins the
comparisons with ``&&`` and ``||`` (``&&`` binds tighter), with parentheses
for grouping::

    NetworkErrorRatio() > 0.5 || (LatencyAtQuantileMS(50.0) > 100
                                  && ResponseCodeRatio(500, 600, 0, 600) > 0.25)

Functions: ``NetworkErrorRatio()``, ``ResponseCodeRatio(from, to,
dividedByFrom, dividedByTo)`` (status ranges are half-open, integers) and
``LatencyAtQuantileMS(quantile)`` (a percentage, 0 to 100). Operators:
``> < >= <= == !=``, each with a function on the left and a number on the
right, as oxy requires. Unlike oxy (whose Go parser types ``0`` as an int
and then refuses to compare it with a ratio) any number compares with any
function.

Sans-IO: ``parse`` turns text into a ``Condition`` or raises
``ExpressionError`` naming the 1-based column; evaluation reads a
``Metrics`` object and never awaits.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from gateway.config.errors import suggestion


class Metrics(Protocol):
    """What an expression can ask about the traffic it watches."""

    def network_error_ratio(self) -> float: ...

    def response_code_ratio(self, start_a: int, end_a: int, start_b: int, end_b: int) -> float: ...

    def latency_at_quantile_ms(self, quantile: float) -> float: ...


Predicate = Callable[[Metrics], bool]
Measure = Callable[[Metrics], float]


class ExpressionError(ValueError):
    """An expression that does not parse; ``column`` is 1-based."""

    def __init__(self, column: int, message: str) -> None:
        super().__init__(f"column {column}: {message}")
        self.column = column
        self.message = message


@dataclass(frozen=True, slots=True)
class Condition:
    """A parsed expression: ``test(metrics)`` and the functions it uses."""

    text: str
    test: Predicate
    functions: frozenset[str]


# -- tokens ----------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<number>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>&&|\|\||>=|<=|==|!=|>|<)
  | (?P<punct>[(),])
    """,
    re.VERBOSE,
)


_HINTS = {
    "&": " (did you mean '&&'?)",
    "|": " (did you mean '||'?)",
    "=": " (did you mean '=='?)",
    "!": " (did you mean '!='?)",
}


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "number", "name", "op", "punct", "end"
    text: str
    column: int


def _tokens(text: str) -> list[_Token]:
    out: list[_Token] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            char = text[pos]
            hint = _HINTS.get(char, "")
            raise ExpressionError(pos + 1, f"unexpected character {char!r}{hint}")
        kind = match.lastgroup
        assert kind is not None
        if kind != "space":
            out.append(_Token(kind, match.group(), pos + 1))
        pos = match.end()
    out.append(_Token("end", "", len(text) + 1))
    return out


# -- grammar ---------------------------------------------------------------------

_COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    "<": operator.lt,
    ">=": operator.ge,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}

# Function name -> argument kinds ("int" or "number").
FUNCTIONS: dict[str, tuple[str, ...]] = {
    "NetworkErrorRatio": (),
    "ResponseCodeRatio": ("int", "int", "int", "int"),
    "LatencyAtQuantileMS": ("number",),
}


def _describe(token: _Token) -> str:
    return "the end of the expression" if token.kind == "end" else repr(token.text)


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.pos = 0
        self.used: set[str] = set()

    @property
    def token(self) -> _Token:
        return self.tokens[self.pos]

    def advance(self) -> _Token:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def expect(self, text: str, what: str) -> _Token:
        token = self.token
        if token.text != text or token.kind not in ("punct", "op"):
            raise ExpressionError(token.column, f"expected {what}, found {_describe(token)}")
        return self.advance()

    def parse(self) -> Predicate:
        if self.token.kind == "end":
            raise ExpressionError(1, "empty expression")
        predicate = self.disjunction()
        if self.token.kind != "end":
            raise ExpressionError(
                self.token.column, f"expected '&&', '||' or the end, found {_describe(self.token)}"
            )
        return predicate

    def disjunction(self) -> Predicate:
        terms = [self.conjunction()]
        while self.token.text == "||":
            self.advance()
            terms.append(self.conjunction())
        if len(terms) == 1:
            return terms[0]
        parts = tuple(terms)
        return lambda m: any(p(m) for p in parts)

    def conjunction(self) -> Predicate:
        terms = [self.comparison()]
        while self.token.text == "&&":
            self.advance()
            terms.append(self.comparison())
        if len(terms) == 1:
            return terms[0]
        parts = tuple(terms)
        return lambda m: all(p(m) for p in parts)

    def comparison(self) -> Predicate:
        token = self.token
        if token.text == "(" and token.kind == "punct":
            self.advance()
            inner = self.disjunction()
            self.expect(")", "')'")
            return inner
        if token.kind != "name":
            raise ExpressionError(
                token.column,
                f"expected a function such as NetworkErrorRatio(), found {_describe(token)}",
            )
        measure = self.call()
        op = self.token
        compare = _COMPARE.get(op.text) if op.kind == "op" else None
        if compare is None:
            raise ExpressionError(
                op.column,
                f"expected a comparison (>, <, >=, <=, ==, !=) after {token.text}(), "
                f"found {_describe(op)}",
            )
        self.advance()
        value_token = self.token
        if value_token.kind != "number":
            raise ExpressionError(
                value_token.column,
                f"expected a number after {op.text!r}, found {_describe(value_token)}",
            )
        self.advance()
        value = float(value_token.text)
        return lambda m: compare(measure(m), value)

    def call(self) -> Measure:
        name = self.advance()
        kinds = FUNCTIONS.get(name.text)
        if kinds is None:
            raise ExpressionError(
                name.column, f"unknown function {name.text!r}{suggestion(name.text, FUNCTIONS)}"
            )
        self.expect("(", f"'(' after {name.text}")
        args: list[float] = []
        while self.token.text != ")" or self.token.kind != "punct":
            if args:
                self.expect(",", f"',' or ')' in {name.text}(...)")
            arg = self.token
            if arg.kind != "number":
                raise ExpressionError(
                    arg.column, f"expected a number in {name.text}(...), found {_describe(arg)}"
                )
            if len(args) == len(kinds):
                raise ExpressionError(
                    arg.column, f"{name.text} takes {_count(len(kinds))}, got more"
                )
            if kinds[len(args)] == "int" and not arg.text.isdigit():
                raise ExpressionError(
                    arg.column, f"{name.text} takes integer status codes, got {arg.text}"
                )
            args.append(float(arg.text))
            self.advance()
        close = self.advance()
        if len(args) != len(kinds):
            raise ExpressionError(
                close.column, f"{name.text} takes {_count(len(kinds))}, got {len(args)}"
            )
        self.used.add(name.text)
        return _measure(name.text, args, name.column)


def _count(n: int) -> str:
    return "no arguments" if n == 0 else f"{n} argument{'s' if n > 1 else ''}"


def _measure(name: str, args: list[float], column: int) -> Measure:
    if name == "NetworkErrorRatio":
        return lambda m: m.network_error_ratio()
    if name == "ResponseCodeRatio":
        a, b, c, d = (int(x) for x in args)
        return lambda m: m.response_code_ratio(a, b, c, d)
    quantile = args[0]
    if not 0 <= quantile <= 100:
        raise ExpressionError(
            column, f"LatencyAtQuantileMS takes a percentage (0 to 100), got {quantile:g}"
        )
    return lambda m: m.latency_at_quantile_ms(quantile)


def parse(text: str) -> Condition:
    """Parse ``text``; raises ``ExpressionError`` at the first mistake."""
    parser = _Parser(text)
    test = parser.parse()
    return Condition(text, test, frozenset(parser.used))
