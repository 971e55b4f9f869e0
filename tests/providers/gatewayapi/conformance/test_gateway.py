"""Conformance port, Gateway core tests: listener validity, TLS references, attachment, generations.

Upstream tests ``gateway-invalid-listeners-unsupported-protocol``,
``gateway-invalid-route-kind``, ``gateway-invalid-tls-configuration``,
``gateway-secret-*-reference-grant``, ``gateway-with-attached-routes``,
``gateway-observed-generation-bump``, ``gateway-modify-listeners``,
``gatewayclass-observed-generation-bump`` and ``httproute-https-listener``:
they check Gateway and listener conditions, ``supportedKinds``,
``attachedRoutes`` and, for HTTPS, traffic over TLS with SNI.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

from tests.backends import read_reply
from tests.providers.gatewayapi.conformance.base import APP, INFRA, running, tls_secret

HTTP_ROUTE_KIND = [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"}]

UNSUPPORTED_PROTOCOL = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gateway-only-unsupported-protocol, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: "{GATEWAY_CLASS_NAME}"
  listeners:
  - {name: unsupported, port: 1111, protocol: INVALID}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: gateway-supported-and-unsupported-protocol
  namespace: gateway-conformance-infra
spec:
  gatewayClassName: "{GATEWAY_CLASS_NAME}"
  listeners:
  - {name: http, port: 80, protocol: HTTP}
  - {name: unsupported, port: 1111, protocol: INVALID}
"""


async def test_listener_unsupported_protocol(tmp_path: Path) -> None:
    """GatewayListenerUnsupportedProtocol: listener UnsupportedProtocol; ListenersNotValid."""
    async with running(tmp_path, UNSUPPORTED_PROTOCOL) as s:
        only = "gateway-only-unsupported-protocol"
        mixed = "gateway-supported-and-unsupported-protocol"
        assert s.gateway_conditions(only)["Accepted"] == ("False", "ListenersNotValid")
        assert s.gateway_conditions(mixed)["Accepted"] == ("True", "ListenersNotValid")
        for gateway in (only, mixed):
            assert s.listener_conditions(gateway, "unsupported")["Accepted"] == (
                "False", "UnsupportedProtocol"
            )
            assert s.listener(gateway, "unsupported")["supportedKinds"] == []
        assert s.listener_conditions(mixed, "http")["Accepted"] == ("True", "Accepted")


INVALID_ROUTE_KIND = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gateway-only-invalid-route-kind, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: "{GATEWAY_CLASS_NAME}"
  listeners:
  - name: http
    port: 80
    protocol: HTTP
    allowedRoutes:
      kinds: [{kind: InvalidRoute}]
      namespaces: {from: All}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gateway-supported-and-invalid-route-kind, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: "{GATEWAY_CLASS_NAME}"
  listeners:
  - name: http
    port: 80
    protocol: HTTP
    allowedRoutes:
      kinds: [{kind: InvalidRoute}, {kind: HTTPRoute}]
      namespaces: {from: All}
"""


async def test_invalid_route_kind(tmp_path: Path) -> None:
    """GatewayInvalidRouteKind: listener InvalidRouteKinds; supportedKinds keeps the valid kinds."""
    async with running(tmp_path, INVALID_ROUTE_KIND) as s:
        for gateway, kinds in (
            ("gateway-only-invalid-route-kind", []),
            ("gateway-supported-and-invalid-route-kind", HTTP_ROUTE_KIND),
        ):
            assert s.listener_conditions(gateway, "http")["ResolvedRefs"] == (
                "False", "InvalidRouteKinds"
            )
            assert s.listener(gateway, "http")["supportedKinds"] == kinds


def https_gateway(name: str, ref: str) -> str:
    return f"""
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: {name}, namespace: gateway-conformance-infra}}
spec:
  gatewayClassName: "{{GATEWAY_CLASS_NAME}}"
  listeners:
  - name: https
    port: 443
    protocol: HTTPS
    allowedRoutes: {{namespaces: {{from: Same}}}}
    tls:
      certificateRefs: [{ref}]
