"""inFlightConn over real TCP connections: per-IP concurrency, released on close."""

from __future__ import annotations

import pytest

from middleware.l4.contract import TOO_MANY_CONNECTIONS
from tests.middleware.l4.relays import TCPClient, next_item, reload_error, tcp_chain, tcp_relay

LIMIT = """
tcp:
  middlewares:
    lim:
      inFlightConn:
        amount: {amount}
"""


@pytest.mark.parametrize("amount", [1, 3], ids=["one", "three"])
async def test_admits_amount_rejects_next_and_admits_again_after_a_close(amount):
    """`amount` connections from one IP pass, the next is closed, one more passes after a close."""
    chain = tcp_chain(LIMIT.format(amount=amount), "lim")
    async with tcp_relay(chain) as (relay, echo):
        held = []
        for _ in range(amount):
            client = await TCPClient.open(relay.port)
            assert await next_item(relay.decisions) is None
            assert await client.echo() == b"ping"
            held.append(client)

        extra = await TCPClient.open(relay.port)
        rejection = await next_item(relay.decisions)
        assert rejection is not None and rejection.reason == TOO_MANY_CONNECTIONS
        assert await extra.closed_by_peer()
        await extra.close()

        first = held.pop(0)
        await first.close()
        released = await next_item(relay.released)
        assert released.client_port == first.port

        again = await TCPClient.open(relay.port)
        assert await next_item(relay.decisions) is None
        assert await again.echo(b"again") == b"again"
        held.append(again)

        for client in held:
            await client.close()
        for _ in held:
            await next_item(relay.released)
        assert echo.connections == amount + 1


async def test_counts_each_client_ip_separately():
    """A client IP at its limit does not stop another IP's connections."""
    chain = tcp_chain(LIMIT.format(amount=1), "lim")
    async with tcp_relay(chain) as (relay, _):
        busy = await TCPClient.open(relay.port, "127.0.0.1")
        assert await next_item(relay.decisions) is None
        blocked = await TCPClient.open(relay.port, "127.0.0.1")
        assert (await next_item(relay.decisions)).reason == TOO_MANY_CONNECTIONS
        other = await TCPClient.open(relay.port, "127.0.0.5")
        assert await next_item(relay.decisions) is None
        assert await other.echo() == b"ping"
        assert await blocked.closed_by_peer()
        for client in (busy, blocked, other):
            await client.close()
        await next_item(relay.released)
        await next_item(relay.released)


@pytest.mark.parametrize(
    ("options", "line", "path", "message"),
    [
        ("{amount: 0}", 5, "tcp.middlewares.lim.inFlightConn.amount", "must be at least 1"),
        ("{amount: -2}", 5, "tcp.middlewares.lim.inFlightConn.amount", "must be at least 1"),
        ("{amount: many}", 5, "tcp.middlewares.lim.inFlightConn.amount", "expected an integer"),
        ("{}", 5, "tcp.middlewares.lim.inFlightConn", 'missing required key "amount"'),
    ],
    ids=["zero", "negative", "not-a-number", "missing"],
)
async def test_invalid_amount_names_file_line_and_key(options, line, path, message):
    """A bad amount fails the reload naming the file, the line and the key."""
    error = reload_error(f"\ntcp:\n  middlewares:\n    lim:\n      inFlightConn: {options}\n")
    assert error.startswith(f"dynamic.yml:{line}: {path}: "), error
    assert message in error
