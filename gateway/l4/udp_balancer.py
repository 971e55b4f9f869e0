"""Choosing a UDP server: smooth weighted round robin, flat or over child services.

A UDP session asks its router's ``pick()`` once, when it opens; the choice
then holds for the session's life. ``ServerPool`` balances a
``loadBalancer`` service's ``servers[].address`` by weight; ``WeightedPool``
balances the ``pick`` callables of a ``weighted`` service's children, so any
balancer (this one or another) can sit below it.

Selection is nginx's smooth weighted round robin, as in ``gateway.http``:
deterministic, a heavy server's turns spread evenly (weights 3:1 give
``a a b a``-like runs, never ``a a a`` then ``b`` in bursts), exact ratios
over every ``sum(weights)`` picks. Weights of 0 or less take an item out.

Addresses are parsed once here (``split_address``), so a pick returns the
``(host, port)`` tuple ``create_datagram_endpoint`` takes, with no per-session
string work.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")

# What a pick yields: a host (IP literal or name) and a port.
Address = tuple[str, int]
Picker = Callable[[], Address | None]


def split_address(text: str) -> Address:
    """``"10.0.0.1:53"``, ``"[::1]:53"`` or ``"dns.lan:53"`` as ``(host, port)``.

    Raises ``ValueError`` naming what is wrong, for the config compiler to locate.
    """
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"address {text!r}: expected host:port")
    if host.startswith("["):
        if not host.endswith("]") or len(host) < 3:
            raise ValueError(f"address {text!r}: unbalanced brackets around the IPv6 host")
        host = host[1:-1]
    elif ":" in host:
        # Go's net.SplitHostPort, which Traefik uses, wants IPv6 hosts bracketed.
        raise ValueError(f"address {text!r}: an IPv6 host must be written [host]:port")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"address {text!r}: port must be a number from 1 to 65535")
    return host, int(port_text)


class SmoothWeighted(Generic[T]):
    """nginx's smooth weighted round robin over fixed items; O(items) per pick."""

    __slots__ = ("items", "weights", "current", "total")

    def __init__(self, items: Sequence[tuple[T, int]]) -> None:
        kept = [(item, weight) for item, weight in items if weight > 0]
        self.items = [item for item, _ in kept]
        self.weights = [weight for _, weight in kept]
        self.current = [0] * len(kept)
        self.total = sum(self.weights)

    def __len__(self) -> int:
        return len(self.items)

    def next_index(self) -> int:
        """The index of the next item; the caller checks the pool is not empty."""
        current = self.current
        weights = self.weights
        best = 0
        for i in range(len(current)):
            current[i] += weights[i]
            if current[i] > current[best]:
                best = i
        current[best] -= self.total
        return best

    def next(self) -> T | None:
        """The next item in turn, or None for an empty pool."""
        if not self.items:
            return None
        return self.items[self.next_index()]


class ServerPool:
    """A ``loadBalancer`` service: its servers' addresses, by weight."""

    __slots__ = ("name", "_rr")

    def __init__(self, name: str, servers: Sequence[tuple[str, int]]) -> None:
        self.name = name
        self._rr = SmoothWeighted([(split_address(a), w) for a, w in servers])

    @property
    def addresses(self) -> list[Address]:
        return list(self._rr.items)

    def pick(self) -> Address | None:
        """The next server's ``(host, port)``; None when the service has none."""
        return self._rr.next()


class WeightedPool:
    """A ``weighted`` service: its children's pickers, by weight.

    A child with nothing to offer (an empty pool) loses its turn to the next,
    so one empty child does not drop a share of new sessions.
    """

    __slots__ = ("name", "_rr")

    def __init__(self, name: str, children: Sequence[tuple[Picker, int]]) -> None:
        self.name = name
        self._rr = SmoothWeighted(children)

    def pick(self) -> Address | None:
        rr = self._rr
        for _ in range(len(rr)):
            chosen = rr.items[rr.next_index()]()
            if chosen is not None:
                return chosen
        return None
