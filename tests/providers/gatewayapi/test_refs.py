"""Tests for providers.gatewayapi.refs: hostnames, selectors, allowedRoutes, grants, route kinds.

Spec references are to /work/notes/gatewayapi-spec.md; "T:<name>" is the
upstream conformance manifest a case is taken from.
"""

from __future__ import annotations

import pytest

from providers.gatewayapi.objects import (
    GROUP,
    GrantFrom,
    GrantTo,
    LabelSelector,
    Listener,
    Meta,
    Namespace,
    ObjectSet,
    ReferenceGrant,
    RouteKind,
)
from providers.gatewayapi.refs import (
    host_matches,
    hostname_intersection,
    listener_kinds,
    namespace_allowed,
    reference_permitted,
    selector_matches,
)

# --- hostname intersection (spec §2.3) ----------------------------------------------------

INTERSECTIONS = [
    # (id, listener, route hostnames, expected)
    ("none-none-any-host", "", (), ()),
    ("none-route-set", "", ("a.com", "*.b.com"), ("a.com", "*.b.com")),
    ("listener-set-route-none", "a.com", (), ("a.com",)),
    ("exact-equal", "a.com", ("a.com",), ("a.com",)),
    ("exact-different", "a.com", ("b.com",), None),
    (
        "exact-listener-in-route-wildcard",
        "very.specific.com",
        ("*.specific.com",),
        ("very.specific.com",),
    ),
    ("exact-listener-is-wildcard-root", "specific.com", ("*.specific.com",), None),
    ("wildcard-listener-exact-route", "*.d.io", ("a.d.io",), ("a.d.io",)),
    ("wildcard-listener-deep-route", "*.d.io", ("a.b.d.io",), ("a.b.d.io",)),
    ("wildcard-never-matches-its-root", "*.d.io", ("d.io",), None),
    ("wildcard-needs-label-boundary", "*.d.io", ("xd.io",), None),
    ("wildcard-equal", "*.d.io", ("*.d.io",), ("*.d.io",)),
    ("wildcard-route-narrower", "*.d.io", ("*.foo.d.io",), ("*.foo.d.io",)),
    ("wildcard-listener-narrower", "*.foo.d.io", ("*.d.io",), ("*.foo.d.io",)),
    ("wildcards-disjoint", "*.a.io", ("*.b.io",), None),
    ("case-insensitive", "A.com", ("a.COM",), ("a.com",)),
    ("repeats-collapse", "a.com", ("a.com", "*.com", "A.com"), ("a.com",)),
    # T:httproute-hostname-intersection, one row per route x listener that attaches.
    (
        "T-specific-host-matches-listener-specific-host",
        "very.specific.com",
        ("non.matching.com", "*.nonmatchingwildcard.io", "very.specific.com"),
        ("very.specific.com",),
    ),
    (
        "T-specific-host-matches-listener-wildcard-host",
        "*.wildcard.io",
        (
            "non.matching.com",
            "wildcard.io",
            "foo.wildcard.io",
            "bar.wildcard.io",
            "foo.bar.wildcard.io",
        ),
        ("foo.wildcard.io", "bar.wildcard.io", "foo.bar.wildcard.io"),
    ),
    (
        "T-wildcard-host-matches-listener-specific-host",
        "very.specific.com",
        ("non.matching.com", "*.specific.com"),
        ("very.specific.com",),
    ),
    (
        "T-wildcard-host-matches-listener-wildcard-host",
        "*.anotherwildcard.io",
        ("*.anotherwildcard.io",),
        ("*.anotherwildcard.io",),
    ),
    (
        "T-no-intersecting-hosts-1",
        "very.specific.com",
        ("specific.but.wrong.com", "wildcard.io"),
        None,
    ),
    ("T-no-intersecting-hosts-2", "*.wildcard.io", ("specific.but.wrong.com", "wildcard.io"), None),
    (
        "T-no-intersecting-hosts-3",
        "*.anotherwildcard.io",
        ("specific.but.wrong.com", "wildcard.io"),
        None,
    ),
]


@pytest.mark.parametrize(
    ("listener", "route", "expected"),
    [case[1:] for case in INTERSECTIONS],
    ids=[case[0] for case in INTERSECTIONS],
)
def test_hostname_intersection_follows_the_spec_table(
    listener: str, route: tuple[str, ...], expected: tuple[str, ...] | None
) -> None:
    """Listener x route hostnames give the effective hostnames of spec §2.3, or None."""
    assert hostname_intersection(listener, route) == expected


