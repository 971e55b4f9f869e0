"""A TCP entry point: accept, read what routing needs, then relay or hand over to HTTP.

An entry point runs through ``TCPEntry`` when it has TCP routers or accepts
PROXY protocol; otherwise its HTTP listener accepts directly. For each
connection, in one task:

1. From a source in ``proxyProtocol.trustedIPs``, a PROXY v1/v2 header is
   read and consumed (only it: reads are sized by what a peek announced);
   its source address becomes the client's. A connection without one is
   taken as direct, as Traefik does; a malformed one is closed.
2. When routing needs it, the first bytes are *peeked* (``MSG_PEEK``), never
   consumed: a TLS ClientHello yields the server name and ALPN for
   ``HostSNI``/``ALPN`` rules, and the socket still holds every byte, so TLS
   passthrough relays the original ClientHello and TLS termination (for TCP
   or HTTPS routers) hands the kernel's byte stream to the TLS library
   untouched. While a ClientHello is incomplete, ``SO_RCVLOWAT`` makes the
   socket readable only once more bytes have arrived, so waiting is a single
   wakeup, not a poll.
3. The router is chosen as Traefik's TCP router does (see
   ``tcp_routing``): TLS connections try TCP routers naming the server,
   then HTTPS routers by host, then a catch-all TLS router, then HTTPS;
   plain connections try plain TCP routers, then HTTP. Nothing matching
   closes the connection.

No peek happens when only plain TCP routers that read no ClientHello serve
the port, so server-first protocols (SMTP, MySQL) work. When the port also
has TLS or HTTP routes, a client that sends nothing for ``SERVER_FIRST_WAIT``
seconds is given to a plain TCP router that matches, if any.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol, cast

from gateway.http.forwarded import TrustedSources
from gateway.l4 import proxy_protocol
from gateway.l4.client_hello import MAX_PEEK, ClientHello, Peek, parse_client_hello
from gateway.l4.relay import Relay, RelaySettings, start_relay
from gateway.l4.tcp_routing import TCPRouterRuntime, TCPRoutes, TCPServer
from middleware.l4.contract import ConnectionInfo, Rejection

if TYPE_CHECKING:
    from gateway.http.entrypoint import EntryPointRuntime

log = logging.getLogger(__name__)

# How long a silent client waits before a plain TCP router takes it (see module doc).
SERVER_FIRST_WAIT = 1.0
# Connections accepted per readiness event, so one busy port cannot starve the loop.
_ACCEPT_BATCH = 64
_TLS_HANDSHAKE = 0x16
_PROXY_PEEK = proxy_protocol.V2_HEADER_LENGTH + proxy_protocol.DEFAULT_MAX_V2_LENGTH


class L4Observer(Protocol):
    """Where TCP connections are reported: metrics and the access log."""

    def connection_count(self, entry: str, delta: int) -> None: ...

    def tcp_opened(self, entry: str, router: TCPRouterRuntime) -> None: ...

    def tcp_rejected(
        self, entry: str, router: TCPRouterRuntime, rejection: Rejection, info: ConnectionInfo
    ) -> None: ...

    def tcp_done(
        self,
        entry: str,
        router: TCPRouterRuntime,
        server: TCPServer,
        relay: Relay,
        info: ConnectionInfo,
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class TCPEntrySettings:
    name: str
    # Sources whose PROXY protocol header is honoured; None: the entry point takes none.
    proxy_trusted: TrustedSources | None = None
    # How long a client may take to send what routing needs (PROXY header, ClientHello).
    peek_timeout: float = 10.0
    server_first_wait: float = SERVER_FIRST_WAIT
    # Close a relayed connection silent both ways this long (None: never).
    idle_timeout: float | None = None


class _Closed(Exception):
    """The client went away, or sent something unusable, before it could be routed."""


class TCPEntry:
    """Accepts an entry point's connections and routes them to TCP routers or to HTTP.

    ``routes`` is replaced on reload; connections already relayed keep their
    router and server. ``tls_context(options)`` gives the server-side SSL
    context for a TLS options name (certificates as for HTTP).
    """

    def __init__(
        self,
        settings: TCPEntrySettings,
        routes: TCPRoutes,
        *,
        http: EntryPointRuntime | None,
        tls_context: Callable[[str], ssl.SSLContext],
        observer: L4Observer | None = None,
    ) -> None:
        self.name = settings.name
        self.settings = settings
        self.routes = routes
        self.http = http
        # A TLS entry point's plain HTTP routers (Traefik serves both on one
        # port): plain connections go here, TLS ones to ``http``.
        self.plain_http: EntryPointRuntime | None = None
        self.tls_context = tls_context
        self.observer = observer
        self.relays: set[Relay] = set()
        self.pending: set[asyncio.Task[None]] = set()
        self._sock: socket.socket | None = None
        # Services' relay settings with this entry point's idle timeout.
        self._with_idle: dict[RelaySettings, RelaySettings] = {}

    # -- accepting -------------------------------------------------------------------

    def start(self, sock: socket.socket) -> None:
        """Accept on ``sock`` (a listening socket this entry now owns and closes)."""
        sock.setblocking(False)
        self._sock = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._accept)

    def stop_accepting(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            asyncio.get_running_loop().remove_reader(sock.fileno())
            sock.close()

    def _accept(self) -> None:
        sock = self._sock
        if sock is None:
            return
        loop = asyncio.get_running_loop()
        for _ in range(_ACCEPT_BATCH):
            try:
                conn, addr = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # EMFILE and friends: the connection waits in the backlog.
                log.warning("entry point %s: accept failed: %s", self.name, exc)
                return
            conn.setblocking(False)
            if conn.family != socket.AF_UNIX:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            task = loop.create_task(self._serve(conn, addr))
            self.pending.add(task)
            task.add_done_callback(self.pending.discard)

    # -- one connection ------------------------------------------------------------------

    async def _serve(self, conn: socket.socket, addr: Any) -> None:
        client_ip, client_port = _client(addr)
        try:
            async with asyncio.timeout(self.settings.peek_timeout):
                trusted = self.settings.proxy_trusted
                if trusted is not None and trusted.trusts(client_ip):
                    source = await _read_proxy_header(conn)
                    if source is not None:
                        client_ip, client_port = source
                await self._route(conn, client_ip, client_port)
        except (_Closed, TimeoutError, OSError) as exc:
            if log.isEnabledFor(logging.DEBUG):
                log.debug("entry point %s: %s:%s closed before routing: %r",
                          self.name, client_ip, client_port, exc)
            conn.close()
        except asyncio.CancelledError:
            conn.close()
            raise

    async def _route(self, conn: socket.socket, client_ip: str, client_port: int) -> None:
        routes = self.routes
        http = self.http
        has_http = http is not None and bool(http.state.table.routes)
        https = has_http and http is not None and http.ssl_context is not None
        plain_http = self.plain_http
        if plain_http is None and has_http and not https:
            plain_http = http
        if routes.plain and not (routes.tls or has_http or routes.plain_needs_peek):
            router = routes.match_plain(client_ip)
            if router is not None:
                await self._relay(conn, router, client_ip, client_port, None, ())
            else:
                conn.close()
            return
        wait = self.settings.server_first_wait if routes.plain else None
        hello = await _peek_client_hello(conn, wait)
        if hello is None:  # plain TCP, or a client that waits for the server
            router = routes.match_plain(client_ip)
            if router is not None:
                await self._relay(conn, router, client_ip, client_port, None, ())
            elif plain_http is not None:
                await plain_http.adopt(conn, (client_ip, client_port))
            else:
                conn.close()
            return
        sni, alpn = hello.server_name, hello.alpn
        router = routes.match_tls(sni, client_ip, alpn)
        if router is not None and not router.catch_all:
            await self._relay(conn, router, client_ip, client_port, sni, alpn)
        elif https and http is not None and sni and http.state.table.has_host(sni):
            await http.adopt(conn, (client_ip, client_port))
        elif router is not None:
            await self._relay(conn, router, client_ip, client_port, sni, alpn)
        elif https and http is not None:
            await http.adopt(conn, (client_ip, client_port))
        else:
            conn.close()

    async def _relay(
        self,
        conn: socket.socket,
        router: TCPRouterRuntime,
        client_ip: str,
        client_port: int,
        sni: str | None,
        alpn: tuple[str, ...],
    ) -> None:
        info = ConnectionInfo(
            protocol="tcp",
            client_ip=client_ip,
            client_port=client_port,
            entry_point=self.name,
            router=router.name,
            sni=sni,
            alpn=alpn,
        )
        server = self._admit(router, info)
        if server is None:
            conn.close()
            return
        try:
            transport, waiting = await self._adopt(conn, router)
        except BaseException:
            if router.chain is not None:
                router.chain.release(info)
            raise
        if waiting.lost:
            if router.chain is not None:
                router.chain.release(info)
            return
        self._start(transport, router, server, info, b"".join(waiting.early), waiting.eof)

    def _admit(self, router: TCPRouterRuntime, info: ConnectionInfo) -> TCPServer | None:
        """Run the router's middleware and pick a server; None: refuse the connection."""
        chain = router.chain
        if chain is not None:
            rejection = chain.admit(info)
            if rejection is not None:
                if self.observer is not None:
                    self.observer.tcp_rejected(self.name, router, rejection, info)
                return None
        server = router.pick()
        if server is None:
            log.warning("tcp router %s: service %s has no server available",
                        router.name, router.service)
            if chain is not None:
                chain.release(info)
        return server

    def _start(
        self,
        transport: asyncio.Transport,
        router: TCPRouterRuntime,
        server: TCPServer,
        info: ConnectionInfo,
        early: bytes,
        eof: bool,
    ) -> None:
        """Relay an admitted connection to ``server`` (synchronous, from any caller)."""
        chain = router.chain
        header = b""
        if server.proxy_version:
            local = transport.get_extra_info("sockname")
            source = (info.client_ip, info.client_port)
            destination = (_unmapped(local[0]), local[1]) if local else None
            header = (
                proxy_protocol.encode_v1(source, destination)
                if server.proxy_version == 1
                else proxy_protocol.encode_v2(source, destination)
            )
        observer = self.observer
        if observer is not None:
            observer.connection_count(self.name, 1)
            observer.tcp_opened(self.name, router)

        def done(relay: Relay) -> None:
            self.relays.discard(relay)
            if chain is not None:
                chain.release(info)
            if relay.reason == "connect_failed":
                server.refused()
            elif server.ejected_until:
                server.connected()
            if observer is not None:
                observer.connection_count(self.name, -1)
                observer.tcp_done(self.name, router, server, relay, info)

        settings = server.settings
        idle = self.settings.idle_timeout
        if idle is not None:
            found = self._with_idle.get(settings)
            if found is None:
                if len(self._with_idle) > 256:  # generations of settings: keep it bounded
                    self._with_idle.clear()
                found = self._with_idle[settings] = replace(settings, idle_timeout=idle)
            settings = found
        relay = start_relay(
            transport,
            (server.host, server.port),
            initial_data=early,
            client_eof=eof,
            proxy_header=header,
            settings=settings,
            on_done=done,
        )
        self.relays.add(relay)

    def direct(self) -> asyncio.Protocol:
        """A protocol for an asyncio server on this entry point when no peek is needed.

        With only plain TCP routers, no HTTP and no PROXY protocol, routing
        needs nothing but the client's address: the loop's own (C) accept
        makes the transport and the connection is routed in
        ``connection_made``, without a task or a Python accept.
        """
        return _Direct(self)

    @property
    def needs_peek(self) -> bool:
        """Whether connections must be read before routing (see ``gateway.listeners``)."""
        routes = self.routes
        http = self.http
        has_http = http is not None and bool(http.state.table.routes)
        return (
            self.settings.proxy_trusted is not None
            or not routes.plain
            or bool(routes.tls)
            or has_http
            or self.plain_http is not None
            or routes.plain_needs_peek
        )

    async def _adopt(
        self, conn: socket.socket, router: TCPRouterRuntime
    ) -> tuple[asyncio.Transport, _Waiting]:
        """Wrap the socket in a transport, ending TLS here when the router terminates it."""
        loop = asyncio.get_running_loop()
        context = self.tls_context(router.tls_options) if router.tls == "terminate" else None
        # The instance, not the returned protocol: with TLS, uvloop returns its SSL layer.
        waiting = _Waiting()
        transport, _ = await loop.connect_accepted_socket(lambda: waiting, conn, ssl=context)
        return transport, waiting

    # -- shutdown ----------------------------------------------------------------------

    async def drain(self, grace: float) -> None:
        """Stop accepting; let relays finish for up to ``grace`` seconds, then cut them."""
        self.stop_accepting()
        for task in list(self.pending):
            task.cancel()
        deadline = time.monotonic() + grace
        while self.relays and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for relay in list(self.relays):
            relay.close()


