"""Tests for gateway.config.rule: the Traefik v3 rule parser."""

from __future__ import annotations

import pytest

from gateway.config.rule import (
    And,
    Expr,
    Matcher,
    Not,
    Or,
    RuleSyntaxError,
    default_priority,
    parse,
    render,
)


def m(name: str, *args: str) -> Matcher:
    return Matcher(name, args)


HOST = m("Host", "example.com")
PATH = m("Path", "/x")
GET = m("Method", "GET")

VALID: list[tuple[str, Expr, str]] = [
    ("Host(`example.com`)", HOST, "backticks"),
    ('Host("example.com")', HOST, "double-quotes"),
    ("  Host( `example.com` )  ", HOST, "whitespace-everywhere"),
    ("Host(`example.com`,)", HOST, "trailing-comma"),
    ("Host(`example.com`) &&\n  Path(`/x`)", And(HOST, PATH), "newline-after-operator"),
    ("Host(`example.com`)\n&& Path(`/x`)", And(HOST, PATH), "newline-before-operator"),
    ("host(`example.com`)", HOST, "lower-case-name"),
    ("HOST(`example.com`)", HOST, "upper-case-name"),
    ("Pathprefix(`/x`)", m("PathPrefix", "/x"), "title-case-name"),
    ("Host(`example.com`) && Path(`/x`)", And(HOST, PATH), "and"),
    ("Host(`example.com`) || Path(`/x`)", Or(HOST, PATH), "or"),
    ("!Host(`example.com`)", Not(HOST), "not"),
    ("!!Host(`example.com`)", Not(Not(HOST)), "double-not"),
    ("!(Host(`example.com`) || Path(`/x`))", Not(Or(HOST, PATH)), "not-group"),
    (
        "Host(`example.com`) || Path(`/x`) && Method(`GET`)",
        Or(HOST, And(PATH, GET)),
        "and-binds-tighter-than-or",
    ),
    (
        "(Host(`example.com`) || Path(`/x`)) && Method(`GET`)",
        And(Or(HOST, PATH), GET),
        "parentheses-override",
    ),
    ("!Host(`example.com`) && Path(`/x`)", And(Not(HOST), PATH), "not-binds-tightest"),
    (
        "Host(`example.com`) && Path(`/x`) && Method(`GET`)",
        And(And(HOST, PATH), GET),
        "and-is-left-associative",
    ),
    (
        "Host(`example.com`) || Path(`/x`) || Method(`GET`)",
        Or(Or(HOST, PATH), GET),
        "or-is-left-associative",
    ),
    ("((Host(`example.com`)))", HOST, "nested-parentheses"),
    ("Header(`X-Api`, `v1`)", m("Header", "X-Api", "v1"), "header"),
    ("HeaderRegexp(`X-Api`, `^v[0-9]$`)", m("HeaderRegexp", "X-Api", "^v[0-9]$"), "header-re"),
    ("Query(`mobile`)", m("Query", "mobile"), "query-key-only"),
    ("Query(`q`, `traefik`)", m("Query", "q", "traefik"), "query-key-value"),
    ("QueryRegexp(`q`)", m("QueryRegexp", "q"), "query-regexp-key-only"),
    ("QueryRegexp(`q`, `^t`)", m("QueryRegexp", "q", "^t"), "query-regexp"),
    ("HostRegexp(`^.+\\.example\\.com$`)", m("HostRegexp", "^.+\\.example\\.com$"), "host-re"),
    ("PathRegexp(`^/(css|js)`)", m("PathRegexp", "^/(css|js)"), "path-regexp"),
    ("PathPrefix(`/api`)", m("PathPrefix", "/api"), "path-prefix"),
    ("Method(`get`)", m("Method", "get"), "method-kept-as-written"),
    ("ClientIP(`198.51.100.0/24`)", m("ClientIP", "198.51.100.0/24"), "client-ip-cidr"),
    ("ClientIP(`203.0.113.7/24`)", m("ClientIP", "203.0.113.7/24"), "client-ip-host-bits"),
    ("ClientIP(`::1`)", m("ClientIP", "::1"), "client-ip-v6"),
    ("ClientIP(`2001:db8::/32`)", m("ClientIP", "2001:db8::/32"), "client-ip-v6-cidr"),
    ("Host(`*.example.com`)", m("Host", "*.example.com"), "host-wildcard"),
    ("Host(`**.example.com`)", m("Host", "**.example.com"), "host-double-wildcard"),
    ("Host(`example.com.`)", m("Host", "example.com."), "host-trailing-dot"),
    ("Host(`EXAMPLE.com`)", m("Host", "EXAMPLE.com"), "host-kept-as-written"),
    ("Host(`127.0.0.1`)", m("Host", "127.0.0.1"), "host-ipv4"),
    ("Host(`[::1]`)", m("Host", "[::1]"), "host-ipv6-brackets"),
    ("Host(`::1`)", m("Host", "::1"), "host-ipv6-bare"),
    ("Host(`my_service`)", m("Host", "my_service"), "host-underscore"),
    ('Path("/a\\tb")', m("Path", "/a\tb"), "escape-tab"),
    ('Path("/\\x41\\101\\u00e9\\U0001F600")', m("Path", "/AAé\U0001f600"), "escapes-hex-octal"),
    ('Path("/\\303\\251")', m("Path", "/é"), "octal-utf8-bytes"),
    ('Header(`X`, "say \\"hi\\"")', m("Header", "X", 'say "hi"'), "escaped-quote"),
    ('Header(`X`, "a\\\\b")', m("Header", "X", "a\\b"), "escaped-backslash"),
    ("Header(`X`, `a\\nb`)", m("Header", "X", "a\\nb"), "raw-string-no-escapes"),
    ("Header(`X`, `a\r\nb`)", m("Header", "X", "a\nb"), "raw-string-drops-cr"),
    ('Header(`X`, `say "hi"`)', m("Header", "X", 'say "hi"'), "quotes-in-raw-string"),
    ("Path(`/ü`)", m("Path", "/ü"), "non-ascii-path"),
]


