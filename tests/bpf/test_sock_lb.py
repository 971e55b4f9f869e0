"""The socket LB programs loaded into this kernel, attached to a cgroup the tests create.

A client subprocess in that cgroup connects to virtual addresses in 127.10.0.0/16 (IPv4) or
to ::1 on a port held by a bound, never-listening socket (IPv6: any other v6 address would be
routed off this host if a translation were missed); tagged backends in the test process
(outside the cgroup) on 127.0.0.1 or ::1 say who was reached. When bcc
or the kernel refuses, the tests fail with the reason: they never skip.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bpf.errors import BPFUnavailable
from bpf.service_map import VirtualService
from bpf.sock_lb import CGROUP_V2_ROOT, SocketLB
from tests.bpf.lb_support import CgroupClient, TcpBackend, UdpBackend, reserved_port

VIP = "127.10.0.1"
VIP6 = "::1"
N_WEIGHTED = 10_000
# 3:1 over 10,000 connects: sigma of the 0.75 share is 0.0043, so 0.02 is over 4.5 sigma.
SHARE_TOLERANCE = 0.02


@pytest.fixture(scope="module")
def cgroup() -> Iterator[Path]:
    path = CGROUP_V2_ROOT / f"sluice-test-lb-{os.getpid()}"
    try:
        path.mkdir()
    except OSError as exc:
        pytest.fail(f"cannot create test cgroup {path}: {exc}")
    yield path
    path.rmdir()


@pytest.fixture(scope="module")
def client(cgroup: Path) -> Iterator[CgroupClient]:
    c = CgroupClient(cgroup)
    yield c
    c.close()


@pytest.fixture
def lb(cgroup: Path) -> Iterator[SocketLB]:
    try:
        sock_lb = SocketLB(cgroup)
    except BPFUnavailable as exc:
        pytest.fail(f"socket LB could not load: {exc.reason}")
    yield sock_lb
    sock_lb.close()


@pytest.fixture
def backends() -> Iterator[tuple[TcpBackend, TcpBackend]]:
    a, b = TcpBackend("A"), TcpBackend("B")
    yield a, b
    a.close()
    b.close()


def tcp_service(*backends: tuple[TcpBackend, int]) -> VirtualService:
    return VirtualService(
        "web", VIP, 80, "tcp", [("127.0.0.1", be.port, weight) for be, weight in backends]
    )


def test_weights_spread_connects(
    lb: SocketLB, client: CgroupClient, backends: tuple[TcpBackend, TcpBackend]
) -> None:
    """Weights 3:1 give a 3:1 spread of connects to the virtual address, within 2 points."""
    a, b = backends
    lb.replace([tcp_service((a, 3), (b, 1))])
    started = time.perf_counter()
    result = client.call(op="tcp", addr=VIP, port=80, n=N_WEIGHTED)
    elapsed = time.perf_counter() - started
    assert result["failures"] == []
    share = result["counts"].get("A", 0) / N_WEIGHTED
    print(f"3:1 over {N_WEIGHTED}: {result['counts']} in {elapsed:.2f}s")
    assert abs(share - 0.75) <= SHARE_TOLERANCE, result["counts"]
    assert lb.stats()["translated"] >= N_WEIGHTED


def test_getpeername_shows_virtual_address(
    lb: SocketLB, client: CgroupClient, backends: tuple[TcpBackend, TcpBackend]
) -> None:
    """A translated TCP socket's getpeername() reports the virtual address, not the backend."""
    a, b = backends
    lb.replace([tcp_service((a, 1), (b, 1))])
    result = client.call(op="tcp", addr=VIP, port=80, n=20)
    assert result["failures"] == []
    assert result["peers"] == [[VIP, 80]]
    assert set(result["counts"]) <= {"A", "B"}


def test_replace_switches_backends_without_failed_connects(
    lb: SocketLB, client: CgroupClient, backends: tuple[TcpBackend, TcpBackend]
) -> None:
    """Replacing a service mid-loop fails no connect, and new connects reach only the new set."""
    a, b = backends
    lb.replace([tcp_service((a, 1))])
    client.send(op="loop", addr=VIP, port=80)
    assert client.read() == {"started": True}
    for target, weights in [(b, ((b, 1),)), (a, ((a, 1), (b, 1))), (b, ((b, 1),))]:
        lb.replace([tcp_service(*weights)])
        assert target.wait_for(200), f"backend {target.tag} saw no connects after replace"
    client.send(op="stop")
    looped = client.read()
    assert looped["failures"] == []
    assert looped["counts"]["A"] > 0 and looped["counts"]["B"] > 0
    after = client.call(op="tcp", addr=VIP, port=80, n=200)
    assert after["counts"] == {"B": 200}


def test_removed_service_and_empty_service_are_not_translated(
    lb: SocketLB, client: CgroupClient, backends: tuple[TcpBackend, TcpBackend]
) -> None:
    """A service with no weighted backend, or one removed, leaves connects untranslated."""
    a, _ = backends
    lb.replace([tcp_service((a, 0))])
    assert client.call(op="tcp", addr=VIP, port=80, n=1)["failures"] == ["ECONNREFUSED"]
    assert lb.stats()["no_backend"] >= 1
    lb.replace([tcp_service((a, 1))])
    assert client.call(op="tcp", addr=VIP, port=80, n=1)["counts"] == {"A": 1}
    lb.replace([])
    assert client.call(op="tcp", addr=VIP, port=80, n=1)["failures"] == ["ECONNREFUSED"]


