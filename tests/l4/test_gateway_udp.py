"""UDP routing through a running gateway (issue #4): sessions, large datagrams, ClientIP, idling.

The gateway listens on a ``127.0.0.1:0/udp`` entry point named ``udp``.
Clients are sockets connected to that address, so the kernel drops any reply
that does not come from it: every answered request also shows that replies
leave from the entry point's socket. Servers answer ``name|datagram``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
from pathlib import Path

import pytest

from gateway.l4.udp_session import enlarge_buffers
from tests.l4.gateway_support import ask, lb, poll, scene, static_text, until_metric

UDP_ONLY = static_text(tcp=(), udp=("udp",))


def dns_route(*ports: int) -> str:
    """One router taking every datagram of the ``udp`` entry point to servers on ``ports``."""
    return f"""
udp:
  routers:
    dns:
      entryPoints: [udp]
      service: dns
  services:
    dns: {lb(*ports)}
"""


async def test_dns_style_requests_from_many_clients_at_once(tmp_path: Path) -> None:
    """20 clients x 50 requests at once: each reply carries its request id; one server a client."""
    async with scene(tmp_path) as s:
        a, b = await s.udp("a"), await s.udp("b")
        gw = await s.gateway(dns_route(a.port, b.port), UDP_ONLY)
        port = gw.udp_port("udp")

        async def run(n: int) -> set[bytes]:
            c = await s.udp_client(port)
            answered_by = set()
            for i in range(50):
                query = (n * 50 + i).to_bytes(2, "big") + b"\x01\x00 example.test A"
                name, _, echoed = (await ask(c, query)).partition(b"|")
                assert echoed == query
                answered_by.add(name)
            return answered_by

        servers = await asyncio.gather(*(run(n) for n in range(20)))
        assert all(len(names) == 1 for names in servers), "a session sticks to one server"
        assert len(a.received) + len(b.received) == 1000


@pytest.mark.parametrize("size", [1, 1472, 9000, 60000], ids=["1B", "1472B", "9000B", "60000B"])
async def test_large_datagrams_cross_both_ways(tmp_path: Path, size: int) -> None:
    """A datagram of ``size`` bytes reaches the server whole; its larger reply comes back whole."""
    async with scene(tmp_path) as s:
        server = await s.udp("big")
        gw = await s.gateway(dns_route(server.port), UDP_ONLY)
        c = await s.udp_client(gw.udp_port("udp"))
        for seed in range(3):
            data = random.Random(seed).randbytes(size)
            assert await ask(c, data) == b"big|" + data
        assert [len(d) for d in server.received] == [size] * 3


async def test_client_ip_routes_udp_by_source_address(tmp_path: Path) -> None:
    """A ClientIP rule sends 127.0.0.2's datagrams to one service, the rest to the rule-less one."""
    async with scene(tmp_path) as s:
        one, two = await s.udp("one"), await s.udp("two")
        gw = await s.gateway(
            f"""
udp:
  routers:
    two:
      entryPoints: [udp]
      rule: "ClientIP(`127.0.0.2`)"
      service: two
    rest:
      entryPoints: [udp]
      service: one
  services:
    one: {lb(one.port)}
    two: {lb(two.port)}
""",
            UDP_ONLY,
        )
        port = gw.udp_port("udp")
        from_two = await s.udp_client(port, "127.0.0.2")
        from_one = await s.udp_client(port, "127.0.0.1")
        for i in range(3):
            assert await ask(from_two, b"q%d" % i) == b"two|q%d" % i
            assert await ask(from_one, b"q%d" % i) == b"one|q%d" % i
        assert (len(one.received), len(two.received)) == (3, 3)