@pytest.mark.parametrize(
    ("rule", "expected"), [(r, e) for r, e, _ in VALID], ids=[i for _, _, i in VALID]
)
def test_parse_valid(rule: str, expected: Expr) -> None:
    """Valid Traefik v3 rules parse to the expected AST."""
    assert parse(rule) == expected


@pytest.mark.parametrize("rule", [r for r, _, _ in VALID], ids=[i for _, _, i in VALID])
def test_render_round_trips(rule: str) -> None:
    """render() gives rule text that parses back to the same AST."""
    expr = parse(rule)
    assert parse(render(expr)) == expr


def test_matcher_column() -> None:
    """Each matcher records the column of its name."""
    expr = parse("Host(`a`) && !Path(`/b`)")
    assert isinstance(expr, And) and isinstance(expr.right, Not)
    assert isinstance(expr.left, Matcher) and expr.left.column == 1
    assert isinstance(expr.right.expr, Matcher) and expr.right.expr.column == 15


INVALID = [
    ("", 1, "empty rule", "empty"),
    ("   ", 1, "empty rule", "blank"),
    ("Hots(`a`)", 1, "unknown matcher 'Hots' (did you mean \"Host\"?)", "unknown-matcher"),
    ("Host(`a`) && Pth(`/`)", 14, 'did you mean "Path"?', "unknown-second-matcher"),
    ("HostSNI(`a`)", 1, "unknown matcher 'HostSNI'", "tcp-matcher"),
    ("Host `a`", 6, "expected '(' after Host", "missing-paren"),
    ("Host(`a`", 9, "missing ')' to close Host(", "unclosed-call"),
    ("Host(`a`,", 10, "missing ')' to close Host(", "unclosed-after-comma"),
    ("Host(`a` `b`)", 10, "expected ',' or ')'", "missing-comma"),
    ("Host(,)", 6, "expected a string", "comma-first"),
    ("Host(a)", 6, "expected a string", "identifier-argument"),
    ("Host(1)", 6, "arguments are strings", "number-argument"),
    ("Host('a')", 6, "single quotes", "single-quotes"),
    ("Host(`a`) & Path(`/`)", 11, "use '&&'", "single-ampersand"),
    ("Host(`a`) | Path(`/`)", 11, "use '||'", "single-pipe"),
    ("Host(`a`) Path(`/`)", 11, "expected '&&', '||' or the end", "missing-operator"),
    ("Host(`a`) &&", 13, "found the end of the rule", "dangling-and"),
    ("&& Host(`a`)", 1, "expected a matcher", "leading-and"),
    ("!", 2, "expected a matcher", "bare-not"),
    ("Host(`a`))", 10, "unexpected ')'", "extra-close"),
    ("(Host(`a`)", 11, "close the '(' at column 1", "unclosed-group"),
    ("()", 2, "expected a matcher", "empty-group"),
    ("Host(`a)", 6, "no closing backtick", "unterminated-backtick"),
    ("Host(`a) && Path(`/`)", 19, "unexpected character '/'", "backticks-pair-across-rule"),
    ('Host("a)', 6, 'no closing "', "unterminated-quote"),
    ('Host("a\nb")', 8, "newline in string", "newline-in-quotes"),
    ('Host("a\\qb")', 8, "unknown escape sequence \\q", "bad-escape"),
    ('Host("a\\\'b")', 8, "unknown escape sequence", "escaped-single-quote"),
    ('Path("/\\x4")', 8, "2 hex digits", "short-hex"),
    ('Path("/\\ud800")', 8, "not a Unicode code point", "surrogate"),
    ('Path("/\\400")', 8, "octal escapes", "octal-overflow"),
    ('Path("/\\xff")', 6, "not valid UTF-8", "invalid-utf8"),
    ("Host(`a`) # comment", 11, "unexpected character '#'", "comment"),
    ("Host()", 6, "Host takes 1 argument, got 0", "no-arguments"),
    ("Host(`a`, `b`)", 11, "Host takes 1 argument, got 2", "too-many-arguments"),
    ("Header(`X`)", 11, "Header takes 2 arguments (Header(`name`, `value`)), got 1", "header-1"),
    ("Query(`a`, `b`, `c`)", 17, "Query takes 1 or 2 arguments", "query-3"),
    ("Host(``)", 6, "Host: empty argument", "empty-host"),
    ("Header(`X`, ``)", 13, "Header: empty argument", "empty-header-value"),
    ("Query(`q`, ``)", 12, "Query: empty argument", "empty-query-value"),
    ("Path(`css`)", 6, "does not start with '/'", "path-relative"),
    ("PathPrefix(`api`)", 12, "does not start with '/'", "prefix-relative"),
    ("PathRegexp(`(`)", 12, "PathRegexp: invalid regexp '(': missing closing )", "bad-regexp"),
    ("HostRegexp(`(?=a)`)", 12, "look-around", "re2-lookahead"),
    ("HostRegexp(`é`)", 12, "non-ASCII", "host-regexp-non-ascii"),
    ("HeaderRegexp(`X`, `[a`)", 19, "invalid regexp", "header-regexp"),
    ("QueryRegexp(`q`, `\\pL`)", 18, "Unicode classes", "query-regexp"),
    ("Method(`GET POST`)", 8, "not an HTTP method token", "method-space"),
    ("Header(`X Y`, `v`)", 8, "is not a header name", "header-name-space"),
    ("ClientIP(`1.2.3`)", 10, "not an IP address or CIDR", "client-ip-short"),
    ("ClientIP(`198.51.100.0/33`)", 10, "not an IP address or CIDR", "client-ip-prefix"),
    ("ClientIP(`fe80::1%eth0`)", 10, "not an IP address or CIDR", "client-ip-zone"),
    ("ClientIP(`localhost`)", 10, "not an IP address or CIDR", "client-ip-name"),
    ("Host(`https://example.com`)", 6, "remove 'https://'", "host-scheme"),
    ("Host(`example.com/api`)", 6, "has a path", "host-path"),
    ("Host(`example.com:8080`)", 6, "has a port", "host-port"),
    ("Host(`[::1]:8080`)", 6, "not a valid IPv6 address", "host-ipv6-port"),
    ("Host(`*`)", 6, "a wildcard is a whole first label", "host-star"),
    ("Host(`*example.com`)", 6, "a wildcard is a whole first label", "host-star-prefix"),
    ("Host(`a.*.example.com`)", 6, "a wildcard is a whole first label", "host-star-middle"),
    ("Host(`***.example.com`)", 6, "a wildcard is a whole first label", "host-triple-star"),
    ("Host(`bücher.de`)", 6, "punycode", "host-non-ascii"),
    ("Host(`a b`)", 6, "is not a host name", "host-space"),
]


