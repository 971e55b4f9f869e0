"""Tests for gateway.http.server and wire: hostile or malformed HTTP/1.1 is refused.

Every refusal is checked from both ends: the client reads an exact 4xx/5xx
status line with ``Connection: close`` and then EOF, and a recording backend
behind the gateway receives not one byte of the refused request (RFC 9112
sections 2.2, 3, 5, 6 and 7; RFC 9110 sections 5.5, 7.2 and 10.1.1). The
upstream pool is warmed before each test, so a head forwarded synchronously
on a pooled connection would show up at the backend too.

Valid requests at the limits are checked as well, so every test can fail
both ways.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httptools
import pytest

from tests.harness import RunningGateway, start_gateway

MAX_HEAD = 32768  # EntryPointHTTP.max_header_bytes default
WAIT = 5.0  # upper bound on any single answer; refusals never wait for a timeout


# -- a backend that records everything it receives ------------------------------------


@dataclass
class Seen:
    """One request head as the backend parsed it, and its body."""

    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""
    complete: bool = False


@dataclass
class Recorder:
    """What reached the backend: connections, raw bytes and parsed requests."""

    connections: int = 0
    received: int = 0
    requests: list[Seen] = field(default_factory=list)
    # Set whenever a request head arrives.
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def targets(self) -> list[bytes]:
        return [seen.target for seen in self.requests]


class _RecorderProtocol(asyncio.Protocol):
    """Answers ``200 ok`` to every request and records it; sends 100 on Expect."""

    def __init__(self, record: Recorder) -> None:
        self.record = record
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.seen: Seen | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.record.connections += 1

    def data_received(self, data: bytes) -> None:
        self.record.received += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
            self.transport.close()

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        method = self.parser.get_method()
        self.seen = Seen(method, self.url, self.headers)
        self.record.requests.append(self.seen)
        self.record.arrived.set()
        expect = [v for n, v in self.headers if n.lower() == b"expect"]
        if expect and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        assert self.seen is not None
        self.seen.body += body

    def on_message_complete(self) -> None:
        assert self.seen is not None and self.transport is not None
        self.seen.complete = True
        self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


@contextlib.asynccontextmanager
async def recording_backend() -> AsyncIterator[tuple[Recorder, int]]:
    """A recording backend on 127.0.0.1, port 0: (record, port)."""
    record = Recorder()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _RecorderProtocol(record), "127.0.0.1", 0)
    try:
        yield record, server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


def dynamic_for(port: int) -> str:
    """Dynamic configuration routing every request to the backend on ``port``."""
    return (
        "http:\n  routers:\n    all:\n      rule: PathPrefix(`/`)\n      service: rec\n"
        "  services:\n    rec:\n      loadBalancer:\n        servers:\n"
        f"          - url: http://127.0.0.1:{port}\n"
    )


# -- a raw client ---------------------------------------------------------------------


async def send_raw(port: int, *parts: bytes, timeout: float = WAIT) -> bytes:
    """Write ``parts`` (one write each, in order), then read until the gateway closes.

    A reset after the answer counts as the close: a server that closes with
    unread input makes the kernel send RST, and the answer is read before it.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    received = bytearray()

    async def read_to_eof() -> None:
        with contextlib.suppress(ConnectionResetError):
            while data := await reader.read(65536):
                received.extend(data)

    try:
        with contextlib.suppress(ConnectionError):
            for part in parts:
                writer.write(part)
                await writer.drain()
        await asyncio.wait_for(read_to_eof(), timeout)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return bytes(received)


@dataclass
class Answer:
    status: int
    headers: dict[bytes, bytes]
    body: bytes


def parse_answers(data: bytes) -> list[Answer]:
    """Split a byte stream of responses (Content-Length framed or 1xx) into answers."""
    answers = []
    while data:
        head, sep, data = data.partition(b"\r\n\r\n")
        assert sep, f"truncated response head: {head!r}"
        lines = head.split(b"\r\n")
        version, status, _ = lines[0].split(b" ", 2)
        assert version == b"HTTP/1.1", lines[0]
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get(b"content-length", b"0"))
        answers.append(Answer(int(status), headers, data[:length]))
        data = data[length:]
    return answers


