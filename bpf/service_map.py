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
    """A virtual IPv4 address:port/protocol whose connects go straight to weighted backends."""

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
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "address", address)
        object.__setattr__(self, "port", port)
        object.__setattr__(self, "protocol", protocol)
        object.__setattr__(
            self, "backends", tuple(b if isinstance(b, Backend) else Backend(*b) for b in backends)
        )
        self._validate()

    def _validate(self) -> None:
        where = f"virtual service {self.name!r}"
        if self.protocol not in PROTOCOL_NUMBERS:
            raise ValueError(f"{where}: protocol must be tcp or udp, not {self.protocol!r}")
        for addr, port, what in [(self.address, self.port, "address")] + [
            (b.address, b.port, f"backend {b.address}:{b.port}") for b in self.backends
        ]:
            if not isinstance(ipaddress.ip_address(addr), ipaddress.IPv4Address):
                raise ValueError(f"{where}: {what} must be IPv4 (IPv6 is not supported yet)")
            if not 0 < port < 65536:
                raise ValueError(f"{where}: {what} port {port} is outside 1..65535")
        if any(b.weight < 0 for b in self.backends):
            raise ValueError(f"{where}: backend weights must be >= 0")

    @property
    def key(self) -> ServiceKey:
        """What the kernel map is keyed by: one entry per (address, port, protocol)."""
        return (self.address, self.port, self.protocol)


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