def test_hostname_intersection_accepts_any_sequence() -> None:
    """Route hostnames may be a list (as parsed YAML gives them), the result is a tuple."""
    assert hostname_intersection("*.d.io", ["a.d.io", "b.d.io"]) == ("a.d.io", "b.d.io")


@pytest.mark.parametrize(
    ("pattern", "host", "expected"),
    [
        ("*.example.com", "foo.example.com", True),
        ("*.example.com", "foo.bar.example.com", True),
        ("*.example.com", "example.com", False),
        ("*.example.com", "fooexample.com", False),
        ("*.example.com", "*.foo.example.com", True),
        ("foo.example.com", "FOO.example.com", True),
        ("foo.example.com", "bar.example.com", False),
    ],
    ids=[
        "one-label",
        "two-labels",
        "root",
        "no-boundary",
        "narrower-wildcard",
        "case",
        "exact-miss",
    ],
)
def test_host_matches_treats_wildcard_as_one_or_more_labels(
    pattern: str, host: str, expected: bool
) -> None:
    """``*.d`` covers hosts with at least one extra label and never ``d`` [GW Listener.hostname]."""
    assert host_matches(pattern, host) is expected


# --- label selectors ---------------------------------------------------------------------

LABELS = {"env": "prod", "team": "a"}

SELECTORS = [
    ("empty-matches-all", LabelSelector(), True),
    ("match-labels-hit", LabelSelector(match_labels={"env": "prod"}), True),
    ("match-labels-all-must-hold", LabelSelector(match_labels={"env": "prod", "team": "b"}), False),
    ("match-labels-missing-key", LabelSelector(match_labels={"zone": "x"}), False),
    ("in-hit", LabelSelector(match_expressions=(("env", "In", ("dev", "prod")),)), True),
    ("in-miss", LabelSelector(match_expressions=(("env", "In", ("dev",)),)), False),
    ("in-missing-key", LabelSelector(match_expressions=(("zone", "In", ("x",)),)), False),
    ("notin-hit", LabelSelector(match_expressions=(("env", "NotIn", ("dev",)),)), True),
    ("notin-miss", LabelSelector(match_expressions=(("env", "NotIn", ("prod",)),)), False),
    ("notin-missing-key", LabelSelector(match_expressions=(("zone", "NotIn", ("x",)),)), True),
    ("exists-hit", LabelSelector(match_expressions=(("team", "Exists", ()),)), True),
    ("exists-miss", LabelSelector(match_expressions=(("zone", "Exists", ()),)), False),
    ("doesnotexist-hit", LabelSelector(match_expressions=(("zone", "DoesNotExist", ()),)), True),
    ("doesnotexist-miss", LabelSelector(match_expressions=(("team", "DoesNotExist", ()),)), False),
    ("unknown-operator", LabelSelector(match_expressions=(("env", "Equals", ("prod",)),)), False),
    (
        "labels-and-expressions-anded",
        LabelSelector(match_labels={"env": "prod"}, match_expressions=(("team", "In", ("b",)),)),
        False,
    ),
    (
        "several-expressions-all-hold",
        LabelSelector(
            match_expressions=(
                ("env", "In", ("prod",)),
                ("team", "Exists", ()),
                ("zone", "DoesNotExist", ()),
            )
        ),
        True,
    ),
]


@pytest.mark.parametrize(
    ("selector", "expected"),
    [case[1:] for case in SELECTORS],
    ids=[case[0] for case in SELECTORS],
)
def test_selector_matches_every_operator(selector: LabelSelector, expected: bool) -> None:
    """matchLabels and In/NotIn/Exists/DoesNotExist behave as Kubernetes label selectors."""
    assert selector_matches(selector, LABELS) is expected


# --- allowedRoutes.namespaces (spec §2.2) ---------------------------------------------------


def namespaces(**labels: dict[str, str]) -> ObjectSet:
    objects = ObjectSet()
    for name, values in labels.items():
        objects.namespaces[name] = Namespace(Meta(name, labels=values))
    return objects


BACKEND_SELECTOR = LabelSelector(match_labels={"gateway-conformance": "backend"})

