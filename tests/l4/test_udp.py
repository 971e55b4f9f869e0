"""The UDP entry point and its sessions, over real UDP sockets on loopback.

Every socket test runs on both event loops Sluice may run on (asyncio's and
uvloop's): their datagram transports differ in how they read, buffer and
report errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest
import uvloop

from gateway.l4.udp import Route, SessionRecord, Target, UDPEntry
from gateway.l4.udp_balancer import ServerPool, split_address
from middleware.l4.chains import DatagramChain
from middleware.l4.contract import L4BuildContext, Rejection
from middleware.l4.ip_allowlist import IPAllowListOptions, UDPIPAllowList
from middleware.l4.rate_limit import RateLimitOptions, UDPRateLimit

LOOPS = [
    pytest.param(asyncio.new_event_loop, id="asyncio"),
    pytest.param(uvloop.new_event_loop, id="uvloop"),
]
# Receive buffer for a 2000-datagram burst sent before anyone reads: each
# small datagram costs about 830 bytes of it, and the kernel doubles what is
# asked for (2 MiB here). Forced past net.core.rmem_max when root.
BIG_BUFFER = 1 << 20
# Linux's SO_RCVBUFFORCE; Python's socket module does not export it.
SO_RCVBUFFORCE = 33

Run = Callable[[Coroutine[Any, Any, None]], None]


@pytest.fixture(params=LOOPS)
def run(request: pytest.FixtureRequest) -> Run:
    factory = request.param

    def run(scenario: Coroutine[Any, Any, None]) -> None:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(asyncio.wait_for(scenario, 20))

    return run


class Server(asyncio.DatagramProtocol):
    """A DNS-like server: answers each datagram at once; counts and remembers senders."""

    def __init__(
        self, name: bytes, answer: Callable[[bytes, bytes], bytes | None] | None = None
    ) -> None:
        self.name = name
        self.answer = answer or (lambda name, data: data[:2] + name)
        self.transport: asyncio.DatagramTransport | None = None
        self.received: list[bytes] = []
        self.peers: list[Any] = []
        self._want = 0
        self._reached: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received.append(data)
        self.peers.append(addr)
        answer = self.answer(self.name, data)
        if answer is not None:
            assert self.transport is not None
            self.transport.sendto(answer, addr)
        if self._reached is not None and len(self.received) >= self._want:
            self._reached.set_result(None)
            self._reached = None

    async def wait_for(self, count: int) -> None:
        if len(self.received) >= count:
            return
        self._want = count
        self._reached = asyncio.get_running_loop().create_future()
        await self._reached

    @property
    def address(self) -> str:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Client(asyncio.DatagramProtocol):
    """A client socket collecting replies with their source address."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.replies: asyncio.Queue[tuple[bytes, Any]] = asyncio.Queue()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.replies.put_nowait((data, addr))

    def send(self, data: bytes, to: Any) -> None:
        assert self.transport is not None
        self.transport.sendto(data, to)

    async def ask(self, data: bytes, to: Any) -> tuple[bytes, Any]:
        self.send(data, to)
        return await asyncio.wait_for(self.replies.get(), 5)


class Harness:
    """Servers, clients and one entry point, all closed at the end."""

    def __init__(self, stack: contextlib.AsyncExitStack) -> None:
        self.stack = stack
        self.ended: asyncio.Queue[SessionRecord] = asyncio.Queue()

    async def server(
        self,
        name: bytes = b"s",
        *,
        host: str = "127.0.0.1",
        answer: Callable[[bytes, bytes], bytes | None] | None = None,
        rcvbuf: int | None = None,
    ) -> Server:
        sock = _bound(host, rcvbuf)
        _, server = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: Server(name, answer), sock=sock
        )
        self.stack.callback(_close, server)
        return server

    async def client(self, host: str = "127.0.0.1") -> Client:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        _, client = await asyncio.get_running_loop().create_datagram_endpoint(
            Client, local_addr=(host, 0), family=family
        )
        self.stack.callback(_close, client)
        return client

    async def entry(
        self,
        route: Route,
        *,
        idle_timeout: float = 3.0,
        host: str = "127.0.0.1",
        rcvbuf: int | None = None,
    ) -> UDPEntry:
        entry = UDPEntry(
            route, name="udp", idle_timeout=idle_timeout, on_session_end=self.ended.put_nowait
        )
        await entry.start(_bound(host, rcvbuf))
        self.stack.push_async_callback(_close_entry, entry)
        return entry

    async def next_end(self) -> SessionRecord:
        return await asyncio.wait_for(self.ended.get(), 5)


@contextlib.asynccontextmanager
async def harness() -> AsyncIterator[Harness]:
    async with contextlib.AsyncExitStack() as stack:
        yield Harness(stack)


