"""Conformance port, more GATEWAY-HTTP attachment: isolation, intersection, parent ports, grants.

Upstream ``gateway-http-listener-isolation`` (both manifests),
``httproute-hostname-intersection`` (the cases the first port left out:
Host with a port, non-matching prefixes, per-listener ``attachedRoutes``,
the hostname-less listener Gateway ``httproute-hostname-intersection-all``),
``gateway-with-attached-routes-with-port-8080``,
``httproute-invalid-parentref-not-matching-listener-port`` variants,
ReferenceGrant variants (wrong ``from`` kind or namespace, wrong ``to`` kind,
revocation, a RequestMirror backendRef across namespaces) and
``httproute-request-header-modifier-backend-weights``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.providers.gatewayapi.conformance.base import INFRA, running

ISOLATION_LISTENERS = """
  listeners:
  - {name: empty-hostname, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}
  - {name: wildcard-example-com, port: 80, protocol: HTTP, hostname: "*.example.com",
     allowedRoutes: {namespaces: {from: All}}}
  - {name: wildcard-foo-example-com, port: 80, protocol: HTTP, hostname: "*.foo.example.com",
     allowedRoutes: {namespaces: {from: All}}}
  - {name: abc-foo-example-com, port: 80, protocol: HTTP, hostname: abc.foo.example.com,
     allowedRoutes: {namespaces: {from: All}}}
"""
SECTIONS = ("empty-hostname", "wildcard-example-com", "wildcard-foo-example-com",
            "abc-foo-example-com")
ROUTE_HOSTNAMES = '["bar.com", "*.example.com", "*.foo.example.com", "abc.foo.example.com"]'


def isolation(gateway: str, suffix: str, hostnames: str) -> str:
    routes = "".join(
        f"""---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: attaches-to-{section}{suffix}, namespace: gateway-conformance-infra}}
spec:
  parentRefs: [{{name: {gateway}, namespace: gateway-conformance-infra, sectionName: {section}}}]
  {hostnames}
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /{section}}}}}]
    backendRefs: [{{name: infra-backend-v1, port: 8080}}]
"""
        for section in SECTIONS
    )
    return f"""---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: Gateway
metadata: {{name: {gateway}, namespace: gateway-conformance-infra}}
spec:
  gatewayClassName: "{{GATEWAY_CLASS_NAME}}"{ISOLATION_LISTENERS}""" + routes


ISOLATION = isolation("http-listener-isolation", "", "") + isolation(
    "http-listener-isolation-with-hostname-intersection", "-with-hostname-intersection",
    f"hostnames: {ROUTE_HOSTNAMES}",
)
HOSTS = ("bar.com", "bar.example.com", "bar.foo.example.com", "abc.foo.example.com")


@pytest.mark.parametrize(
    "gateway", ["http-listener-isolation", "http-listener-isolation-with-hostname-intersection"]
)
async def test_http_listener_isolation(tmp_path: Path, gateway: str) -> None:
    """GatewayHTTPListenerIsolation: a request reaches only the most specific listener's routes."""
    async with running(tmp_path, ISOLATION) as s:
        suffix = "" if gateway == "http-listener-isolation" else "-with-hostname-intersection"
        for section in SECTIONS:
            assert s.parent_conditions("HTTPRoute", INFRA, f"attaches-to-{section}{suffix}") == {
                "Accepted": ("True", "Accepted"), "ResolvedRefs": ("True", "ResolvedRefs")
            }
        got, expected = [], []
        for host, own in zip(HOSTS, SECTIONS, strict=True):
            for section in SECTIONS:
                got.append((host, section, await s.pod(gateway, f"/{section}", host=host)))
                expected.append((host, section,
                                 "infra-backend-v1-pod" if section == own else "status 404"))
        wrong = [(g, e[2]) for g, e in zip(got, expected, strict=True) if g != e]
        assert wrong == [], wrong


