"""Loader and map feeder for the socket-level load balancer (``sock_lb.c``).

Owns the compiled programs (one ``BPF`` object per process: compiling costs 0.3-0.7 s), their
attachment to one cgroup v2 directory, and the contents of the ``services``/``slots``/
``revnat`` maps. Invariants:

- A connect never sees a half-written service: ``replace`` writes a changed service's backends
  into fresh slots first, then swaps its ``services`` entry in one element update, and only
  then releases the old slots (reusable from the next update on; see ``service_map``).
- Attachments outlive this process, so ``detach``/``close`` detach explicitly, by the
  program handles this object attached; ``close`` also empties the maps so the next
  ``SocketLB`` in this process (which reuses the compiled object) starts clean.
- One open ``SocketLB`` per process, since they share the compiled maps.
- Every bcc or kernel refusal surfaces as ``BPFUnavailable`` carrying bcc's message and the
  compiler/verifier output it printed.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import logging
import os
import socket
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from bpf.errors import BPFUnavailable
from bpf.service_map import (
    PROTOCOL_NUMBERS,
    ServiceKey,
    SlotAllocator,
    VirtualService,
    slot_table,
)

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("sock_lb.c")


def cgroup_v2_root(mounts: str = "/proc/self/mounts") -> Path:
    """Where the cgroup v2 hierarchy is mounted: ``/sys/fs/cgroup/unified`` on hybrid
    hosts (this project's machines), ``/sys/fs/cgroup`` on pure v2 ones."""
    try:
        with open(mounts) as lines:
            for line in lines:
                fields = line.split()
                if len(fields) > 2 and fields[2] == "cgroup2":
                    return Path(fields[1])
    except OSError:
        pass
    return Path("/sys/fs/cgroup/unified")


CGROUP_V2_ROOT = cgroup_v2_root()
MAX_SLOTS = 65536
AF_INET = 2
AF_INET6 = 10
STATS = ("translated", "no_backend", "revnat_hit")
# (program, attach type name in bcc's BPFAttachType)
PROGRAMS = (
    ("sock4_connect", "CGROUP_INET4_CONNECT"),
    ("sock4_sendmsg", "CGROUP_UDP4_SENDMSG"),
    ("sock4_recvmsg", "CGROUP_UDP4_RECVMSG"),
    ("sock4_getpeername", "CGROUP_INET4_GETPEERNAME"),
    ("sock6_connect", "CGROUP_INET6_CONNECT"),
    ("sock6_sendmsg", "CGROUP_UDP6_SENDMSG"),
    ("sock6_recvmsg", "CGROUP_UDP6_RECVMSG"),
    ("sock6_getpeername", "CGROUP_INET6_GETPEERNAME"),
)
# bcc probes for kernel modules first; this kernel has none, and the line is pure noise.
_NOISE = ("modprobe: not found",)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Compiled:
    bpf: Any
    functions: tuple[tuple[Any, Any], ...]  # (loaded function, attach type)


_compiled: _Compiled | None = None
_compile_lock = threading.Lock()
_open_instance: SocketLB | None = None


@contextlib.contextmanager
def _captured_stderr(sink: list[str]) -> Iterator[None]:
    """Collect what libbcc/clang print on fd 2, which Python-level redirection cannot see."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode(errors="replace")
            sink.extend(ln for ln in text.splitlines() if ln.strip() and ln not in _NOISE)


def _kernel_call(what: str, call: Callable[[], T]) -> T:
    """Run a bcc call; turn its refusal into BPFUnavailable with everything it printed."""
    printed: list[str] = []
    try:
        with _captured_stderr(printed):
            return call()
    except Exception as exc:
        detail = "\n".join(printed[-20:])
        reason = f"{what}: {exc}" + (f"\n{detail}" if detail else "")
        raise BPFUnavailable(reason) from exc
    finally:
        if printed:
            log.debug("%s printed: %s", what, "\n".join(printed))


def _compile() -> _Compiled:
    """Compile and load the programs once per process."""
    global _compiled
    with _compile_lock:
        if _compiled is not None:
            return _compiled
        try:
            from bcc import BPF, BPFAttachType
        except ImportError as exc:
            raise BPFUnavailable(f"bcc is not importable: {exc}") from exc
        src = str(SOURCE).encode()
        bpf = _kernel_call(
            f"compiling {SOURCE.name}",
            lambda: BPF(src_file=src, cflags=[f"-DMAX_SLOTS={MAX_SLOTS}"]),
        )
        functions = []
        for name, attach_name in PROGRAMS:
            attach_type = getattr(BPFAttachType, attach_name)
            fn = _kernel_call(
                f"loading {name}",
                functools.partial(
                    bpf.load_func, name.encode(), BPF.CGROUP_SOCK_ADDR, attach_type=attach_type
                ),
            )
            functions.append((fn, attach_type))
        _compiled = _Compiled(bpf=bpf, functions=tuple(functions))
        return _compiled


def _ip_words(address: str) -> tuple[int, tuple[int, int, int, int]]:
    """The family and the four u32 the programs compare with ``user_ip4``/``user_ip6``.

    Each word holds four bytes in network order, read as the host reads memory; IPv4 sits
    in the last word and the others stay 0.
    """
    ip = ipaddress.ip_address(address)
    if ip.version == 4:
        return AF_INET, (0, 0, 0, int.from_bytes(ip.packed, sys.byteorder))
    raw = ip.packed
    w0, w1, w2, w3 = (int.from_bytes(raw[i : i + 4], sys.byteorder) for i in range(0, 16, 4))
    return AF_INET6, (w0, w1, w2, w3)


def _set_ip(leaf: Any, address: str) -> None:
    """Fill a map struct's ``ip`` words and ``family`` from ``address``."""
    family, words = _ip_words(address)
    for i, word in enumerate(words):
        leaf.ip[i] = word
    leaf.family = family


def _port_word(port: int) -> int:
    return socket.htons(port)


class SocketLB:
    """The socket LB programs attached to one cgroup v2 directory, and their service map."""

    def __init__(self, cgroup: str | os.PathLike[str] = CGROUP_V2_ROOT) -> None:
        global _open_instance
        if _open_instance is not None:
            raise RuntimeError("a SocketLB is already open in this process; close it first")
        self.cgroup = Path(cgroup)
        self._compiled = _compile()
        self._allocator = SlotAllocator(MAX_SLOTS)
        self._installed: dict[ServiceKey, tuple[tuple[tuple[str, int], ...], int]] = {}
        self._attached: list[tuple[Any, Any]] = []
        self._cgroup_fd: int | None = None
        _open_instance = self
        try:
            self._clear_maps()
            self._attach()
        except BaseException:
            self.close()
            raise

    # -- lifecycle -------------------------------------------------------------------------

    def _attach(self) -> None:
        from bcc import BPF

        try:
            self._cgroup_fd = os.open(self.cgroup, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise BPFUnavailable(f"opening cgroup {self.cgroup}: {exc}") from exc
        fd = self._cgroup_fd
        for fn, attach_type in self._compiled.functions:
            _kernel_call(
                f"attaching {fn.name.decode()} to {self.cgroup}",
                functools.partial(BPF.attach_func, fn, fd, attach_type),
            )
            self._attached.append((fn, attach_type))

    def detach(self) -> None:
        """Detach every program this object attached; the maps keep their contents."""
        from bcc import BPF

        errors = []
        while self._attached:
            fn, attach_type = self._attached.pop()
            try:
                BPF.detach_func(fn, self._cgroup_fd, attach_type)
            except Exception as exc:
                errors.append(f"{fn.name.decode()}: {exc}")
        if self._cgroup_fd is not None:
            os.close(self._cgroup_fd)
            self._cgroup_fd = None
        if errors:
            raise BPFUnavailable("detaching from " + str(self.cgroup) + ": " + "; ".join(errors))

    def close(self) -> None:
        """Detach, empty the maps and let another SocketLB open in this process."""
        global _open_instance
        try:
            self.detach()
        finally:
            self._clear_maps()
            self._installed.clear()
            if _open_instance is self:
                _open_instance = None

    def __enter__(self) -> SocketLB:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _clear_maps(self) -> None:
        bpf = self._compiled.bpf
        bpf[b"services"].clear()
        bpf[b"revnat"].clear()

    # -- the service map -------------------------------------------------------------------

    def replace(self, services: Sequence[VirtualService]) -> None:
        """Make the map hold exactly ``services``; each service switches in one update."""
        wanted = {}
        for svc in services:
            if svc.key in wanted:
                raise ValueError(f"virtual service {svc.name!r} duplicates {svc.key}")
            wanted[svc.key] = slot_table(svc.backends)
        svc_map = self._compiled.bpf[b"services"]
        slots_map = self._compiled.bpf[b"slots"]
        for key, table in wanted.items():
            old = self._installed.get(key)
            if old is not None and old[0] == table:
                continue
            base = self._allocator.allocate(len(table)) if table else 0
            for i, (address, port) in enumerate(table):
                leaf = slots_map.Leaf()
                _set_ip(leaf, address)
                leaf.port = _port_word(port)
                slots_map[slots_map.Key(base + i)] = leaf
            svc_map[self._service_key(key)] = svc_map.Leaf(count=len(table), base=base)
            self._installed[key] = (table, base)
            if old is not None:
                self._allocator.release(old[1], len(old[0]))
        for gone in [k for k in self._installed if k not in wanted]:
            table, base = self._installed.pop(gone)
            with contextlib.suppress(KeyError):
                del svc_map[self._service_key(gone)]
            self._allocator.release(base, len(table))
        self._allocator.commit()
        log.debug("socket LB holds %d virtual services", len(self._installed))

    def _service_key(self, key: ServiceKey) -> Any:
        address, port, protocol = key
        k = self._compiled.bpf[b"services"].Key()
        _set_ip(k, address)
        k.port = _port_word(port)
        k.proto = PROTOCOL_NUMBERS[protocol]
        return k

    def stats(self) -> dict[str, int]:
        """Counters kept by the programs: translations, empty services, reverse hits."""
        table = self._compiled.bpf[b"stats"]
        return {name: int(table[table.Key(i)].value) for i, name in enumerate(STATS)}

    def services(self) -> dict[ServiceKey, tuple[tuple[str, int], ...]]:
        """The slot table each installed service holds (what the kernel map was given)."""
        return {key: table for key, (table, _) in self._installed.items()}
