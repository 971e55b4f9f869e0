"""Conformance port, GATEWAY-HTTP hostnames: route x listener hostname intersection and matching.

Upstream ``httproute-hostname-intersection`` and
``httproute-listener-hostname-matching`` (manifests adapted as ``base.py``
says): which listener and route serve each Host, and which routes the
intersection leaves unattached (``NoMatchingListenerHostname``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.providers.gatewayapi.conformance.base import INFRA, running

HOSTNAME_INTERSECTION = """
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
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: HTTPRoute
metadata: {name: specific-host-matches-listener-specific-host, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: httproute-hostname-intersection, namespace: gateway-conformance-infra}]
  hostnames: [non.matching.com, "*.nonmatchingwildcard.io", very.specific.com]
  rules:
  - matches: [{path: {type: PathPrefix, value: /s1}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: HTTPRoute
metadata: {name: specific-host-matches-listener-wildcard-host, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: httproute-hostname-intersection, namespace: gateway-conformance-infra}]
  hostnames: [non.matching.com, wildcard.io, foo.wildcard.io, bar.wildcard.io, foo.bar.wildcard.io]
  rules:
  - matches: [{path: {type: PathPrefix, value: /s2}}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: HTTPRoute
metadata: {name: wildcard-host-matches-listener-specific-host, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: httproute-hostname-intersection, namespace: gateway-conformance-infra}]
  hostnames: [non.matching.com, "*.specific.com"]
  rules:
  - matches: [{path: {type: PathPrefix, value: /s3}}]
    backendRefs: [{name: infra-backend-v3, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: HTTPRoute
metadata: {name: wildcard-host-matches-listener-wildcard-host, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: httproute-hostname-intersection, namespace: gateway-conformance-infra}]
  hostnames: ["*.anotherwildcard.io"]
  rules:
  - matches: [{path: {type: PathPrefix, value: /s4}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: HTTPRoute
metadata: {name: no-intersecting-hosts, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: httproute-hostname-intersection, namespace: gateway-conformance-infra}]
  hostnames: [specific.but.wrong.com, wildcard.io]
  rules:
  - matches: [{path: {type: PathPrefix, value: /s5}}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
"""

INTERSECTION_CASES = [
    ("very.specific.com", "/s1", "infra-backend-v1-pod"),
    ("non.matching.com", "/s1", "status 404"),
    ("foo.nonmatchingwildcard.io", "/s1", "status 404"),
    ("foo.wildcard.io", "/s1", "status 404"),
    ("very.specific.com", "/s2", "status 404"),
    ("foo.wildcard.io", "/s2", "infra-backend-v2-pod"),
    ("bar.wildcard.io", "/s2", "infra-backend-v2-pod"),
    ("foo.bar.wildcard.io", "/s2", "infra-backend-v2-pod"),
    ("wildcard.io", "/s2", "status 404"),
    ("non.matching.com", "/s2", "status 404"),
    ("very.specific.com", "/s3", "infra-backend-v3-pod"),
    ("foo.specific.com", "/s3", "status 404"),
    ("foo.anotherwildcard.io", "/s4", "infra-backend-v1-pod"),
    ("foo.bar.anotherwildcard.io", "/s4", "infra-backend-v1-pod"),
    ("anotherwildcard.io", "/s4", "status 404"),
    ("specific.but.wrong.com", "/s5", "status 404"),
    ("wildcard.io", "/s5", "status 404"),
]


async def test_hostname_intersection(tmp_path: Path) -> None:
    """HTTPRouteHostnameIntersection: only hostnames intersecting a listener's are served."""
    async with running(tmp_path, HOSTNAME_INTERSECTION) as s:
        for name in (
            "specific-host-matches-listener-specific-host",
            "specific-host-matches-listener-wildcard-host",
            "wildcard-host-matches-listener-specific-host",
            "wildcard-host-matches-listener-wildcard-host",
        ):
            assert s.parent_conditions("HTTPRoute", INFRA, name)["Accepted"] == ("True", "Accepted")
        assert s.parent_conditions("HTTPRoute", INFRA, "no-intersecting-hosts")["Accepted"] == (
            "False", "NoMatchingListenerHostname"
        )
        got = [
            (host, path, await s.pod("httproute-hostname-intersection", path, host=host))
            for host, path, _ in INTERSECTION_CASES
        ]
        assert got == INTERSECTION_CASES


LISTENER_HOSTNAME = """
apiVersion: gateway.networking.k8s.io/v1beta1
kind: Gateway
metadata: {name: httproute-listener-hostname-matching, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: "{GATEWAY_CLASS_NAME}"
  listeners:
  - {name: listener-1, port: 80, protocol: HTTP, hostname: bar.com,
     allowedRoutes: {namespaces: {from: Same}}}
  - {name: listener-2, port: 80, protocol: HTTP, hostname: foo.bar.com,
     allowedRoutes: {namespaces: {from: Same}}}
  - {name: listener-3, port: 80, protocol: HTTP, hostname: "*.bar.com",
     allowedRoutes: {namespaces: {from: Same}}}
""" + "".join(
    f"""---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: HTTPRoute
metadata: {{name: backend-v{n}, namespace: gateway-conformance-infra}}
spec:
  parentRefs:
  - {{name: httproute-listener-hostname-matching, namespace: gateway-conformance-infra,
     sectionName: listener-{n}}}
  rules:
  - backendRefs: [{{name: infra-backend-v{n}, port: 8080}}]
"""
    for n in (1, 2, 3)
)


@pytest.mark.parametrize(
    ("host", "pod"),
    [
        ("bar.com", "infra-backend-v1-pod"),
        ("foo.bar.com", "infra-backend-v2-pod"),
        ("baz.bar.com", "infra-backend-v3-pod"),
        ("boo.bar.com", "infra-backend-v3-pod"),
        ("multiple.prefixes.bar.com", "infra-backend-v3-pod"),
        ("multiple.prefixes.foo.bar.com", "infra-backend-v3-pod"),
        ("foo.com", "status 404"),
        ("no.matching.host", "status 404"),
    ],
    ids=lambda v: v,
)
async def test_listener_hostname_matching(tmp_path: Path, host: str, pod: str) -> None:
    """HTTPRouteListenerHostnameMatching: the most specific listener hostname picks the routes."""
    async with running(tmp_path, LISTENER_HOSTNAME) as s:
        assert await s.pod("httproute-listener-hostname-matching", "/", host=host) == pod


async def test_host_header_port_is_ignored(tmp_path: Path) -> None:
    """HTTPRouteListenerHostnameMatching (Host with :port): the port in Host does not count."""
    async with running(tmp_path, LISTENER_HOSTNAME) as s:
        assert await s.pod(
            "httproute-listener-hostname-matching", "/", host="foo.bar.com:80"
        ) == "infra-backend-v2-pod"
