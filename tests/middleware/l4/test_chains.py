"""Chains over real sockets: order, release on later rejection, failing closed."""

from __future__ import annotations

import logging

from middleware.l4.chains import ConnectionChain
from middleware.l4.contract import FAILED, NOT_ALLOWED, ConnectionFilter, ConnectionInfo
from middleware.l4.registry import load_tcp_registry, load_udp_registry
from tests.middleware.l4.plugins import Boom, Tally, UDPBoom
from tests.middleware.l4.relays import (
    TCPClient,
    UDPClient,
    next_item,
    tcp_chain,
    tcp_relay,
    udp_chain,
    udp_port,
    udp_relay,
)

CONFIG = """
tcp:
  middlewares:
    first: {tally: {label: first}}
    second: {tally: {label: second}}
    lim: {inFlightConn: {amount: 1}}
    local: {ipAllowList: {sourceRange: [127.0.0.1]}}
    boom: {boom: {on: admit}}
    badRelease: {boom: {on: release}}
udp:
  middlewares:
    local: {ipAllowList: {sourceRange: [127.0.0.1]}}
    boom: {boom: {}}
"""


def registry(tally: Tally):
    return load_tcp_registry(plugins=False).with_factories({"tally": tally, "boom": Boom()})


async def test_admits_in_order_and_releases_innermost_first():
    """Filters admit in list order; when the connection ends they release in reverse."""
    tally = Tally()
    chain = tcp_chain(CONFIG, "first", "second", registry=registry(tally))
    async with tcp_relay(chain) as (relay, _):
        client = await TCPClient.open(relay.port)
        assert await next_item(relay.decisions) is None
        assert await client.echo() == b"ping"
        assert tally.log == [("admit", "first", client.port), ("admit", "second", client.port)]
        await client.close()
        await next_item(relay.released)
    assert tally.log[2:] == [("release", "second", client.port), ("release", "first", client.port)]


async def test_later_rejection_releases_the_filters_that_admitted():
    """A connection refused by a later filter is released from the earlier ones at once."""
    tally = Tally()
    chain = tcp_chain(CONFIG, "first", "lim", "local", registry=registry(tally))
    async with tcp_relay(chain) as (relay, echo):
        for _ in range(2):
            # Were lim not released, the second try would be refused by lim instead.
            client = await TCPClient.open(relay.port, "127.0.0.7")
            rejection = await next_item(relay.decisions)
            assert rejection is not None
            assert (rejection.reason, rejection.middleware) == (NOT_ALLOWED, "local@file")
            assert await client.closed_by_peer()
            await client.close()
            assert tally.log[-2:] == [
                ("admit", "first", client.port),
                ("release", "first", client.port),
            ]
        assert relay.released.empty()
        assert echo.connections == 0


async def test_raising_filter_fails_closed_releases_earlier_and_logs(caplog):
    """A filter that raises refuses the connection, releases those before it and is logged."""
    tally = Tally()
    chain = tcp_chain(CONFIG, "first", "boom", "second", registry=registry(tally))
    with caplog.at_level(logging.ERROR, logger="middleware.l4.chains"):
        async with tcp_relay(chain) as (relay, echo):
            client = await TCPClient.open(relay.port)
            rejection = await next_item(relay.decisions)
            assert await client.closed_by_peer()
            await client.close()
            assert echo.connections == 0
    assert rejection is not None
    assert (rejection.reason, rejection.middleware) == (FAILED, "boom@file")
    assert tally.log == [("admit", "first", client.port), ("release", "first", client.port)]
    assert "boom@file" in caplog.text and "boom in admit" in caplog.text


async def test_raising_release_does_not_keep_others_from_releasing(caplog):
    """An exception in one release is logged; the filters outside it still release."""
    tally = Tally()
    chain = tcp_chain(CONFIG, "first", "badRelease", "second", registry=registry(tally))
    with caplog.at_level(logging.ERROR, logger="middleware.l4.chains"):
        async with tcp_relay(chain) as (relay, _):
            client = await TCPClient.open(relay.port)
            assert await next_item(relay.decisions) is None
            assert await client.echo() == b"ping"
            await client.close()
            await next_item(relay.released)
    assert [e for e in tally.log if e[0] == "release"] == [
        ("release", "second", client.port),
        ("release", "first", client.port),
    ]
    assert "badRelease@file" in caplog.text and "boom in release" in caplog.text


async def test_raising_datagram_filter_drops_the_datagram(caplog):
    """A UDP filter that raises drops the datagram (fail closed) and is logged."""
    udp = load_udp_registry(plugins=False).with_factories({"boom": UDPBoom()})
    chain = udp_chain(CONFIG, "local", "boom", registry=udp)
    with caplog.at_level(logging.ERROR, logger="middleware.l4.chains"):
        async with udp_relay(chain) as (relay, echo):
            client = await UDPClient.open(udp_port(relay))
            try:
                client.send(b"x")
                rejection = await next_item(relay.decisions)
            finally:
                client.close()
            assert echo.received == []
    assert rejection is not None
    assert (rejection.reason, rejection.middleware) == (FAILED, "boom@file")
    assert "boom per datagram" in caplog.text


def test_only_filters_that_count_are_released():
    """A chain of stateless filters tells the runtime it needs no release call."""
    stateless = tcp_chain(CONFIG, "local", registry=registry(Tally()))
    counting = tcp_chain(CONFIG, "local", "lim", registry=registry(Tally()))
    assert not stateless.needs_release
    assert counting.needs_release


def test_plain_filter_admits_everything():
    """The contract's base ConnectionFilter admits and has nothing to release."""
    chain = ConnectionChain((ConnectionFilter(),), ("noop@test",))
    info = ConnectionInfo(protocol="tcp", client_ip="127.0.0.1")
    assert chain.admit(info) is None
    assert not chain.needs_release
