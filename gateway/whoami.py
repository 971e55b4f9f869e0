"""The demo backend: Traefik's ``whoami`` over raw asyncio and httptools.

Every request gets a JSON description of itself (host name, addresses, method,
target, headers, body size) unless its path is special:

* ``/health`` answers 200 ``OK``; ``/bench`` answers a one-byte ``1`` (the
  benchmark backend's stand-in, so it is rendered once and reused);
* ``/data?size=N`` answers N bytes, chunked when large (HTTP/1.1), written
  under the transport's flow control;
* ``/status/NNN`` answers with that status;
* ``?wait=100ms`` (Go duration) delays any answer.

Connections keep alive per HTTP/1.1 and 1.0 rules (httptools decides);
pipelined requests are answered in order: the fast path writes at once, and a
queue drained by one task takes over whenever a response must wait. Request
bodies, chunked or not, are read and counted; ``Expect: 100-continue`` gets
its interim response in order.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import re
import signal
import socket
from dataclasses import dataclass
from http import HTTPStatus
from typing import cast
from urllib.parse import parse_qs

import httptools

log = logging.getLogger(__name__)

DATA_CHUNK = 64 * 1024
MAX_QUEUED = 32  # pipelined requests held before reading pauses
_PATTERN = (b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-\n" * 1024)[
    :DATA_CHUNK
]
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_CLOSE = object()  # queue marker: close once everything before it is written


def parse_duration(text: str) -> float:
    """Seconds in a Go duration such as ``1m30s`` or ``250ms``."""
    pos, total = 0, 0.0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"invalid duration {text!r}")
    return total


def parse_address(address: str) -> tuple[str, int]:
    """``host:port``, ``[v6]:port`` or ``:port`` (every interface) as (host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"address {address!r}: expected host:port or :port")
    return host.removeprefix("[").removesuffix("]"), int(port)


def _head(status: int, fields: list[tuple[str, str]], keep_alive: bool, http10: bool) -> bytes:
    phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else ""
    lines = [f"HTTP/1.1 {status} {phrase}"]
    lines += [f"{k}: {v}" for k, v in fields]
    if not keep_alive:
        lines.append("Connection: close")
    elif http10:
        lines.append("Connection: keep-alive")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _simple(status: int, ctype: str, body: bytes, keep_alive: bool, http10: bool) -> bytes:
    fields = [("Content-Type", ctype), ("Content-Length", str(len(body)))]
    return _head(status, fields, keep_alive, http10) + body


_BENCH = {
    (keep_alive, http10): _simple(200, "text/plain", b"1", keep_alive, http10)
    for keep_alive in (True, False)
    for http10 in (True, False)
}


@dataclass(slots=True)
class _Request:
    method: str
    target: bytes
    version: str
    headers: list[tuple[bytes, bytes]]
    body_bytes: int
    keep_alive: bool