@pytest.mark.parametrize(
    ("rule", "column", "message"),
    [(r, c, msg) for r, c, msg, _ in INVALID],
    ids=[i for *_, i in INVALID],
)
def test_parse_error(rule: str, column: int, message: str) -> None:
    """Each syntax or argument error names its column and says what is wrong."""
    with pytest.raises(RuleSyntaxError) as caught:
        parse(rule)
    assert caught.value.column == column
    assert message in caught.value.message


def test_error_str() -> None:
    """str() of a RuleSyntaxError is 'column N: message'."""
    error = RuleSyntaxError("bad", 7)
    assert str(error) == "column 7: bad"
    assert (error.message, error.column) == ("bad", 7)


def test_render_quotes_backticks_with_go_escapes() -> None:
    """An argument holding a backtick or CR renders as a Go double-quoted string."""
    expr = m("Header", "X", 'a`b"c\\d\r\n\x01')
    text = render(expr)
    assert text == 'Header(`X`, "a`b\\"c\\\\d\\x0d\\n\\x01")'
    assert parse(text) == expr


def test_render_parenthesises_by_precedence() -> None:
    """render() keeps grouping that precedence alone would lose."""
    a, b, c = m("Path", "/a"), m("Path", "/b"), m("Path", "/c")
    assert render(And(Or(a, b), c)) == "(Path(`/a`) || Path(`/b`)) && Path(`/c`)"
    assert render(And(a, And(b, c))) == "Path(`/a`) && (Path(`/b`) && Path(`/c`))"
    assert render(Or(a, And(b, c))) == "Path(`/a`) || Path(`/b`) && Path(`/c`)"
    assert render(Not(And(a, b))) == "!(Path(`/a`) && Path(`/b`))"