class _Direct(asyncio.Protocol):
    """Routes a connection the loop accepted, as soon as it is made (``TCPEntry.direct``)."""

    __slots__ = ("entry",)

    def __init__(self, entry: TCPEntry) -> None:
        self.entry = entry

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        entry = self.entry
        client_ip, client_port = _client(transport.get_extra_info("peername"))
        router = entry.routes.match_plain(client_ip)
        if router is None:
            transport.close()
            return
        info = ConnectionInfo(
            protocol="tcp",
            client_ip=client_ip,
            client_port=client_port,
            entry_point=entry.name,
            router=router.name,
        )
        server = entry._admit(router, info)
        if server is None:
            transport.close()
            return
        entry._start(cast(asyncio.Transport, transport), router, server, info, b"", False)


class _Waiting(asyncio.Protocol):
    """Holds an accepted connection until ``start_relay`` takes it.

    Reading is paused at once, but uvloop may deliver a read it had already
    started (and TLS may have decrypted one), so what arrives is kept for the relay.
    """

    def __init__(self) -> None:
        self.early: list[bytes] = []
        self.eof = False
        self.lost = False
        self.tls = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.tls = transport.get_extra_info("sslcontext") is not None
        cast(asyncio.Transport, transport).pause_reading()

    def data_received(self, data: bytes) -> None:
        self.early.append(data)

    def eof_received(self) -> bool:
        self.eof = True
        # A TLS transport cannot stay half-open (asyncio warns if asked to).
        return not self.tls

    def connection_lost(self, exc: Exception | None) -> None:
        # Gone before the relay took it (a client that closes right after the
        # TLS handshake): the relay must not wait for a loss already reported.
        self.lost = True


