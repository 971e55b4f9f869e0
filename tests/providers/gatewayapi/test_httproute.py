"""Tests for providers.gatewayapi.httproute: one HTTPRoute -> routers, services, middlewares.

Spec references are to /work/notes/gatewayapi-spec.md: §2.5 precedence, §2.7
filters, §2.8 backends, §2.9 timeouts, §3.4 route status. Precedence is
checked end to end: the generated routers go into Sluice's real router table
and requests are matched against it. Rule text and the priority encoding
alone: test_httproute_rules.py; filter options: test_httproute_filters.py.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest

from gateway.config.dynamic import DynamicConfig
from gateway.config.loader import decode_value
from gateway.config.rule import parse
from gateway.config.validate import validate
from gateway.http.router_table import RouterTable, RouteSpec
from middleware.contract import Headers, Request
from middleware.http.gateway_policy import GatewayRetryOptions, GatewayTimeoutsOptions
from providers.gatewayapi.backends import Resolved, Unresolved
from providers.gatewayapi.httproute import (
    Attachment,
    HTTPTranslation,
    RulePolicy,
    object_name,
    translate_http_route,
)
from providers.gatewayapi.httproute_rules import route_ranks
from providers.gatewayapi.objects import (
    SLUICE_GROUP,
    BackendRef,
    ExtensionRef,
    HeaderModifier,
    HTTPFilter,
    HTTPMatch,
    HTTPRoute,
    HTTPRule,
    Meta,
    ParentRef,
    PathMatch,
    Redirect,
    Retry,
    ValueMatch,
)

NS = "gateway-conformance-infra"
WEB = Attachment("web", (), 80, False)
BACKENDS = {"infra-backend-v1": "127.0.0.1", "infra-backend-v2": "127.0.0.2",
            "infra-backend-v3": "127.0.0.3", "mirror": "127.0.0.9"}  # fmt: skip


def resolve(ref: BackendRef) -> Resolved | Unresolved:
    """Test backends: names in BACKENDS have one endpoint, "idle" none, others are missing."""
    if ref.name == "idle":
        return Resolved(())
    if ref.name == "grpc":
        return Resolved((("127.0.0.5", 9000),), app_protocol="kubernetes.io/h2c")
    if ref.name not in BACKENDS:
        return Unresolved("BackendNotFound", f"Service {ref.namespace}/{ref.name} not found")
    return Resolved(((BACKENDS[ref.name], 3000),))


def backend(name: str, weight: int = 1, **fields: Any) -> BackendRef:
    return BackendRef(name, NS, 8080, weight=weight, **fields)


def prefix(value: str) -> HTTPMatch:
    return HTTPMatch(path=PathMatch("PathPrefix", value))


def exact(value: str) -> HTTPMatch:
    return HTTPMatch(path=PathMatch("Exact", value))


def route(
    name: str,
    *rules: HTTPRule,
    hostnames: tuple[str, ...] = (),
    created: str = "2024-01-01T00:00:00Z",
    namespace: str = NS,
) -> HTTPRoute:
    return HTTPRoute(
        meta=Meta(name, namespace, created=created),
        parent_refs=(ParentRef("same-namespace", NS),),
        hostnames=hostnames,
        rules=rules or (HTTPRule(backend_refs=(backend("infra-backend-v1"),)),),
    )


def to(target: str, *matches: HTTPMatch, **fields: Any) -> HTTPRule:
    """A rule with ``matches`` sending everything to backend ``target``."""
    return HTTPRule(matches=matches or (HTTPMatch(),), backend_refs=(backend(target),), **fields)


def translate_all(
    routes: Sequence[HTTPRoute], attachments: Sequence[Attachment] = (WEB,)
) -> list[HTTPTranslation]:
    """Translate several routes the way translate.py will: ranks from route_ranks."""
    ranks = route_ranks(routes)
    return [
        translate_http_route(
            r,
            [replace(a, hostnames=a.hostnames or r.hostnames) for a in attachments],
            resolve,
            rank=ranks[r.meta.namespace, r.meta.name],
            route_count=len(routes),
        )
        for r in routes
    ]


class Routed:
    """Routers of translations in a real RouterTable; ``backend`` says where a request goes."""

    def __init__(self, translations: Sequence[HTTPTranslation]) -> None:
        self.services: dict[str, dict[str, Any]] = {}
        specs = []
        for t in translations:
            self.services.update(t.services)
            for name, router in t.routers.items():
                parse(router["rule"])  # what the validator does with every rule
                specs.append(RouteSpec(name, router["rule"], router["priority"], router["service"]))
        self.table = RouterTable.build(specs)

    def backend(
        self, path: str, host: str = "gw.example", headers: dict[str, str] | None = None
    ) -> str | None:
        raw, _, query = path.partition("?")
        pairs = [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
        request = Request(method="GET", raw_path=raw, query=query, headers=Headers(pairs),
                          host=host, client_ip="127.0.0.1")  # fmt: skip
        found = self.table.match(request)
        if found is None:
            return None
        service = self.services[found.target]
        url = service["loadBalancer"]["servers"][0]["url"]
        ip = url.split("//")[1].split(":")[0]
        return next(name for name, address in BACKENDS.items() if address == ip)


# --- precedence (§2.5, §5.3) ---------------------------------------------------------------


PATH_MATCH_ORDER = route(
    "path-matching-order",
    to("infra-backend-v1", exact("/match")),
    to("infra-backend-v2", exact("/match/exact")),
    to("infra-backend-v3", exact("/match/exact/one")),
    to("infra-backend-v3", prefix("/match/")),
    to("infra-backend-v1", prefix("/match/prefix/")),
    to("infra-backend-v2", prefix("/match/prefix/one")),
)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/match/exact/one", "infra-backend-v3"),
        ("/match/exact", "infra-backend-v2"),
        ("/match", "infra-backend-v1"),
        ("/match/prefix/one/any", "infra-backend-v2"),
        ("/match/prefix/any", "infra-backend-v1"),
        ("/match/any", "infra-backend-v3"),
    ],
    ids=lambda v: str(v),
)
def test_path_match_order(path: str, expected: str) -> None:
    """Conformance HTTPRoutePathMatchOrder: Exact first, then the longest prefix (§2.5 1-2)."""
    assert Routed(translate_all([PATH_MATCH_ORDER])).backend(path) == expected


@pytest.mark.parametrize(
    ("host", "path", "headers", "expected"),
    [
        ("example.com", "/", {}, "infra-backend-v1"),
        ("example.com", "/example", {}, "infra-backend-v1"),
        ("example.net", "/example", {}, "infra-backend-v1"),
        ("example.com", "/example", {"Version": "one"}, "infra-backend-v1"),
        ("example.com", "/v2", {}, "infra-backend-v2"),
        ("example.net", "/v2", {}, "infra-backend-v1"),
        ("example.com", "/v2/example", {}, "infra-backend-v2"),
        ("example.com", "/", {"Version": "two"}, "infra-backend-v2"),
        ("example.org", "/", {}, None),
    ],
    ids=lambda v: str(v),
)
def test_matching_across_routes(
    host: str, path: str, headers: dict[str, str], expected: str | None
) -> None:
    """Conformance HTTPRouteMatchingAcrossRoutes: match criteria outrank hostname length (§2.5)."""
    part1 = route(
        "matching-part1",
        to("infra-backend-v1", prefix("/"), HTTPMatch(headers=(ValueMatch("version", "one"),))),
        hostnames=("example.com", "example.net"),
    )
    part2 = route(
        "matching-part2",
        to("infra-backend-v2", prefix("/v2"), HTTPMatch(headers=(ValueMatch("version", "two"),))),
        hostnames=("*.com",),
    )
    routed = Routed(translate_all([part1, part2]))
    assert routed.backend(path, host=host, headers=headers) == expected



def test_older_route_wins_a_tie_and_rule_order_decides_within_a_route() -> None:
    """Equal matches: the older route, then the first rule, then the first match (§2.5 6-8)."""
    old = route("zzz", to("infra-backend-v1", prefix("/p")), created="2023-01-01T00:00:00Z")
    new = route("aaa", to("infra-backend-v2", prefix("/p")), created="2024-01-01T00:00:00Z")
    assert Routed(translate_all([new, old])).backend("/p") == "infra-backend-v1"
    same = route("r", to("infra-backend-v3", prefix("/p")), to("infra-backend-v2", prefix("/p")))
    assert Routed(translate_all([same])).backend("/p/x") == "infra-backend-v3"


def test_hostname_specificity_breaks_ties_between_routes() -> None:
    """With equal matches, the route with the longer matching exact hostname wins (§2.5)."""
    wildcard = route("a", to("infra-backend-v1"), hostnames=("*.example.com",),
                     created="2020-01-01T00:00:00Z")  # fmt: skip
    exact_host = route("b", to("infra-backend-v2"), hostnames=("foo.example.com", "other.org"))
    routed = Routed(translate_all([wildcard, exact_host]))
    assert routed.backend("/", host="foo.example.com") == "infra-backend-v2"
    assert routed.backend("/", host="bar.example.com") == "infra-backend-v1"


# --- backends (§2.8) -------------------------------------------------------------------------


def rule_service(t: HTTPTranslation) -> dict[str, Any]:
    (router,) = t.routers.values()
    return t.services[router["service"]]


def test_weights_split_traffic_and_weight_zero_is_left_out() -> None:
    """A weighted service over one load balancer per backendRef; weight 0 gets none (§2.8)."""
    r = route("weights", HTTPRule(backend_refs=(
        backend("infra-backend-v1", 70), backend("infra-backend-v2", 30),
        backend("infra-backend-v3", 0))))  # fmt: skip
    t = translate_http_route(r, [WEB], resolve)
    members = rule_service(t)["weighted"]["services"]
    assert [(t.services[m["name"]]["loadBalancer"]["servers"], m["weight"]) for m in members] == [
        ([{"url": "http://127.0.0.1:3000"}], 70),
        ([{"url": "http://127.0.0.2:3000"}], 30),
    ]
    assert t.problems == []


def test_unresolved_backend_answers_500_for_its_share() -> None:
    """An invalid backendRef keeps its weight and answers 500; ResolvedRefs reports it (§2.8)."""
    r = route("half", HTTPRule(backend_refs=(
        backend("infra-backend-v1"), backend("nope"), backend("gone", 2))))  # fmt: skip
    t = translate_http_route(r, [WEB], resolve)
    members = rule_service(t)["weighted"]["services"]
    assert [m["weight"] for m in members] == [1, 3]
    assert t.services[members[1]["name"]] == {"status": {"code": 500}}
    assert t.problems == [
        ("ResolvedRefs", "BackendNotFound", f"Service {NS}/nope not found"),
        ("ResolvedRefs", "BackendNotFound", f"Service {NS}/gone not found"),
    ]


@pytest.mark.parametrize(
    "refs",
    [(), (backend("infra-backend-v1", 0), backend("infra-backend-v2", 0)), (backend("nope"),)],
    ids=["no-backend-refs", "all-weights-zero", "only-invalid"],
)
def test_rules_without_usable_backends_answer_500(refs: tuple[BackendRef, ...]) -> None:
    """No backendRefs, all of weight 0, or none valid: every request gets 500 (§2.8)."""
    t = translate_http_route(route("r", HTTPRule(backend_refs=refs)), [WEB], resolve)
    assert rule_service(t) == {"status": {"code": 500}}


def test_service_without_endpoints_is_a_load_balancer_without_servers() -> None:
    """A resolved Service with no ready endpoint answers 503, not 500 (§2.8)."""
    t = translate_http_route(route("r", HTTPRule(backend_refs=(backend("idle"),))), [WEB], resolve)
    assert rule_service(t) == {"loadBalancer": {"servers": []}}
    assert t.problems == []


def test_h2c_backend_is_an_unsupported_protocol() -> None:
    """appProtocol kubernetes.io/h2c: Sluice speaks HTTP/1.1 upstream: 500, UnsupportedProtocol."""
    t = translate_http_route(route("r", HTTPRule(backend_refs=(backend("grpc"),))), [WEB], resolve)
    assert rule_service(t) == {"status": {"code": 500}}
    assert [p[:2] for p in t.problems] == [("ResolvedRefs", "UnsupportedProtocol")]


def test_ipv6_endpoints_are_bracketed() -> None:
    """Server URLs put IPv6 endpoints in brackets."""
    t = translate_http_route(route("r"), [WEB], lambda ref: Resolved((("::1", 8080),)))
    assert rule_service(t) == {"loadBalancer": {"servers": [{"url": "http://[::1]:8080"}]}}


# --- routers ------------------------------------------------------------------------------


def test_one_router_per_attachment_rule_match_and_hostname() -> None:
    """Routers multiply over listeners, rules, matches and intersected hostnames."""
    r = route("r", to("infra-backend-v1", prefix("/a"), prefix("/b")), to("infra-backend-v2"))
    attachments = [Attachment("web", ("a.example", "*.b.example"), 80, False),
                   Attachment("websecure", (), 443, True)]  # fmt: skip
    t = translate_http_route(r, attachments, resolve)
    assert len(t.routers) == 2 * 3 + 1 * 3
    secure = [v for v in t.routers.values() if v["entryPoints"] == ["websecure"]]
    assert all(v["tls"] == {} for v in secure)
    assert all("tls" not in v for v in t.routers.values() if v["entryPoints"] == ["web"])


def test_names_are_safe_and_keep_routes_apart() -> None:
    """Generated names use [a-z0-9-] only and differ where dashes alone would collide."""
    one, two = object_name("httproute", "a-b", "c"), object_name("httproute", "a", "b-c")
    assert one != two
    assert re.fullmatch(r"[a-z0-9-]+", object_name("httproute", "ns", "My.Route"))
    t = translate_http_route(route("web.v2", to("nope")), [WEB], resolve)
    assert all(re.fullmatch(r"[a-z0-9-]+", n) for n in [*t.routers, *t.services])


def test_translation_loads_and_validates() -> None:
    """The output is file-dialect data the loader decodes and the validator accepts."""
    r = route("web", to("infra-backend-v1", prefix("/a"), HTTPMatch(method="GET")),
              HTTPRule(backend_refs=(backend("infra-backend-v1", 3), backend("infra-backend-v2"))),
              hostnames=("*.example.com",))  # fmt: skip
    t = translate_http_route(r, [Attachment("web", ("*.example.com",), 80, False)], resolve)
    data = {"http": {"routers": t.routers, "services": t.services, "middlewares": t.middlewares}}
    config = decode_value(DynamicConfig, data, origin=None, path="")
    assert validate(config, entry_points=["web"]) == []


def test_unusable_regexp_drops_its_rule() -> None:
    """Rules with a match Sluice cannot compile are dropped, reported in one condition (§3.4)."""
    bad = HTTPMatch(path=PathMatch("RegularExpression", "/(unclosed"))
    r = route("r", to("infra-backend-v1", bad, name="broken"), to("infra-backend-v2"),
              to("infra-backend-v1", HTTPMatch(), bad))  # fmt: skip
    t = translate_http_route(r, [WEB], resolve)
    assert len(t.routers) == 1
    ((kind, reason, message),) = t.problems
    assert (kind, reason) == ("PartiallyInvalid", "UnsupportedValue")
    assert re.fullmatch(r"Dropped Rule broken: match 0: .*; Dropped Rule 2: match 1: .*", message)


def test_route_without_usable_rules_is_not_accepted() -> None:
    """When every rule is dropped the route reports Accepted=False UnsupportedValue (§3.4)."""
    bad = HTTPMatch(headers=(ValueMatch("x", "(", "RegularExpression"),))
    t = translate_http_route(route("r", to("infra-backend-v1", bad)), [WEB], resolve)
    assert t.routers == {}
    assert [p[:2] for p in t.problems] == [("Accepted", "UnsupportedValue")]


def test_timeouts_and_retry_are_handed_over_per_router() -> None:
    """A rule's timeouts and retry reach every router of the rule as a RulePolicy (§2.9)."""
    retry = Retry(codes=(500, 503), attempts=2)
    rule = to("infra-backend-v1", request_timeout=2.0, backend_request_timeout=0.5, retry=retry)
    t = translate_http_route(route("r", rule, to("infra-backend-v2")), [WEB], resolve)
    assert list(t.policies.values()) == [RulePolicy(2.0, 0.5, retry)]
    assert len(t.routers) == 2


