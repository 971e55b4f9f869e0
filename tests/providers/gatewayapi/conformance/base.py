"""Shared base of the Gateway API conformance port: base manifests, echo pods, a running gateway.

The upstream suite applies ``conformance/base/manifests.yaml`` (namespaces
with labels, the Gateways ``same-namespace``, ``all-namespaces`` and
``backend-namespaces``, echo Services) before each test's own manifests.
Here the same objects are written into the file provider's directory, with
two adaptations the brief asks for: each Gateway without addresses gets
``spec.addresses: [{type: IPAddress, value: 127.60.<b>.<n>}]`` (so Gateways
sharing port 80 do not collide, as they would not in a cluster), and each
Service's Deployment is replaced by an EndpointSlice pointing at an echo
backend (``echo.py``) started on 127.0.0.1 whose pod name is the Service
name plus ``-pod``. ``{GATEWAY_CLASS_NAME}`` becomes ``sluice``.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.backends import Reply, read_reply
from tests.harness import RunningGateway, start_gateway
from tests.providers.gatewayapi.conformance.echo import EchoBackend

INFRA = "gateway-conformance-infra"
APP = "gateway-conformance-app-backend"
WEB = "gateway-conformance-web-backend"
CLASS = "sluice"

STATIC = """\
providers:
  file:
    directory: conf
    watch: true
"""

BASE = """
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: sluice}
spec: {controllerName: sluice.dev/gateway-controller}
---
apiVersion: v1
kind: Namespace
metadata:
  name: gateway-conformance-infra
  labels: {gateway-conformance: infra}
---
apiVersion: v1
kind: Namespace
metadata:
  name: gateway-conformance-app-backend
  labels: {gateway-conformance: backend}
