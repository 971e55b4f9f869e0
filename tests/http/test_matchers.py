"""Tests for gateway.http.matchers: what each compiled matcher accepts."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from gateway.config.rule import RuleSyntaxError, parse
from gateway.http.matchers import compile_rule, query_values, routing_path
from middleware.contract import Headers, Request
from tests.backends import RecordingBackend, get, http_request
from tests.harness import start_gateway


def request(
    host: str = "example.com",
    path: str = "/",
    *,
    query: str = "",
    method: str = "GET",
    headers: list[tuple[bytes, bytes]] | None = None,
    client_ip: str = "127.0.0.1",
) -> Request:
    return Request(
        method=method,
        raw_path=path,
        query=query,
        headers=Headers(list(headers or [])),
        host=host,
        client_ip=client_ip,
    )


def h(*pairs: tuple[str, str]) -> dict[str, Any]:
    return {"headers": [(k.encode(), v.encode()) for k, v in pairs]}


# rule, request keyword arguments, expected, id
CASES: list[tuple[str, dict[str, Any], bool, str]] = [
    # Host: case-insensitive, port already stripped, trailing dots ignored.
    ("Host(`example.com`)", {"host": "example.com"}, True, "host-exact"),
    ("Host(`EXAMPLE.com`)", {"host": "example.com"}, True, "host-rule-upper-case"),
    ("Host(`example.com`)", {"host": "example.com."}, True, "host-request-trailing-dot"),
    ("Host(`example.com.`)", {"host": "example.com"}, True, "host-rule-trailing-dot"),
    ("Host(`example.com.`)", {"host": "example.com."}, True, "host-both-trailing-dots"),
    ("Host(`example.com`)", {"host": "www.example.com"}, False, "host-subdomain"),
    ("Host(`example.com`)", {"host": "example.org"}, False, "host-other"),
    ("Host(`example.com`)", {"host": ""}, False, "host-missing"),
    ("Host(`::1`)", {"host": "[::1]"}, True, "host-ipv6-bare-rule"),
    ("Host(`[::1]`)", {"host": "[::1]"}, True, "host-ipv6-bracket-rule"),
    ("Host(`127.0.0.1`)", {"host": "127.0.0.1"}, True, "host-ipv4"),
    ("Host(`*.example.com`)", {"host": "a.example.com"}, True, "wildcard-one-label"),
    ("Host(`*.example.com`)", {"host": "a.example.com."}, True, "wildcard-trailing-dot"),
    ("Host(`*.example.com`)", {"host": "a.b.example.com"}, False, "wildcard-two-labels"),
    ("Host(`*.example.com`)", {"host": "example.com"}, False, "wildcard-not-apex"),
    ("Host(`*.example.com`)", {"host": ".example.com"}, False, "wildcard-empty-label"),
    ("Host(`*.example.com`)", {"host": "aexample.com"}, False, "wildcard-needs-dot"),
    ("Host(`**.example.com`)", {"host": "a.example.com"}, True, "double-one-label"),
    ("Host(`**.example.com`)", {"host": "a.b.example.com"}, True, "double-two-labels"),
    ("Host(`**.example.com`)", {"host": "example.com"}, False, "double-not-apex"),
    ("Host(`**.example.com`)", {"host": "badexample.com"}, False, "double-needs-dot"),
    ("Host(`**.Example.com.`)", {"host": "a.example.com"}, True, "double-normalised"),
    # HostRegexp: unanchored search over the lower-cased host.
    ("HostRegexp(`^[a-z]+\\.example\\.com$`)", {"host": "www.example.com"}, True, "hre"),
    ("HostRegexp(`^[a-z]+\\.example\\.com$`)", {"host": "www.example.com.x"}, False, "hre-end"),
    ("HostRegexp(`example`)", {"host": "www.example.org"}, True, "hre-unanchored"),
    ("HostRegexp(`^[A-Z]+\\.com$`)", {"host": "example.com"}, False, "hre-host-is-lower"),
    # Path: exact, on the routing path.
    ("Path(`/css`)", {"path": "/css"}, True, "path-exact"),
    ("Path(`/css`)", {"path": "/css/"}, False, "path-trailing-slash"),
    ("Path(`/css`)", {"path": "/CSS"}, False, "path-case-sensitive"),
    ("Path(`/a b`)", {"path": "/a%20b"}, True, "path-decoded-space"),
    ("Path(`/é`)", {"path": "/%C3%A9"}, True, "path-decoded-utf8"),
    ("Path(`/a/b`)", {"path": "/a%2Fb"}, False, "path-encoded-slash-is-not-slash"),
    ("Path(`/a%2Fb`)", {"path": "/a%2Fb"}, True, "path-encoded-slash-kept"),
    ("Path(`/a/b`)", {"path": "/a%2fb"}, False, "path-lower-case-escape-kept"),
    # PathPrefix: a plain string prefix, as in Traefik v3.
    ("PathPrefix(`/css`)", {"path": "/css/main.css"}, True, "prefix"),
    ("PathPrefix(`/css`)", {"path": "/css"}, True, "prefix-whole"),
    ("PathPrefix(`/css`)", {"path": "/cssx"}, True, "prefix-not-segment-aware"),
    ("PathPrefix(`/css`)", {"path": "/cs"}, False, "prefix-shorter"),
    ("PathPrefix(`/api/v1`)", {"path": "/api%2Fv1"}, False, "prefix-encoded-slash"),
    ("PathPrefix(`/a b/`)", {"path": "/a%20b/c"}, True, "prefix-decoded"),
    # PathRegexp: unanchored, Go semantics for `$`.
    ("PathRegexp(`^/(css|js)`)", {"path": "/css/main.css"}, True, "path-re"),
    ("PathRegexp(`^/(css|js)`)", {"path": "/html"}, False, "path-re-miss"),
    ("PathRegexp(`/v[0-9]+/`)", {"path": "/api/v2/users"}, True, "path-re-unanchored"),
    ("PathRegexp(`^/admin$`)", {"path": "/admin%0A"}, False, "path-re-dollar-not-before-nl"),
    ("PathRegexp(`^/admin$`)", {"path": "/admin"}, True, "path-re-dollar"),
    # Header: case-insensitive name, exact value, any one header line.
    ("Header(`X-Proto`, `https`)", h(("X-Proto", "https")), True, "header"),
    ("Header(`x-proto`, `https`)", h(("X-PROTO", "https")), True, "header-name-case"),
    ("Header(`X-Proto`, `https`)", h(("X-Proto", "http"), ("X-Proto", "https")), True, "header-2"),
    ("Header(`X-Proto`, `https`)", h(("X-Proto", "http, https")), False, "header-no-split"),
    ("Header(`X-Proto`, `https`)", h(("X-Proto", "HTTPS")), False, "header-value-case"),
    ("Header(`X-Proto`, `https`)", h(("X-Proto", " https ")), True, "header-value-blanks"),
    ("Header(`X-Proto`, `https`)", h(("X-Prot", "https")), False, "header-other-name"),
    ("Header(`X-Proto`, `https`)", {}, False, "header-missing"),
    ("Header(`X-Name`, `é`)", {"headers": [(b"X-Name", "é".encode())]}, True, "header-utf8"),
    # HeaderRegexp: unanchored search on each value.
    ("HeaderRegexp(`X-Proto`, `^https?$`)", h(("X-Proto", "http")), True, "header-re"),
    ("HeaderRegexp(`X-Proto`, `^https?$`)", h(("X-Proto", "HTTPS")), False, "header-re-case"),
    (
        "HeaderRegexp(`X-Proto`, `^https?$`)",
        h(("X-Proto", "ws"), ("x-proto", "https")),
        True,
        "header-re-any-line",
    ),
    ("HeaderRegexp(`X-Proto`, `^https?$`)", {}, False, "header-re-missing"),
    # Query: some value equals; the one-argument form wants an empty value.
    ("Query(`q`, `traefik`)", {"query": "q=traefik"}, True, "query"),
    ("Query(`q`, `traefik`)", {"query": "rel=ddg&q=traefik"}, True, "query-second-pair"),
    ("Query(`q`, `traefik`)", {"query": "q=traefik&q=proxy"}, True, "query-first-value"),
    ("Query(`q`, `traefik`)", {"query": "q=awesome&q=traefik"}, True, "query-second-value"),
    ("Query(`q`, `traefik`)", {"query": "q=nginx"}, False, "query-other-value"),
    ("Query(`q`, `traefik`)", {"query": "q=TRAEFIK"}, False, "query-value-case"),
    ("Query(`q`, `traefik`)", {"query": "Q=traefik"}, False, "query-key-case"),
    ("Query(`q`, `traefik`)", {"query": ""}, False, "query-none"),
    ("Query(`q`, `a b`)", {"query": "q=a+b"}, True, "query-plus-is-space"),
    ("Query(`q`, `a b`)", {"query": "q=a%20b"}, True, "query-percent-decoded"),
    ("Query(`q`, `traefik`)", {"query": "q=traefik;x=1"}, False, "query-semicolon-pair-dropped"),
    ("Query(`mobile`)", {"query": "mobile"}, True, "query-key-only"),
    ("Query(`mobile`)", {"query": "mobile="}, True, "query-key-empty-value"),
    ("Query(`mobile`)", {"query": "mobile=true"}, False, "query-key-with-value"),
    ("Query(`mobile`)", {"query": ""}, False, "query-key-absent"),
    # QueryRegexp: unanchored search over each value; one argument means Query(k).
    ("QueryRegexp(`q`, `^(traefik|nginx)$`)", {"query": "q=nginx"}, True, "query-re"),
    ("QueryRegexp(`q`, `^(traefik|nginx)$`)", {"query": "q=haproxy"}, False, "query-re-miss"),
    ("QueryRegexp(`q`, `^.*$`)", {"query": "rel=ddg"}, False, "query-re-key-absent"),
    ("QueryRegexp(`mobile`)", {"query": "mobile"}, True, "query-re-key-only"),
    ("QueryRegexp(`mobile`)", {"query": "mobile=1"}, False, "query-re-key-only-value"),
    # Method: the rule is upper-cased; the request method is compared as sent.
    ("Method(`get`)", {"method": "GET"}, True, "method-rule-lower"),
    ("Method(`GET`)", {"method": "get"}, False, "method-request-lower"),
    ("Method(`GET`)", {"method": "POST"}, False, "method-other"),
    # ClientIP: the peer address.
    ("ClientIP(`127.0.0.1`)", {"client_ip": "127.0.0.1"}, True, "ip"),
    ("ClientIP(`127.0.0.1`)", {"client_ip": "127.0.0.2"}, False, "ip-other"),
    ("ClientIP(`127.0.0.0/8`)", {"client_ip": "127.1.2.3"}, True, "ip-cidr"),
    ("ClientIP(`127.0.0.9/8`)", {"client_ip": "127.1.2.3"}, True, "ip-cidr-host-bits"),
    ("ClientIP(`127.0.0.0/8`)", {"client_ip": "::ffff:127.0.0.1"}, True, "ip-v4-mapped"),
    ("ClientIP(`::ffff:127.0.0.0/104`)", {"client_ip": "127.0.0.1"}, True, "ip-mapped-range"),
    ("ClientIP(`::1`)", {"client_ip": "::1"}, True, "ip-v6"),
    ("ClientIP(`::/0`)", {"client_ip": "127.0.0.1"}, False, "ip-v6-range-v4-peer"),
    ("ClientIP(`127.0.0.1`)", {"client_ip": "not-an-ip"}, False, "ip-unparsable-peer"),
    # Operators.
    ("Host(`example.com`) && Path(`/x`)", {"path": "/x"}, True, "and"),
    ("Host(`example.com`) && Path(`/x`)", {"path": "/y"}, False, "and-miss"),
    ("Path(`/x`) || Path(`/y`)", {"path": "/y"}, True, "or"),
    ("!Method(`GET`)", {"method": "POST"}, True, "not"),
    ("!Method(`GET`)", {}, False, "not-miss"),
    ("Path(`/y`) || Path(`/x`) && Method(`POST`)", {"path": "/y"}, True, "precedence"),
    ("(Path(`/y`) || Path(`/x`)) && Method(`POST`)", {"path": "/y"}, False, "grouping"),
]


@pytest.mark.parametrize(
    ("rule", "fields", "expected"),
    [(r, f, e) for r, f, e, _ in CASES],
    ids=[i for *_, i in CASES],
)
def test_matcher(rule: str, fields: dict[str, Any], expected: bool) -> None:
    """A compiled rule accepts exactly the requests Traefik's would."""
    predicate = compile_rule(parse(rule))
    assert predicate(request(**fields)) is expected


