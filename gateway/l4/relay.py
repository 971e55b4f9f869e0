"""The userspace TCP relay: bytes both ways between a client connection and a server.

The TCP entry point accepts a connection with its own protocol, peeks at the
first bytes (the ClientHello, for SNI routing), picks a server, and calls
``start_relay`` with the bytes it has read. From then on the relay owns the
client transport: it installs its own protocol with ``set_protocol``, keeps
reading paused while it dials the server (a read uvloop delivers anyway is
kept), sends ``proxy_header``, the peeked bytes and any kept ones before
other client bytes, and relays until both directions end. Protocols, not
streams: this is the bulk path, one ``write`` per read.

Invariants:

* Bounded memory: when one side's write buffer passes its high-water mark,
  reading from the other side pauses until it drains (``pause_writing`` /
  ``resume_writing`` drive the peer's ``pause_reading``/``resume_reading``), so
  a relay holds at most one high-water mark plus one read (256 KiB) per
  direction.
* Half-close: a FIN from one side becomes ``write_eof`` on the other after the
  buffered bytes; the other direction flows on until it ends too (TCP
  half-close, RFC 9293 3.6). With ``termination_delay`` set, both connections
  are cut that long after the first FIN, as Traefik's ``terminationDelay``
  does (Traefik defaults to 100 ms; here it is off unless configured).
* A reset or error on one side resets the other (``SO_LINGER`` 0 then abort),
  so a client never mistakes a cut-off stream for a complete one.
* One idle timer per relay: every read stamps ``last_activity``; the timer
  re-arms itself only when it fires, for the time that is left.
* ``on_done(relay)`` runs exactly once, after both connections are closed,
  whatever happened (a failed dial included); ``reason`` says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, cast

log = logging.getLogger(__name__)

# closed: both sides sent FIN; idle: idle_timeout passed without a byte read;
# reset / error: a side reset or failed (``side`` names it); connect_failed:
# the dial failed or timed out; terminated: termination_delay expired after
# the first FIN; shutdown: ``Relay.close()``.
Reason = Literal["closed", "idle", "reset", "error", "connect_failed", "terminated", "shutdown"]
Side = Literal["client", "upstream"]
Address = tuple[str, int]

_RESET_ERRORS = (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)
_LINGER_RESET = struct.pack("ii", 1, 0)
_now = time.monotonic


@dataclass(frozen=True, slots=True, kw_only=True)
class RelaySettings:
    """Per-service relay knobs; build once per configuration, share across connections."""

    connect_timeout: float = 30.0  # Traefik's serversTransport dialTimeout default
    idle_timeout: float | None = None
    termination_delay: float | None = None
    # Write-buffer high-water mark per transport; the low mark is a quarter of it.
    write_buffer_high: int = 64 * 1024
    # Dial the server with TLS (a TCP server with ``tls: true``).
    tls: ssl.SSLContext | None = None
    server_hostname: str | None = None


DEFAULT_SETTINGS = RelaySettings()


class _End(asyncio.Protocol):
    """One connection of a relay; its peer is the other connection."""

    __slots__ = (
        "relay",
        "side",
        "transport",
        "peer",
        "received",
        "eof",
        "forwarded",
        "lost",
        "throttled",
        "holding",
    )

    def __init__(self, relay: Relay, side: Side) -> None:
        self.relay = relay
        self.side: Side = side
        self.transport: asyncio.Transport | None = None
        self.peer: _End = self
        self.received = 0
        self.eof = False  # this side sent FIN
        self.forwarded = False  # and that FIN went on to the peer
        self.lost = False  # connection_lost has run
        self.throttled = False  # reading paused because the peer's buffer is full
        self.holding = False  # client end while the server is dialled: keep what arrives

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Only the upstream end is made; the client end is handed over.
        self.transport = cast(asyncio.Transport, transport)
        if self.relay.reason is not None:
            self.transport.abort()
            return
        high = self.relay.settings.write_buffer_high
        self.transport.set_write_buffer_limits(high, high // 4)

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        relay = self.relay
        relay.last_activity = _now()
        if self.holding:
            # uvloop starts reading after connection_made even if it paused
            # reading, so a hand-over from there can still see one read.
            relay._early.append(data)
            self.transport.pause_reading()  # type: ignore[union-attr]
            return
        self.peer.transport.write(data)  # type: ignore[union-attr]

    def eof_received(self) -> bool:
        self.relay._eof(self)
        # Keep the transport open: the other direction may still flow. A TLS
        # transport cannot stay half-open (asyncio warns if asked to).
        transport = self.transport
        return transport is None or transport.get_extra_info("sslcontext") is None

    def pause_writing(self) -> None:
        peer = self.peer
        if peer.eof or peer.lost or peer.throttled or peer.transport is None:
            return
        peer.throttled = True
        peer.transport.pause_reading()

    def resume_writing(self) -> None:
        self.relay.last_activity = _now()  # a draining buffer is progress
        peer = self.peer
        if not peer.throttled:
            return
        peer.throttled = False
        if peer.eof or peer.lost or peer.transport is None or peer.holding:
            return
        peer.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.relay._lost(self, exc)


class Relay:
    """A client connection relayed to one server; read the counters in ``on_done``."""

    __slots__ = (
        "upstream",
        "settings",
        "started",
        "ended",
        "last_activity",
        "reason",
        "side",
        "error",
        "_early",
        "_client",
        "_server",
        "_initial",
        "_on_done",
        "_task",
        "_idle",
        "_termination",
        "_done",
    )

    def __init__(
        self,
        upstream: Address,
        settings: RelaySettings,
        initial_data: bytes,
        on_done: Callable[[Relay], None] | None,
    ) -> None:
        self.upstream = upstream
        self.settings = settings
        self.started = _now()
        self.ended: float | None = None
        self.last_activity = self.started
        self.reason: Reason | None = None
        self.side: Side | None = None  # which connection reset or failed
        self.error: BaseException | None = None
        self._early: list[bytes] = []  # client bytes read while the server is dialled
        self._client = _End(self, "client")
        self._client.holding = True
        self._server = _End(self, "upstream")
        self._client.peer, self._server.peer = self._server, self._client
        self._initial = len(initial_data)
        self._on_done = on_done
        self._task: asyncio.Task[None] | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._termination: asyncio.TimerHandle | None = None
        self._done = False

    # --- what on_done reads -----------------------------------------------------------

    @property
    def bytes_from_client(self) -> int:
        """Client bytes sent to the server, the peeked ones included (not the PROXY header)."""
        return self._initial + self._client.received

    @property
    def bytes_from_upstream(self) -> int:
        """Server bytes sent to the client."""
        return self._server.received

    @property
    def duration(self) -> float:
        """Seconds from ``start_relay`` to the end (or to now, while running)."""
        return (self.ended if self.ended is not None else _now()) - self.started

    @property
    def client_transport(self) -> asyncio.Transport | None:
        return self._client.transport

    @property
    def upstream_transport(self) -> asyncio.Transport | None:
        return self._server.transport

    def close(self) -> None:
        """End the relay now (gateway shutdown); ``on_done`` follows with reason ``shutdown``."""
        self._finish("shutdown", None, None, "abort")

    # --- lifecycle --------------------------------------------------------------------

    async def _connect(self, proxy_header: bytes, initial_data: bytes, client_eof: bool) -> None:
        loop = asyncio.get_running_loop()
        host, port = self.upstream
        failure: OSError | None = None
        cancelled = False
        try:
            async with asyncio.timeout(self.settings.connect_timeout):
                settings = self.settings
                if settings.tls is None:
                    await loop.create_connection(lambda: self._server, host, port)
                else:
                    await loop.create_connection(
                        lambda: self._server,
                        host,
                        port,
                        ssl=settings.tls,
                        server_hostname=settings.server_hostname or host,
                    )
        except asyncio.CancelledError:
            # close() during the dial (the reason is set), or the loop is
            # shutting down: either way nobody waits for this task.
            cancelled = True
        except OSError as exc:  # TimeoutError included
            failure = exc
        self._task = None
        if failure is not None:
            self._finish("connect_failed", "upstream", failure, "close")
        elif cancelled:
            self._finish("shutdown", None, None, "abort")
        if self.reason is not None:
            dialled = self._server
            if dialled.transport is not None and dialled.transport.is_closing():
                # The dial completed as the relay ended: connection_made saw the
                # reason and aborted, and uvloop reports no loss for a transport
                # aborted there (asyncio does; a late report is harmless).
                dialled.lost = True
            self._maybe_done()
            return
        server = self._server.transport
        client = self._client.transport
        assert server is not None and client is not None
        first = b"".join((proxy_header, initial_data, *self._early))
        self._early.clear()
        if first:
            server.write(first)
        end = self._client
        end.holding = False
        end.eof = end.eof or client_eof
        if end.eof:
            self._forward_eof(end)
        elif not end.throttled:
            client.resume_reading()
        self.last_activity = _now()
        if self.settings.idle_timeout is not None:
            self._idle = loop.call_later(self.settings.idle_timeout, self._idle_check)

    def _eof(self, end: _End) -> None:
        if end.eof:
            return
        end.eof = True
        self.last_activity = _now()
        if not end.holding:  # else it is forwarded once the server is dialled
            self._forward_eof(end)

    def _forward_eof(self, end: _End) -> None:
        if self.reason is not None:
            return
        end.forwarded = True
        peer = end.peer
        if peer.forwarded:
            self._finish("closed", None, None, "close")
            return
        transport = peer.transport
        if transport is not None and not peer.lost:
            if transport.can_write_eof():
                transport.write_eof()  # sent after the buffered bytes
            else:
                transport.close()
        delay = self.settings.termination_delay
        if delay is not None and self._termination is None:
            loop = asyncio.get_running_loop()
            self._termination = loop.call_later(delay, self._terminate)

    def _terminate(self) -> None:
        self._termination = None
        self._finish("terminated", None, None, "abort")

    def _idle_check(self) -> None:
        self._idle = None
        timeout = self.settings.idle_timeout
        if self._done or timeout is None:
            return
        left = self.last_activity + timeout - _now()
        if left > 0:
            self._idle = asyncio.get_running_loop().call_later(left, self._idle_check)
        elif self.reason is None:
            self._finish("idle", None, None, "abort")
        else:
            # A graceful close whose peer stopped reading: stop waiting for it.
            for end in (self._client, self._server):
                if end.transport is not None and not end.lost:
                    end.transport.abort()

    def _lost(self, end: _End, exc: Exception | None) -> None:
        if self.reason is None:
            if exc is None:
                self._finish("closed", None, None, "close")
            elif isinstance(exc, _RESET_ERRORS):
                self._finish("reset", end.side, exc, "reset")
            else:
                self._finish("error", end.side, exc, "reset")
        self._maybe_done()

    def _finish(
        self,
        reason: Reason,
        side: Side | None,
        error: BaseException | None,
        how: Literal["close", "abort", "reset"],
    ) -> None:
        """Record the first reason the relay ends and close what is still open."""
        if self.reason is not None:
            return
        self.reason, self.side, self.error = reason, side, error
        if self._termination is not None:
            self._termination.cancel()
            self._termination = None
        if how != "close" and self._idle is not None:
            self._idle.cancel()
            self._idle = None
        task = self._task
        if task is not None and self._server.transport is None:
            # Only a dial still in progress: once connection_made has run,
            # uvloop closes a cancelled dial's transport without telling the
            # protocol, so that one is aborted below and the dial left to return.
            task.cancel()
        for end in (self._client, self._server):
            transport = end.transport
            if transport is None or end.lost:
                continue
            if how == "close":
                transport.close()  # flushes what is buffered, then FIN
            else:
                if how == "reset":
                    _arm_reset(transport)
                transport.abort()
        self._maybe_done()

    def _maybe_done(self) -> None:
        if self._done or self.reason is None or self._task is not None:
            return
        for end in (self._client, self._server):
            if end.transport is not None and not end.lost:
                return
        self._done = True
        self.ended = _now()
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "relay to %s:%s ended (%s%s): %d bytes from client, %d from upstream",
                *self.upstream,
                self.reason,
                f" by {self.side}" if self.side else "",
                self.bytes_from_client,
                self.bytes_from_upstream,
            )
        callback, self._on_done = self._on_done, None
        if callback is not None:
            try:
                callback(self)
            except Exception:
                log.exception("relay to %s:%s: on_done callback failed", *self.upstream)


def _arm_reset(transport: asyncio.Transport) -> None:
    """Make the coming close send RST instead of FIN."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)


