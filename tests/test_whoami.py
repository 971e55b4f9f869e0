"""Tests for gateway.whoami: raw sockets and aiohttp against a server on 127.0.0.1:0."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import uvloop

from gateway.whoami import parse_address, parse_duration, serve_whoami

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
async def port() -> AsyncIterator[int]:
    server = await serve_whoami("127.0.0.1", 0, name="w1")
    async with server:
        yield server.sockets[0].getsockname()[1]


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


async def read_response(reader: asyncio.StreamReader, *, head_only: bool = False) -> Response:
    """Read one response, framed by Content-Length, chunked coding, or EOF."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    line, *fields = head.rstrip("\r\n").split("\r\n")
    headers = {}
    for f in fields:
        name, _, value = f.partition(":")
        headers[name.lower()] = value.strip()
    status = int(line.split(" ")[1])
    if head_only or status in (100, 204, 304):
        return Response(status, headers, b"")
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        body = b""
        while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
            body += await reader.readexactly(size)
            await reader.readexactly(2)
        await reader.readexactly(2)
    else:
        body = await reader.read()
    return Response(status, headers, body)


async def exchange(port: int, raw: bytes, count: int = 1) -> tuple[list[Response], bool]:
    """Send ``raw``, read ``count`` responses; also whether the server then closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        responses = [await read_response(reader) for _ in range(count)]
        writer.write_eof()
        closed = await reader.read() == b""
        return responses, closed
    finally:
        writer.close()
        await writer.wait_closed()


def doc(r: Response) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(r.body)
    return result


async def test_describes_request(port: int) -> None:
    """The JSON names the request: method, target, path, query, proto, host, headers, addresses."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"http://127.0.0.1:{port}/some/path?x=1&y=2",
            data=b"z" * 1000,
            headers=[("X-Test", "a"), ("X-Test", "b")],
        ) as resp,
    ):
        assert resp.status == 200
        assert resp.content_type == "application/json"
        body = await resp.json()
    assert body["hostname"] == socket.gethostname()
    assert body["name"] == "w1"
    assert body["ip"] == ["127.0.0.1"]
    assert re.fullmatch(r"127\.0\.0\.1:\d+", body["remote_addr"])
    assert body["method"] == "POST"
    assert body["url"] == "/some/path?x=1&y=2"
    assert body["path"] == "/some/path"
    assert body["query"] == "x=1&y=2"
    assert body["proto"] == "HTTP/1.1"
    assert body["host"] == f"127.0.0.1:{port}"
    assert body["headers"]["X-Test"] == ["a", "b"]
    assert body["body_bytes"] == 1000


