"""Tests for gateway.http.router_table: ordering, the host index, scale."""

from __future__ import annotations

import time

import pytest

from gateway.config.rule import And, Matcher, RuleSyntaxError, parse
from gateway.http.router_table import RouterTable, RouteSpec, host_constraint
from middleware.contract import Headers, Request


def request(host: str = "example.com", path: str = "/", method: str = "GET") -> Request:
    return Request(
        method=method,
        raw_path=path,
        query="",
        headers=Headers(),
        host=host,
        client_ip="127.0.0.1",
    )


def table(*rules: str | tuple[str, int]) -> RouterTable[str]:
    """A table of routers named r0, r1, ... whose target is their name."""
    specs = []
    for index, item in enumerate(rules):
        rule, priority = (item, 0) if isinstance(item, str) else item
        specs.append(RouteSpec(f"r{index}", rule, priority, f"r{index}"))
    return RouterTable.build(specs)


def matched(routes: RouterTable[str], req: Request) -> str | None:
    route = routes.match(req)
    return None if route is None else route.target


def test_longer_rule_wins_by_default() -> None:
    """Without priorities, the longer rule is tried first (Traefik's default)."""
    routes = table("PathPrefix(`/api`)", "PathPrefix(`/api/v1`)")
    assert matched(routes, request(path="/api/v1/users")) == "r1"
    assert matched(routes, request(path="/api/v2")) == "r0"


def test_explicit_priority_beats_length() -> None:
    """A set priority replaces the rule length."""
    routes = table(("PathPrefix(`/`)", 1000), "PathPrefix(`/api/v1`)")
    assert matched(routes, request(path="/api/v1")) == "r0"


def test_default_priority_is_rule_length() -> None:
    """A priority of 0 becomes the rule's length."""
    routes = table("Host(`example.com`)", ("Path(`/`)", 7))
    assert [(r.name, r.priority) for r in routes.routes] == [("r0", 19), ("r1", 7)]


def test_ties_go_by_name() -> None:
    """Equal priorities are tried in router-name order, whatever the input order."""
    specs = [
        RouteSpec("zeta", "PathPrefix(`/`)", 5, "zeta"),
        RouteSpec("alpha", "PathPrefix(`/`)", 5, "alpha"),
    ]
    for ordering in (specs, specs[::-1]):
        routes = RouterTable.build(ordering)
        assert [r.name for r in routes.routes] == ["alpha", "zeta"]
        assert matched(routes, request()) == "alpha"


def test_single_wildcard_outranks_double() -> None:
    """`**.` stars do not count toward the default priority, so `*.` is tried first."""
    routes = table("Host(`**.example.com`)", "Host(`*.example.com`)")
    assert matched(routes, request("a.example.com")) == "r1"
    assert matched(routes, request("a.b.example.com")) == "r0"


def test_no_match() -> None:
    """A request no rule accepts matches nothing."""
    routes = table("Host(`example.com`) && Path(`/x`)")
    assert routes.match(request(path="/y")) is None
    assert routes.match(request("other.example")) is None


def test_and_or_precedence_in_table() -> None:
    """`&&` binds tighter than `||` in a compiled route."""
    routes = table("Path(`/a`) || Path(`/b`) && Method(`POST`)")
    assert matched(routes, request(path="/a")) == "r0"
    assert matched(routes, request(path="/b")) is None
    assert matched(routes, request(path="/b", method="POST")) == "r0"


def test_expr_rules_are_accepted() -> None:
    """A spec may carry a parsed AST; its route shows the rendered rule."""
    expr = And(Matcher("Host", ("example.com",)), Matcher("Path", ("/x",)))
    routes = RouterTable.build([RouteSpec("ast", expr, 0, "t")])
    route = routes.match(request(path="/x"))
    assert route is not None
    assert route.rule == "Host(`example.com`) && Path(`/x`)"
    assert route.priority == len(route.rule)


def test_bad_rule_fails_the_build() -> None:
    """A rule that does not parse fails the build, naming the router in a note."""
    specs = [
        RouteSpec("good", "Host(`example.com`)", 0, "good"),
        RouteSpec("bad", "Hots(`example.com`)", 0, "bad"),
    ]
    with pytest.raises(RuleSyntaxError) as caught:
        RouterTable.build(specs)
    assert caught.value.column == 1
    assert caught.value.__notes__ == ["router 'bad': Hots(`example.com`)"]


CONSTRAINTS: list[tuple[str, set[tuple[str, str]] | None, str]] = [
    ("Host(`a.com`)", {("=", "a.com")}, "host"),
    ("Host(`A.com.`)", {("=", "a.com")}, "host-normalised"),
    ("Host(`[::1]`)", {("=", "::1")}, "host-ipv6"),
    ("Host(`a.com`) && PathPrefix(`/x`)", {("=", "a.com")}, "host-and-path"),
    ("PathPrefix(`/x`) && Host(`a.com`)", {("=", "a.com")}, "path-and-host"),
    ("Host(`a.com`) || Host(`b.com`)", {("=", "a.com"), ("=", "b.com")}, "host-or-host"),
    ("(Host(`a.com`) || Host(`b.com`)) && Path(`/`)", {("=", "a.com"), ("=", "b.com")}, "group"),
    ("Host(`a.com`) && Host(`b.com`)", set(), "contradiction"),
    ("Host(`a.com`) && Host(`a.com.`)", {("=", "a.com")}, "same-host-twice"),
    ("Host(`*.a.com`)", {("*", "a.com")}, "wildcard"),
    ("Host(`**.a.com`)", {("**", "a.com")}, "double-wildcard"),
    ("Host(`*.a.com`) && Host(`x.a.com`)", {("=", "x.a.com")}, "exact-narrows-wildcard"),
    ("Host(`a.com`) || Path(`/`)", None, "or-with-any"),
    ("!Host(`a.com`)", None, "negated"),
    ("HostRegexp(`^a\\.com$`)", None, "regexp"),
    ("Path(`/`)", None, "no-host"),
    ("Host(`a.com`) || HostRegexp(`b`)", None, "host-or-regexp"),
    ("HostRegexp(`b`) && Host(`a.com`)", {("=", "a.com")}, "regexp-and-host"),
]


