"""TCP routing through a running gateway (issue #4): bulk, half-close, PROXY, reloads, failures.

Every test starts the real gateway on a ``127.0.0.1:0`` TCP entry point named
``tcp`` and real servers from ``gateway_support``; clients are real sockets,
some bound to 127.0.0.2 to be another client IP.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from pathlib import Path
from typing import cast

import pytest

from gateway.config.errors import ConfigError
from gateway.l4.proxy_protocol import encode_v1, encode_v2
from tests.backends import closed_port
from tests.l4.gateway_support import (
    Conn,
    NamedEcho,
    ProxyReceiver,
    SeenHeader,
    StreamServer,
    lb,
    parse_proxy,
    scene,
    static_text,
    talk,
    until_metric,
)

GIB = 1 << 30
BLOCK = random.Random(4).randbytes(1 << 20)


def chunk(index: int) -> bytes:
    """The index-th MiB of the test stream: a fixed random block stamped with its index."""
    return index.to_bytes(8, "big") + BLOCK[8:]


def echo_route(port: int, service: str = "") -> str:
    """One catch-all router on the ``tcp`` entry point to a server on ``port``."""
    return f"""
tcp:
  routers:
    echo:
      entryPoints: [tcp]
      rule: "HostSNI(`*`)"
      service: echo
  services:
    echo: {service or lb(port)}
"""


# --- bulk -----------------------------------------------------------------------------------


class BulkEcho(asyncio.Protocol):
    """Echoes with flow control (stops reading while its writes back up); hashes what it read."""

    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.received = 0
        self.eof = False
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.digest.update(data)
        self.received += len(data)
        self.transport.write(data)

    def pause_writing(self) -> None:
        assert self.transport is not None
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.eof:
            self.transport.resume_reading()

    def eof_received(self) -> bool:
        self.eof = True
        return False  # close, once what is buffered has been written: FIN after the echo

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)


class BulkClient(BulkEcho):
    """Streams ``chunk``s as fast as flow control allows, then FIN; hashes what comes back."""

    def __init__(self) -> None:
        super().__init__()
        self.writable = asyncio.Event()
        self.writable.set()

    def data_received(self, data: bytes) -> None:
        self.digest.update(data)
        self.received += len(data)

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def eof_received(self) -> bool:
        return False  # the echo ends only after our FIN: close

    async def send(self, size: int) -> str:
        assert self.transport is not None
        sent = hashlib.sha256()
        for index in range(size >> 20):
            await self.writable.wait()
            data = chunk(index)
            sent.update(data)
            self.transport.write(data)
        self.transport.write_eof()
        return sent.hexdigest()


async def test_gibibyte_each_way_arrives_intact(tmp_path: Path) -> None:
    """1 GiB up and the same 1 GiB echoed back through Sluice arrive intact (SHA-256)."""
    async with scene(tmp_path) as s:
        loop = asyncio.get_running_loop()
        echoes: list[BulkEcho] = []

        def accept() -> BulkEcho:
            echoes.append(BulkEcho())
            return echoes[-1]

        server = await loop.create_server(accept, "127.0.0.1", 0)
        s.stack.callback(server.close)
        gw = await s.gateway(echo_route(server.sockets[0].getsockname()[1]))
        async with asyncio.timeout(60):
            transport, client = await loop.create_connection(
                BulkClient, "127.0.0.1", gw.port("tcp")
            )
            s.stack.callback(transport.close)
            sent = await client.send(GIB)
            await client.lost
            await echoes[0].lost
        assert (echoes[0].received, client.received) == (GIB, GIB)
        assert echoes[0].digest.hexdigest() == sent, "client -> server bytes differ"
        assert client.digest.hexdigest() == sent, "server -> client bytes differ"


class ReplyAfterEOF(StreamServer):
    """Reads the request to EOF, then writes ``size`` bytes of the test stream and closes."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size
        self.request = bytearray()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            self.request += data
        for index in range(self.size >> 20):
            writer.write(chunk(index))
            await writer.drain()


async def test_half_close_still_delivers_the_whole_reply(tmp_path: Path) -> None:
    """A client's FIN reaches the server, and the server's long reply still arrives in full."""
    size = 32 << 20
    async with scene(tmp_path) as s:
        server = ReplyAfterEOF(size)
        gw = await s.gateway(echo_route(await s.serve(server)))
        conn = await Conn.open(gw.port("tcp"))
        conn.writer.write(BLOCK)
        conn.writer.write_eof()
        async with asyncio.timeout(30):
            reply = await conn.reader.read()
        await conn.close()
        assert server.request == BLOCK
        assert len(reply) == size
        assert reply == b"".join(chunk(i) for i in range(size >> 20))


