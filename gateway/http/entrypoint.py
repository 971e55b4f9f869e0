"""An HTTP entry point at run time: its listener, connections, and current state.

``EntryPointRuntime`` owns the listening socket, the set of open client
connections (for timeouts and graceful shutdown) and the ``HTTPState`` that
requests are routed with. ``state`` is replaced wholesale on reload; nothing
else about a reload touches connections.

Timeouts are enforced by one sweep per entry point, twice a second: a
connection stores an absolute deadline, the sweep expires it. That keeps
timer handles off the per-request path at the cost of half a second of
precision, which header and idle timeouts measured in seconds can afford.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from gateway.http.routing import EntryPointSettings, HTTPState, RouterRuntime
from gateway.http.server import ClientConnection

if TYPE_CHECKING:
    from gateway.http.exchange import Exchange

log = logging.getLogger(__name__)

SWEEP_INTERVAL = 0.5


class RequestObserver(Protocol):
    """Where finished requests are reported: metrics and the access log."""

    def observe(self, entry: str, exchange: Exchange) -> None: ...
    def observe_local(self, entry: str, method: bytes, status: int) -> None: ...
    def connection_count(self, entry: str, delta: int) -> None: ...
    def middleware_error(self, router: RouterRuntime) -> None: ...
    def retry(self, service: str) -> None: ...


def parse_address(address: str) -> tuple[str, int]:
    """``:8080`` → ("", 8080); ``127.0.0.1:80`` → ("127.0.0.1", 80); ``[::1]:80`` too."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"invalid address {address!r}: expected [host]:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def bind_socket(address: str, *, reuse_port: bool) -> socket.socket:
    """A listening TCP socket for ``address``; dual-stack when the host is empty."""
    host, port = parse_address(address)
    family = socket.AF_INET6 if (not host or ":" in host) and socket.has_ipv6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if not host else 1)
        sock.bind((host or ("::" if family == socket.AF_INET6 else "0.0.0.0"), port))
        sock.listen(1024)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def bind_udp_socket(address: str, *, reuse_port: bool) -> socket.socket:
    """A bound UDP socket for ``address`` (``[host]:port``); dual-stack when the host is empty.

    With ``reuse_port`` the kernel spreads clients over the workers' sockets
    by address hash, so each client's datagrams keep reaching one worker.
    """
    host, port = parse_address(address)
    family = socket.AF_INET6 if (not host or ":" in host) and socket.has_ipv6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if not host else 1)
        sock.bind((host or ("::" if family == socket.AF_INET6 else "0.0.0.0"), port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class EntryPointRuntime:
    """One HTTP entry point: listener, live connections and routing state."""

    def __init__(
        self,
        settings: EntryPointSettings,
        state: HTTPState,
        *,
        observer: RequestObserver | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.name = settings.name
        self.settings = settings
        self.state = state
        self.observer = observer
        self.ssl_context = ssl_context
        self.connections: set[ClientConnection] = set()
        self.server: asyncio.Server | None = None
        self.port = settings.port
        self._sweeper: asyncio.Task[None] | None = None
        self._idle_hooks: list[Callable[[float], None]] = []
        # Server names clients sent in their TLS ClientHello, by SSL object.
        self.sni_names: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
        # Set TCP_NODELAY per connection: uvloop does it already, asyncio's
        # own loop does not for servers made from a socket.
        self.set_nodelay = False
        # The entry point's listening socket, kept open for the process's life
        # when the gateway hands its accepts to a TCP entry (``detach``).
        self.listen_socket: socket.socket | None = None

    @property
    def bound_port(self) -> int:
        if self.listen_socket is not None:
            return int(self.listen_socket.getsockname()[1])
        assert self.server is not None and self.server.sockets
        return int(self.server.sockets[0].getsockname()[1])

    @property
    def bound_port_number(self) -> int:
        """The port this entry point serves on, even while its listener is closed."""
        return int(self.settings.port)

    async def start(self, sock: socket.socket) -> None:
        """Serve on an already bound listening socket."""
        loop = asyncio.get_running_loop()
        self.set_nodelay = not type(loop).__module__.startswith("uvloop")
        self.server = await loop.create_server(
            lambda: ClientConnection(self), sock=sock, ssl=self.ssl_context, backlog=1024
        )
        if self.settings.port in (b"", b"0"):
            self.settings.port = str(self.bound_port).encode()
            self.port = self.settings.port
        self._sweeper = loop.create_task(self._sweep_forever())

    def start_sweeper(self) -> None:
        """Run timeouts for connections handed over by a TCP entry (``adopt``)."""
        loop = asyncio.get_running_loop()
        self.set_nodelay = not type(loop).__module__.startswith("uvloop")
        if self._sweeper is None:
            self._sweeper = loop.create_task(self._sweep_forever())

    async def adopt(self, sock: socket.socket, peer: tuple[str, int] | None = None) -> None:
        """Serve HTTP on a connection a TCP entry accepted (and peeked at, not read).

        ``peer`` is the client a PROXY protocol header named, if any.
        """
        loop = asyncio.get_running_loop()
        await loop.connect_accepted_socket(
            lambda: ClientConnection(self, peer), sock, ssl=self.ssl_context
        )

    async def reopen(self, sock: socket.socket, ssl_context: ssl.SSLContext | None) -> None:
        """Serve a new listening socket with TLS switched on or off.

        The previous listener must already be closed; connections it accepted
        carry on, and new ones get the new setting.
        """
        loop = asyncio.get_running_loop()
        self.ssl_context = ssl_context
        self.settings.scheme = b"https" if ssl_context is not None else b"http"
        self.server = await loop.create_server(
            lambda: ClientConnection(self), sock=sock, ssl=ssl_context, backlog=1024
        )

    def add_idle_hook(self, hook: Callable[[float], None]) -> None:
        """Run ``hook(now)`` on every sweep (used to expire idle upstream connections)."""
        self._idle_hooks.append(hook)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            self.sweep(time.monotonic())

    def sweep(self, now: float) -> None:
        """Expire every connection whose deadline has passed."""
        for conn in list(self.connections):
            deadline = conn.deadline
            if deadline and deadline <= now:
                conn.expire(now)
                continue
            active = conn.active
            if active is not None and active.deadline and active.deadline <= now:
                active.deadline = 0.0
                active.fail(504)
        for hook in self._idle_hooks:
            hook(now)

    # -- connection bookkeeping --------------------------------------------------

    def connection_opened(self, conn: ClientConnection) -> None:
        self.connections.add(conn)
        if self.observer is not None:
            self.observer.connection_count(self.name, 1)

    def connection_closed(self, conn: ClientConnection) -> None:
        self.connections.discard(conn)
        if self.observer is not None:
            self.observer.connection_count(self.name, -1)

    def observe(self, exchange: Exchange) -> None:
        if self.observer is not None:
            self.observer.observe(self.name, exchange)

    def observe_local(self, method: bytes, status: int) -> None:
        if self.observer is not None:
            self.observer.observe_local(self.name, method, status)

    def count_middleware_error(self, router: RouterRuntime) -> None:
        if self.observer is not None:
            self.observer.middleware_error(router)

    def count_retry(self, service: str) -> None:
        if self.observer is not None:
            self.observer.retry(service)

    # -- shutdown ------------------------------------------------------------------

    def stop_accepting(self) -> None:
        if self.server is not None:
            self.server.close()

    async def drain(self, grace: float) -> None:
        """Close idle connections now; let busy ones finish for up to ``grace`` seconds."""
        self.stop_accepting()
        deadline = time.monotonic() + grace
        while True:
            for conn in list(self.connections):
                if conn.active is None and not conn.queue and conn.tunnel is None:
                    conn.close()
                else:
                    conn.draining = True
            if not self.connections or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.abort()
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self.server is not None:
            await self.server.wait_closed()