"""


INVALID_TLS = (
    https_gateway("gateway-certificate-nonexistent-secret", "{name: nonexistent-certificate}")
    + https_gateway("gateway-certificate-unsupported-group",
                    "{group: wrong.group.company.io, kind: Secret, name: tls-checks-certificate}")
    + https_gateway("gateway-certificate-unsupported-kind",
                    "{group: '', kind: WrongKind, name: tls-checks-certificate}")
    + https_gateway("gateway-certificate-malformed-secret", "{name: malformed-certificate}")
    + """
---
apiVersion: v1
kind: Secret
type: kubernetes.io/tls
metadata: {name: malformed-certificate, namespace: gateway-conformance-infra}
data: {tls.crt: bm90IGEgY2VydGlmaWNhdGU=, tls.key: bm90IGEga2V5}
"""
)


async def test_invalid_tls_configuration(tmp_path: Path) -> None:
    """GatewayInvalidTLSConfiguration: every bad certificateRef gives InvalidCertificateRef."""
    secret, _ = tls_secret(tmp_path, INFRA, "tls-checks-certificate", ["example.org"])
    async with running(tmp_path, INVALID_TLS + secret) as s:
        for gateway in (
            "gateway-certificate-nonexistent-secret",
            "gateway-certificate-unsupported-group",
            "gateway-certificate-unsupported-kind",
            "gateway-certificate-malformed-secret",
        ):
            assert (
                s.listener_conditions(gateway, "https")["ResolvedRefs"],
                s.listener(gateway, "https")["supportedKinds"],
                s.listener(gateway, "https")["attachedRoutes"],
            ) == (("False", "InvalidCertificateRef"), HTTP_ROUTE_KIND, 0), gateway


SECRET_GRANT = """
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {{name: reference-grant, namespace: gateway-conformance-app-backend}}
spec:
  from: [{{group: gateway.networking.k8s.io, kind: Gateway, namespace: gateway-conformance-infra}}]
  to: [{{group: "", kind: Secret{to_name}}}]
