"""The ``buffering`` middleware through a running gateway: limits, framing, load errors."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.backends import RecordingBackend, Reply, Seen, default_response, read_reply
from tests.harness import RunningGateway, start_gateway

BIG = b"".join(b"row %06d of a large upstream body\n" % i for i in range(2000))


def responder(seen: Seen) -> bytes:
    """/big answers BIG with a Content-Length, /chunked the same in chunks, else the echo."""
    if seen.target == "/big":
        head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n" % len(BIG)
        return (
            head
            + b"Keep-Alive: timeout=5\r\nConnection: keep-alive, X-Private\r\n"
            + (b"X-Private: 1\r\n\r\n" + BIG)
        )
    if seen.target == "/chunked":
        pieces = [BIG[i : i + 4096] for i in range(0, len(BIG), 4096)]
        body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
        return (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
            + body
        )
    return default_response(seen)


def dynamic(url: str, options: str, middlewares: str = "[b]", extra: str = "") -> str:
    return f"""
http:
  routers:
    app:
      rule: Host(`app.test`)
      service: app
      middlewares: {middlewares}
  services:
    app:
      loadBalancer:
        servers: [{{url: "{url}"}}]
  middlewares:
    b:
      buffering: {options}
{extra}"""


@dataclass
class Site:
    gw: RunningGateway
    backend: RecordingBackend

    async def send(self, raw: bytes) -> Reply:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.gw.port())
        try:
            writer.write(raw)
            return await read_reply(reader)
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def site(tmp_path: Path, options: str, **kw: str) -> AsyncIterator[Site]:
    backend = await RecordingBackend(responder=responder).start()
    gw = await start_gateway(tmp_path, dynamic(backend.url, options, **kw))
    try:
        yield Site(gw, backend)
    finally:
        await gw.stop()
        await backend.close()


def chunked_post(body: bytes, piece: int = 1000) -> bytes:
    parts = [body[i : i + piece] for i in range(0, len(body), piece)]
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts)
    head = b"POST /upload HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n"
    return head + chunks + b"0\r\n\r\n"


def get(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: app.test\r\n{extra}\r\n".encode()


# -- requests ----------------------------------------------------------------------------


async def test_chunked_request_reaches_upstream_with_content_length(tmp_path):
    """A chunked request body is read whole and forwarded with a Content-Length."""
    body = bytes(range(256)) * 40
    async with site(tmp_path, "{maxRequestBodyBytes: 20000}") as s:
        reply = await s.send(chunked_post(body))
        assert reply.status == 200
        seen = s.backend.requests[-1]
        assert seen.header("content-length") == str(len(body))
        assert seen.header("transfer-encoding") is None
        assert seen.body == body


async def test_body_at_the_limit_is_accepted(tmp_path):
    """A body exactly maxRequestBodyBytes long is forwarded."""
    async with site(tmp_path, "{maxRequestBodyBytes: 3000}") as s:
        assert (await s.send(chunked_post(b"x" * 3000))).status == 200
        assert len(s.backend.requests[-1].body) == 3000


async def test_oversize_chunked_request_is_refused_with_413(tmp_path):
    """A chunked body over maxRequestBodyBytes gets 413 and never reaches the upstream."""
    async with site(tmp_path, "{maxRequestBodyBytes: 3000}") as s:
        reply = await s.send(chunked_post(b"x" * 3001))
        assert reply.status == 413
        assert reply.body == b"Request Entity Too Large"
        assert s.backend.requests == []


async def test_declared_oversize_request_is_refused_before_its_body(tmp_path):
    """A Content-Length over the limit is answered with 413 without waiting for the body."""
    async with site(tmp_path, "{maxRequestBodyBytes: 3000}") as s:
        head = b"POST /upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: 1000000\r\n\r\n"
        reply = await s.send(head + b"x" * 100)
        assert reply.status == 413
        assert reply.header("connection") == "close"
        assert s.backend.requests == []


async def test_unset_limit_still_bounds_memory(tmp_path):
    """maxRequestBodyBytes: 0 holds at most 64 MiB in memory; a larger declared body is 413."""
    async with site(tmp_path, "{memRequestBodyBytes: 1024}") as s:
        length = 64 * 1024 * 1024 + 1
        head = b"POST /up HTTP/1.1\r\nHost: app.test\r\nContent-Length: %d\r\n\r\n" % length
        reply = await s.send(head + b"x" * 100)
        assert reply.status == 413
        assert s.backend.requests == []


async def test_expect_continue_body_is_read(tmp_path):
    """A client waiting for 100 Continue is told to send, and its body is forwarded whole."""
    async with site(tmp_path, "{}") as s:
        reader, writer = await asyncio.open_connection("127.0.0.1", s.gw.port())
        try:
            writer.write(
                b"POST /upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\n"
                b"Expect: 100-continue\r\n\r\n"
            )
            interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert interim.startswith(b"HTTP/1.1 100")
            writer.write(b"hello")
            reply = await read_reply(reader)
        finally:
            writer.close()
        assert reply.status == 200
        assert s.backend.requests[-1].body == b"hello"


# -- responses ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/big", "/chunked"])
async def test_oversize_response_becomes_500(tmp_path, path):
    """A response body over maxResponseBodyBytes is dropped and answered with 500."""
    async with site(tmp_path, f"{{maxResponseBodyBytes: {len(BIG) - 1}}}") as s:
        reply = await s.send(get(path))
        assert reply.status == 500
        assert reply.body == b"Internal Server Error"
        # The gateway still serves the next request.
        assert (await s.send(get("/"))).status == 200


@pytest.mark.parametrize("path", ["/big", "/chunked"])
async def test_response_within_limit_is_sent_with_length(tmp_path, path):
    """A buffered response is sent whole with a Content-Length, hop-by-hop fields dropped."""
    async with site(tmp_path, f"{{maxResponseBodyBytes: {len(BIG)}}}") as s:
        reply = await s.send(get(path))
        assert reply.status == 200
        assert reply.header("content-length") == str(len(BIG))
        assert reply.header("transfer-encoding") is None
        assert (reply.header("keep-alive"), reply.header("x-private")) == (None, None)
        assert reply.header("content-type") == "text/plain"
        assert reply.body == BIG


async def test_response_streams_without_a_response_limit(tmp_path):
    """Without maxResponseBodyBytes the response is relayed as the upstream framed it."""
    async with site(tmp_path, "{maxRequestBodyBytes: 10}") as s:
        reply = await s.send(get("/chunked"))
        assert reply.header("transfer-encoding") == "chunked"
        assert reply.body == BIG


async def test_inner_compression_applies_to_the_buffered_body(tmp_path):
    """With compress inside buffering, the body read whole is still coded as announced."""
    extra = "    c:\n      compress: {}\n"
    async with site(
        tmp_path, "{maxResponseBodyBytes: 1000000}", middlewares="[b, c]", extra=extra
    ) as s:
        reply = await s.send(get("/chunked", "Accept-Encoding: gzip\r\n"))
        assert reply.header("content-encoding") == "gzip"
        assert reply.header("content-length") == str(len(reply.body))
        assert gzip.decompress(reply.body) == BIG


# -- configuration ------------------------------------------------------------------------

BAD = {
    "negative-max-request": ("{maxRequestBodyBytes: -1}", "maxRequestBodyBytes: must be >= 0"),
    "negative-mem-response": ("{memResponseBodyBytes: -5}", "memResponseBodyBytes: must be >= 0"),
    "wrong-type": ("{maxResponseBodyBytes: big}", "maxResponseBodyBytes"),
    "unknown-key": ("{maxBodyBytes: 1}", "maxBodyBytes"),
}


@pytest.mark.parametrize(("options", "message"), BAD.values(), ids=BAD.keys())
async def test_invalid_options_are_rejected_at_load(tmp_path, options, message):
    """Bad buffering options are a load error naming the key; the old configuration serves."""
    async with site(tmp_path, "{maxRequestBodyBytes: 3000}") as s:
        errors = await s.gw.reload(dynamic(s.backend.url, options), expect_ok=False)
        text = str(errors[0])  # type: ignore[index]
        assert message in text
        assert "dynamic.yml:" in text and "http.middlewares.b" in text
        assert (await s.send(chunked_post(b"x" * 3001))).status == 413


async def test_retry_expression_is_accepted_with_a_warning(tmp_path, caplog):
    """retryExpression loads, and a warning says it is not applied."""
    caplog.set_level(logging.WARNING, logger="middleware.http.buffering")
    options = '{retryExpression: "IsNetworkError() && Attempts() < 2"}'
    async with site(tmp_path, options) as s:
        assert (await s.send(chunked_post(b"abc"))).status == 200
        assert any("retryExpression" in r.getMessage() for r in caplog.records)
