"""Shared pieces of the L4 acceptance tests: real servers, clients and a running gateway.

``scene`` starts a real gateway (``tests.harness.start_gateway``) with a
static text from ``static_text``, Prometheus metrics with every label on and
a JSON access log, and stops it and every server it started at the end.
Servers are real sockets on 127.0.0.1: ``NamedEcho`` (plain or TLS) answers
its name once and then echoes, so a client learns which backend it reached
and that its bytes arrived intact; ``ProxyReceiver`` parses a PROXY v1/v2
header with the minimal parser below (independent of ``gateway.l4``) and
echoes the payload after it; ``UDPNamed`` answers each datagram with its
name and the datagram. Clients are ``Conn`` here and ``UDPClient`` from the
L4 middleware tests' relays. Tests wait on replies, closes and polled
counters, never on time alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import ssl
import struct
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from prometheus_client.parser import text_string_to_metric_families

from gateway.access_log import AccessLog
from gateway.config.static import AccessLog as AccessLogConfig
from gateway.config.static import Prometheus
from gateway.metrics import Metrics, create_metrics
from tests.certs import CA, make_ca
from tests.harness import RunningGateway, start_gateway
from tests.middleware.l4.relays import UDPClient

WAIT = 10.0
ALL_LABELS = Prometheus(
    add_entry_points_labels=True, add_routers_labels=True, add_services_labels=True
)
Cert = tuple[Path, Path]


def static_text(
    tcp: Sequence[str] = ("tcp",),
    udp: Sequence[str] = (),
    *,
    extra: Mapping[str, str] | None = None,
) -> str:
    """Entry points on 127.0.0.1 port 0 (``extra[name]``: more YAML lines for one)."""
    lines = ["entryPoints:"]
    for name, suffix in [(n, "") for n in tcp] + [(n, "/udp") for n in udp]:
        lines += [f"  {name}:", f'    address: "127.0.0.1:0{suffix}"']
        # Bounded, so a connection a failing test leaves open cannot stall the stop.
        lines.append("    transport: {lifeCycle: {graceTimeOut: 2s}}")
        lines += [f"    {line}" for line in (extra or {}).get(name, "").splitlines() if line]
    lines += ["providers:", "  file:", "    filename: dynamic.yml", ""]
    return "\n".join(lines)


def lb(*ports: int) -> str:
    """A load balancer over 127.0.0.1 servers, as one YAML flow mapping."""
    servers = ", ".join(f'{{address: "127.0.0.1:{p}"}}' for p in ports)
    return f"{{loadBalancer: {{servers: [{servers}]}}}}"


# --- metrics and access log -----------------------------------------------------------


def metric(metrics: Metrics, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    total = 0.0
    for family in text_string_to_metric_families(metrics.render()[0].decode()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


async def poll(done: Callable[[], bool], what: Callable[[], str]) -> None:
    """Re-check ``done`` every 10 ms for up to 5 s: for what the gateway records at a close."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while not done():
        assert loop.time() < deadline, what()
        await asyncio.sleep(0.01)


async def until_metric(metrics: Metrics, name: str, want: float, **labels: str) -> None:
    """Wait until ``metric(...) == want``."""
    await poll(
        lambda: metric(metrics, name, **labels) == want,
        lambda: f"{name}{labels} is {metric(metrics, name, **labels)}, want {want}",
    )