ADMISSIONS = [
    # (id, from, selector, route namespace, expected); the Gateway lives in "infra".
    ("same-same", "Same", None, "infra", True),
    ("same-other", "Same", None, "web", False),
    ("all-other", "All", None, "web", True),
    ("selector-labelled", "Selector", BACKEND_SELECTOR, "backend", True),
    ("selector-unlabelled", "Selector", BACKEND_SELECTOR, "web", False),
    ("selector-no-namespace-object", "Selector", BACKEND_SELECTOR, "ghost", False),
    ("selector-gateway-ns-not-implied", "Selector", BACKEND_SELECTOR, "infra", False),
    ("selector-missing", "Selector", None, "backend", False),
    ("unknown-from", "Some", None, "infra", False),
    (
        "selector-by-name-label",
        "Selector",
        LabelSelector(match_expressions=(("kubernetes.io/metadata.name", "In", ("ghost",)),)),
        "ghost",
        True,
    ),
]


@pytest.mark.parametrize(
    ("origin", "selector", "route_ns", "expected"),
    [case[1:] for case in ADMISSIONS],
    ids=[case[0] for case in ADMISSIONS],
)
def test_namespace_allowed_follows_allowed_routes(
    origin: str, selector: LabelSelector | None, route_ns: str, expected: bool
) -> None:
    """Same/All/Selector admit route namespaces as spec §2.2 says (T:httproute-cross-namespace)."""
    listener = Listener("http", 80, "HTTP", namespaces_from=origin, namespace_selector=selector)
    objects = namespaces(backend={"gateway-conformance": "backend"}, web={"team": "web"}, infra={})
    assert namespace_allowed(listener, "infra", route_ns, objects) is expected


# --- ReferenceGrant (spec §2.11) ----------------------------------------------------------------


def grant(
    namespace: str,
    from_: tuple[GrantFrom, ...] = (GrantFrom(GROUP, "HTTPRoute", "routes"),),
    to: tuple[GrantTo, ...] = (GrantTo("", "Service"),),
    name: str = "grant",
) -> ReferenceGrant:
    return ReferenceGrant(Meta(name, namespace), from_=from_, to=to)


GRANT_CASES = [
    # (id, grants, target namespace, target name, expected); the referrer is an
    # HTTPRoute in "routes" pointing at a core Service.
    ("same-namespace-needs-none", (), "routes", "svc", True),
    ("cross-namespace-without-grant", (), "backends", "svc", False),
    ("grant-for-every-service", (grant("backends"),), "backends", "svc", True),
    (
        "grant-for-that-name",
        (grant("backends", to=(GrantTo("", "Service", "svc"),)),),
        "backends",
        "svc",
        True,
    ),
    (
        "grant-for-another-name",
        (grant("backends", to=(GrantTo("", "Service", "other"),)),),
        "backends",
        "svc",
        False,
    ),
    ("grant-in-referrer-namespace", (grant("routes"),), "backends", "svc", False),
    ("grant-in-third-namespace", (grant("elsewhere"),), "backends", "svc", False),
    (
        "grant-from-another-namespace",
        (grant("backends", from_=(GrantFrom(GROUP, "HTTPRoute", "other"),)),),
        "backends",
        "svc",
        False,
    ),
    (
        "grant-from-another-kind",
        (grant("backends", from_=(GrantFrom(GROUP, "TCPRoute", "routes"),)),),
        "backends",
        "svc",
        False,
    ),
    (
        "grant-from-another-group",
        (grant("backends", from_=(GrantFrom("example.com", "HTTPRoute", "routes"),)),),
        "backends",
        "svc",
        False,
    ),
    (
        "grant-to-another-kind",
        (grant("backends", to=(GrantTo("", "Secret"),)),),
        "backends",
        "svc",
        False,
    ),
    (
        "grant-to-another-group",
        (grant("backends", to=(GrantTo("example.com", "Service"),)),),
        "backends",
        "svc",
        False,
    ),
    (
        "entries-are-ored",
        (
            grant(
                "backends",
                from_=(GrantFrom(GROUP, "TCPRoute", "x"), GrantFrom(GROUP, "HTTPRoute", "routes")),
                to=(GrantTo("", "Secret"), GrantTo("", "Service", "svc")),
            ),
        ),
        "backends",
        "svc",
        True,
    ),
    (
        "from-and-to-must-share-a-grant",
        (
            grant("backends", to=(GrantTo("", "Secret"),), name="a"),
            grant(
                "backends",
                from_=(GrantFrom(GROUP, "TCPRoute", "routes"),),
                name="b",
            ),
        ),
        "backends",
        "svc",
        False,
    ),
]