async def test_idle_session_ends_and_the_next_datagram_opens_another(tmp_path: Path) -> None:
    """After udp.timeout idle the session ends, is counted and logged; the next one opens anew."""
    async with scene(tmp_path) as s:
        server = await s.udp("a")
        static = static_text(tcp=(), udp=("udp",), extra={"udp": "udp: {timeout: 300ms}"})
        gw = await s.gateway(dns_route(server.port), static)
        c = await s.udp_client(gw.udp_port("udp"))
        assert c.transport is not None
        client_port = c.transport.get_extra_info("sockname")[1]
        assert await ask(c, b"\x00\x01one") == b"a|\x00\x01one"

        line = await s.access.until(lambda line: line.get("Protocol") == "udp")
        assert line["Reason"] == "idle"
        assert (line["EntryPointName"], line["RouterName"]) == ("udp", "dns@file")
        assert line["ServiceName"] == "dns@file"
        assert line["ServiceAddr"] == f"127.0.0.1:{server.port}"
        assert (line["ClientHost"], str(line["ClientPort"])) == ("127.0.0.1", str(client_port))
        assert (line["DatagramsIn"], line["DatagramsOut"]) == (1, 1)
        assert (line["BytesIn"], line["BytesOut"]) == (5, 7)
        labels = {"entrypoint": "udp", "router": "dns@file", "service": "dns@file"}
        await until_metric(s.metrics, "sluice_udp_sessions_total", 1, **labels)
        await until_metric(s.metrics, "sluice_udp_datagrams_total", 1, direction="in", **labels)
        await until_metric(s.metrics, "sluice_udp_datagrams_total", 1, direction="out", **labels)
        await until_metric(s.metrics, "sluice_udp_bytes_total", 5, direction="in", **labels)
        await until_metric(s.metrics, "sluice_udp_bytes_total", 7, direction="out", **labels)

        assert await ask(c, b"\x00\x02two") == b"a|\x00\x02two"
        await until_metric(s.metrics, "sluice_udp_sessions_total", 2, **labels)


class Burst(asyncio.DatagramProtocol):
    """Counts datagrams; on ``go:<n>`` answers with ``n`` datagrams in one go."""

    def __init__(self) -> None:
        self.count = 0
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        enlarge_buffers(transport.get_extra_info("socket"), 16 << 20)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if data.startswith(b"go:"):
            assert self.transport is not None
            for i in range(int(data[3:])):
                self.transport.sendto(i.to_bytes(4, "big") + PAYLOAD, addr)
        else:
            self.count += 1


PAYLOAD = bytes(1196)
BURST = 1500


async def test_a_burst_of_datagrams_crosses_without_loss(tmp_path: Path) -> None:
    """1,500 datagrams sent back to back each way all arrive: the gateway's buffers hold a burst."""
    async with scene(tmp_path) as s:
        loop = asyncio.get_running_loop()
        server_transport, server = await loop.create_datagram_endpoint(
            Burst, local_addr=("127.0.0.1", 0)
        )
        s.stack.callback(server_transport.close)
        gw = await s.gateway(dns_route(server_transport.get_extra_info("sockname")[1]), UDP_ONLY)
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.stack.callback(client.close)
        enlarge_buffers(client, 16 << 20)
        client.connect(("127.0.0.1", gw.udp_port("udp")))
        # Sent while the gateway's loop cannot run: all of it waits in its socket.
        for i in range(BURST):
            client.send(i.to_bytes(4, "big") + PAYLOAD)
        await poll(lambda: server.count == BURST, lambda: f"server got {server.count}/{BURST}")
        client.setblocking(False)
        client.send(f"go:{BURST}".encode())
        got = 0

        def received() -> bool:
            nonlocal got
            with contextlib.suppress(BlockingIOError):
                while True:
                    client.recv(2048)
                    got += 1
            return got == BURST

        await poll(received, lambda: f"client got {got}/{BURST}")
        stats = gw.gateway.udp_entry_points["udp"].stats()
        assert (stats.dropped, stats.datagrams_in, stats.datagrams_out) == (0, BURST + 1, BURST)
