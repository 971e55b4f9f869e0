"""Tests for gateway.l4.relay: bulk bytes, half-close, backpressure, timeouts and teardown.

Everything runs over real sockets on 127.0.0.1, on both asyncio's loop and
uvloop (the gateway's). ``Gateway`` stands in for the TCP entry point: it
accepts, reads ``peek`` bytes with its own protocol, then hands the
connection to ``start_relay`` with those bytes. Servers and clients are
protocols written here; tests wait on their events and on ``on_done``.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import socket
import struct
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
import uvloop

from gateway.l4.proxy_protocol import ProxyHeader, decode, encode_v2
from gateway.l4.relay import Relay, RelaySettings, start_relay

Runner = Callable[..., None]
WAIT = 20.0
BLOCK = random.Random(4).randbytes(1 << 20)
HIGH = 64 * 1024
READ_MAX = 256 * 1024  # the most one read hands to data_received (asyncio and uvloop)


@pytest.fixture(params=[asyncio.run, uvloop.run], ids=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Runner:
    """Run a scenario on the parametrised loop, failing it after ``timeout`` seconds."""

    def runner(scenario: Coroutine[Any, Any, None], timeout: float = WAIT) -> None:
        async def bounded() -> None:
            async with asyncio.timeout(timeout):
                await scenario

        request.param(bounded())

    return runner


def chunk(index: int) -> bytes:
    """The index-th MiB of the test stream: a fixed random block stamped with a counter."""
    return index.to_bytes(8, "big") + BLOCK[8:]


def stream_digest(size: int) -> str:
    digest = hashlib.sha256()
    for index in range(size >> 20):
        digest.update(chunk(index))
    return digest.hexdigest()


class Peer(asyncio.Protocol):
    """A scriptable connection end: records what it reads, writes with flow control.

    It closes once it has both sent and received FIN, as a socket user would.
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.digest = hashlib.sha256()
        self.received = 0
        self.head = bytearray()  # the first bytes read, for inspection
        self.data = asyncio.Event()
        self.eof = asyncio.Event()
        self.lost: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()
        self.paused = asyncio.Event()
        self.writable = asyncio.Event()
        self.writable.set()
        self.echo = False
        self.wrote_eof = False
        self.before_write: Callable[[], None] | None = None
        self.on_made: Callable[[Peer], None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self.on_made is not None:
            self.on_made(self)

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        self.digest.update(data)
        if len(self.head) < 4096:
            self.head += data[: 4096 - len(self.head)]
        self.data.set()
        if self.echo:
            self.write(data)

    def eof_received(self) -> bool:
        self.eof.set()
        if self.echo:
            self.write_eof()
        return not self.wrote_eof

    def pause_writing(self) -> None:
        self.writable.clear()
        self.paused.set()
        if self.echo:  # an echo server reads only as fast as it can write back
            assert self.transport is not None
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.writable.set()
        if self.echo and self.transport is not None and not self.eof.is_set():
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof.set()
        if not self.lost.done():
            self.lost.set_result(exc)

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        if self.before_write is not None:
            self.before_write()
        self.transport.write(data)

    def write_eof(self) -> None:
        assert self.transport is not None
        self.wrote_eof = True
        self.transport.write_eof()
        if self.eof.is_set():
            self.transport.close()

    async def send_stream(self, size: int, sent: Any = None) -> None:
        """Write ``size`` bytes of the test stream as fast as flow control allows, then FIN."""
        for index in range(size >> 20):
            await self.writable.wait()
            data = chunk(index)
            if sent is not None:
                sent.update(data)
            self.write(data)
        self.write_eof()


class Server:
    """A listener whose connections are ``Peer``s made by ``factory``; aborts them on exit.

    ``peers`` yields each one once it is connected.
    """

    def __init__(self, factory: Callable[[], Peer] = Peer, sockbuf: int = 0) -> None:
        self.factory = factory
        self.sockbuf = sockbuf
        self.peers: asyncio.Queue[Peer] = asyncio.Queue()
        self.made: list[Peer] = []
        self.server: asyncio.Server | None = None
        self.address = ("", 0)

    def _make(self) -> Peer:
        peer = self.factory()
        peer.on_made = self.peers.put_nowait
        self.made.append(peer)
        return peer

    async def __aenter__(self) -> Server:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(self._make, sock=listener(self.sockbuf))
        self.address = ("127.0.0.1", self.server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await _abort_all(self.made)
        await self.server.wait_closed()


async def _abort_all(peers: list[Peer]) -> None:
    for peer in peers:
        if peer.transport is not None and not peer.lost.done():
            peer.transport.abort()
    pending = [peer.lost for peer in peers if peer.transport is not None]
    if pending:
        await asyncio.wait(pending, timeout=5)


def echo_peer() -> Peer:
    peer = Peer()
    peer.echo = True
    return peer


@dataclass
class Gateway:
    """The stand-in TCP entry point: peek ``peek`` bytes, then hand over to the relay."""

    upstream: tuple[str, int]
    peek: int = 0
    settings: RelaySettings = field(default_factory=lambda: RelaySettings(write_buffer_high=HIGH))
    proxy_header: Callable[[asyncio.Transport], bytes] | None = None
    relays: asyncio.Queue[Relay] = field(default_factory=asyncio.Queue)
    done: asyncio.Queue[Relay] = field(default_factory=asyncio.Queue)
    started: list[Relay] = field(default_factory=list)
    finished: list[Relay] = field(default_factory=list)
    clients: list[Peer] = field(default_factory=list)
    all_done: asyncio.Event = field(default_factory=asyncio.Event)
    server: asyncio.Server | None = None
    address: tuple[str, int] = ("", 0)
    sockbuf: int = 0  # SO_SNDBUF/SO_RCVBUF of client and accepted sockets, if set

    def _on_done(self, relay: Relay) -> None:
        self.finished.append(relay)
        self.done.put_nowait(relay)
        if len(self.finished) == len(self.started):
            self.all_done.set()

    def hand_over(self, transport: asyncio.Transport, data: bytes, eof: bool) -> None:
        header = self.proxy_header(transport) if self.proxy_header else b""
        self.all_done.clear()
        relay = start_relay(
            transport,
            self.upstream,
            initial_data=data,
            client_eof=eof,
            proxy_header=header,
            settings=self.settings,
            on_done=self._on_done,
        )
        self.started.append(relay)
        self.relays.put_nowait(relay)

    async def connect(self) -> Peer:
        loop = asyncio.get_running_loop()
        sock = small_buffers(socket.socket(), self.sockbuf)
        sock.setblocking(False)
        await loop.sock_connect(sock, self.address)
        _, peer = await loop.create_connection(Peer, sock=sock)
        self.clients.append(peer)
        return peer

    async def __aenter__(self) -> Gateway:
        gateway = self

        class Peeking(asyncio.Protocol):
            def __init__(self) -> None:
                self.buffer = b""
                self.transport: asyncio.Transport | None = None

            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = cast(asyncio.Transport, transport)
                if gateway.peek == 0:
                    gateway.hand_over(self.transport, b"", False)

            def data_received(self, data: bytes) -> None:
                self.buffer += data
                if len(self.buffer) >= gateway.peek:
                    assert self.transport is not None
                    gateway.hand_over(self.transport, self.buffer, False)

            def eof_received(self) -> bool:
                assert self.transport is not None
                gateway.hand_over(self.transport, self.buffer, True)
                return True

        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(Peeking, sock=listener(self.sockbuf))
        self.address = ("127.0.0.1", self.server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for relay in self.started:
            relay.close()
        await _abort_all(self.clients)
        if self.started:
            await asyncio.wait_for(self.all_done.wait(), 5)
        assert len(self.finished) == len(self.started)  # on_done ran once per relay
        await self.server.wait_closed()


def small_buffers(sock: socket.socket, size: int) -> socket.socket:
    """Fixed, small kernel buffers (no autotuning), so a stalled reader stalls the writer soon."""
    if size:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    return sock


def listener(sockbuf: int) -> socket.socket:
    """A listening socket on 127.0.0.1; accepted sockets inherit its buffer sizes."""
    sock = small_buffers(socket.socket(), sockbuf)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock


async def until(predicate: Callable[[], bool], what: str) -> None:
    """Poll for a condition no event announces (a transport's reading state), up to 10 s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while not predicate():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.001)


def free_port() -> int:
    """A port nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def reset(transport: asyncio.Transport | None) -> None:
    """Close with RST."""
    assert transport is not None
    sock = transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


# --- bulk ---------------------------------------------------------------------------------

GIB = 1 << 30


def test_relays_a_gibibyte_each_way_at_once(run: Runner) -> None:
    """1 GiB up and 1 GiB down concurrently arrive intact (SHA-256), and the relay ends closed."""

    async def scenario() -> None:
        async with Server(echo_peer) as backend, Gateway(backend.address) as gateway:
            client = await gateway.connect()
            sent = hashlib.sha256()
            await client.send_stream(GIB, sent)
            server_peer = await backend.peers.get()
            relay = await gateway.done.get()
            await client.lost
            assert relay.reason == "closed", relay.error
            assert server_peer.received == client.received == GIB
            assert server_peer.digest.hexdigest() == sent.hexdigest()
            assert client.digest.hexdigest() == sent.hexdigest()
            assert relay.bytes_from_client == relay.bytes_from_upstream == GIB

    run(scenario(), timeout=300)


# --- half-close ---------------------------------------------------------------------------


def test_client_half_close_still_gets_the_whole_reply(run: Runner) -> None:
    """A client that shuts down writing after its request still reads the server's long reply."""
    size = 32 << 20

    class Replier(Peer):
        def eof_received(self) -> bool:
            super().eof_received()
            asyncio.get_running_loop().create_task(self.send_stream(size))
            return True

    async def scenario() -> None:
        async with Server(Replier) as backend, Gateway(backend.address, peek=5) as gateway:
            client = await gateway.connect()
            assert client.transport is not None
            client.transport.write(b"hello, server")
            client.write_eof()
            await client.eof.wait()
            relay = await gateway.done.get()
            server_peer = await backend.peers.get()
            assert bytes(server_peer.head) == b"hello, server"
            assert client.received == size
            assert client.digest.hexdigest() == stream_digest(size)
            assert relay.reason == "closed"
            assert relay.bytes_from_client == 13

    run(scenario())


def test_server_half_close_still_gets_the_whole_upload(run: Runner) -> None:
    """A server that sends a banner and shuts down writing still reads the client's long upload."""
    size = 32 << 20

    class Banner(Peer):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            assert self.transport is not None
            self.transport.write(b"220 ready\r\n")
            self.transport.write_eof()

    async def scenario() -> None:
        async with Server(Banner) as backend, Gateway(backend.address) as gateway:
            client = await gateway.connect()
            await client.eof.wait()  # the banner's FIN reached the client
            assert bytes(client.head) == b"220 ready\r\n"
            await client.send_stream(size)
            relay = await gateway.done.get()
            server_peer = await backend.peers.get()
            await server_peer.eof.wait()
            assert server_peer.received == size
            assert server_peer.digest.hexdigest() == stream_digest(size)
            assert relay.reason == "closed"

    run(scenario())


def test_eof_seen_while_peeking_is_passed_on(run: Runner) -> None:
    """A client that sent its bytes and FIN before the hand-over has both reach the server."""

    async def scenario() -> None:
        async with Server(echo_peer) as backend, Gateway(backend.address, peek=100) as gateway:
            client = await gateway.connect()
            assert client.transport is not None
            client.transport.write(b"short")
            client.write_eof()
            await client.lost
            relay = await gateway.done.get()
            assert bytes(client.head) == b"short"
            assert relay.reason == "closed"

    run(scenario())


# --- backpressure -------------------------------------------------------------------------


@pytest.mark.parametrize("slow", ["client", "server"])
def test_slow_reader_pauses_the_writer_with_bounded_buffers(run: Runner, slow: str) -> None:
    """A reader that stops reading stops the relay reading the writer; buffers stay bounded.

    The test's own sockets get small fixed kernel buffers; the relay's socket
    to the server keeps Linux's autotuning (up to 32 MiB of receive buffer
    here), so 64 MiB is more than the whole path can hold.
    """
    size = 64 << 20
    bound = HIGH + READ_MAX
    sockbuf = 64 * 1024

    async def scenario() -> None:
        async with (
            Server(sockbuf=sockbuf) as backend,
            Gateway(backend.address, sockbuf=sockbuf) as gateway,
        ):
            client = await gateway.connect()
            server_peer = await backend.peers.get()
            relay = await gateway.relays.get()
            reader, writer = (client, server_peer) if slow == "client" else (server_peer, client)
            assert reader.transport is not None and writer.transport is not None
            reader.transport.pause_reading()
            # The relay's buffer towards the stalled reader, and the side it reads from.
            if slow == "client":
                buffered, source = relay.client_transport, relay.upstream_transport
            else:
                buffered, source = relay.upstream_transport, relay.client_transport
            assert buffered is not None and source is not None
            seen: list[int] = []
            writer.before_write = lambda: seen.append(buffered.get_write_buffer_size())
            sending = asyncio.create_task(writer.send_stream(size))
            await until(lambda: not source.is_reading(), "the relay to stop reading the writer")
            await until(lambda: not writer.writable.is_set(), "the writer to be paused")
            assert not sending.done()
            assert buffered.get_write_buffer_size() <= bound
            reader.transport.resume_reading()
            await sending
            await reader.eof.wait()
            assert reader.received == size
            assert reader.digest.hexdigest() == stream_digest(size)
            assert max(seen) <= bound

    run(scenario())


# --- timeouts -----------------------------------------------------------------------------


def test_idle_relay_is_closed_on_both_sides(run: Runner) -> None:
    """No byte either way for idle_timeout closes both connections with reason idle."""

    async def scenario() -> None:
        settings = RelaySettings(idle_timeout=0.3)
        async with (
            Server(echo_peer) as backend,
            Gateway(backend.address, settings=settings) as gateway,
        ):
            client = await gateway.connect()
            assert client.transport is not None
            client.transport.write(b"ping")
            server_peer = await backend.peers.get()
            relay = await gateway.done.get()
            await client.eof.wait()
            await server_peer.eof.wait()
            assert bytes(client.head) == b"ping"
            assert relay.reason == "idle"
            assert relay.duration >= 0.3

    run(scenario())


def test_traffic_postpones_the_idle_timeout(run: Runner) -> None:
    """A relay with a byte every 50 ms outlives an idle timeout of 1 s twice over."""

    async def scenario() -> None:
        settings = RelaySettings(idle_timeout=1.0)
        async with (
            Server(echo_peer) as backend,
            Gateway(backend.address, settings=settings) as gateway,
        ):
            client = await gateway.connect()
            assert client.transport is not None
            for _ in range(40):  # 2 s of traffic; the sleep paces, it does not synchronise
                client.transport.write(b".")
                await asyncio.sleep(0.05)
            assert gateway.done.empty()
            relay = await gateway.done.get()
            assert relay.reason == "idle"
            assert relay.duration >= 2.0
            assert client.received == 40

    run(scenario())


def test_termination_delay_cuts_both_after_the_first_fin(run: Runner) -> None:
    """With termination_delay, a half-closed relay is cut that long after the first FIN."""

    async def scenario() -> None:
        settings = RelaySettings(termination_delay=0.2)
        async with Server() as backend, Gateway(backend.address, settings=settings) as gateway:
            client = await gateway.connect()
            assert client.transport is not None
            client.write_eof()
            server_peer = await backend.peers.get()
            await server_peer.eof.wait()
            relay = await gateway.done.get()
            await client.eof.wait()
            assert relay.reason == "terminated"

    run(scenario())


# --- failures -----------------------------------------------------------------------------


def test_refused_upstream_closes_the_client(run: Runner) -> None:
    """A server that refuses the connection gets the client closed and on_done connect_failed."""

    async def scenario() -> None:
        async with Gateway(("127.0.0.1", free_port()), peek=3) as gateway:
            client = await gateway.connect()
            assert client.transport is not None
            client.transport.write(b"abc")
            relay = await gateway.done.get()
            await client.eof.wait()
            assert relay.reason == "connect_failed"
            assert relay.side == "upstream"
            assert isinstance(relay.error, ConnectionRefusedError)
            assert client.received == 0

    run(scenario())


def test_dial_timeout_closes_the_client(run: Runner) -> None:
    """A server that never answers the SYN (its accept queue is full) times out the dial."""

    async def scenario() -> None:
        with socket.socket() as full, socket.socket() as filler:
            full.bind(("127.0.0.1", 0))
            full.listen(0)  # one pending connection fills it; later SYNs are dropped
            filler.connect(full.getsockname())
            settings = RelaySettings(connect_timeout=0.2)
            async with Gateway(full.getsockname(), peek=1, settings=settings) as gateway:
                client = await gateway.connect()
                assert client.transport is not None
                client.transport.write(b"x")
                relay = await gateway.done.get()
                await client.eof.wait()
                assert relay.reason == "connect_failed"
                assert isinstance(relay.error, TimeoutError)
                assert relay.duration >= 0.2

    run(scenario())


@pytest.mark.parametrize("resetting", ["upstream", "client"])
def test_reset_on_one_side_resets_the_other(run: Runner, resetting: str) -> None:
    """A reset on one side aborts the other with a reset, reported with the side."""

    async def scenario() -> None:
        async with Server() as backend, Gateway(backend.address, peek=4) as gateway:
            client = await gateway.connect()
            assert client.transport is not None
            client.transport.write(b"data")
            server_peer = await backend.peers.get()
            await server_peer.data.wait()  # the relay is up both ways
            victim, other = (
                (server_peer, client) if resetting == "upstream" else (client, server_peer)
            )
            reset(victim.transport)
            exc = await other.lost
            relay = await gateway.done.get()
            assert relay.reason == "reset"
            assert relay.side == resetting
            assert isinstance(exc, ConnectionResetError)

    run(scenario())


def test_close_ends_a_running_relay(run: Runner) -> None:
    """Relay.close() aborts both connections and reports shutdown once."""

    async def scenario() -> None:
        async with Server() as backend, Gateway(backend.address) as gateway:
            client = await gateway.connect()
            server_peer = await backend.peers.get()
            relay = await gateway.relays.get()
            relay.close()
            relay.close()
            await client.eof.wait()
            await server_peer.eof.wait()
            done = await gateway.done.get()
            assert done is relay and relay.reason == "shutdown"
            assert gateway.done.empty()

    run(scenario())


def test_handing_over_a_closed_connection_reports_it(run: Runner) -> None:
    """A client gone before the hand-over is reported closed, and no server is dialled."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Relay] = loop.create_future()

        class Closing(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                cast(asyncio.Transport, transport).abort()
                start_relay(transport, backend.address, on_done=done.set_result)

        async with Server() as backend:
            server = await loop.create_server(Closing, "127.0.0.1", 0)
            with socket.socket() as client:
                client.setblocking(False)
                await loop.sock_connect(client, server.sockets[0].getsockname())
                relay = await done
            server.close()
            await server.wait_closed()
            assert relay.reason == "closed"
            assert relay.upstream_transport is None
            assert backend.peers.empty()

    run(scenario())


# --- PROXY protocol -----------------------------------------------------------------------


@pytest.mark.parametrize("peek", [0, 5], ids=["no-peek", "peek-5"])
def test_proxy_header_reaches_the_server_first(run: Runner, peek: int) -> None:
    """The PROXY header arrives first, then the peeked bytes, then the rest, in order.

    Without a peek the hand-over happens in connection_made, where uvloop
    starts reading anyway: bytes read while the server is dialled must keep
    their place behind the header.
    """

    def header(transport: asyncio.Transport) -> bytes:
        peer = transport.get_extra_info("peername")
        local = transport.get_extra_info("sockname")
        return encode_v2(peer[:2], local[:2])

    async def scenario() -> None:
        async with (
            Server() as backend,
            Gateway(backend.address, peek=peek, proxy_header=header) as gateway,
        ):
            client = await gateway.connect()
            assert client.transport is not None
            client.transport.write(b"first")
            relay = await gateway.relays.get()
            client.transport.write(b"|second")
            client.write_eof()
            server_peer = await backend.peers.get()
            await server_peer.eof.wait()
            parsed = decode(bytes(server_peer.head))
            assert isinstance(parsed, ProxyHeader)
            client_address = client.transport.get_extra_info("sockname")
            assert parsed.source == client_address[:2]
            assert parsed.destination == gateway.address
            assert bytes(server_peer.head[parsed.length :]) == b"first|second"
            assert relay.bytes_from_client == 12

    run(scenario())