class _WhoamiProtocol(asyncio.Protocol):
    """One client connection: parses with httptools, answers in request order."""

    def __init__(self, name: str, hostname: str) -> None:
        self._name = name
        self._hostname = hostname
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._peer = ""
        self._local = ""
        self._queue: collections.deque[object] = collections.deque()
        self._worker: asyncio.Task[None] | None = None
        self._writable = asyncio.Event()
        self._writable.set()
        self._closed = False
        self._reading_paused = False
        self._reset()

    def _reset(self) -> None:
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._body_bytes = 0

    # --- asyncio.Protocol ----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        local = transport.get_extra_info("sockname")
        self._peer = _host_port(peer) if peer else ""
        self._local = local[0] if local else ""

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._close_after_pending()  # no protocol switch here: answer, then close
        except httptools.HttpParserError:
            self._send(_simple(400, "text/plain", b"Bad Request\n", False, False))
            self._close_after_pending()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._writable.set()
        if self._worker is not None:
            self._worker.cancel()

    def pause_writing(self) -> None:
        self._writable.clear()
        self._update_reading()

    def resume_writing(self) -> None:
        self._writable.set()
        self._update_reading()

    def _update_reading(self) -> None:
        """Stop reading while the client does not read, or too many answers wait."""
        transport = self._transport
        if transport is None or self._closed:
            return
        pause = not self._writable.is_set() or len(self._queue) > MAX_QUEUED
        if pause != self._reading_paused:
            self._reading_paused = pause
            if pause:
                transport.pause_reading()
            else:
                transport.resume_reading()

    # --- httptools callbacks ---------------------------------------------------

    def on_message_begin(self) -> None:
        self._reset()

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        http11 = self._parser.get_http_version() == "1.1"
        expect = any(
            k.lower() == b"expect" and v.lower() == b"100-continue" for k, v in self._headers
        )
        if expect and http11:
            self._send(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)

    def on_message_complete(self) -> None:
        request = _Request(
            method=self._parser.get_method().decode("ascii", "replace"),
            target=self._url,
            version=self._parser.get_http_version(),
            headers=self._headers,
            body_bytes=self._body_bytes,
            keep_alive=self._parser.should_keep_alive(),
        )
        self._send(request)
        if not request.keep_alive:
            self._close_after_pending()

    # --- responding ------------------------------------------------------------

    def _send(self, item: object) -> None:
        """Write ``item`` now if nothing is waiting, else queue it behind the rest."""
        transport = self._transport
        if transport is None or self._closed:
            return
        if self._worker is None:
            if isinstance(item, bytes):
                transport.write(item)
                return
            if isinstance(item, _Request):
                fast = self._render_now(item)
                if fast is not None:
                    transport.write(fast)
                    return
        self._queue.append(item)
        self._update_reading()
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._drain())

    def _close_after_pending(self) -> None:
        if self._worker is None:
            if self._transport is not None:
                self._transport.close()
            self._closed = True
        else:
            self._queue.append(_CLOSE)

    async def _drain(self) -> None:
        transport = self._transport
        assert transport is not None
        try:
            while self._queue and not self._closed:
                item = self._queue.popleft()
                if item is _CLOSE:
                    transport.close()
                    self._closed = True
                elif isinstance(item, bytes):
                    transport.write(item)
                elif isinstance(item, _Request):
                    await self._respond(item)
                self._update_reading()
        finally:
            self._worker = None

    def _render_now(self, req: _Request) -> bytes | None:
        """The whole response if it needs no waiting, else None."""
        url = _parse_target(req.target)
        http10 = req.version == "1.0"
        if url.path == b"/bench" and not url.query:
            return _BENCH[req.keep_alive, http10]
        query = parse_qs(url.query.decode("latin-1"))
        if "wait" in query:
            return None
        if url.path == b"/data":
            size = _size(query)
            if size is None or size > DATA_CHUNK:
                return None if size is not None else self._bad(req, "invalid size")
        return self._render(req, url.path, query)

    async def _respond(self, req: _Request) -> None:
        transport = self._transport
        assert transport is not None
        url = _parse_target(req.target)
        query = parse_qs(url.query.decode("latin-1"))
        if "wait" in query:
            try:
                delay = parse_duration(query["wait"][0])
            except ValueError:
                transport.write(self._bad(req, "invalid wait"))
                return
            await asyncio.sleep(delay)
        size = _size(query) if url.path == b"/data" else None
        if size is not None and size > DATA_CHUNK:
            await self._stream_data(req, size)
        else:
            transport.write(self._render(req, url.path, query))

    def _render(self, req: _Request, path: bytes, query: dict[str, list[str]]) -> bytes:
        http10 = req.version == "1.0"
        head_only = req.method == "HEAD"
        if path == b"/health":
            status, ctype, body = 200, "text/plain", b"OK"
        elif path == b"/bench":
            status, ctype, body = 200, "text/plain", b"1"
        elif path == b"/data":
            size = _size(query)
            if size is None:
                return self._bad(req, "invalid size")
            status, ctype, body = 200, "application/octet-stream", _PATTERN[:size]
        else:
            status = 200
            if path.startswith(b"/status/"):
                code = path.removeprefix(b"/status/")
                if not (code.isdigit() and 200 <= int(code) <= 599):
                    return self._bad(req, "status must be 200-599")
                status = int(code)
            ctype, body = "application/json", self._describe(req)
        if status in (204, 304):
            return _head(status, [], req.keep_alive, http10)
        out = _simple(status, ctype, body, req.keep_alive, http10)
        return out[: len(out) - len(body)] if head_only else out

    def _bad(self, req: _Request, why: str) -> bytes:
        return _simple(
            400, "text/plain", why.encode() + b"\n", req.keep_alive, req.version == "1.0"
        )

    async def _stream_data(self, req: _Request, size: int) -> None:
        transport = self._transport
        assert transport is not None
        chunked = req.version != "1.0"
        ctype = ("Content-Type", "application/octet-stream")
        framing = ("Transfer-Encoding", "chunked") if chunked else ("Content-Length", str(size))
        transport.write(_head(200, [ctype, framing], req.keep_alive, not chunked))
        if req.method == "HEAD":
            return
        left = size
        while left and not self._closed:
            n = min(left, DATA_CHUNK)
            piece = _PATTERN[:n]
            transport.write(b"%x\r\n%b\r\n" % (n, piece) if chunked else piece)
            left -= n
            await self._writable.wait()
        if chunked:
            transport.write(b"0\r\n\r\n")

    def _describe(self, req: _Request) -> bytes:
        url = _parse_target(req.target)
        headers: dict[str, list[str]] = {}
        spelled: dict[str, str] = {}
        for raw_name, raw_value in req.headers:
            name = raw_name.decode("latin-1")
            key = spelled.setdefault(name.lower(), name)
            headers.setdefault(key, []).append(raw_value.decode("latin-1"))
        host = next((v for k, v in headers.items() if k.lower() == "host"), [""])[0]
        doc = {
            "hostname": self._hostname,
            "name": self._name,
            "ip": [self._local],
            "remote_addr": self._peer,
            "method": req.method,
            "url": req.target.decode("latin-1"),
            "path": url.path.decode("latin-1"),
            "query": url.query.decode("latin-1"),
            "proto": f"HTTP/{req.version}",
            "host": host,
            "headers": headers,
            "body_bytes": req.body_bytes,
        }
        return json.dumps(doc, indent=2).encode() + b"\n"