# --- observability ------------------------------------------------------------------------


async def test_connection_is_counted_and_logged(tmp_path: Path) -> None:
    """A finished connection is counted with its bytes each way and logged as one tcp line."""
    async with scene(tmp_path) as s:
        echo = await s.echo("a")
        gw = await s.gateway(echo_route(echo.port))
        conn = await Conn.open(gw.port("tcp"))
        assert await conn.greet(b"x" * 1000) == "a"
        conn.writer.write_eof()
        assert await conn.reader.read() == b""
        await conn.close()
        labels = {"entrypoint": "tcp", "router": "echo@file", "service": "echo@file"}
        await until_metric(s.metrics, "sluice_tcp_connections_total", 1, **labels)
        await until_metric(s.metrics, "sluice_tcp_bytes_total", 1000, direction="in", **labels)
        await until_metric(s.metrics, "sluice_tcp_bytes_total", 1002, direction="out", **labels)
        line = await s.access.until(lambda line: line.get("Protocol") == "tcp")
        assert line["EntryPointName"] == "tcp"
        assert (line["RouterName"], line["ServiceName"]) == ("echo@file", "echo@file")
        assert line["ClientHost"] == "127.0.0.1"
        assert str(line["ClientPort"]) == str(conn.port)
        assert line["ClientAddr"] == f"127.0.0.1:{conn.port}"
        assert line["ServiceAddr"] == f"127.0.0.1:{echo.port}"
        assert (line["BytesIn"], line["BytesOut"]) == (1000, 1002)
        assert line["Reason"] == "closed"
        assert line["Duration"] >= 0 and line["StartUTC"]


# --- routing ------------------------------------------------------------------------------


async def test_client_ip_routes_by_source_address(tmp_path: Path) -> None:
    """ClientIP sends 127.0.0.1 and 127.0.0.2 to different servers and closes 127.0.0.3."""
    async with scene(tmp_path) as s:
        one, two = await s.echo("one"), await s.echo("two")
        gw = await s.gateway(f"""
tcp:
  routers:
    one:
      rule: "ClientIP(`127.0.0.1`)"
      service: one
    two:
      rule: "ClientIP(`127.0.0.2/32`)"
      service: two
  services:
    one: {lb(one.port)}
    two: {lb(two.port)}
""")
        port = gw.port("tcp")
        assert await talk(port, source="127.0.0.1") == "one"
        assert await talk(port, source="127.0.0.2") == "two"
        stray = await Conn.open(port, source="127.0.0.3")
        stray.writer.write(b"hello")
        assert await stray.closed(), "no router matches: the connection is closed"
        await stray.close()
        assert (one.connections, two.connections) == (1, 1)


# --- PROXY protocol -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        b"PROXY TCP4 192.0.2.1 127.0.0.1 40000 8000\r\n",
        encode_v1(("192.0.2.1", 40000), ("127.0.0.1", 8000)),
        b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c\xc0\x00\x02\x01\x7f\x00\x00\x01\x9c\x40\x1f\x40",
        encode_v2(("192.0.2.1", 40000), ("127.0.0.1", 8000)),
    ],
    ids=["v1-literal", "v1-encoded", "v2-literal", "v2-encoded"],
)
async def test_proxy_receiver_reads_headers_written_directly(tmp_path: Path, header: bytes) -> None:
    """The test's receiver parses a header written straight to it, a byte at a time."""
    assert parse_proxy(header[:5]) is None
    async with scene(tmp_path) as s:
        receiver = ProxyReceiver()
        conn = await Conn.open(await s.serve(receiver))
        for i in range(len(header)):
            conn.writer.write(header[i : i + 1])
            await conn.writer.drain()
        assert await conn.echo(b"payload") == b"payload"
        seen = await receiver.next_header()
        await conn.close()
    assert (seen.source, seen.destination) == (("192.0.2.1", 40000), ("127.0.0.1", 8000))
    assert seen.version == (1 if header.startswith(b"PROXY") else 2)


@pytest.mark.parametrize("version", [1, 2], ids=["v1", "v2"])
async def test_proxy_header_toward_servers(tmp_path: Path, version: int) -> None:
    """A proxyProtocol server reads the client's address and the entry point's, then the payload."""
    async with scene(tmp_path) as s:
        receiver = ProxyReceiver()
        port = await s.serve(receiver)
        servers = f'[{{address: "127.0.0.1:{port}"}}]'
        service = f"{{loadBalancer: {{servers: {servers}, proxyProtocol: {{version: {version}}}}}}}"
        gw = await s.gateway(echo_route(port, service))
        conn = await Conn.open(gw.port("tcp"))
        payload = random.Random(version).randbytes(100_000)
        assert await conn.echo(payload) == payload
        seen = await receiver.next_header()
        await conn.close()
        assert seen == SeenHeader(version, ("127.0.0.1", conn.port), ("127.0.0.1", gw.port("tcp")))
        assert receiver.payload == payload


