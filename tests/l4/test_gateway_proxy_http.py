"""PROXY protocol in front of HTTP: the header's source is the client the HTTP routers see."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.l4.proxy_protocol import encode_v1, encode_v2
from tests.backends import RecordingBackend, get, read_reply
from tests.l4.gateway_support import scene, static_text

PROXY_EP = static_text(extra={"tcp": "proxyProtocol: {trustedIPs: [127.0.0.1/32]}"})


def http_route(url: str) -> str:
    return f"""
http:
  routers:
    app:
      entryPoints: [tcp]
      rule: Host(`app.test`)
      service: app
  services:
    app:
      loadBalancer:
        servers: [{{url: "{url}"}}]
"""


async def request(port: int, prefix: bytes, source: str = "127.0.0.1") -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    try:
        writer.write(prefix + get("app.test"))
        return (await read_reply(reader)).status
    finally:
        writer.close()


async def test_http_routers_see_the_proxy_header_source(tmp_path: Path) -> None:
    """v1 and v2 headers from a trusted source set the client address X-Forwarded-For carries."""
    async with scene(tmp_path) as s:
        backend = await RecordingBackend().start()
        s.stack.push_async_callback(backend.close)
        gw = await s.gateway(http_route(backend.url), PROXY_EP)
        port = gw.port("tcp")
        assert await request(port, encode_v1(("203.0.113.7", 4000), ("127.0.0.1", port))) == 200
        assert await request(port, encode_v2(("203.0.113.8", 4001), ("127.0.0.1", port))) == 200
        # No header at all from a trusted source: a direct connection.
        assert await request(port, b"") == 200
        forwarded = [r.header("x-forwarded-for") for r in backend.requests]
        assert forwarded == ["203.0.113.7", "203.0.113.8", "127.0.0.1"]


async def test_untrusted_source_cannot_claim_an_address(tmp_path: Path) -> None:
    """From outside trustedIPs, a PROXY header is not honoured: the request is malformed."""
    async with scene(tmp_path) as s:
        backend = await RecordingBackend().start()
        s.stack.push_async_callback(backend.close)
        gw = await s.gateway(http_route(backend.url), PROXY_EP)
        header = encode_v1(("203.0.113.7", 4000), ("127.0.0.1", gw.port("tcp")))
        assert await request(gw.port("tcp"), header, source="127.0.0.2") == 400
        assert backend.requests == []