def assert_refused(data: bytes, status: int) -> None:
    """Exactly one answer with ``status`` and ``Connection: close`` (EOF was read)."""
    answers = parse_answers(data)
    assert [a.status for a in answers] == [status], data
    assert answers[0].headers.get(b"connection", b"").lower() == b"close", data


# -- fixture ----------------------------------------------------------------------------


@dataclass
class Proxy:
    gateway: RunningGateway
    record: Recorder
    port: int

    async def settle(self) -> None:
        """Round-trip a sentinel request, so anything forwarded before it has arrived."""
        data = await send_raw(
            self.port, b"GET /sentinel HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n"
        )
        assert [a.status for a in parse_answers(data)] == [200], data

    async def assert_nothing_forwarded(self) -> None:
        """The backend received no byte between the warm-up and the sentinel."""
        received = self.record.received
        await self.settle()
        assert self.record.targets() == [b"/sentinel"]
        sentinel = self.record.received - received
        assert sentinel > 0 and received == 0, "backend received part of a refused request"


@pytest.fixture
async def proxy(tmp_path: Path) -> AsyncIterator[Proxy]:
    async with recording_backend() as (record, backend_port):
        gateway = await start_gateway(tmp_path, dynamic_for(backend_port))
        try:
            port = gateway.port()
            # Warm the upstream pool: a head forwarded synchronously on a pooled
            # connection reaches the backend at once and cannot go unnoticed.
            data = await send_raw(
                port, b"GET /warm HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n"
            )
            assert [a.status for a in parse_answers(data)] == [200], data
            record.requests.clear()
            record.received = 0
            yield Proxy(gateway, record, port)
        finally:
            await gateway.stop()


# -- refused requests -----------------------------------------------------------------

GET = b"GET / HTTP/1.1\r\nHost: a.test\r\n"
POST = b"POST / HTTP/1.1\r\nHost: a.test\r\n"


def _close(request: bytes) -> bytes:
    """``request`` with ``Connection: close`` after its request line."""
    return request.replace(b"\r\n", b"\r\nConnection: close\r\n", 1)