---
apiVersion: v1
kind: Namespace
metadata:
  name: gateway-conformance-web-backend
  labels: {gateway-conformance: backend}
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: Gateway
metadata: {name: same-namespace, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: "{GATEWAY_CLASS_NAME}"
  listeners:
  - name: http
    port: 80
    protocol: HTTP
    allowedRoutes: {namespaces: {from: Same}}
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: Gateway
metadata: {name: all-namespaces, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: "{GATEWAY_CLASS_NAME}"
  listeners:
  - name: http
    port: 80
    protocol: HTTP
    allowedRoutes: {namespaces: {from: All}}
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: Gateway
metadata: {name: backend-namespaces, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: "{GATEWAY_CLASS_NAME}"
  listeners:
  - name: http
    port: 80
    protocol: HTTP
    allowedRoutes:
      namespaces:
        from: Selector
        selector:
          matchLabels: {gateway-conformance: backend}
"""

# (namespace, name) -> ports (name, port, appProtocol); the suite's base Services.
SERVICES: dict[tuple[str, str], tuple[tuple[str, int, str], ...]] = {
    (INFRA, "infra-backend-v1"): (
        ("first-port", 8080, ""),
        ("second-port", 8081, "kubernetes.io/h2c"),
        ("third-port", 8082, "kubernetes.io/ws"),
    ),
    (INFRA, "infra-backend-v2"): (("", 8080, ""),),
    (INFRA, "infra-backend-v3"): (("", 8080, ""),),
    (APP, "app-backend-v1"): (("", 8080, ""),),
    (APP, "app-backend-v2"): (("", 8080, ""),),
    (WEB, "web-backend"): (("", 8080, ""),),
}

_blocks = itertools.count(1)


def service_manifests(
    namespace: str, name: str, ports: Iterable[tuple[str, int, str]], backend_port: int,
    *, protocol: str = "TCP",
) -> list[dict[str, Any]]:
    """A selector-less Service and the EndpointSlice that sends all its ports to one backend."""
    ports = list(ports)
    service_ports = []
    slice_ports = []
    for port_name, port, app_protocol in ports:
        entry: dict[str, Any] = {"protocol": protocol, "port": port, "targetPort": backend_port}
        sliced: dict[str, Any] = {"port": backend_port, "protocol": protocol}
        if port_name:
            entry["name"] = sliced["name"] = port_name
        if app_protocol:
            entry["appProtocol"] = sliced["appProtocol"] = app_protocol
        service_ports.append(entry)
        slice_ports.append(sliced)
    return [
        {
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"ports": service_ports},
        },
        {
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {
                "name": f"{name}-slice", "namespace": namespace,
                "labels": {"kubernetes.io/service-name": name},
            },
            "addressType": "IPv4",
            "ports": slice_ports,
            "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}],
        },
    ]


@dataclass
class Suite:
    """A running gateway serving the base and one test's manifests, with its echo pods."""

    gw: RunningGateway
    conf: Path
    block: int
    addresses: dict[tuple[str, str], str] = field(default_factory=dict)
    echoes: dict[tuple[str, str], EchoBackend] = field(default_factory=dict)
    extra_docs: list[dict[str, Any]] = field(default_factory=list)
    applied: int = 0

    def address(self, gateway: str, namespace: str = INFRA) -> str:
        return self.addresses[(namespace, gateway)]

    def status(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        provider = self.gw.gateway.providers[0]
        result: dict[str, Any] = provider.manifests.status[(kind, namespace, name)]  # type: ignore[attr-defined]
        return result

    def has_status(self, kind: str, namespace: str, name: str) -> bool:
        provider = self.gw.gateway.providers[0]
        return (kind, namespace, name) in provider.manifests.status  # type: ignore[attr-defined]

    def parent_conditions(
        self, kind: str, namespace: str, name: str, gateway: str | None = None
    ) -> dict[str, tuple[str, str]]:
        """{type: (status, reason)} of the route's parent for ``gateway`` (else its only one)."""
        parents = self.status(kind, namespace, name)["parents"]
        if gateway is not None:
            parents = [p for p in parents if p["parentRef"]["name"] == gateway]
        assert len(parents) == 1, parents
        return {c["type"]: (c["status"], c["reason"]) for c in parents[0]["conditions"]}

    def gateway_conditions(self, name: str, namespace: str = INFRA) -> dict[str, tuple[str, str]]:
        return {c["type"]: (c["status"], c["reason"])
                for c in self.status("Gateway", namespace, name)["conditions"]}

    def listener(self, gateway: str, listener: str, namespace: str = INFRA) -> dict[str, Any]:
        listeners = self.status("Gateway", namespace, gateway)["listeners"]
        found: dict[str, Any] = next(item for item in listeners if item["name"] == listener)
        return found

    def listener_conditions(
        self, gateway: str, listener: str, namespace: str = INFRA
    ) -> dict[str, tuple[str, str]]:
        return {c["type"]: (c["status"], c["reason"])
                for c in self.listener(gateway, listener, namespace)["conditions"]}

    async def request(
        self,
        gateway: str,
        path: str = "/",
        *,
        host: str | None = None,
        method: str = "GET",
        headers: Iterable[tuple[str, str]] = (),
        port: int = 80,
        namespace: str = INFRA,
    ) -> Reply:
        """One HTTP/1.1 request to the Gateway's address; Host defaults to that address."""
        address = self.address(gateway, namespace)
        reader, writer = await asyncio.open_connection(address, port)
        try:
            extra = "".join(f"{k}: {v}\r\n" for k, v in headers)
            writer.write(
                f"{method} {path} HTTP/1.1\r\nHost: {host or address}\r\n{extra}"
                "Connection: close\r\n\r\n".encode()
            )
            return await read_reply(reader, head_only=method == "HEAD")
        finally:
            writer.close()

    async def pod(self, gateway: str, path: str = "/", **kwargs: Any) -> str:
        """The echo pod that answered (``""`` when the gateway answered itself)."""
        reply = await self.request(gateway, path, **kwargs)
        if reply.status != 200 or not reply.body.startswith(b"{"):
            return f"status {reply.status}"
        return str(reply.json()["pod"])

    async def apply(self, manifests: str) -> None:
        """Replace the test's manifests (as ``kubectl apply`` of the new versions) and wait.

        The gateway announces only snapshots whose configuration changed, and
        an edit may change status alone (a GatewayClass description), so each
        version carries a marker Middleware whose header counts the applies.
        """
        self.applied += 1
        text = self._adapt(manifests)
        tmp = self.conf / ".next.tmp"
        tmp.write_text(text)
        os.replace(tmp, self.conf / "test.yaml")
        await asyncio.wait_for(self.gw.accepted.get(), 10)
        for task in list(self.gw.gateway.reopens):
            await task

    def _adapt(self, manifests: str, *, marker: bool = True) -> str:
        docs = [d for d in yaml.safe_load_all(manifests.replace("{GATEWAY_CLASS_NAME}", CLASS))
                if d is not None]
        for doc in docs:
            if doc.get("kind") != "Gateway":
                continue
            meta = doc["metadata"]
            key = (meta.get("namespace", "default"), meta["name"])
            spec = doc.setdefault("spec", {})
            if "addresses" in spec:
                continue
            if key not in self.addresses:
                self.addresses[key] = f"127.60.{self.block}.{len(self.addresses) + 1}"
            spec["addresses"] = [{"type": "IPAddress", "value": self.addresses[key]}]
        mark = {
            "apiVersion": "sluice.dev/v1alpha1", "kind": "Middleware",
            "metadata": {"name": "conformance-apply-marker", "namespace": "default"},
            "spec": {"headers": {"customResponseHeaders": {"X-Apply": str(self.applied)}}},
        }
        return yaml.safe_dump_all(docs + self.extra_docs + [mark] * marker, sort_keys=False)


Starter = Callable[..., Awaitable[Suite]]


@asynccontextmanager
async def running(
    tmp_path: Path,
    manifests: str,
    *,
    services: dict[tuple[str, str], tuple[tuple[str, int, str], ...]] | None = None,
) -> AsyncIterator[Suite]:
    """Echo pods for the base Services (plus ``services``), the gateway, and teardown."""
    wanted = dict(SERVICES)
    wanted.update(services or {})
    echoes = {key: await EchoBackend(key[0], f"{key[1]}-pod").start() for key in wanted}
    conf = tmp_path / "conf"
    conf.mkdir()
    block = next(_blocks) % 250 + 1
    probe = Suite(gw=None, conf=conf, block=block, echoes=echoes)  # type: ignore[arg-type]
    for (namespace, name), ports in wanted.items():
        probe.extra_docs.extend(
            service_manifests(namespace, name, ports, echoes[(namespace, name)].port)
        )
    (conf / "base.yaml").write_text(probe._adapt(BASE, marker=False))
    probe.extra_docs = []
    (conf / "test.yaml").write_text(probe._adapt(manifests))
    gw = await start_gateway(tmp_path, "", static=STATIC)
    probe.gw = gw
    try:
        for task in list(gw.gateway.reopens):
            await task
        yield probe
    finally:
        await gw.stop()
        for echo in echoes.values():
            await echo.close()


def tls_secret(tmp_path: Path, namespace: str, name: str, hosts: list[str]) -> tuple[str, Path]:
    """A ``kubernetes.io/tls`` Secret for ``hosts`` issued by a new CA, and that CA's file."""
    import base64

    from tests.certs import make_ca

    ca = make_ca(tmp_path)
    cert, key = ca.issue(tmp_path, hosts)
    data = {
        "tls.crt": base64.b64encode(cert.read_bytes()).decode(),
        "tls.key": base64.b64encode(key.read_bytes()).decode(),
    }
    text = yaml.safe_dump({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": name, "namespace": namespace}, "data": data,
    })
    return "---\n" + text, ca.cert_path


# --- helpers for the test_more_* modules (appended; the ones above are unchanged) ---


async def https_request(
    address: str, port: int, cafile: Path, sni: str, host: str, path: str = "/",
    *, method: str = "GET",
) -> Reply:
    """One HTTP/1.1 request over TLS (the suite's ``MakeTLSRequest``: SNI and Host apart)."""
    import ssl

    context = ssl.create_default_context(cafile=str(cafile))
    reader, writer = await asyncio.open_connection(
        address, port, ssl=context, server_hostname=sni
    )
    try:
        writer.write(
            f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
        )
        return await read_reply(reader)
    finally:
        writer.close()


async def mirror_copies_settled() -> None:
    """Wait until every RequestMirror copy in flight has been answered.

    Copies are fire-and-forget tasks of ``middleware/http/gateway_mirror.py``
    running in this event loop (the gateway runs in-process); a copy's task
    ends only after the mirror's answer, so the mirror has recorded it by then.
    """
    mine = asyncio.current_task()
    copies = [
        task for task in asyncio.all_tasks()
        if task is not mine and "_Mirror._send" in task.get_coro().__qualname__  # type: ignore[union-attr]
    ]
    await asyncio.gather(*copies, return_exceptions=True)


async def tls_echo(certfile: Path, keyfile: Path, pod: str) -> asyncio.Server:
    """A TLS server answering one HTTP request with ``{"pod": pod}`` (passthrough backends)."""
    import json
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certfile, keyfile)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            body = json.dumps({"pod": pod, "namespace": INFRA}).encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(answer, "127.0.0.1", 0, ssl=context)


def services_yaml(
    entries: Iterable[tuple[str, str, int, int]], *, protocol: str = "TCP"
) -> str:
    """Services + EndpointSlices for (namespace, name, service port, backend port) entries."""
    docs: list[dict[str, Any]] = []
    for namespace, name, port, backend_port in entries:
        docs.extend(service_manifests(namespace, name, [("", port, "")], backend_port,
                                      protocol=protocol))
    return "---\n" + yaml.safe_dump_all(docs)
