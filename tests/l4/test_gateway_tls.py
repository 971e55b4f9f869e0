"""TLS on TCP routers through a running gateway (issue #4): passthrough by SNI, termination,
and TCP and HTTP routers sharing one entry point.

Clients are Python's ssl module verifying against a CA made for the test.
In passthrough the gateway holds no certificate for the name: a client that
verifies the backend's certificate, and a backend that saw the server name
in its own ClientHello callback, show the bytes went through untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import ssl
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.backends import RecordingBackend, get, read_reply
from tests.certs import CA
from tests.l4.gateway_support import (
    Cert,
    Conn,
    lb,
    poll,
    scene,
    static_text,
    talk,
    until_metric,
)


def client_context(ca: CA, alpn: Sequence[str] = ()) -> ssl.SSLContext:
    """A verifying TLS client context trusting only the test CA."""
    context = ssl.create_default_context(cafile=str(ca.cert_path))
    if alpn:
        context.set_alpn_protocols(list(alpn))
    return context


def client_hello(server_name: str) -> bytes:
    """The bytes a real OpenSSL client sends first: its ClientHello for ``server_name``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def certificates(*certs: Cert) -> str:
    items = "".join(f'    - {{certFile: "{c}", keyFile: "{k}"}}\n' for c, k in certs)
    return f"tls:\n  certificates:\n{items}"


PASSTHROUGH = "tls: {passthrough: true}"


@pytest.mark.parametrize("fallback", [False, True], ids=["unknown-closed", "catch-all"])
async def test_passthrough_routes_by_sni_untouched(tmp_path: Path, fallback: bool) -> None:
    """Two names reach TLS backends that see their ClientHello; others are closed or caught."""
    async with scene(tmp_path) as s:
        a = await s.echo("a", s.cert("a.test"))
        b = await s.echo("b", s.cert("b.test"))
        rest = await s.echo("rest", s.cert("other.test"))
        catch_all = f"""
    rest:
      rule: "HostSNI(`*`)"
      service: rest
      {PASSTHROUGH}"""
        gw = await s.gateway(f"""
tcp:
  routers:
    a:
      rule: "HostSNI(`a.test`)"
      service: a
      {PASSTHROUGH}
    b:
      rule: "HostSNI(`B.test`)"
      service: b
      {PASSTHROUGH}{catch_all if fallback else ""}
  services:
    a: {lb(a.port)}
    b: {lb(b.port)}
    rest: {lb(rest.port)}
""")
        port, ctx = gw.port("tcp"), client_context(s.ca)
        assert await talk(port, tls=ctx, server_name="a.test") == "a"
        assert await talk(port, tls=ctx, server_name="b.test") == "b"
        assert (a.server_names, b.server_names) == (["a.test"], ["b.test"])
        if fallback:
            assert await talk(port, tls=ctx, server_name="other.test") == "rest"
            assert rest.server_names == ["other.test"]
        else:
            stray = await Conn.open(port)
            stray.writer.write(client_hello("other.test"))
            assert await stray.closed(), "an unknown server name is closed, unanswered"
            await stray.close()
            assert rest.connections == 0
        line = await s.access.until(lambda line: line.get("RouterName") == "a@file")
        assert line["TLSServerName"] == "a.test"
        assert line["Protocol"] == "tcp"


def rules(a: str, b: str, c: str) -> str:
    return f"""
tcp:
  routers:
    alpn:
      rule: "HostSNI(`svc.test`) && ALPN(`x-a`)"
      service: a
      {PASSTHROUGH}
    notalpn:
      rule: "HostSNI(`svc.test`) && !ALPN(`x-a`)"
      service: b
      {PASSTHROUGH}
    either:
      rule: 'HostSNIRegexp(`^n[0-9]+\\.test$`) || HostSNI(`other.test`)'
      service: c
      {PASSTHROUGH}
    ipb:
      rule: "HostSNI(`ip.test`) && ClientIP(`127.0.0.2`)"
      service: b
      {PASSTHROUGH}
    ipa:
      rule: "HostSNI(`ip.test`)"
      service: a
      {PASSTHROUGH}
    short:
      rule: 'HostSNIRegexp(`^pri\\.test$`)'
      priority: 1000
      service: b
      {PASSTHROUGH}
    long:
      rule: "HostSNI(`pri.test`) && !ClientIP(`192.0.2.0/24`)"
      service: a
      {PASSTHROUGH}
  services:
    a: {a}
    b: {b}
    c: {c}
"""


