"""Conformance port, more GATEWAY-HTTP over HTTPS: redirects from HTTPS listeners, variants.

Upstream ``httproute-redirect-port-and-scheme`` (the HTTPS half, with a
second HTTPS listener on 8443 as the 8080 one of the HTTP half),
``httproute-https-listener`` (listeners with and without hostname, SNI and
Host apart) and ``gateway-modify-listeners`` (the upstream manifests: an
HTTPS listener plus an added or removed HTTP one). The suite's Secret
``tls-validity-checks-certificate`` is issued here by a test CA
(``tests/certs.py``) for the names each test sends as SNI.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.providers.gatewayapi.conformance.base import (
    INFRA,
    https_request,
    running,
    tls_secret,
)

DEFAULT_PORTS = {"http": 80, "https": 443}


def location_parts(location: str | None) -> tuple[str, str, int, str]:
    """(scheme, host, port, path); the suite accepts a default port written out or left off."""
    assert location is not None
    url = urlsplit(location)
    return (url.scheme, url.hostname or "", url.port or DEFAULT_PORTS[url.scheme], url.path)


def redirect_rule(path: str, fields: str) -> str:
    return f"""
  - matches: [{{path: {{type: PathPrefix, value: {path}}}}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {{hostname: example.org{fields}}}"""


HTTPS_REDIRECT_RULES = "".join(
    redirect_rule(path, fields) for path, fields in (
        ("/scheme-nil-and-port-nil", ""),
        ("/scheme-nil-and-port-443", ", port: 443"),
        ("/scheme-nil-and-port-8443", ", port: 8443"),
        ("/scheme-http-and-port-nil", ", scheme: http"),
        ("/scheme-http-and-port-80", ", scheme: http, port: 80"),
        ("/scheme-http-and-port-8080", ", scheme: http, port: 8080"),
    )
)

HTTPS_REDIRECT = """
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
    tls: {certificateRefs: [{name: tls-validity-checks-certificate}]}
  - name: https-8443
    port: 8443
    protocol: HTTPS
    allowedRoutes: {namespaces: {from: Same}}
    tls: {certificateRefs: [{name: tls-validity-checks-certificate}]}
""" + "".join(
    f"""---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: http-route-for-listener-on-port-{port}, namespace: gateway-conformance-infra}}
spec:
  parentRefs: [{{name: same-namespace-with-https-listener, sectionName: {section}}}]
  hostnames: [example.org]
  rules:{HTTPS_REDIRECT_RULES}