PRIORITIES = [
    ("Host(`example.com`)", 19, "length"),
    ("PathPrefix(`/ü`)", 17, "bytes-not-characters"),
    ("Host(`*.example.com`)", 21, "single-wildcard-counts"),
    ("Host(`**.example.com`)", 20, "double-wildcard-stars-do-not-count"),
    ("Host(`**.a.com`) || Host(`**.b.com`)", 32, "each-double-wildcard"),
    ("!Host(`**.example.com`)", 23, "negated-wildcard-counts"),
    ("!!Host(`**.example.com`)", 22, "double-negation-is-positive"),
    ("Path(`/**.x`)", 13, "only-host-wildcards"),
    ("Host(`**.example.com`", 21, "unparsable-rule-is-its-length"),
]


@pytest.mark.parametrize(
    ("rule", "priority"), [(r, p) for r, p, _ in PRIORITIES], ids=[i for *_, i in PRIORITIES]
)
def test_default_priority(rule: str, priority: int) -> None:
    """The default priority is Traefik's: byte length, minus the stars of `**.` hosts."""
    assert default_priority(rule) == priority


def test_default_priority_uses_given_expr() -> None:
    """A caller that already parsed the rule passes the AST instead of re-parsing."""
    rule = "Host(`**.example.com`)"
    assert default_priority(rule, parse(rule)) == len(rule) - 2
