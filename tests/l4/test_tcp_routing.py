"""TCP router order and server choice (gateway.l4.tcp_routing), on compiled objects."""

from __future__ import annotations

from collections import Counter

import pytest

from gateway.config.tcp_rule import tcp_rule
from gateway.l4.relay import RelaySettings
from gateway.l4.tcp_routing import (
    TCPRouterRuntime,
    TCPRoutes,
    TCPServer,
    TCPServicePool,
    TCPWeightedPool,
)

SETTINGS = RelaySettings()


def server(port: int, weight: int = 1) -> TCPServer:
    return TCPServer(
        service="s", address=f"127.0.0.1:{port}", host="127.0.0.1", port=port, weight=weight,
        settings=SETTINGS,
    )


def router(name: str, rule: str, *, tls: str | None = None, priority: int = 0) -> TCPRouterRuntime:
    compiled = tcp_rule(rule)
    return TCPRouterRuntime(
        name=name, service="s", rule=compiled, priority=priority or compiled.priority,
        pick=lambda: None, tls=tls,
    )


def test_tls_and_plain_routers_are_kept_apart() -> None:
    """A router with tls matches only TLS connections; one without, only plain ones."""
    routes = TCPRoutes.build([
        router("plain", "HostSNI(`*`)"),
        router("tls", "HostSNI(`*`)", tls="passthrough"),
    ])
    assert routes.match_plain("127.0.0.1").name == "plain"  # type: ignore[union-attr]
    assert routes.match_tls("a.test", "127.0.0.1", ()).name == "tls"  # type: ignore[union-attr]


def test_longer_rule_wins_and_catch_all_is_last() -> None:
    """Default priority is the rule's length; HostSNI(`*`) alone is tried last."""
    routes = TCPRoutes.build([
        router("all", "HostSNI(`*`)", tls="passthrough"),
        router("name", "HostSNI(`a.test`)", tls="passthrough"),
        router("name-and-ip", "HostSNI(`a.test`) && ClientIP(`127.0.0.0/8`)", tls="passthrough"),
    ])
    assert [r.name for r in routes.tls] == ["name-and-ip", "name", "all"]
    assert routes.match_tls("a.test", "10.1.1.1", ()).name == "name"  # type: ignore[union-attr]
    assert routes.match_tls("b.test", "127.0.0.1", ()).name == "all"  # type: ignore[union-attr]
    assert routes.match_tls("b.test", "127.0.0.1", ()).catch_all  # type: ignore[union-attr]


def test_explicit_priority_overrides_length_and_ties_go_by_name() -> None:
    """An explicit priority wins; equal priorities are tried in name order."""
    routes = TCPRoutes.build([
        router("b", "ClientIP(`127.0.0.1`)", priority=5),
        router("a", "ClientIP(`127.0.0.0/8`)", priority=5),
        router("long", "ClientIP(`127.0.0.1`) || ClientIP(`127.0.0.2`)", priority=1),
    ])
    assert [r.name for r in routes.plain] == ["a", "b", "long"]


def test_plain_rule_reading_client_hello_asks_for_a_peek() -> None:
    """A plain router whose rule needs a ClientHello makes the entry point peek."""
    assert TCPRoutes.build([router("x", "HostSNI(`*`) && !ALPN(`h2`)")]).plain_needs_peek
    assert not TCPRoutes.build([router("x", "ClientIP(`127.0.0.1`)")]).plain_needs_peek


def test_weights_share_connections() -> None:
    """Smooth weighted round robin: weights 3:1 give exactly 3:1 over every four picks."""
    a, b = server(1, 3), server(2, 1)
    pool = TCPServicePool("s", [a, b])
    picks = Counter(pool.pick() for _ in range(400))
    assert picks == {a: 300, b: 100}


def test_refusing_server_is_skipped_and_health_check_down_is_never_picked() -> None:
    """A server that refused is skipped for a while; a server found down is not used at all."""
    a, b, c = server(1), server(2), server(3)
    pool = TCPServicePool("s", [a, b, c])
    a.refused()
    c.healthy = False
    assert {pool.pick() for _ in range(20)} == {b}
    b.refused()
    # Panic: every available server is out; the refused ones are tried, never the down one.
    assert {pool.pick() for _ in range(20)} == {a, b}
    a.healthy = b.healthy = False
    assert pool.pick() is None


def test_connected_server_comes_back_at_once() -> None:
    """A successful connection ends a passive ejection."""
    a, b = server(1), server(2)
    pool = TCPServicePool("s", [a, b])
    a.refused()
    a.connected()
    assert {pool.pick() for _ in range(4)} == {a, b}


@pytest.mark.parametrize("empty_first", [True, False], ids=["empty-first", "empty-second"])
def test_weighted_service_skips_a_child_without_servers(empty_first: bool) -> None:
    """A weighted child with no server left gives its turn to the other."""
    live = server(1)
    empty = TCPServicePool("none", [])
    full = TCPServicePool("full", [live])
    children = [(empty.pick, 1), (full.pick, 1)]
    pool = TCPWeightedPool("w", children if empty_first else children[::-1])
    assert {pool.pick() for _ in range(10)} == {live}
