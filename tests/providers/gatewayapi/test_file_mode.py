"""Gateway API manifests served from files: a Gateway, an HTTPRoute and a Service answer."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.api.state import GatewayState
from tests.backends import RecordingBackend, closed_port, get, read_reply
from tests.harness import start_gateway
from tests.providers.gatewayapi.manifest_support import STATIC, conf_dir, gateway, service


def manifests(port: int, backend_port: int, *, path: str = "/app") -> str:
    return gateway(f"{{name: http, protocol: HTTP, port: {port}}}") + f"""---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: app, namespace: default}}
spec:
  parentRefs: [{{name: edge}}]
  hostnames: [app.example.test]
  rules:
    - matches: [{{path: {{type: PathPrefix, value: {path}}}}}]
      backendRefs: [{{name: app, port: 80}}]
""" + service("app", 80, backend_port, port_name="http")


async def ask(port: int, host: str, path: str) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(get(host, path))
        return (await read_reply(reader)).status
    finally:
        writer.close()


async def test_gateway_httproute_and_service_from_files_serve(tmp_path: Path) -> None:
    """The Gateway's listener opens; the route's host and path reach the Service's endpoint."""
    backend = await RecordingBackend().start()
    port = await closed_port()
    conf_dir(tmp_path, manifests(port, backend.port))
    (tmp_path / "dynamic.yml").write_text("")
    gw = await start_gateway(tmp_path, "", static=STATIC)
    try:
        await gw.gateway.reopens[-1] if gw.gateway.reopens else None
        assert await ask(port, "app.example.test", "/app/x") == 200
        assert await ask(port, "app.example.test", "/other") == 404
        assert await ask(port, "other.test", "/app") == 404
        assert backend.requests[0].target == "/app/x"
        provider = gw.gateway.providers[0]
        status = provider.manifests.status  # type: ignore[attr-defined]
        route = status[("HTTPRoute", "default", "app")]["parents"][0]["conditions"]
        assert {(c["type"], c["status"]) for c in route} == {
            ("Accepted", "True"), ("ResolvedRefs", "True")
        }
        gateway = status[("Gateway", "default", "edge")]
        assert gateway["listeners"][0]["attachedRoutes"] == 1
        listed = GatewayState(gw.gateway).gateway_api()
        assert [
            (i["kind"], i["metadata"].get("namespace", ""), i["metadata"]["name"]) for i in listed
        ] == [
            ("Gateway", "default", "edge"),
            ("GatewayClass", "", "sluice"),
            ("HTTPRoute", "default", "app"),
        ]
    finally:
        await gw.stop()
        await backend.close()


def l4_manifests(tcp_port: int, udp_port: int, tcp_backend: int, udp_backend: int) -> str:
    listeners = (
        f"{{name: db, protocol: TCP, port: {tcp_port}}}",
        f"{{name: dns, protocol: UDP, port: {udp_port}}}",
    )
    return gateway(*listeners, name="l4") + """---
apiVersion: gateway.networking.k8s.io/v1
kind: TCPRoute
metadata: {name: db, namespace: default}
spec:
  parentRefs: [{name: l4, sectionName: db}]
  rules: [{backendRefs: [{name: db, port: 9000}]}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: UDPRoute
metadata: {name: dns, namespace: default}
spec:
  parentRefs: [{name: l4, sectionName: dns}]
  rules: [{backendRefs: [{name: dns, port: 9000}]}]
""" + service("db", 9000, tcp_backend) + service("dns", 9000, udp_backend, protocol="UDP")