"""
    for port, section in ((443, "https"), (8443, "https-8443"))
)

# listener port, path, expected Location (scheme, host, port, path)
HTTPS_REDIRECT_CASES = [
    (443, "/scheme-nil-and-port-nil", ("https", "example.org", 443, "/scheme-nil-and-port-nil")),
    (443, "/scheme-nil-and-port-443", ("https", "example.org", 443, "/scheme-nil-and-port-443")),
    (443, "/scheme-nil-and-port-8443",
     ("https", "example.org", 8443, "/scheme-nil-and-port-8443")),
    (443, "/scheme-http-and-port-nil", ("http", "example.org", 80, "/scheme-http-and-port-nil")),
    (443, "/scheme-http-and-port-80", ("http", "example.org", 80, "/scheme-http-and-port-80")),
    (443, "/scheme-http-and-port-8080",
     ("http", "example.org", 8080, "/scheme-http-and-port-8080")),
    # Listener 8443: with neither scheme nor port the listener's port is kept
    # ("If redirect scheme is empty, the redirect port MUST be the Gateway
    # Listener port"); a scheme given picks that scheme's well-known port.
    (8443, "/scheme-nil-and-port-nil",
     ("https", "example.org", 8443, "/scheme-nil-and-port-nil")),
    (8443, "/scheme-nil-and-port-443", ("https", "example.org", 443, "/scheme-nil-and-port-443")),
    (8443, "/scheme-http-and-port-nil", ("http", "example.org", 80, "/scheme-http-and-port-nil")),
    (8443, "/scheme-http-and-port-8080",
     ("http", "example.org", 8080, "/scheme-http-and-port-8080")),
]


async def test_redirect_port_and_scheme_https(tmp_path: Path) -> None:
    """HTTPRouteRedirectPortAndScheme (HTTPS listeners 443, 8443): scheme and port derived."""
    secret, ca = tls_secret(tmp_path, INFRA, "tls-validity-checks-certificate", ["example.org"])
    async with running(tmp_path, HTTPS_REDIRECT + secret) as s:
        for port in (443, 8443):
            name = f"http-route-for-listener-on-port-{port}"
            assert s.parent_conditions("HTTPRoute", INFRA, name)["Accepted"] == (
                "True", "Accepted"
            )
        address = s.address("same-namespace-with-https-listener")
        got = []
        for port, path, _ in HTTPS_REDIRECT_CASES:
            reply = await https_request(address, port, ca, "example.org", "example.org", path)
            assert reply.status == 302, (port, path)
            got.append((port, path, location_parts(reply.header("location"))))
        assert got == HTTPS_REDIRECT_CASES


HTTPS_LISTENERS = """
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
    tls: {certificateRefs: [{group: "", kind: Secret, name: tls-validity-checks-certificate}]}
  - name: https-with-hostname
    port: 443
    protocol: HTTPS
    hostname: second-example.org
    allowedRoutes: {namespaces: {from: Same}}
    tls: {certificateRefs: [{group: "", kind: Secret, name: tls-validity-checks-certificate}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: httproute-https-test, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace-with-https-listener}]
  hostnames: [example.org]
  rules: [{backendRefs: [{name: infra-backend-v1, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: httproute-https-test-no-hostname, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace-with-https-listener, sectionName: https-with-hostname}]
  rules: [{backendRefs: [{name: infra-backend-v1, port: 8080}]}]
"""

CERT_NAMES = ["example.org", "second-example.org", "unknown-example.org"]


@pytest.mark.parametrize(
    ("sni", "host", "expected"),
    [
        pytest.param("example.org", "example.org", "infra-backend-v1-pod", id="route-hostname"),
        pytest.param("second-example.org", "second-example.org", "infra-backend-v1-pod",
                     id="listener-hostname"),
        pytest.param("unknown-example.org", "unknown-example.org", "status 404",
                     id="unknown-host"),
        pytest.param(
            "unknown-example.org", "second-example.org", "status 404", id="sni-on-catch-all",
            marks=pytest.mark.xfail(strict=True, reason=(
                "Sluice routes HTTPS by Host alone: a connection whose SNI selected the "
                "hostname-less listener still reaches routes of the https-with-hostname "
                "listener when Host names it (routers carry Host(), not the listener's SNI)"
            )),
        ),
    ],
)
async def test_https_listener_variants(tmp_path: Path, sni: str, host: str, expected: str) -> None:
    """HTTPRouteHTTPSListener: each listener serves only its routes; unknown hosts get 404."""
    secret, ca = tls_secret(tmp_path, INFRA, "tls-validity-checks-certificate", CERT_NAMES)
    async with running(tmp_path, HTTPS_LISTENERS + secret) as s:
        gateway = "same-namespace-with-https-listener"
        for route in ("httproute-https-test", "httproute-https-test-no-hostname"):
            assert s.parent_conditions("HTTPRoute", INFRA, route) == {
                "Accepted": ("True", "Accepted"), "ResolvedRefs": ("True", "ResolvedRefs")
            }
        assert [s.listener(gateway, n)["attachedRoutes"]
                for n in ("https", "https-with-hostname")] == [1, 1]
        reply = await https_request(s.address(gateway), 443, ca, sni, host)
        got = reply.json()["pod"] if reply.status == 200 else f"status {reply.status}"
        assert got == expected


TLS_REF = """
    tls:
      certificateRefs:
      - {group: "", kind: Secret, name: tls-validity-checks-certificate,
         namespace: gateway-conformance-infra}"""
HTTPS_LISTENER = """
  - name: https
    port: 443
    protocol: HTTPS
    hostname: secure.test.com
    allowedRoutes: {namespaces: {from: All}}""" + TLS_REF
HTTP_LISTENER = """
  - name: http
    port: 80
    protocol: HTTP{hostname}
    allowedRoutes: {{namespaces: {{from: All}}}}"""


def modify_listeners(add_listeners: str, remove_listeners: str) -> str:
    return "".join(
        f"""---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: Gateway
metadata: {{name: {gateway}, namespace: gateway-conformance-infra}}
spec:
  gatewayClassName: "{{GATEWAY_CLASS_NAME}}"
  listeners:{listeners}
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: HTTPRoute
metadata: {{name: {route}, namespace: gateway-conformance-infra}}
spec:
  parentRefs: [{{kind: Gateway, name: {gateway}, namespace: gateway-conformance-infra}}]
  rules: [{{backendRefs: [{{name: foo-svc, port: 8080}}]}}]
"""
        for gateway, route, listeners in (
            ("gateway-add-listener", "http-route-1", add_listeners),
            ("gateway-remove-listener", "http-route-2", remove_listeners),
        )
    )


BEFORE = modify_listeners(HTTPS_LISTENER, HTTPS_LISTENER + HTTP_LISTENER.format(hostname=""))
AFTER = modify_listeners(
    HTTPS_LISTENER + HTTP_LISTENER.format(hostname="\n    hostname: data.test.com"),
    HTTP_LISTENER.format(hostname=""),
)


async def refused(address: str, port: int) -> bool:
    import asyncio

    try:
        _, writer = await asyncio.open_connection(address, port)
    except ConnectionRefusedError:
        return True
    writer.close()
    return False


async def test_modify_listeners(tmp_path: Path) -> None:
    """GatewayModifyListeners: an added listener attaches routes and serves; a removed one stops."""
    secret, ca = tls_secret(tmp_path, INFRA, "tls-validity-checks-certificate",
                            ["secure.test.com"])
    async with running(tmp_path, BEFORE + secret) as s:
        added, removed = s.address("gateway-add-listener"), s.address("gateway-remove-listener")
        assert await refused(added, 80)
        reply = await https_request(removed, 443, ca, "secure.test.com", "secure.test.com")
        assert reply.status == 500  # foo-svc does not exist: the route answers 500 (spec §2.8)
        generations = {g: s.status("Gateway", INFRA, g)["conditions"][0]["observedGeneration"]
                       for g in ("gateway-add-listener", "gateway-remove-listener")}
        await s.apply(AFTER + secret)
        expected_listeners = {
            "gateway-add-listener": ["https", "http"],
            "gateway-remove-listener": ["http"],
        }
        for gateway, names in expected_listeners.items():
            listeners = s.status("Gateway", INFRA, gateway)["listeners"]
            assert [item["name"] for item in listeners] == names
            for item in listeners:
                conditions = {c["type"]: c["status"] for c in item["conditions"]}
                assert (conditions["Accepted"], conditions["ResolvedRefs"]) == ("True", "True")
                assert item["attachedRoutes"] == 1
                assert item["supportedKinds"] == [
                    {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"}
                ]
            status = s.status("Gateway", INFRA, gateway)
            assert status["conditions"][0]["observedGeneration"] == generations[gateway] + 1
        reply = await s.request("gateway-add-listener", "/", host="data.test.com")
        assert reply.status == 500
        assert await refused(removed, 443)
