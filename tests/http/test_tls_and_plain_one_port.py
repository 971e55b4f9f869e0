"""TLS and plain HTTP routers on one entry point: the first byte of a connection decides."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

from tests.backends import RecordingBackend, get, http_request, read_reply
from tests.certs import make_ca
from tests.harness import start_gateway


def config(secure: str, plain: str, cert: Path, key: Path) -> str:
    return f"""
http:
  routers:
    secure:
      rule: Host(`app.test`)
      service: secure
      tls: {{}}
    plain:
      rule: Host(`app.test`)
      service: plain
  services:
    secure:
      loadBalancer: {{servers: [{{url: "{secure}"}}]}}
    plain:
      loadBalancer: {{servers: [{{url: "{plain}"}}]}}
tls:
  certificates:
    - {{certFile: "{cert}", keyFile: "{key}"}}
"""


async def test_tls_and_plain_routers_share_a_port(tmp_path: Path) -> None:
    """A TLS connection reaches the tls router, a plain one the plain router, on one port."""
    ca = make_ca(tmp_path)
    cert, key = ca.issue(tmp_path, ["app.test"])
    secure, plain = await RecordingBackend().start(), await RecordingBackend().start()
    gw = await start_gateway(tmp_path, config(secure.url, plain.url, cert, key))
    try:
        for task in list(gw.gateway.reopens):
            await task
        assert (await http_request(gw.port(), get("app.test"))).status == 200
        context = ssl.create_default_context(cafile=str(ca.cert_path))
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", gw.port(), ssl=context, server_hostname="app.test"
        )
        writer.write(get("app.test"))
        assert (await read_reply(reader)).status == 200
        writer.close()
        assert (len(plain.requests), len(secure.requests)) == (1, 1)
        assert plain.requests[0].header("x-forwarded-proto") == "http"
        assert secure.requests[0].header("x-forwarded-proto") == "https"
    finally:
        await gw.stop()
        await secure.close()
        await plain.close()
