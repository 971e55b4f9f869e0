"""The rule language of Traefik v3 HTTP routers: a sans-IO parser.

``parse("Host(`a.example`) && PathPrefix(`/api`)")`` returns an AST of frozen
dataclasses (``Matcher``, ``And``, ``Or``, ``Not``) or raises
``RuleSyntaxError`` with the 1-based column of the offending token (columns
count characters from the start of the rule, newlines included). Everything
that can be checked without a request is checked here, so a rule that parses
compiles: argument counts, empty arguments, regexps, IP ranges, paths, hosts.

Verified against Traefik v3's source (``pkg/rules/parser.go``,
``pkg/muxer/http/matcher.go`` and ``mux.go``, their tests) and the v3.8
"Rules & Priority" documentation:

* A rule is a Go expression (``go/parser`` through ``vulcand/predicate``):
  strings are Go literals, raw in backticks (carriage returns dropped) or
  double-quoted with ``strconv.Unquote`` escapes; single quotes are refused.
  ``!`` binds tighter than ``&&``, which binds tighter than ``||``; ``!`` may
  negate a parenthesised group. A trailing comma in an argument list is Go.
* Matcher names are accepted as written in the docs, in lower case, in upper
  case, or title-cased (``Pathprefix``): Traefik registers those four.
* ``Header``/``HeaderRegexp`` take 2 arguments, ``Query``/``QueryRegexp`` 1 or
  2, the others 1; an empty argument is an error.
* ``Host`` is ASCII, compared case-insensitively with the request host without
  its port, and a trailing dot on either side is ignored. ``*.example.com``
  matches exactly one more label, ``**.example.com`` one or more; neither
  matches ``example.com`` itself (wildcards arrived in Traefik 3.7).
* ``HostRegexp``, ``PathRegexp``, ``HeaderRegexp`` and ``QueryRegexp`` are
  unanchored searches (Go's ``MatchString``): anchor with ``^...$``.
  ``HostRegexp`` sees the lower-cased host without port.
* ``Path`` is exact, ``PathPrefix`` a plain string prefix (no regexp in v3).
* ``Header`` names are case-insensitive; the value must equal one of the
  header's values exactly (each header line is one value, commas are not
  split).
* ``Query(`k`, `v`)`` needs some value of ``k`` equal to ``v``. ``Query(`k`)``
  needs ``k`` with an *empty* value (``?k`` or ``?k=``), not merely present;
  ``QueryRegexp(`k`)`` is the same as ``Query(`k`)``.
* ``Method`` is upper-cased, then compared exactly. ``ClientIP`` takes an IPv4
  or IPv6 address or CIDR range and checks the connection's peer address.
* Default priority is the rule's length in bytes, minus 2 for each ``**.``
  wildcard in a ``Host`` that is not negated (so a double wildcard ranks below
  the single wildcard and the exact hosts it covers).

Tokens and Go string literals are ``gateway.config.rule_lexer``'s job, Go
regexps ``gateway.config.go_regexp``'s; ``RuleSyntaxError`` is re-exported here.
TCP and UDP rules (``gateway.config.tcp_rule``) reuse this parser with their
own matcher set: a ``Grammar`` passed to ``parse_with``.

Deliberate differences: a newline is whitespace anywhere (Go's automatic
semicolon makes ``Host(`a`)`` + newline + ``&& Path(`/`)`` an error in
Traefik); ``Host`` refuses values that could never match (a scheme, a path, a
port, a stray ``*``); ``Method`` and header names must be HTTP tokens; the
non-standard ``ruleSyntax: v2`` language is not parsed here.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeAlias

from gateway.config.errors import suggestion
from gateway.config.go_regexp import GoRegexpError
from gateway.config.rule_lexer import RuleSyntaxError, Token, describe, quote, tokens
from gateway.config.safe_regexp import compile_safe

__all__ = [
    "HTTP",
    "MATCHERS",
    "And",
    "Expr",
    "Grammar",
    "Matcher",
    "Not",
    "Or",
    "RuleSyntaxError",
    "default_priority",
    "parse",
    "parse_with",
    "render",
]


@dataclass(frozen=True, slots=True)
class Matcher:
    """One matcher call: canonical name, unquoted arguments, column of the name."""

    name: str
    args: tuple[str, ...]
    column: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class And:
    left: Expr
    right: Expr


@dataclass(frozen=True, slots=True)
class Or:
    left: Expr
    right: Expr


@dataclass(frozen=True, slots=True)
class Not:
    expr: Expr


Expr: TypeAlias = "Matcher | And | Or | Not"

# name -> (fewest, most) arguments
MATCHERS: Mapping[str, tuple[int, int]] = {
    "ClientIP": (1, 1),
    "Header": (2, 2),
    "HeaderRegexp": (2, 2),
    "Host": (1, 1),
    "HostRegexp": (1, 1),
    "Method": (1, 1),
    "Path": (1, 1),
    "PathPrefix": (1, 1),
    "PathRegexp": (1, 1),
    "Query": (1, 2),
    "QueryRegexp": (1, 2),
}
_USAGE = {
    "ClientIP": "ClientIP(`198.51.100.0/24`)",
    "Header": "Header(`name`, `value`)",
    "HeaderRegexp": "HeaderRegexp(`name`, `regexp`)",
    "Query": "Query(`key`, `value`) or Query(`key`)",
    "QueryRegexp": "QueryRegexp(`key`, `regexp`)",
}

_TOKEN_CHARS = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_HOST_NAME = re.compile(r"(?:\*\*?\.)?[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*\.?")


# Validation and the router table both parse every rule of a configuration,
# and a reload re-parses rules that did not change; the ASTs are immutable, so
# one parse per distinct rule text serves them all.
@functools.lru_cache(maxsize=1 << 15)
def parse(rule: str) -> Expr:
    """The AST of ``rule``; raises ``RuleSyntaxError``."""
    return _Parser(tokens(rule), HTTP).parse()


def parse_with(rule: str, grammar: Grammar) -> Expr:
    """The AST of ``rule`` in another matcher set (TCP, UDP); raises ``RuleSyntaxError``."""
    return _Parser(tokens(rule), grammar).parse()


class _Parser:
    """Recursive descent over the token list; every path that consumes "end" raises."""

    __slots__ = ("grammar", "pos", "tokens")

    def __init__(self, tokens: list[Token], grammar: Grammar) -> None:
        self.tokens = tokens
        self.grammar = grammar
        self.pos = 0

    def parse(self) -> Expr:
        if len(self.tokens) == 1:
            raise RuleSyntaxError("empty rule", 1)
        expr = self.disjunction()
        token = self.tokens[self.pos]
        if token[0] == ")":
            raise RuleSyntaxError("unexpected ')' with no '(' to close", token[2])
        if token[0] != "end":
            found = describe(token)
            message = f"expected '&&', '||' or the end of the rule, found {found}"
            raise RuleSyntaxError(message, token[2])
        return expr

    def disjunction(self) -> Expr:
        expr = self.conjunction()
        while self.tokens[self.pos][0] == "||":
            self.pos += 1
            expr = Or(expr, self.conjunction())
        return expr

    def conjunction(self) -> Expr:
        expr = self.unary()
        while self.tokens[self.pos][0] == "&&":
            self.pos += 1
            expr = And(expr, self.unary())
        return expr

    def unary(self) -> Expr:
        token = self.tokens[self.pos]
        self.pos += 1
        kind = token[0]
        if kind == "ident":
            return self.matcher(token)
        if kind == "!":
            return Not(self.unary())
        if kind == "(":
            expr = self.disjunction()
            close = self.tokens[self.pos]
            self.pos += 1
            if close[0] != ")":
                found = describe(close)
                message = f"expected ')' to close the '(' at column {token[2]}, found {found}"
                raise RuleSyntaxError(message, close[2])
            return expr
        message = f"expected a matcher such as {self.grammar.example}, found {describe(token)}"
        raise RuleSyntaxError(message, token[2])

    def matcher(self, name_token: Token) -> Matcher:
        _, written, column = name_token
        grammar = self.grammar
        name = grammar.spellings.get(written)
        if name is None:
            message = f"unknown matcher {written!r}{suggestion(written, grammar.arity)}"
            raise RuleSyntaxError(message, column)
        tokens, pos = self.tokens, self.pos
        token = tokens[pos]
        if token[0] != "(":
            message = f"expected '(' after {written}, found {describe(token)}"
            raise RuleSyntaxError(message, token[2])
        args: list[str] = []
        columns: list[int] = []
        expect_string = True
        while True:
            pos += 1
            kind, text, at = token = tokens[pos]
            if kind == ")":
                break
            if kind == "end":
                raise RuleSyntaxError(f"missing ')' to close {written}(", at)
            if expect_string and kind == "string":
                args.append(text)
                columns.append(at)
            elif expect_string:
                message = (
                    f"expected a string in backticks or double quotes, found {describe(token)}"
                )
                raise RuleSyntaxError(message, at)
            elif kind != ",":
                message = f"expected ',' or ')' after an argument, found {describe(token)}"
                raise RuleSyntaxError(message, at)
            expect_string = not expect_string
        self.pos = pos + 1
        _check_count(grammar, name, args, columns, at)
        grammar.check(name, args, columns)
        return Matcher(name, tuple(args), column)


# A grammar's value check: (canonical name, arguments, their columns); raises RuleSyntaxError.
ValueCheck = Callable[[str, list[str], list[int]], None]


class Grammar:
    """One matcher set of the rule language: names, argument counts, value checks.

    Tokens, operators, precedence and error messages are shared by every
    grammar; ``HTTP`` is the routers' one, ``gateway.config.tcp_rule`` holds
    the TCP and UDP ones. Names are accepted in Traefik's four spellings.
    """

    __slots__ = ("arity", "check", "example", "spellings", "usage")

    def __init__(
        self,
        arity: Mapping[str, tuple[int, int]],
        *,
        check: ValueCheck,
        example: str,
        usage: Mapping[str, str] | None = None,
    ) -> None:
        self.arity = arity  # name -> (fewest, most) arguments
        self.check = check
        self.example = example  # shown in "expected a matcher such as ..."
        self.usage = usage or {}
        self.spellings = {
            spelling: name
            for name in arity
            for spelling in (name, name.lower(), name.upper(), name.lower().title())
        }


def _check_count(
    grammar: Grammar, name: str, args: list[str], columns: list[int], close_column: int
) -> None:
    """Argument count and emptiness, as Traefik checks them when it builds the route."""
    fewest, most = grammar.arity[name]
    if not fewest <= len(args) <= most:
        wanted = f"{fewest} or {most} arguments" if fewest != most else f"{fewest} argument"
        wanted += "s" if fewest == most > 1 else ""
        usage = f" ({grammar.usage[name]})" if name in grammar.usage else ""
        where = columns[most] if len(args) > most else close_column
        raise RuleSyntaxError(f"{name} takes {wanted}{usage}, got {len(args)}", where)
    for arg, column in zip(args, columns, strict=True):
        if not arg:
            raise RuleSyntaxError(f"{name}: empty argument", column)


def _check(name: str, args: list[str], columns: list[int]) -> None:
    """Validate an HTTP matcher's values as Traefik does when it builds the route."""
    value, column = args[-1], columns[-1]
    if name == "Host":
        _check_host(value, column)
    elif name in ("Path", "PathPrefix"):
        if not value.startswith("/"):
            raise RuleSyntaxError(f"{name}: path {value!r} does not start with '/'", column)
    elif name == "Method":
        if not _TOKEN_CHARS.fullmatch(value):
            raise RuleSyntaxError(f"Method: {value!r} is not an HTTP method token", column)
    elif name == "ClientIP":
        _check_ip(value, column)
    elif name in ("Header", "HeaderRegexp") and not _TOKEN_CHARS.fullmatch(args[0]):
        raise RuleSyntaxError(f"{name}: {args[0]!r} is not a header name", columns[0])
    if name == "HostRegexp" and not value.isascii():
        raise RuleSyntaxError("HostRegexp: non-ASCII characters are not allowed", column)
    if name.endswith("Regexp") and (name != "QueryRegexp" or len(args) == 2):
        try:
            compile_safe(value)
        except GoRegexpError as exc:
            raise RuleSyntaxError(f"{name}: invalid regexp {value!r}: {exc}", column) from None