INTERSECTION_ALL = """
apiVersion: gateway.networking.k8s.io/v1beta1
kind: Gateway
metadata: {name: httproute-hostname-intersection, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: "{GATEWAY_CLASS_NAME}"
  listeners:
  - {name: listener-1, port: 80, protocol: HTTP, hostname: very.specific.com,
     allowedRoutes: {namespaces: {from: Same}}}
  - {name: listener-2, port: 80, protocol: HTTP, hostname: "*.wildcard.io",
     allowedRoutes: {namespaces: {from: Same}}}
  - {name: listener-3, port: 80, protocol: HTTP, hostname: "*.anotherwildcard.io",
     allowedRoutes: {namespaces: {from: Same}}}
""" + "".join(
    f"""---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: HTTPRoute
metadata: {{name: {name}, namespace: gateway-conformance-infra}}
spec:
  parentRefs: [{{name: httproute-hostname-intersection, namespace: gateway-conformance-infra}}]
  hostnames: {hostnames}
  rules:
  - matches: [{{path: {{type: PathPrefix, value: {path}}}}}]
    backendRefs: [{{name: {backend}, port: 8080}}]
"""
    for name, hostnames, path, backend in (
        ("specific-host-matches-listener-specific-host",
         '[non.matching.com, "*.nonmatchingwildcard.io", very.specific.com]', "/s1",
         "infra-backend-v1"),
        ("specific-host-matches-listener-wildcard-host",
         "[non.matching.com, wildcard.io, foo.wildcard.io, bar.wildcard.io, foo.bar.wildcard.io]",
         "/s2", "infra-backend-v2"),
        ("wildcard-host-matches-listener-specific-host", '[non.matching.com, "*.specific.com"]',
         "/s3", "infra-backend-v3"),
        ("wildcard-host-matches-listener-wildcard-host", '["*.anotherwildcard.io"]', "/s4",
         "infra-backend-v1"),
        ("no-intersecting-hosts", "[specific.but.wrong.com, wildcard.io]", "/s5",
         "infra-backend-v2"),
    )
) + """---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: Gateway
metadata: {name: httproute-hostname-intersection-all, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: "{GATEWAY_CLASS_NAME}"
  listeners:
  - {name: listener-1, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: Same}}}
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: HTTPRoute
metadata: {name: httproute-hostname-intersection-all, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: httproute-hostname-intersection-all}]
  hostnames: [first.com, "*.first.com", second.com, "*.second.com"]
  rules: [{backendRefs: [{name: infra-backend-v2, port: 8080}]}]
"""

INTERSECTION_CASES = [
    ("httproute-hostname-intersection", "very.specific.com:1234", "/s1", "infra-backend-v1-pod"),
    ("httproute-hostname-intersection", "very.specific.com", "/non-matching-prefix",
     "status 404"),
    ("httproute-hostname-intersection", "foo.wildcard.io", "/non-matching-prefix", "status 404"),
    ("httproute-hostname-intersection", "foo.wildcard.io", "/s3", "status 404"),
    ("httproute-hostname-intersection", "bar.anotherwildcard.io", "/s4", "infra-backend-v1-pod"),
    ("httproute-hostname-intersection", "foo.wildcard.io", "/s4", "status 404"),
    ("httproute-hostname-intersection", "very.specific.com", "/s4", "status 404"),
    ("httproute-hostname-intersection", "foo.anotherwildcard.io", "/non-matching-prefix",
     "status 404"),
    ("httproute-hostname-intersection-all", "first.com", "/", "infra-backend-v2-pod"),
    ("httproute-hostname-intersection-all", "sub.first.com", "/", "infra-backend-v2-pod"),
    ("httproute-hostname-intersection-all", "second.com", "/", "infra-backend-v2-pod"),
    ("httproute-hostname-intersection-all", "sub.second.com", "/", "infra-backend-v2-pod"),
    ("httproute-hostname-intersection-all", "third.com", "/", "status 404"),
    ("httproute-hostname-intersection-all", "sub.third.com", "/", "status 404"),
]


async def test_hostname_intersection_remaining(tmp_path: Path) -> None:
    """HTTPRouteHostnameIntersection: Host port ignored, attachedRoutes, hostname-less listener."""
    async with running(tmp_path, INTERSECTION_ALL) as s:
        gateway = "httproute-hostname-intersection"
        assert [s.listener(gateway, f"listener-{n}")["attachedRoutes"] for n in (1, 2, 3)] == [
            2, 1, 1
        ]
        assert s.parent_conditions(
            "HTTPRoute", INFRA, "httproute-hostname-intersection-all"
        )["Accepted"] == ("True", "Accepted")
        got = [(g, host, path, await s.pod(g, path, host=host))
               for g, host, path, _ in INTERSECTION_CASES]
        assert got == INTERSECTION_CASES


