"""``inFlightConn``: at most ``amount`` simultaneous TCP connections per client IP.

Traefik's TCP ``inFlightConn`` counts open connections by the client's IP
and closes a new one when that IP already holds ``amount``. ``amount`` is
required there; here it must also be at least 1, since a limit of zero
would refuse every connection, which ``ipAllowList`` says more clearly.

The count lives in a dict from IP to open connections; an IP leaves the
dict when its last connection is released, so the dict holds only clients
with connections open right now. One instance counts for every router whose
chain holds it (a chain is built once per distinct middleware list).
"""

from __future__ import annotations

from gateway.config.model import model
from middleware.l4.contract import (
    TOO_MANY_CONNECTIONS,
    ConnectionFilter,
    ConnectionInfo,
    L4BuildContext,
    Rejection,
)


@model
class InFlightConnOptions:
    REQUIRED = ("amount",)

    amount: int = 0


class _InFlight(ConnectionFilter):
    __slots__ = ("amount", "open", "rejected")

    def __init__(self, amount: int, rejected: Rejection) -> None:
        self.amount = amount
        self.open: dict[str, int] = {}
        self.rejected = rejected

    def admit(self, info: ConnectionInfo) -> Rejection | None:
        ip = info.client_ip
        count = self.open.get(ip, 0)
        if count >= self.amount:
            return self.rejected
        self.open[ip] = count + 1
        return None

    def release(self, info: ConnectionInfo) -> None:
        ip = info.client_ip
        count = self.open.get(ip, 0)
        if count > 1:
            self.open[ip] = count - 1
        else:
            # Also covers a release without an admit (a runtime bug): never go negative.
            self.open.pop(ip, None)


class InFlightConn:
    key = "inFlightConn"
    options = InFlightConnOptions

    def build(self, options: InFlightConnOptions, context: L4BuildContext) -> ConnectionFilter:
        if options.amount < 1:
            raise ValueError("amount: must be at least 1")
        return _InFlight(options.amount, context.rejection(TOO_MANY_CONNECTIONS))