@pytest.mark.parametrize(
    ("fields", "timeouts", "retry"),
    [
        ({"request_timeout": 2.0, "backend_request_timeout": 0.5,
          "retry": Retry(codes=(500, 503), attempts=2, backoff=0.1)},
         {"request": 2.0, "backendRequest": 0.5},
         {"codes": [500, 503], "attempts": 2, "backoff": 0.1}),
        ({"request_timeout": 1.0}, {"request": 1.0}, None),
        ({"backend_request_timeout": 0.5, "request_timeout": 0.0}, {"backendRequest": 0.5}, None),
        ({"retry": Retry(codes=(502,), attempts=3)}, None, {"codes": [502], "attempts": 3}),
        ({"request_timeout": 0.0, "retry": Retry(codes=(500,), attempts=0)}, None, None),
    ],
    ids=["all", "request-only", "zero-request-left-out", "retry-without-backoff",
         "zero-disables-both"],
)  # fmt: skip
def test_timeouts_first_and_retry_last_in_the_chain(
    fields: dict[str, Any], timeouts: dict[str, Any] | None, retry: dict[str, Any] | None
) -> None:
    """gatewayTimeouts opens the router's chain and gatewayRetry closes it, with the rule's
    values; "0s" timeouts and ``attempts: 0`` emit nothing (§2.9)."""
    rule = to("infra-backend-v1", filters=(set_header("X-Rule"),), **fields)
    t = translate_http_route(route("r", rule), [WEB], resolve)
    names = only_router(t)["middlewares"]
    expected = [*(["timeouts"] if timeouts else []), "f0-request-headers",
                *(["retry"] if retry else [])]  # fmt: skip
    assert [n.rsplit("-r0-", 1)[1] for n in names] == expected
    if timeouts:
        assert t.middlewares[names[0]] == {"gatewayTimeouts": timeouts}
    if retry:
        assert t.middlewares[names[-1]] == {"gatewayRetry": retry}