class _UDPEcho(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(b"echo:" + data, addr)  # type: ignore[attr-defined]


async def test_tcproute_and_udproute_from_files_relay(tmp_path: Path) -> None:
    """A TCP listener with a TCPRoute and a UDP listener with a UDPRoute relay to their Services."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.read(100))
        await writer.drain()
        writer.close()

    loop = asyncio.get_running_loop()
    tcp_backend = await asyncio.start_server(echo, "127.0.0.1", 0)
    udp_backend, _ = await loop.create_datagram_endpoint(_UDPEcho, local_addr=("127.0.0.1", 0))
    tcp_port, udp_port = await closed_port(), await closed_port()
    conf_dir(
        tmp_path,
        l4_manifests(
            tcp_port,
            udp_port,
            tcp_backend.sockets[0].getsockname()[1],
            udp_backend.get_extra_info("sockname")[1],
        ),
    )
    gw = await start_gateway(tmp_path, "", static=STATIC)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", tcp_port)
        writer.write(b"ping")
        assert await reader.read(100) == b"ping"
        writer.close()
        answer: asyncio.Future[bytes] = loop.create_future()

        class Client(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                answer.set_result(data)

        client, _ = await loop.create_datagram_endpoint(
            Client, remote_addr=("127.0.0.1", udp_port)
        )
        client.sendto(b"q")
        assert await asyncio.wait_for(answer, 5) == b"echo:q"
        client.close()
        status = gw.gateway.providers[0].manifests.status  # type: ignore[attr-defined]
        listeners = status[("Gateway", "default", "l4")]["listeners"]
        assert [(item["name"], item["attachedRoutes"]) for item in listeners] == [
            ("db", 1), ("dns", 1)
        ]
        overview = GatewayState(gw.gateway).overview()
        assert (overview["tcp"]["routers"]["total"], overview["udp"]["routers"]["total"]) == (1, 1)
    finally:
        await gw.stop()
        tcp_backend.close()
        udp_backend.close()


FILTERED_ROUTE = """
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: filtered, namespace: default}
spec:
  parentRefs: [{name: edge}]
  hostnames: [filters.example.test]
  rules:
    - matches: [{path: {type: PathPrefix, value: /old}}]
      filters:
        - type: RequestRedirect
          requestRedirect:
            path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}
            statusCode: 301
    - matches: [{path: {type: PathPrefix, value: /api}}]
      filters:
        - type: RequestHeaderModifier
          requestHeaderModifier:
            set: [{name: X-Env, value: prod}]
            remove: [X-Debug]
        - type: URLRewrite
          urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}
      backendRefs: [{name: app, port: 80}]
    - matches: [{path: {type: Exact, value: /missing}}]
      backendRefs: [{name: nowhere, port: 80}]
"""


async def test_httproute_filters_and_unresolved_backends_from_files(tmp_path: Path) -> None:
    """Redirect, header set/remove and prefix rewrite apply; a missing Service answers 500."""
    backend = await RecordingBackend().start()
    port = await closed_port()
    conf_dir(tmp_path, manifests(port, backend.port) + FILTERED_ROUTE)
    gw = await start_gateway(tmp_path, "", static=STATIC)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(get("filters.example.test", "/old/page?q=1"))
        reply = await read_reply(reader)
        writer.close()
        assert (reply.status, reply.header("location")) == (
            301, "http://filters.example.test:" + str(port) + "/new/page?q=1"
        )
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(get("filters.example.test", "/api/users", "X-Debug: 1\r\nX-Env: dev\r\n"))
        assert (await read_reply(reader)).status == 200
        writer.close()
        seen = backend.requests[-1]
        assert (seen.target, seen.header("x-env"), seen.header("x-debug")) == (
            "/v2/users", "prod", None
        )
        assert await ask(port, "filters.example.test", "/missing") == 500
        status = gw.gateway.providers[0].manifests.status  # type: ignore[attr-defined]
        conditions = status[("HTTPRoute", "default", "filtered")]["parents"][0]["conditions"]
        resolved = next(c for c in conditions if c["type"] == "ResolvedRefs")
        assert (resolved["status"], resolved["reason"]) == ("False", "BackendNotFound")
    finally:
        await gw.stop()
        await backend.close()


def test_transition_times_are_kept_while_a_condition_holds() -> None:
    """lastTransitionTime stays while a condition's status is unchanged and moves when it flips."""
    from providers.gatewayapi.files import stamp_transitions

    def gateway(accepted: str) -> dict[tuple[str, str, str], dict[str, object]]:
        return {
            ("Gateway", "ns", "gw"): {
                "conditions": [{"type": "Accepted", "status": accepted}],
                "listeners": [{"name": "http", "conditions": [{"type": "Programmed",
                                                                "status": "True"}]}],
            }
        }

    first = stamp_transitions(gateway("True"), {}, "t1")  # type: ignore[arg-type]
    second = stamp_transitions(gateway("True"), first, "t2")  # type: ignore[arg-type]
    third = stamp_transitions(gateway("False"), second, "t3")  # type: ignore[arg-type]
    times = [
        (s[("Gateway", "ns", "gw")]["conditions"][0]["lastTransitionTime"],  # type: ignore[index]
         s[("Gateway", "ns", "gw")]["listeners"][0]["conditions"][0]["lastTransitionTime"])  # type: ignore[index]
        for s in (first, second, third)
    ]
    assert times == [("t1", "t1"), ("t1", "t1"), ("t3", "t1")]


