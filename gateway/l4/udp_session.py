"""One UDP session: a client address, its server socket, and its record.

``Session`` is the ``asyncio.DatagramProtocol`` on the connected socket a
session opens to its server; ``UDPEntry`` (``gateway.l4.udp``) creates it,
feeds it the client's datagrams and ends it. ``SessionRecord`` is what an
ended (or, for the API, live) session reports.

Invariants:

- The server, router and middleware chain are fixed at construction.
- Until the server socket is up, client datagrams are held in order, up to
  ``_HOLD_LIMIT`` bytes; ``hold`` refuses past that and once the socket is up.
- Errors and an unexpected close of the server socket go to
  ``UDPEntry._end``, which ends the session exactly once; this class never
  ends itself.
- Per reply: a tick copy, two counter updates and the entry point's
  ``sendto``; nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from gateway.l4.udp_balancer import Address
from middleware.l4.contract import ConnectionInfo

if TYPE_CHECKING:
    # Only for annotations: gateway.l4.udp imports this module at runtime.
    from gateway.l4.udp import Target, UDPEntry

# Bytes a session holds while its server socket opens. The default
# net.core.rmem_default (208 KiB) bounds what can queue in front of us anyway.
_HOLD_LIMIT = 1 << 20

EndReason = Literal["idle", "error", "shutdown"]


# Socket buffer sizes: a burst of datagrams waits in the kernel, not on the
# floor, while the loop is busy. Receive buffers are limits, not allocations.
ENTRY_BUFFER = 4 << 20
SESSION_BUFFER = 4 << 20


def enlarge_buffers(sock: Any, size: int) -> None:
    """Raise ``sock``'s receive and send buffers to ``size`` bytes where the kernel allows.

    ``SO_RCVBUF`` stops at ``net.core.rmem_max`` (208 KiB by default, about a
    hundred 1 KiB datagrams); as root, ``SO_RCVBUFFORCE`` goes past it, as
    HAProxy's ``tune.rcvbuf`` and quic-go do.
    """
    for plain, forced in (
        (socket.SO_RCVBUF, getattr(socket, "SO_RCVBUFFORCE", None)),
        (socket.SO_SNDBUF, getattr(socket, "SO_SNDBUFFORCE", None)),
    ):
        # Not privileged: the kernel's limit stands.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, plain, size)
            # Linux doubles the value it stores (bookkeeping overhead).
            if forced is not None and sock.getsockopt(socket.SOL_SOCKET, plain) < size:
                sock.setsockopt(socket.SOL_SOCKET, forced, size)


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """One session, for the access log and the API; ``reason`` is None while live.

    ``*_in`` count client-to-server datagrams that were forwarded, ``*_out``
    server-to-client ones; ``rejected`` the client's datagrams middleware refused.
    """

    entry_point: str
    router: str
    service: str
    client: tuple[str, int]
    server: Address
    started: float  # wall clock, seconds since the epoch
    duration: float
    datagrams_in: int
    bytes_in: int
    datagrams_out: int
    bytes_out: int
    rejected: int
    reason: EndReason | None
    error: str = ""


class Session(asyncio.DatagramProtocol):
    """One client address and its own connected socket to the chosen server."""

    __slots__ = (
        "entry",
        "client",
        "info",
        "target",
        "admit",
        "server",
        "upstream",
        "raw",
        "held",
        "held_bytes",
        "tick",
        "started",
        "started_wall",
        "datagrams_in",
        "bytes_in",
        "datagrams_out",
        "bytes_out",
        "rejected",
        "closed",
        "reply",
    )

    def __init__(
        self, entry: UDPEntry, client: Any, info: ConnectionInfo, target: Target, server: Address
    ) -> None:
        self.entry = entry
        self.client = client
        self.info = info
        self.target = target
        self.admit = target.admit
        self.server = server
        self.upstream: asyncio.DatagramTransport | None = None
        # The server socket, connected but not yet wrapped by asyncio (IP hosts only).
        self.raw: socket.socket | None = None
        self.held: list[bytes] | None = []
        self.held_bytes = 0
        self.tick = entry.tick
        self.started = time.monotonic()
        self.started_wall = time.time()
        self.datagrams_in = 0
        self.bytes_in = 0
        self.datagrams_out = 0
        self.bytes_out = 0
        self.rejected = 0
        self.closed = False
        self.reply = entry.reply

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.closed:
            transport.close()
            return
        upstream: asyncio.DatagramTransport = transport  # type: ignore[assignment]
        self.upstream = upstream
        self.raw = None  # the transport owns the socket now
        sock = transport.get_extra_info("socket")
        if sock is not None:
            enlarge_buffers(sock, SESSION_BUFFER)
        held = self.held or ()
        self.held = None
        self.held_bytes = 0
        for data in held:
            # A refused send ends the session from inside sendto.
            if self.closed:
                break
            upstream.sendto(data)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        # A connected socket only receives from its peer: no check of addr.
        self.tick = self.entry.tick
        self.datagrams_out += 1
        self.bytes_out += len(data)
        self.reply(data, self.client)

    def error_received(self, exc: Exception) -> None:
        self.entry._end(self, "error", exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.entry._end(self, "error", exc or ConnectionResetError("server socket closed"))

    def send_early(self, data: bytes) -> bool:
        """Forward ``data`` before the transport exists: on the raw socket, else held."""
        raw = self.raw
        if raw is None:
            return self.hold(data)
        try:
            raw.send(data)
        except OSError:  # a full buffer, or ICMP unreachable reported on this send
            return False
        return True

    def hold(self, data: bytes) -> bool:
        held = self.held
        if held is None or self.held_bytes + len(data) > _HOLD_LIMIT:
            return False
        held.append(data)
        self.held_bytes += len(data)
        return True

    def record(self, reason: EndReason | None, error: str = "") -> SessionRecord:
        info = self.info
        return SessionRecord(
            entry_point=info.entry_point,
            router=self.target.router,
            service=self.target.service,
            client=(info.client_ip, info.client_port),
            server=self.server,
            started=self.started_wall,
            duration=time.monotonic() - self.started,
            datagrams_in=self.datagrams_in,
            bytes_in=self.bytes_in,
            datagrams_out=self.datagrams_out,
            bytes_out=self.bytes_out,
            rejected=self.rejected,
            reason=reason,
            error=error,
        )
