"""The types a TCP or UDP middleware sees: who is connecting, and how to say no.

A TCP middleware is a ``ConnectionFilter``: ``admit(info)`` runs once when a
connection has been accepted and routed (after the SNI peek, for TLS
passthrough), before the gateway dials a server; ``release(info)`` runs once
when an admitted connection ends, however it ends. A UDP middleware is a
``DatagramFilter``: ``admit(info, size)`` runs for every datagram from a
client, with ``info`` built once per client address (the UDP session), so
per-datagram work is a lookup on data the session already holds.

Why synchronous, and why only a verdict:

- The decision needs no I/O for any built-in, and an ``await`` per
  connection or datagram would cost a task or a coroutine frame on the
  hottest path the gateway has. A middleware that must wait (an external
  policy server) belongs at L7.
- A middleware never touches payload bytes, so admitted TCP connections can
  be spliced in the kernel (sockmap) without Python seeing them again.
- ``admit`` returns ``None`` to admit, so admitting allocates nothing; a
  ``Rejection`` is made once at build time (``L4BuildContext.rejection``)
  and returned as is. Its ``reason`` is a short fixed token fit for a
  metrics label, its ``middleware`` the qualified name for the log line.

Invariants the runtime keeps (``chains.ConnectionChain`` does the work):
``release`` is called exactly once per ``admit`` that returned ``None``,
also when a later middleware in the chain rejects the connection; it is
never called for a rejected connection. Built filters keep no reference to
``info`` after ``release``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol

Proto = Literal["tcp", "udp"]

# Rejection reasons of the built-ins; plugins may add their own tokens.
NOT_ALLOWED = "not_allowed"
TOO_MANY_CONNECTIONS = "too_many_connections"
RATE_LIMITED = "rate_limited"
# A middleware raised: the connection or datagram is refused (fail closed).
FAILED = "middleware_error"


class ConnectionInfo:
    """One TCP connection, or one UDP session (a client address), as middleware sees it.

    ``sni`` is the server name of a TLS ClientHello the router peeked at
    (None for plain TCP and UDP); ``alpn`` the protocols that ClientHello
    offered, in its order. ``router`` is the qualified name of the router
    that matched. Mutable so the runtime can fill ``router`` after routing
    without building a second object.
    """

    __slots__ = ("protocol", "client_ip", "client_port", "entry_point", "router", "sni", "alpn")

    def __init__(
        self,
        *,
        protocol: Proto,
        client_ip: str,
        client_port: int = 0,
        entry_point: str = "",
        router: str = "",
        sni: str | None = None,
        alpn: tuple[str, ...] = (),
    ) -> None:
        self.protocol: Proto = protocol
        self.client_ip = client_ip
        self.client_port = client_port
        self.entry_point = entry_point
        self.router = router
        self.sni = sni
        self.alpn = alpn

    def __repr__(self) -> str:
        return (
            f"ConnectionInfo({self.protocol} {self.client_ip}:{self.client_port}"
            f" entry_point={self.entry_point!r} router={self.router!r} sni={self.sni!r})"
        )


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a connection or datagram was refused: a fixed token and who said so."""

    reason: str
    middleware: str = ""


class ConnectionFilter:
    """A TCP middleware. Override ``admit``; override ``release`` if it counts.

    Chains skip the call to ``release`` for filters that do not override it.
    """

    __slots__ = ()

    def admit(self, info: ConnectionInfo) -> Rejection | None:
        """``None`` to let the connection through, else the prebuilt rejection."""
        return None

    def release(self, info: ConnectionInfo) -> None:
        """The connection ``admit`` let through has ended."""
        return None


class DatagramFilter:
    """A UDP middleware: ``admit`` runs per datagram, so keep it to a lookup."""

    __slots__ = ()

    def admit(self, info: ConnectionInfo, size: int) -> Rejection | None:
        """``None`` to forward the datagram (``size`` bytes of payload), else drop it."""
        return None


@dataclass(frozen=True, slots=True)
class L4BuildContext:
    """What ``build`` may use besides its options."""

    # The middleware's qualified name (``allow@file``), for logs and rejections.
    name: str
    protocol: Proto

    def rejection(self, reason: str) -> Rejection:
        """A rejection naming this middleware; make it in ``build``, return it per call."""
        return Rejection(reason, self.name)


class TCPMiddlewareType(Protocol):
    """Builds a configured TCP middleware; ``build`` runs once per configuration.

    ``options`` is a ``@model`` class the raw options are decoded into, so
    unknown keys and wrong types are errors naming file, line and key.
    ``build`` raises ``ValueError("<optionKey>: <reason>")`` for semantic
    errors; the compiler locates the key in the file.
    """

    key: ClassVar[str]
    options: ClassVar[type[Any]]

    def build(self, options: Any, context: L4BuildContext) -> ConnectionFilter: ...


class UDPMiddlewareType(Protocol):
    """Builds a configured UDP middleware; the same rules as ``TCPMiddlewareType``."""

    key: ClassVar[str]
    options: ClassVar[type[Any]]

    def build(self, options: Any, context: L4BuildContext) -> DatagramFilter: ...