def start_relay(
    client: asyncio.BaseTransport,
    upstream: Address,
    *,
    initial_data: bytes = b"",
    client_eof: bool = False,
    proxy_header: bytes = b"",
    settings: RelaySettings = DEFAULT_SETTINGS,
    on_done: Callable[[Relay], None] | None = None,
) -> Relay:
    """Take over an accepted client connection and relay it to ``upstream`` (host, port).

    Synchronous, so an entry point calls it straight from ``data_received``.
    The entry point's protocol receives nothing after this call and must not
    use the transport again. ``initial_data`` is what the entry point already
    read (the peeked ClientHello); ``client_eof`` says the client had already
    sent FIN (the entry point's ``eof_received`` returned True).
    ``proxy_header`` (see ``proxy_protocol``) goes to the server first.
    """
    transport = cast(asyncio.Transport, client)
    relay = Relay(upstream, settings, initial_data, on_done)
    loop = asyncio.get_running_loop()
    if transport.is_closing():
        # Its connection_lost went, or goes, to the entry point's protocol.
        relay._client.transport = transport
        relay._client.lost = True
        relay.reason = "closed"
        loop.call_soon(relay._maybe_done)
        return relay
    transport.pause_reading()
    transport.set_protocol(relay._client)
    relay._client.transport = transport
    transport.set_write_buffer_limits(settings.write_buffer_high, settings.write_buffer_high // 4)
    relay._task = loop.create_task(relay._connect(proxy_header, initial_data, client_eof))
    return relay