def _client(addr: Any) -> tuple[str, int]:
    if isinstance(addr, tuple):
        return _unmapped(addr[0]), int(addr[1])
    return "", 0


def _unmapped(ip: str) -> str:
    return ip[7:] if ip.startswith("::ffff:") else ip


async def _readable(conn: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    fd = conn.fileno()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


def _peek(conn: socket.socket, size: int) -> bytes | None:
    """What the socket holds (up to ``size``), without consuming; None: nothing yet."""
    try:
        data = conn.recv(size, socket.MSG_PEEK)
    except (BlockingIOError, InterruptedError):
        return None
    if not data:
        raise _Closed("closed by the client")
    return data


def _want_more(conn: socket.socket, have: int) -> None:
    """Wake the next wait only once more than ``have`` bytes are queued."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, have + 1)


def _reset_lowat(conn: socket.socket) -> None:
    with contextlib.suppress(OSError):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)


async def _read_proxy_header(conn: socket.socket) -> tuple[str, int] | None:
    """Consume a PROXY header if the stream starts with one; its source address, if any."""
    try:
        while True:
            data = _peek(conn, _PROXY_PEEK)
            if data is not None:
                found = proxy_protocol.decode(data)
                if isinstance(found, proxy_protocol.ProxyHeader):
                    conn.recv(found.length)
                    if found.source is None:
                        return None
                    return _unmapped(found.source[0]), found.source[1]
                if isinstance(found, proxy_protocol.Malformed):
                    raise _Closed(f"malformed PROXY header: {found.reason}")
                if found is proxy_protocol.Decode.NOT_PROXY:
                    return None
                _want_more(conn, len(data))
            await _readable(conn)
    finally:
        _reset_lowat(conn)


async def _peek_client_hello(conn: socket.socket, wait: float | None) -> ClientHello | None:
    """The ClientHello at the start of the stream; None for a plain (or silent) client.

    ``wait``: give up on a client that has sent nothing after this long (None: wait
    for the caller's timeout).
    """
    deadline = None if wait is None else asyncio.get_running_loop().time() + wait
    try:
        while True:
            data = _peek(conn, MAX_PEEK)
            if data is not None:
                if data[0] != _TLS_HANDSHAKE:
                    return None
                found = parse_client_hello(data)
                if isinstance(found, ClientHello):
                    return found
                if found is Peek.NOT_TLS:
                    return None
                if len(data) >= MAX_PEEK:
                    raise _Closed("ClientHello larger than 16 KiB")
                _want_more(conn, len(data))
                deadline = None  # it is speaking: the caller's timeout bounds the rest
            if deadline is None:
                await _readable(conn)
            else:
                try:
                    async with asyncio.timeout_at(deadline):
                        await _readable(conn)
                except TimeoutError:
                    return None
    finally:
        _reset_lowat(conn)
