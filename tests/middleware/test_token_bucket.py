"""Token buckets and the per-source bucket map, fed literal instants."""

from __future__ import annotations

import math

import pytest

from middleware.token_bucket import INFINITE, BucketMap, TokenBucket


def test_new_bucket_holds_burst_tokens():
    """A new bucket lets ``burst`` requests through at once, then asks for a wait."""
    bucket = TokenBucket(rate=2.0, burst=3, now=0.0)
    assert [bucket.reserve(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.reserve(0.0) == pytest.approx(0.5)


def test_refused_reservation_takes_nothing():
    """A wait longer than allowed leaves the bucket as it was, so refusals cost no tokens."""
    bucket = TokenBucket(rate=2.0, burst=1, now=0.0)
    assert bucket.reserve(0.0) == 0.0
    for _ in range(5):
        assert bucket.reserve(0.1) == pytest.approx(0.4)
    assert bucket.reserve(0.5) == 0.0


def test_short_wait_is_reserved_and_queues_later_requests():
    """A wait within ``max_wait`` takes the token in advance; the next one waits longer."""
    bucket = TokenBucket(rate=4.0, burst=1, now=0.0)
    assert bucket.reserve(0.0) == 0.0
    assert bucket.reserve(0.15, max_wait=0.125) == pytest.approx(0.1)
    # The reserved token was spent ahead of time: a full period more.
    assert bucket.reserve(0.15, max_wait=0.125) == pytest.approx(0.35)
    assert bucket.reserve(0.6, max_wait=0.0) == 0.0


@pytest.mark.parametrize(
    ("idle", "available"),
    [(0.25, 1), (1.0, 4), (100.0, 5)],
    ids=["quarter-second", "one-second", "long-idle-capped-at-burst"],
)
def test_refill_is_capped_at_burst(idle, available):
    """Tokens come back at ``rate`` a second and never exceed ``burst``."""
    bucket = TokenBucket(rate=4.0, burst=5, now=0.0)
    for _ in range(5):
        assert bucket.reserve(0.0) == 0.0
    granted = 0
    while bucket.reserve(idle) == 0.0:
        granted += 1
    assert granted == available


def test_infinite_rate_never_waits():
    """With an infinite rate every request goes through at once."""
    bucket = TokenBucket(rate=INFINITE, burst=1, now=0.0)
    assert all(bucket.reserve(0.0) == 0.0 for _ in range(1000))


def test_full_at_says_when_the_bucket_is_full_again():
    """``full_at`` is when the missing tokens will have been refilled."""
    bucket = TokenBucket(rate=2.0, burst=2, now=10.0)
    assert bucket.full_at(10.0) == 10.0
    bucket.reserve(10.0)
    bucket.reserve(10.0)
    assert bucket.full_at(10.0) == pytest.approx(11.0)


def test_bucket_map_keeps_one_bucket_per_key():
    """Each key has its own bucket."""
    buckets = BucketMap(rate=1.0, burst=1)
    assert buckets.reserve("a", 0.0) == 0.0
    assert buckets.reserve("a", 0.0) == pytest.approx(1.0)
    assert buckets.reserve("b", 0.0) == 0.0
    assert len(buckets) == 2


def test_bucket_map_forgets_refilled_buckets():
    """A bucket that is full again is dropped when a new key arrives."""
    buckets = BucketMap(rate=1.0, burst=2)
    buckets.reserve("a", 0.0)
    buckets.reserve("b", 1.5)
    assert len(buckets) == 1
    assert "a" not in buckets.buckets


def test_bucket_map_evicts_least_recently_used_at_capacity():
    """At capacity the least recently used key goes first, even if not refilled."""
    buckets = BucketMap(rate=0.001, burst=1, capacity=2)
    buckets.reserve("a", 0.0)
    buckets.reserve("b", 0.0)
    buckets.reserve("a", 0.0)
    buckets.reserve("c", 0.0)
    assert list(buckets.buckets) == ["a", "c"]
    # "a" kept its empty bucket: evicting it would have handed it a fresh one.
    assert math.isclose(buckets.reserve("a", 0.0), 1000.0)
