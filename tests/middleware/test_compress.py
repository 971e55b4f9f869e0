"""The ``compress`` middleware through a running gateway, checked by real decoders."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import brotli
import pytest
import zstandard
from aiohttp import web

from tests.backends import Reply, read_reply
from tests.harness import RunningGateway, start_gateway

TEXT = b"".join(b"line %05d of a compressible body\n" % i for i in range(1000))
PART1 = b"first part of the stream " * 10
PART2 = b"second part of the stream " * 10


def decode(encoding: str, data: bytes) -> bytes:
    if encoding == "gzip":
        return gzip.decompress(data)
    if encoding == "br":
        return bytes(brotli.decompress(data))
    # A streamed zstd frame carries no content size, so decode it as a stream.
    return bytes(zstandard.ZstdDecompressor().decompressobj().decompress(data))


def incremental(encoding: str) -> Callable[[bytes], bytes]:
    if encoding == "gzip":
        return zlib.decompressobj(wbits=31).decompress
    if encoding == "br":
        return brotli.Decompressor().process  # type: ignore[no-any-return]
    return zstandard.ZstdDecompressor().decompressobj().decompress


async def backend_app(release: asyncio.Event) -> web.AppRunner:
    """An aiohttp upstream: /big, /small, /stream (waits for ``release``), /status/N, /typed."""

    async def big(request: web.Request) -> web.Response:
        return web.Response(body=TEXT, headers={"Content-Type": "text/plain"})

    async def small(request: web.Request) -> web.Response:
        return web.Response(body=TEXT[:100], headers={"Content-Type": "text/plain"})

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(PART1)
        await release.wait()
        await response.write(PART2)
        await response.write_eof()
        return response

    async def status(request: web.Request) -> web.Response:
        code = int(request.match_info["code"])
        headers = {"Content-Type": "text/plain"}
        if code == 206:
            headers["Content-Range"] = f"bytes 0-{len(TEXT) - 1}/{len(TEXT) * 2}"
        return web.Response(status=code, body=TEXT if code == 206 else None, headers=headers)

    async def typed(request: web.Request) -> web.Response:
        headers = {k[4:]: v for k, v in request.query.items() if k.startswith("set-")}
        return web.Response(body=TEXT, headers=headers)

    app = web.Application()
    app.router.add_get("/big", big)
    app.router.add_get("/small", small)
    app.router.add_get("/stream", stream)
    app.router.add_get("/status/{code}", status)
    app.router.add_get("/typed", typed)
    app.router.add_post("/typed", typed)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner


def dynamic(port: int, options: str, middlewares: str = "[c]", extra: str = "") -> str:
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
        servers: [{{url: "http://127.0.0.1:{port}"}}]
  middlewares:
    c:
      compress: {options}
{extra}"""


@dataclass
class Site:
    gw: RunningGateway
    release: asyncio.Event
    upstream: int

    async def get(self, path: str, extra: str = "", *, method: str = "GET") -> Reply:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.gw.port())
        try:
            head = f"{method} {path} HTTP/1.1\r\nHost: app.test\r\n{extra}"
            body = "Content-Length: 0\r\n" if method == "POST" else ""
            writer.write(f"{head}{body}\r\n".encode())
            return await read_reply(reader, head_only=method == "HEAD")
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def site(tmp_path: Path, options: str = "{}", **kw: str) -> AsyncIterator[Site]:
    release = asyncio.Event()
    runner = await backend_app(release)
    port = runner.addresses[0][1]
    gw = await start_gateway(tmp_path, dynamic(port, options, **kw))
    try:
        yield Site(gw, release, port)
    finally:
        release.set()
        await gw.stop()
        await runner.cleanup()


def accept(value: str) -> str:
    return f"Accept-Encoding: {value}\r\n"


# -- round trips -------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["gzip", "br"])
async def test_aiohttp_client_decodes_the_compressed_body(tmp_path, encoding):
    """aiohttp's automatic decompression gets the original body back (gzip and br)."""
    async with site(tmp_path) as s, aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{s.gw.port()}/big"
        headers = {"Host": "app.test", "Accept-Encoding": encoding}
        async with session.get(url, headers=headers) as response:
            assert response.status == 200
            assert response.headers["Content-Encoding"] == encoding
            assert "Content-Length" not in response.headers
            assert response.headers["Vary"] == "Accept-Encoding"
            assert await response.read() == TEXT


@pytest.mark.parametrize("encoding", ["gzip", "br", "zstd"])
async def test_raw_body_decodes_with_the_encoding_library(tmp_path, encoding):
    """The body on the wire is a valid gzip, Brotli or Zstandard stream of the original."""
    async with site(tmp_path) as s:
        reply = await s.get("/big", accept(encoding))
        assert reply.status == 200
        assert reply.header("content-encoding") == encoding
        assert reply.header("transfer-encoding") == "chunked"
        assert len(reply.body) < len(TEXT) // 4
        assert decode(encoding, reply.body) == TEXT


