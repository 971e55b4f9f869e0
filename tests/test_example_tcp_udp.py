"""examples/tcp-udp serves what its README promises, checked over real sockets.

The example's own files are loaded, with only listening ports, backend
addresses, certificate paths and (where a test waits for them) timers
substituted. Backends are real servers on 127.0.0.1 (``tests.l4.gateway_support``):
TLS servers recording the server name of each ClientHello, a server that parses
the PROXY v2 header before echoing, a status port answering ``PING``, and UDP
resolvers answering with their name. Metrics come from the example's
``metrics.prometheus`` and the access log has its format (common), written to
a file the test reads back.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from gateway.access_log import AccessLog
from gateway.config.loader import parse_static
from gateway.metrics import Metrics, create_metrics
from tests.certs import make_ca
from tests.harness import RunningGateway, start_gateway
from tests.l4.gateway_support import (
    WAIT,
    Conn,
    NamedEcho,
    ProxyReceiver,
    SeenHeader,
    StreamServer,
    UDPNamed,
    metric,
    until_metric,
)

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "tcp-udp"
NAMES = ("nas", "vault", "wiki")

# One line of the access log in the example's (common) format; see gateway.l4.access_line.
L4_LINE = re.compile(
    r'(?P<client>\S+) - - \[[^\]]+\] "(?P<protocol>TCP|UDP) (?P<entry>\S+) (?P<sni>\S+)" '
    r"(?P<reason>\S+) (?P<bytes_in>\d+) (?P<bytes_out>\d+) "
    r'"(?P<router>[^"]*)" "(?P<server>[^"]*)" \d+ms'
)


def substitute(text: str, changes: dict[str, str]) -> str:
    """``text`` with each key replaced; a key the example no longer has fails the test."""
    for old, new in changes.items():
        assert old in text, f"the example no longer contains {old!r}"
        text = text.replace(old, new)
    return text


class Status(StreamServer):
    """The database's status port: ``PONG`` to ``PING`` while ``healthy``, else ``NOPE``."""

    def __init__(self) -> None:
        super().__init__()
        self.healthy = True
        self.pings: asyncio.Queue[bool] = asyncio.Queue()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if await reader.readline() == b"PING\r\n":
            writer.write(b"PONG\r\n" if self.healthy else b"NOPE\r\n")
            await writer.drain()
            self.pings.put_nowait(self.healthy)


class UDPClient(asyncio.DatagramProtocol):
    """A UDP client bound to a chosen loopback address; replies queue up with their sender."""

    def __init__(self) -> None:
        self.replies: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()
        self.transport: Any = None

    @classmethod
    async def open(cls, source: str) -> UDPClient:
        client = cls()
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: client, local_addr=(source, 0))
        return client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.replies.put_nowait((data, (str(addr[0]), int(addr[1]))))

    def send(self, port: int, payload: bytes) -> None:
        self.transport.sendto(payload, ("127.0.0.1", port))

    async def reply(self) -> tuple[bytes, tuple[str, int]]:
        async with asyncio.timeout(WAIT):
            return await self.replies.get()

    async def ask(self, port: int, payload: bytes) -> bytes:
        self.send(port, payload)
        data, sender = await self.reply()
        assert sender == ("127.0.0.1", port), "replies leave from the entry point's socket"
        return data

    def close(self) -> None:
        self.transport.close()


