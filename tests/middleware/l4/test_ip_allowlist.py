"""ipAllowList over real TCP connections and UDP datagrams, and its option checks."""

from __future__ import annotations

import pytest

from middleware.l4.contract import NOT_ALLOWED
from tests.middleware.l4.relays import (
    TCPClient,
    UDPClient,
    next_item,
    reload_error,
    tcp_chain,
    tcp_relay,
    udp_chain,
    udp_port,
    udp_relay,
)

ALLOW_ONE = """
{proto}:
  middlewares:
    allow:
      ipAllowList:
        sourceRange: ["127.0.0.1/32", "10.0.0.0/8"]
"""


async def test_tcp_admits_listed_ip_and_closes_others_before_dialling():
    """A connection from 127.0.0.1 is relayed; one from 127.0.0.7 is closed, never dialled."""
    chain = tcp_chain(ALLOW_ONE.format(proto="tcp"), "allow")
    async with tcp_relay(chain) as (relay, echo):
        port = relay.port
        outsider = await TCPClient.open(port, "127.0.0.7")
        rejection = await next_item(relay.decisions)
        assert await outsider.closed_by_peer()
        await outsider.close()
        assert rejection is not None
        assert (rejection.reason, rejection.middleware) == (NOT_ALLOWED, "allow@file")

        insider = await TCPClient.open(port, "127.0.0.1")
        assert await next_item(relay.decisions) is None
        assert await insider.echo(b"hello") == b"hello"
        await insider.close()
        await next_item(relay.released)
        assert echo.connections == 1


async def test_tcp_ip_white_list_is_the_deprecated_spelling():
    """Traefik's pre-3.0 ipWhiteList key builds the same allowlist."""
    text = ALLOW_ONE.format(proto="tcp").replace("ipAllowList", "ipWhiteList")
    chain = tcp_chain(text, "allow")
    async with tcp_relay(chain) as (relay, echo):
        port = relay.port
        outsider = await TCPClient.open(port, "127.0.0.9")
        assert await outsider.closed_by_peer()
        await outsider.close()
        assert (await next_item(relay.decisions)).reason == NOT_ALLOWED
        assert echo.connections == 0


async def test_udp_drops_unlisted_source_and_relays_listed_one():
    """Datagrams from 127.0.0.7 never reach the server; 127.0.0.1's round-trip."""
    chain = udp_chain(ALLOW_ONE.format(proto="udp"), "allow")
    async with udp_relay(chain) as (relay, echo):
        port = udp_port(relay)
        outsider = await UDPClient.open(port, "127.0.0.7")
        insider = await UDPClient.open(port, "127.0.0.1")
        try:
            for i in range(3):
                outsider.send(b"out%d" % i)
                rejection = await next_item(relay.decisions)
                assert rejection is not None and rejection.reason == NOT_ALLOWED
            insider.send(b"in")
            assert await next_item(relay.decisions) is None
            assert await next_item(insider.replies) == b"in"
            assert echo.received == [b"in"]
            assert outsider.replies.empty()
        finally:
            outsider.close()
            insider.close()


@pytest.mark.parametrize(
    ("body", "line", "path", "message"),
    [
        (
            "sourceRange:\n          - 127.0.0.1\n          - 10.0.0.300",
            7,
            "tcp.middlewares.allow.ipAllowList.sourceRange[1]",
            "'10.0.0.300' is not an IP address or CIDR range",
        ),
        ("sourceRange: []", 5, "tcp.middlewares.allow.ipAllowList.sourceRange", "at least one"),
        ("{}", 4, "tcp.middlewares.allow.ipAllowList", 'missing required key "sourceRange"'),
        (
            "sourceRange: [127.0.0.1]\n        ipStrategy: {depth: 1}",
            6,
            "tcp.middlewares.allow.ipAllowList",
            'unknown key "ipStrategy"',
        ),
    ],
    ids=["bad-address", "empty", "missing", "no-ipStrategy-at-l4"],
)
async def test_invalid_source_range_names_file_line_and_key(body, line, path, message):
    """A bad sourceRange fails the reload naming the file, the line and the key."""
    text = f"tcp:\n  middlewares:\n    allow:\n      ipAllowList:\n        {body}\n"
    error = reload_error(text)
    assert error.startswith(f"dynamic.yml:{line}: {path}: "), error
    assert message in error
