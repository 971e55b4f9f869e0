"""The client side of the HTTP/1.1 data path: one protocol object per connection.

``ClientConnection`` feeds bytes to httptools (llhttp), enforces what an
intermediary must refuse (RFC 9112 sections 3.2, 6.1, 6.3 and 11.2), routes
each request with one lookup in the entry point's current ``HTTPState``,
and hands it to an ``Exchange``. Requests are answered strictly in order;
pipelined requests wait in a short queue, and reading pauses while it is full.

Refused input never reaches an upstream: the connection answers 400, 408,
414, 417, 431, 501 or 505 with ``Connection: close`` and closes. Requests
complete before the refused one are answered first, in order; the refused
one is never forwarded, not even its head when a bad first chunk arrives in
the same read, because an exchange starts only once the bytes it came in
with have all parsed. Timeouts are enforced by a sweep over the entry
point's connections (``EntryPointRuntime.sweep``) rather than a timer per
request, so the hot path only stores a deadline. A connection that never
sends a byte is closed silently at the header deadline, as Go's server does,
so no client can take an unsolicited 408 for the answer to its first request.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import deque
from typing import TYPE_CHECKING, cast

import httptools

from gateway.http import wire
from gateway.http.exchange import Exchange
from gateway.http.forwarded import FORWARDED_NAMES
from gateway.http.middleware_path import run_finalizers
from gateway.http.routing import NOT_FOUND_ROUTER
from middleware.contract import Headers, Request

if TYPE_CHECKING:
    from gateway.http.entrypoint import EntryPointRuntime
    from gateway.http.routing import RouterRuntime
    from gateway.http.upstream import ResponseConnection

log = logging.getLogger(__name__)

_MAX_PIPELINED = 16
_NO_TOKENS: frozenset[bytes] = frozenset()
_NO_VALUES: list[bytes] = []
# Request fields the parser callbacks act on, beyond forwarding them.
_HOST, _TRANSFER_ENCODING, _CONNECTION, _CONTENT_LENGTH, _EXPECT, _UPGRADE, _FORWARDED = range(7)
_WATCHED_FIELDS = {
    b"host": _HOST,
    b"transfer-encoding": _TRANSFER_ENCODING,
    b"connection": _CONNECTION,
    b"content-length": _CONTENT_LENGTH,
    b"expect": _EXPECT,
    b"upgrade": _UPGRADE,
    **dict.fromkeys(FORWARDED_NAMES, _FORWARDED),
}
# _WATCHED_FIELDS by field names as clients spell them (-1: not watched);
# clients repeat the same few names, so this skips a lower() per field.
_FIELD_KINDS: dict[bytes, int] = {}


def _field_kind(name: bytes) -> int:
    if len(_FIELD_KINDS) > 4_096:
        _FIELD_KINDS.clear()
    kind = _FIELD_KINDS[name] = _WATCHED_FIELDS.get(name.lower(), -1)
    return kind


# Request (raw_path, query) by target as sent: keep-alive clients and load
# generators repeat their targets. Bounded in entries and in target length,
# so hostile targets cannot make it large; a miss costs what no cache would.
_TARGETS: dict[bytes, tuple[str, str]] = {}


def _split_target(url: bytes) -> tuple[str, str]:
    raw_path, _, query = url.partition(b"?")
    if b"#" in raw_path:
        raw_path = raw_path.partition(b"#")[0]
    split = (raw_path.decode("latin-1"), query.decode("latin-1"))
    if len(url) <= 256:
        if len(_TARGETS) > 4_096:
            _TARGETS.clear()
        _TARGETS[url] = split
    return split


# Request.method for the common methods, without a decode per request.
_METHOD_NAMES = {
    m: m.decode("ascii")
    for m in (b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"CONNECT")
}


class RejectRequest(Exception):
    """Raised inside parser callbacks to refuse a request with a status."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