HTTP = Grammar(MATCHERS, check=_check, example="Host(`example.com`)", usage=_USAGE)


def _check_host(value: str, column: int) -> None:
    if _HOST_NAME.fullmatch(value):
        return
    if not value.isascii():
        message = "non-ASCII host; write internationalized names in punycode (xn--...)"
    elif "://" in value:
        scheme = value.split("://", 1)[0]
        message = f"{value!r} is a URL; remove {scheme + '://'!r}"
    elif "/" in value:
        message = f"{value!r} has a path; match it with Path or PathPrefix"
    elif value.count(":") >= 2 or value.startswith("["):
        inner = value[1:-1] if value.startswith("[") and value.endswith("]") else value
        try:
            ipaddress.IPv6Address(inner)
        except ValueError:
            message = f"{value!r} is not a valid IPv6 address"
        else:
            if "%" not in inner:
                return
            message = f"{value!r}: IPv6 zones are not supported"
    elif ":" in value:
        message = f"{value!r} has a port; Host matches the request host without its port"
    elif "*" in value:
        message = "a wildcard is a whole first label: `*.example.com` or `**.example.com`"
    else:
        message = f"{value!r} is not a host name"
    raise RuleSyntaxError(f"Host: {message}", column)


def _check_ip(value: str, column: int) -> None:
    try:
        if "%" in value:
            raise ValueError(value)
        if "/" in value:
            ipaddress.ip_network(value, strict=False)
        else:
            ipaddress.ip_address(value)
    except ValueError:
        message = f"ClientIP: {value!r} is not an IP address or CIDR range"
        raise RuleSyntaxError(message, column) from None


