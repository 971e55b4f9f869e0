"""``gateway run --workers 2`` as a real process tree: serving, reload, metrics, restart, stop.

The supervisor's ``/api/overview`` reports each worker's pid and the
configuration generation it has applied (``workers``), which is what the
tests wait on. That both workers serve is shown from the kernel's side:
every worker that forwarded a request keeps its pooled upstream connection
to the backend open, and ``/proc/net/tcp`` plus ``/proc/<pid>/fd`` say which
process owns each of those sockets. Requests go out on fresh connections,
which SO_REUSEPORT spreads over the workers by a hash of the 4-tuple.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.backends import Reply, get, http_request
from tests.subprocesses import Backend, GatewayProcess, free_port, launch, refused_within

STARTUP_TIMEOUT = 20.0
WORKERS = 2


def dynamic(routes: dict[str, str]) -> str:
    """Routers ``Host(<host>)`` → a service per host, each with the given backend URL."""
    lines = ["http:", "  routers:"]
    for i, host in enumerate(routes):
        lines += [f"    r{i}:", f"      rule: Host(`{host}`)", f"      service: s{i}"]
    lines.append("  services:")
    for i, url in enumerate(routes.values()):
        lines += [
            f"    s{i}:",
            "      loadBalancer:",
            "        servers:",
            f"          - url: {url}",
        ]
    return "\n".join(lines) + "\n"


@dataclass
class Supervisor(GatewayProcess):
    """``gateway run --workers``: its ports, its dynamic file and every worker pid seen."""

    web: int
    api: int
    dynamic_path: Path
    worker_pids: set[int] = field(default_factory=set)

    async def api_get(self, path: str) -> Reply:
        return await http_request(self.api, get("127.0.0.1", path))

    async def workers(self) -> dict[str, Any]:
        """The ``workers`` section of /api/overview; remembers every pid for teardown."""
        info: dict[str, Any] = (await self.api_get("/api/overview")).json()["workers"]
        self.worker_pids |= {p["pid"] for p in info["processes"]}
        return info

    async def wait_until(self, what: str, ok: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """Poll the overview (short requests, bounded) until ``ok(workers)``."""

        async def probe() -> dict[str, Any] | None:
            info = await self.workers()
            return info if ok(info) else None

        return await self.poll(
            what, probe, timeout=STARTUP_TIMEOUT, tolerate=(ValueError, KeyError)
        )

    async def fresh_requests(self, host: str, count: int) -> list[int]:
        """``count`` GETs for ``host``, each on a new connection; their statuses."""
        replies = [await http_request(self.web, get(host, "/")) for _ in range(count)]
        return [r.status for r in replies]


def all_serving(generation: int | None = None) -> Callable[[dict[str, Any]], bool]:
    def ok(info: dict[str, Any]) -> bool:
        want = info["generation"] if generation is None else generation
        procs = info["processes"]
        return (
            info["generation"] == want
            and len(procs) == WORKERS
            and all(p["serving"] and p["generation"] == want for p in procs)
        )

    return ok


Start = Callable[[str], Awaitable[Supervisor]]


@pytest.fixture
async def start_workers(tmp_path: Path) -> AsyncIterator[Start]:
    """Start ``gateway run --workers 2``; stop it at teardown (SIGTERM, then SIGKILL by PID)."""
    started: list[Supervisor] = []

    async def start(dynamic_text: str) -> Supervisor:
        web, api = free_port(), free_port()
        dyn = tmp_path / "dynamic.yml"
        dyn.write_text(dynamic_text)
        (tmp_path / "sluice.yml").write_text(
            f'entryPoints:\n  web:\n    address: "127.0.0.1:{web}"\n'
            "providers:\n  file:\n    filename: dynamic.yml\n"
            f'api:\n  address: "127.0.0.1:{api}"\nmetrics:\n  prometheus: {{}}\n'
        )
        log = tmp_path / "gateway.log"
        proc = await launch(
            "run", "--config", str(tmp_path / "sluice.yml"), "--workers", str(WORKERS),
            cwd=tmp_path, log=log,
        )  # fmt: skip
        sup = Supervisor(proc, log, web=web, api=api, dynamic_path=dyn)
        started.append(sup)
        await sup.wait_until("every worker serving", all_serving())
        return sup

    yield start
    for sup in started:
        # SIGTERM first: a killed supervisor leaves its metrics directory behind.
        await sup.stop(grace=15, kill_first=sup.worker_pids)
        assert sup.proc.returncode == 0, sup.output()


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    b = await Backend().start()
    yield b
    await b.close()


def socket_owners(peer_port: int, pids: set[int]) -> set[int]:
    """Which of ``pids`` hold an established TCP connection to 127.0.0.1:peer_port."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        remote_port = int(fields[2].split(":")[1], 16)
        if remote_port == peer_port and fields[3] == "01":  # 01: ESTABLISHED
            inodes.add(f"socket:[{fields[9]}]")
    owners = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            fds = Path(f"/proc/{pid}/fd")
            if any(os.readlink(fd) in inodes for fd in fds.iterdir()):
                owners.add(pid)
    return owners


