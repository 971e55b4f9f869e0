"""The UDP balancers: smooth weighted round robin, pools, and address parsing.

No sockets: picks are checked against nginx's smooth sequence and exact
ratios, addresses against how Go's SplitHostPort reads them.
"""

from __future__ import annotations

import pytest

from gateway.l4.udp_balancer import (
    Address,
    ServerPool,
    SmoothWeighted,
    WeightedPool,
    split_address,
)


def test_smooth_weighted_round_robin_interleaves() -> None:
    """Weights 5:1:1 give nginx's smooth sequence, not five a's in a row."""
    rr = SmoothWeighted([("a", 5), ("b", 1), ("c", 1)])
    assert "".join(rr.next() or "" for _ in range(7)) == "aabacaa"


def test_zero_weight_and_empty_pools() -> None:
    """A weight of 0 takes a server out; a pool with none picks None."""
    pool = ServerPool("p", [("127.0.0.1:1", 0), ("127.0.0.1:2", 1)])
    assert {pool.pick() for _ in range(5)} == {("127.0.0.1", 2)}
    assert ServerPool("empty", []).pick() is None


def test_weighted_service_of_services() -> None:
    """A weighted service splits by its children's weights and skips an empty child."""
    a = ServerPool("a", [("127.0.0.1:1", 1)])
    b = ServerPool("b", [("127.0.0.1:2", 1), ("127.0.0.1:3", 1)])
    empty = ServerPool("e", [])
    parent = WeightedPool("w", [(a.pick, 1), (b.pick, 3), (empty.pick, 4)])
    picks = [parent.pick() for _ in range(8)]
    ports = [p[1] for p in picks if p is not None]
    assert len(ports) == 8
    assert ports.count(1) == 2 and ports.count(2) == 3 and ports.count(3) == 3
    assert WeightedPool("none", [(empty.pick, 1)]).pick() is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:53", ("127.0.0.1", 53)),
        ("[::1]:5353", ("::1", 5353)),
        ("dns.lan:53", ("dns.lan", 53)),
    ],
    ids=["ipv4", "ipv6", "name"],
)
def test_split_address(text: str, expected: Address) -> None:
    """Server addresses parse to (host, port) as Go's SplitHostPort reads them."""
    assert split_address(text) == expected


@pytest.mark.parametrize(
    "text",
    ["127.0.0.1", ":53", "::1:53", "[::1:53", "host:0", "host:65536", "host:dns"],
    ids=["no-port", "no-host", "bare-ipv6", "open-bracket", "port-0", "port-high", "named-port"],
)
def test_split_address_rejects(text: str) -> None:
    """Malformed server addresses raise ValueError naming the address."""
    with pytest.raises(ValueError, match="address"):
        split_address(text)
