"""The L4 load generators (bulk TCP reader, UDP request/response) and how they are run.

Each generator runs as its own process, pinned to the load CPU
(``python -m bench.l4_load bulk|udp --port P ...``), and prints one JSON object
on stdout; ``run`` starts it and reads that object back. The new-connection
case uses wrk instead (bench/wrk.py), which is C and opens a fresh TCP
connection per request when the request says ``Connection: close``.

Invariants this module keeps:

- One thread, one epoll loop over every socket: no per-byte work at all in
  bulk (splice(2) to /dev/null) and one ``recv`` plus one ``send`` per UDP
  round trip, so the generator is cheap beside what it drives; the
  "direct" row of each table shows the ceiling of generator plus backend.
- UDP: every client is its own connected socket (its own source port, so its
  own session in the proxy) with one request outstanding. A reply is matched
  to its request by an 8-byte sequence number; a request unanswered after the
  timeout is counted lost and the client sends the next, so one dropped
  datagram costs one timeout, not the client.
- Only 127.0.0.1 is ever addressed.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import select
import socket
import subprocess
import sys
import time
from contextlib import suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.harness import LOOPBACK, pinned

REPO = Path(__file__).resolve().parent.parent
READ_BUFFER = 1 << 20
BULK_REQUEST = b"bulk\n"
UDP_BUFFER = 4 << 20


class LoadError(RuntimeError):
    """A generator failed to run, or reported that nothing got through."""


# --- the generators (run in the child process) ----------------------------------


def bulk(port: int, streams: int, duration: float) -> dict[str, Any]:
    """Read from ``streams`` connections for ``duration`` seconds and count the bytes.

    The bytes go socket -> pipe -> /dev/null with splice(2), never into user
    space: the reader is the cheapest sink there is, which raised the direct
    ceiling by about a third over ``recv_into`` on the 2-core machine.
    """
    socks: dict[int, socket.socket] = {}
    pipes: dict[int, tuple[int, int]] = {}
    devnull = os.open(os.devnull, os.O_WRONLY)
    for _ in range(streams):
        s = socket.create_connection((LOOPBACK, port), timeout=5.0)
        s.sendall(BULK_REQUEST)
        s.setblocking(False)
        socks[s.fileno()] = s
        r, w = os.pipe()
        # A pipe holds 64 KiB unless grown; one splice then moves up to 1 MiB.
        with suppress(OSError):
            fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, READ_BUFFER)
        pipes[s.fileno()] = (r, w)
    counts = dict.fromkeys(socks, 0)
    poller = select.epoll()
    for fd in socks:
        poller.register(fd, select.EPOLLIN)
    errors: list[str] = []
    start = time.monotonic()
    deadline = start + duration
    try:
        while socks and (left := deadline - time.monotonic()) > 0:
            for fd, _ev in poller.poll(left):
                r, w = pipes[fd]
                try:
                    n = os.splice(fd, w, READ_BUFFER, flags=os.SPLICE_F_NONBLOCK)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    n, detail = 0, f"{type(exc).__name__}: {exc}"
                else:
                    detail = "the stream ended early"
                if n == 0:
                    errors.append(detail)
                    poller.unregister(fd)
                    socks.pop(fd).close()
                    continue
                counts[fd] += n
                while n:
                    n -= os.splice(r, devnull, n)
        elapsed = time.monotonic() - start
    finally:
        for s in socks.values():
            s.close()
        for r, w in pipes.values():
            os.close(r)
            os.close(w)
        os.close(devnull)
    total = sum(counts.values())
    return {
        "bytes": total,
        "seconds": elapsed,
        "mib_per_s": total / elapsed / (1 << 20),
        "streams": streams,
        "per_stream_mib_per_s": [n / elapsed / (1 << 20) for n in counts.values()],
        "errors": errors,
    }


def udp(port: int, clients: int, duration: float, size: int, timeout: float) -> dict[str, Any]:
    """Round trips from ``clients`` sockets, one outstanding each, for ``duration`` seconds."""
    pad = bytes(max(0, size - 8))
    socks: dict[int, socket.socket] = {}
    seq: dict[int, int] = {}
    sent_at: dict[int, int] = {}
    poller = select.epoll()
    for _ in range(clients):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_BUFFER)
        s.connect((LOOPBACK, port))
        s.setblocking(False)
        socks[s.fileno()] = s
        poller.register(s.fileno(), select.EPOLLIN)
    rtts: list[int] = []
    lost = stale = send_errors = 0
    now_ns = time.perf_counter_ns
    timeout_ns = int(timeout * 1e9)

    def send(fd: int) -> None:
        nonlocal send_errors
        seq[fd] = seq.get(fd, 0) + 1
        sent_at[fd] = now_ns()
        try:
            socks[fd].send(seq[fd].to_bytes(8, "big") + pad)
        except OSError:
            send_errors += 1  # left to the timeout, which sends the next one

    start = time.monotonic()
    deadline = start + duration
    next_sweep = start + timeout / 2
    try:
        for fd in socks:
            send(fd)
        while (now := time.monotonic()) < deadline:
            if now >= next_sweep:
                # A lost datagram is found here, not per event: this loop runs
                # a few times per timeout, which costs nothing per round trip.
                cutoff = now_ns() - timeout_ns
                for fd in socks:
                    if sent_at[fd] < cutoff:
                        lost += 1
                        send(fd)
                next_sweep = now + timeout / 2
            for fd, _ev in poller.poll(min(deadline, next_sweep) - now):
                sock = socks[fd]
                while True:
                    try:
                        data = sock.recv(65536)
                    except BlockingIOError:
                        break
                    except OSError:
                        break  # ICMP port unreachable: the timeout resends
                    if int.from_bytes(data[:8], "big") != seq[fd]:
                        stale += 1  # the answer to a request already counted lost
                        continue
                    rtts.append(now_ns() - sent_at[fd])
                    send(fd)
        elapsed = time.monotonic() - start
    finally:
        for s in socks.values():
            s.close()
    rtts.sort()
    return {
        "round_trips": len(rtts),
        "seconds": elapsed,
        "round_trips_per_s": len(rtts) / elapsed,
        "p50_ms": _percentile(rtts, 0.50) / 1e6,
        "p99_ms": _percentile(rtts, 0.99) / 1e6,
        "clients": clients,
        "size": size,
        "lost": lost,
        "stale": stale,
        "send_errors": send_errors,
    }


def _percentile(sorted_values: list[int], q: float) -> float:
    if not sorted_values:
        return 0.0
    return float(sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))])


# --- running a generator (the parent's side) ------------------------------------


@dataclass(frozen=True, slots=True)
class BulkResult:
    mib_per_s: float
    seconds: float
    streams: int
    # The slowest and fastest stream: a proxy that starves one stream shows here.
    min_stream_mib_per_s: float
    max_stream_mib_per_s: float
    errors: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class UdpResult:
    round_trips_per_s: float
    p50_ms: float
    p99_ms: float
    seconds: float
    clients: int
    lost: int
    stale: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def run(kind: str, port: int, *, duration: float, cpu: int | None,
        args: tuple[str, ...] = ()) -> dict[str, Any]:
    """Run generator ``kind`` against ``127.0.0.1:port`` pinned to ``cpu``; its JSON report."""
    argv = [sys.executable, "-m", "bench.l4_load", kind, "--port", str(port),
            "--duration", f"{duration:g}", *args]
    # -m with the repository on PYTHONPATH: a script run from bench/ would put
    # bench/ first on sys.path, where bench/http.py shadows the standard library.
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    try:
        done = subprocess.run(pinned(argv, cpu), capture_output=True, text=True, env=env,
                              timeout=duration + 30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LoadError(f"{kind} load did not complete: {exc}") from exc
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise LoadError(f"{kind} load exited {done.returncode}: {tail}")
    try:
        out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError) as exc:
        raise LoadError(f"{kind} load printed no report: {done.stdout!r}") from exc
    return out


def run_bulk(port: int, *, duration: float, cpu: int | None, streams: int) -> BulkResult:
    """Bulk download through ``port``; fails if a stream broke or nothing arrived."""
    out = run("bulk", port, duration=duration, cpu=cpu, args=("--streams", str(streams)))
    if out["errors"] or not out["bytes"]:
        raise LoadError(f"bulk: {len(out['errors'])} stream(s) broke: {out['errors'][:3]}")
    per = out["per_stream_mib_per_s"]
    return BulkResult(mib_per_s=out["mib_per_s"], seconds=out["seconds"], streams=streams,
                      min_stream_mib_per_s=min(per), max_stream_mib_per_s=max(per),
                      errors=len(out["errors"]))


def run_udp(port: int, *, duration: float, cpu: int | None, clients: int, size: int,
            timeout: float) -> UdpResult:
    """UDP request/response through ``port``; fails if no round trip completed."""
    out = run("udp", port, duration=duration, cpu=cpu,
              args=("--clients", str(clients), "--size", str(size),
                    "--timeout", f"{timeout:g}"))
    if not out["round_trips"]:
        raise LoadError(f"udp: no round trip completed ({out['lost']} requests lost)")
    return UdpResult(round_trips_per_s=out["round_trips_per_s"], p50_ms=out["p50_ms"],
                     p99_ms=out["p99_ms"], seconds=out["seconds"], clients=clients,
                     lost=out["lost"], stale=out["stale"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("kind", choices=("bulk", "udp"))
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--streams", type=int, default=4, help="bulk connections")
    ap.add_argument("--clients", type=int, default=64, help="UDP sockets")
    ap.add_argument("--size", type=int, default=64, help="UDP payload bytes (at least 8)")
    ap.add_argument("--timeout", type=float, default=0.2, help="UDP reply timeout, seconds")
    args = ap.parse_args(argv)
    if args.kind == "bulk":
        out = bulk(args.port, args.streams, args.duration)
    else:
        out = udp(args.port, args.clients, args.duration, max(8, args.size), args.timeout)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