def test_policy_middlewares_decode_as_their_options() -> None:
    """The emitted options decode into the middlewares' own option models."""
    retry = Retry(codes=(500,), attempts=2, backoff=0.25)
    rule = to("infra-backend-v1", request_timeout=2.0, backend_request_timeout=0.5, retry=retry)
    t = translate_http_route(route("r", rule), [WEB], resolve)
    first, last = only_router(t)["middlewares"]
    (timeouts,) = t.middlewares[first].values()
    (again,) = t.middlewares[last].values()
    assert decode_value(GatewayTimeoutsOptions, timeouts, origin=None, path="") == (
        GatewayTimeoutsOptions(request=2.0, backend_request=0.5)
    )
    assert decode_value(GatewayRetryOptions, again, origin=None, path="") == (
        GatewayRetryOptions(codes=(500,), attempts=2, backoff=0.25)
    )


# --- filters on routers (§2.7; their options: test_httproute_filters.py) -----------------------


def only_router(t: HTTPTranslation) -> dict[str, Any]:
    (router,) = t.routers.values()
    return router


def set_header(name: str) -> HTTPFilter:
    modifier = HeaderModifier(set=((name, "1"),))
    return HTTPFilter("RequestHeaderModifier", request_header_modifier=modifier)


def test_rule_filters_run_in_order_then_the_single_backends_own() -> None:
    """Rule filters keep their order; a backendRef taking all traffic adds its filters after."""
    response = HTTPFilter("ResponseHeaderModifier", response_header_modifier=HeaderModifier())
    rule = HTTPRule(filters=(response, set_header("X-Rule")), backend_refs=(
        backend("infra-backend-v1", filters=(set_header("X-Backend"),)),
        backend("infra-backend-v2", 0)))  # fmt: skip
    t = translate_http_route(route("r", rule), [WEB], resolve)
    names = only_router(t)["middlewares"]
    assert [n.rsplit("-r0-", 1)[1] for n in names] == [
        "f0-response-headers", "f1-request-headers", "b0-f0-request-headers"]  # fmt: skip
    assert [t.middlewares[n] for n in names[1:]] == [
        {"gatewayRequestHeaderModifier": {"set": [{"name": "X-Rule", "value": "1"}]}},
        {"gatewayRequestHeaderModifier": {"set": [{"name": "X-Backend", "value": "1"}]}},
    ]


