"""A UDP entry point: sessions per client address, relayed to a chosen server.

Traefik's UDP model. The first datagram from a client address ``(ip, port)``
opens a session: ``route`` chooses a ``Target`` (the router), its ``pick`` a
server, and the session opens its own connected socket to that server. The
client's datagrams go out on it; the server's replies (any number, any size)
go back from the entry point's socket, the address the client wrote to.

Invariants:

- The per-datagram path is a dict lookup, the router's ``admit`` (the L4
  middleware chain, ``middleware.l4.chains.DatagramChain``) and a
  ``sendto``; no task, no timer, no clock read. Tasks exist per session
  (opening its socket), never per datagram.
- A session's router, middleware chain and server are fixed when it opens.
  Assigning ``entry.route`` affects new sessions only, so a reload never
  moves or breaks a running one.
- A session ends when no datagram was forwarded either way (refused ones
  do not count) for ``idle_timeout`` (Traefik's entry point ``udp.timeout``,
  3s by default) to 1.25 times that: one sweep timer per entry point stamps
  a tick every ``idle_timeout / 4`` and each datagram copies the current
  tick into its session. The timer runs only while sessions exist.
- A session whose server socket reports an error (ICMP port unreachable
  arrives as ``ConnectionRefusedError``) ends; the client's next datagram
  opens a new one, which may pick another server.
- Every session that opened ends exactly once, and ``on_session_end`` hears
  of it, with its counters, for the access log.
- A new session's server socket is connected at once (an IP host; UDP
  connect is local) and datagrams go out on it before asyncio wraps it, so
  a burst from a new client is not queued in Python. For a host name the
  datagrams wait for the lookup (up to ``udp_session._HOLD_LIMIT`` bytes)
  and go out in order. Past that, or when the kernel refuses a send, they
  are dropped and counted. Counters live on the session and are summed on
  read.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.l4.udp_balancer import Address
from gateway.l4.udp_session import EndReason, Session, SessionRecord
from middleware.l4.contract import ConnectionInfo, Rejection

# SessionRecord and EndReason live in udp_session; callers import them from here.
__all__ = [
    "DEFAULT_IDLE_TIMEOUT",
    "Admit",
    "EndReason",
    "Route",
    "SessionRecord",
    "Target",
    "UDPEntry",
    "UDPStats",
]

_log = logging.getLogger(__name__)

DEFAULT_IDLE_TIMEOUT = 3.0
# Sweeps per idle timeout: a session ends at most 1/_TICKS late.
_TICKS = 4

Admit = Callable[[ConnectionInfo, int], Rejection | None]


@dataclass(frozen=True, slots=True)
class Target:
    """What a UDP router resolves to, built once per configuration.

    ``pick`` chooses a server per new session (``udp_balancer``); ``admit`` is
    the router's middleware chain (``DatagramChain.admit``), None without one.
    """

    router: str
    service: str
    pick: Callable[[], Address | None]
    admit: Admit | None = None


Route = Callable[[str, int], Target | None]


@dataclass(frozen=True, slots=True)
class UDPStats:
    """An entry point's counters since it started, live sessions included."""

    datagrams_in: int
    bytes_in: int
    datagrams_out: int
    bytes_out: int
    sessions_opened: int
    sessions_closed: int
    sessions_active: int
    # Client datagrams not forwarded: no router matched; the router's service
    # had no server; middleware refused them (also by rejection below);
    # a held queue overflowed or the kernel refused a send.
    unrouted: int
    no_server: int
    rejected: int
    dropped: int
    # Sessions ended by an error on their server socket, or failing to open it.
    server_errors: int
    rejections: dict[Rejection, int] = field(default_factory=dict)