async def test_entry_point_honours_proxy_headers_from_trusted_sources_only(tmp_path: Path) -> None:
    """A trusted client's claimed 203.0.113.7 routes by ClientIP and is sent on; others' is not."""
    async with scene(tmp_path) as s:
        claimed, direct = ProxyReceiver(), ProxyReceiver()
        await s.serve(claimed)
        await s.serve(direct)
        static = static_text(extra={"tcp": 'proxyProtocol: {trustedIPs: ["127.0.0.1/32"]}'})
        gw = await s.gateway(
            f"""
tcp:
  routers:
    doc:
      rule: "ClientIP(`203.0.113.0/24`)"
      service: doc
    direct:
      rule: "HostSNI(`*`)"
      service: direct
  services:
    doc:
      loadBalancer:
        servers: [{{address: "127.0.0.1:{claimed.port}"}}]
        proxyProtocol: {{version: 2}}
    direct:
      loadBalancer:
        servers: [{{address: "127.0.0.1:{direct.port}"}}]
        proxyProtocol: {{version: 1}}
""",
            static,
        )
        port = gw.port("tcp")
        header = f"PROXY TCP4 203.0.113.7 127.0.0.1 40000 {port}\r\n".encode()

        trusted = await Conn.open(port, source="127.0.0.1")
        trusted.writer.write(header)
        assert await trusted.echo(b"from afar") == b"from afar"
        assert await claimed.next_header() == SeenHeader(
            2, ("203.0.113.7", 40000), ("127.0.0.1", port)
        )
        await trusted.close()

        untrusted = await Conn.open(port, source="127.0.0.2")
        untrusted.writer.write(header + b"from near")
        untrusted.writer.write_eof()
        async with asyncio.timeout(10):
            echoed = await untrusted.reader.read()
        await untrusted.close()
        seen = await direct.next_header()
        assert seen.source == ("127.0.0.2", untrusted.port), "an untrusted header was honoured"
        # Whether the ignored header is stripped or passed on is not part of the contract.
        assert echoed.endswith(b"from near") and direct.payload.endswith(b"from near")
        assert claimed.connections == 1


# --- configuration changes and failures -------------------------------------------------------


async def test_reload_moves_new_connections_and_keeps_open_ones(tmp_path: Path) -> None:
    """After a reload new connections reach the new server; an open one stays on the old."""
    async with scene(tmp_path) as s:
        a, b = await s.echo("a"), await s.echo("b")
        gw = await s.gateway(echo_route(a.port))
        port = gw.port("tcp")
        old = await Conn.open(port)
        assert await old.greet() == "a"
        await gw.reload(echo_route(b.port))
        assert await talk(port) == "b"
        assert await old.echo(b"still flowing") == b"still flowing"
        assert a.received.endswith(b"still flowing")
        assert b.received == bytearray(b"hello")
        await old.close()


async def test_refusing_server_closes_the_client_until_it_comes_back(tmp_path: Path) -> None:
    """A refused dial closes the client (logged connect_failed); once the server is up, it works."""
    async with scene(tmp_path) as s:
        server_port = await closed_port()
        gw = await s.gateway(echo_route(server_port))
        conn = await Conn.open(gw.port("tcp"))
        conn.writer.write(b"hello")
        assert await conn.closed()
        await conn.close()
        line = await s.access.until(lambda line: line.get("Protocol") == "tcp")
        assert line["Reason"] == "connect_failed"
        await s.serve(NamedEcho("back"), server_port)
        assert await talk(gw.port("tcp")) == "back"


async def test_unknown_service_is_rejected_and_the_old_config_serves(tmp_path: Path) -> None:
    """A router naming an unknown service fails the reload with file, line and key path."""
    async with scene(tmp_path) as s:
        a = await s.echo("a")
        good = echo_route(a.port)
        gw = await s.gateway(good)
        bad = good.replace("      service: echo\n", "      service: nope\n")
        line = bad.splitlines().index("      service: nope") + 1
        errors = cast(list[ConfigError], await gw.reload(bad, expect_ok=False))
        text = str(errors[0])
        assert f"dynamic.yml:{line}: tcp.routers.echo@file.service: " in text, text
        assert '"nope@file"' in text, text
        assert await talk(gw.port("tcp")) == "a"
