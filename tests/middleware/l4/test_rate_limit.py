"""rateLimit over real sockets: new TCP connections and UDP datagrams per client IP."""

from __future__ import annotations

import time

import pytest

from middleware.l4.config import udp_compiler
from middleware.l4.contract import RATE_LIMITED, ConnectionInfo
from middleware.l4.registry import load_udp_registry
from tests.middleware.l4.relays import (
    TCPClient,
    TCPRelay,
    UDPClient,
    load,
    next_item,
    reload_error,
    tcp_chain,
    tcp_relay,
    udp_chain,
    udp_port,
    udp_relay,
)

LIMIT = """
{proto}:
  middlewares:
    slow:
      rateLimit:
        average: {average}
        period: {period}
        burst: {burst}
"""


async def attempt(relay: TCPRelay, source: str = "127.0.0.1") -> bool:
    """Open one connection; True when it was admitted and echoed, False when closed."""
    client = await TCPClient.open(relay.port, source)
    decision = await next_item(relay.decisions)
    try:
        if decision is None:
            assert await client.echo() == b"ping"
            return True
        assert decision.reason == RATE_LIMITED
        assert await client.closed_by_peer()
        return False
    finally:
        await client.close()
        if decision is None:
            await next_item(relay.released)


@pytest.mark.parametrize("burst", [1, 3], ids=["burst-1", "burst-3"])
async def test_tcp_admits_burst_then_closes_new_connections(burst):
    """With no refill to speak of, exactly `burst` connections from one IP pass."""
    chain = tcp_chain(LIMIT.format(proto="tcp", average=1, period="1h", burst=burst), "slow")
    async with tcp_relay(chain) as (relay, echo):
        results = [await attempt(relay) for _ in range(burst + 2)]
        assert results == [True] * burst + [False, False]
        assert await attempt(relay, "127.0.0.5"), "another IP has its own bucket"
        assert echo.connections == burst + 1


async def test_tcp_refills_at_average_per_period():
    """Over a measured window the admitted count follows burst + rate x elapsed."""
    rate = 40.0
    chain = tcp_chain(LIMIT.format(proto="tcp", average=4, period="100ms", burst=2), "slow")
    async with tcp_relay(chain) as (relay, _):
        admitted = 0
        start = time.monotonic()
        while time.monotonic() - start < 0.5:
            admitted += await attempt(relay)
        elapsed = time.monotonic() - start
    assert admitted <= 2 + rate * elapsed + 1
    assert admitted >= 2 + rate * elapsed * 0.5


async def test_tcp_average_zero_means_no_limit():
    """As in Traefik, average 0 turns the limit off."""
    chain = tcp_chain(LIMIT.format(proto="tcp", average=0, period="1s", burst=1), "slow")
    async with tcp_relay(chain) as (relay, _):
        assert [await attempt(relay) for _ in range(5)] == [True] * 5


async def test_udp_drops_datagrams_beyond_burst():
    """Per source IP, `burst` datagrams reach the server and the rest are dropped."""
    chain = udp_chain(LIMIT.format(proto="udp", average=1, period="1h", burst=3), "slow")
    async with udp_relay(chain) as (relay, echo):
        client = await UDPClient.open(udp_port(relay))
        other = await UDPClient.open(udp_port(relay), "127.0.0.5")
        try:
            decisions = []
            for i in range(6):
                client.send(b"d%d" % i)
                decisions.append(await next_item(relay.decisions))
            assert decisions[:3] == [None] * 3
            assert [d.reason for d in decisions[3:]] == [RATE_LIMITED] * 3
            assert [await next_item(client.replies) for _ in range(3)] == [b"d0", b"d1", b"d2"]

            other.send(b"x")
            assert await next_item(relay.decisions) is None
            assert await next_item(other.replies) == b"x"
            assert echo.received == [b"d0", b"d1", b"d2", b"x"]
            assert client.replies.empty()
        finally:
            client.close()
            other.close()


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("average", "-1", "must not be negative"),
        ("period", "-1s", "must not be negative"),
        ("period", "soon", "duration"),
        ("burst", "-3", "must not be negative"),
    ],
    ids=["average", "period", "period-text", "burst"],
)
@pytest.mark.parametrize("proto", ["tcp", "udp"])
async def test_invalid_options_name_file_line_and_key(proto, key, value, message):
    """A bad rateLimit option fails the reload naming the file, the line and the key."""
    options = {"average": "5", "period": "1s", "burst": "2", key: value}
    text = LIMIT.format(proto=proto, **options)
    line = 1 + text.splitlines().index(f"        {key}: {value}")
    error = reload_error(text, proto)
    assert error.startswith(f"dynamic.yml:{line}: {proto}.middlewares.slow.rateLimit.{key}: ")
    assert message in error


def _limiter(average: int, period: str, burst: int):
    config = load(LIMIT.format(proto="udp", average=average, period=period, burst=burst))
    compiler = udp_compiler(config, registry=load_udp_registry(plugins=False))
    chain = compiler.chain(["slow@file"])
    assert chain is not None
    return chain.filters[0]


def _session(i: int) -> ConnectionInfo:
    return ConnectionInfo(protocol="udp", client_ip=f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}")


def test_refilled_buckets_are_forgotten():
    """Sources whose buckets have refilled are swept, so idle sources cost no memory."""
    limiter = _limiter(average=1000, period="1ms", burst=1)
    for i in range(20000):
        assert limiter.admit(_session(i), 1) is None
    assert len(limiter.buckets.table) <= 4096


def test_flood_of_distinct_sources_stays_bounded():
    """Even when no bucket refills, the table holds at most 65536 sources."""
    limiter = _limiter(average=1, period="1h", burst=1)
    first = _session(0)
    assert limiter.admit(first, 1) is None
    assert limiter.admit(first, 1) is not None
    for i in range(1, 200_000):
        limiter.admit(_session(i), 1)
    assert len(limiter.buckets.table) <= 65536
    # The price of the bound: the longest-known source starts over with a full bucket.
    assert limiter.admit(first, 1) is None
