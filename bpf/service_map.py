"""The service map as plain data: virtual services, their slot tables, and slot allocation.

Owns what the socket LB maps mean without importing bcc, so configuration and fallback code
can use it anywhere. Invariants kept here:

- A service's weights expand into a *slot table*: weights are divided by their gcd and each
  backend gets that many consecutive slots, so the kernel picks
  ``slot = base + random % count`` and the chance of a backend is its weight over the total.
  When the total exceeds ``MAX_SLOTS_PER_SERVICE`` the weights are scaled down by largest
  remainder, and every backend with a positive weight keeps at least one slot.
- ``SlotAllocator`` hands out contiguous ranges of the kernel's slot array. A released range
  becomes reusable only at ``commit()``, which the loader calls at the end of an update: a
  program that read the old service entry just before the swap may still be reading those
  slots, so the update that released them never rewrites them (the next update may).
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

Protocol = Literal["tcp", "udp"]
ServiceKey = tuple[str, int, Protocol]
PROTOCOL_NUMBERS: dict[str, int] = {"tcp": 6, "udp": 17}
MAX_SLOTS_PER_SERVICE = 1024


@dataclass(frozen=True, slots=True)
class Backend:
    """One real endpoint of a virtual service; weight 0 keeps it out of the slot table."""

    address: str
    port: int
    weight: int = 1


@dataclass(frozen=True, slots=True)
class VirtualService:
    """A virtual address:port/protocol whose connects go straight to weighted backends.

    IPv4 or IPv6; the backends must be in the service's family. Addresses are kept in
    ``ipaddress`` canonical form, so ``0:0::1`` and ``::1`` are one key.
    """

    name: str
    address: str
    port: int
    protocol: Protocol
    backends: tuple[Backend, ...] = field(default=())

    def __init__(
        self,
        name: str,
        address: str,
        port: int,
        protocol: Protocol,
        backends: Sequence[Backend | tuple[str, int, int]] = (),
    ) -> None:
        where = f"virtual service {name!r}"
        given = tuple(b if isinstance(b, Backend) else Backend(*b) for b in backends)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "address", _canonical(address, where, "address"))
        object.__setattr__(self, "port", port)
        object.__setattr__(self, "protocol", protocol)
        object.__setattr__(
            self,
            "backends",
            tuple(
                Backend(_canonical(b.address, where, "backend address"), b.port, b.weight)
                for b in given
            ),
        )
        self._validate()

    def _validate(self) -> None:
        where = f"virtual service {self.name!r}"
        if self.protocol not in PROTOCOL_NUMBERS:
            raise ValueError(f"{where}: protocol must be tcp or udp, not {self.protocol!r}")
        version = ipaddress.ip_address(self.address).version
        for addr, port, what in [(self.address, self.port, "address")] + [
            (b.address, b.port, f"backend {b.address}:{b.port}") for b in self.backends
        ]:
            # The kernel rewrites within one family: a v4 connect cannot be sent to a v6 backend.
            if ipaddress.ip_address(addr).version != version:
                raise ValueError(
                    f"{where}: {what} is not IPv{version} like the service address {self.address}"
                )
            if not 0 < port < 65536:
                raise ValueError(f"{where}: {what} port {port} is outside 1..65535")
        if any(b.weight < 0 for b in self.backends):
            raise ValueError(f"{where}: backend weights must be >= 0")

    @property
    def key(self) -> ServiceKey:
        """What the kernel map is keyed by: one entry per (address, port, protocol)."""
        return (self.address, self.port, self.protocol)


def _canonical(address: str, where: str, what: str) -> str:
    """``address`` in ``ipaddress`` canonical form; a ValueError naming the service if bad."""
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        raise ValueError(f"{where}: {what} {address!r} is not an IP address") from None


def slot_table(
    backends: Sequence[Backend], limit: int = MAX_SLOTS_PER_SERVICE
) -> tuple[tuple[str, int], ...]:
    """Expand weights into repeated (address, port) slots, at most ``limit`` of them."""
    live = [b for b in backends if b.weight > 0]
    if not live:
        return ()
    if len(live) > limit:
        raise ValueError(f"{len(live)} backends do not fit in {limit} slots")
    divisor = math.gcd(*(b.weight for b in live))
    counts = [b.weight // divisor for b in live]
    total = sum(counts)
    if total > limit:
        counts = _scale(counts, limit)
    return tuple((b.address, b.port) for b, n in zip(live, counts, strict=True) for _ in range(n))


def _scale(counts: list[int], limit: int) -> list[int]:
    """Largest-remainder scaling to ``limit`` slots, keeping one slot per live backend."""
    spare = limit - len(counts)
    total = sum(counts)
    exact = [c * spare / total for c in counts]
    scaled = [1 + int(e) for e in exact]
    order = sorted(range(len(counts)), key=lambda i: exact[i] - int(exact[i]), reverse=True)
    for i in order[: limit - sum(scaled)]:
        scaled[i] += 1
    return scaled


class SlotAllocator:
    """First-fit allocator of contiguous ranges in a fixed-size slot array."""

    def __init__(self, size: int) -> None:
        self._free: list[tuple[int, int]] = [(0, size)]
        self._pending: list[tuple[int, int]] = []

    def allocate(self, length: int) -> int:
        """Return the base of a free range of ``length`` slots; raise when none is left."""
        for i, (start, size) in enumerate(self._free):
            if size >= length:
                if size == length:
                    del self._free[i]
                else:
                    self._free[i] = (start + length, size - length)
                return start
        raise ValueError(f"slot array full: no free range of {length} slots")

    def release(self, base: int, length: int) -> None:
        """Queue a range for reuse at the next ``commit()`` (readers may still see it now)."""
        if length:
            self._pending.append((base, length))

    def commit(self) -> None:
        """Make released ranges reusable, coalescing neighbours; call once an update is done."""
        merged: list[tuple[int, int]] = []
        for start, size in sorted(self._free + self._pending):
            if merged and merged[-1][0] + merged[-1][1] == start:
                merged[-1] = (merged[-1][0], merged[-1][1] + size)
            else:
                merged.append((start, size))
        self._free = merged
        self._pending = []