@pytest.mark.parametrize(
    ("grants", "to_namespace", "to_name", "expected"),
    [case[1:] for case in GRANT_CASES],
    ids=[case[0] for case in GRANT_CASES],
)
def test_reference_permitted_follows_reference_grants(
    grants: tuple[ReferenceGrant, ...], to_namespace: str, to_name: str, expected: bool
) -> None:
    """A cross-namespace reference needs a matching grant in the target namespace (§2.11)."""
    objects = ObjectSet()
    for item in grants:
        objects.grants[(item.meta.namespace, item.meta.name)] = item
    permitted = reference_permitted(
        objects,
        from_group=GROUP,
        from_kind="HTTPRoute",
        from_namespace="routes",
        to_group="",
        to_kind="Service",
        to_namespace=to_namespace,
        to_name=to_name,
    )
    assert permitted is expected


def test_gateway_to_secret_grant() -> None:
    """Gateway -> Secret references use the same rule (T:gateway-secret-reference-grant-*)."""
    objects = ObjectSet()
    objects.grants[("certs", "g")] = grant(
        "certs",
        from_=(GrantFrom(GROUP, "Gateway", "infra"),),
        to=(GrantTo("", "Secret", "tls"),),
    )
    common = {
        "from_group": GROUP,
        "from_kind": "Gateway",
        "from_namespace": "infra",
        "to_group": "",
        "to_kind": "Secret",
        "to_namespace": "certs",
    }
    assert reference_permitted(objects, to_name="tls", **common)
    assert not reference_permitted(objects, to_name="other", **common)


# --- listener route kinds (spec §2.1) ----------------------------------------------------------

HTTP = RouteKind("HTTPRoute")
TLS = RouteKind("TLSRoute")
TCP = RouteKind("TCPRoute")
UDP = RouteKind("UDPRoute")
GRPC = RouteKind("GRPCRoute")

KIND_CASES = [
    # (id, protocol, allowedRoutes.kinds, supported, invalid)
    ("http-default", "HTTP", (), (HTTP,), ()),
    ("https-default", "HTTPS", (), (HTTP,), ()),
    ("tls-default", "TLS", (), (TLS,), ()),
    ("tcp-default", "TCP", (), (TCP,), ()),
    ("udp-default", "UDP", (), (UDP,), ()),
    ("unsupported-protocol", "example.com/Foo", (), (), ()),
    ("unsupported-protocol-with-kinds", "example.com/Foo", (HTTP,), (), (HTTP,)),
    ("http-listing-http", "HTTP", (HTTP,), (HTTP,), ()),
    ("http-listing-tls", "HTTP", (TLS,), (), (TLS,)),
    ("http-mixed", "HTTP", (HTTP, TCP), (HTTP,), (TCP,)),
    ("grpc-not-implemented", "HTTP", (GRPC,), (), (GRPC,)),
    (
        "wrong-group",
        "HTTP",
        (RouteKind("HTTPRoute", "example.com"),),
        (),
        (RouteKind("HTTPRoute", "example.com"),),
    ),
    ("core-group", "HTTP", (RouteKind("HTTPRoute", ""),), (), (RouteKind("HTTPRoute", ""),)),
    ("repeats-collapse", "HTTP", (HTTP, TCP, HTTP, TCP), (HTTP,), (TCP,)),
    ("tcp-on-tls-removed-in-1.5", "TLS", (TLS, TCP), (TLS,), (TCP,)),
]


@pytest.mark.parametrize(
    ("protocol", "kinds", "supported", "invalid"),
    [case[1:] for case in KIND_CASES],
    ids=[case[0] for case in KIND_CASES],
)
def test_listener_kinds_by_protocol_and_allowed_kinds(
    protocol: str,
    kinds: tuple[RouteKind, ...],
    supported: tuple[RouteKind, ...],
    invalid: tuple[RouteKind, ...],
) -> None:
    """supportedKinds lists only valid kinds; the others are InvalidRouteKinds (§2.1)."""
    listener = Listener("l", 80, protocol, kinds=kinds)
    assert listener_kinds(listener) == (supported, invalid)