@pytest.mark.parametrize("encoding", ["gzip", "br", "zstd"])
async def test_streamed_response_is_flushed_piece_by_piece(tmp_path, encoding):
    """A chunked upstream response is compressed as it streams: the first part decodes
    before the upstream sends the rest."""
    async with site(tmp_path) as s:
        reader, writer = await asyncio.open_connection("127.0.0.1", s.gw.port())
        try:
            writer.write(
                f"GET /stream HTTP/1.1\r\nHost: app.test\r\n{accept(encoding)}\r\n".encode()
            )
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert f"Content-Encoding: {encoding}".encode() in head
            feed, seen = incremental(encoding), b""
            while len(seen) < len(PART1):
                size = int(await asyncio.wait_for(reader.readline(), 10), 16)
                seen += feed((await asyncio.wait_for(reader.readexactly(size + 2), 10))[:-2])
            assert seen == PART1
            s.release.set()
            rest = await read_rest(reader)
            assert seen + feed(rest) == PART1 + PART2
        finally:
            writer.close()


async def read_rest(reader: asyncio.StreamReader) -> bytes:
    out = b""
    while size := int(await asyncio.wait_for(reader.readline(), 10), 16):
        out += (await asyncio.wait_for(reader.readexactly(size + 2), 10))[:-2]
    return out


async def test_small_response_is_left_alone(tmp_path):
    """A response whose Content-Length is below minResponseBodyBytes is sent as is."""
    async with site(tmp_path) as s:
        reply = await s.get("/small", accept("gzip"))
        assert reply.header("content-encoding") is None
        assert reply.header("content-length") == "100"
        assert reply.body == TEXT[:100]
        assert reply.header("vary") == "Accept-Encoding"


async def test_min_response_body_bytes_is_configurable(tmp_path):
    """minResponseBodyBytes lowers the size from which responses are compressed."""
    async with site(tmp_path, "{minResponseBodyBytes: 50}") as s:
        reply = await s.get("/small", accept("gzip"))
        assert reply.header("content-encoding") == "gzip"
        assert gzip.decompress(reply.body) == TEXT[:100]


# -- negotiation --------------------------------------------------------------------------

NEGOTIATION = {
    "gzip": ("{}", accept("gzip"), "gzip"),
    "all-prefers-zstd": ("{}", accept("gzip, deflate, br, zstd"), "zstd"),
    "q-values": ("{}", accept("zstd;q=0.5, gzip;q=1.0, br;q=0.8"), "gzip"),
    "tie-by-priority": ("{}", accept("gzip;q=0.9, br;q=0.9, zstd;q=0"), "br"),
    "identity": ("{}", accept("identity"), None),
    "identity-preferred": ("{}", accept("identity, gzip;q=0.5"), None),
    "wildcard": ("{}", accept("*"), "zstd"),
    "wildcard-default": ("{defaultEncoding: gzip}", accept("*"), "gzip"),
    "wildcard-lower": ("{}", accept("*;q=0.1, br;q=0.5"), "br"),
    "unsupported": ("{}", accept("deflate, compress"), None),
    "empty": ("{}", accept(""), None),
    "absent": ("{}", "", None),
    "absent-default": ("{defaultEncoding: br}", "", "br"),
    "case-insensitive": ("{}", accept("GZIP"), "gzip"),
    "two-fields": ("{}", accept("identity;q=0.5") + accept("br"), "br"),
    "encodings-option": ("{encodings: [gzip]}", accept("br, zstd"), None),
    "encodings-order": ("{encodings: [gzip, br]}", accept("br, gzip, zstd"), "gzip"),
}


@pytest.mark.parametrize(
    ("options", "extra", "expected"), NEGOTIATION.values(), ids=NEGOTIATION.keys()
)
async def test_accept_encoding_negotiation(tmp_path, options, extra, expected):
    """The coding follows Accept-Encoding as Traefik ranks it, or none at all."""
    async with site(tmp_path, options) as s:
        reply = await s.get("/big", extra)
        assert reply.status == 200
        assert reply.header("content-encoding") == expected
        body = decode(expected, reply.body) if expected else reply.body
        assert body == TEXT


# -- responses left alone -------------------------------------------------------------------

T = "/typed?set-Content-Type="
# (options, path, extra request fields, method, status, Content-Encoding, Vary)
LEFT_ALONE = {
    "head": ("{}", "/big", "", "HEAD", 200, None, None),
    "no-content": ("{}", "/status/204", "", "GET", 204, None, "Accept-Encoding"),
    "not-modified": ("{}", "/status/304", "", "GET", 304, None, "Accept-Encoding"),
    "partial": ("{}", "/status/206", "", "GET", 206, None, "Accept-Encoding"),
    "already-coded": (
        "{}",
        T + "text/plain&set-Content-Encoding=br",
        "",
        "GET",
        200,
        "br",
        "Accept-Encoding",
    ),
    "grpc": ("{}", T + "application/grpc", "", "GET", 200, None, "Accept-Encoding"),
    "excluded": (
        "{excludedContentTypes: [text/event-stream]}",
        T + "text/event-stream;+charset=utf-8",
        "",
        "GET",
        200,
        None,
        "Accept-Encoding",
    ),
    "excluded-with-params": (
        "{excludedContentTypes: ['text/plain; charset=ascii']}",
        T + "text/plain;+charset=ascii",
        "",
        "GET",
        200,
        None,
        "Accept-Encoding",
    ),
    "not-included": (
        "{includedContentTypes: [text/html]}",
        T + "text/css",
        "",
        "GET",
        200,
        None,
        "Accept-Encoding",
    ),
    "unparsable-type": ("{}", T + "text/", "", "GET", 200, None, "Accept-Encoding"),
    "grpc-request": (
        "{}",
        T + "text/plain",
        "Content-Type: application/grpc\r\n",
        "POST",
        200,
        None,
        None,
    ),
}


