"""TCP routing at run time: routers per entry point, services, and the servers they pick.

``TCPRoutes`` is one entry point's compiled TCP routers, tried in priority
order (highest first, then by name, so ties are deterministic). Matching
follows Traefik's TCP router (``pkg/server/router/tcp/router.go``):

* A router with ``tls`` (terminated or passed through) matches only TLS
  connections; a router without matches only plain ones.
* On a TLS connection a router whose rule names the server (anything but
  ``HostSNI(`*`)``) wins over HTTPS routers; a catch-all TLS router takes
  what no HTTPS router serves by host. ``TCPEntry`` applies that order,
  with ``catch_all`` on each router.

``TCPServicePool`` picks servers by smooth weighted round robin, skipping
servers that failed their health check and, for ``EJECT_SECONDS``, servers
that refused a connection (passive ejection, as HTTP servers have). When
every server is out, the passively ejected ones are tried anyway: a refused
dial costs one connection, no server at all would cost all of them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from gateway.config.tcp_rule import TCPRule
from gateway.l4.relay import RelaySettings
from gateway.l4.udp_balancer import SmoothWeighted
from middleware.l4.chains import ConnectionChain

# How long a server that refused a connection is skipped.
EJECT_SECONDS = 10.0


@dataclass(slots=True, eq=False)
class TCPServer:
    """One server of a TCP load balancer, with its health and how to dial it."""

    service: str
    address: str  # as configured: host:port
    host: str
    port: int
    weight: int
    settings: RelaySettings
    proxy_version: int = 0  # PROXY protocol toward the server: 0 (none), 1 or 2
    healthy: bool = True  # the active health check's verdict
    ejected_until: float = 0.0  # passive: refused a connection recently

    def available(self, now: float) -> bool:
        return self.healthy and self.ejected_until <= now

    def refused(self) -> None:
        """The server refused or failed a dial: skip it for a while."""
        self.ejected_until = time.monotonic() + EJECT_SECONDS

    def connected(self) -> None:
        self.ejected_until = 0.0


Picker = Callable[[], TCPServer | None]


class TCPServicePool:
    """A ``loadBalancer`` TCP service: weighted round robin over available servers."""

    __slots__ = ("name", "servers", "_order")

    def __init__(self, name: str, servers: Sequence[TCPServer]) -> None:
        self.name = name
        self.servers = list(servers)
        self._order = SmoothWeighted([(s, s.weight) for s in servers])

    def pick(self) -> TCPServer | None:
        order = self._order
        count = len(order)
        if not count:
            return None
        now = time.monotonic()
        for _ in range(count):
            server = order.next()
            if server is not None and server.available(now):
                return server
        # Panic: every server is out; try one only passively ejected.
        for _ in range(count):
            server = order.next()
            if server is not None and server.healthy:
                return server
        return None


class TCPWeightedPool:
    """A ``weighted`` TCP service: weighted round robin over child services."""

    __slots__ = ("name", "_order")

    def __init__(self, name: str, children: Sequence[tuple[Picker, int]]) -> None:
        self.name = name
        self._order = SmoothWeighted(children)

    def pick(self) -> TCPServer | None:
        # A child with no server left yields its turn to the next one.
        for _ in range(len(self._order)):
            child = self._order.next()
            if child is not None:
                server = child()
                if server is not None:
                    return server
        return None


@dataclass(slots=True, eq=False)
class TCPRouterRuntime:
    """A TCP router as the entry point runs it."""

    name: str
    service: str
    rule: TCPRule
    priority: int
    pick: Picker
    # None: plain TCP; "passthrough": TLS relayed untouched; "terminate": TLS
    # ended here with the certificates of ``tls_options``.
    tls: str | None = None
    tls_options: str = "default"
    chain: ConnectionChain | None = None

    @property
    def catch_all(self) -> bool:
        return self.rule.catch_all


@dataclass(slots=True, eq=False)
class TCPRoutes:
    """One entry point's TCP routers, in the order they are tried."""

    plain: tuple[TCPRouterRuntime, ...] = ()
    tls: tuple[TCPRouterRuntime, ...] = ()
    generation: int = 0
    # Whether a plain router's rule reads the ClientHello (it then never
    # matches, the connection has none, but it still asks for a peek).
    plain_needs_peek: bool = field(default=False)

    @classmethod
    def build(cls, routers: Sequence[TCPRouterRuntime], generation: int = 0) -> TCPRoutes:
        ordered = sorted(routers, key=lambda r: (-r.priority, r.name))
        plain = tuple(r for r in ordered if r.tls is None)
        return cls(
            plain=plain,
            tls=tuple(r for r in ordered if r.tls is not None),
            generation=generation,
            plain_needs_peek=any(r.rule.needs_client_hello for r in plain),
        )

    def __bool__(self) -> bool:
        return bool(self.plain or self.tls)

    def match_plain(self, client_ip: str) -> TCPRouterRuntime | None:
        for router in self.plain:
            if router.rule.match(None, client_ip, ()):
                return router
        return None

    def match_tls(
        self, sni: str | None, client_ip: str, alpn: tuple[str, ...]
    ) -> TCPRouterRuntime | None:
        for router in self.tls:
            if router.rule.match(sni, client_ip, alpn):
                return router
        return None