PORT_8080 = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gateway-with-two-listeners-and-one-attached-route,
           namespace: gateway-conformance-infra}
spec:
  gatewayClassName: "{GATEWAY_CLASS_NAME}"
  listeners:
  - {name: http-unattached, port: 8080, protocol: HTTP,
     allowedRoutes: {kinds: [{kind: HTTPRoute}], namespaces: {from: All}}}
  - {name: http, port: 80, protocol: HTTP,
     allowedRoutes: {kinds: [{kind: HTTPRoute}], namespaces: {from: All}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: http-route-4-port8080, namespace: gateway-conformance-infra}
spec:
  parentRefs:
  - {kind: Gateway, name: gateway-with-two-listeners-and-one-attached-route,
     namespace: gateway-conformance-infra, sectionName: http}
  rules: [{backendRefs: [{name: infra-backend-v1, port: 8080}]}]
"""


async def test_attached_routes_with_port_8080(tmp_path: Path) -> None:
    """GatewayWithAttachedRoutesWithPort8080: the sectionName listener counts 1, the other 0."""
    async with running(tmp_path, PORT_8080) as s:
        gateway = "gateway-with-two-listeners-and-one-attached-route"
        assert [s.listener(gateway, n)["attachedRoutes"] for n in ("http-unattached", "http")] == [
            0, 1
        ]
        assert [await s.pod(gateway, "/", port=port) for port in (80, 8080)] == [
            "infra-backend-v1-pod", "status 404"
        ]


PORTS_GATEWAY = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: two-ports, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: "{GATEWAY_CLASS_NAME}"
  listeners:
  - {name: http, port: 80, protocol: HTTP}
  - {name: http-8080, port: 8080, protocol: HTTP}
"""


def port_route(name: str, parents: str) -> str:
    return f"""---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: gateway-conformance-infra}}
spec:
  parentRefs: {parents}
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /{name}}}}}]
    backendRefs: [{{name: infra-backend-v1, port: 8080}}]
"""


PORT_ROUTES = PORTS_GATEWAY + "".join((
    port_route("port-81", "[{name: two-ports, port: 81}]"),
    port_route("port-8080", "[{name: two-ports, port: 8080}]"),
    port_route("section-and-port-match", "[{name: two-ports, sectionName: http-8080, port: 8080}]"),
    port_route("section-and-other-port", "[{name: two-ports, sectionName: http, port: 8080}]"),
    port_route("one-parent-matches",
               "[{name: two-ports, port: 81}, {name: same-namespace, port: 80}]"),
))

# route, parent gateway, Accepted, {listener port: answer}
PORT_CASES = [
    ("port-81", "two-ports", ("False", "NoMatchingParent"), {80: 404, 8080: 404}),
    ("port-8080", "two-ports", ("True", "Accepted"), {80: 404, 8080: 200}),
    ("section-and-port-match", "two-ports", ("True", "Accepted"), {80: 404, 8080: 200}),
    ("section-and-other-port", "two-ports", ("False", "NoMatchingParent"), {80: 404, 8080: 404}),
    ("one-parent-matches", "two-ports", ("False", "NoMatchingParent"), {80: 404, 8080: 404}),
    ("one-parent-matches", "same-namespace", ("True", "Accepted"), {80: 200}),
]


async def test_parent_ref_port_variants(tmp_path: Path) -> None:
    """HTTPRouteInvalidParentRefNotMatchingListenerPort, HTTPRouteListenerPortMatching variants."""
    async with running(tmp_path, PORT_ROUTES) as s:
        got = []
        for route, gateway, _, answers in PORT_CASES:
            accepted = s.parent_conditions("HTTPRoute", INFRA, route, gateway)["Accepted"]
            statuses = {port: (await s.request(gateway, f"/{route}", port=port)).status
                        for port in answers}
            got.append((route, gateway, accepted, statuses))
        assert got == PORT_CASES
        assert [s.listener("two-ports", n)["attachedRoutes"] for n in ("http", "http-8080")] == [
            0, 2
        ]


CROSS_ROUTE = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: cross-namespace, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /}}]
    backendRefs: [{name: web-backend, namespace: gateway-conformance-web-backend, port: 8080}]
