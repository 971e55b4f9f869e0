"""Conformance port, GATEWAY-TCP, GATEWAY-UDP and GATEWAY-TLS basics.

Upstream tests ``tcproute-simple-same-namespace``, ``tcproute-parentref-attach-all``,
``tcproute-invalid-reference-grant``, ``udproute-simple``,
``udproute-not-allowed-by-listeners``, ``tlsroute-simple-same-namespace``
and ``tlsroute-invalid-no-matching-listener``. As upstream, a TCPRoute is
checked by speaking HTTP through it to the echo backend; UDP uses a datagram
echo started by the test; TLS passthrough uses a TLS echo that terminates
with its own certificate, so the client sees the backend's certificate.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from pathlib import Path

import pytest
import yaml

from tests.backends import read_reply
from tests.certs import make_ca
from tests.providers.gatewayapi.conformance.base import (
    INFRA,
    running,
    service_manifests,
    tls_secret,
)


async def http_over(address: str, port: int, context: ssl.SSLContext | None = None,
                    sni: str | None = None) -> dict[str, str]:
    reader, writer = await asyncio.open_connection(address, port, ssl=context,
                                                   server_hostname=sni)
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n")
        reply = await read_reply(reader)
    finally:
        writer.close()
    assert reply.status == 200
    answer: dict[str, str] = reply.json()
    return answer


TCP = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: my-tcp-gateway, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: "{GATEWAY_CLASS_NAME}"
  listeners:
  - {name: foo, protocol: TCP, port: 8081, allowedRoutes: {kinds: [{kind: TCPRoute}]}}
  - {name: bar, protocol: TCP, port: 8082, allowedRoutes: {kinds: [{kind: TCPRoute}]}}
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: tcp-app-1, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: my-tcp-gateway, sectionName: foo}]
  rules: [{backendRefs: [{name: infra-backend-v1, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TCPRoute
metadata: {name: tcp-app-all, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: my-tcp-gateway}]
  rules: [{backendRefs: [{name: infra-backend-v2, port: 8080}]}]
"""


async def test_tcproute_simple_and_attach_all(tmp_path: Path) -> None:
    """TCPRouteSimpleSameNamespace, TCPRouteParentRefAttachAll: routes attach and relay bytes."""
    async with running(tmp_path, TCP) as s:
        for name in ("tcp-app-1", "tcp-app-all"):
            assert s.parent_conditions("TCPRoute", INFRA, name) == {
                "Accepted": ("True", "Accepted"), "ResolvedRefs": ("True", "ResolvedRefs")
            }
        assert [s.listener("my-tcp-gateway", n)["attachedRoutes"] for n in ("foo", "bar")] == [
            2, 1
        ]
        address = s.address("my-tcp-gateway")
        # foo carries two routes; the older (then first by name) gets the traffic (§2.12).
        assert (await http_over(address, 8081))["pod"] == "infra-backend-v1-pod"
        assert (await http_over(address, 8082))["pod"] == "infra-backend-v2-pod"


TCP_INVALID_GRANT = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: my-tcp-gateway, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: "{GATEWAY_CLASS_NAME}"
  listeners:
  - {name: foo, protocol: TCP, port: 8081}
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: tcp-invalid-grant, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: my-tcp-gateway}]
  rules:
  - backendRefs: [{name: web-backend, namespace: gateway-conformance-web-backend, port: 8080}]
"""


async def test_tcproute_invalid_reference_grant(tmp_path: Path) -> None:
    """TCPRouteInvalidReferenceGrant: a cross-namespace backend without grant is RefNotPermitted."""
    async with running(tmp_path, TCP_INVALID_GRANT) as s:
        assert s.parent_conditions("TCPRoute", INFRA, "tcp-invalid-grant") == {
            "Accepted": ("True", "Accepted"), "ResolvedRefs": ("False", "RefNotPermitted")
        }


class _UDPEcho(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(b"echo:" + data, addr)  # type: ignore[attr-defined]


UDP = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: udp-gateway, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: "{GATEWAY_CLASS_NAME}"
  listeners:
  - {name: udp, protocol: UDP, port: 5300}
  - {name: tcp, protocol: TCP, port: 5301}
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: UDPRoute
metadata: {name: udp-echo, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: udp-gateway, sectionName: udp}]
  rules: [{backendRefs: [{name: l4-backend, port: 53}]}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: UDPRoute
metadata: {name: udp-on-tcp-listener, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: udp-gateway, sectionName: tcp}]
  rules: [{backendRefs: [{name: l4-backend, port: 53}]}]
"""


async def test_udproute(tmp_path: Path) -> None:
    """UDPRoute, UDPRouteNotAllowedByListeners: datagrams relay; a TCP listener refuses."""
    loop = asyncio.get_running_loop()
    backend, _ = await loop.create_datagram_endpoint(_UDPEcho, local_addr=("127.0.0.1", 0))
    service = yaml.safe_dump_all(service_manifests(
        INFRA, "l4-backend", [("dns", 53, "")], backend.get_extra_info("sockname")[1],
        protocol="UDP",
    ))
    try:
        async with running(tmp_path, UDP + "---\n" + service) as s:
            assert s.parent_conditions("UDPRoute", INFRA, "udp-echo")["Accepted"] == (
                "True", "Accepted"
            )
            assert s.parent_conditions("UDPRoute", INFRA, "udp-on-tcp-listener")["Accepted"] == (
                "False", "NotAllowedByListeners"
            )
            answer: asyncio.Future[bytes] = loop.create_future()

            class Client(asyncio.DatagramProtocol):
                def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                    if not answer.done():
                        answer.set_result(data)

            client, _ = await loop.create_datagram_endpoint(
                Client, remote_addr=(s.address("udp-gateway"), 5300)
            )
            client.sendto(b"q")
            try:
                assert await asyncio.wait_for(answer, 5) == b"echo:q"
            finally:
                client.close()
    finally:
        backend.close()