"""

CROSS_NAMESPACE_CERT = https_gateway(
    "gateway-secret-reference-grant",
    "{name: certificate, namespace: gateway-conformance-app-backend}",
)


async def test_secret_reference_grants(tmp_path: Path) -> None:
    """GatewaySecret{Missing,Invalid}ReferenceGrant, ...ReferenceGrant{Specific,AllInNamespace}."""
    secret, _ = tls_secret(tmp_path, APP, "certificate", ["example.org"])
    cases = [
        ("GatewaySecretMissingReferenceGrant", "", ("False", "RefNotPermitted")),
        ("GatewaySecretInvalidReferenceGrant",
         SECRET_GRANT.format(to_name=", name: not-the-certificate"), ("False", "RefNotPermitted")),
        ("GatewaySecretReferenceGrantSpecific",
         SECRET_GRANT.format(to_name=", name: certificate"), ("True", "ResolvedRefs")),
        ("GatewaySecretReferenceGrantAllInNamespace",
         SECRET_GRANT.format(to_name=""), ("True", "ResolvedRefs")),
    ]
    async with running(tmp_path, CROSS_NAMESPACE_CERT + secret) as s:
        got = []
        for test, grant, _ in cases:
            await s.apply(CROSS_NAMESPACE_CERT + secret + grant)
            got.append((test, grant, s.listener_conditions(
                "gateway-secret-reference-grant", "https")["ResolvedRefs"]))
        assert got == cases


ATTACHED_ROUTES = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gateway-with-one-attached-route, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: "{GATEWAY_CLASS_NAME}"
  listeners:
  - name: http
    port: 80
    protocol: HTTP
    allowedRoutes:
      namespaces:
        from: Selector
        selector: {matchLabels: {gateway-conformance: backend}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gateway-with-two-attached-routes, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: "{GATEWAY_CLASS_NAME}"
  listeners:
  - name: http
    port: 80
    protocol: HTTP
    allowedRoutes:
      namespaces:
        from: Selector
        selector: {matchLabels: {gateway-conformance: backend}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: http-route-1, namespace: gateway-conformance-app-backend}
spec:
  parentRefs:
  - {name: gateway-with-one-attached-route, namespace: gateway-conformance-infra}
  - {name: gateway-with-two-attached-routes, namespace: gateway-conformance-infra}
  rules: [{backendRefs: [{name: app-backend-v1, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: http-route-2, namespace: gateway-conformance-app-backend}
spec:
  parentRefs:
  - {name: gateway-with-two-attached-routes, namespace: gateway-conformance-infra}
  rules: [{backendRefs: [{name: nonexistent-backend, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: unresolved-gateway-with-one-attached-unresolved-route,
           namespace: gateway-conformance-infra}
spec:
  gatewayClassName: "{GATEWAY_CLASS_NAME}"
  listeners:
  - name: tls
    port: 443
    protocol: HTTPS
    allowedRoutes:
      namespaces:
        from: Selector
        selector: {matchLabels: {gateway-conformance: backend}}
    tls:
      certificateRefs: [{name: does-not-exist}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: http-route-4, namespace: gateway-conformance-app-backend}
spec:
  parentRefs:
  - {name: unresolved-gateway-with-one-attached-unresolved-route,
     namespace: gateway-conformance-infra, sectionName: tls}
  rules: [{backendRefs: [{name: nonexistent-backend, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gateway-with-section-name, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: "{GATEWAY_CLASS_NAME}"
  listeners:
  - {name: http, port: 80, protocol: HTTP, hostname: a.example.com}
  - {name: http-unattached, port: 80, protocol: HTTP, hostname: b.example.com}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: http-route-section, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: gateway-with-section-name, sectionName: http}]
  rules: [{backendRefs: [{name: infra-backend-v1, port: 8080}]}]
"""


async def test_with_attached_routes(tmp_path: Path) -> None:
    """GatewayWithAttachedRoutes: attachedRoutes counts accepted routes, per listener."""
    async with running(tmp_path, ATTACHED_ROUTES) as s:
        counts = {
            (gateway, listener): s.listener(gateway, listener)["attachedRoutes"]
            for gateway, listener in (
                ("gateway-with-one-attached-route", "http"),
                ("gateway-with-two-attached-routes", "http"),
                ("unresolved-gateway-with-one-attached-unresolved-route", "tls"),
                ("gateway-with-section-name", "http"),
                ("gateway-with-section-name", "http-unattached"),
            )
        }
        assert list(counts.values()) == [1, 2, 1, 1, 0]
        assert s.listener_conditions(
            "unresolved-gateway-with-one-attached-unresolved-route", "tls"
        )["ResolvedRefs"] == ("False", "InvalidCertificateRef")


GENERATION = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gateway-observed-generation-bump, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: "{GATEWAY_CLASS_NAME}"
  listeners:
  - {name: http, port: 80, protocol: HTTP}
