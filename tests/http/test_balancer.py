"""Server selection: smooth weighted round robin, availability, stickiness, failover."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from gateway.config.dynamic import Cookie
from gateway.http.balancer import Balancer, Failover, StickyCookie
from gateway.http.upstream import UpstreamServer
from middleware.contract import Headers, Request


def request(cookie: str = "") -> Request:
    raw = [(b"Cookie", cookie.encode())] if cookie else []
    return Request(
        method="GET",
        raw_path="/",
        query="",
        headers=Headers(raw),
        host="a.test",
        client_ip="127.0.0.1",
    )


def servers(*weights: int) -> list[UpstreamServer]:
    return [UpstreamServer(f"http://127.0.0.1:{9000 + i}", weight=w) for i, w in enumerate(weights)]


@pytest.mark.parametrize("weights", [(1, 1), (3, 1), (5, 2, 1)], ids=["even", "3:1", "5:2:1"])
def test_weighted_round_robin_follows_weights_exactly(weights):
    """Over one full cycle each server is picked exactly its weight's share."""
    members = servers(*weights)
    lb = Balancer("svc", members, weights)
    rounds = sum(weights) * 10
    picks = Counter(lb.pick(request()).server.url for _ in range(rounds))  # type: ignore[union-attr]
    assert [picks[s.url] for s in members] == [w * 10 for w in weights]


def test_smooth_spread_interleaves_heavy_server():
    """A 3:1 split does not send three in a row then one (nginx's smooth WRR)."""
    members = servers(3, 1)
    lb = Balancer("svc", members, [3, 1])
    sequence = [lb.pick(request()).server.url[-1] for _ in range(4)]  # type: ignore[union-attr]
    assert sequence == ["0", "0", "1", "0"]


def test_unavailable_servers_are_skipped_and_none_means_none():
    """Unhealthy or ejected servers are not picked; with none healthy, pick returns None."""
    members = servers(1, 1)
    lb = Balancer("svc", members, [1, 1])
    members[0].set_healthy(False)
    assert {lb.pick(request()).server.url for _ in range(5)} == {members[1].url}  # type: ignore[union-attr]
    members[1].eject("refused")
    # Every server out: the ejected one is still tried (panic routing), the
    # actively unhealthy one never.
    assert {lb.pick(request()).server.url for _ in range(5)} == {members[1].url}  # type: ignore[union-attr]
    members[0].set_healthy(True)
    assert lb.pick(request()).server is members[0]  # type: ignore[union-attr]
    members[0].set_healthy(False)
    members[1].set_healthy(False)
    assert lb.pick(request()) is None


def test_passive_ejection_needs_configured_failures_within_window():
    """With maxFailedAttempts 3, two failures keep the server; the third ejects it."""
    (server,) = servers(1)
    server.max_failures = 3
    server.failure_window = 10.0
    server.eject("one")
    server.eject("two")
    assert server.available(time.monotonic())
    server.eject("three")
    assert not server.available(time.monotonic())


def test_sticky_cookie_pins_and_reassigns_when_target_leaves():
    """A valid cookie pins the server; a cookie for a gone server gets a fresh pick and cookie."""
    members = servers(1, 1)
    lb = Balancer("svc", members, [1, 1], sticky=StickyCookie(Cookie(name="lb"), "_svc"))
    first = lb.pick(request())
    assert first is not None and first.cookies
    cookie = first.cookies[0].decode().split(";")[0]
    for _ in range(5):
        again = lb.pick(request(cookie))
        assert again is not None and again.server is first.server and not again.cookies
    first.server.set_healthy(False)
    moved = lb.pick(request(cookie))
    assert moved is not None and moved.server is not first.server and moved.cookies


def test_failover_uses_fallback_only_while_main_is_down():
    """Failover sends to the main service while it can serve, else to the fallback."""
    main, spare = servers(1, 1)
    lb = Failover("f", Balancer("main", [main], [1]), Balancer("spare", [spare], [1]))
    assert lb.pick(request()).server is main  # type: ignore[union-attr]
    main.set_healthy(False)
    assert lb.pick(request()).server is spare  # type: ignore[union-attr]
    main.set_healthy(True)
    assert lb.pick(request()).server is main  # type: ignore[union-attr]
