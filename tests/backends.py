"""Real test backends: a recording HTTP/1.1 server and a raw HTTP client.

``RecordingBackend`` answers every request with 200 and a JSON description
of what it received (head and body digest), and counts the connections it
accepted, so tests can see what the gateway forwarded and how it pooled.
``http_request`` speaks raw HTTP/1.1 over a fresh or given connection and
returns the parsed response, so tests control every byte on the wire.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httptools


@dataclass
class Seen:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    connection: int

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def header_names(self) -> set[str]:
        return {k.lower() for k, _ in self.headers}


Responder = Callable[[Seen], Awaitable[bytes] | bytes]


def default_response(seen: Seen) -> bytes:
    body = json.dumps(
        {
            "method": seen.method,
            "target": seen.target,
            "headers": seen.headers,
            "body_sha256": hashlib.sha256(seen.body).hexdigest(),
            "body_len": len(seen.body),
        }
    ).encode()
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        len(body),
        body,
    )


class _Conn(asyncio.Protocol):
    def __init__(self, backend: RecordingBackend) -> None:
        self.backend = backend
        self.parser = httptools.HttpRequestParser(self)
        self.index = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.backend.transports.append(transport)  # type: ignore[arg-type]
        self.backend.connections += 1
        self.index = self.backend.connections

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers: list[tuple[str, str]] = []
        self.body = bytearray()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        seen = Seen(
            self.parser.get_method().decode(),
            self.url.decode("latin-1"),
            self.headers,
            bytes(self.body),
            self.index,
        )
        self.backend.requests.append(seen)
        result = self.backend.responder(seen)
        if isinstance(result, bytes):
            self._send(result)
        else:
            self.backend.pending.add(task := asyncio.ensure_future(self._later(result)))
            task.add_done_callback(self.backend.pending.discard)

    async def _later(self, result: Awaitable[bytes]) -> None:
        self._send(await result)

    def _send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)
            if self.backend.close_after_response:
                # Close without saying so in the response, as an idle timeout would.
                self.transport.close()


@dataclass
class RecordingBackend:
    responder: Responder = default_response
    requests: list[Seen] = field(default_factory=list)
    connections: int = 0
    server: asyncio.Server | None = None
    transports: list[asyncio.Transport] = field(default_factory=list)
    pending: set[asyncio.Future[None]] = field(default_factory=set)
    close_after_response: bool = False

    async def start(self, port: int = 0) -> RecordingBackend:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: _Conn(self), "127.0.0.1", port)
        return self

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def close(self) -> None:
        """Stop listening and drop every open connection, as a dying server would."""
        if self.server is not None:
            self.server.close()
            for transport in self.transports:
                transport.close()
            await self.server.wait_closed()


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def json(self) -> dict:  # type: ignore[type-arg]
        return json.loads(self.body)  # type: ignore[no-any-return]


async def read_reply(
    reader: asyncio.StreamReader, *, head_only: bool = False, timeout: float = 10
) -> Reply:
    """Read exactly one response from ``reader`` (skipping 1xx interim ones).

    Reads no further than the response's own framing, so pipelined replies
    stay in the stream for the next call.
    """
    while True:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = [tuple(x.strip() for x in line.split(":", 1)) for line in lines[1:] if line]
        reply = Reply(status, headers, b"")  # type: ignore[arg-type]
        if 100 <= status < 200 and status != 101:
            continue
        if head_only or status in (101, 204, 304):
            return reply
        if (reply.header("transfer-encoding") or "").lower() == "chunked":
            body = bytearray()
            while True:
                size = int((await asyncio.wait_for(reader.readline(), timeout)).split(b";")[0], 16)
                if size == 0:
                    await asyncio.wait_for(reader.readuntil(b"\r\n"), timeout)
                    break
                body += await asyncio.wait_for(reader.readexactly(size + 2), timeout)
                del body[-2:]
            reply.body = bytes(body)
        elif reply.header("content-length") is not None:
            length = int(reply.header("content-length") or 0)
            reply.body = await asyncio.wait_for(reader.readexactly(length), timeout)
        else:
            reply.body = await asyncio.wait_for(reader.read(), timeout)
        return reply


async def http_request(port: int, raw: bytes, *, head_only: bool = False) -> Reply:
    """Send ``raw`` on a new connection to 127.0.0.1:port; return the first reply."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        return await read_reply(reader, head_only=head_only)
    finally:
        writer.close()


def get(host: str, path: str = "/", extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()


async def closed_port() -> int:
    """A 127.0.0.1 port that was just free: connecting to it is refused."""
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    return int(port)