def _bound(host: str, rcvbuf: int | None) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    if family == socket.AF_INET6 and host.startswith("::ffff:"):
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    if rcvbuf is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.bind((host, 0))
    return sock


def _close(protocol: Server | Client) -> None:
    if protocol.transport is not None:
        protocol.transport.close()


async def _close_entry(entry: UDPEntry) -> None:
    entry.close()
    await entry.wait_closed()


def to(*servers: Server, weights: tuple[int, ...] = (), router: str = "dns@file") -> Route:
    """A route sending every client to one target balancing ``servers``."""
    pool = ServerPool(
        "dns@file",
        [(s.address, w) for s, w in zip(servers, weights or (1,) * len(servers), strict=True)],
    )
    target = Target(router=router, service="dns@file", pick=pool.pick)
    return lambda ip, port: target


def _dead_port() -> str:
    """A loopback UDP port nobody listens on (bound, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def test_dns_style_requests_from_many_clients(run: Run) -> None:
    """50 clients x 20 requests: every reply matches its request id, each client one server."""

    async def scenario() -> None:
        async with harness() as h:
            a, b = await h.server(b"a"), await h.server(b"b")
            entry = await h.entry(to(a, b))

            async def client(n: int) -> set[bytes]:
                c = await h.client()
                servers = set()
                for i in range(20):
                    request_id = (n * 20 + i).to_bytes(2, "big")
                    reply, source = await c.ask(request_id + b"query", entry.address)
                    assert reply[:2] == request_id
                    assert source == entry.address
                    servers.add(reply[2:])
                return servers

            answered_by = await asyncio.gather(*(client(n) for n in range(50)))
            assert all(len(s) == 1 for s in answered_by)
            stats = entry.stats()
            assert (stats.datagrams_in, stats.datagrams_out) == (1000, 1000)
            assert (stats.bytes_in, stats.bytes_out) == (7000, 3000)
            assert stats.sessions_opened == stats.sessions_active == 50
            assert len(a.received) + len(b.received) == 1000

    run(scenario())


def test_replies_come_from_the_entry_point_address(run: Run) -> None:
    """Clients hear the entry point's address; servers see Sluice's socket, not the client."""

    async def scenario() -> None:
        async with harness() as h:
            server = await h.server()
            entry = await h.entry(to(server))
            client = await h.client()
            _, source = await client.ask(b"\x00\x01hello", entry.address)
            assert source == entry.address
            assert client.transport is not None
            assert server.peers[0] != client.transport.get_extra_info("sockname")

    run(scenario())


def test_weights_3_to_1_split_sessions(run: Run) -> None:
    """Two servers weighted 3:1 get new sessions in that ratio."""

    async def scenario() -> None:
        async with harness() as h:
            heavy, light = await h.server(b"heavy"), await h.server(b"light")
            entry = await h.entry(to(heavy, light, weights=(3, 1)))
            clients = [await h.client() for _ in range(40)]
            replies = await asyncio.gather(*(c.ask(b"\x00\x00q", entry.address) for c in clients))
            names = [reply[2:] for reply, _ in replies]
            assert (names.count(b"heavy"), names.count(b"light")) == (30, 10)
            assert len(set(heavy.peers)) == 30 and len(set(light.peers)) == 10

    run(scenario())


def test_largest_datagram_round_trip(run: Run) -> None:
    """A 65507-byte datagram, the IPv4 maximum, goes there and back intact."""

    async def scenario() -> None:
        async with harness() as h:
            server = await h.server(answer=lambda name, data: data)
            entry = await h.entry(to(server))
            client = await h.client()
            payload = os.urandom(65507)
            reply, _ = await client.ask(payload, entry.address)
            assert reply == payload
            assert server.received == [payload]
            assert entry.stats().bytes_out == 65507

    run(scenario())


def test_burst_of_2000_datagrams_all_arrive(run: Run) -> None:
    """2000 datagrams sent back to back by one client all reach the server, in order."""

    async def scenario() -> None:
        async with harness() as h:
            # The client writes all 2000 before the loop lets anyone read, so the
            # kernel must queue them: the default 208 KiB (rmem_default) holds
            # 256 of these. The buffers are the kernel's; what is tested is that
            # Sluice, given room, forwards every one.
            server = await h.server(answer=lambda name, data: None, rcvbuf=BIG_BUFFER)
            entry = await h.entry(to(server), rcvbuf=BIG_BUFFER)
            client = await h.client()
            sent = [i.to_bytes(4, "big") + b"x" * 60 for i in range(2000)]
            for data in sent:
                client.send(data, entry.address)
            await server.wait_for(2000)
            assert server.received == sent
            stats = entry.stats()
            assert (stats.datagrams_in, stats.dropped, stats.sessions_opened) == (2000, 0, 1)

    run(scenario())


def test_idle_session_ends_after_timeout(run: Run) -> None:
    """A session with no traffic ends after the idle timeout and reports its counters."""

    async def scenario() -> None:
        async with harness() as h:
            server = await h.server()
            entry = await h.entry(to(server), idle_timeout=0.05)
            client = await h.client()
            await client.ask(b"\x00\x07query", entry.address)
            end = await h.next_end()
            assert end.reason == "idle"
            assert end.duration >= 0.05
            assert (end.datagrams_in, end.bytes_in, end.datagrams_out, end.bytes_out) == (
                1,
                7,
                1,
                3,
            )
            assert end.router == "dns@file" and end.entry_point == "udp"
            assert client.transport is not None
            assert end.client == client.transport.get_extra_info("sockname")
            assert entry.stats().sessions_active == 0
            await client.ask(b"\x00\x08again", entry.address)
            assert entry.stats().sessions_opened == 2
            assert len(set(server.peers)) == 2

    run(scenario())


@pytest.mark.parametrize("replies", [True, False], ids=["both-ways", "client-to-server-only"])
def test_traffic_keeps_a_session_open(run: Run, replies: bool) -> None:
    """Datagrams for 4x the idle timeout keep one session, also with no replies."""

    async def scenario() -> None:
        async with harness() as h:
            server = await h.server(answer=None if replies else lambda name, data: None)
            entry = await h.entry(to(server), idle_timeout=0.05)
            client = await h.client()
            loop = asyncio.get_running_loop()
            stop = loop.time() + 0.2
            sent = 0
            while loop.time() < stop:
                client.send(b"\x00\x01ping", entry.address)
                sent += 1
                await server.wait_for(sent)
            assert h.ended.empty()
            assert entry.stats().sessions_opened == 1

    run(scenario())


def test_unrouted_client_is_dropped(run: Run) -> None:
    """A client no router matches gets nothing through, and is counted."""

    async def scenario() -> None:
        async with harness() as h:
            server = await h.server()
            target = to(server)("", 0)
            assert target is not None

            def route(ip: str, port: int) -> Target | None:
                return target if ip == "127.0.0.1" else None

            entry = await h.entry(route)
            stranger, known = await h.client("127.0.0.9"), await h.client()
            for _ in range(3):
                stranger.send(b"\x00\x01nope", entry.address)
            # The entry socket's queue is FIFO: once the known client's answer
            # is back, the stranger's datagrams were read before it.
            await known.ask(b"\x00\x02yes", entry.address)
            assert server.received == [b"\x00\x02yes"]
            stats = entry.stats()
            assert (stats.unrouted, stats.sessions_opened) == (3, 1)
            assert stranger.replies.empty()

    run(scenario())


def test_middleware_rejects_one_client_and_passes_another(run: Run) -> None:
    """The router's allowlist drops one client's datagrams and forwards another's."""

    async def scenario() -> None:
        async with harness() as h:
            server = await h.server()
            pool = ServerPool("dns@file", [(server.address, 1)])
            allow = UDPIPAllowList().build(
                IPAllowListOptions(source_range=("127.0.0.1/32",)),
                L4BuildContext("allow@file", "udp"),
            )
            chain = DatagramChain((allow,), ("allow@file",))
            target = Target(
                router="dns@file", service="dns@file", pick=pool.pick, admit=chain.admit
            )
            entry = await h.entry(lambda ip, port: target)
            outsider, insider = await h.client("127.0.0.7"), await h.client()
            for _ in range(4):
                outsider.send(b"\x00\x01let me in", entry.address)
            await insider.ask(b"\x00\x02hi", entry.address)
            assert server.received == [b"\x00\x02hi"]
            stats = entry.stats()
            assert stats.rejected == 4
            assert stats.rejections == {Rejection("not_allowed", "allow@file"): 4}
            assert stats.sessions_opened == 1

    run(scenario())


