"""Token buckets, one per traffic source, for rate limiting (HTTP now, L4 later).

``TokenBucket`` follows ``golang.org/x/time/rate``'s ``Limiter``, which
Traefik's rateLimit uses: it holds at most ``burst`` tokens, refills at
``rate`` tokens a second, and a reservation may drive it below zero so the
caller waits for its token instead of being refused. Time is passed in
(seconds from ``time.monotonic()``), so the arithmetic is sans-IO and tests
feed it literal instants.

``BucketMap`` keeps one bucket per source key, bounded in size (least
recently used first out) and forgetting a source once its bucket would be
full again, so a flood of distinct sources cannot grow memory without limit
and forgetting a bucket never hands a source more than it had.

Nothing here knows about HTTP: keys are plain strings.
"""

from __future__ import annotations

import math
from collections import OrderedDict

INFINITE = math.inf


class TokenBucket:
    """A bucket of up to ``burst`` tokens refilled at ``rate`` tokens per second."""

    __slots__ = ("rate", "burst", "tokens", "last")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.last = now

    def _advance(self, now: float) -> float:
        elapsed = now - self.last
        if elapsed <= 0:
            return self.tokens
        return min(float(self.burst), self.tokens + elapsed * self.rate)

    def reserve(self, now: float, max_wait: float = 0.0) -> float:
        """Take one token, waiting at most ``max_wait`` seconds for it.

        Returns how long the caller must wait before its token is usable
        (0.0: now). When that is more than ``max_wait`` nothing is taken and
        the returned wait says when a token would be available, as
        ``Reservation.Cancel`` leaves ``x/time/rate``'s limiter.
        """
        if self.rate == INFINITE:
            return 0.0
        tokens = self._advance(now) - 1.0
        wait = -tokens / self.rate if tokens < 0 else 0.0
        if wait > max_wait:
            return wait
        self.tokens = tokens
        if now > self.last:
            self.last = now
        return wait

    def full_at(self, now: float) -> float:
        """When the bucket will hold ``burst`` tokens again if nothing is taken."""
        missing = self.burst - self._advance(now)
        if missing <= 0 or self.rate == INFINITE:
            return now
        return now + missing / self.rate


class BucketMap:
    """One ``TokenBucket`` per key, at most ``capacity`` of them."""

    __slots__ = ("rate", "burst", "capacity", "buckets", "expiry")

    def __init__(self, rate: float, burst: int, capacity: int = 65536) -> None:
        self.rate = rate
        self.burst = burst
        self.capacity = capacity
        # Least recently used first; a bucket moves to the end when used.
        self.buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        # Per key, when its bucket is full again and may be forgotten.
        self.expiry: dict[str, float] = {}

    def reserve(self, key: str, now: float, max_wait: float = 0.0) -> float:
        """``TokenBucket.reserve`` on ``key``'s bucket (a full one for a new key)."""
        buckets = self.buckets
        bucket = buckets.get(key)
        if bucket is None:
            self._evict(now)
            bucket = buckets[key] = TokenBucket(self.rate, self.burst, now)
        else:
            buckets.move_to_end(key)
        wait = bucket.reserve(now, max_wait)
        self.expiry[key] = bucket.full_at(now)
        return wait

    def _evict(self, now: float) -> None:
        buckets = self.buckets
        expiry = self.expiry
        # Drop refilled buckets from the cold end; a new one would be the same.
        while buckets:
            key = next(iter(buckets))
            if expiry.get(key, 0.0) > now and len(buckets) < self.capacity:
                break
            del buckets[key]
            expiry.pop(key, None)

    def __len__(self) -> int:
        return len(self.buckets)
