"""Conformance port, GATEWAY-HTTP invalid references and parents, and ReferenceGrant.

Upstream tests ``httproute-invalid-*``, ``httproute-reference-grant``,
``httproute-partially-invalid-via-reference-grant``,
``httproute-disallowed-kind`` and ``httproute-listener-port-matching``:
each checks the route parent's ``Accepted``/``ResolvedRefs`` conditions
and what traffic gets (500 for an unresolvable backend's share, 404 for a
route that did not attach).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.providers.gatewayapi.conformance.base import INFRA, WEB, running


def route(
    name: str, backend: str, *, namespace: str = INFRA,
    parent: str = "{name: same-namespace}", path: str = "/",
) -> str:
    return f"""
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  parentRefs: [{parent}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: {path}}}}}]
    backendRefs: [{backend}]
"""


GRANT = """
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {{name: {name}, namespace: gateway-conformance-web-backend}}
spec:
  from: [{{group: gateway.networking.k8s.io, kind: HTTPRoute,
          namespace: gateway-conformance-infra}}]
  to: [{{group: "", kind: Service{to_name}}}]
"""

# upstream test, manifests, route (namespace, name), Accepted, ResolvedRefs, status of GET /
CASES = [
    (
        "HTTPRouteInvalidBackendRefUnknownKind",
        route("invalid-backend-ref-unknown-kind",
              "{group: unknown.group, kind: UnknownKind, name: infra-backend-v1, port: 8080}"),
        (INFRA, "invalid-backend-ref-unknown-kind"),
        ("True", "Accepted"), ("False", "InvalidKind"), 500,
    ),
    (
        "HTTPRouteInvalidNonExistentBackendRef",
        route("invalid-nonexistent-backend-ref", "{name: nonexistent, port: 8080}"),
        (INFRA, "invalid-nonexistent-backend-ref"),
        ("True", "Accepted"), ("False", "BackendNotFound"), 500,
    ),
    (
        "HTTPRouteInvalidCrossNamespaceBackendRef",
        route("invalid-cross-namespace-backend-ref",
              "{name: web-backend, namespace: gateway-conformance-web-backend, port: 8080}"),
        (INFRA, "invalid-cross-namespace-backend-ref"),
        ("True", "Accepted"), ("False", "RefNotPermitted"), 500,
    ),
    (
        "HTTPRouteReferenceGrant",
        route("reference-grant",
              "{name: web-backend, namespace: gateway-conformance-web-backend, port: 8080}")
        + GRANT.format(name="reference-grant", to_name=", name: web-backend"),
        (INFRA, "reference-grant"),
        ("True", "Accepted"), ("True", "ResolvedRefs"), 200,
    ),
    (
        "HTTPRouteReferenceGrant (no to.name: every Service of the namespace)",
        route("reference-grant-all",
              "{name: web-backend, namespace: gateway-conformance-web-backend, port: 8080}")
        + GRANT.format(name="reference-grant-all", to_name=""),
        (INFRA, "reference-grant-all"),
        ("True", "Accepted"), ("True", "ResolvedRefs"), 200,
    ),
    (
        "HTTPRouteInvalidReferenceGrant",
        route("invalid-reference-grant",
              "{name: web-backend, namespace: gateway-conformance-web-backend, port: 8080}")
        + GRANT.format(name="not-matching", to_name=", name: not-web-backend"),
        (INFRA, "invalid-reference-grant"),
        ("True", "Accepted"), ("False", "RefNotPermitted"), 500,
    ),
    (
        "HTTPRouteInvalidParentRefNotMatchingSectionName",
        route("invalid-parent-section", "{name: infra-backend-v1, port: 8080}",
              parent="{name: same-namespace, sectionName: unknown-section}"),
        (INFRA, "invalid-parent-section"),
        ("False", "NoMatchingParent"), ("True", "ResolvedRefs"), 404,
    ),
    (
        "HTTPRouteInvalidParentRefNotMatchingListenerPort",
        route("invalid-parent-port", "{name: infra-backend-v1, port: 8080}",
              parent="{name: same-namespace, port: 81}"),
        (INFRA, "invalid-parent-port"),
        ("False", "NoMatchingParent"), ("True", "ResolvedRefs"), 404,
    ),
    (
        "HTTPRouteInvalidParentRefSectionNameNotMatchingPort",
        route("invalid-parent-section-port", "{name: infra-backend-v1, port: 8080}",
              parent="{name: same-namespace, sectionName: http, port: 81}"),
        (INFRA, "invalid-parent-section-port"),
        ("False", "NoMatchingParent"), ("True", "ResolvedRefs"), 404,
    ),
    (
        "HTTPRouteListenerPortMatching",
        route("listener-port", "{name: infra-backend-v1, port: 8080}",
              parent="{name: same-namespace, port: 80}"),
        (INFRA, "listener-port"),
        ("True", "Accepted"), ("True", "ResolvedRefs"), 200,
    ),
    (
        "HTTPRouteInvalidCrossNamespaceParentRef",
        route("invalid-cross-namespace-parent-ref", "{name: web-backend, port: 8080}",
              namespace=WEB,
              parent="{name: same-namespace, namespace: gateway-conformance-infra}"),
        (WEB, "invalid-cross-namespace-parent-ref"),
        ("False", "NotAllowedByListeners"), ("True", "ResolvedRefs"), 404,
    ),
]


@pytest.mark.parametrize(
    ("test", "manifests", "key", "accepted", "resolved", "status"),
    CASES, ids=[c[0].split(" ")[0] + ("-all" if "(" in c[0] else "") for c in CASES],
)
async def test_route_conditions_and_traffic(
    tmp_path: Path, test: str, manifests: str, key: tuple[str, str],
    accepted: tuple[str, str], resolved: tuple[str, str], status: int,
) -> None:
    """Invalid backendRefs/parentRefs and ReferenceGrants: parent conditions and GET / status."""
    async with running(tmp_path, manifests) as s:
        conditions = s.parent_conditions("HTTPRoute", *key)
        assert (conditions["Accepted"], conditions["ResolvedRefs"]) == (accepted, resolved)
        assert (await s.request("same-namespace", "/")).status == status
        attached = s.listener("same-namespace", "http")["attachedRoutes"]
        assert attached == (1 if accepted[0] == "True" and key[0] == INFRA else 0)


PARTIALLY_INVALID = route(
    "invalid-reference-grant",
    "{name: app-backend-v1, namespace: gateway-conformance-app-backend, port: 8080}",
    path="/invalid",
) + """
  - matches: [{path: {type: PathPrefix, value: /}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: reference-grant-wrong-namespace, namespace: gateway-conformance-web-backend}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: gateway-conformance-infra}]
  to: [{group: "", kind: Service, name: app-backend-v1}]