"""


def grant(from_kind: str = "HTTPRoute", from_ns: str = INFRA, to_kind: str = "Service",
          namespace: str = "gateway-conformance-web-backend") -> str:
    return f"""---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {{name: grant, namespace: {namespace}}}
spec:
  from: [{{group: gateway.networking.k8s.io, kind: {from_kind}, namespace: {from_ns}}}]
  to: [{{group: "", kind: {to_kind}}}]
"""


GRANT_CASES = [
    ("matching", grant(), ("True", "ResolvedRefs"), 200),
    ("from-kind-gateway", grant(from_kind="Gateway"), ("False", "RefNotPermitted"), 500),
    ("from-other-namespace", grant(from_ns="gateway-conformance-app-backend"),
     ("False", "RefNotPermitted"), 500),
    ("to-kind-secret", grant(to_kind="Secret"), ("False", "RefNotPermitted"), 500),
    ("in-route-namespace", grant(namespace=INFRA), ("False", "RefNotPermitted"), 500),
    ("revoked", "", ("False", "RefNotPermitted"), 500),
]


async def test_reference_grant_variants(tmp_path: Path) -> None:
    """HTTPRouteReferenceGrant variants: only a grant in the target namespace matching all fields.

    Applied in turn to one running gateway, so the last case checks that
    deleting the grant revokes access ("MUST" in ReferenceGrant's spec).
    """
    async with running(tmp_path, CROSS_ROUTE) as s:
        got = []
        for name, extra, _, _ in GRANT_CASES:
            await s.apply(CROSS_ROUTE + extra)
            resolved = s.parent_conditions("HTTPRoute", INFRA, "cross-namespace")["ResolvedRefs"]
            got.append((name, extra, resolved, (await s.request("same-namespace", "/")).status))
        assert got == GRANT_CASES


MIRROR_ACROSS = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: mirror-across, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace}]
  rules:
  - filters:
    - type: RequestMirror
      requestMirror:
        backendRef: {name: web-backend, namespace: gateway-conformance-web-backend, port: 8080}
    backendRefs: [{name: infra-backend-v1, port: 8080}]
"""


@pytest.mark.parametrize(("extra", "resolved", "copies"), [
    pytest.param("", ("False", "RefNotPermitted"), 0, id="no-grant"),
    pytest.param(grant(), ("True", "ResolvedRefs"), 1, id="granted"),
])
async def test_mirror_backend_reference_grant(
    tmp_path: Path, extra: str, resolved: tuple[str, str], copies: int
) -> None:
    """ReferenceGrant for a RequestMirror backendRef (spec §2.11): no grant, no copies."""
    from tests.providers.gatewayapi.conformance.base import WEB, mirror_copies_settled

    async with running(tmp_path, MIRROR_ACROSS + extra) as s:
        assert s.parent_conditions("HTTPRoute", INFRA, "mirror-across")["ResolvedRefs"] == resolved
        assert await s.pod("same-namespace", "/") == "infra-backend-v1-pod"
        await mirror_copies_settled()
        assert len(s.echoes[(WEB, "web-backend")].requests) == copies


BACKEND_WEIGHTS = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: request-header-modifier-backend-weights, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace}]
  rules:
  - backendRefs:
    - name: infra-backend-v1
      port: 8080
      weight: 10
      filters:
      - type: RequestHeaderModifier
        requestHeaderModifier: {set: [{name: Backend, value: infra-backend-v1}]}
    - name: infra-backend-v2
      port: 8080
      weight: 10
      filters:
      - type: RequestHeaderModifier
        requestHeaderModifier: {set: [{name: Backend, value: infra-backend-v2}]}
"""


async def test_request_header_modifier_backend_weights(tmp_path: Path) -> None:
    """HTTPRouteRequestHeaderModifierBackendWeights: each backend gets its backendRef's header."""
    async with running(tmp_path, BACKEND_WEIGHTS) as s:
        assert s.parent_conditions(
            "HTTPRoute", INFRA, "request-header-modifier-backend-weights"
        ) == {"Accepted": ("True", "Accepted"), "ResolvedRefs": ("True", "ResolvedRefs")}
        seen = set()
        for _ in range(100):
            echo = (await s.request("same-namespace", "/")).json()
            assert echo["headers"]["Backend"] == [echo["pod"].removesuffix("-pod")]
            seen.add(echo["pod"])
        assert seen == {"infra-backend-v1-pod", "infra-backend-v2-pod"}