# (id, request bytes, status). Everything is sent in one write.
REFUSED: list[tuple[str, bytes, int]] = [
    # Framing: Content-Length and Transfer-Encoding (RFC 9112 6.1, 6.3).
    ("cl-then-te", POST + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"3\r\nabc\r\n0\r\n\r\n", 400),
    ("te-then-cl", POST + b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"
     b"3\r\nabc\r\n0\r\n\r\n", 400),
    ("te-xchunked", POST + b"Transfer-Encoding: xchunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 400),
    ("te-chunked-gzip", POST + b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", 400),
    ("te-gzip", POST + b"Transfer-Encoding: gzip\r\n\r\nabc", 400),
    ("te-chunked-chunked", POST + b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 400),
    ("te-trailing-comma", POST + b"Transfer-Encoding: chunked,\r\n\r\n0\r\n\r\n", 400),
    ("te-leading-comma", POST + b"Transfer-Encoding: , chunked\r\n\r\n0\r\n\r\n", 400),
    ("te-param", POST + b"Transfer-Encoding: chunked;q=1\r\n\r\n0\r\n\r\n", 400),
    ("te-vertical-tab", POST + b"Transfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n", 400),
    ("te-form-feed", POST + b"Transfer-Encoding: chunked\x0c\r\n\r\n0\r\n\r\n", 400),
    ("te-space-before-colon", POST + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n", 400),
    ("te-tab-before-colon", POST + b"Transfer-Encoding\t: chunked\r\n\r\n0\r\n\r\n", 400),
    ("te-doubled", POST + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"0\r\n\r\n", 400),
    ("te-trailing-tab", POST + b"Transfer-Encoding: chunked\t\r\n\r\n0\r\n\r\n", 400),
    ("te-http10", b"POST / HTTP/1.0\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"3\r\nabc\r\n0\r\n\r\n", 400),
    ("te-http10-with-cl", b"POST / HTTP/1.0\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n"
     b"Content-Length: 3\r\n\r\nabc", 400),
    # A coding before chunked is well framed but not one Sluice can forward (RFC 9112 6.1).
    ("te-gzip-chunked", POST + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
    ("te-unknown-chunked", POST + b"Transfer-Encoding: foo, chunked\r\n\r\n0\r\n\r\n", 501),
    ("te-doubled-gzip-first", POST + b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n"
     b"\r\n0\r\n\r\n", 501),
    # Content-Length must be plain digits, once (RFC 9110 8.6).
    ("cl-plus", POST + b"Content-Length: +3\r\n\r\nabc", 400),
    ("cl-minus", POST + b"Content-Length: -1\r\n\r\n", 400),
    ("cl-hex", POST + b"Content-Length: 0x10\r\n\r\n", 400),
    ("cl-list", POST + b"Content-Length: 3, 3\r\n\r\nabc", 400),
    ("cl-two-numbers", POST + b"Content-Length: 3 4\r\n\r\nabc", 400),
    ("cl-underscore", POST + b"Content-Length: 1_0\r\n\r\nabcdefghij", 400),
    ("cl-empty", POST + b"Content-Length: \r\n\r\n", 400),
    ("cl-doubled-different", POST + b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400),
    # RFC 9110 8.6 lets a recipient refuse identical duplicates too; Sluice does.
    ("cl-doubled-same", POST + b"Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc", 400),
    ("cl-overflow", POST + b"Content-Length: 99999999999999999999999\r\n\r\nabc", 400),
    ("cl-2-pow-64", POST + b"Content-Length: 18446744073709551616\r\n\r\nabc", 400),
    # Field names are tokens, with no space before the colon (RFC 9112 5.1).
    ("name-space", GET + b"Bad Name: x\r\n\r\n", 400),
    ("name-paren", GET + b"Bad(: x\r\n\r\n", 400),
    ("name-non-ascii", GET + "Ñame: x\r\n\r\n".encode(), 400),
    ("name-empty", GET + b": x\r\n\r\n", 400),
    ("name-no-colon", GET + b"NoColon\r\n\r\n", 400),
    ("host-space-before-colon", b"GET / HTTP/1.1\r\nHost : a.test\r\n\r\n", 400),
    # Field values: no NUL, CR or LF inside, no obs-fold (RFC 9110 5.5, RFC 9112 5.2).
    ("value-nul", GET + b"X-A: a\x00b\r\n\r\n", 400),
    ("value-cr", GET + b"X-A: a\rb\r\n\r\n", 400),
    ("value-bare-lf", GET + b"X-A: a\nX-B: b\r\n\r\n", 400),
    ("obs-fold", GET + b"X-A: a\r\n b\r\n\r\n", 400),
    ("obs-fold-tab", GET + b"X-A: a\r\n\tb\r\n\r\n", 400),
    ("obs-fold-first", b"GET / HTTP/1.1\r\n Host: a.test\r\nHost: a.test\r\n\r\n", 400),
    # Host (RFC 9112 3.2, RFC 9110 7.2, 4.2.1).
    ("host-missing", b"GET / HTTP/1.1\r\n\r\n", 400),
    ("host-doubled", GET + b"Host: a.test\r\n\r\n", 400),
    ("host-doubled-http10", b"GET / HTTP/1.0\r\nHost: a.test\r\nHost: b.test\r\n\r\n", 400),
    ("host-space", b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
    ("host-slash", b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
    ("host-userinfo", b"GET / HTTP/1.1\r\nHost: u@a.test\r\n\r\n", 400),
    ("absolute-userinfo", b"GET http://u:p@a.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n", 400),
    ("absolute-empty-authority", b"GET http:///x HTTP/1.1\r\nHost: a.test\r\n\r\n", 400),
    ("absolute-bad-authority", b"GET http://a\"b/ HTTP/1.1\r\nHost: a.test\r\n\r\n", 400),
    ("absolute-without-host", b"GET http://a.test/ HTTP/1.1\r\n\r\n", 400),
    ("absolute-bad-host", b"GET http://a.test/ HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
    ("absolute-other-scheme", b"GET ftp://a.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n", 400),
    ("connect-authority-form", b"CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\n\r\n", 400),
    # Chunked bodies (RFC 9112 7.1); the bad chunk comes in the same write as the head.
    ("chunk-size-zz", POST + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", 400),
    ("chunk-size-overflow", POST + b"Transfer-Encoding: chunked\r\n\r\n"
     b"fffffffffffffffffff\r\nabc\r\n0\r\n\r\n", 400),
    ("chunk-size-negative", POST + b"Transfer-Encoding: chunked\r\n\r\n-3\r\nabc\r\n0\r\n\r\n",
     400),
    ("chunk-size-0x", POST + b"Transfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n0\r\n\r\n", 400),
    ("chunk-size-space", POST + b"Transfer-Encoding: chunked\r\n\r\n3 \r\nabc\r\n0\r\n\r\n", 400),
    ("chunk-data-no-crlf", POST + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n", 400),
    ("chunk-data-bare-lf", POST + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\n0\r\n\r\n", 400),
    ("chunk-ext-bare-lf", POST + b"Transfer-Encoding: chunked\r\n\r\n3;ext\nabc\r\n0\r\n\r\n", 400),
    ("chunk-size-bare-lf", POST + b"Transfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n", 400),
    # Line endings and the request line (RFC 9112 2.2, 3).
    ("bare-lf-everywhere", b"GET / HTTP/1.1\nHost: a.test\n\n", 400),
    ("bare-lf-request-line", b"GET / HTTP/1.1\nHost: a.test\r\n\r\n", 400),
    ("bare-cr", b"GET / HTTP/1.1\rHost: a.test\r\n\r\n", 400),
    ("version-lowercase", b"GET / http/1.1\r\nHost: a.test\r\n\r\n", 400),
    # llhttp reads a request line without a version as HTTP/0.9.
    ("version-missing", b"GET /\r\nHost: a.test\r\n\r\n", 505),
    ("version-garbage", b"GET / HTTP/1.x\r\nHost: a.test\r\n\r\n", 400),
    ("version-2", b"GET / HTTP/2.0\r\nHost: a.test\r\n\r\n", 505),
    ("version-0.9", b"GET / HTTP/0.9\r\nHost: a.test\r\n\r\n", 505),
    ("method-lowercase", b"get / HTTP/1.1\r\nHost: a.test\r\n\r\n", 400),
    ("method-paren", b"G(T / HTTP/1.1\r\nHost: a.test\r\n\r\n", 400),
    ("method-unknown", b"FROB / HTTP/1.1\r\nHost: a.test\r\n\r\n", 400),
    ("target-space", b"GET /a b HTTP/1.1\r\nHost: a.test\r\n\r\n", 400),
    ("target-nul", b"GET /a\x00 HTTP/1.1\r\nHost: a.test\r\n\r\n", 400),
    ("target-asterisk-get", b"GET * HTTP/1.1\r\nHost: a.test\r\n\r\n", 400),
    # Expectations other than 100-continue (RFC 9110 10.1.1).
    ("expect-unknown", POST + b"Expect: 200-ok\r\nContent-Length: 0\r\n\r\n", 417),
    # Size limits: 414 for the target, 431 for the head.
    ("target-too-long", b"GET /" + b"a" * MAX_HEAD + b" HTTP/1.1\r\nHost: a.test\r\n\r\n", 414),
    ("header-too-large", GET + b"X-A: " + b"a" * MAX_HEAD + b"\r\n\r\n", 431),
    ("too-many-headers", GET + b"X-A: a\r\n" * (MAX_HEAD // 8) + b"\r\n", 431),
    ("target-and-headers-too-large", b"GET /" + b"a" * (MAX_HEAD - 1000)
     + b" HTTP/1.1\r\nHost: a.test\r\n" + b"X-A: " + b"a" * 2000 + b"\r\n\r\n", 431),
    ("header-line-never-ends", GET + b"X-A: " + b"a" * (2 * MAX_HEAD), 431),
    ("header-name-never-ends", GET + b"X-" + b"a" * (2 * MAX_HEAD), 431),
]


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [pytest.param(data, status, id=name) for name, data, status in REFUSED],
)
async def test_refused_and_not_forwarded(proxy: Proxy, request_bytes: bytes, status: int) -> None:
    """A malformed request gets its 4xx/5xx, a closed connection, and never reaches upstream."""
    assert_refused(await send_raw(proxy.port, request_bytes), status)
    await proxy.assert_nothing_forwarded()


BODY_ERRORS = [
    pytest.param(b"zz\r\nabc\r\n0\r\n\r\n", id="size-zz"),
    pytest.param(b"3\r\nabcX\r\n0\r\n\r\n", id="data-no-crlf"),
    pytest.param(b"3;ext\nabc\r\n0\r\n\r\n", id="ext-bare-lf"),
]


@pytest.mark.parametrize("chunks", BODY_ERRORS)
async def test_bad_chunk_in_later_write_aborts_forwarded_head(proxy: Proxy, chunks: bytes) -> None:
    """A bad chunk after the head was forwarded: 400, close, and no complete request upstream."""
    head = POST + b"Transfer-Encoding: chunked\r\n\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(head)
        await writer.drain()
        # The head alone is valid and is forwarded; wait until it has been.
        proxy.record.arrived.clear()
        await asyncio.wait_for(proxy.record.arrived.wait(), WAIT)
        writer.write(chunks)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(-1), WAIT)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    assert_refused(data, 400)
    await proxy.settle()
    assert [seen.complete for seen in proxy.record.requests] == [False, True]


async def test_trailer_fields_are_not_merged_into_the_head(proxy: Proxy) -> None:
    """Trailer fields arriving with the head never reach the upstream as header fields."""
    data = await send_raw(
        proxy.port,
        _close(POST) + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n"
        b"X-Injected: 1\r\nAuthorization: Basic eDp5\r\nHost: b.test\r\n\r\n",
    )
    assert [a.status for a in parse_answers(data)] == [200], data
    seen = proxy.record.requests[0]
    names = [n.lower() for n, _ in seen.headers]
    assert b"x-injected" not in names and b"authorization" not in names
    assert [v for n, v in seen.headers if n.lower() == b"host"] == [b"a.test"]
    assert seen.body == b"abc"


# -- pipelining -----------------------------------------------------------------------

VALID = b"GET /first HTTP/1.1\r\nHost: a.test\r\n\r\n"


@pytest.mark.parametrize(
    ("second", "status"),
    [
        pytest.param(GET + b"Host: b.test\r\n\r\n", 400, id="two-hosts"),
        pytest.param(POST + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"3\r\nabc\r\n0\r\n\r\n", 400, id="cl-and-te"),
        pytest.param(POST + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n", 400, id="bad-chunk"),
        pytest.param(b"GET / HTTP/1.1\nHost: a.test\n\n", 400, id="bare-lf"),
        pytest.param(b"GET / HTTP/2.0\r\nHost: a.test\r\n\r\n", 505, id="version-2"),
    ],
)
async def test_pipelined_bad_request_after_good_one(
    proxy: Proxy, second: bytes, status: int
) -> None:
    """Valid then malformed in one write: 200, then the refusal and close; upstream sees one."""
    data = await send_raw(proxy.port, VALID + second)
    answers = parse_answers(data)
    assert [a.status for a in answers] == [200, status], data
    assert answers[1].headers[b"connection"] == b"close"
    await proxy.settle()
    assert proxy.record.targets() == [b"/first", b"/sentinel"]


async def test_pipelined_bad_request_after_two_good_ones(proxy: Proxy) -> None:
    """Every complete request before the malformed one is answered, in order."""
    second = VALID.replace(b"/first", b"/second")
    data = await send_raw(proxy.port, VALID + second + b"GET / HTTP/1.1\r\n\r\n")
    assert [a.status for a in parse_answers(data)] == [200, 200, 400], data
    await proxy.settle()
    assert proxy.record.targets() == [b"/first", b"/second", b"/sentinel"]


async def test_smuggled_request_in_body_is_not_a_request(proxy: Proxy) -> None:
    """A request hidden in a Content-Length body is body, not a second request."""
    hidden = b"GET /hidden HTTP/1.1\r\nHost: a.test\r\n\r\n"
    data = await send_raw(
        proxy.port,
        POST + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(hidden) + hidden,
    )
    assert [a.status for a in parse_answers(data)] == [200], data
    await proxy.settle()
    assert proxy.record.targets() == [b"/", b"/sentinel"]
    assert proxy.record.requests[0].body == hidden


# -- valid requests at the limits -----------------------------------------------------


ACCEPTED: list[tuple[str, bytes, bytes]] = [
    # (id, request, body the backend must see)
    ("head-just-under-limit", _close(GET) + b"X-A: " + b"a" * (MAX_HEAD - 200) + b"\r\n\r\n", b""),
    ("target-just-under-limit", _close(b"GET /" + b"a" * (MAX_HEAD - 300)
     + b" HTTP/1.1\r\nHost: a.test\r\n") + b"\r\n", b""),
    ("chunked-with-extensions", _close(POST) + b"Transfer-Encoding: chunked\r\n\r\n"
     b"5;name=value\r\nhello\r\n6;a;b=\"q\"\r\n world\r\n0;last\r\nX-Trailer: t\r\n\r\n",
     b"hello world"),
    ("chunked-uppercase-hex", _close(POST) + b"Transfer-Encoding: Chunked\r\n\r\n"
     b"A\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
    ("te-with-ows", _close(POST) + b"Transfer-Encoding: \t chunked  \r\n\r\n"
     b"3\r\nabc\r\n0\r\n\r\n", b"abc"),
    ("cl-with-ows", _close(POST) + b"Content-Length: \t3 \r\n\r\nabc", b"abc"),
    ("cl-zero", _close(POST) + b"Content-Length: 0\r\n\r\n", b""),
    ("http10-no-host", b"GET / HTTP/1.0\r\n\r\n", b""),
    ("http10-cl-body", b"POST / HTTP/1.0\r\nHost: a.test\r\nContent-Length: 3\r\n\r\nabc", b"abc"),
    ("host-with-port", b"GET / HTTP/1.1\r\nHost: a.test:8080\r\nConnection: close\r\n\r\n", b""),
    ("host-ipv6", b"GET / HTTP/1.1\r\nHost: [::1]:80\r\nConnection: close\r\n\r\n", b""),
    # llhttp leaves trailing whitespace in values; it is not part of them (RFC 9110 5.5).
    ("host-trailing-ows", b"GET / HTTP/1.1\r\nHost: a.test \t\r\nConnection: close\r\n\r\n",
     b""),
    ("leading-empty-line", b"\r\n" + _close(GET) + b"\r\n", b""),
    ("obs-text-value", _close(GET) + b"X-A: caf\xe9\r\n\r\n", b""),
    ("tab-in-value", _close(GET) + b"X-A: a\tb\r\n\r\n", b""),
    # RFC 9112 3 lets a recipient split the request line on any run of spaces;
    # harmless here, since the gateway writes its own request line upstream.
    ("request-line-double-space", b"GET  / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n"
     b"\r\n", b""),]


@pytest.mark.parametrize(
    ("request_bytes", "body"),
    [pytest.param(data, body, id=name) for name, data, body in ACCEPTED],
)
async def test_valid_request_at_the_limits_is_forwarded(
    proxy: Proxy, request_bytes: bytes, body: bytes
) -> None:
    """A valid request close to a limit is forwarded whole and answered 200."""
    data = await send_raw(proxy.port, request_bytes)
    assert [a.status for a in parse_answers(data)] == [200], data
    assert len(proxy.record.requests) == 1
    seen = proxy.record.requests[0]
    assert seen.complete and seen.body == body


async def test_absolute_form_host_replaces_host_header(proxy: Proxy) -> None:
    """An absolute-form target's authority is the Host the upstream sees (RFC 9112 3.2.2)."""
    data = await send_raw(
        proxy.port, b"GET http://a.test/p?q HTTP/1.1\r\nHost: b.test\r\nConnection: close\r\n\r\n"
    )
    assert [a.status for a in parse_answers(data)] == [200], data
    seen = proxy.record.requests[0]
    assert seen.target == b"/p?q"
    assert [v for n, v in seen.headers if n.lower() == b"host"] == [b"a.test"]


async def test_expect_100_continue(proxy: Proxy) -> None:
    """Expect: 100-continue gets the interim response, then the body is forwarded."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(_close(POST) + b"Expect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        await writer.drain()
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"hello")
        await writer.drain()
        data = await asyncio.wait_for(reader.read(-1), WAIT)
    finally:
        writer.close()
        await writer.wait_closed()
    assert [a.status for a in parse_answers(data)] == [200], data
    assert proxy.record.requests[0].body == b"hello"


async def test_expect_100_continue_ignored_for_http10(proxy: Proxy) -> None:
    """No 1xx is ever sent to an HTTP/1.0 client (RFC 9110 10.1.1, 15.2)."""
    data = await send_raw(
        proxy.port,
        b"POST / HTTP/1.0\r\nHost: a.test\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"
        b"hello",
    )
    assert [a.status for a in parse_answers(data)] == [200], data
    assert proxy.record.requests[0].body == b"hello"