"""
EXTRA_LISTENER = "  - {name: http-8080, port: 8080, protocol: HTTP}\n"


async def test_observed_generation_bump_and_modify_listeners(tmp_path: Path) -> None:
    """GatewayObservedGenerationBump, GatewayModifyListeners: conditions and listeners follow."""
    async with running(tmp_path, GENERATION) as s:
        name = "gateway-observed-generation-bump"

        def generations() -> set[int]:
            status = s.status("Gateway", INFRA, name)
            found = {c["observedGeneration"] for c in status["conditions"]}
            for listener in status["listeners"]:
                found |= {c["observedGeneration"] for c in listener["conditions"]}
            return found

        assert generations() == {1}
        await s.apply(GENERATION + EXTRA_LISTENER)
        assert generations() == {2}
        assert [item["name"] for item in s.status("Gateway", INFRA, name)["listeners"]] == [
            "http", "http-8080"
        ]
        assert s.gateway_conditions(name) == {
            "Accepted": ("True", "Accepted"), "Programmed": ("True", "Programmed")
        }
        await s.apply(GENERATION)
        assert generations() == {3}
        assert [item["name"] for item in s.status("Gateway", INFRA, name)["listeners"]] == ["http"]


async def test_gatewayclass_observed_generation_bump(tmp_path: Path) -> None:
    """GatewayClassObservedGenerationBump: the class's Accepted follows its generation."""
    klass = """
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: gatewayclass-observed-generation-bump}
spec: {controllerName: sluice.dev/gateway-controller, description: before}
"""
    async with running(tmp_path, klass) as s:
        key = ("GatewayClass", "", "gatewayclass-observed-generation-bump")
        assert [(c["type"], c["status"], c["observedGeneration"])
                for c in s.status(*key)["conditions"]] == [("Accepted", "True", 1)]
        await s.apply(klass.replace("before", "after"))
        assert [(c["type"], c["status"], c["observedGeneration"])
                for c in s.status(*key)["conditions"]] == [("Accepted", "True", 2)]


HTTPS_LISTENER = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: same-namespace-with-https-listener, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: "{GATEWAY_CLASS_NAME}"
  listeners:
  - name: https
    port: 443
    protocol: HTTPS
    allowedRoutes: {namespaces: {from: Same}}
    tls:
      certificateRefs: [{group: "", kind: Secret, name: tls-validity-checks-certificate}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: https-test, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace-with-https-listener}]
  hostnames: [example.org]
  rules: [{backendRefs: [{name: infra-backend-v1, port: 8080}]}]
"""


async def test_https_listener(tmp_path: Path) -> None:
    """HTTPRouteHTTPSListener: an HTTPS listener serves the route with the Secret's certificate."""
    secret, ca = tls_secret(tmp_path, INFRA, "tls-validity-checks-certificate", ["example.org"])
    async with running(tmp_path, HTTPS_LISTENER + secret) as s:
        gateway = "same-namespace-with-https-listener"
        assert s.listener_conditions(gateway, "https")["Programmed"] == ("True", "Programmed")
        context = ssl.create_default_context(cafile=str(ca))
        reader, writer = await asyncio.open_connection(
            s.address(gateway), 443, ssl=context, server_hostname="example.org"
        )
        try:
            writer.write(b"GET / HTTP/1.1\r\nHost: example.org\r\nConnection: close\r\n\r\n")
            reply = await read_reply(reader)
        finally:
            writer.close()
        assert (reply.status, reply.json()["pod"]) == (200, "infra-backend-v1-pod")


CONFLICTS = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gateway-conflicts, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: "{GATEWAY_CLASS_NAME}"
  listeners:
  - {name: tcp, port: 8090, protocol: TCP}
  - {name: http-on-tcp-port, port: 8090, protocol: HTTP}
  - {name: fine, port: 80, protocol: HTTP, hostname: b.example.com}
"""


async def test_listener_conflicts(tmp_path: Path) -> None:
    """Gateway listener distinctness (spec): HTTP and TCP on one port conflict, others are fine.

    Same port, protocol and hostname within one Gateway is refused by CEL
    (the parser's job), so HostnameConflict cannot be reached here.
    """
    async with running(tmp_path, CONFLICTS) as s:
        got = {
            name: s.listener_conditions("gateway-conflicts", name).get("Conflicted")
            for name in ("tcp", "http-on-tcp-port", "fine")
        }
        assert got == {
            "tcp": ("True", "ProtocolConflict"),
            "http-on-tcp-port": ("True", "ProtocolConflict"),
            "fine": ("False", "NoConflicts"),
        }
        assert s.gateway_conditions("gateway-conflicts")["Accepted"] == (
            "True", "ListenersNotValid"
        )
