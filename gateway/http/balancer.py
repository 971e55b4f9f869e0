"""Load balancing: weighted round robin over servers or services, sticky cookies.

Both Traefik service kinds compile to a ``Balancer``: a ``loadBalancer``
balances ``UpstreamServer``s, a ``weighted`` service balances child
balancers. Selection is nginx's smooth weighted round robin: deterministic,
spreads a heavy server's turns out evenly, and costs O(children) per pick,
which for the handful of children a service has beats a heap.

Sticky sessions follow Traefik: the cookie value is a hash of the chosen
server's URL (or the child service's name), and a request carrying a valid
cookie for an available target goes there; otherwise a fresh pick sets it.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Sequence
from typing import cast

from gateway.config.dynamic import Cookie
from gateway.http.upstream import UpstreamServer
from middleware.contract import Request


def sticky_value(name: str) -> str:
    """The cookie value identifying a target: stable, opaque, short."""
    return hashlib.sha256(name.encode()).hexdigest()[:16]


class StickyCookie:
    """A compiled ``sticky.cookie``: its name and its Set-Cookie suffix."""

    __slots__ = ("name", "_name_b", "_attrs")

    def __init__(self, cookie: Cookie, default_name: str) -> None:
        self.name = cookie.name or default_name
        self._name_b = self.name.encode("latin-1")
        attrs = [f"Path={cookie.path or '/'}"]
        if cookie.domain:
            attrs.append(f"Domain={cookie.domain}")
        if cookie.max_age:
            attrs.append(f"Max-Age={cookie.max_age}")
        if cookie.http_only:
            attrs.append("HttpOnly")
        if cookie.secure:
            attrs.append("Secure")
        if cookie.same_site:
            attrs.append(f"SameSite={cookie.same_site.capitalize()}")
        self._attrs = ("; " + "; ".join(attrs)).encode("latin-1")

    def read(self, request: Request) -> str | None:
        """The cookie's value in the request, if present."""
        for value in request.headers.get_all(b"cookie"):
            for part in value.split(";"):
                key, sep, val = part.strip().partition("=")
                if sep and key == self.name:
                    return val
        return None

    def set_cookie(self, value: str) -> bytes:
        return self._name_b + b"=" + value.encode("latin-1") + self._attrs


class Pick:
    """The outcome of one selection: a server, and cookies to set, if any."""

    __slots__ = ("server", "cookies")

    def __init__(self, server: UpstreamServer, cookies: list[bytes] | None) -> None:
        self.server = server
        self.cookies = cookies


class Balancer:
    """Smooth weighted round robin over children that may be unavailable.

    Children are ``UpstreamServer``s (a loadBalancer service) or other
    ``Balancer``s (a weighted service); ``available`` and ``pick`` recurse.
    """

    __slots__ = ("name", "children", "weights", "current", "sticky", "keys", "_single")

    def __init__(
        self,
        name: str,
        children: Sequence[UpstreamServer | Balancer],
        weights: Sequence[int],
        *,
        sticky: StickyCookie | None = None,
    ) -> None:
        self.name = name
        pairs = [(c, w) for c, w in zip(children, weights, strict=True) if w > 0]
        self.children: list[UpstreamServer | Balancer] = [c for c, _ in pairs]
        self.weights = [w for _, w in pairs]
        self.current = [0] * len(self.children)
        self.sticky = sticky
        self.keys = {sticky_value(_target_name(c)): i for i, c in enumerate(self.children)}
        only = self.children[0] if len(self.children) == 1 else None
        self._single = only if isinstance(only, UpstreamServer) and sticky is None else None

    def servers(self) -> list[UpstreamServer]:
        """Every server under this balancer, depth first."""
        out: list[UpstreamServer] = []
        for child in self.children:
            if isinstance(child, Balancer):
                out.extend(child.servers())
            else:
                out.append(child)
        return out

    def available(self, now: float) -> bool:
        return any(c.available(now) for c in self.children)

    def pick(
        self, request: Request, exclude: frozenset[UpstreamServer] = frozenset()
    ) -> Pick | None:
        """Choose a server for ``request``; None when none is available."""
        single = self._single
        now = time.monotonic()
        if single is not None:
            if single not in exclude and single.healthy:
                # Ejected or not, the only server is the only chance (see below).
                return Pick(single, None)
            return None
        found = self._pick(request, exclude, now)
        if found is None:
            # Envoy's panic routing: when passive ejection has taken out every
            # server, trying them beats a certain 503, and a server that came
            # back is found at once. Active health checks still rule (an
            # infinite "now" lifts only ejections).
            found = self._pick(request, exclude, math.inf)
        return found

    def _pick(
        self, request: Request, exclude: frozenset[UpstreamServer], now: float
    ) -> Pick | None:
        sticky = self.sticky
        if sticky is not None:
            value = sticky.read(request)
            index = self.keys.get(value) if value is not None else None
            if index is not None:
                child = self.children[index]
                chosen = _pick_child(child, request, exclude, now)
                if chosen is not None:
                    return chosen
        index = self._next(exclude, now)
        if index is None:
            return None
        chosen = _pick_child(self.children[index], request, exclude, now)
        if chosen is not None and sticky is not None:
            cookie = sticky.set_cookie(sticky_value(_target_name(self.children[index])))
            chosen.cookies = [*(chosen.cookies or ()), cookie]
        return chosen

    def _next(self, exclude: frozenset[UpstreamServer], now: float) -> int | None:
        best = -1
        total = 0
        current = self.current
        for i, child in enumerate(self.children):
            if not _usable(child, exclude, now):
                continue
            weight = self.weights[i]
            current[i] += weight
            total += weight
            if best < 0 or current[i] > current[best]:
                best = i
        if best < 0:
            return None
        current[best] -= total
        return best


