"""Upstream servers, their keep-alive connection pools, and the response side.

An ``UpstreamServer`` is one ``servers[].url`` of a load balancer: its
address, health and pool. A ``ConnectionPool`` keeps idle HTTP/1.1
connections (most recently used first, so idle ones age out) and caps how
many are open; a ``ResponseConnection`` is one upstream TCP/TLS connection
that parses responses with httptools and hands each event to the exchange
that owns it.

Invariants: a connection is owned by at most one exchange at a time; it goes
back to the pool only after a complete response that allows keep-alive, with
the request fully sent; anything else closes it.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import deque
from typing import TYPE_CHECKING, Protocol, cast
from urllib.parse import urlsplit

import httptools

from gateway.config.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable

log = logging.getLogger(__name__)

# How long a server that refused or reset a connection stays out of rotation
# when no active health check is configured to bring it back sooner.
PASSIVE_EJECTION_SECONDS = 5.0


# Fields that give a response body its own length (RFC 9112 6.3).
_FRAMING = frozenset({b"content-length", b"transfer-encoding"})


class ResponseSink(Protocol):
    """What a ``ResponseConnection`` reports to; implemented by the exchange."""

    def on_response_head(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], keep_alive: bool
    ) -> None: ...
    def on_response_body(self, data: bytes) -> None: ...
    def on_response_complete(self) -> None: ...
    def on_upgraded(self, data: bytes) -> None: ...
    def on_upstream_lost(self, exc: BaseException | None, response_started: bool) -> None: ...
    def on_upstream_writable(self, writable: bool) -> None: ...
    def flush(self) -> None: ...


class UpstreamServer:
    """One backend server of a load balancer, with its health and pool."""

    __slots__ = (
        "url",
        "scheme",
        "host",
        "port",
        "base_path",
        "host_header",
        "weight",
        "healthy",
        "ejected_until",
        "pool",
        "ssl",
        "server_hostname",
        "service",
        "on_health_change",
        "max_failures",
        "failure_window",
        "failures",
        "transport",
        "alone",
    )

    def __init__(
        self,
        url: str,
        *,
        weight: int = 1,
        service: str = "",
        ssl_context: ssl.SSLContext | None = None,
        max_idle: int = 200,
        dial_timeout: float = 30.0,
        idle_timeout: float = 90.0,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https", "h2c") or not parts.hostname:
            raise ConfigError(f"invalid server url {url!r}")
        self.url = url
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.base_path = parts.path.rstrip("/")
        default_port = 443 if parts.scheme == "https" else 80
        netloc = f"[{self.host}]" if ":" in self.host else self.host
        if self.port != default_port:
            netloc = f"{netloc}:{self.port}"
        self.host_header = netloc.encode("latin-1")
        self.weight = weight
        self.healthy = True
        self.ejected_until = 0.0
        self.service = service
        self.ssl = ssl_context if self.scheme == "https" else None
        self.server_hostname = self.host if self.ssl is not None else None
        self.pool = ConnectionPool(
            self, max_idle=max_idle, dial_timeout=dial_timeout, idle_timeout=idle_timeout
        )
        self.on_health_change: Callable[[UpstreamServer], None] | None = None
        # Passive health checking: this many failures within the window take
        # the server out for the window (one failure, 5 s when not configured).
        self.max_failures = 1
        self.failure_window = PASSIVE_EJECTION_SECONDS
        self.failures: deque[float] = deque()
        # The serversTransport configuration this server was built with.
        self.transport: object = None
        # Exchange.tried after a first attempt here, built once.
        self.alone: frozenset[UpstreamServer] = frozenset((self,))

    def available(self, now: float) -> bool:
        """Healthy by the last check and not passively ejected."""
        return self.healthy and now >= self.ejected_until

    def eject(self, reason: str) -> None:
        """Count a refused or reset connection; enough of them take the server out."""
        now = time.monotonic()
        failures = self.failures
        failures.append(now)
        while failures and failures[0] < now - self.failure_window:
            failures.popleft()
        if len(failures) < self.max_failures:
            return
        failures.clear()
        if self.ejected_until <= now:
            log.warning("service %s: server %s out of rotation: %s", self.service, self.url, reason)
        self.ejected_until = now + self.failure_window
        self.pool.close_idle()
        if self.on_health_change is not None:
            self.on_health_change(self)

    def set_healthy(self, healthy: bool) -> None:
        """Record an active health-check result (clears a passive ejection on success)."""
        self.healthy = healthy
        if healthy:
            self.ejected_until = 0.0
        else:
            self.pool.close_idle()
        if self.on_health_change is not None:
            self.on_health_change(self)

    def close(self) -> None:
        self.pool.close_idle()


class ConnectionPool:
    """Idle keep-alive connections to one server, and the dialer for new ones."""

    __slots__ = ("server", "idle", "max_idle", "dial_timeout", "idle_timeout", "open_count")

    def __init__(
        self, server: UpstreamServer, *, max_idle: int, dial_timeout: float, idle_timeout: float
    ) -> None:
        self.server = server
        self.idle: deque[ResponseConnection] = deque()
        self.max_idle = max_idle
        self.dial_timeout = dial_timeout
        self.idle_timeout = idle_timeout
        self.open_count = 0

    def take_idle(self) -> ResponseConnection | None:
        """The most recently used idle connection still open, or None."""
        idle = self.idle
        while idle:
            conn = idle.pop()
            if conn.reusable():
                return conn
        return None

    def release(self, conn: ResponseConnection) -> None:
        """Return a connection after a complete keep-alive exchange."""
        now = time.monotonic()
        server = self.server
        # server.available(now), inlined: this runs once per request.
        if len(self.idle) >= self.max_idle or not server.healthy or now < server.ejected_until:
            conn.close()
            return
        conn.idle_since = now
        self.idle.append(conn)

    async def dial(self) -> ResponseConnection:
        """Open a new connection; raises OSError or TimeoutError."""
        loop = asyncio.get_running_loop()
        server = self.server
        _, conn = await asyncio.wait_for(
            loop.create_connection(
                lambda: ResponseConnection(self),
                server.host,
                server.port,
                ssl=server.ssl,
                server_hostname=server.server_hostname,
            ),
            self.dial_timeout,
        )
        return conn

    def close_idle(self) -> None:
        while self.idle:
            self.idle.pop().close()

    def expire_idle(self, now: float) -> None:
        """Close connections idle for longer than ``idle_timeout`` (called periodically)."""
        limit = now - self.idle_timeout
        while self.idle and self.idle[0].idle_since < limit:
            self.idle.popleft().close()


class ResponseConnection(asyncio.Protocol):
    """One upstream connection: writes requests, parses responses."""

    __slots__ = (
        "pool",
        "transport",
        "parser",
        "sink",
        "headers",
        "closed",
        "started",
        "head_only",
        "idle_since",
        "reason",
        "requests",
        "keep_alive",
        "upgraded",
        "until_close",
    )

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.sink: ResponseSink | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.closed = False
        self.started = False
        self.head_only = False
        self.idle_since = 0.0
        self.reason = b""
        self.requests = 0
        self.keep_alive = False
        self.upgraded = False
        # The response body ends when the server closes (no length, not chunked).
        self.until_close = False

    # -- ownership -------------------------------------------------------------

    def reusable(self) -> bool:
        return not self.closed and self.transport is not None and not self.transport.is_closing()

    def attach(self, sink: ResponseSink, *, head_only: bool) -> None:
        """Hand the connection to an exchange for one request/response.

        ``Exchange._send_request`` inlines this on the hot path: keep the two in step.
        """
        self.sink = sink
        self.started = False
        self.head_only = head_only
        self.requests += 1

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.sink = None
            if self.transport is not None:
                self.transport.close()

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            self.sink = None
            if self.transport is not None:
                self.transport.abort()

    # -- asyncio.Protocol ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.pool.open_count += 1

    def data_received(self, data: bytes) -> None:
        sink = self.sink
        if sink is None:
            # Bytes from an idle connection: the server broke the protocol or
            # is closing. Either way the connection is done.
            self.close()
            return
        self.started = True
        if self.upgraded:
            sink.on_upgraded(data)
            return
        try:
            self.parser.feed_data(data)
            # A completed response detached the sink and flushed already.
            if self.sink is not None:
                sink.flush()
        except httptools.HttpParserUpgrade as exc:
            offset = exc.args[0] if exc.args else len(data)
            self.upgraded = True
            if self.sink is not None:
                self.sink.on_upgraded(data[offset:])
        except httptools.HttpParserError as exc:
            self.closed = True
            self.sink = None
            if self.transport is not None:
                self.transport.abort()
            sink.on_upstream_lost(exc, True)

    def connection_lost(self, exc: Exception | None) -> None:
        self.pool.open_count -= 1
        self.closed = True
        sink = self.sink
        self.sink = None
        if sink is not None:
            if self.until_close and exc is None:
                # A clean close is how such a body ends (RFC 9112 6.3).
                sink.on_response_complete()
            else:
                sink.on_upstream_lost(exc, self.started)

    def pause_writing(self) -> None:
        if self.sink is not None:
            self.sink.on_upstream_writable(False)

    def resume_writing(self) -> None:
        if self.sink is not None:
            self.sink.on_upstream_writable(True)

    # -- httptools callbacks ---------------------------------------------------

    # No on_message_begin: httptools skips callbacks a protocol lacks, and the
    # header list is renewed where a head is handed off and where a message
    # (with any trailer fields) ends instead.

    def on_status(self, reason: bytes) -> None:
        self.reason = reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        headers = self.headers
        self.headers = []
        sink = self.sink
        if sink is None:
            return
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            sink.on_response_head(status, self.reason, headers, True)
            return
        self.keep_alive = keep_alive = self.parser.should_keep_alive()
        if not keep_alive and not self.head_only and status not in (101, 204, 304):
            # Only a connection that will close can carry a close-delimited
            # body, so the keep-alive path never pays for this scan.
            self.until_close = not any(name.lower() in _FRAMING for name, _ in headers)
        sink.on_response_head(status, self.reason, headers, keep_alive)
        if self.head_only and status != 101:
            # httptools cannot be told that a HEAD response has no body, so
            # the message ends here and the next response gets a new parser.
            self.parser = httptools.HttpResponseParser(self)
            self._complete()

    def on_body(self, body: bytes) -> None:
        if self.sink is not None:
            self.sink.on_response_body(body)

    def on_message_complete(self) -> None:
        if self.headers:
            # Trailer fields (RFC 9110 6.5): not forwarded.
            self.headers = []
        if self.parser.get_status_code() < 200:
            return
        self._complete()

    def _complete(self) -> None:
        # The sink decides between pool.release() and close(): only it knows
        # whether the request body was fully sent.
        sink = self.sink
        self.sink = None
        if sink is not None:
            sink.on_response_complete()