def default_priority(rule: str, expr: Expr | None = None) -> int:
    """Traefik's priority for a router without one: the rule's length, see the module doc.

    ``expr`` is ``parse(rule)`` when the caller has it; a rule that does not
    parse gets its plain length.
    """
    length = len(rule) if rule.isascii() else len(rule.encode("utf-8"))
    if "**." not in rule:
        return length
    if expr is None:
        try:
            expr = parse(rule)
        except RuleSyntaxError:
            return length
    return length - 2 * _double_wildcards(expr, positive=True)


def _double_wildcards(expr: Expr, *, positive: bool) -> int:
    if isinstance(expr, Matcher):
        return int(positive and expr.name == "Host" and expr.args[0].startswith("**."))
    if isinstance(expr, Not):
        return _double_wildcards(expr.expr, positive=not positive)
    return _double_wildcards(expr.left, positive=positive) + _double_wildcards(
        expr.right, positive=positive
    )


def render(expr: Expr) -> str:
    """Canonical rule text for ``expr``; ``parse(render(e)) == e``."""
    if isinstance(expr, Matcher):
        return f"{expr.name}({', '.join(quote(a) for a in expr.args)})"
    if isinstance(expr, Not):
        inner = render(expr.expr)
        return f"!{inner}" if isinstance(expr.expr, Matcher | Not) else f"!({inner})"
    if isinstance(expr, And):
        left, right = render(expr.left), render(expr.right)
        if isinstance(expr.left, Or):
            left = f"({left})"
        if isinstance(expr.right, And | Or):
            right = f"({right})"
        return f"{left} && {right}"
    left, right = render(expr.left), render(expr.right)
    return f"{left} || ({right})" if isinstance(expr.right, Or) else f"{left} || {right}"
