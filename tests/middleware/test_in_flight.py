"""inFlightReq through a running gateway, with a backend that holds response bodies open."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import time

import pytest

from tests.backends import get, http_request, read_reply
from tests.harness import start_gateway


class HoldingBackend:
    """Sends each response head and half its body at once, the rest when released."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.seen = 0
        self.arrived = asyncio.Condition()
        self.server: asyncio.Server | None = None

    async def start(self) -> HoldingBackend:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                async with self.arrived:
                    self.seen += 1
                    self.arrived.notify_all()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab")
                await self.release.wait()
                writer.write(b"cd")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def wait_seen(self, n: int) -> None:
        async with self.arrived:
            await asyncio.wait_for(self.arrived.wait_for(lambda: self.seen >= n), 10)

    async def close(self) -> None:
        self.release.set()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


def config(url: str, options: dict[str, object]) -> str:
    """Every host routed through inFlightReq ``limit`` with ``options``."""
    return f"""http:
  routers:
    app:
      rule: PathPrefix(`/`)
      service: app
      middlewares: [limit]
  services:
    app:
      loadBalancer:
        servers: [{{url: "{url}"}}]
  middlewares:
    limit:
      inFlightReq: {json.dumps(options)}
"""


@pytest.fixture
async def backend():
    b = await HoldingBackend().start()
    yield b
    await b.close()


async def open_request(port: int, host: str = "app.test"):
    """Send a request and read its response head; the body stays pending."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(get(host))
    reply = await read_reply(reader, head_only=True)
    return reply, reader, writer


async def test_limit_holds_until_the_body_is_done(tmp_path, backend):
    """The (amount+1)th concurrent request gets 429, also after the heads came back; once a
    response has been sent whole, a new request passes."""
    gw = await start_gateway(tmp_path, config(backend.url, {"amount": 2}))
    try:
        held = [await open_request(gw.port()) for _ in range(2)]
        assert [reply.status for reply, _, _ in held] == [200, 200]
        refused = await http_request(gw.port(), get("app.test"))
        assert refused.status == 429
        assert refused.body == b"max connections reached: 2"
        assert backend.seen == 2
        backend.release.set()
        for _, reader, writer in held:
            assert await asyncio.wait_for(reader.readexactly(4), 10) == b"abcd"
            writer.close()
        reply = await http_request(gw.port(), get("app.test"))
        assert (reply.status, reply.body) == (200, b"abcd")
    finally:
        backend.release.set()
        await gw.stop()


async def test_sources_default_to_the_request_host(tmp_path, backend):
    """Without sourceCriterion requests are counted per Host, as in Traefik."""
    gw = await start_gateway(tmp_path, config(backend.url, {"amount": 1}))
    try:
        first, _, w1 = await open_request(gw.port(), "a.test")
        assert first.status == 200
        other, _, w2 = await open_request(gw.port(), "b.test")
        assert other.status == 200
        assert (await http_request(gw.port(), get("a.test"))).status == 429
        assert (await http_request(gw.port(), get("b.test"))).status == 429
        w1.close()
        w2.close()
    finally:
        backend.release.set()
        await gw.stop()


async def test_header_criterion_counts_per_header(tmp_path, backend):
    """With ``requestHeaderName`` requests are counted per header value."""
    options = {"amount": 1, "sourceCriterion": {"requestHeaderName": "X-User"}}
    gw = await start_gateway(tmp_path, config(backend.url, options))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port())
        writer.write(get("app.test", "/", "X-User: alice\r\n"))
        assert (await read_reply(reader, head_only=True)).status == 200
        port = gw.port()
        assert (await http_request(port, get("app.test", "/", "X-User: alice\r\n"))).status == 429
        backend.release.set()
        assert (await http_request(port, get("app.test", "/", "X-User: bob\r\n"))).status == 200
        writer.close()
    finally:
        backend.release.set()
        await gw.stop()


async def test_client_going_away_releases_its_slot(tmp_path, backend):
    """A request whose client resets the connection mid-response stops counting."""
    gw = await start_gateway(tmp_path, config(backend.url, {"amount": 1}))
    try:
        reply, _, writer = await open_request(gw.port())
        assert reply.status == 200
        # Linger 0: the close is a reset, which the gateway sees at once (a
        # FIN alone is a half-close and the response would still be sent).
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
        deadline = time.monotonic() + 5
        statuses = []
        while True:
            reply, _, other = await open_request(gw.port())
            other.close()
            statuses.append(reply.status)
            if reply.status == 200 or time.monotonic() > deadline:
                break
        assert statuses[-1] == 200, statuses
        await backend.wait_seen(2)
    finally:
        backend.release.set()
        await gw.stop()


async def test_amount_must_be_positive(tmp_path, backend):
    """``amount`` below 1 is a load error naming the middleware, key and line."""
    good = config(backend.url, {"amount": 3})
    gw = await start_gateway(tmp_path, good)
    line = good.splitlines().index("    limit:") + 1
    try:
        errors = await gw.reload(config(backend.url, {"amount": 0}), expect_ok=False)
        text = str(errors[0])  # type: ignore[index]
        assert f"dynamic.yml:{line}: http.middlewares.limit" in text, text
        assert "inFlightReq: amount: must be at least 1" in text, text
        errors = await gw.reload(
            config(backend.url, {"amount": 1, "sourceCriterion": {"requestHost": "yes"}}),
            expect_ok=False,
        )
        assert "requestHost" in str(errors[0]), errors  # type: ignore[index]
    finally:
        backend.release.set()
        await gw.stop()
