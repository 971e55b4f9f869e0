"""TLS termination on an entry point, end to end with real TLS clients."""

from __future__ import annotations

import asyncio
import ssl

from tests.backends import RecordingBackend, get, read_reply
from tests.certs import make_ca
from tests.harness import start_gateway


def tls_config(backend_url: str, a: tuple, b: tuple) -> str:
    return f"""
http:
  routers:
    a:
      rule: Host(`a.test`)
      service: app
      tls: {{}}
    b:
      rule: Host(`b.test`)
      service: app
      tls: {{}}
  services:
    app:
      loadBalancer:
        servers: [{{url: "{backend_url}"}}]
tls:
  certificates:
    - {{certFile: "{a[0]}", keyFile: "{a[1]}"}}
    - {{certFile: "{b[0]}", keyFile: "{b[1]}"}}
"""


async def tls_get(port: int, ca: str, server_name: str, host: str) -> tuple[str, int, object]:
    ctx = ssl.create_default_context(cafile=ca)
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=ctx, server_hostname=server_name
    )
    try:
        cert = writer.get_extra_info("peercert")
        cn = dict(x[0] for x in cert["subject"])["commonName"]
        writer.write(get(host))
        reply = await read_reply(reader)
        return cn, reply.status, reply
    finally:
        writer.close()


async def test_tls_routers_terminate_with_sni_certificates(tmp_path):
    """Each SNI name gets its own certificate, and the request is routed by Host."""
    ca = make_ca(tmp_path)
    a = ca.issue(tmp_path, ["a.test"])
    b = ca.issue(tmp_path, ["b.test"])
    backend = await RecordingBackend().start()
    gw = await start_gateway(tmp_path, tls_config(backend.url, a, b))
    try:
        assert gw.gateway.entry_points["web"].settings.scheme == b"https"
        cn, status, _ = await tls_get(gw.port(), str(ca.cert_path), "a.test", "a.test")
        assert (cn, status) == ("a.test", 200)
        cn, status, _ = await tls_get(gw.port(), str(ca.cert_path), "b.test", "b.test")
        assert (cn, status) == ("b.test", 200)
        seen = backend.requests[-1]
        assert seen.header("x-forwarded-proto") == "https"
    finally:
        await gw.stop()
        await backend.close()


async def test_certificates_reload_without_restart(tmp_path):
    """A certificate added by a reload is served on the already open listener."""
    ca = make_ca(tmp_path)
    a = ca.issue(tmp_path, ["a.test"])
    b = ca.issue(tmp_path, ["b.test"])
    c = ca.issue(tmp_path, ["c.test"])
    backend = await RecordingBackend().start()
    gw = await start_gateway(tmp_path, tls_config(backend.url, a, b))
    try:
        text = (
            tls_config(backend.url, a, b).replace(
                "      tls: {}\n  services:",
                "      tls: {}\n    c:\n      rule: Host(`c.test`)\n      service: app\n"
                "      tls: {}\n  services:",
            )
            + f'    - {{certFile: "{c[0]}", keyFile: "{c[1]}"}}\n'
        )
        await gw.reload(text)
        cn, status, _ = await tls_get(gw.port(), str(ca.cert_path), "c.test", "c.test")
        assert (cn, status) == ("c.test", 200)
    finally:
        await gw.stop()
        await backend.close()


async def test_unknown_sni_gets_default_certificate(tmp_path):
    """A name no certificate covers gets the generated default certificate."""
    ca = make_ca(tmp_path)
    a = ca.issue(tmp_path, ["a.test"])
    b = ca.issue(tmp_path, ["b.test"])
    backend = await RecordingBackend().start()
    gw = await start_gateway(tmp_path, tls_config(backend.url, a, b))
    try:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", gw.port(), ssl=ctx, server_hostname="zzz.test"
        )
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        from cryptography import x509

        cert = x509.load_der_x509_certificate(der)
        assert "SLUICE DEFAULT CERT" in cert.subject.rfc4514_string()
        writer.write(get("zzz.test"))
        assert (await read_reply(reader)).status == 404
        writer.close()
    finally:
        await gw.stop()
        await backend.close()
