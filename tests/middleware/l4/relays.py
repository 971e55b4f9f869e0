"""Test-only relays: the smallest TCP and UDP proxies that run an L4 chain.

They stand in for the L4 runtime (issue #4) so the middleware contract is
proven with real connections and datagrams. ``TCPRelay`` accepts, builds a
``ConnectionInfo`` from the peer address, runs ``chain.admit``; a rejected
connection is closed before anything is dialled, an admitted one is piped
both ways to an ``EchoServer`` and released when both directions end.
``UDPRelay`` keeps one session (and one ``ConnectionInfo``) per client
address, runs ``chain.admit(info, size)`` per datagram and forwards admitted
ones to a ``UDPEchoServer`` through the session's own socket, sending the
replies back to the client. Every decision and release is put on a queue,
so tests wait on those instead of on time.
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from typing import Any, cast

from gateway.config.dynamic import DynamicConfig
from gateway.config.errors import ConfigError
from gateway.config.loader import parse_dynamic
from gateway.config.merge import merge
from middleware.l4.chains import ConnectionChain, DatagramChain
from middleware.l4.config import tcp_compiler, udp_compiler
from middleware.l4.contract import (
    ConnectionInfo,
    Rejection,
    TCPMiddlewareType,
    UDPMiddlewareType,
)
from middleware.l4.registry import L4Registry, load_tcp_registry, load_udp_registry

WAIT = 5.0


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
        if dst.can_write_eof():
            dst.write_eof()


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError, OSError):
        await writer.wait_closed()


class _Server(ABC):
    """An asyncio stream server that tracks its handler tasks, to end them on stop."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.port = 0
        self.tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._tracked, "127.0.0.1", 0)
        self.port = int(self.server.sockets[0].getsockname()[1])
        return self.port

    async def _tracked(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            await self.handle(reader, writer)
        finally:
            self.tasks.discard(task)

    @abstractmethod
    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one accepted connection."""

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.server.wait_closed()


class EchoServer(_Server):
    """Echoes every byte until EOF; counts the connections it accepted."""

    def __init__(self) -> None:
        super().__init__()
        self.connections = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await _pipe(reader, writer)
        finally:
            await _close(writer)


class TCPRelay(_Server):
    """Admit through ``chain``, then pipe to the echo server; release at the end."""

    def __init__(self, chain: ConnectionChain | None, upstream_port: int) -> None:
        super().__init__()
        self.chain = chain
        self.upstream_port = upstream_port
        self.decisions: asyncio.Queue[Rejection | None] = asyncio.Queue()
        self.released: asyncio.Queue[ConnectionInfo] = asyncio.Queue()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = writer.get_extra_info("peername")[:2]
        info = ConnectionInfo(
            protocol="tcp", client_ip=host, client_port=port, entry_point="l4", router="r@test"
        )
        rejection = self.chain.admit(info) if self.chain is not None else None
        self.decisions.put_nowait(rejection)
        if rejection is not None:
            await _close(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            try:
                await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            finally:
                await _close(up_writer)
        finally:
            await _close(writer)
            if self.chain is not None:
                self.chain.release(info)
            self.released.put_nowait(info)


class TCPClient:
    """One client connection to the relay, from a chosen loopback source address."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.port: int = writer.get_extra_info("sockname")[1]

    @classmethod
    async def open(cls, port: int, source: str = "127.0.0.1") -> TCPClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        return cls(reader, writer)

    async def echo(self, payload: bytes = b"ping") -> bytes:
        """Send ``payload`` and read back as many bytes (fewer at EOF)."""
        self.writer.write(payload)
        await self.writer.drain()
        async with asyncio.timeout(WAIT):
            return await self.reader.read(len(payload))

    async def closed_by_peer(self) -> bool:
        """Whether the relay closed the connection without sending anything."""
        try:
            async with asyncio.timeout(WAIT):
                return await self.reader.read(1) == b""
        except ConnectionResetError:
            return True

    async def close(self) -> None:
        await _close(self.writer)


async def next_item(queue: asyncio.Queue[Any]) -> Any:
    async with asyncio.timeout(WAIT):
        return await queue.get()


@contextlib.asynccontextmanager
async def tcp_relay(chain: ConnectionChain | None) -> AsyncIterator[tuple[TCPRelay, EchoServer]]:
    """An echo server and a relay in front of it running ``chain``."""
    echo = EchoServer()
    upstream = await echo.start()
    relay = TCPRelay(chain, upstream)
    await relay.start()
    try:
        yield relay, echo
    finally:
        await relay.stop()
        await echo.stop()


# --- UDP ----------------------------------------------------------------------


class UDPEchoServer(asyncio.DatagramProtocol):
    """Sends every datagram back to its sender; keeps what it received."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Selector datagram transports do not subclass DatagramTransport on 3.11.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.received.append(data)
        assert self.transport is not None
        self.transport.sendto(data, addr)


class _Session(asyncio.DatagramProtocol):
    """One client address: its ConnectionInfo and its socket towards the server."""

    def __init__(self, relay: UDPRelay, client: tuple[str, int]) -> None:
        self.relay = relay
        self.client = client
        self.info = ConnectionInfo(
            protocol="udp",
            client_ip=client[0],
            client_port=client[1],
            entry_point="l4udp",
            router="r@test",
        )
        self.transport: asyncio.DatagramTransport | None = None
        self.pending: list[bytes] = []

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(
            lambda: self, remote_addr=("127.0.0.1", self.relay.upstream_port)
        )
        assert self.transport is not None
        pending, self.pending = self.pending, []
        for data in pending:
            self.transport.sendto(data)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Selector datagram transports do not subclass DatagramTransport on 3.11.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def send(self, data: bytes) -> None:
        # Queue until open() has flushed what came first, to keep the order.
        if self.transport is None or self.pending:
            self.pending.append(data)
        else:
            self.transport.sendto(data)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        assert self.relay.transport is not None
        self.relay.transport.sendto(data, self.client)


class UDPRelay(asyncio.DatagramProtocol):
    """Admit each datagram through ``chain``; forward per client session."""

    def __init__(self, chain: DatagramChain | None, upstream_port: int) -> None:
        self.chain = chain
        self.upstream_port = upstream_port
        self.sessions: dict[tuple[str, int], _Session] = {}
        self.decisions: asyncio.Queue[Rejection | None] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None
        self.opening: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Selector datagram transports do not subclass DatagramTransport on 3.11.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        client = (str(addr[0]), int(addr[1]))
        session = self.sessions.get(client)
        if session is None:
            session = self.sessions[client] = _Session(self, client)
            task = asyncio.get_running_loop().create_task(session.open())
            self.opening.add(task)
            task.add_done_callback(self.opening.discard)
        rejection = self.chain.admit(session.info, len(data)) if self.chain is not None else None
        self.decisions.put_nowait(rejection)
        if rejection is None:
            session.send(data)

    async def close(self) -> None:
        await asyncio.gather(*self.opening, return_exceptions=True)
        for session in self.sessions.values():
            if session.transport is not None:
                session.transport.close()
        assert self.transport is not None
        self.transport.close()


class UDPClient(asyncio.DatagramProtocol):
    """A client socket bound to a chosen loopback source; replies land on a queue."""

    def __init__(self) -> None:
        self.replies: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    @classmethod
    async def open(cls, port: int, source: str = "127.0.0.1") -> UDPClient:
        client = cls()
        await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: client, local_addr=(source, 0), remote_addr=("127.0.0.1", port)
        )
        return client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Selector datagram transports do not subclass DatagramTransport on 3.11.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.replies.put_nowait(data)

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.sendto(data)

    def close(self) -> None:
        assert self.transport is not None
        self.transport.close()


@contextlib.asynccontextmanager
async def udp_relay(chain: DatagramChain | None) -> AsyncIterator[tuple[UDPRelay, UDPEchoServer]]:
    """A UDP echo server and a relay in front of it running ``chain``."""
    loop = asyncio.get_running_loop()
    echo = UDPEchoServer()
    echo_transport, _ = await loop.create_datagram_endpoint(
        lambda: echo, local_addr=("127.0.0.1", 0)
    )
    relay = UDPRelay(chain, echo_transport.get_extra_info("sockname")[1])
    await loop.create_datagram_endpoint(lambda: relay, local_addr=("127.0.0.1", 0))
    try:
        yield relay, echo
    finally:
        await relay.close()
        echo_transport.close()


def udp_port(relay: UDPRelay) -> int:
    assert relay.transport is not None
    return int(relay.transport.get_extra_info("sockname")[1])


# --- configuration --------------------------------------------------------------


def load(text: str, file: str = "dynamic.yml") -> DynamicConfig:
    """``text`` as the file provider would serve it: parsed, names qualified ``@file``."""
    return merge({"file": parse_dynamic(text, file)})


def tcp_chain(
    text: str, *names: str, registry: L4Registry[TCPMiddlewareType] | None = None
) -> ConnectionChain:
    """The TCP chain for ``names`` (bare; qualified here) in the configuration ``text``."""
    compiler = tcp_compiler(
        load(text), registry=registry if registry is not None else load_tcp_registry(plugins=False)
    )
    compiler.validate_all()
    chain = compiler.chain([f"{n}@file" for n in names])
    assert chain is not None
    return chain


def udp_chain(
    text: str, *names: str, registry: L4Registry[UDPMiddlewareType] | None = None
) -> DatagramChain:
    """The UDP chain for ``names`` (bare; qualified here) in the configuration ``text``."""
    compiler = udp_compiler(
        load(text), registry=registry if registry is not None else load_udp_registry(plugins=False)
    )
    compiler.validate_all()
    chain = compiler.chain([f"{n}@file" for n in names])
    assert chain is not None
    return chain


def reload_error(text: str, protocol: str = "tcp") -> str:
    """The message a reload of ``text`` fails with."""
    try:
        config = load(text)
        compiler = (
            tcp_compiler(config, registry=load_tcp_registry(plugins=False))
            if protocol == "tcp"
            else udp_compiler(config, registry=load_udp_registry(plugins=False))
        )
        compiler.validate_all()
    except ConfigError as exc:
        return str(exc)
    raise AssertionError("configuration was accepted")
