"""Gateway API TLS from files: an HTTPS listener with a Secret, a TLSRoute passed through."""

from __future__ import annotations

import asyncio
import base64
import ssl
from pathlib import Path

from tests.backends import RecordingBackend, closed_port, get, read_reply
from tests.certs import make_ca
from tests.harness import start_gateway
from tests.l4.gateway_support import NamedEcho
from tests.providers.gatewayapi.manifest_support import STATIC, conf_dir, gateway, service


def secret(name: str, cert: Path, key: Path) -> str:
    def b64(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    return f"""
---
apiVersion: v1
kind: Secret
metadata: {{name: {name}, namespace: default}}
type: kubernetes.io/tls
data:
  tls.crt: {b64(cert)}
  tls.key: {b64(key)}
"""


def manifests(https_port: int, tls_port: int) -> str:
    listeners = (
        f"{{name: https, protocol: HTTPS, port: {https_port}, hostname: '*.example.test', "
        "tls: {certificateRefs: [{name: site-cert}]}}",
        f"{{name: passthrough, protocol: TLS, port: {tls_port}, hostname: db.example.test, "
        "tls: {mode: Passthrough}}",
    )
    return gateway(*listeners) + """---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: site, namespace: default}
spec:
  parentRefs: [{name: edge, sectionName: https}]
  hostnames: [www.example.test]
  rules: [{backendRefs: [{name: site, port: 443}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: db, namespace: default}
spec:
  parentRefs: [{name: edge, sectionName: passthrough}]
  hostnames: [db.example.test]
  rules: [{backendRefs: [{name: db, port: 443}]}]
"""


async def test_https_listener_and_tlsroute_passthrough(tmp_path: Path) -> None:
    """HTTPS terminates with the Secret's certificate; a TLSRoute's SNI reaches its TLS server."""
    ca = make_ca(tmp_path)
    site_cert = ca.issue(tmp_path, ["*.example.test"])
    db_cert = ca.issue(tmp_path, ["db.example.test"])
    site = await RecordingBackend().start()
    db = NamedEcho("db", db_cert)
    await db.start()
    https_port, tls_port = await closed_port(), await closed_port()
    conf_dir(
        tmp_path,
        manifests(https_port, tls_port)
        + secret("site-cert", *site_cert)
        + service("site", 443, site.port)
        + service("db", 443, db.port)
    )
    gw = await start_gateway(tmp_path, "", static=STATIC)
    try:
        context = ssl.create_default_context(cafile=str(ca.cert_path))
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", https_port, ssl=context, server_hostname="www.example.test"
        )
        writer.write(get("www.example.test"))
        assert (await read_reply(reader)).status == 200
        writer.close()
        assert site.requests[0].header("x-forwarded-proto") == "https"
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", tls_port, ssl=context, server_hostname="db.example.test"
        )
        writer.write(b"hello")
        assert await reader.readline() == b"db\n"
        writer.close()
        assert db.server_names == ["db.example.test"]
        status = gw.gateway.providers[0].manifests.status  # type: ignore[attr-defined]
        listeners = status[("Gateway", "default", "edge")]["listeners"]
        programmed = {
            item["name"]: next(c["status"] for c in item["conditions"] if c["type"] == "Programmed")
            for item in listeners
        }
        assert programmed == {"https": "True", "passthrough": "True"}
    finally:
        await gw.stop()
        await site.close()
        await db.stop()


async def test_missing_certificate_secret_is_reported_not_served(tmp_path: Path) -> None:
    """An HTTPS listener whose Secret is missing: ResolvedRefs False, the listener not served."""
    https_port, tls_port = await closed_port(), await closed_port()
    conf_dir(tmp_path, manifests(https_port, tls_port))
    gw = await start_gateway(tmp_path, "", static=STATIC)
    try:
        status = gw.gateway.providers[0].manifests.status  # type: ignore[attr-defined]
        https = status[("Gateway", "default", "edge")]["listeners"][0]
        resolved = next(c for c in https["conditions"] if c["type"] == "ResolvedRefs")
        assert (resolved["status"], resolved["reason"]) == ("False", "InvalidCertificateRef")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", https_port)
        except ConnectionRefusedError:
            pass
        else:
            writer.close()
            raise AssertionError("a listener without a certificate must not be served")
    finally:
        await gw.stop()


def terminate_manifests(port: int) -> str:
    listener = (
        f"{{name: tls, protocol: TLS, port: {port}, hostname: db.example.test, "
        "tls: {mode: Terminate, certificateRefs: [{name: db-cert}]}}"
    )
    return gateway(listener) + """---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: db, namespace: default}
spec:
  parentRefs: [{name: edge}]
  hostnames: [db.example.test]
  rules: [{backendRefs: [{name: db, port: 443}]}]
"""


async def test_tls_listener_in_terminate_mode_ends_tls_for_a_tlsroute(tmp_path: Path) -> None:
    """TLSRouteModeTerminate: the gateway ends TLS with the listener's Secret; the backend
    gets plain bytes."""
    ca = make_ca(tmp_path)
    db_cert = ca.issue(tmp_path, ["db.example.test"])
    db = NamedEcho("plain-db")
    await db.start()
    port = await closed_port()
    conf_dir(
        tmp_path,
        terminate_manifests(port) + secret("db-cert", *db_cert) + service("db", 443, db.port)
    )
    gw = await start_gateway(tmp_path, "", static=STATIC)
    try:
        context = ssl.create_default_context(cafile=str(ca.cert_path))
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=context, server_hostname="db.example.test"
        )
        writer.write(b"hello")
        assert await reader.readline() == b"plain-db\n"
        writer.close()
        assert bytes(db.received) == b"hello"
    finally:
        await gw.stop()
        await db.stop()