def pid_gone(pid: int) -> bool:
    """True when ``pid`` no longer exists (or is a zombie nobody has reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


async def test_both_workers_serve_fresh_connections(backend: Backend, start_workers: Start) -> None:
    """Requests on 40 new connections all succeed and both worker processes forwarded some."""
    sup = await start_workers(dynamic({"app.test": backend.url}))
    pids = {p["pid"] for p in (await sup.workers())["processes"]}
    assert len(pids) == WORKERS and sup.proc.pid not in pids

    assert await sup.fresh_requests("app.test", 40) == [200] * 40
    assert len(backend.targets) == 40
    assert socket_owners(backend.port, pids) == pids


async def test_reload_reaches_every_worker(
    backend: Backend, start_workers: Start, tmp_path: Path
) -> None:
    """After the dynamic file changes, every one of 20 new connections sees the new route."""
    sup = await start_workers(dynamic({"app.test": backend.url}))
    assert await sup.fresh_requests("new.test", 4) == [404] * 4
    before = (await sup.workers())["generation"]

    tmp = tmp_path / ".dynamic.yml.tmp"
    tmp.write_text(dynamic({"app.test": backend.url, "new.test": backend.url}))
    os.replace(tmp, sup.dynamic_path)
    await sup.wait_until("the reload in every worker", all_serving(before + 1))

    assert await sup.fresh_requests("new.test", 20) == [200] * 20


def requests_total(exposition: str) -> float:
    total = 0.0
    for line in exposition.splitlines():
        if line.startswith("sluice_entrypoint_requests_total{") and 'entrypoint="web"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_metrics_sum_requests_across_workers(backend: Backend, start_workers: Start) -> None:
    """The supervisor's /metrics counts the requests every worker served."""
    sup = await start_workers(dynamic({"app.test": backend.url}))
    sent = 30
    assert await sup.fresh_requests("app.test", sent) == [200] * sent

    # A worker counts a request just after writing its response: poll, bounded.
    deadline = time.monotonic() + 5
    total = 0.0
    while time.monotonic() < deadline:
        total = requests_total((await sup.api_get("/metrics")).body.decode())
        if total >= sent:
            break
        await asyncio.sleep(0.05)
    assert total >= sent


async def test_killed_worker_is_restarted(backend: Backend, start_workers: Start) -> None:
    """SIGKILL to a worker: the supervisor starts a new one with the current configuration."""
    sup = await start_workers(dynamic({"app.test": backend.url}))
    info = await sup.workers()
    victim = info["processes"][0]["pid"]
    os.kill(victim, signal.SIGKILL)

    def replaced(now: dict[str, Any]) -> bool:
        first = now["processes"][0]
        return first["pid"] != victim and all_serving(info["generation"])(now)

    now = await sup.wait_until("a replacement worker", replaced)
    assert now["processes"][0]["restarts"] == 1
    assert pid_gone(victim)
    assert await sup.fresh_requests("app.test", 20) == [200] * 20


async def test_sigterm_stops_supervisor_and_workers(backend: Backend, start_workers: Start) -> None:
    """SIGTERM to the supervisor: an in-flight request completes, every process exits 0."""
    release = asyncio.Event()
    received = asyncio.Event()

    async def respond_late(target: str) -> bytes:
        received.set()
        await release.wait()
        return b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlate"

    backend.respond = respond_late
    sup = await start_workers(dynamic({"app.test": backend.url}))
    pids = {p["pid"] for p in (await sup.workers())["processes"]}
    in_flight = asyncio.ensure_future(http_request(sup.web, get("app.test", "/")))
    await asyncio.wait_for(received.wait(), 5)

    sup.proc.send_signal(signal.SIGTERM)
    # Answer only once every worker has closed its listener, so the answer
    # has to make its way out through a draining worker.
    assert await refused_within(sup.web, 5), "a worker still accepted connections 5s after SIGTERM"
    assert not in_flight.done()
    release.set()

    reply = await asyncio.wait_for(in_flight, 10)
    assert (reply.status, reply.body) == (200, b"late")
    assert await asyncio.wait_for(sup.proc.wait(), 15) == 0, sup.output()
    assert all(pid_gone(pid) for pid in pids)
    assert "Traceback" not in sup.output()
