"""Gateway API manifests served from files: a Gateway, an HTTPRoute and a Service answer."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.backends import RecordingBackend, closed_port, get, read_reply
from tests.harness import start_gateway


def manifests(port: int, backend_port: int, *, path: str = "/app") -> str:
    return f"""
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: sluice}}
spec: {{controllerName: sluice.dev/gateway-controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: edge, namespace: default}}
spec:
  gatewayClassName: sluice
  addresses: [{{type: IPAddress, value: 127.0.0.1}}]
  listeners:
    - {{name: http, protocol: HTTP, port: {port}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: app, namespace: default}}
spec:
  parentRefs: [{{name: edge}}]
  hostnames: [app.example.test]
  rules:
    - matches: [{{path: {{type: PathPrefix, value: {path}}}}}]
      backendRefs: [{{name: app, port: 80}}]
---
apiVersion: v1
kind: Service
metadata: {{name: app, namespace: default}}
spec:
  ports: [{{name: http, port: 80, targetPort: 8080}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: app-1
  namespace: default
  labels: {{kubernetes.io/service-name: app}}
addressType: IPv4
ports: [{{name: http, port: {backend_port}}}]
endpoints:
  - addresses: [127.0.0.1]
    conditions: {{ready: true}}
"""


STATIC = """\
entryPoints:
  web:
    address: "127.0.0.1:0"
providers:
  file:
    directory: conf
"""


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
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "app.yaml").write_text(manifests(port, backend.port))
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
    finally:
        await gw.stop()
        await backend.close()
