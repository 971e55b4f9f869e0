"""X-Forwarded-* and X-Real-Ip, trusted only from configured sources (sans-IO).

The rule Traefik applies, and Sluice keeps: when the immediate client is in
the entry point's ``forwardedHeaders.trustedIPs`` (or ``insecure`` is set),
the X-Forwarded-* values it sent are kept and its address is appended to
X-Forwarded-For; otherwise whatever it sent under those names is dropped and
replaced with what the gateway itself saw. Trust is decided once per
connection, never per request.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

FORWARDED_NAMES = frozenset(
    {
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-forwarded-port",
        b"x-forwarded-server",
        b"x-forwarded-uri",
        b"x-forwarded-method",
        b"x-forwarded-tls-client-cert",
        b"x-forwarded-tls-client-cert-info",
        b"x-real-ip",
    }
)

SERVER_NAME = socket.gethostname().encode("latin-1", "replace")


class TrustedSources:
    """A set of networks whose X-Forwarded-* headers are believed."""

    __slots__ = ("_networks", "insecure")

    def __init__(self, ranges: Iterable[str], *, insecure: bool = False) -> None:
        self._networks: tuple[IPNetwork, ...] = tuple(
            ipaddress.ip_network(r.strip(), strict=False) for r in ranges
        )
        self.insecure = insecure

    def trusts(self, ip: str) -> bool:
        """Whether a client at ``ip`` may pass its own forwarding headers on."""
        if self.insecure:
            return True
        if not self._networks:
            return False
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr in net for net in self._networks)


def drop_forwarded(raw: list[tuple[bytes, bytes]]) -> None:
    """Remove every X-Forwarded-*/X-Real-Ip entry from ``raw``, in place."""
    if any(name.lower() in FORWARDED_NAMES for name, _ in raw):
        raw[:] = [(n, v) for n, v in raw if n.lower() not in FORWARDED_NAMES]


def forwarding_headers(
    raw: list[tuple[bytes, bytes]],
    *,
    trusted: bool,
    client_ip: bytes,
    proto: bytes,
    host: bytes,
    port: bytes,
) -> list[tuple[bytes, bytes]]:
    """The headers to send upstream in place of any X-Forwarded-* in ``raw``.

    ``raw`` is the client's header list; only X-Forwarded-*/X-Real-Ip entries
    are read from it, and only when ``trusted``.
    """
    xff = b""
    kept: dict[bytes, bytes] = {}
    if trusted:
        for name, value in raw:
            lname = name.lower()
            if lname in FORWARDED_NAMES:
                if lname == b"x-forwarded-for":
                    xff = xff + b", " + value if xff else value
                else:
                    kept.setdefault(lname, value)
    out = [
        (b"X-Forwarded-For", xff + b", " + client_ip if xff else client_ip),
        (b"X-Forwarded-Host", kept.get(b"x-forwarded-host", host)),
        (b"X-Forwarded-Port", kept.get(b"x-forwarded-port", port)),
        (b"X-Forwarded-Proto", kept.get(b"x-forwarded-proto", proto)),
        (b"X-Forwarded-Server", SERVER_NAME),
        (b"X-Real-Ip", kept.get(b"x-real-ip", client_ip)),
    ]
    return out
