"""Tests for providers.gatewayapi.httproute_rules: rule text and the precedence priority.

Spec references are to /work/notes/gatewayapi-spec.md: §2.3 wildcards, §2.5
precedence, §2.6 path matching, §5.1 rule text, §5.3 the priority encoding.
Rules are checked by running them through Sluice's real rule parser and
matchers, not by reading the text back.
"""

from __future__ import annotations

import pytest

from gateway.config.rule import parse
from gateway.http.matchers import compile_rule
from middleware.contract import Headers, Request
from providers.gatewayapi.httproute_rules import priority, route_ranks, rule_text
from providers.gatewayapi.objects import (
    HTTPMatch,
    HTTPRoute,
    Meta,
    ParentRef,
    PathMatch,
    ValueMatch,
)


def prefix(value: str) -> HTTPMatch:
    return HTTPMatch(path=PathMatch("PathPrefix", value))


def exact(value: str) -> HTTPMatch:
    return HTTPMatch(path=PathMatch("Exact", value))


def route(name: str, namespace: str, created: str) -> HTTPRoute:
    return HTTPRoute(Meta(name, namespace, created=created), (ParentRef("gw", namespace),))


def matches(rule: str, path: str, host: str = "gw.example", **headers: str) -> bool:
    raw, _, query = path.partition("?")
    pairs = [(k.encode(), v.encode()) for k, v in headers.items()]
    request = Request(method="GET", raw_path=raw, query=query, headers=Headers(pairs),
                      host=host, client_ip="127.0.0.1")  # fmt: skip
    return compile_rule(parse(rule))(request)


# --- rule text (§2.6, §5.1) ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("hostname", "match", "rule"),
    [
        ("", HTTPMatch(), "PathPrefix(`/`)"),
        ("", exact("/a/b"), "Path(`/a/b`)"),
        ("", prefix("/foo"), "Path(`/foo`) || PathPrefix(`/foo/`)"),
        ("", prefix("/foo/"), "Path(`/foo`) || PathPrefix(`/foo/`)"),
        ("", HTTPMatch(path=PathMatch("RegularExpression", "/v[0-9]+")),
         "PathRegexp(`^(?:/v[0-9]+)$`)"),
        ("", HTTPMatch(headers=(ValueMatch("Version", "one"),)),
         "PathPrefix(`/`) && Header(`Version`, `one`)"),
        ("", HTTPMatch(headers=(ValueMatch("Version", "o.e", "RegularExpression"),)),
         "PathPrefix(`/`) && HeaderRegexp(`Version`, `^(?:o.e)$`)"),
        ("", HTTPMatch(query_params=(ValueMatch("animal", "whale"),)),
         "PathPrefix(`/`) && Query(`animal`, `whale`)"),
        ("", HTTPMatch(query_params=(ValueMatch("animal", "wh.*", "RegularExpression"),)),
         "PathPrefix(`/`) && QueryRegexp(`animal`, `^(?:wh.*)$`)"),
        ("", HTTPMatch(method="POST"), "PathPrefix(`/`) && Method(`POST`)"),
        ("example.com", exact("/"), "Host(`example.com`) && Path(`/`)"),
        ("*.example.com", prefix("/x"),
         "Host(`**.example.com`) && (Path(`/x`) || PathPrefix(`/x/`))"),
        ("", HTTPMatch(headers=(ValueMatch("v", "has`tick"),)),
         'PathPrefix(`/`) && Header(`v`, "has`tick")'),
    ],
    ids=["default", "exact", "prefix", "prefix-trailing-slash", "regex", "header",
         "header-regex", "query", "query-regex", "method", "exact-host", "wildcard-host",
         "backtick-value"],
)  # fmt: skip
def test_rule_text(hostname: str, match: HTTPMatch, rule: str) -> None:
    """Each match type becomes its Sluice matcher, quoted so the parser reads it back (§5.1)."""
    assert rule_text(hostname, match) == rule
    parse(rule)


@pytest.mark.parametrize(
    ("value", "path", "expected"),
    [
        ("/foo", "/foo", True), ("/foo", "/foo/", True), ("/foo", "/foo/bar", True),
        ("/foo", "/foobar", False), ("/foo", "/fo", False), ("/foo", "/Foo", False),
        ("/foo/", "/foo", True), ("/foo/", "/foo/bar", True), ("/foo/", "/foobar", False),
        ("/", "/anything", True), ("/", "/", True),
    ],
    ids=lambda v: str(v),
)  # fmt: skip
def test_path_prefix_is_element_wise(value: str, path: str, expected: bool) -> None:
    """PathPrefix matches whole path elements, case-sensitively; trailing "/" is ignored (§2.6)."""
    assert matches(rule_text("", prefix(value)), path) is expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [("/v12", True), ("/v12/x", False), ("/a/v12", False), ("/v", False)],
    ids=["whole", "longer", "inner", "short"],
)
def test_regular_expressions_match_the_whole_value(path: str, expected: bool) -> None:
    """A RegularExpression path match is a full match, not a search (§2.6)."""
    match = HTTPMatch(path=PathMatch("RegularExpression", "/v[0-9]+"))
    assert matches(rule_text("", match), path) is expected


