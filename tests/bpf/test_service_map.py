"""The pure service map: weight expansion into slot tables, slot allocation, validation."""

from __future__ import annotations

import pytest

from bpf.service_map import Backend, SlotAllocator, VirtualService, slot_table

A, B, C = ("127.0.0.1", 8001), ("127.0.0.1", 8002), ("127.0.0.1", 8003)


@pytest.mark.parametrize(
    ("weights", "limit", "expected"),
    [
        ({A: 3, B: 1}, 1024, {A: 3, B: 1}),
        ({A: 6, B: 2}, 1024, {A: 3, B: 1}),
        ({A: 1, B: 0}, 1024, {A: 1}),
        ({A: 0}, 1024, {}),
        ({A: 1000, B: 1, C: 1}, 10, {A: 8, B: 1, C: 1}),
        ({A: 5, B: 3, C: 2}, 5, {A: 2, B: 2, C: 1}),
    ],
    ids=[
        "3-to-1",
        "gcd-reduced",
        "zero-weight-left-out",
        "all-zero-empty",
        "scaled-keeps-one",
        "largest-remainder",
    ],
)
def test_slot_table_expands_weights(
    weights: dict[tuple[str, int], int], limit: int, expected: dict[tuple[str, int], int]
) -> None:
    """Each backend gets slots in proportion to its weight, within the limit."""
    table = slot_table([Backend(a, p, w) for (a, p), w in weights.items()], limit)
    assert {be: table.count(be) for be in set(table)} == expected
    assert len(table) <= limit


def test_released_slots_wait_for_commit() -> None:
    """A released range is not handed out again until commit(), then it coalesces."""
    alloc = SlotAllocator(8)
    first = alloc.allocate(4)
    second = alloc.allocate(4)
    alloc.release(first, 4)
    with pytest.raises(ValueError, match="slot array full"):
        alloc.allocate(1)
    alloc.commit()
    assert alloc.allocate(4) == first
    alloc.release(first, 4)
    alloc.release(second, 4)
    alloc.commit()
    assert alloc.allocate(8) == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"address": "::1", "backends": [("127.0.0.1", 80, 1)]}, "is not IPv6 like"),
        ({"backends": [("::1", 80, 1)]}, "is not IPv4 like"),
        ({"address": "127.10.0.300"}, "'127.10.0.300' is not an IP address"),
        ({"backends": [("localhost", 80, 1)]}, "'localhost' is not an IP address"),
        ({"port": 0}, "outside 1..65535"),
        ({"protocol": "sctp"}, "tcp or udp"),
        ({"backends": [("127.0.0.1", 80, -1)]}, "weights must be >= 0"),
        ({"backends": [("127.0.0.1", 70000, 1)]}, "outside 1..65535"),
    ],
    ids=[
        "v6-service-v4-backend",
        "v4-service-v6-backend",
        "bad-address",
        "backend-name",
        "port-zero",
        "protocol",
        "negative-weight",
        "backend-port",
    ],
)
def test_virtual_service_rejects_bad_values(kwargs: dict[str, object], message: str) -> None:
    """Invalid addresses, ports, protocols and weights are refused with the service name."""
    fields: dict[str, object] = {
        "name": "web",
        "address": "127.10.0.1",
        "port": 80,
        "protocol": "tcp",
        "backends": (),
    }
    fields.update(kwargs)
    with pytest.raises(ValueError, match=message) as caught:
        VirtualService(**fields)  # type: ignore[arg-type]
    assert "'web'" in str(caught.value)


def test_virtual_service_accepts_tuples() -> None:
    """Backends given as (ip, port, weight) tuples become Backend values; the key is stable."""
    svc = VirtualService("web", "127.10.0.1", 80, "tcp", [("127.0.0.1", 8001, 3)])
    assert svc.backends == (Backend("127.0.0.1", 8001, 3),)
    assert svc.key == ("127.10.0.1", 80, "tcp")
    assert svc == VirtualService("web", "127.10.0.1", 80, "tcp", [Backend("127.0.0.1", 8001, 3)])


def test_ipv6_service_is_canonical() -> None:
    """An IPv6 service with IPv6 backends is accepted, with addresses in canonical form."""
    svc = VirtualService("web6", "0:0::1", 8080, "tcp", [("0::1", 8001, 1)])
    assert svc.key == ("::1", 8080, "tcp")
    assert svc.backends == (Backend("::1", 8001, 1),)
    assert svc == VirtualService("web6", "::1", 8080, "tcp", [Backend("::1", 8001, 1)])
