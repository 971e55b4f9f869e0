"""``rateLimit`` for L4: new TCP connections, or UDP datagrams, per client IP.

Traefik has no L4 rate limit; the options are its HTTP ``rateLimit``'s so
they read the same: a token bucket per client IP refilling at
``average / period`` tokens a second and holding at most ``burst``.
Each new TCP connection (or each UDP datagram) takes one token; with none
left the connection is closed (the datagram dropped). As in Traefik,
``average: 0`` means no limit, ``period: 0`` means one second and ``burst``
below 1 means 1; negative values are errors. Sources are client IPs, not
addresses, so a client cannot dodge the limit by changing source ports.

The buckets are private to this module. ``middleware/token_bucket.py``
(shared with HTTP) arrived while this was written; it is kept apart because
this is the per-datagram path: ``take`` here is one dict lookup and a few
float operations (about 160 ns), where ``BucketMap.reserve`` keeps an LRU
order and an expiry map (about 1 us), for a wait-or-refuse answer L4 never
needs. A bucket object is created only for a source not seen lately.

Memory: a bucket that has refilled to ``burst`` is the same as no bucket, so
when the table reaches its sweep threshold those are dropped and the
threshold doubles past what is left. What stays are sources active within
the last ``burst / rate`` seconds. UDP sources can be forged, so that is
capped too: past ``_CAPACITY`` sources the longest-known half is forgotten
(they start again with a full bucket, the trade ``BucketMap`` makes too).
"""

from __future__ import annotations

from itertools import islice
from time import monotonic

from gateway.config.model import Duration, model
from middleware.l4.contract import (
    RATE_LIMITED,
    ConnectionFilter,
    ConnectionInfo,
    DatagramFilter,
    L4BuildContext,
    Rejection,
)

_MIN_SWEEP = 4096
_CAPACITY = 65536


@model
class RateLimitOptions:
    average: int = 0
    period: Duration = 1.0
    burst: int = 1


class _Bucket:
    __slots__ = ("tokens", "stamp")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp


class _Buckets:
    """Token buckets by source; ``take`` is the whole per-call cost."""

    __slots__ = ("rate", "burst", "table", "sweep_at")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.table: dict[str, _Bucket] = {}
        self.sweep_at = _MIN_SWEEP

    def take(self, source: str) -> bool:
        """Take one token from ``source``'s bucket; False when it is empty."""
        now = monotonic()
        bucket = self.table.get(source)
        if bucket is None:
            if len(self.table) >= self.sweep_at:
                self._sweep(now)
            # A new source starts with a full bucket, less this call's token.
            self.table[source] = _Bucket(self.burst - 1.0, now)
            return True
        tokens = bucket.tokens + (now - bucket.stamp) * self.rate
        if tokens > self.burst:
            tokens = self.burst
        bucket.stamp = now
        if tokens >= 1.0:
            bucket.tokens = tokens - 1.0
            return True
        bucket.tokens = tokens
        return False

    def _sweep(self, now: float) -> None:
        table = self.table
        rate, burst = self.rate, self.burst
        for source in [s for s, b in table.items() if b.tokens + (now - b.stamp) * rate >= burst]:
            del table[source]
        if len(table) >= _CAPACITY:
            # Still full of active sources (a flood of distinct, maybe forged,
            # ones): forget the oldest half, in the dict's insertion order.
            for source in list(islice(table, len(table) - _CAPACITY // 2)):
                del table[source]
        self.sweep_at = min(_CAPACITY, max(_MIN_SWEEP, 2 * len(table)))


def _buckets(options: RateLimitOptions) -> _Buckets | None:
    """The configured buckets, or None for no limit (``average: 0``)."""
    if options.average < 0:
        raise ValueError("average: must not be negative")
    if options.period < 0:
        raise ValueError("period: must not be negative")
    if options.burst < 0:
        raise ValueError("burst: must not be negative")
    if options.average == 0:
        return None
    period = options.period or 1.0
    return _Buckets(options.average / period, float(max(options.burst, 1)))


class _ConnectionRateLimit(ConnectionFilter):
    __slots__ = ("buckets", "rejected")

    def __init__(self, buckets: _Buckets, rejected: Rejection) -> None:
        self.buckets = buckets
        self.rejected = rejected

    def admit(self, info: ConnectionInfo) -> Rejection | None:
        return None if self.buckets.take(info.client_ip) else self.rejected


class _DatagramRateLimit(DatagramFilter):
    __slots__ = ("buckets", "rejected")

    def __init__(self, buckets: _Buckets, rejected: Rejection) -> None:
        self.buckets = buckets
        self.rejected = rejected

    def admit(self, info: ConnectionInfo, size: int) -> Rejection | None:
        return None if self.buckets.take(info.client_ip) else self.rejected


class TCPRateLimit:
    key = "rateLimit"
    options = RateLimitOptions

    def build(self, options: RateLimitOptions, context: L4BuildContext) -> ConnectionFilter:
        buckets = _buckets(options)
        if buckets is None:
            return ConnectionFilter()
        return _ConnectionRateLimit(buckets, context.rejection(RATE_LIMITED))


class UDPRateLimit:
    key = "rateLimit"
    options = RateLimitOptions

    def build(self, options: RateLimitOptions, context: L4BuildContext) -> DatagramFilter:
        buckets = _buckets(options)
        if buckets is None:
            return DatagramFilter()
        return _DatagramRateLimit(buckets, context.rejection(RATE_LIMITED))