def test_backend_filters_of_shared_traffic_ride_on_the_weighted_member() -> None:
    """With several backendRefs, each one's filters go on its weighted member only (§2.7)."""
    rule = HTTPRule(backend_refs=(backend("infra-backend-v1", filters=(set_header("X"),)),
                                  backend("infra-backend-v2")))  # fmt: skip
    t = translate_http_route(route("r", rule), [WEB], resolve)
    assert "middlewares" not in only_router(t)
    first, second = rule_service(t)["weighted"]["services"]
    assert [n.rsplit("-r0-", 1)[1] for n in first["middlewares"]] == ["b0-f0-request-headers"]
    assert "middlewares" not in second


def test_redirects_are_defined_per_listener() -> None:
    """One redirect middleware per listener port and scheme: its default port differs (§2.7)."""
    redirect = HTTPFilter("RequestRedirect", request_redirect=Redirect(hostname="example.org"))
    attachments = [WEB, Attachment("alt", (), 8080, False), Attachment("tls", (), 443, True),
                   Attachment("web2", ("a.example",), 80, False)]  # fmt: skip
    t = translate_http_route(route("r", HTTPRule(filters=(redirect,))), attachments, resolve)
    used = {r["entryPoints"][0]: r["middlewares"] for r in t.routers.values()}
    assert [n.rsplit("-", 1)[1] for n in t.middlewares] == ["http80", "http8080", "https443"]
    assert used["web"] == used["web2"]
    assert t.problems == []


