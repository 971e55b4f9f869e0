"""L4 middleware on a running gateway's TCP and UDP routers (issue #4), and their rejection counts.

Each test puts one middleware (``ipAllowList``, ``inFlightConn`` or
``rateLimit``) on a router, shows it lets through what it should and turns
away what it should, and reads ``sluice_l4_rejections_total`` with every
label. Other client IPs are loopback sources such as 127.0.0.2.
"""

from __future__ import annotations

from pathlib import Path

from tests.l4.gateway_support import Conn, ask, lb, scene, static_text, talk, until_metric

UDP_ONLY = static_text(tcp=(), udp=("udp",))


def tcp_config(port: int, name: str, options: str) -> str:
    """A catch-all TCP router to ``port`` through the middleware ``name``: ``options``."""
    return f"""
tcp:
  routers:
    echo:
      entryPoints: [tcp]
      rule: "HostSNI(`*`)"
      service: echo
      middlewares: [{name}]
  services:
    echo: {lb(port)}
  middlewares:
    {name}: {options}
"""


def udp_config(port: int, name: str, options: str) -> str:
    """A UDP router to ``port`` through the middleware ``name``: ``options``."""
    return f"""
udp:
  routers:
    dns:
      entryPoints: [udp]
      service: dns
      middlewares: [{name}]
  services:
    dns: {lb(port)}
  middlewares:
    {name}: {options}
"""


def rejected(protocol: str, middleware: str, reason: str) -> dict[str, str]:
    """The labels of one rejection series on the router these tests configure."""
    return {
        "entrypoint": protocol,
        "protocol": protocol,
        "router": "echo@file" if protocol == "tcp" else "dns@file",
        "middleware": f"{middleware}@file",
        "reason": reason,
    }


async def refused(port: int, source: str = "127.0.0.1") -> bool:
    """Whether a connection that sends a request is closed unanswered."""
    conn = await Conn.open(port, source=source)
    try:
        conn.writer.write(b"hello")
        return await conn.closed()
    finally:
        await conn.close()


# --- TCP -------------------------------------------------------------------------------------


async def test_tcp_ip_allow_list_admits_listed_sources_only(tmp_path: Path) -> None:
    """127.0.0.1 is listed and served; 127.0.0.2 is closed, counted and logged as rejected."""
    async with scene(tmp_path) as s:
        echo = await s.echo("a")
        options = '{ipAllowList: {sourceRange: ["127.0.0.1/32"]}}'
        gw = await s.gateway(tcp_config(echo.port, "allow", options))
        port = gw.port("tcp")
        assert await talk(port, source="127.0.0.1") == "a"
        assert await refused(port, source="127.0.0.2")
        labels = rejected("tcp", "allow", "not_allowed")
        await until_metric(s.metrics, "sluice_l4_rejections_total", 1, **labels)
        assert echo.connections == 1, "a rejected connection is never dialled"
        line = await s.access.until(lambda line: line.get("Reason") == "rejected")
        assert (line["RejectedBy"], line["ClientHost"]) == ("allow@file", "127.0.0.2")


async def test_in_flight_conn_refuses_the_third_concurrent_connection(tmp_path: Path) -> None:
    """With amount 2 two open connections are served, a third is closed; a slot frees on close."""
    async with scene(tmp_path) as s:
        echo = await s.echo("a")
        gw = await s.gateway(tcp_config(echo.port, "limit", "{inFlightConn: {amount: 2}}"))
        port = gw.port("tcp")
        held = [await Conn.open(port) for _ in range(2)]
        for conn in held:
            assert await conn.greet() == "a"
        assert await refused(port)
        labels = rejected("tcp", "limit", "too_many_connections")
        await until_metric(s.metrics, "sluice_l4_rejections_total", 1, **labels)
        assert echo.connections == 2

        await held[0].close()
        await s.access.until(lambda line: line.get("Reason") == "closed")
        assert await talk(port) == "a", "a closed connection gives its slot back"
        await held[1].close()


async def test_tcp_rate_limit_refuses_connections_past_the_burst(tmp_path: Path) -> None:
    """Burst 2 at 1 a minute: two connections are served, the third is closed; IPs count apart."""
    async with scene(tmp_path) as s:
        echo = await s.echo("a")
        options = "{rateLimit: {average: 1, period: 1m, burst: 2}}"
        gw = await s.gateway(tcp_config(echo.port, "rate", options))
        port = gw.port("tcp")
        assert [await talk(port) for _ in range(2)] == ["a", "a"]
        assert await refused(port)
        labels = rejected("tcp", "rate", "rate_limited")
        await until_metric(s.metrics, "sluice_l4_rejections_total", 1, **labels)
        assert await talk(port, source="127.0.0.2") == "a"
        assert echo.connections == 3


# --- UDP -------------------------------------------------------------------------------------


async def test_udp_ip_allow_list_drops_unlisted_sources(tmp_path: Path) -> None:
    """Datagrams from 127.0.0.2 are dropped and counted one by one; 127.0.0.1 is answered."""
    async with scene(tmp_path) as s:
        server = await s.udp("a")
        options = '{ipAllowList: {sourceRange: ["127.0.0.1/32"]}}'
        gw = await s.gateway(udp_config(server.port, "allow", options), UDP_ONLY)
        port = gw.udp_port("udp")
        blocked = await s.udp_client(port, "127.0.0.2")
        for i in range(3):
            blocked.send(b"blocked %d" % i)
        labels = rejected("udp", "allow", "not_allowed")
        await until_metric(s.metrics, "sluice_l4_rejections_total", 3, **labels)
        allowed = await s.udp_client(port, "127.0.0.1")
        assert await ask(allowed, b"let in") == b"a|let in"
        assert server.received == [b"let in"]
        assert blocked.replies.empty()


async def test_udp_rate_limit_drops_datagrams_past_the_burst(tmp_path: Path) -> None:
    """Burst 3 at 1 a minute: three datagrams are answered, the next two dropped and counted."""
    async with scene(tmp_path) as s:
        server = await s.udp("a")
        options = "{rateLimit: {average: 1, period: 1m, burst: 3}}"
        gw = await s.gateway(udp_config(server.port, "rate", options), UDP_ONLY)
        port = gw.udp_port("udp")
        c = await s.udp_client(port, "127.0.0.1")
        for i in range(3):
            assert await ask(c, b"q%d" % i) == b"a|q%d" % i
        c.send(b"over 1")
        c.send(b"over 2")
        labels = rejected("udp", "rate", "rate_limited")
        await until_metric(s.metrics, "sluice_l4_rejections_total", 2, **labels)
        other = await s.udp_client(port, "127.0.0.2")
        assert await ask(other, b"other ip") == b"a|other ip"
        assert server.received == [b"q0", b"q1", b"q2", b"other ip"]
        assert c.replies.empty()
