"""TCP health checks in a running gateway: a server that fails its check gets no connection."""

from __future__ import annotations

import json
from pathlib import Path

from tests.l4.gateway_support import Conn, metric, poll, scene, until_metric


def checked_route(*ports: int, send: str = "", expect: str = "") -> str:
    servers = ", ".join(f'{{address: "127.0.0.1:{p}"}}' for p in ports)
    # JSON strings are YAML double-quoted strings: "\n" stays a newline.
    check = "{interval: 50ms, timeout: 1s" + (f", send: {json.dumps(send)}" if send else "") + (
        f", expect: {json.dumps(expect)}" if expect else ""
    ) + "}"
    return f"""
tcp:
  routers:
    db:
      entryPoints: [tcp]
      rule: "HostSNI(`*`)"
      service: db
  services:
    db:
      loadBalancer:
        servers: [{servers}]
        healthCheck: {check}
"""


async def names(port: int, count: int) -> set[str]:
    seen = set()
    for _ in range(count):
        conn = await Conn.open(port)
        seen.add(await conn.greet())
        await conn.close()
    return seen


async def test_server_down_by_health_check_gets_no_connection_until_it_recovers(
    tmp_path: Path,
) -> None:
    """A stopped server is marked down by its check and skipped; back up, it is used again."""
    async with scene(tmp_path) as s:
        a, b = await s.echo("a"), await s.echo("b")
        b_port = b.port
        gw = await s.gateway(checked_route(a.port, b_port))
        up = {"service": "db@file", "url": f"127.0.0.1:{b_port}"}
        assert await names(gw.port("tcp"), 4) == {"a", "b"}
        await b.stop()
        await until_metric(s.metrics, "sluice_service_server_up", 0, **up)
        assert await names(gw.port("tcp"), 6) == {"a"}
        await b.start(b_port)
        await until_metric(s.metrics, "sluice_service_server_up", 1, **up)
        assert await names(gw.port("tcp"), 4) == {"a", "b"}


async def test_send_and_expect_judge_the_reply(tmp_path: Path) -> None:
    """send/expect: a server whose reply does not begin with ``expect`` is down."""
    async with scene(tmp_path) as s:
        a, b = await s.echo("a"), await s.echo("b")
        # NamedEcho answers "<name>\\n" first: only a's reply begins with "a".
        gw = await s.gateway(checked_route(a.port, b.port, send="PING\n", expect="a\n"))
        down = {"service": "db@file", "url": f"127.0.0.1:{b.port}"}
        await until_metric(s.metrics, "sluice_service_server_up", 0, **down)
        assert metric(s.metrics, "sluice_service_server_up", url=f"127.0.0.1:{a.port}") == 1
        assert await names(gw.port("tcp"), 6) == {"a"}
        await poll(lambda: b"PING\n" in b.received, lambda: "b never received the check's send")
