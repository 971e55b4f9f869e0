"""Conformance port, more GATEWAY-TCP/-UDP/-TLS: weighted backends, TLSRoute hostname intersection.

Upstream ``tcproute-weighted-routing`` (70/30 over two TCP echo Services;
here each backend writes its name and closes), the same for UDPRoute (no
upstream test: spec §2.12/§2.8 "share = weight / sum of weights", weight 0
gets nothing), and ``tlsroute-hostname-intersection`` (four passthrough
Gateways with exact, specific-wildcard, broad-wildcard and no listener
hostname; SNI picks the route; an SNI no route takes gets no backend).
"""

from __future__ import annotations

import asyncio
import ssl
from functools import partial
from pathlib import Path

import pytest

from tests.backends import read_reply
from tests.certs import make_ca
from tests.providers.gatewayapi.conformance.base import (
    INFRA,
    running,
    services_yaml,
    tls_echo,
)

TCP_WEIGHTED = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: tcp-weighted-gateway, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: "{GATEWAY_CLASS_NAME}"
  listeners:
  - {name: tcp, protocol: TCP, port: 9300, allowedRoutes: {kinds: [{kind: TCPRoute}]}}
  - {name: udp, protocol: UDP, port: 9301, allowedRoutes: {kinds: [{kind: UDPRoute}]}}
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: tcp-weighted-route, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: tcp-weighted-gateway, sectionName: tcp}]
  rules:
  - backendRefs:
    - {name: tcp-backend-v1, port: 3000, weight: 70}
    - {name: tcp-backend-v2, port: 3000, weight: 30}
    - {name: tcp-backend-v3, port: 3000, weight: 0}
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: UDPRoute
metadata: {name: udp-weighted-route, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: tcp-weighted-gateway, sectionName: udp}]
  rules:
  - backendRefs:
    - {name: udp-backend-v1, port: 3000, weight: 70}
    - {name: udp-backend-v2, port: 3000, weight: 30}
    - {name: udp-backend-v3, port: 3000, weight: 0}
"""
NAMES = ("v1", "v2", "v3")
CONNECTIONS = 100


class _Named(asyncio.DatagramProtocol):
    def __init__(self, name: bytes) -> None:
        self.name = name

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(self.name, addr)  # type: ignore[attr-defined]


async def udp_ask(address: str, port: int) -> bytes:
    """One datagram from a fresh client socket (a new UDP session), and the answer."""
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[bytes] = loop.create_future()

    class Client(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            if not answer.done():
                answer.set_result(data)

    client, _ = await loop.create_datagram_endpoint(Client, remote_addr=(address, port))
    try:
        client.sendto(b"who")
        return await asyncio.wait_for(answer, 5)
    finally:
        client.close()


async def tcp_ask(address: str, port: int) -> bytes:
    reader, writer = await asyncio.open_connection(address, port)
    try:
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


async def test_tcp_and_udp_weighted_routing(tmp_path: Path) -> None:
    """TCPRouteWeightedRouting and its UDPRoute twin: 70/30/0 within 10 of 100 sessions."""
    loop = asyncio.get_running_loop()

    def tcp_server(name: bytes) -> object:
        async def answer(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(name)
            await writer.drain()
            writer.close()
        return answer

    tcp = {n: await asyncio.start_server(tcp_server(n.encode()), "127.0.0.1", 0)  # type: ignore[arg-type]
           for n in NAMES}
    udp = {n: (await loop.create_datagram_endpoint(partial(_Named, n.encode()),
                                                   local_addr=("127.0.0.1", 0)))[0]
           for n in NAMES}
    services = services_yaml(
        [(INFRA, f"tcp-backend-{n}", 3000, tcp[n].sockets[0].getsockname()[1]) for n in NAMES]
    ) + services_yaml(
        [(INFRA, f"udp-backend-{n}", 3000, udp[n].get_extra_info("sockname")[1]) for n in NAMES],
        protocol="UDP",
    )
    try:
        async with running(tmp_path, TCP_WEIGHTED + services) as s:
            for kind, route in (("TCPRoute", "tcp-weighted-route"),
                                ("UDPRoute", "udp-weighted-route")):
                assert s.parent_conditions(kind, INFRA, route) == {
                    "Accepted": ("True", "Accepted"), "ResolvedRefs": ("True", "ResolvedRefs")
                }
            address = s.address("tcp-weighted-gateway")
            for ask, port in ((tcp_ask, 9300), (udp_ask, 9301)):
                answers = [await ask(address, port) for _ in range(CONNECTIONS)]
                counts = {n: answers.count(n.encode()) for n in NAMES}
                assert (abs(counts["v1"] - 70) <= 10, abs(counts["v2"] - 30) <= 10,
                        counts["v3"], sum(counts.values())) == (True, True, 0, CONNECTIONS), (
                    port, counts)
    finally:
        for server in tcp.values():
            server.close()
        for transport in udp.values():
            transport.close()


def tls_gateway(name: str, hostname: str) -> str:
    host = f"\n    hostname: {hostname!r}" if hostname else ""
    return f"""---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: {name}, namespace: gateway-conformance-infra}}
spec:
  gatewayClassName: "{{GATEWAY_CLASS_NAME}}"
  listeners:
  - name: tls
    protocol: TLS
    port: 443{host}
    allowedRoutes: {{namespaces: {{from: Same}}, kinds: [{{kind: TLSRoute}}]}}
    tls: {{mode: Passthrough}}