async def test_chunked_request_body_counted(port: int) -> None:
    """A chunked request body is read and counted."""
    raw = (
        b"PUT /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    (resp,), _ = await exchange(port, raw)
    assert doc(resp)["body_bytes"] == 11


async def test_expect_100_continue(port: int) -> None:
    """Expect: 100-continue gets an interim 100 before the body is sent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
        )
        assert (await read_response(reader)).status == 100
        writer.write(b"body")
        assert doc(await read_response(reader))["body_bytes"] == 4
    finally:
        writer.close()
        await writer.wait_closed()


async def test_keep_alive_and_pipelining_in_order(port: int) -> None:
    """Pipelined requests on one connection are answered in order, a delayed one included."""
    raw = b"".join(
        f"GET /{name} HTTP/1.1\r\nHost: h\r\n\r\n".encode()
        for name in ("one", "two?wait=20ms", "bench", "three")
    )
    responses, closed = await exchange(port, raw, count=4)
    assert doc(responses[0])["url"] == "/one"
    assert doc(responses[1])["url"] == "/two?wait=20ms"
    assert responses[2].body == b"1"
    assert doc(responses[3])["url"] == "/three"
    assert all("connection" not in r.headers for r in responses)
    assert closed  # only because the client sent EOF


async def test_many_pipelined_requests_behind_a_delay(port: int) -> None:
    """Far more pipelined requests than the queue holds all get answers, in order."""
    raw = b"GET /first?wait=10ms HTTP/1.1\r\nHost: h\r\n\r\n" + b"".join(
        f"GET /n{i} HTTP/1.1\r\nHost: h\r\n\r\n".encode() for i in range(200)
    )
    responses, _ = await exchange(port, raw, count=201)
    assert [doc(r)["path"] for r in responses] == ["/first"] + [f"/n{i}" for i in range(200)]


@pytest.mark.parametrize(
    ("request_head", "connection", "stays_open"),
    [
        (b"GET / HTTP/1.0\r\n\r\n", "close", False),
        (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", "keep-alive", True),
        (b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", "close", False),
    ],
    ids=["http10-closes", "http10-keep-alive", "http11-connection-close"],
)
async def test_connection_semantics(
    port: int, request_head: bytes, connection: str, stays_open: bool
) -> None:
    """HTTP/1.0 closes unless asked to keep alive; Connection: close closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request_head)
        first = await read_response(reader)
        assert first.headers["connection"] == connection
        assert doc(first)["proto"] == request_head.split(b"\r\n")[0][-8:].decode()
        if stays_open:
            writer.write(b"GET /bench HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            assert (await read_response(reader)).body == b"1"
        else:
            assert await reader.read() == b""
    finally:
        writer.close()
        await writer.wait_closed()


@pytest.mark.parametrize(
    ("target", "status", "ctype", "body"),
    [
        ("/health", 200, "text/plain", b"OK"),
        ("/bench", 200, "text/plain", b"1"),
        ("/data?size=10", 200, "application/octet-stream", b"0123456789"),
        ("/data?size=x", 400, "text/plain", b"invalid size\n"),
        ("/x?wait=soon", 400, "text/plain", b"invalid wait\n"),
        ("/status/abc", 400, "text/plain", b"status must be 200-599\n"),
    ],
    ids=["health", "bench", "small-data", "bad-size", "bad-wait", "bad-status"],
)
async def test_special_paths(port: int, target: str, status: int, ctype: str, body: bytes) -> None:
    """Special paths answer fixed bodies; bad parameters are 400s."""
    (resp,), _ = await exchange(port, f"GET {target} HTTP/1.1\r\nHost: h\r\n\r\n".encode())
    assert (resp.status, resp.headers["content-type"], resp.body) == (status, ctype, body)


@pytest.mark.parametrize("code", [201, 418, 503], ids=["201", "418", "503"])
async def test_status_path(port: int, code: int) -> None:
    """/status/NNN answers NNN with the usual JSON."""
    (resp,), _ = await exchange(port, f"GET /status/{code} HTTP/1.1\r\nHost: h\r\n\r\n".encode())
    assert resp.status == code
    assert doc(resp)["path"] == f"/status/{code}"


async def test_status_204_has_no_body(port: int) -> None:
    """/status/204 answers with no body and no Content-Length, and keeps the connection."""
    raw = b"GET /status/204 HTTP/1.1\r\nHost: h\r\n\r\nGET /bench HTTP/1.1\r\nHost: h\r\n\r\n"
    (r204, bench), _ = await exchange(port, raw, count=2)
    assert r204.status == 204
    assert "content-length" not in r204.headers
    assert bench.body == b"1"


def expected_data(size: int) -> bytes:
    pattern = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-\n"
    block = (pattern * (65536 // len(pattern) + 1))[:65536]
    return (block * (size // 65536 + 1))[:size]


async def test_large_data_streams_chunked(port: int) -> None:
    """/data with a large size streams chunked over HTTP/1.1, every byte intact."""
    size = 8 * 1024 * 1024 + 123
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/data?size={size}") as resp,
    ):
        assert resp.headers["Transfer-Encoding"] == "chunked"
        body = await resp.read()
    assert body == expected_data(size)


async def test_large_data_http10_uses_content_length(port: int) -> None:
    """HTTP/1.0 clients get large /data with Content-Length, not chunked."""
    size = 200_000
    (resp,), closed = await exchange(port, f"GET /data?size={size} HTTP/1.0\r\n\r\n".encode())
    assert resp.headers["content-length"] == str(size)
    assert resp.body == expected_data(size)
    assert closed


async def test_wait_delays_response(port: int) -> None:
    """?wait=50ms answers no sooner than 50 ms later."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    (resp,), _ = await exchange(port, b"GET /?wait=50ms HTTP/1.1\r\nHost: h\r\n\r\n")
    assert resp.status == 200
    assert loop.time() - started >= 0.05


async def test_head_has_no_body(port: int) -> None:
    """HEAD gets the GET headers, Content-Length included, and no body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            b"HEAD /health HTTP/1.1\r\nHost: h\r\n\r\nGET /bench HTTP/1.1\r\nHost: h\r\n\r\n"
        )
        head = await read_response(reader, head_only=True)
        assert head.headers["content-length"] == "2"
        assert (await read_response(reader)).body == b"1"
    finally:
        writer.close()
        await writer.wait_closed()


async def test_malformed_request_gets_400_and_close(port: int) -> None:
    """A request httptools cannot parse gets a 400 and the connection closes."""
    (resp,), closed = await exchange(port, b"NOT HTTP AT ALL\r\n\r\n")
    assert resp.status == 400
    assert resp.headers["connection"] == "close"
    assert closed


def test_serves_on_uvloop() -> None:
    """The server runs on uvloop too."""

    async def main() -> bytes:
        server = await serve_whoami("127.0.0.1", 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            (resp,), _ = await exchange(port, b"GET /bench HTTP/1.1\r\nHost: h\r\n\r\n")
            return resp.body

    assert uvloop.run(main()) == b"1"


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:8081", ("127.0.0.1", 8081)),
        (":8081", ("", 8081)),
        ("[::1]:80", ("::1", 80)),
        ("localhost:0", ("localhost", 0)),
    ],
    ids=["ipv4", "all-interfaces", "ipv6", "name"],
)
def test_parse_address(address: str, expected: tuple[str, int]) -> None:
    """Addresses are host:port, [v6]:port or :port."""
    assert parse_address(address) == expected


@pytest.mark.parametrize("address", ["8081", "host:", "h:99999", "h:x"], ids=str)
def test_parse_address_rejects(address: str) -> None:
    """Addresses without a valid port are rejected."""
    with pytest.raises(ValueError, match="expected host:port"):
        parse_address(address)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("100ms", 0.1), ("1m30s", 90.0), ("1.5s", 1.5), ("250us", 0.00025), ("2h", 7200.0)],
    ids=["ms", "compound", "fraction", "us", "h"],
)
def test_parse_duration(text: str, seconds: float) -> None:
    """Go durations convert to seconds."""
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "10", "ms", "1d", "1s x"], ids=str)
def test_parse_duration_rejects(text: str) -> None:
    """Numbers without units and unknown units are rejected."""
    with pytest.raises(ValueError):
        parse_duration(text)


def test_run_whoami_cli_lifecycle() -> None:
    """run_whoami serves, logs its bound address, and exits cleanly on SIGTERM."""
    script = (
        "import logging, sys; logging.basicConfig(level=logging.INFO, stream=sys.stdout);"
        "from gateway.whoami import run_whoami; run_whoami('127.0.0.1:0', 'cli')"
    )
    with subprocess.Popen(
        [sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
        assert match, line
        with socket.create_connection(("127.0.0.1", int(match.group(1)))) as sock:
            sock.sendall(b"GET /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        assert b'"name": "cli"' in data
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert "stopped" in proc.stdout.read()