@pytest.mark.parametrize(
    ("rule", "expected"),
    [(r, e) for r, e, _ in CONSTRAINTS],
    ids=[i for *_, i in CONSTRAINTS],
)
def test_host_constraint(rule: str, expected: set[tuple[str, str]] | None) -> None:
    """Each rule is reduced to the hosts it can only match, or to any host."""
    found = host_constraint(parse(rule))
    assert (None if found is None else set(found)) == expected


def test_candidates_merge_host_and_any_host_routes_in_order() -> None:
    """A host's candidates are its own routes and the any-host ones, by priority."""
    routes = table(
        ("Host(`a.com`) && Path(`/x`)", 30),
        ("PathPrefix(`/`)", 20),
        ("Host(`a.com`)", 10),
        ("Host(`b.com`)", 40),
        ("!Host(`c.com`)", 5),
    )
    assert [r.name for r in routes.candidates("a.com")] == ["r0", "r1", "r2", "r4"]
    assert [r.name for r in routes.candidates("a.com.")] == ["r0", "r1", "r2", "r4"]
    assert [r.name for r in routes.candidates("b.com")] == ["r3", "r1", "r4"]
    assert [r.name for r in routes.candidates("unknown.com")] == ["r1", "r4"]
    assert matched(routes, request("a.com", "/y")) == "r1"
    assert matched(routes, request("c.com", "/y")) == "r1"


def test_contradictory_host_rule_is_never_a_candidate() -> None:
    """`Host(a) && Host(b)` can match no host, so no host lists it."""
    routes = table("Host(`a.com`) && Host(`b.com`)")
    assert routes.candidates("a.com") == ()
    assert routes.candidates("b.com") == ()


def test_wildcard_candidates() -> None:
    """Wildcard routes join the candidates of the hosts they cover, and only those."""
    routes = table(
        "Host(`*.example.com`)",
        "Host(`**.example.com`)",
        "Host(`api.example.com`)",
        "Host(`*.b.example.com`)",
        "Host(`**.com`)",
    )
    names = {
        host: sorted(r.name for r in routes.candidates(host))
        for host in (
            "api.example.com",
            "z.example.com",
            "x.b.example.com",
            "x.y.b.example.com",
            "x.y.example.com",
            "example.com",
            "other.org",
        )
    }
    assert names == {
        "api.example.com": ["r0", "r1", "r2", "r4"],
        "z.example.com": ["r0", "r1", "r4"],
        "x.b.example.com": ["r1", "r3", "r4"],
        "x.y.b.example.com": ["r1", "r4"],
        "x.y.example.com": ["r1", "r4"],
        "example.com": ["r4"],
        "other.org": [],
    }
    assert matched(routes, request("api.example.com")) == "r2"
    assert matched(routes, request("z.example.com")) == "r0"
    assert matched(routes, request("x.b.example.com")) == "r3"
    assert matched(routes, request("x.y.example.com")) == "r1"
    assert matched(routes, request("example.com")) == "r4"
    assert matched(routes, request("other.org")) is None


def test_candidates_are_stable_across_lookups() -> None:
    """The lazily merged candidate lists are the same on every lookup."""
    routes = table("Host(`*.a.com`)", "Host(`x.a.com`)", "Path(`/`)")
    first = [routes.candidates(h) for h in ("x.a.com", "y.a.com", "z.org")]
    assert [routes.candidates(h) for h in ("x.a.com", "y.a.com", "z.org")] == first


def test_ten_thousand_host_routers() -> None:
    """10,000 Host routers build in under a second and a host sees only its own routes."""
    specs = [
        RouteSpec(f"r{i}", f"Host(`host-{i}.example.com`) && PathPrefix(`/api`)", 0, i)
        for i in range(10_000)
    ]
    specs.append(RouteSpec("fallback", "PathPrefix(`/`)", 1, -1))
    started = time.perf_counter()
    routes = RouterTable.build(specs)
    assert time.perf_counter() - started < 1.0
    for i in (0, 4_321, 9_999):
        host = f"host-{i}.example.com"
        assert [r.name for r in routes.candidates(host)] == [f"r{i}", "fallback"]
        found = routes.match(request(host, "/api/x"))
        assert found is not None and found.target == i
    assert [r.name for r in routes.candidates("nobody.example.com")] == ["fallback"]
    assert matched_target(routes, request("host-7.example.com", "/other")) == -1


def matched_target(routes: RouterTable[int], req: Request) -> int | None:
    route = routes.match(req)
    return None if route is None else route.target