BACKEND_FILTER_ROUTE = """
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: split, namespace: default}
spec:
  parentRefs: [{name: edge}]
  hostnames: [split.example.test]
  rules:
    - backendRefs:
        - name: app
          port: 80
          filters:
            - type: RequestHeaderModifier
              requestHeaderModifier: {set: [{name: X-Backend, value: one}]}
        - {name: app, port: 80}
"""


async def test_backendref_filters_apply_to_their_share_only(tmp_path: Path) -> None:
    """With two weighted backendRefs, one's filter applies to the requests it takes only."""
    backend = await RecordingBackend().start()
    port = await closed_port()
    conf_dir(tmp_path, manifests(port, backend.port) + BACKEND_FILTER_ROUTE)
    gw = await start_gateway(tmp_path, "", static=STATIC)
    try:
        for _ in range(6):
            assert await ask(port, "split.example.test", "/") == 200
        seen = sorted(str(r.header("x-backend")) for r in backend.requests)
        assert seen == ["None"] * 3 + ["one"] * 3
    finally:
        await gw.stop()
        await backend.close()


TCP_MIDDLEWARES = """
---
apiVersion: sluice.dev/v1alpha1
kind: Middleware
metadata: {name: local-only, namespace: default}
spec:
  ipAllowList: {sourceRange: [127.0.0.1/32]}
---
apiVersion: sluice.dev/v1alpha1
kind: Middleware
metadata: {name: few, namespace: default}
spec:
  inFlightConn: {amount: 10}
"""


async def test_tcproute_middlewares_through_the_annotation(tmp_path: Path) -> None:
    """sluice.dev/middlewares on a TCPRoute applies TCP middlewares; a missing one fails closed."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.read(100))
        await writer.drain()
        writer.close()

    tcp_backend = await asyncio.start_server(echo, "127.0.0.1", 0)
    tcp_port, udp_port = await closed_port(), await closed_port()
    text = l4_manifests(tcp_port, udp_port, tcp_backend.sockets[0].getsockname()[1], 9).replace(
        "metadata: {name: db, namespace: default}",
        "metadata:\n  name: db\n  namespace: default\n"
        "  annotations: {sluice.dev/middlewares: 'local-only, default/few'}",
    )
    conf = conf_dir(tmp_path, text + TCP_MIDDLEWARES, "l4.yaml")
    gw = await start_gateway(tmp_path, "", static=STATIC)

    async def talk(source: str) -> bytes:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", tcp_port, local_addr=(source, 0)
        )
        writer.write(b"ping")
        try:
            return await reader.read(100)
        finally:
            writer.close()

    try:
        assert await talk("127.0.0.1") == b"ping"
        assert await talk("127.0.0.2") == b""
        # The Middleware goes away: the route is not served without it (fail closed).
        (conf / "l4.yaml").write_text(
            (text + TCP_MIDDLEWARES).replace("name: local-only", "name: renamed")
        )
        await gw.accepted.get()
        status = gw.gateway.providers[0].manifests.status  # type: ignore[attr-defined]
        conditions = status[("TCPRoute", "default", "db")]["parents"][0]["conditions"]
        accepted = next(c for c in conditions if c["type"] == "Accepted")
        assert (accepted["status"], accepted["reason"]) == ("False", "UnsupportedValue")
        assert b"ping" not in await talk("127.0.0.1")
    finally:
        await gw.stop()
        tcp_backend.close()