class UDPEntry(asyncio.DatagramProtocol):
    """The protocol on an entry point's bound UDP socket; owns its sessions.

    ``route(client_ip, client_port)`` runs once per new session; reassign it
    to reload. ``on_session_end`` receives a ``SessionRecord`` per ended
    session; it must not raise (it is logged if it does).
    """

    def __init__(
        self,
        route: Route,
        *,
        name: str = "",
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        on_session_end: Callable[[SessionRecord], None] | None = None,
        on_reject: Callable[[Target, Rejection], None] | None = None,
        on_session_open: Callable[[Target], None] | None = None,
    ) -> None:
        if idle_timeout <= 0:
            raise ValueError("udp.timeout: must be positive")
        self.route = route
        self.name = name
        self.idle_timeout = idle_timeout
        self.on_session_end = on_session_end
        # Told of every refused datagram (metrics); must not raise.
        self.on_reject = on_reject
        self.on_session_open = on_session_open
        self.tick = 0
        self.transport: asyncio.DatagramTransport | None = None
        # Sends to a client from the entry point's socket; set once started.
        self.reply: Callable[[bytes, Any], None] = _unstarted
        self._sessions: dict[Any, Session] = {}
        self._opening: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = asyncio.Event()
        # Counters of ended sessions and of datagrams that never had one.
        self._ended = [0, 0, 0, 0]
        self._opened = 0
        self._unrouted = 0
        self._no_server = 0
        self._rejected = 0
        self._dropped = 0
        self._server_errors = 0
        self._rejections: dict[Rejection, int] = {}

    async def start(self, sock: socket.socket) -> None:
        """Serve on ``sock``, a bound UDP socket the caller made (and tuned)."""
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, sock=sock)

    @property
    def address(self) -> Any:
        """The bound address, as ``getsockname`` gives it."""
        if self.transport is None:
            raise RuntimeError("UDP entry point not started")
        return self.transport.get_extra_info("sockname")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        entry: asyncio.DatagramTransport = transport  # type: ignore[assignment]
        self.transport = entry
        # Sessions call the bound sendto directly: one attribute load per reply.
        self.reply = entry.sendto

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            _log.error("udp entry point %s: socket closed: %s", self.name, exc)
        self._shutdown()
        self._closed.set()

    def error_received(self, exc: Exception) -> None:
        # A send to a client failed (ENOBUFS, EPERM from a firewall, ...):
        # the datagram is gone, the entry point carries on.
        self._dropped += 1
        _log.debug("udp entry point %s: %s", self.name, exc)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        session = self._sessions.get(addr)
        if session is None:
            self._open(data, addr)
            return
        admit = session.admit
        if admit is not None:
            rejection = admit(session.info, len(data))
            if rejection is not None:
                session.rejected += 1
                self._reject(rejection, session.target)
                return
        upstream = session.upstream
        if upstream is None and not session.send_early(data):
            self._dropped += 1
            return
        session.tick = self.tick
        session.datagrams_in += 1
        session.bytes_in += len(data)
        if upstream is not None:
            upstream.sendto(data)

    def _reject(self, rejection: Rejection, target: Target) -> None:
        self._rejected += 1
        self._rejections[rejection] = self._rejections.get(rejection, 0) + 1
        callback = self.on_reject
        if callback is not None:
            callback(target, rejection)

    def _open(self, data: bytes, addr: Any) -> None:
        ip: str = addr[0]
        if ip.startswith("::ffff:"):
            # A v4 client on a dual-stack socket: rules and allowlists speak v4.
            ip = ip[7:]
        port: int = addr[1]
        try:
            target = self.route(ip, port)
        except Exception:
            _log.exception("udp entry point %s: routing %s:%s failed", self.name, ip, port)
            target = None
        if target is None:
            self._unrouted += 1
            return
        info = ConnectionInfo(
            protocol="udp",
            client_ip=ip,
            client_port=port,
            entry_point=self.name,
            router=target.router,
        )
        if target.admit is not None:
            rejection = target.admit(info, len(data))
            if rejection is not None:
                # No session for a refused client: a flood of forged sources
                # leaves no state behind.
                self._reject(rejection, target)
                return
        server = target.pick()
        if server is None:
            self._no_server += 1
            return
        session = Session(self, addr, info, target, server)
        self._sessions[addr] = session
        self._opened += 1
        if self.on_session_open is not None:
            self.on_session_open(target)
        session.raw = _connected_socket(server)
        if not session.send_early(data):
            self._dropped += 1
        session.datagrams_in = 1
        session.bytes_in = len(data)
        task = asyncio.get_running_loop().create_task(self._connect(session))
        self._opening.add(task)
        task.add_done_callback(self._opening.discard)
        if self._sweeper is None:
            self._schedule_sweep()

    async def _connect(self, session: Session) -> None:
        loop = asyncio.get_running_loop()
        try:
            if session.raw is not None:
                await loop.create_datagram_endpoint(lambda: session, sock=session.raw)
            else:
                await loop.create_datagram_endpoint(lambda: session, remote_addr=session.server)
        except OSError as exc:
            self._end(session, "error", exc)

    def _end(self, session: Session, reason: EndReason, exc: BaseException | None = None) -> None:
        """End ``session`` once: close its server socket, count it, report it."""
        if session.closed:
            return
        session.closed = True
        if self._sessions.get(session.client) is session:
            del self._sessions[session.client]
        upstream = session.upstream
        if upstream is not None:
            upstream.close()
        elif session.raw is not None:
            session.raw.close()  # never wrapped: nobody else will close it
            session.raw = None
        session.held = None
        ended = self._ended
        ended[0] += session.datagrams_in
        ended[1] += session.bytes_in
        ended[2] += session.datagrams_out
        ended[3] += session.bytes_out
        error = ""
        if reason == "error":
            self._server_errors += 1
            error = f"{type(exc).__name__}: {exc}" if exc is not None else "error"
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug(
                "udp entry point %s: session %s -> %s (router %s) ended: %s %s",
                self.name,
                session.client,
                session.server,
                session.target.router,
                reason,
                error,
            )
        callback = self.on_session_end
        if callback is not None:
            try:
                callback(session.record(reason, error))
            except Exception:
                _log.exception("udp entry point %s: session-end callback failed", self.name)

    def _schedule_sweep(self) -> None:
        loop = asyncio.get_running_loop()
        self._sweeper = loop.call_later(self.idle_timeout / _TICKS, self._sweep)

    def _sweep(self) -> None:
        self.tick += 1
        # Touched at tick t means active since (t + 1) sweep intervals ago at
        # the latest; ending at t <= tick - _TICKS - 1 idles a full timeout.
        cutoff = self.tick - _TICKS - 1
        for session in [s for s in self._sessions.values() if s.tick <= cutoff]:
            self._end(session, "idle")
        if self._sessions:
            self._schedule_sweep()
        else:
            self._sweeper = None

    def sessions(self) -> list[SessionRecord]:
        """The live sessions, for the API."""
        return [s.record(None) for s in self._sessions.values()]

    def stats(self) -> UDPStats:
        """Counters since start: ended sessions' totals plus the live ones'."""
        d_in, b_in, d_out, b_out = self._ended
        for s in self._sessions.values():
            d_in += s.datagrams_in
            b_in += s.bytes_in
            d_out += s.datagrams_out
            b_out += s.bytes_out
        active = len(self._sessions)
        return UDPStats(
            datagrams_in=d_in,
            bytes_in=b_in,
            datagrams_out=d_out,
            bytes_out=b_out,
            sessions_opened=self._opened,
            sessions_closed=self._opened - active,
            sessions_active=active,
            unrouted=self._unrouted,
            no_server=self._no_server,
            rejected=self._rejected,
            dropped=self._dropped,
            server_errors=self._server_errors,
            rejections=dict(self._rejections),
        )

    def close(self) -> None:
        """End every session (reason ``shutdown``) and close the entry point's socket."""
        self._shutdown()
        if self.transport is not None:
            self.transport.close()
        else:
            self._closed.set()

    async def wait_closed(self) -> None:
        """Until the entry point's socket has closed."""
        await self._closed.wait()

    def _shutdown(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for task in list(self._opening):
            task.cancel()
        for session in list(self._sessions.values()):
            self._end(session, "shutdown")


def _connected_socket(server: Address) -> socket.socket | None:
    """A UDP socket connected to ``server`` now, when its host is an IP address.

    Connecting a UDP socket is a local operation, so the session can send on
    it at once, before asyncio has wrapped it: a burst from a new client goes
    straight to the server instead of queueing in Python. A host name needs a
    lookup, and takes the asynchronous path (``Session.hold``).
    """
    host = server[0]
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        return None
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.connect(server)
    except OSError:
        sock.close()
        return None
    return sock


def _unstarted(data: bytes, addr: Any) -> None:
    raise RuntimeError("UDP entry point not started")