TLS = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gateway-tlsroute, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: "{GATEWAY_CLASS_NAME}"
  listeners:
  - name: https
    port: 443
    protocol: TLS
    hostname: "*.example.com"
    tls: {mode: Passthrough}
    allowedRoutes: {namespaces: {from: Same}, kinds: [{kind: TLSRoute}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: gateway-conformance-infra-test, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: gateway-tlsroute}]
  hostnames: [abc.example.com]
  rules: [{backendRefs: [{name: tls-backend, port: 443}]}]
"""


async def test_tlsroute_simple_same_namespace(tmp_path: Path) -> None:
    """TLSRouteSimpleSameNamespace: SNI abc.example.com is passed through to the TLS backend."""
    ca = make_ca(tmp_path)
    cert, key = ca.issue(tmp_path, ["abc.example.com"])
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        body = json.dumps({"pod": "tls-backend-pod", "namespace": INFRA}).encode()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=server_context)
    service = yaml.safe_dump_all(service_manifests(
        INFRA, "tls-backend", [("", 443, "")], server.sockets[0].getsockname()[1],
    ))
    try:
        async with running(tmp_path, TLS + "---\n" + service) as s:
            assert s.parent_conditions("TLSRoute", INFRA, "gateway-conformance-infra-test") == {
                "Accepted": ("True", "Accepted"), "ResolvedRefs": ("True", "ResolvedRefs")
            }
            client = ssl.create_default_context(cafile=str(ca.cert_path))
            got = await http_over(s.address("gateway-tlsroute"), 443, client, "abc.example.com")
            assert got["pod"] == "tls-backend-pod"
    finally:
        server.close()
        await server.wait_closed()


TLS_NO_MATCHING_LISTENER = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gateway-http-only, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: "{GATEWAY_CLASS_NAME}"
  listeners:
  - name: http
    port: 80
    protocol: HTTP
    allowedRoutes: {namespaces: {from: Same}, kinds: [{kind: TLSRoute}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gateway-tls-httproute-only, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: "{GATEWAY_CLASS_NAME}"
  listeners:
  - name: http
    port: 80
    protocol: HTTP
    allowedRoutes: {namespaces: {from: Same}, kinds: [{kind: HTTPRoute}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gateway-https-only, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: "{GATEWAY_CLASS_NAME}"
  listeners:
  - name: https
    port: 443
    protocol: HTTPS
    allowedRoutes: {namespaces: {from: Same}, kinds: [{kind: TLSRoute}]}
    tls:
      mode: Terminate
      certificateRefs:
      - {name: tls-validity-checks-certificate, namespace: gateway-conformance-infra}
""" + "".join(
    f"""---
apiVersion: gateway.networking.k8s.io/v1alpha3
kind: TLSRoute
metadata: {{name: {name}, namespace: gateway-conformance-infra}}
spec:
  parentRefs: [{parent}]
  hostnames: [tls.example.com]
  rules: [{{backendRefs: [{{name: tls-backend, port: 443}}]}}]
"""
    for name, parent in (
        ("tlsroute-no-matching-listener", "{name: gateway-http-only}"),
        ("tlsroute-not-allowed-kind", "{name: gateway-tls-httproute-only}"),
        ("tlsroute-wrong-protocol", "{name: gateway-https-only}"),
        ("tlsroute-wrong-section-name",
         "{name: gateway-http-only, sectionName: nonexistent-listener}"),
    )
)

@pytest.mark.parametrize(
    ("route", "gateway", "reason"),
    [
        pytest.param("tlsroute-no-matching-listener", "gateway-http-only", "NoMatchingParent",
                     id="http-listener"),
        pytest.param("tlsroute-not-allowed-kind", "gateway-tls-httproute-only",
                     "NotAllowedByListeners", id="kind-not-allowed"),
        pytest.param("tlsroute-wrong-protocol", "gateway-https-only", "NoMatchingParent",
                     id="https-listener"),
        pytest.param("tlsroute-wrong-section-name", "gateway-http-only", "NoMatchingParent",
                     id="wrong-section-name"),
    ],
)
async def test_tlsroute_invalid_no_matching_listener(
    tmp_path: Path, route: str, gateway: str, reason: str
) -> None:
    """TLSRouteInvalidNoMatchingListener: a TLSRoute with no TLS listener to ride is refused."""
    secret, _ = tls_secret(tmp_path, INFRA, "tls-validity-checks-certificate", ["tls.example.com"])
    async with running(tmp_path, TLS_NO_MATCHING_LISTENER + secret) as s:
        assert s.parent_conditions("TLSRoute", INFRA, route)["Accepted"] == ("False", reason)
        assert s.listener(gateway, next(iter(
            item["name"] for item in s.status("Gateway", INFRA, gateway)["listeners"]
        )))["attachedRoutes"] == 0