@pytest.mark.parametrize(
    ("options", "path", "extra", "method", "status", "encoding", "vary"),
    LEFT_ALONE.values(),
    ids=LEFT_ALONE.keys(),
)
async def test_responses_that_are_not_compressed(
    tmp_path, options, path, extra, method, status, encoding, vary
):
    """HEAD, bodiless, partial, already coded and excluded responses pass uncompressed."""
    async with site(tmp_path, options) as s:
        reply = await s.get(path, accept("gzip") + extra, method=method)
        assert reply.status == status
        assert reply.header("content-encoding") == encoding
        assert reply.header("vary") == vary
        if status in (200, 206) and method != "HEAD":
            assert reply.body == TEXT
        if method == "HEAD":
            assert reply.header("content-length") == str(len(TEXT))


COMPRESSED = {
    "included": (
        "{includedContentTypes: [text/html, application/json]}",
        "text/html; charset=utf-8",
    ),
    "params-differ": (
        "{excludedContentTypes: ['text/plain; charset=ascii']}",
        "text/plain; charset=utf-8",
    ),
    "no-content-type": ("{}", None),
}


@pytest.mark.parametrize(("options", "ctype"), COMPRESSED.values(), ids=COMPRESSED.keys())
async def test_content_type_rules_let_these_through(tmp_path, options, ctype):
    """Included types, other parameters than an excluded type's, and no type are compressed."""
    async with site(tmp_path, options) as s:
        path = "/typed" + (f"?set-Content-Type={ctype.replace(' ', '+')}" if ctype else "")
        reply = await s.get(path, accept("gzip"))
        assert reply.header("content-encoding") == "gzip"
        assert gzip.decompress(reply.body) == TEXT


async def test_existing_vary_is_extended_once(tmp_path):
    """An upstream Vary gets Accept-Encoding appended, and never twice."""
    async with site(tmp_path) as s:
        reply = await s.get("/typed?set-Vary=Cookie&set-Content-Type=text/plain", accept("gzip"))
        assert [v for k, v in reply.headers if k.lower() == "vary"] == ["Cookie, Accept-Encoding"]
        reply = await s.get("/typed?set-Vary=accept-encoding", accept("gzip"))
        assert [v for k, v in reply.headers if k.lower() == "vary"] == ["accept-encoding"]


async def test_generated_body_is_compressed_whole(tmp_path):
    """A body read whole by an inner middleware (buffering) is compressed in one piece."""
    buffering = "    b:\n      buffering: {maxResponseBodyBytes: 1000000}\n"
    async with site(tmp_path, middlewares="[c, b]", extra=buffering) as s:
        reply = await s.get("/big", accept("zstd"))
        assert reply.header("content-encoding") == "zstd"
        assert reply.header("content-length") == str(len(reply.body))
        assert zstandard.ZstdDecompressor().decompress(reply.body) == TEXT


# -- configuration errors ---------------------------------------------------------------------

BAD = {
    "exclusive": (
        "{excludedContentTypes: [text/css], includedContentTypes: [text/html]}",
        "mutually exclusive",
    ),
    "unknown-encoding": (
        "{encodings: [gzip, deflate]}",
        "encodings: unsupported encoding 'deflate'",
    ),
    "no-encoding": ("{encodings: []}", "encodings: at least one"),
    "default-not-listed": ("{encodings: [gzip], defaultEncoding: br}", "defaultEncoding"),
    "bad-media-type": ("{excludedContentTypes: ['text/']}", "excludedContentTypes[0]"),
    "wrong-type": ("{minResponseBodyBytes: lots}", "minResponseBodyBytes"),
}


@pytest.mark.parametrize(("options", "message"), BAD.values(), ids=BAD.keys())
async def test_invalid_options_are_rejected_at_load(tmp_path, options, message):
    """Bad compress options are a load error naming the key; the old configuration serves."""
    async with site(tmp_path) as s:
        errors = await s.gw.reload(dynamic(s.upstream, options), expect_ok=False)
        message_text = str(errors[0])  # type: ignore[index]
        assert message in message_text
        assert "dynamic.yml:" in message_text and "http.middlewares.c" in message_text
        reply = await s.get("/big", accept("gzip"))
        assert reply.header("content-encoding") == "gzip"