"""


async def test_partially_invalid_via_reference_grant(tmp_path: Path) -> None:
    """HTTPRoutePartiallyInvalidViaInvalidReferenceGrant: the bad rule answers 500, others serve."""
    async with running(tmp_path, PARTIALLY_INVALID) as s:
        conditions = s.parent_conditions("HTTPRoute", INFRA, "invalid-reference-grant")
        assert (conditions["Accepted"], conditions["ResolvedRefs"]) == (
            ("True", "Accepted"), ("False", "RefNotPermitted")
        )
        assert (await s.request("same-namespace", "/invalid")).status == 500
        assert await s.pod("same-namespace", "/") == "infra-backend-v1-pod"


DISALLOWED_KIND = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: tlsroutes-only, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: "{GATEWAY_CLASS_NAME}"
  listeners:
  - name: tls
    port: 443
    protocol: TLS
    hostname: "*.example.com"
    tls: {mode: Passthrough}
    allowedRoutes:
      namespaces: {from: Same}
      kinds: [{kind: TLSRoute}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: disallowed-kind, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: tlsroutes-only}]
  rules:
  - backendRefs: [{name: infra-backend-v1, port: 8080}]
"""


async def test_disallowed_kind(tmp_path: Path) -> None:
    """HTTPRouteDisallowedKind: an HTTPRoute on a TLSRoute-only listener is not accepted."""
    async with running(tmp_path, DISALLOWED_KIND) as s:
        assert s.parent_conditions("HTTPRoute", INFRA, "disallowed-kind") == {
            "Accepted": ("False", "NotAllowedByListeners"),
            "ResolvedRefs": ("True", "ResolvedRefs"),
        }
        assert s.listener("tlsroutes-only", "tls")["attachedRoutes"] == 0


HALF_INVALID = route(
    "half-invalid",
    "{name: infra-backend-v1, port: 8080}, {name: nonexistent, port: 8080}",
)


async def test_invalid_backend_share_answers_500(tmp_path: Path) -> None:
    """HTTPRoute backendRefs (spec): an invalid backend keeps its weight and answers 500 for it."""
    async with running(tmp_path, HALF_INVALID) as s:
        statuses = [(await s.request("same-namespace", "/")).status for _ in range(200)]
        assert set(statuses) == {200, 500}
        assert abs(statuses.count(500) - 100) <= 25