class JSONAccess:
    """A JSON access log written to a file the test reads back."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.log = AccessLog(AccessLogConfig(file_path=str(path), format="json"))

    def lines(self) -> list[dict[str, Any]]:
        self.log.flush()
        text = self.path.read_text() if self.path.exists() else ""
        return [json.loads(line) for line in text.splitlines()]

    async def until(self, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """Wait for a line ``predicate`` accepts (lines are written when a connection ends)."""
        await poll(
            lambda: any(predicate(line) for line in self.lines()),
            lambda: f"no such access log line in {self.lines()}",
        )
        return next(line for line in self.lines() if predicate(line))


# --- TCP and TLS servers and clients --------------------------------------------------------


class StreamServer(ABC):
    """An asyncio stream server that ends its handlers and connections on stop."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.tls = tls
        self.server: asyncio.Server | None = None
        self.port = 0
        self.connections = 0
        self.tasks: set[asyncio.Task[Any]] = set()
        self.writers: set[asyncio.StreamWriter] = set()

    async def start(self, port: int = 0) -> int:
        self.server = await asyncio.start_server(self._tracked, "127.0.0.1", port, ssl=self.tls)
        self.port = int(self.server.sockets[0].getsockname()[1])
        return self.port

    async def _tracked(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        self.writers.add(writer)
        self.connections += 1
        try:
            await self.handle(reader, writer)
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()
            self.writers.discard(writer)
            self.tasks.discard(task)

    @abstractmethod
    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one connection (subclasses say how)."""

    async def stop(self) -> None:
        if self.server is None:
            return
        self.server.close()
        for writer in list(self.writers):
            writer.close()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.server.wait_closed()


class NamedEcho(StreamServer):
    """Answers ``name\\n`` before echoing the first bytes, then echoes until EOF.

    With ``cert`` it is a TLS server that records each ClientHello's server
    name, so a test sees the hello reached it as the client sent it.
    """

    def __init__(self, name: str, cert: Cert | None = None) -> None:
        tls = None
        if cert is not None:
            tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            tls.load_cert_chain(*cert)
            tls.sni_callback = self._sni
        super().__init__(tls)
        self.name = name
        self.received = bytearray()
        self.server_names: list[str | None] = []

    def _sni(self, sslobj: Any, server_name: str | None, context: ssl.SSLContext) -> None:
        self.server_names.append(server_name)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        greeted = False
        while data := await reader.read(65536):
            self.received += data
            if not greeted:
                writer.write(f"{self.name}\n".encode())
                greeted = True
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()


class Conn:
    """One client connection (plain or TLS), from a chosen loopback source address."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.port: int = writer.get_extra_info("sockname")[1]

    @classmethod
    async def open(
        cls,
        port: int,
        *,
        source: str = "127.0.0.1",
        tls: ssl.SSLContext | None = None,
        server_name: str | None = None,
    ) -> Conn:
        async with asyncio.timeout(WAIT):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1",
                port,
                ssl=tls,
                server_hostname=server_name if tls is not None else None,
                local_addr=(source, 0),
            )
        return cls(reader, writer)

    async def greet(self, payload: bytes = b"hello") -> str:
        """Send the first bytes to a ``NamedEcho``; its name (after checking the echo)."""
        self.writer.write(payload)
        async with asyncio.timeout(WAIT):
            name = (await self.reader.readline()).decode("latin-1").rstrip("\n")
            echoed = await self.reader.readexactly(len(payload))
        assert echoed == payload, (name, echoed)
        return name

    async def echo(self, payload: bytes) -> bytes:
        self.writer.write(payload)
        async with asyncio.timeout(WAIT):
            return await self.reader.readexactly(len(payload))

    async def closed(self) -> bool:
        """Whether the peer closed (FIN or RST) without sending a byte; fails if it hangs."""
        try:
            async with asyncio.timeout(WAIT):
                return await self.reader.read(1) == b""
        except (ConnectionError, ssl.SSLError):
            return True

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await self.writer.wait_closed()


async def talk(port: int, payload: bytes = b"hello", **how: Any) -> str:
    """Open a connection, greet a ``NamedEcho`` through it, close; the name that answered."""
    conn = await Conn.open(port, **how)
    try:
        return await conn.greet(payload)
    finally:
        await conn.close()


# --- PROXY protocol ---------------------------------------------------------------------

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


@dataclass(frozen=True)
class SeenHeader:
    version: int
    source: tuple[str, int]
    destination: tuple[str, int]


def parse_proxy(data: bytes) -> tuple[SeenHeader, int] | None:
    """A PROXY v1/v2 (TCP, PROXY command) header at the start of ``data`` and its length.

    None while more bytes are needed; ``ValueError`` for anything else. Minimal
    on purpose, written from the HAProxy specification, not from ``gateway.l4``.
    """
    if data.startswith(b"PROXY "):
        end = data.find(b"\r\n")
        if end < 0:
            return None
        words = data[:end].decode("ascii").split(" ")
        if len(words) != 6 or words[1] not in ("TCP4", "TCP6"):
            raise ValueError(f"bad v1 line {data[:end]!r}")
        src, dst = (words[2], int(words[4])), (words[3], int(words[5]))
        return SeenHeader(1, src, dst), end + 2
    if data.startswith(V2_SIGNATURE):
        if len(data) < 16:
            return None
        length = struct.unpack("!H", data[14:16])[0]
        if len(data) < 16 + length:
            return None
        if data[12] != 0x21:  # version 2, PROXY command
            raise ValueError(f"v2 version/command byte {data[12]:#x}")
        size = {0x11: 4, 0x21: 16}.get(data[13])  # TCP over IPv4 or IPv6
        if size is None:
            raise ValueError(f"v2 family/protocol byte {data[13]:#x}")
        body = data[16 : 16 + length]
        src_ip = ipaddress.ip_address(body[:size])
        dst_ip = ipaddress.ip_address(body[size : 2 * size])
        sport, dport = struct.unpack("!HH", body[2 * size : 2 * size + 4])
        return SeenHeader(2, (str(src_ip), sport), (str(dst_ip), dport)), 16 + length
    if V2_SIGNATURE.startswith(data) or b"PROXY ".startswith(data):
        return None
    raise ValueError(f"no PROXY header: {data[:16]!r}")