def test_header_names_are_case_insensitive_and_the_first_entry_wins() -> None:
    """Header names match case-insensitively; of repeated names only the first counts (§1.5)."""
    match = HTTPMatch(headers=(ValueMatch("Version", "one"), ValueMatch("VERSION", "two")))
    rule = rule_text("", match)
    assert rule == "PathPrefix(`/`) && Header(`Version`, `one`)"
    assert matches(rule, "/", version="one")
    assert not matches(rule, "/", version="two")


@pytest.mark.parametrize(
    ("host", "expected"),
    [("a.example.com", True), ("a.b.example.com", True), ("example.com", False),
     ("aexample.com", False)],
    ids=["one-label", "two-labels", "apex", "no-dot"],
)  # fmt: skip
def test_wildcard_hostname_covers_one_or_more_labels(host: str, expected: bool) -> None:
    """``*.example.com`` matches one or more labels in front, never the apex (§2.3)."""
    assert matches(rule_text("*.example.com", HTTPMatch()), "/", host=host) is expected


def key(hostname: str, match: HTTPMatch, rank: int = 0, position: int = 0) -> int:
    return priority(hostname, match, rank=rank, route_count=4, position=position)


HEADER = ValueMatch("h", "1")
QUERY = ValueMatch("q", "1")


@pytest.mark.parametrize(
    ("higher", "lower"),
    [
        (key("", exact("/a")), key("", prefix("/a/b/c/d"))),
        (key("", HTTPMatch(path=PathMatch("RegularExpression", "/a"))), key("", prefix("/abc"))),
        (key("", prefix("/abc")), key("", HTTPMatch(path=PathMatch("PathPrefix", "/ab"),
                                                    method="GET",
                                                    headers=(HEADER,) * 16))),
        (key("", prefix("/ab")), key("", prefix("/a/"))),
        (key("", HTTPMatch(method="GET")), key("", HTTPMatch(headers=(HEADER,) * 16))),
        (key("", HTTPMatch(headers=(HEADER, ValueMatch("g", "2")))),
         key("", HTTPMatch(headers=(HEADER,), query_params=(QUERY,) * 16))),
        (key("", HTTPMatch(query_params=(QUERY, ValueMatch("r", "1")))),
         key("host.example", HTTPMatch(query_params=(QUERY,)))),
        (key("a.example", HTTPMatch()), key("*.very.long.example", HTTPMatch())),
        (key("*.b.example", HTTPMatch()), key("*.example", HTTPMatch())),
        (key("*.example", HTTPMatch()), key("", HTTPMatch())),
        (key("", HTTPMatch(), rank=0), key("", HTTPMatch(), rank=1)),
        (key("", HTTPMatch(), rank=2, position=0), key("", HTTPMatch(), rank=2, position=1)),
    ],
    ids=["exact-over-prefix", "regex-over-prefix", "longer-prefix-over-method-and-headers",
         "prefix-length-ignores-trailing-slash", "method-over-headers",
         "more-headers-over-queries", "more-queries-over-hostname",
         "exact-host-over-wildcard", "longer-wildcard-over-shorter", "wildcard-over-any-host",
         "older-route-first", "earlier-match-first"],
)  # fmt: skip
def test_precedence_criteria_order(higher: int, lower: int) -> None:
    """Each §2.5 criterion outranks every later one, in one integer (§5.3)."""
    assert higher > lower > 0


def test_trailing_slash_does_not_change_a_prefix_rank() -> None:
    """``/foo`` and ``/foo/`` are the same match, so they rank the same (§2.5 path length)."""
    assert key("", prefix("/foo")) == key("", prefix("/foo/"))


def test_route_ranks_by_age_then_namespace_slash_name() -> None:
    """Oldest creationTimestamp first, then "{namespace}/{name}" as a string (§2.5 6-7)."""
    routes = [
        route("b", created="2024-01-01T00:00:00Z", namespace="x"),
        route("a", created="2024-01-02T00:00:00Z", namespace="x"),
        route("y", created="2024-01-01T00:00:00Z", namespace="a-b"),
        route("z", created="2024-01-01T00:00:00Z", namespace="a"),
        route("c", created="2024-01-01T00:00:00.5+00:00", namespace="a"),
    ]
    ranks = route_ranks(routes)
    # "a-b/y" < "a/z" as strings ('-' sorts before '/'), though ("a", "z") < ("a-b", "y").
    assert sorted(ranks, key=ranks.__getitem__) == [
        ("a-b", "y"), ("a", "z"), ("x", "b"), ("a", "c"), ("x", "a")
    ]  # fmt: skip