def test_middleware_is_asked_per_datagram_within_a_session(run: Run) -> None:
    """A rate limit refuses a session's datagrams past its burst; the session reports them."""

    async def scenario() -> None:
        async with harness() as h:
            server = await h.server()
            pool = ServerPool("dns@file", [(server.address, 1)])
            limit = UDPRateLimit().build(
                RateLimitOptions(average=1, period=3600.0, burst=3),
                L4BuildContext("slow@file", "udp"),
            )
            chain = DatagramChain((limit,), ("slow@file",))
            target = Target(
                router="dns@file", service="dns@file", pick=pool.pick, admit=chain.admit
            )
            entry = await h.entry(lambda ip, port: target)
            busy, other = await h.client(), await h.client("127.0.0.2")
            for i in range(8):
                busy.send(bytes([0, i]) + b"q", entry.address)
            # Once the other client is answered, the entry point has read (and
            # judged) all eight; the three it let through may still be on their
            # way, as the two sessions' server sockets opened in either order.
            await other.ask(b"\x00\xffq", entry.address)
            assert entry.stats().rejected == 5
            await server.wait_for(4)
            assert sorted(d[:2] for d in server.received) == [
                b"\x00\x00",
                b"\x00\x01",
                b"\x00\x02",
                b"\x00\xff",
            ]
            entry.close()
            ends = {end.client[0]: end for end in [await h.next_end(), await h.next_end()]}
            assert (ends["127.0.0.1"].datagrams_in, ends["127.0.0.1"].rejected) == (3, 5)
            assert ends["127.0.0.1"].reason == "shutdown"

    run(scenario())


