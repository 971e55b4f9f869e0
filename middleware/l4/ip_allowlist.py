"""``ipAllowList`` for TCP connections and UDP datagrams: admit listed client IPs only.

Traefik's TCP ``ipAllowList`` has one option, ``sourceRange``, and checks
the peer address: there is no ``ipStrategy`` below HTTP, since nothing like
X-Forwarded-For exists there (PROXY protocol headers are the entry point's
business and already reflected in ``client_ip``). The UDP variant is
Sluice's (Traefik has no UDP middleware) with the same option.

An empty ``sourceRange`` is an error at load, as in Traefik: a list that
admits nobody is more likely a mistake than a wish. The membership test is
``NetworkSet``'s cached lookup, so a repeat client costs one dict lookup,
which is what the per-datagram path can afford.
"""

from __future__ import annotations

from gateway.config.model import model
from middleware.l4.contract import (
    NOT_ALLOWED,
    ConnectionFilter,
    ConnectionInfo,
    DatagramFilter,
    L4BuildContext,
    Rejection,
)
from middleware.sources import NetworkSet


@model
class IPAllowListOptions:
    REQUIRED = ("source_range",)

    source_range: tuple[str, ...] = ()


def _networks(options: IPAllowListOptions) -> NetworkSet:
    if not options.source_range:
        raise ValueError("sourceRange: must list at least one IP address or CIDR range")
    return NetworkSet.of(options.source_range, "sourceRange")


class _ConnectionAllowList(ConnectionFilter):
    __slots__ = ("allowed", "rejected")

    def __init__(self, allowed: NetworkSet, rejected: Rejection) -> None:
        self.allowed = allowed
        self.rejected = rejected

    def admit(self, info: ConnectionInfo) -> Rejection | None:
        return None if info.client_ip in self.allowed else self.rejected


class _DatagramAllowList(DatagramFilter):
    __slots__ = ("allowed", "rejected")

    def __init__(self, allowed: NetworkSet, rejected: Rejection) -> None:
        self.allowed = allowed
        self.rejected = rejected

    def admit(self, info: ConnectionInfo, size: int) -> Rejection | None:
        return None if info.client_ip in self.allowed else self.rejected


class TCPIPAllowList:
    key = "ipAllowList"
    options = IPAllowListOptions

    def build(self, options: IPAllowListOptions, context: L4BuildContext) -> ConnectionFilter:
        return _ConnectionAllowList(_networks(options), context.rejection(NOT_ALLOWED))


class UDPIPAllowList:
    key = "ipAllowList"
    options = IPAllowListOptions

    def build(self, options: IPAllowListOptions, context: L4BuildContext) -> DatagramFilter:
        return _DatagramAllowList(_networks(options), context.rejection(NOT_ALLOWED))