@pytest.mark.parametrize(
    ("server_name", "alpn", "source", "expected"),
    [
        ("svc.test", ("x-a",), "127.0.0.1", "a"),
        ("svc.test", ("x-b", "http/1.1"), "127.0.0.1", "b"),
        ("svc.test", (), "127.0.0.1", "b"),
        ("n42.test", (), "127.0.0.1", "c"),
        ("other.test", (), "127.0.0.1", "c"),
        ("ip.test", (), "127.0.0.2", "b"),
        ("ip.test", (), "127.0.0.1", "a"),
        ("pri.test", (), "127.0.0.1", "b"),
    ],
    ids=["alpn", "not-alpn", "no-alpn", "regexp", "or", "client-ip", "client-ip-else", "priority"],
)
async def test_rules_combine_sni_alpn_and_client_ip(
    tmp_path: Path, server_name: str, alpn: tuple[str, ...], source: str, expected: str
) -> None:
    """HostSNI, HostSNIRegexp, ALPN, ClientIP with &&, || and ! pick the router; priority wins."""
    async with scene(tmp_path) as s:
        names = ["svc.test", "ip.test", "pri.test"]
        a, b = await s.echo("a", s.cert(*names)), await s.echo("b", s.cert(*names))
        c = await s.echo("c", s.cert("n42.test", "other.test"))
        gw = await s.gateway(rules(lb(a.port), lb(b.port), lb(c.port)))
        ctx = client_context(s.ca, alpn)
        name = await talk(gw.port("tcp"), tls=ctx, server_name=server_name, source=source)
        assert name == expected


async def test_tcp_router_terminates_tls_for_a_plain_backend(tmp_path: Path) -> None:
    """With tls: {} the gateway answers with its certificate; the backend gets plaintext."""
    async with scene(tmp_path) as s:
        plain = await s.echo("plain")
        gw = await s.gateway(
            f"""
tcp:
  routers:
    term:
      rule: "HostSNI(`term.test`)"
      service: plain
      tls: {{}}
  services:
    plain: {lb(plain.port)}
"""
            + certificates(s.cert("term.test"))
        )
        payload = random.Random(7).randbytes(256 * 1024)
        ctx = client_context(s.ca)
        assert await talk(gw.port("tcp"), payload, tls=ctx, server_name="term.test") == "plain"
        assert plain.received == payload


async def test_client_closing_right_after_the_handshake_ends_its_relay(tmp_path: Path) -> None:
    """Handshake then close, while the server is being dialled: each relay ends and is logged."""
    async with scene(tmp_path) as s:
        plain = await s.echo("plain")
        gw = await s.gateway(
            f"""
tcp:
  routers:
    term:
      rule: "HostSNI(`term.test`)"
      service: plain
      tls: {{}}
  services:
    plain: {lb(plain.port)}
"""
            + certificates(s.cert("term.test"))
        )
        ctx = client_context(s.ca)

        def handshake_then_close() -> None:
            # A blocking client in a thread closes as soon as its handshake is
            # done, while the gateway is still dialling the server.
            with socket.create_connection(("127.0.0.1", gw.port("tcp"))) as raw:
                ctx.wrap_socket(raw, server_hostname="term.test").close()

        for _ in range(10):
            await asyncio.to_thread(handshake_then_close)
        relays = gw.gateway.listeners["tcp"].tcp.relays
        await poll(lambda: not relays, lambda: f"{len(relays)} relays never ended")
        await until_metric(s.metrics, "sluice_open_connections", 0, entrypoint="tcp")
        assert s.access is not None
        access = s.access
        await poll(lambda: len(access.lines()) == 10, lambda: f"access log: {access.lines()}")


async def test_tcp_and_http_routers_share_an_entry_point(tmp_path: Path) -> None:
    """TLS for the TCP router's name goes to its backend; another name reaches the HTTP router."""
    async with scene(tmp_path) as s:
        db = await s.echo("db", s.cert("db.test"))
        site = await RecordingBackend().start()
        s.stack.push_async_callback(site.close)
        gw = await s.gateway(
            f"""
http:
  routers:
    site:
      entryPoints: [web]
      rule: "Host(`web.test`)"
      service: site
      tls: {{}}
  services:
    site:
      loadBalancer:
        servers: [{{url: "{site.url}"}}]
tcp:
  routers:
    db:
      entryPoints: [web]
      rule: "HostSNI(`db.test`)"
      service: db
      {PASSTHROUGH}
  services:
    db: {lb(db.port)}
"""
            + certificates(s.cert("web.test")),
            static_text(tcp=("web",)),
        )
        port, ctx = gw.port("web"), client_context(s.ca)
        assert await talk(port, tls=ctx, server_name="db.test") == "db"
        assert db.server_names == ["db.test"]
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=ctx, server_hostname="web.test"
        )
        try:
            writer.write(get("web.test", "/over-https"))
            reply = await read_reply(reader)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()
        assert reply.status == 200
        assert [seen.target for seen in site.requests] == ["/over-https"]
        assert db.connections == 1