@pytest.mark.parametrize("connected", [False, True], ids=["sendto", "connected"])
def test_udp_replies_come_from_virtual_address(
    lb: SocketLB, client: CgroupClient, connected: bool
) -> None:
    """UDP to a virtual address reaches one backend per socket; replies show the VIP."""
    ua, ub = UdpBackend("A"), UdpBackend("B")
    try:
        lb.replace(
            [
                VirtualService(
                    "dns",
                    "127.10.0.2",
                    53,
                    "udp",
                    [("127.0.0.1", ua.port, 1), ("127.0.0.1", ub.port, 1)],
                )
            ]
        )
        result = client.call(op="udp", addr="127.10.0.2", port=53, n=10, connected=connected)
    finally:
        ua.close()
        ub.close()
    tags = {tag for tag, _ in result["replies"]}
    assert len(tags) == 1 and tags <= {"A", "B"}
    assert {tuple(frm) for _, frm in result["replies"]} == {("127.10.0.2", 53)}


def test_detach_leaves_virtual_address_refused(
    lb: SocketLB, client: CgroupClient, backends: tuple[TcpBackend, TcpBackend]
) -> None:
    """After detach, connects to the virtual address are refused again."""
    a, _ = backends
    lb.replace([tcp_service((a, 1))])
    assert client.call(op="tcp", addr=VIP, port=80, n=1)["counts"] == {"A": 1}
    lb.detach()
    assert client.call(op="tcp", addr=VIP, port=80, n=1)["failures"] == ["ECONNREFUSED"]


def test_attach_refusal_carries_kernel_reason(tmp_path: Path) -> None:
    """Attaching to a directory that is not a cgroup raises BPFUnavailable with the errno."""
    with pytest.raises(BPFUnavailable) as caught:
        SocketLB(tmp_path)
    assert "attaching sock4_connect" in caught.value.reason
    assert str(tmp_path) in caught.value.reason


def test_outside_cgroup_is_untouched(lb: SocketLB, backends: tuple[TcpBackend, TcpBackend]) -> None:
    """This process is outside the test cgroup, so its connects to the VIP are not translated."""
    a, _ = backends
    lb.replace([tcp_service((a, 1))])
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((VIP, 80), timeout=5).close()


@pytest.fixture
def backends6() -> Iterator[tuple[TcpBackend, TcpBackend]]:
    a, b = TcpBackend("A6", "::1"), TcpBackend("B6", "::1")
    yield a, b
    a.close()
    b.close()


@pytest.fixture
def vport6() -> Iterator[int]:
    with reserved_port(VIP6, socket.SOCK_STREAM) as held:
        yield held.getsockname()[1]


def test_ipv6_connect_reaches_backend_and_getpeername_shows_vip(
    lb: SocketLB,
    client: CgroupClient,
    backends6: tuple[TcpBackend, TcpBackend],
    vport6: int,
) -> None:
    """connect() to [::1]:vport reaches a [::1] backend; getpeername() reports [::1]:vport."""
    a, b = backends6
    assert client.call(op="tcp", addr=VIP6, port=vport6, n=1)["failures"] == ["ECONNREFUSED"]
    lb.replace(
        [VirtualService("web6", VIP6, vport6, "tcp", [("::1", a.port, 1), ("::1", b.port, 1)])]
    )
    result = client.call(op="tcp", addr=VIP6, port=vport6, n=200)
    assert result["failures"] == []
    assert set(result["counts"]) == {"A6", "B6"}
    assert result["peers"] == [[VIP6, vport6]]
    assert lb.stats()["revnat_hit"] >= 200


def test_ipv4_and_ipv6_services_share_the_maps(
    lb: SocketLB,
    client: CgroupClient,
    backends: tuple[TcpBackend, TcpBackend],
    backends6: tuple[TcpBackend, TcpBackend],
    vport6: int,
) -> None:
    """A v4 and a v6 service on the same port, installed together, each reach only their own."""
    a, _ = backends
    _, b6 = backends6
    lb.replace(
        [
            VirtualService("web4", VIP, vport6, "tcp", [("127.0.0.1", a.port, 1)]),
            VirtualService("web6", VIP6, vport6, "tcp", [("::1", b6.port, 1)]),
        ]
    )
    v4 = client.call(op="tcp", addr=VIP, port=vport6, n=20)
    v6 = client.call(op="tcp", addr=VIP6, port=vport6, n=20)
    assert (v4["counts"], v4["peers"]) == ({"A": 20}, [[VIP, vport6]])
    assert (v6["counts"], v6["peers"]) == ({"B6": 20}, [[VIP6, vport6]])


@pytest.mark.parametrize("connected", [False, True], ids=["sendto", "connected"])
def test_ipv6_udp_replies_come_from_virtual_address(
    lb: SocketLB, client: CgroupClient, connected: bool
) -> None:
    """UDP to [::1]:vport reaches one [::1] backend per socket; replies show [::1]:vport."""
    ua, ub = UdpBackend("A6", "::1"), UdpBackend("B6", "::1")
    try:
        with reserved_port(VIP6, socket.SOCK_DGRAM) as held:
            vport = held.getsockname()[1]
            lb.replace(
                [
                    VirtualService(
                        "dns6", VIP6, vport, "udp", [("::1", ua.port, 1), ("::1", ub.port, 1)]
                    )
                ]
            )
            result = client.call(op="udp", addr=VIP6, port=vport, n=10, connected=connected)
    finally:
        ua.close()
        ub.close()
    tags = {tag for tag, _ in result["replies"]}
    assert len(tags) == 1 and tags <= {"A6", "B6"}
    assert {tuple(frm) for _, frm in result["replies"]} == {(VIP6, vport)}