class ProxyReceiver(StreamServer):
    """Expects a PROXY header first, records it, then echoes the payload until EOF."""

    def __init__(self) -> None:
        super().__init__()
        self.headers: asyncio.Queue[SeenHeader | ValueError] = asyncio.Queue()
        self.payload = bytearray()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buffer = b""
        try:
            while (parsed := parse_proxy(buffer)) is None:
                if not (data := await reader.read(65536)):
                    raise ValueError(f"EOF before a whole PROXY header: {buffer!r}")
                buffer += data
        except ValueError as exc:
            self.headers.put_nowait(exc)
            return
        header, length = parsed
        self.headers.put_nowait(header)
        rest = buffer[length:]
        while True:
            self.payload += rest
            writer.write(rest)
            await writer.drain()
            if not (rest := await reader.read(65536)):
                break
        writer.write_eof()

    async def next_header(self) -> SeenHeader:
        async with asyncio.timeout(WAIT):
            header = await self.headers.get()
        assert isinstance(header, SeenHeader), f"the receiver got no PROXY header: {header}"
        return header


# --- UDP ---------------------------------------------------------------------------------


class UDPNamed(asyncio.DatagramProtocol):
    """Answers each datagram with ``name|datagram``; keeps what came from whom."""

    def __init__(self, name: str) -> None:
        self.name = name.encode()
        self.received: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0

    async def start(self) -> UDPNamed:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, local_addr=("127.0.0.1", 0))
        assert self.transport is not None
        self.port = int(self.transport.get_extra_info("sockname")[1])
        return self

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Selector datagram transports do not subclass DatagramTransport on 3.11.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.received.append(data)
        assert self.transport is not None
        self.transport.sendto(self.name + b"|" + data, addr)

    def stop(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def ask(client: UDPClient, data: bytes) -> bytes:
    """Send one datagram; the next reply."""
    client.send(data)
    async with asyncio.timeout(WAIT):
        return await client.replies.get()


# --- the scene ---------------------------------------------------------------------------


@dataclass
class Scene:
    """Servers, a gateway, its metrics and access log; all stopped when the scene ends."""

    tmp_path: Path
    stack: contextlib.AsyncExitStack
    metrics: Metrics = field(default_factory=lambda: create_metrics(ALL_LABELS))
    access: JSONAccess = field(init=False)
    _ca: CA | None = None

    def __post_init__(self) -> None:
        self.access = JSONAccess(self.tmp_path / "access.json")
        self.stack.callback(self.access.log.close)

    @property
    def ca(self) -> CA:
        if self._ca is None:
            self._ca = make_ca(self.tmp_path)
        return self._ca

    def cert(self, *names: str) -> Cert:
        return self.ca.issue(self.tmp_path, list(names))

    async def serve(self, server: StreamServer, port: int = 0) -> int:
        await server.start(port)
        self.stack.push_async_callback(server.stop)
        return server.port

    async def echo(self, name: str, cert: Cert | None = None) -> NamedEcho:
        server = NamedEcho(name, cert)
        await self.serve(server)
        return server

    async def udp(self, name: str) -> UDPNamed:
        server = await UDPNamed(name).start()
        self.stack.callback(server.stop)
        return server

    async def udp_client(self, port: int, source: str = "127.0.0.1") -> UDPClient:
        """A UDP socket bound to ``source`` and connected to 127.0.0.1:``port``."""
        client = await UDPClient.open(port, source)
        self.stack.callback(client.close)
        return client

    async def gateway(self, dynamic: str, static: str | None = None) -> RunningGateway:
        gw = await start_gateway(
            self.tmp_path,
            dynamic,
            static=static if static is not None else static_text(),
            metrics=self.metrics,
            access_log=self.access.log,
        )
        self.stack.push_async_callback(gw.stop)
        return gw


@contextlib.asynccontextmanager
async def scene(tmp_path: Path) -> AsyncIterator[Scene]:
    async with contextlib.AsyncExitStack() as stack:
        yield Scene(tmp_path, stack)