def test_unreachable_server_ends_the_session_and_the_next_datagram_reopens(run: Run) -> None:
    """ICMP port unreachable ends the session; the client's next datagram picks anew."""

    async def scenario() -> None:
        async with harness() as h:
            alive = await h.server(b"alive")
            dead = _dead_port()
            pool = ServerPool("dns@file", [(dead, 1), (alive.address, 1)])
            target = Target(router="dns@file", service="dns@file", pick=pool.pick)
            entry = await h.entry(lambda ip, port: target)
            client = await h.client()
            client.send(b"\x00\x01lost", entry.address)
            end = await h.next_end()
            assert end.reason == "error"
            assert "ConnectionRefused" in end.error
            assert end.server == split_address(dead)
            reply, _ = await client.ask(b"\x00\x02found", entry.address)
            assert reply == b"\x00\x02alive"
            stats = entry.stats()
            assert (stats.sessions_opened, stats.sessions_active, stats.server_errors) == (2, 1, 1)

    run(scenario())


def test_new_route_applies_to_new_sessions_only(run: Run) -> None:
    """After ``entry.route`` is replaced, a running session keeps its server."""

    async def scenario() -> None:
        async with harness() as h:
            old, new = await h.server(b"old"), await h.server(b"new")
            entry = await h.entry(to(old))
            early = await h.client()
            assert (await early.ask(b"\x00\x01q", entry.address))[0] == b"\x00\x01old"
            entry.route = to(new)
            late = await h.client()
            assert (await late.ask(b"\x00\x02q", entry.address))[0] == b"\x00\x02new"
            assert (await early.ask(b"\x00\x03q", entry.address))[0] == b"\x00\x03old"

    run(scenario())


def test_close_ends_every_session(run: Run) -> None:
    """Closing the entry point reports each live session ended by shutdown."""

    async def scenario() -> None:
        async with harness() as h:
            server = await h.server()
            entry = await h.entry(to(server))
            clients = [await h.client() for _ in range(3)]
            for c in clients:
                await c.ask(b"\x00\x01q", entry.address)
            assert len(entry.sessions()) == 3
            entry.close()
            await entry.wait_closed()
            ends = [h.ended.get_nowait() for _ in range(3)]
            assert {e.reason for e in ends} == {"shutdown"}
            assert entry.stats().sessions_active == 0

    run(scenario())


@pytest.mark.parametrize(
    ("entry_host", "server_host", "client_host", "seen_ip"),
    [
        ("::1", "::1", "::1", "::1"),
        ("127.0.0.1", "::1", "127.0.0.1", "127.0.0.1"),
        ("::ffff:127.0.0.1", "127.0.0.1", "127.0.0.1", "127.0.0.1"),
    ],
    ids=["ipv6", "v4-client-v6-server", "v4-client-on-v6-socket"],
)
def test_address_families(
    run: Run, entry_host: str, server_host: str, client_host: str, seen_ip: str
) -> None:
    """IPv6 works end to end; a v4 client on a v6 socket is routed by its v4 address."""

    async def scenario() -> None:
        async with harness() as h:
            server = await h.server(b"six", host=server_host)
            seen: list[str] = []
            target = to(server)("", 0)

            def route(ip: str, port: int) -> Target | None:
                seen.append(ip)
                return target

            entry = await h.entry(route, host=entry_host)
            client = await h.client(client_host)
            to_addr = (
                ("127.0.0.1", entry.address[1])
                if entry_host.startswith("::ffff:")
                else (entry.address)
            )
            reply, _ = await client.ask(b"\x00\x01q", to_addr)
            assert reply == b"\x00\x01six"
            assert seen == [seen_ip]

    run(scenario())