ROUTING_PATHS = [
    ("/plain", "/plain", "no-escapes"),
    ("/a%20b", "/a b", "unreserved-decoded"),
    ("/%7Bx%7D", "/{x}", "braces-decoded"),
    ("/a%2Fb%3f%25", "/a%2Fb%3f%25", "reserved-kept-as-sent"),
    ("/%C3%A9%2F%41", "/é%2FA", "mixed-run"),
    ("/%zz%4", "/%zz%4", "malformed-kept"),
    ("/%FF", "/\udcff", "invalid-utf8-kept-distinct"),
]


@pytest.mark.parametrize(
    ("raw", "expected"), [(r, e) for r, e, _ in ROUTING_PATHS], ids=[i for *_, i in ROUTING_PATHS]
)
def test_routing_path(raw: str, expected: str) -> None:
    """The routing path decodes all but reserved characters, and is idempotent."""
    assert routing_path(raw) == expected
    assert routing_path(routing_path(raw)) == expected


def test_query_values() -> None:
    """Query strings split as Go's url.ParseQuery does."""
    assert query_values("a=1&b&a=2&&c=%41+x&bad=%zz&semi=1;2&=e") == {
        "a": ("1", "2"),
        "b": ("",),
        "c": ("A x",),
        "": ("e",),
    }