@dataclass
class Home:
    """The example running: its gateway, backends, certificates, metrics and access log."""

    gw: RunningGateway
    metrics: Metrics
    access: AccessLog
    access_path: Path
    backends: dict[str, NamedEcho]
    db: ProxyReceiver
    status: Status
    resolvers: dict[str, UDPNamed]
    ca: ssl.SSLContext
    certs: dict[str, bytes]  # DER of each name's certificate
    stack: contextlib.AsyncExitStack

    def tls_port(self) -> int:
        return self.gw.port("tls")

    def db_port(self) -> int:
        return self.gw.port("db")

    def dns_port(self) -> int:
        return self.gw.udp_port("dns")

    async def connect(self, port: int, **how: Any) -> Conn:
        conn = await Conn.open(port, **how)
        self.stack.push_async_callback(conn.close)
        return conn

    async def udp_client(self, source: str) -> UDPClient:
        client = await UDPClient.open(source)
        self.stack.callback(client.close)
        return client

    def lines(self) -> list[dict[str, str]]:
        self.access.flush()
        text = self.access_path.read_text() if self.access_path.exists() else ""
        found = [L4_LINE.fullmatch(line) for line in text.splitlines()]
        assert all(found), f"an access log line is not in the README's format:\n{text}"
        return [m.groupdict() for m in found if m is not None]

    async def line(self, **want: str) -> dict[str, str]:
        """The first access log line with the ``want`` fields (written when a connection ends)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT
        while not (found := [x for x in self.lines() if want.items() <= x.items()]):
            assert loop.time() < deadline, f"no such access log line in {self.lines()}"
            await asyncio.sleep(0.01)
        return found[0]


@contextlib.asynccontextmanager
async def home(
    tmp_path: Path,
    *,
    idle_timeout: str = "30m",
    udp_timeout: str = "10s",
    health_interval: str = "10s",
) -> AsyncIterator[Home]:
    """Start the example's backends and gateway; stop everything at the end."""
    async with contextlib.AsyncExitStack() as stack:
        authority = make_ca(tmp_path)
        certs = {name: authority.issue(tmp_path, [f"{name}.home.localhost"]) for name in NAMES}
        backends = {
            "nas": NamedEcho("nas", certs["nas"]),
            "vault": NamedEcho("vault", certs["vault"]),
            "wiki": NamedEcho("wiki"),  # plain: Sluice ends TLS in front of it
        }
        db, status = ProxyReceiver(), Status()
        for server in (*backends.values(), db, status):
            await server.start()
            stack.push_async_callback(server.stop)
        resolvers = {name: await UDPNamed(name).start() for name in ("home", "filtering")}
        for resolver in resolvers.values():
            stack.callback(resolver.stop)

        static = substitute(
            (EXAMPLE / "sluice.yml").read_text(),
            {
                '"127.0.0.1:8443"': '"127.0.0.1:0"',
                '"127.0.0.1:15432"': '"127.0.0.1:0"',
                '"127.0.0.1:5353/udp"': '"127.0.0.1:0/udp"',
                '"127.0.0.1:9000"': '"127.0.0.1:0"',
                "idleTimeout: 30m": f"idleTimeout: {idle_timeout}",
                "timeout: 10s": f"timeout: {udp_timeout}",
            },
        )
        dynamic = substitute(
            (EXAMPLE / "dynamic.yml").read_text(),
            {
                "127.0.0.1:9441": f"127.0.0.1:{backends['nas'].port}",
                "127.0.0.1:9442": f"127.0.0.1:{backends['vault'].port}",
                "127.0.0.1:8081": f"127.0.0.1:{backends['wiki'].port}",
                "127.0.0.1:5432": f"127.0.0.1:{db.port}",
                "port: 5433": f"port: {status.port}",
                "interval: 10s": f"interval: {health_interval}",
                "127.0.0.1:5301": f"127.0.0.1:{resolvers['home'].port}",
                "127.0.0.1:5302": f"127.0.0.1:{resolvers['filtering'].port}",
                "examples/tcp-udp/certs/wiki.pem": str(certs["wiki"][0]),
                "examples/tcp-udp/certs/wiki-key.pem": str(certs["wiki"][1]),
            },
        )
        config = parse_static(static, str(tmp_path / "sluice.yml"))
        assert config.metrics.prometheus is not None and config.access_log is not None
        metrics = create_metrics(config.metrics.prometheus)
        access_path = tmp_path / "access.log"
        access = AccessLog(dataclasses.replace(config.access_log, file_path=str(access_path)))
        stack.callback(access.close)
        gw = await start_gateway(
            tmp_path, dynamic, static=static, metrics=metrics, access_log=access
        )
        stack.push_async_callback(gw.stop)

        ca = ssl.create_default_context(cafile=str(authority.cert_path))
        der = {
            name: x509.load_pem_x509_certificate(pair[0].read_bytes()).public_bytes(Encoding.DER)
            for name, pair in certs.items()
        }
        yield Home(
            gw, metrics, access, access_path, backends, db, status, resolvers, ca, der, stack
        )


def peer_certificate(conn: Conn) -> bytes:
    ssl_object = conn.writer.get_extra_info("ssl_object")
    assert ssl_object is not None
    certificate: bytes = ssl_object.getpeercert(binary_form=True)
    return certificate


async def refused(conn: Conn) -> bool:
    """Whether the gateway closes ``conn`` without relaying (a write first, as a client would)."""
    conn.writer.write(b"hello")
    return await conn.closed()


# --- the TLS port ---------------------------------------------------------------------------


