"""``rateLimit``: a token bucket per request source (Traefik's ratelimiter).

``average`` requests per ``period`` (default 1s) refill each source's bucket
of ``burst`` tokens (default 1); ``average: 0`` turns limiting off. As
Traefik does (``golang.org/x/time/rate`` reservations), a request that finds
the bucket empty but would get its token soon is delayed rather than
refused: up to ``1 / (2 * int(rate))`` seconds, or 0.5 s for rates below one
a second. A longer wait is answered ``429 Too Many Requests`` with
``Retry-After`` (whole seconds, rounded up) and ``X-Retry-In`` (the wait as
a Go duration, e.g. ``1.5s``), and the token is not taken.

The source is the ``sourceCriterion`` (peer address by default). Buckets
live in a bounded map (``middleware.token_bucket.BucketMap``) per built
middleware, so each configuration starts with full buckets.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable

from gateway.config.model import Duration, model
from middleware.contract import BuildContext, Filter, Handler, Headers, Request, Response
from middleware.sources import SourceCriterion, SourceOf, criterion_source
from middleware.token_bucket import INFINITE, BucketMap

_BODY = b"Too Many Requests"


@model
class RateLimitOptions:
    average: int = 0
    period: Duration = 1.0
    burst: int = 1
    source_criterion: SourceCriterion | None = None


def go_duration(seconds: float) -> str:
    """``seconds`` as Go's ``time.Duration.String`` writes it ("1.5s", "250ms", "2m0s")."""
    ns = round(seconds * 1e9)
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    if ns < 1_000:
        return f"{sign}{ns}ns"
    if ns < 1_000_000:
        return f"{sign}{_fraction(ns, 1_000)}µs"
    if ns < 1_000_000_000:
        return f"{sign}{_fraction(ns, 1_000_000)}ms"
    hours, rest = divmod(ns, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    out = f"{_fraction(rest, 1_000_000_000)}s"
    if hours:
        return f"{sign}{hours}h{minutes}m{out}"
    if minutes:
        return f"{sign}{minutes}m{out}"
    return sign + out


def _fraction(value: int, unit: int) -> str:
    whole, frac = divmod(value, unit)
    if not frac:
        return str(whole)
    digits = len(str(unit)) - 1
    return f"{whole}.{str(frac).rjust(digits, '0').rstrip('0')}"


def max_delay(rate: float) -> float:
    """How long Traefik lets a request wait for its token before refusing it."""
    if rate == INFINITE:
        return 0.0
    # Traefik: 1/(2*rate) with the rate truncated to an integer, capped at
    # 0.5 s for rates below one a second where that formula stops scaling.
    if rate < 1:
        return 0.5
    return 1.0 / (2 * int(rate))


def too_many(wait: float) -> Response:
    """Traefik's answer when the wait is too long."""
    return Response(
        429,
        headers=Headers(
            [
                (b"Retry-After", b"%d" % math.ceil(wait)),
                (b"X-Retry-In", go_duration(wait).encode()),
            ]
        ),
        body=_BODY,
    )


class _RateLimitFilter(Filter):
    __slots__ = ("source_of", "buckets", "max_wait")

    def __init__(self, source_of: SourceOf, buckets: BucketMap, max_wait: float) -> None:
        self.source_of = source_of
        self.buckets = buckets
        self.max_wait = max_wait

    def request(self, request: Request) -> Response | Awaitable[None] | None:
        wait = self.buckets.reserve(self.source_of(request), time.monotonic(), self.max_wait)
        if wait <= 0:
            return None
        if wait > self.max_wait:
            return too_many(wait)
        # The token is ours once this short wait is over: hold the request.
        return asyncio.sleep(wait)


class _Unlimited(Filter):
    __slots__ = ()


class RateLimit:
    key = "rateLimit"
    options = RateLimitOptions

    def build(self, options: RateLimitOptions, next: Handler, context: BuildContext) -> Filter:
        if options.average < 0:
            raise ValueError("average: must not be negative")
        if options.period < 0:
            raise ValueError("period: must not be negative")
        source_of = criterion_source(options.source_criterion)
        if options.average == 0:
            return _Unlimited()
        period = options.period or 1.0
        rate = options.average / period
        # Traefik raises a burst below 1 to 1: a bucket must hold one request.
        burst = max(1, options.burst)
        return _RateLimitFilter(source_of, BucketMap(rate, burst), max_delay(rate))