@dataclass(frozen=True, slots=True)
class _Target:
    path: bytes
    query: bytes


def _parse_target(target: bytes) -> _Target:
    try:
        url = httptools.parse_url(target)
    except httptools.HttpParserInvalidURLError:
        return _Target(target, b"")
    return _Target(url.path or b"", url.query or b"")


def _size(query: dict[str, list[str]]) -> int | None:
    raw = query.get("size", ["0"])[0]
    return int(raw) if raw.isdigit() else None


def _host_port(addr: tuple[str, int] | tuple[str, int, int, int]) -> str:
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def serve_whoami(host: str, port: int, *, name: str = "") -> asyncio.Server:
    """Start serving on host:port (host "" means every interface); returns the server."""
    hostname = socket.gethostname()
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: _WhoamiProtocol(name, hostname), host or None, port, backlog=1024
    )


def run_whoami(address: str, name: str) -> None:
    """Serve whoami on ``address`` until SIGINT or SIGTERM (the CLI's entry)."""
    host, port = parse_address(address)

    async def main() -> None:
        server = await serve_whoami(host, port, name=name)
        bound = ", ".join(_host_port(s.getsockname()) for s in server.sockets)
        log.info("whoami %r listening on %s", name, bound)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with server:
            await stop.wait()
        log.info("whoami %r stopped", name)

    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())