"""


def tls_route(name: str, gateway: str, hostname: str, backend: str) -> str:
    return f"""---
apiVersion: gateway.networking.k8s.io/v1alpha3
kind: TLSRoute
metadata: {{name: {name}, namespace: gateway-conformance-infra}}
spec:
  parentRefs: [{{name: {gateway}, namespace: gateway-conformance-infra}}]
  hostnames: [{hostname!r}]
  rules: [{{backendRefs: [{{name: {backend}, port: 443}}]}}]
"""


TLS_GATEWAYS = {
    "gw-tlsroute-exact-hostname-x-1": "abc.example.com",
    "gw-tlsroute-more-specific-wc-hostname-x-2": "*.example.com",
    "gw-tlsroute-less-specific-wc-hostname-x-3": "*.com",
    "gw-tlsroute-empty-hostname-x-4": "",
}
# route, gateway, route hostname, backend Service
TLS_ROUTES = [
    ("tlsroute-more-specific-wc-hostname-x-1", "gw-tlsroute-exact-hostname-x-1",
     "*.example.com", "tls-backend"),
    ("tlsroute-exact-hostname-x-2", "gw-tlsroute-more-specific-wc-hostname-x-2",
     "abc.example.com", "tls-backend"),
    ("tlsroute-less-specific-wc-hostname-x-2", "gw-tlsroute-more-specific-wc-hostname-x-2",
     "*.com", "tls-backend-2"),
    ("tlsroute-exact-hostname-x-3", "gw-tlsroute-less-specific-wc-hostname-x-3",
     "abc.example.com", "tls-backend"),
    ("tlsroute-more-specific-wc-hostname-x-3", "gw-tlsroute-less-specific-wc-hostname-x-3",
     "*.example.com", "tls-backend-2"),
    ("tlsroute-exact-hostname-x-4", "gw-tlsroute-empty-hostname-x-4",
     "abc.example.com", "tls-backend"),
    ("tlsroute-less-specific-wc-hostname-x-4", "gw-tlsroute-empty-hostname-x-4",
     "*.com", "tls-backend-2"),
]
TLS_INTERSECTION = "".join(
    tls_gateway(name, hostname) for name, hostname in TLS_GATEWAYS.items()
) + "".join(tls_route(*route) for route in TLS_ROUTES)

# gateway, SNI, backend pod (None: the connection must not reach a backend)
TLS_CASES = [
    ("gw-tlsroute-exact-hostname-x-1", "abc.example.com", "tls-backend-pod"),
    ("gw-tlsroute-exact-hostname-x-1", "non.matching.com", None),
    ("gw-tlsroute-more-specific-wc-hostname-x-2", "abc.example.com", "tls-backend-pod"),
    ("gw-tlsroute-more-specific-wc-hostname-x-2", "other.example.com", "tls-backend-2-pod"),
    ("gw-tlsroute-more-specific-wc-hostname-x-2", "non.matching.com", None),
    ("gw-tlsroute-less-specific-wc-hostname-x-3", "abc.example.com", "tls-backend-pod"),
    ("gw-tlsroute-less-specific-wc-hostname-x-3", "other.example.com", "tls-backend-2-pod"),
    ("gw-tlsroute-less-specific-wc-hostname-x-3", "non.matching.com", None),
    ("gw-tlsroute-empty-hostname-x-4", "abc.example.com", "tls-backend-pod"),
    ("gw-tlsroute-empty-hostname-x-4", "other.example.com", "tls-backend-2-pod"),
    ("gw-tlsroute-empty-hostname-x-4", "non.matching.org", None),
]


async def tls_pod(address: str, sni: str, cafile: Path) -> str | None:
    """The backend pod behind a passthrough connection, or None when none is reached."""
    context = ssl.create_default_context(cafile=str(cafile))
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(address, 443, ssl=context, server_hostname=sni), 5
        )
    except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
        return None
    try:
        writer.write(f"GET / HTTP/1.1\r\nHost: {sni}\r\n\r\n".encode())
        return str((await read_reply(reader)).json()["pod"])
    except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
        return None
    finally:
        writer.close()


@pytest.mark.parametrize("gateway", TLS_GATEWAYS)
async def test_tlsroute_hostname_intersection(tmp_path: Path, gateway: str) -> None:
    """TLSRouteHostnameIntersection: SNI reaches the route whose hostname intersection has it."""
    ca = make_ca(tmp_path)
    names = ["abc.example.com", "other.example.com", "non.matching.com", "non.matching.org"]
    cert, key = ca.issue(tmp_path, names)
    backends = {pod: await tls_echo(cert, key, f"{pod}-pod")
                for pod in ("tls-backend", "tls-backend-2")}
    services = services_yaml(
        [(INFRA, pod, 443, server.sockets[0].getsockname()[1]) for pod, server in backends.items()]
    )
    try:
        async with running(tmp_path, TLS_INTERSECTION + services) as s:
            for name in (r[0] for r in TLS_ROUTES if r[1] == gateway):
                assert s.parent_conditions("TLSRoute", INFRA, name) == {
                    "Accepted": ("True", "Accepted"), "ResolvedRefs": ("True", "ResolvedRefs")
                }
            cases = [c for c in TLS_CASES if c[0] == gateway]
            got = [(g, sni, await tls_pod(s.address(g), sni, ca.cert_path)) for g, sni, _ in cases]
            assert got == cases
    finally:
        for server in backends.values():
            server.close()
