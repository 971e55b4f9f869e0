"""Shared pieces of the file-mode Gateway API tests: the static file and manifest builders."""

from __future__ import annotations

from pathlib import Path

# A static file whose file provider reads the test's ``conf`` directory.
STATIC = """\
entryPoints:
  web:
    address: "127.0.0.1:0"
providers:
  file:
    directory: conf
"""


def gateway(*listeners: str, name: str = "edge") -> str:
    """Our GatewayClass and a Gateway on 127.0.0.1 with ``listeners`` (YAML flow mappings)."""
    items = "".join(f"    - {listener}\n" for listener in listeners)
    return f"""
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: sluice}}
spec: {{controllerName: sluice.dev/gateway-controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: {name}, namespace: default}}
spec:
  gatewayClassName: sluice
  addresses: [{{type: IPAddress, value: 127.0.0.1}}]
  listeners:
{items}"""


def service(
    name: str, port: int, backend: int, *, port_name: str = "main", protocol: str = "TCP"
) -> str:
    """A Service (port ``port``) and its EndpointSlice: one ready endpoint, 127.0.0.1:backend."""
    return f"""
---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  ports: [{{name: {port_name}, port: {port}, protocol: {protocol}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-1
  namespace: default
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
ports: [{{name: {port_name}, port: {backend}, protocol: {protocol}}}]
endpoints:
  - addresses: [127.0.0.1]
    conditions: {{ready: true}}
"""


def conf_dir(tmp_path: Path, text: str, file: str = "app.yaml") -> Path:
    """The file provider's directory for a test, holding ``text`` as one manifest file."""
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / file).write_text(text)
    return conf
