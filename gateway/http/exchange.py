"""One request's journey upstream and its response's journey back.

An ``Exchange`` is created per request by the client connection once the
head is parsed and routed. It picks a server, takes a pooled connection or
dials one, writes the request head and streams the body, relays the response
head and body back, and records metrics. Without middleware it runs entirely
in protocol callbacks (no task, no future); with middleware it runs the chain
in a task whose terminal handler is ``proxy`` and resumes the callback flow
once the chain has returned the response head.

Retries never replay a body: a request is sent to another server (or on a
fresh connection) only when the failure happened before any of its body
left the gateway, which covers refused connects and stale pooled keep-alive
connections, the common cases of a dying server.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from gateway.http import wire
from gateway.http.balancer import FixedStatus
from gateway.http.field_kinds import (
    CONNECTION,
    FORWARDED,
    FORWARDED_BLOCKS,
    HOP_BY_HOP_FIELD,
    HOST,
    REQUEST_KINDS,
    RESPONSE_KINDS,
    connection_drops,
    forwarded_block,
    request_kind,
    response_kind,
    without_fields,
)
from gateway.http.forwarded import drop_forwarded, forwarding_headers
from gateway.http.middleware_path import (
    answer,
    edit_response_head,
    error_response,
    read_request_body,
    read_response_body,
    run_chain,
    run_filters,
    run_finalizers,
    wake,
)
from gateway.http.routing import RouterRuntime
from gateway.http.upstream import ResponseConnection, UpstreamServer
from middleware.contract import BodyTransform, Headers, Request, Response

if TYPE_CHECKING:
    from gateway.http.server import ClientConnection

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
_BODY_BUFFER_LIMIT = 256 * 1024

_DIALS: set[asyncio.Task[None]] = set()

_NO_SERVERS: frozenset[UpstreamServer] = frozenset()
_IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})


class Exchange:
    """State of one proxied request/response."""

    __slots__ = (
        "client",
        "request",
        "router",
        "method",
        "target",
        "version",
        "keep_alive",
        "has_body",
        "expect_continue",
        "upgrade",
        "start",
        "upstream",
        "server",
        "cookies",
        "tried",
        "attempt",
        "body_buffer",
        "out",
        "buffered",
        "body_sent",
        "request_done",
        "request_complete",
        "response_started",
        "response_complete",
        "upgrade_data",
        "head_sent",
        "chunked_out",
        "until_close",
        "status",
        "bytes_out",
        "waiter",
        "pending_body",
        "finished",
        "deadline",
        "task",
        "transform",
        "full_body",
        "body_waiter",
    )

    def __init__(
        self,
        client: ClientConnection,
        request: Request,
        router: RouterRuntime,
        *,
        method: bytes,
        target: bytes,
        version: bytes,
        keep_alive: bool,
        has_body: bool,
        expect_continue: bool,
        upgrade: bool,
    ) -> None:
        self.client = client
        self.request = request
        self.router = router
        self.method = method
        self.target = target
        self.version = version
        self.keep_alive = keep_alive
        self.has_body = has_body
        self.expect_continue = expect_continue
        self.upgrade = upgrade
        # From the first byte of the head: one clock read per request fewer.
        self.start = client.head_started
        self.upstream: ResponseConnection | None = None
        self.server: UpstreamServer | None = None
        self.cookies: list[bytes] | None = None
        self.tried: frozenset[UpstreamServer] = _NO_SERVERS
        self.attempt = 0  # numbers dials, so a stale one knows it lost
        self.body_buffer: list[bytes] = []
        self.out: list[bytes] = []
        self.buffered = 0
        self.body_sent = False
        self.request_done = not has_body
        self.request_complete = False
        self.response_started = False
        self.response_complete = False
        self.upgrade_data: bytes | None = None
        self.head_sent = False
        self.chunked_out = False
        self.until_close = False
        self.status = 0
        self.bytes_out = 0
        # Middleware path only: resolved with the upstream response head.
        self.waiter: asyncio.Future[Response] | None = None
        self.pending_body: list[bytes] | None = None
        self.finished = False
        self.deadline = 0.0
        self.task: asyncio.Task[None] | None = None
        self.transform: BodyTransform | None = None
        # Set once a middleware read the request body whole (it is then replayable).
        self.full_body: bytes | None = None
        self.body_waiter: asyncio.Future[None] | None = None
        if router.chain is not None:
            request.source = self
            if client.forwarded_seen and not client.trusted:
                # As Traefik: an untrusted client's X-Forwarded-* are gone
                # before any middleware runs, so what is left is what a
                # middleware set (customRequestHeaders X-Forwarded-Proto).
                drop_forwarded(request.headers.raw)

    # -- starting ----------------------------------------------------------------

    def begin(self) -> None:
        """Run the router's chain, or forward straight away when it has none."""
        router = self.router
        if router.chain is None:
            self.forward()
        elif router.filters is not None:
            run_filters(self, 0)
        else:
            self.task = asyncio.get_running_loop().create_task(run_chain(self))

    # -- what middleware asks of the exchange (BodySource) ------------------------

    async def read_request_body(self, limit: int) -> bytes:
        return await read_request_body(self, limit)

    def request_replayable(self) -> bool:
        return not self.has_body or self.full_body is not None or not self.body_sent

    async def read_response_body(self, limit: int) -> bytes:
        return await read_response_body(self, limit)

    def release(self) -> None:
        """Break the references middleware made back to this exchange."""
        self.request.source = None
        waiter = self.waiter
        if waiter is not None and waiter.done() and not waiter.cancelled():
            waiter.result().source = None
        self.waiter = None
        self.task = None

    def discard_response_body(self) -> None:
        self.abandon_upstream()
        self.pending_body = []

    def abort_response(self) -> None:
        if self.finished:
            return
        self.abandon_upstream()
        self.fail(504, "backend request timeout")

    def reset_for_retry(self) -> None:
        """Forget the last attempt's upstream and response, before forwarding again."""
        self.tried = _NO_SERVERS
        self.server = None
        self.cookies = None
        self.response_started = False
        self.response_complete = False
        self.status = 0
        self.deadline = 0.0
        if self.full_body is not None:
            self.request_done = False

    # -- choosing a server and a connection ------------------------------------

    def forward(self) -> None:
        service = self.router.service
        pick = service.balancer.pick(self.request, self.tried)
        if pick is None:
            self.fail(502 if self.tried else 503)
            return
        self.server = pick.server
        self.cookies = pick.cookies
        tried = self.tried
        # The first attempt (nearly every request) reuses the server's own set.
        self.tried = tried | {pick.server} if tried else pick.server.alone
        if service.response_header_timeout > 0:
            self.deadline = time.monotonic() + service.response_header_timeout
        conn = pick.server.pool.take_idle()
        if conn is not None:
            self._send_request(conn)
        else:
            # The loop holds tasks weakly: keep the dial alive until it is done.
            self.attempt += 1
            task = asyncio.get_running_loop().create_task(self._dial(pick.server, self.attempt))
            _DIALS.add(task)
            task.add_done_callback(_DIALS.discard)

    async def _dial(self, server: UpstreamServer, attempt: int) -> None:
        try:
            conn = await server.pool.dial()
        except FixedStatus as fixed:  # a ``status`` service (or a share of one)
            self.fail(fixed.status)
            return
        except (TimeoutError, OSError) as exc:
            if self.finished:
                return
            if isinstance(exc, asyncio.TimeoutError):
                # As Go's reverse proxy (and so Traefik) does: a timeout is 504.
                log.info("service %s: dial %s timed out", self.router.service.name, server.url)
                self._retry_or_fail(504)
            else:
                server.eject(str(exc) or type(exc).__name__)
                self._retry_or_fail(502)
            return
        if self.finished or attempt != self.attempt:
            # Answered meanwhile, or a middleware (a per-try timeout) already
            # started another try: this connection is not the exchange's.
            server.pool.release(conn)
            return
        self._send_request(conn)

    def _retry_or_fail(self, status: int) -> None:
        if not self.body_sent and len(self.tried) < MAX_ATTEMPTS:
            self.client.entry.count_retry(self.router.service.name)
            self.forward()
        else:
            self.fail(status)

    # -- request side ------------------------------------------------------------

    def _send_request(self, conn: ResponseConnection) -> None:
        self.upstream = conn
        # ResponseConnection.attach, inlined: this runs once per request.
        conn.sink = self
        conn.started = False
        conn.head_only = self.method == b"HEAD"
        conn.requests += 1
        data = self._request_head()
        if self.full_body is not None:
            # Read whole by a middleware: sent from memory, as often as asked.
            self.body_sent = True
            self.request_done = True
            conn.write(data + self.full_body)
            return
        if self.body_buffer:
            self.body_sent = True
            body = b"".join(self.body_buffer)
            data += wire.chunk(body) if self.client.request_chunked else body
            self.body_buffer.clear()
            if self.buffered > _BODY_BUFFER_LIMIT:
                self.client.set_reading(True)
            self.buffered = 0
        if self.request_complete and not self.request_done:
            if self.client.request_chunked:
                data += wire.LAST_CHUNK
            self.request_done = True
        conn.write(data)

    def _request_head(self) -> bytes:
        request = self.request
        server = self.server
        assert server is not None
        client = self.client
        raw = request.headers.raw
        drop = client.connection_tokens
        target = self.target
        if self.router.chain is not None or b"#" in target or target[-1:] == b"?":
            # What a middleware may have rewritten, or the sent target without
            # its fragment or empty query, as Request.target gives it.
            target = request.target.encode("latin-1")
        if server.base_path:
            target = server.base_path.encode("latin-1") + target
        parts = [self.method, b" ", target, b" HTTP/1.1\r\n"]
        host = b""
        forwarded = False
        kinds = REQUEST_KINDS
        for name, value in raw:
            kind = kinds.get(name)
            if kind is None:
                kind = request_kind(name)
            if kind:
                if kind == HOST:
                    host = value
                elif kind == FORWARDED:
                    forwarded = True
                continue
            if drop and name.lower() in drop:
                continue
            parts += (name, b": ", value, b"\r\n")
        if not self.router.service.pass_host_header or not host:
            host = server.host_header
        parts += (b"Host: ", host, b"\r\n")
        if self.upgrade:
            proto = client.forwarded_proto(True)
        else:
            proto = b"https" if client.scheme == "https" else b"http"
        # An untrusted client's were dropped before its middleware ran: any
        # left were set by a middleware (customRequestHeaders).
        if client.trusted or (forwarded and self.router.chain is not None):
            for name, value in forwarding_headers(
                raw,
                trusted=True,
                client_ip=client.client_ip_b,
                proto=proto,
                host=client.request_host,
                port=client.entry.port,
            ):
                parts += (name, b": ", value, b"\r\n")
        else:
            # Untrusted clients (the common case) get the same block every
            # time but for the host: build it once per (client, port, proto).
            key = (client.client_ip_b, client.entry.port, proto)
            around = FORWARDED_BLOCKS.get(key)
            if around is None:
                around = forwarded_block(*key)
            parts += (around[0], client.request_host, around[1])
        if self.upgrade:
            parts.append(b"Connection: Upgrade\r\nUpgrade: " + client.upgrade_value + b"\r\n")
        if self.has_body:
            if self.full_body is not None:
                parts.append(b"Content-Length: %d\r\n" % len(self.full_body))
            elif client.request_chunked:
                parts.append(b"Transfer-Encoding: chunked\r\n")
            else:
                parts.append(b"Content-Length: %d\r\n" % client.content_length)
        parts.append(b"\r\n")
        return b"".join(parts)

    def on_request_body(self, data: bytes) -> None:
        """A piece of the client's request body (already de-chunked)."""
        conn = self.upstream
        if conn is not None and not conn.closed:
            self.body_sent = True
            conn.write(wire.chunk(data) if self.client.request_chunked else data)
        else:
            # Held raw: framed when sent, or handed whole to a middleware.
            self.body_buffer.append(data)
            self.buffered += len(data)
            if self.body_waiter is not None:
                wake(self)
            elif self.buffered > _BODY_BUFFER_LIMIT:
                self.client.set_reading(False)

    def on_request_complete(self) -> None:
        self.request_complete = True
        if self.body_waiter is not None:
            wake(self)
        conn = self.upstream
        if conn is not None and not self.request_done:
            if self.client.request_chunked:
                conn.write(wire.LAST_CHUNK)
            self.request_done = True

    # -- response side (ResponseSink) --------------------------------------------

    def on_response_head(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], keep_alive: bool
    ) -> None:
        if status < 200 and status != 101:
            if status == 100 and self.expect_continue and not self.head_sent:
                self.client.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            return
        self.deadline = 0.0
        self.response_started = True
        waiter = self.waiter
        if waiter is not None:
            if not waiter.done():
                waiter.set_result(
                    Response(
                        status,
                        headers=Headers(list(headers)),
                        reason=reason.decode("latin-1"),
                        streamed=True,
                    )
                )
                waiter.result().source = self
            return
        filters = self.router.filters
        if filters is not None and filters.responders:
            try:
                response = edit_response_head(self, status, reason, headers)
            except Exception:
                # Nothing has gone to the client yet: it gets a 500, not a reset.
                log.exception("router %s: middleware failed on a response", self.router.name)
                self.client.count_middleware_error(self.router)
                self.respond(Response(500, body=b"Internal Server Error\n"))
                return
            self.transform = response.transform
            if response.status != status:
                reason = b""
            status, headers = response.status, response.headers.raw
        self.send_head(status, reason, headers)

    def send_head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        self.status = status
        client = self.client
        parts = [wire.status_line(status, reason if status != 200 else b"")]
        drop: frozenset[bytes] | None = None
        length = -1
        kinds = RESPONSE_KINDS
        for name, value in headers:
            kind = kinds.get(name)
            if kind is None:
                kind = response_kind(name)
            if kind:
                if kind == HOP_BY_HOP_FIELD:
                    continue
                if kind == CONNECTION:
                    named = connection_drops(value)
                    if named:
                        drop = named | drop if drop else named
                    continue
                length = int(value) if value.strip().isdigit() else -1
            parts += (name, b": ", value, b"\r\n")
        if drop:
            parts = without_fields(parts, drop)
        if self.cookies:
            for cookie in self.cookies:
                parts += (b"Set-Cookie: ", cookie, b"\r\n")
        no_body = self.method == b"HEAD" or status in (204, 304)
        if no_body:
            self.transform = None
        if status == 101:
            parts.append(b"Connection: Upgrade\r\nUpgrade: " + client.upgrade_value + b"\r\n\r\n")
            self.head_sent = True
            client.write(b"".join(parts))
            return
        if not no_body and length < 0:
            if client.http11:
                self.chunked_out = True
                parts.append(b"Transfer-Encoding: chunked\r\n")
            else:
                self.until_close = True
                self.keep_alive = False
        if not self.request_done:
            # The client is still sending a body the upstream did not wait for;
            # the connection cannot be trusted to line up the next request.
            self.keep_alive = False
        if not self.keep_alive:
            parts.append(b"Connection: close\r\n")
        elif not client.http11:
            parts.append(b"Connection: keep-alive\r\n")
        parts.append(b"\r\n")
        self.head_sent = True
        # Held until the end of the upstream read that carried it, so a small
        # response leaves in one write (one syscall) with its body.
        self.out.append(b"".join(parts))

    def on_response_body(self, data: bytes) -> None:
        if not self.head_sent:
            if self.pending_body is not None:
                self.pending_body.append(data)
                if self.body_waiter is not None:
                    wake(self)
            return
        self.relay_body(data)

    def relay_body(self, data: bytes) -> None:
        transform = self.transform
        if transform is not None:
            try:
                data = transform.feed(data)
            except Exception:
                self._transform_failed()
                return
            if not data:
                return
        self.bytes_out += len(data)
        self.out.append(wire.chunk(data) if self.chunked_out else data)

    def flush(self) -> None:
        """Write what this read produced for the client, in one call."""
        out = self.out
        if out:
            self.client.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()

    def on_response_complete(self) -> None:
        self.response_complete = True
        conn = self.upstream
        self.upstream = None
        if conn is not None and self.server is not None:
            if conn.keep_alive and self.request_done and not self.upgrade:
                self.server.pool.release(conn)
            else:
                conn.close()
        if self.head_sent:
            self.finish_response()
        elif self.body_waiter is not None:
            wake(self)
        # else: the middleware task sends the head, then finishes.

    def finish_response(self) -> None:
        out = self.out
        transform = self.transform
        if transform is not None:
            self.transform = None
            try:
                tail = transform.end()
            except Exception:
                self._transform_failed()
                return
            if tail:
                self.relay_body(tail)
        if self.chunked_out:
            out.append(wire.LAST_CHUNK)
        if out:
            self.client.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()
        self.finished = True
        self.client.exchange_done(self, self.keep_alive)

    def _transform_failed(self) -> None:
        # Mid-body: the head is out, so the connection is all that can say so.
        log.exception("router %s: a response body transform failed", self.router.name)
        self.client.count_middleware_error(self.router)
        self.transform = None
        self.abandon_upstream()
        self.client.abort()
        self.finished = True

    def on_upgraded(self, data: bytes) -> None:
        conn = self.upstream
        if conn is None:
            return
        if not self.head_sent:
            # The middleware chain still holds the 101: tunnel once it is sent.
            self.upgrade_data = data
            return
        self.finished = True
        self.client.start_tunnel(self, conn, data)

    def on_upstream_lost(self, exc: BaseException | None, response_started: bool) -> None:
        conn = self.upstream
        self.upstream = None
        if self.finished:
            return
        if self.response_started:
            if self.until_close and exc is None and self.head_sent:
                # A close-delimited body ends when the upstream closes.
                self.finish_response()
                return
            waiter = self.body_waiter
            if waiter is not None and not waiter.done():
                # A middleware reading the body whole learns it was cut short.
                waiter.set_exception(ConnectionResetError("upstream closed mid-response"))
                return
            # Mid-response: the client cannot be told otherwise.
            self.client.abort()
            self.finished = True
            return
        server = self.server
        stale = conn is not None and conn.requests > 1 and not response_started
        if stale and not self.body_sent and self.method in _IDEMPOTENT and server is not None:
            # A pooled keep-alive connection the server had already closed:
            # the request never reached it, so the same server may try again.
            self.tried = self.tried - {server}
            self._retry_or_fail(502)
            return
        if server is not None:
            server.eject(str(exc) if exc else "connection closed before a response")
        # The request reached the server: replaying it elsewhere could repeat it.
        self.fail(502)

    def on_upstream_writable(self, writable: bool) -> None:
        self.client.set_reading(writable)

    # -- answering without the upstream --------------------------------------------

    def respond(self, response: Response) -> None:
        """Send a response a middleware generated."""
        if self.head_sent or self.finished:
            return
        self.status = response.status
        extra = list(response.headers.raw)
        # The client's connection can carry on once its whole request was read.
        close = not (self.request_done or self.request_complete) or not self.keep_alive
        body = response.body
        ctype = response.headers.get(b"content-type")
        parts = [wire.status_line(response.status)]
        for name, value in extra:
            if name.lower() in (b"content-length", b"connection", b"transfer-encoding"):
                continue
            parts += (name, b": ", value, b"\r\n")
        if ctype is None and body:
            parts.append(b"Content-Type: text/plain; charset=utf-8\r\n")
        parts.append(b"Content-Length: %d\r\n" % len(body))
        if close:
            parts.append(b"Connection: close\r\n")
        parts.append(b"\r\n")
        if self.method != b"HEAD":
            parts.append(body)
        self.bytes_out = len(body)
        self.abandon_upstream()
        self.head_sent = True
        self.finished = True
        self.client.write(b"".join(parts))
        self.client.exchange_done(self, not close)

    def fail(self, status: int, cause: str = "") -> None:
        """Answer with an error status generated by the gateway."""
        if self.finished:
            return
        if self.head_sent:
            self.client.abort()
            self.finished = True
            return
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            # Let the chain see the error response like any other.
            waiter.set_result(error_response(status, cause or wire.reason_phrase(status).decode()))
            return
        filters = self.router.filters
        if filters is not None and filters.responders:
            answer(
                self,
                error_response(status, cause or wire.reason_phrase(status).decode()),
                len(filters.filters),
            )
            return
        self.status = status
        # The client's connection can carry on once its whole request was read.
        close = not (self.request_done or self.request_complete) or not self.keep_alive
        self.abandon_upstream()
        self.head_sent = True
        self.finished = True
        self.client.write(
            wire.simple_response(status, close=close, head_only=self.method == b"HEAD")
        )
        self.client.exchange_done(self, not close)

    def abandon_upstream(self) -> None:
        conn = self.upstream
        self.upstream = None
        if conn is not None:
            conn.abort()

    def cancel(self) -> None:
        """The client went away: release everything this exchange holds."""
        self.finished = True
        self.abandon_upstream()
        if self.task is not None and not self.task.done():
            self.task.cancel()
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.cancel()
        if self.request.finalizers is not None:
            run_finalizers(self.request)
        self.release()