class Failover(Balancer):
    """Traefik's ``failover`` service: the fallback serves only while the main one cannot."""

    __slots__ = ()

    def __init__(self, name: str, service: Balancer, fallback: Balancer) -> None:
        super().__init__(name, [service, fallback], [1, 1])

    def _pick(
        self, request: Request, exclude: frozenset[UpstreamServer], now: float
    ) -> Pick | None:
        for child in self.children:
            chosen = _pick_child(child, request, exclude, now)
            if chosen is not None:
                return chosen
        return None


def _usable(
    child: UpstreamServer | Balancer, exclude: frozenset[UpstreamServer], now: float
) -> bool:
    if isinstance(child, UpstreamServer):
        return child not in exclude and child.available(now)
    return child.available(now)


def _pick_child(
    child: UpstreamServer | Balancer,
    request: Request,
    exclude: frozenset[UpstreamServer],
    now: float,
) -> Pick | None:
    if isinstance(child, Balancer):
        return child._pick(request, exclude, now)
    if child in exclude or not child.available(now):
        return None
    return Pick(child, None)


def _target_name(child: UpstreamServer | Balancer) -> str:
    return child.url if isinstance(child, UpstreamServer) else child.name


class FixedStatus(Exception):
    """Raised by a ``StatusBalancer``'s stand-in server when the exchange dials it."""

    def __init__(self, status: int) -> None:
        super().__init__(f"fixed answer {status}")
        self.status = status


class _StatusPool:
    __slots__ = ("status",)

    def __init__(self, status: int) -> None:
        self.status = status

    def take_idle(self) -> None:
        return None

    async def dial(self) -> None:
        raise FixedStatus(self.status)


class _StatusServer:
    """Stands in for a server: dialling it answers the fixed status (a rare path)."""

    __slots__ = ("url", "pool", "alone", "service", "healthy", "__weakref__")

    def __init__(self, name: str, status: int) -> None:
        self.url = f"status:{status}"
        self.service = name
        self.pool = _StatusPool(status)
        self.healthy = True
        self.alone = frozenset((self,))

    def available(self, now: float) -> bool:
        return True


class StatusBalancer(Balancer):
    """A ``status`` service: every pick leads to the gateway answering ``status`` itself."""

    __slots__ = ("_pick_result",)

    def __init__(self, name: str, status: int) -> None:
        super().__init__(name, [], [])
        server = cast(UpstreamServer, _StatusServer(name, status))
        self._pick_result = server

    def available(self, now: float) -> bool:
        return True

    def pick(
        self, request: Request, exclude: frozenset[UpstreamServer] = frozenset()
    ) -> Pick | None:
        return Pick(self._pick_result, None)

    def _pick(
        self, request: Request, exclude: frozenset[UpstreamServer], now: float
    ) -> Pick | None:
        return Pick(self._pick_result, None)