class ClientConnection(asyncio.Protocol):
    """One downstream connection on an HTTP entry point."""

    def __init__(self, entry: EntryPointRuntime, peer: tuple[str, int] | None = None) -> None:
        self.entry = entry
        # The client as a PROXY protocol header named it, else the socket's peer.
        self.peer = peer
        self.settings = entry.settings
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.client_ip = ""
        self.client_ip_b = b""
        self.client_port = 0
        self.trusted = False
        self.sni: str | None = None
        self.scheme = "http"
        self.forwarded_names = FORWARDED_NAMES
        self.closing = False
        # Finish what is in flight, then close: set by EOF and graceful shutdown.
        self.draining = False
        self.reading = True
        self.body_paused = False
        self.requests = 0
        self.opened = time.monotonic()
        # Deadline of whatever the connection is waiting for, or 0.
        self.deadline = 0.0
        self.deadline_status = 0
        self.head_started = 0.0
        # Status owed once the requests before a refused one are answered.
        self.refusal = 0
        # Per-request parse state.
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.in_head = False
        self.head_bytes = 0
        # Bytes of the head line httptools holds but has not reported yet.
        self.line_pending = 0
        # Reset to the shared, never-mutated _NO_VALUES and replaced by a new
        # list on first use: most requests add one Host and nothing else.
        self.host_values: list[bytes] = _NO_VALUES
        self.te_values: list[bytes] = _NO_VALUES
        self.connection_values: list[bytes] = _NO_VALUES
        self.connection_tokens: frozenset[bytes] = _NO_TOKENS
        self.content_length = 0
        self.request_chunked = False
        self.expect_continue = False
        self.upgrade_value = b""
        # Whether the head being read carries X-Forwarded-*/X-Real-Ip fields.
        self.forwarded_seen = False
        self.request_host = b""
        # The last Host routed on this connection (validated) and its name.
        self.last_host = b"\0"
        self.last_hostname = ""
        self.http11 = True
        # Exchanges: the one being answered, and pipelined ones waiting.
        self.active: Exchange | None = None
        self.queue: deque[Exchange] = deque()
        self.reading_exchange: Exchange | None = None
        # Became active during the current feed_data call; begun after it.
        self.starting: Exchange | None = None
        self.tunnel: ResponseConnection | None = None
        # The request that opened the tunnel: its on_done callbacks run when
        # the tunnel closes (an upgraded connection is in flight until then).
        self.tunnel_request: Request | None = None
        self.upgrading = False

    # -- asyncio.Protocol ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        peer = self.peer or transport.get_extra_info("peername")
        if self.entry.set_nodelay:
            # The standard loop leaves Nagle on for servers made from a socket
            # (uvloop does not): pipelined answers would wait for delayed ACKs.
            sock = transport.get_extra_info("socket")
            if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if peer:
            self.client_ip = peer[0]
            self.client_port = peer[1]
            if self.client_ip.startswith("::ffff:"):
                self.client_ip = self.client_ip[7:]
            self.client_ip_b = self.client_ip.encode("latin-1")
        self.trusted = self.settings.trusted.trusts(self.client_ip)
        self.forwarded_names = FORWARDED_NAMES
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            self.scheme = "https"
            self.sni = self.entry.sni_names.get(ssl_object)
        self.deadline = self.opened + self.settings.read_header_timeout
        self.deadline_status = 0
        self.entry.connection_opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.entry.connection_closed(self)
        for exchange in (self.active, *self.queue):
            if exchange is not None and not exchange.finished:
                exchange.cancel()
        self.active = None
        self.queue.clear()
        if self.tunnel is not None:
            self.tunnel.close()
            self.tunnel = None
        if self.tunnel_request is not None:
            run_finalizers(self.tunnel_request)
            self.tunnel_request = None

    def data_received(self, data: bytes) -> None:
        tunnel = self.tunnel
        if tunnel is not None:
            tunnel.write(data)
            return
        if self.closing or self.refusal:
            return
        if self.upgrading:
            if self.active is not None:
                self.active.body_buffer.append(data)
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            offset = exc.args[0] if exc.args else len(data)
            self._begin_upgrade(data[offset:])
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, RejectRequest):
                self.reject(cause.status, str(cause))
            else:
                log.exception("entry point %s: request handling failed", self.entry.name)
                self.reject(500, "internal error")
        except httptools.HttpParserError as exc:
            self.reject(400, str(exc))
        else:
            if self.in_head:
                self._check_unfinished_head(data)
        starting = self.starting
        if starting is not None:
            self.starting = None
            starting.begin()

    def _check_unfinished_head(self, data: bytes) -> None:
        """Bound the head line httptools buffers: it reports only complete fields.

        The unreported line is what follows the last LF. When a new message
        began inside ``data`` with no LF after its start, the count also takes
        in the end of the previous body, so it can only err towards refusing.
        """
        lf = data.rfind(b"\n")
        pending = len(data) - lf - 1 if lf >= 0 else self.line_pending + len(data)
        self.line_pending = pending
        # The target is limited by on_url; count the header lines only.
        if self.head_bytes - len(self.url) + pending > self.settings.max_header_bytes:
            self.reject(431, "request header fields too large")

    def eof_received(self) -> bool | None:
        # A half-closed client may still want its response: keep writing,
        # stop expecting requests.
        if self.tunnel is not None:
            if self.tunnel.transport is not None and self.tunnel.transport.can_write_eof():
                self.tunnel.transport.write_eof()
            return True
        if self.active is None and not self.queue:
            return False
        self.draining = True
        return True

    def pause_writing(self) -> None:
        exchange = self.active
        if exchange is not None and exchange.upstream is not None:
            transport = exchange.upstream.transport
            if transport is not None:
                transport.pause_reading()
        elif self.tunnel is not None and self.tunnel.transport is not None:
            self.tunnel.transport.pause_reading()

    def resume_writing(self) -> None:
        exchange = self.active
        if exchange is not None and exchange.upstream is not None:
            transport = exchange.upstream.transport
            if transport is not None:
                transport.resume_reading()
        elif self.tunnel is not None and self.tunnel.transport is not None:
            self.tunnel.transport.resume_reading()

    # -- httptools callbacks ---------------------------------------------------------

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.in_head = True
        self.head_bytes = 0
        self.line_pending = 0
        self.host_values = _NO_VALUES
        self.te_values = _NO_VALUES
        self.connection_values = _NO_VALUES
        self.content_length = 0
        self.expect_continue = False
        self.upgrade_value = b""
        self.forwarded_seen = False
        self.head_started = time.monotonic()
        self.deadline = self.head_started + self.settings.read_header_timeout
        self.deadline_status = 408

    def on_url(self, url: bytes) -> None:
        self.url += url
        self.head_bytes += len(url)
        if len(self.url) > self.settings.max_header_bytes:
            raise RejectRequest(414, "request target too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_bytes += len(name) + len(value) + 4
        if self.head_bytes > self.settings.max_header_bytes:
            raise RejectRequest(431, "request header fields too large")
        if not self.in_head:
            # A trailer field (RFC 9110 6.5): dropped, never merged into the
            # head that middleware saw and that may not have been sent yet.
            return
        self.headers.append((name, value))
        # One lookup, by the name as sent, settles the common case: a field
        # the gateway only forwards.
        kind = _FIELD_KINDS.get(name)
        if kind is None:
            kind = _field_kind(name)
        if kind < 0:
            return
        if kind == _HOST:
            if self.host_values:
                self.host_values.append(value)
            else:
                self.host_values = [value]
        elif kind == _TRANSFER_ENCODING:
            if self.te_values:
                self.te_values.append(value)
            else:
                self.te_values = [value]
        elif kind == _CONNECTION:
            if self.connection_values:
                self.connection_values.append(value)
            else:
                self.connection_values = [value]
        elif kind == _CONTENT_LENGTH:
            self.content_length = int(value)
        elif kind == _EXPECT:
            if value.strip().lower() != b"100-continue":
                raise RejectRequest(417, "unsupported expectation")
            self.expect_continue = True
        elif kind == _FORWARDED:
            self.forwarded_seen = True
        else:
            self.upgrade_value = value

    def on_headers_complete(self) -> None:
        self.in_head = False
        parser = self.parser
        version = parser.get_http_version()
        self.http11 = version == "1.1"
        if not self.http11:
            if version != "1.0":
                raise RejectRequest(505, "HTTP version not supported")
            # RFC 9110 10.1.1: ignored from HTTP/1.0, which must never see a 1xx.
            self.expect_continue = False
        te = self.te_values
        self.request_chunked = bool(te)
        if te:
            # RFC 9112 6.1: Transfer-Encoding in HTTP/1.0 means faulty framing.
            status = wire.transfer_coding_status(te) if self.http11 else 400
            if status:
                raise RejectRequest(status, "unsupported transfer-encoding")
        hosts = self.host_values
        if len(hosts) == 1:
            host = hosts[0]
            # Keep-alive clients repeat their Host: the last one was valid.
            if host != self.last_host and not wire.is_valid_host(host):
                # llhttp keeps trailing OWS, which is no part of a field value
                # (RFC 9110 5.5); strip it only here, off the common path.
                host = host.rstrip(b" \t")
                if not wire.is_valid_host(host):
                    raise RejectRequest(400, "invalid Host header")
        elif not hosts and not self.http11:
            host = b""
        else:
            # RFC 9112 3.2, whatever the form of the target.
            raise RejectRequest(400, "missing or repeated Host header")
        url = self.url
        if url[:1] != b"/":
            host = self._absolute_target(url)
        self.request_host = host
        self.connection_tokens = (
            wire.connection_tokens(self.connection_values) if self.connection_values else _NO_TOKENS
        )
        if self.connection_tokens:
            self.connection_tokens = self.connection_tokens - {b"close", b"keep-alive"}
        read_timeout = self.settings.read_timeout
        if read_timeout > 0 and (self.te_values or self.content_length > 0):
            # Go's ReadTimeout (Traefik's readTimeout): the whole request, body
            # included, from its first byte; a trickled body is cut off too.
            self.deadline = self.head_started + read_timeout
        else:
            self.deadline = 0.0
        self._dispatch(url, host, version)

    def on_body(self, body: bytes) -> None:
        exchange = self.reading_exchange
        if exchange is not None and not exchange.finished:
            exchange.on_request_body(body)

    def on_message_complete(self) -> None:
        exchange = self.reading_exchange
        self.reading_exchange = None
        if exchange is not None:
            exchange.on_request_complete()
        if self.deadline_status == 408:
            if self.active is None:
                self._await_next()
            else:
                self.deadline = 0.0

    # -- routing and dispatch --------------------------------------------------------

    def _absolute_target(self, url: bytes) -> bytes:
        """Absolute-form target (RFC 9112 3.2.2): its authority replaces Host."""
        lower = url[:8].lower()
        if lower.startswith(b"http://"):
            rest = url[7:]
        elif lower.startswith(b"https://"):
            rest = url[8:]
        else:
            raise RejectRequest(400, "invalid request target")
        end = len(rest)
        for delimiter in (b"/", b"?", b"#"):
            at = rest.find(delimiter)
            if 0 <= at < end:
                end = at
        authority, target = rest[:end], rest[end:]
        if b"@" in authority:
            raise RejectRequest(400, "userinfo in request target")
        # RFC 9110 4.2.1: an http(s) URI with an empty host is invalid.
        if not wire.is_valid_host(authority) or not wire.split_host_port(authority)[0]:
            raise RejectRequest(400, "invalid authority in request target")
        self.url = target if target[:1] == b"/" else b"/" + target
        # A proxy replaces Host with the target's authority (RFC 9112 3.2.2),
        # so the upstream sees the host the request was routed by.
        self.headers = [(n, v) for n, v in self.headers if n.lower() != b"host"]
        self.headers.append((b"Host", authority))
        return authority

    def _dispatch(self, url: bytes, host: bytes, version: str) -> None:
        parser = self.parser
        method = parser.get_method()
        keep_alive = parser.should_keep_alive() and not self.draining
        self.requests += 1
        settings = self.settings
        limit = settings.keep_alive_max_requests
        if limit and self.requests >= limit:
            keep_alive = False
        max_time = settings.keep_alive_max_time
        if max_time and self.head_started - self.opened >= max_time:
            # Traefik's keepAliveMaxTime: a connection older than this is
            # closed after its current response, spreading clients over time.
            keep_alive = False
        target = _TARGETS.get(self.url)
        if target is None:
            target = _split_target(self.url)
        raw_path, query = target
        if host == self.last_host:
            hostname = self.last_hostname
        else:
            hostname = wire.split_host_port(host)[0]
            self.last_host = host
            self.last_hostname = hostname
        method_name = _METHOD_NAMES.get(method)
        if method_name is None:
            method_name = method.decode("latin-1")
        request = Request(
            method=method_name,
            raw_path=raw_path,
            query=query,
            headers=Headers(self.headers),
            host=hostname,
            client_ip=self.client_ip,
            client_port=self.client_port,
            scheme=self.scheme,
            sni=self.sni,
            entry_point=self.entry.name,
            http_version=version,
            trusted=self.trusted,
        )
        has_body = self.request_chunked or self.content_length > 0
        route = self.entry.state.table.match(request)
        if route is not None:
            request.router = route.name
            router = route.target
        elif self.active is None and not self.queue:
            self._answer_locally(404, method, keep_alive and not has_body)
            return
        else:
            # Pipelined behind requests still being answered: wait its turn.
            router = NOT_FOUND_ROUTER
            keep_alive = keep_alive and not has_body
        exchange = Exchange(
            self,
            request,
            router,
            method=method,
            target=self.url,
            version=b"1.1" if self.http11 else b"1.0",
            keep_alive=keep_alive,
            has_body=has_body,
            expect_continue=self.expect_continue,
            upgrade=bool(self.upgrade_value) and b"upgrade" in self.connection_tokens,
        )
        if has_body:
            self.reading_exchange = exchange
        if self.active is None:
            self.active = exchange
            # Begun once feed_data returns: a parse error later in the same
            # bytes (a bad first chunk) must cancel it before anything is sent.
            self.starting = exchange
        else:
            self.queue.append(exchange)
            if len(self.queue) >= _MAX_PIPELINED:
                self.set_reading(False)

    def _answer_locally(self, status: int, method: bytes, keep_alive: bool) -> None:
        """Answer a request no router takes, when nothing is ahead of it."""
        data = wire.simple_response(status, close=not keep_alive, head_only=method == b"HEAD")
        self.entry.observe_local(method, status)
        self.write(data)
        if not keep_alive:
            self.close()

    def _begin_upgrade(self, rest: bytes) -> None:
        exchange = self.active
        if exchange is None or not exchange.upgrade or self.queue:
            # Refuse the request that asked for it: the one dispatched last.
            self.reading_exchange = self.queue[-1] if self.queue else exchange
            self.reject(400, "unexpected upgrade")
            return
        # Bytes after the head belong to the tunnel once it is up; if the
        # upstream declines the upgrade, the connection closes after its answer.
        self.upgrading = True
        exchange.keep_alive = False
        if rest:
            exchange.body_buffer.append(rest)
        exchange.request_done = True

    def start_tunnel(self, exchange: Exchange, conn: ResponseConnection, data: bytes) -> None:
        """The upstream accepted an Upgrade: relay raw bytes both ways from now on."""
        self.tunnel = conn
        self.active = None
        self.deadline = 0.0
        conn.sink = _TunnelSink(self)
        if data:
            self.write(data)
        if exchange.body_buffer:
            conn.write(b"".join(exchange.body_buffer))
            exchange.body_buffer.clear()
        self.entry.observe(exchange)
        exchange.release()
        if exchange.request.finalizers is not None:
            self.tunnel_request = exchange.request

    def exchange_done(self, exchange: Exchange, keep_alive: bool) -> None:
        """Called by the exchange once its response has been written."""
        entry = self.entry
        observer = entry.observer
        if observer is not None:
            observer.observe(entry.name, exchange)
        request = exchange.request
        if request.source is not None:
            # Request <-> Exchange is a cycle: left alone, every request through
            # a middleware chain would leave garbage for the cyclic collector.
            exchange.release()
        if request.finalizers is not None:
            run_finalizers(request)
        if self.active is exchange:
            self.active = None
        if not keep_alive or self.draining:
            self.close()
            return
        if self.queue:
            nxt = self.queue.popleft()
            self.active = nxt
            if not self.reading:
                self.set_reading(True)
            nxt.begin()
        elif self.refusal:
            self.write(wire.simple_response(self.refusal, close=True))
            self.close()
        elif self.reading_exchange is None:
            self._await_next()

    def _await_next(self) -> None:
        self.deadline = time.monotonic() + self.settings.idle_timeout
        self.deadline_status = 0

    # -- output and control ------------------------------------------------------------

    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    def reject(self, status: int, reason: str) -> None:
        """Refuse malformed input: answer ``status``, close, forward nothing.

        The request being read when the input went wrong is cancelled; complete
        requests pipelined before it are still answered, and the refusal
        follows them (``exchange_done``).
        """
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "entry point %s: %s from %s: %s", self.entry.name, status, self.client_ip, reason
            )
        self.entry.observe_local(b"", status)
        self.deadline = 0.0
        failing = self.reading_exchange
        if failing is not None:
            self.reading_exchange = None
            if failing is self.starting:
                self.starting = None
            failing.cancel()
            if failing.head_sent:
                # Its response is under way: no room left for a status line.
                self.close()
                return
            if failing is self.active:
                self.active = None
            elif failing in self.queue:
                self.queue.remove(failing)
        if self.active is not None:
            self.refusal = status
            return
        self.write(wire.simple_response(status, close=True))
        self.close()

    def close(self) -> None:
        self.closing = True
        transport = self.transport
        if transport is not None:
            transport.close()

    def abort(self) -> None:
        self.closing = True
        transport = self.transport
        if transport is not None:
            transport.abort()

    def set_reading(self, reading: bool) -> None:
        transport = self.transport
        if transport is None or transport.is_closing() or reading == self.reading:
            return
        self.reading = reading
        if reading:
            transport.resume_reading()
        else:
            transport.pause_reading()

    def pause_reading_for_body(self) -> None:
        self.set_reading(False)

    def forwarded_proto(self, upgrade: bool) -> bytes:
        if upgrade:
            return b"wss" if self.scheme == "https" else b"ws"
        return b"https" if self.scheme == "https" else b"http"

    def count_middleware_error(self, router: RouterRuntime) -> None:
        self.entry.count_middleware_error(router)

    def expire(self, now: float) -> None:
        """Called by the sweep when ``deadline`` has passed."""
        status = self.deadline_status
        if status:
            self.reject(status, "timeout")
        else:
            self.close()


class _TunnelSink:
    """Relays upstream bytes of an upgraded connection to the client."""

    __slots__ = ("client",)

    def __init__(self, client: ClientConnection) -> None:
        self.client = client

    def on_response_head(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], keep_alive: bool
    ) -> None:
        pass

    def on_response_body(self, data: bytes) -> None:
        self.client.write(data)

    def on_response_complete(self) -> None:
        pass

    def on_upgraded(self, data: bytes) -> None:
        self.client.write(data)

    def on_upstream_lost(self, exc: BaseException | None, response_started: bool) -> None:
        self.client.close()

    def on_upstream_writable(self, writable: bool) -> None:
        self.client.set_reading(writable)

    def flush(self) -> None:
        pass