def test_regexp_go_refuses_is_a_rule_error() -> None:
    """A regexp RE2 (and Go) refuses is a RuleSyntaxError at parse time, at its argument."""
    with pytest.raises(RuleSyntaxError, match="invalid repetition size") as info:
        parse("Host(`a.test`) && PathRegexp(`^/x{1001}`)")
    assert info.value.column == 30


HOSTILE_RULES = [
    ("PathRegexp(`^/api/(.*)/(.*)/(.*)/v1$`)", {"path": "/api/" + "a/" * 8192}, "path"),
    ("HostRegexp(`^(.*)-(.*)-(.*)x$`)", {"host": "a-" * 8192}, "host"),
    ("HeaderRegexp(`X-A`, `^(.*),(.*),(.*)x$`)", h(("X-A", "a," * 8192)), "header"),
    ("QueryRegexp(`q`, `^(.*)&(.*)&(.*)x$`)", {"query": "q=" + "a%26" * 4096}, "query"),
]


@pytest.mark.parametrize(
    ("rule", "fields"), [(r, f) for r, f, _ in HOSTILE_RULES], ids=[i for *_, i in HOSTILE_RULES]
)
def test_regexp_matchers_are_linear_on_hostile_input(rule: str, fields: dict[str, Any]) -> None:
    """Regexps that backtrack for hours in Python's re answer a 16 KiB value at once."""
    assert compile_rule(parse(rule))(request(**fields)) is False


async def test_hostile_path_does_not_stall_the_gateway(tmp_path: Path) -> None:
    """A 16 KiB path against a catastrophic PathRegexp is answered, then a normal request."""
    backend = await RecordingBackend().start()
    dynamic = f"""
http:
  routers:
    api:
      rule: "PathRegexp(`^/api/(.*)/(.*)/(.*)/v1$`)"
      service: app
  services:
    app:
      loadBalancer:
        servers:
          - url: {backend.url}
"""
    gw = await start_gateway(tmp_path, dynamic)
    try:
        async with asyncio.timeout(5):
            hostile = await http_request(gw.port(), get("app.test", "/api/" + "a/" * 8192))
            normal = await http_request(gw.port(), get("app.test", "/api/a/b/c/v1"))
        assert hostile.status in (200, 404)
        assert normal.status == 200
        assert backend.requests[-1].target == "/api/a/b/c/v1"
    finally:
        await gw.stop()
        await backend.close()