async def test_tls_port_passes_two_names_through_and_terminates_the_third(tmp_path: Path) -> None:
    """nas and vault reach their own TLS servers untouched; wiki's TLS ends at Sluice."""
    async with home(tmp_path) as h:
        for name in ("nas", "vault"):
            conn = await h.connect(h.tls_port(), tls=h.ca, server_name=f"{name}.home.localhost")
            # The backend's own certificate: Sluice holds none for this name.
            assert peer_certificate(conn) == h.certs[name]
            assert await conn.greet(b"over TLS, end to end") == name
            await conn.close()
            assert h.backends[name].server_names == [f"{name}.home.localhost"]

        conn = await h.connect(h.tls_port(), tls=h.ca, server_name="wiki.home.localhost")
        assert peer_certificate(conn) == h.certs["wiki"]  # from dynamic.yml's tls.certificates
        assert await conn.greet(b"GET / HTTP/1.0\r\n\r\n") == "wiki"
        await conn.close()
        assert bytes(h.backends["wiki"].received) == b"GET / HTTP/1.0\r\n\r\n"  # plaintext

        for name in NAMES:
            router = f"{name}@file"
            line = await h.line(router=router)
            assert line["protocol"] == "TCP" and line["entry"] == "tls"
            assert line["sni"] == f"{name}.home.localhost"
            assert line["server"] == f"127.0.0.1:{h.backends[name].port}"
            assert int(line["bytes_in"]) > 0 and int(line["bytes_out"]) > 0
            labels = {"entrypoint": "tls", "router": router, "service": f"{name}@file"}
            assert metric(h.metrics, "sluice_tcp_connections_total", **labels) == 1
            assert metric(h.metrics, "sluice_tcp_bytes_total", direction="in", **labels) > 0


async def test_tls_port_closes_connections_for_other_names(tmp_path: Path) -> None:
    """A server name no router matches gets its connection closed, no certificate sent."""
    async with home(tmp_path) as h:
        anything = ssl.create_default_context()
        anything.check_hostname = False
        anything.verify_mode = ssl.CERT_NONE
        try:
            conn = await h.connect(h.tls_port(), tls=anything, server_name="other.home.localhost")
        except (ssl.SSLError, ConnectionError):
            pass
        else:
            raise AssertionError(f"a handshake completed: {peer_certificate(conn)!r}")
        assert all(b.connections == 0 for b in h.backends.values())


# --- the database port ----------------------------------------------------------------------


async def test_db_port_sends_proxy_v2_and_admits_local_clients_only(tmp_path: Path) -> None:
    """127.0.0.1 reaches the database, which reads its address in a PROXY v2 header; .2 cannot."""
    async with home(tmp_path) as h:
        conn = await h.connect(h.db_port())
        assert await conn.echo(b"SELECT 1;\n") == b"SELECT 1;\n"
        header = await h.db.next_header()
        assert header == SeenHeader(2, ("127.0.0.1", conn.port), ("127.0.0.1", h.db_port()))
        await conn.close()
        line = await h.line(reason="closed")
        assert (line["client"], line["entry"], line["sni"]) == ("127.0.0.1", "db", "-")
        assert (line["bytes_in"], line["bytes_out"]) == ("10", "10")

        outsider = await h.connect(h.db_port(), source="127.0.0.2")
        assert await refused(outsider)
        line = await h.line(reason="rejected")
        assert (line["client"], line["router"], line["server"]) == ("127.0.0.2", "db@file", "")
        await until_metric(
            h.metrics,
            "sluice_l4_rejections_total",
            1,
            entrypoint="db",
            protocol="tcp",
            router="db@file",
            middleware="local-only@file",
            reason="not_allowed",
        )
        assert h.db.connections == 1  # the refused client never reached it


async def test_db_port_limits_each_client_to_two_connections(tmp_path: Path) -> None:
    """A client's third simultaneous connection is closed; after one ends, a new one is relayed."""
    async with home(tmp_path) as h:
        first, second = await h.connect(h.db_port()), await h.connect(h.db_port())
        for conn in (first, second):
            assert await conn.echo(b"ping\n") == b"ping\n"
        third = await h.connect(h.db_port())
        assert await refused(third)
        await until_metric(
            h.metrics,
            "sluice_l4_rejections_total",
            1,
            entrypoint="db",
            middleware="two-each@file",
            reason="too_many_connections",
        )
        await first.close()
        await h.line(reason="closed")
        again = await h.connect(h.db_port())
        assert await again.echo(b"ping\n") == b"ping\n"
        assert h.db.connections == 3


async def test_db_port_follows_the_health_check_on_the_status_port(tmp_path: Path) -> None:
    """PONG on the status port keeps the database in; a wrong answer takes it out until fixed."""
    async with home(tmp_path, health_interval="50ms") as h:
        async with asyncio.timeout(WAIT):
            assert await h.status.pings.get() is True
        conn = await h.connect(h.db_port())
        assert await conn.echo(b"up\n") == b"up\n"
        await conn.close()

        h.status.healthy = False
        await until_refused(h)
        h.status.healthy = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT
        while True:
            conn = await h.connect(h.db_port())
            conn.writer.write(b"back\n")
            try:
                async with asyncio.timeout(WAIT):
                    if await conn.reader.readexactly(5) == b"back\n":
                        break
            except (asyncio.IncompleteReadError, ConnectionError):
                assert loop.time() < deadline, "the database never came back"
                await asyncio.sleep(0.01)
        await conn.close()
        # Every connection the database saw came with a PROXY header: checks went elsewhere.
        assert h.db.headers.qsize() == h.db.connections


