"""Who a request comes from: IP ranges, ``ipStrategy`` and ``sourceCriterion``.

Shared by ``ipAllowList``, ``rateLimit`` and ``inFlightReq`` (HTTP) and the
L4 middlewares. Traefik's rules: with no ``ipStrategy`` the source is the
peer address; ``depth: N`` takes the Nth address from the right of
``X-Forwarded-For`` (none when the header is shorter); ``excludedIPs`` takes
the first address from the right that is not excluded; ``depth`` wins when
both are set. ``ipv6Subnet`` groups IPv6 sources by prefix, so one client
cannot dodge a limit by hopping addresses inside its /64.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from gateway.config.model import key, model
from middleware.contract import Request

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_networks(ranges: Iterable[str], key: str) -> tuple[Network, ...]:
    """CIDR ranges or plain addresses; ValueError naming ``key`` and the bad entry."""
    out: list[Network] = []
    for i, text in enumerate(ranges):
        try:
            out.append(ipaddress.ip_network(text.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{key}[{i}]: {text!r} is not an IP address or CIDR range") from None
    return tuple(out)


@dataclass(frozen=True, slots=True)
class NetworkSet:
    """Membership test over IP ranges, with a cache of addresses already seen.

    Allowlists are checked per request with the same few client addresses
    again and again; the cache makes that one dict lookup.
    """

    networks: tuple[Network, ...]
    cache: dict[str, bool]

    @classmethod
    def of(cls, ranges: Iterable[str], key: str) -> NetworkSet:
        return cls(parse_networks(ranges, key), {})

    def __contains__(self, ip: object) -> bool:
        if not isinstance(ip, str):
            return False
        found = self.cache.get(ip)
        if found is None:
            found = _member(ip, self.networks)
            if len(self.cache) > 65536:
                self.cache.clear()
            self.cache[ip] = found
        return found


def _member(ip: str, networks: tuple[Network, ...]) -> bool:
    try:
        address = ipaddress.ip_address(ip.partition("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        mapped: Address = address.ipv4_mapped
        return any(mapped in n for n in networks) or any(address in n for n in networks)
    return any(address in n for n in networks)


@model
class IPStrategy:
    depth: int = 0
    excluded_i_ps: tuple[str, ...] = key("excludedIPs", ())
    ipv6_subnet: int = 0


@model
class SourceCriterion:
    ip_strategy: IPStrategy | None = None
    request_header_name: str = ""
    request_host: bool = False


SourceOf = Callable[[Request], str]


def peer_ip(request: Request) -> str:
    return request.client_ip


def ip_source(strategy: IPStrategy | None, key: str = "ipStrategy") -> SourceOf:
    """A function giving a request's source IP under ``strategy`` ("" when none)."""
    if strategy is None or (not strategy.depth and not strategy.excluded_i_ps):
        base: SourceOf = peer_ip
    elif strategy.depth < 0:
        raise ValueError(f"{key}.depth must not be negative")
    elif strategy.depth:
        depth = strategy.depth

        def base(request: Request) -> str:
            hops = _forwarded_for(request)
            return hops[-depth] if len(hops) >= depth else ""

    else:
        excluded = NetworkSet.of(strategy.excluded_i_ps, f"{key}.excludedIPs")

        def base(request: Request) -> str:
            for hop in reversed(_forwarded_for(request)):
                if hop not in excluded:
                    return hop
            return ""

    subnet = strategy.ipv6_subnet if strategy is not None else 0
    if not subnet:
        return base
    if not 0 < subnet <= 128:
        raise ValueError(f"{key}.ipv6Subnet must be between 1 and 128")

    def grouped(request: Request) -> str:
        ip = base(request)
        if ":" not in ip:
            return ip
        try:
            return str(ipaddress.ip_network(f"{ip}/{subnet}", strict=False).network_address)
        except ValueError:
            return ip

    return grouped


def criterion_source(criterion: SourceCriterion | None, key: str = "sourceCriterion") -> SourceOf:
    """Traefik's ``sourceCriterion``: exactly one of ipStrategy, header, host."""
    if criterion is None:
        return peer_ip
    chosen = [
        n
        for n, on in (
            ("ipStrategy", criterion.ip_strategy is not None),
            ("requestHeaderName", bool(criterion.request_header_name)),
            ("requestHost", criterion.request_host),
        )
        if on
    ]
    if len(chosen) > 1:
        raise ValueError(f"{key}: set only one of {', '.join(chosen)}")
    if criterion.request_header_name:
        header = criterion.request_header_name

        def by_header(request: Request) -> str:
            return request.headers.get(header) or ""

        return by_header
    if criterion.request_host:
        return _host
    return ip_source(criterion.ip_strategy, f"{key}.ipStrategy")


def _host(request: Request) -> str:
    return request.host


def _forwarded_for(request: Request) -> list[str]:
    # As Traefik: X-Forwarded-For from a client outside trustedIPs is dropped
    # before any middleware sees it.
    if not request.trusted:
        return []
    hops: list[str] = []
    for value in request.headers.get_all("x-forwarded-for"):
        hops.extend(part.strip() for part in value.split(",") if part.strip())
    return hops