@pytest.mark.parametrize(
    ("ref", "known", "reason"),
    [
        (ExtensionRef(SLUICE_GROUP, "Middleware", "auth"), {(NS, "auth")}, None),
        (ExtensionRef(SLUICE_GROUP, "Middleware", "auth"), set(), "BackendNotFound"),
        (ExtensionRef("example.com", "Filter", "auth"), {(NS, "auth")}, "InvalidKind"),
    ],
    ids=["known", "missing", "foreign-kind"],
)
def test_extension_refs(ref: ExtensionRef, known: set[tuple[str, str]], reason: str | None) -> None:
    """ExtensionRef names the Sluice Middleware; one that cannot be honoured answers 500 (§2.7)."""
    rule = to("infra-backend-v1", filters=(HTTPFilter("ExtensionRef", extension_ref=ref),))
    t = translate_http_route(route("r", rule), [WEB], resolve, extensions=known)
    router = only_router(t)
    if reason is None:
        assert router["middlewares"] == [f"{NS}-auth"]
        assert t.problems == []
    else:
        assert "middlewares" not in router
        assert t.services[router["service"]] == {"status": {"code": 500}}
        assert [p[:2] for p in t.problems] == [("ResolvedRefs", reason)]


def test_unsupported_filter_type_fails_closed() -> None:
    """A filter Sluice lacks is never skipped: its rule answers 500 and is reported."""
    rule = to("infra-backend-v1", filters=(HTTPFilter("ExternalAuth"),))
    t = translate_http_route(route("r", rule), [WEB], resolve)
    assert t.services[only_router(t)["service"]] == {"status": {"code": 500}}
    assert [p[:2] for p in t.problems] == [("Accepted", "UnsupportedValue")]