async def until_refused(h: Home) -> None:
    """Poll until the database port closes new connections (its server is down)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while True:
        conn = await h.connect(h.db_port())
        if await refused(conn):
            return
        assert loop.time() < deadline, "the failing health check never took the server out"
        await conn.close()
        await asyncio.sleep(0.01)


async def test_db_port_closes_connections_idle_for_idle_timeout(tmp_path: Path) -> None:
    """entryPoints.db.tcp.idleTimeout closes a connection silent both ways; the log says idle."""
    async with home(tmp_path, idle_timeout="200ms") as h:
        conn = await h.connect(h.db_port())
        assert await conn.echo(b"then silence\n") == b"then silence\n"
        assert await conn.closed()
        line = await h.line(router="db@file")
        assert line["reason"] == "idle"


# --- the DNS port ---------------------------------------------------------------------------


async def test_dns_port_routes_by_client_ip(tmp_path: Path) -> None:
    """127.0.0.2 is answered by the filtering resolver, other clients by the home one, at once."""
    async with home(tmp_path) as h:
        sources = ("127.0.0.1", "127.0.0.2", "127.0.0.3")
        clients = [await h.udp_client(source) for source in sources]
        answers = await asyncio.gather(
            *(c.ask(h.dns_port(), f"example.com? {i}".encode()) for i, c in enumerate(clients))
        )
        assert answers == [
            b"home|example.com? 0",
            b"filtering|example.com? 1",
            b"home|example.com? 2",
        ]
        for router, service, count in (
            ("dns@file", "home-resolver@file", 2),
            ("dns-kids@file", "filtering-resolver@file", 1),
        ):
            labels = {"entrypoint": "dns", "router": router, "service": service}
            assert metric(h.metrics, "sluice_udp_sessions_total", **labels) == count
        assert metric(h.metrics, "sluice_udp_open_sessions", entrypoint="dns") == 3


async def test_dns_port_rate_limits_each_client(tmp_path: Path) -> None:
    """100 datagrams at once from one client: the burst of 40 is answered, the rest dropped."""
    async with home(tmp_path) as h:
        flood, other = await h.udp_client("127.0.0.4"), await h.udp_client("127.0.0.5")
        for i in range(100):
            flood.send(h.dns_port(), b"q%d" % i)
        labels = {
            "entrypoint": "dns",
            "protocol": "udp",
            "router": "dns@file",
            "middleware": "dns-rate@file",
            "reason": "rate_limited",
        }
        answered = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT
        while answered + metric(h.metrics, "sluice_l4_rejections_total", **labels) < 100:
            assert loop.time() < deadline, f"{answered} answered, the rest not all counted"
            await asyncio.sleep(0.01)
            while not flood.replies.empty():
                flood.replies.get_nowait()
                answered += 1
        # 20 a second refill: the few milliseconds the burst takes may add one token.
        assert 40 <= answered <= 41
        # The limit is per client IP: another client is answered at once.
        assert await other.ask(h.dns_port(), b"me too") == b"home|me too"


async def test_dns_session_ends_after_udp_timeout_with_an_access_line(tmp_path: Path) -> None:
    """A session idle for udp.timeout ends; its line and datagram counters are written then."""
    async with home(tmp_path, udp_timeout="200ms") as h:
        client = await h.udp_client("127.0.0.2")
        assert await client.ask(h.dns_port(), b"example.com?") == b"filtering|example.com?"
        assert await client.ask(h.dns_port(), b"example.org?") == b"filtering|example.org?"
        line = await h.line(protocol="UDP")
        assert (line["client"], line["entry"], line["sni"], line["reason"]) == (
            "127.0.0.2",
            "dns",
            "-",
            "idle",
        )
        assert line["router"] == "dns-kids@file"
        assert line["server"] == f"127.0.0.1:{h.resolvers['filtering'].port}"
        assert (line["bytes_in"], line["bytes_out"]) == ("24", "44")
        labels = {"entrypoint": "dns", "router": "dns-kids@file"}
        assert metric(h.metrics, "sluice_udp_datagrams_total", direction="in", **labels) == 2
        assert metric(h.metrics, "sluice_udp_datagrams_total", direction="out", **labels) == 2
        assert metric(h.metrics, "sluice_udp_open_sessions", entrypoint="dns") == 0
