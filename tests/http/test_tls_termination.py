"""TLS termination on an entry point, end to end with real TLS clients."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from tests.backends import RecordingBackend, get, read_reply
from tests.certs import CA, make_ca
from tests.harness import RunningGateway, start_gateway


def tls_config(backend_url: str, a: tuple[Path, Path], b: tuple[Path, Path]) -> str:
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


@dataclass
class Site:
    ca: CA
    a: tuple[Path, Path]
    b: tuple[Path, Path]
    backend: RecordingBackend
    gw: RunningGateway


@contextlib.asynccontextmanager
async def tls_site(tmp_path: Path) -> AsyncIterator[Site]:
    """A gateway terminating TLS for a.test and b.test, with certificates from a fresh CA."""
    ca = make_ca(tmp_path)
    a = ca.issue(tmp_path, ["a.test"])
    b = ca.issue(tmp_path, ["b.test"])
    backend = await RecordingBackend().start()
    gw = await start_gateway(tmp_path, tls_config(backend.url, a, b))
    try:
        yield Site(ca, a, b, backend, gw)
    finally:
        await gw.stop()
        await backend.close()


async def test_tls_routers_terminate_with_sni_certificates(tmp_path: Path) -> None:
    """Each SNI name gets its own certificate, and the request is routed by Host."""
    async with tls_site(tmp_path) as site:
        ca, gw = site.ca, site.gw
        assert gw.gateway.entry_points["web"].settings.scheme == b"https"
        cn, status, _ = await tls_get(gw.port(), str(ca.cert_path), "a.test", "a.test")
        assert (cn, status) == ("a.test", 200)
        cn, status, _ = await tls_get(gw.port(), str(ca.cert_path), "b.test", "b.test")
        assert (cn, status) == ("b.test", 200)
        seen = site.backend.requests[-1]
        assert seen.header("x-forwarded-proto") == "https"


async def test_certificates_reload_without_restart(tmp_path: Path) -> None:
    """A certificate added by a reload is served on the already open listener."""
    async with tls_site(tmp_path) as site:
        c = site.ca.issue(tmp_path, ["c.test"])
        text = (
            tls_config(site.backend.url, site.a, site.b).replace(
                "      tls: {}\n  services:",
                "      tls: {}\n    c:\n      rule: Host(`c.test`)\n      service: app\n"
                "      tls: {}\n  services:",
            )
            + f'    - {{certFile: "{c[0]}", keyFile: "{c[1]}"}}\n'
        )
        await site.gw.reload(text)
        cn, status, _ = await tls_get(site.gw.port(), str(site.ca.cert_path), "c.test", "c.test")
        assert (cn, status) == ("c.test", 200)


async def test_unknown_sni_gets_default_certificate(tmp_path: Path) -> None:
    """A name no certificate covers gets the generated default certificate."""
    async with tls_site(tmp_path) as site:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", site.gw.port(), ssl=ctx, server_hostname="zzz.test"
        )
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        from cryptography import x509

        cert = x509.load_der_x509_certificate(der)
        assert "SLUICE DEFAULT CERT" in cert.subject.rfc4514_string()
        writer.write(get("zzz.test"))
        assert (await read_reply(reader)).status == 404
        writer.close()


async def test_entry_point_switches_to_tls_when_its_routers_do(tmp_path: Path) -> None:
    """A plain entry point whose routers gain `tls` by reload starts serving TLS on its port."""
    ca = make_ca(tmp_path)
    a = ca.issue(tmp_path, ["a.test"])
    b = ca.issue(tmp_path, ["b.test"])
    backend = await RecordingBackend().start()
    plain = tls_config(backend.url, a, b).replace("      tls: {}\n", "")
    gw = await start_gateway(tmp_path, plain)
    try:
        port = gw.port()
        assert gw.gateway.entry_points["web"].ssl_context is None
        await gw.reload(tls_config(backend.url, a, b))
        await asyncio.wait_for(asyncio.gather(*gw.gateway.reopens), 5)
        assert gw.gateway.entry_points["web"].ssl_context is not None
        cn, status, _ = await tls_get(port, str(ca.cert_path), "a.test", "a.test")
        assert (cn, status) == ("a.test", 200)
        assert backend.requests[-1].header("x-forwarded-proto") == "https"
    finally:
        await gw.stop()
        await backend.close()


async def test_plain_router_is_not_served_over_tls(tmp_path: Path) -> None:
    """On an entry point serving TLS, a router without `tls` does not answer."""
    ca = make_ca(tmp_path)
    a = ca.issue(tmp_path, ["a.test"])
    b = ca.issue(tmp_path, ["b.test"])
    backend = await RecordingBackend().start()
    mixed = tls_config(backend.url, a, b).replace(
        "      rule: Host(`b.test`)\n      service: app\n      tls: {}\n",
        "      rule: Host(`b.test`)\n      service: app\n",
    )
    gw = await start_gateway(tmp_path, mixed)
    try:
        _, status, _ = await tls_get(gw.port(), str(ca.cert_path), "a.test", "a.test")
        assert status == 200
        _, status, _ = await tls_get(gw.port(), str(ca.cert_path), "b.test", "b.test")
        assert status == 404
    finally:
        await gw.stop()
        await backend.close()
