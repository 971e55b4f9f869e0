"""Graceful shutdown of a real ``gateway run`` process on SIGTERM.

The gateway runs as a subprocess of the test on free 127.0.0.1 ports; the
slow backend is a recording server in the test's own event loop, so the test
knows the moment a request is in flight (the backend has it) before it
signals. Readiness is a bounded poll of ``/api/health``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.backends import get, http_request

GATEWAY = Path(sys.executable).with_name("gateway")
STARTUP_TIMEOUT = 15.0


def free_port() -> int:
    """A port nothing listens on now (the gateway binds it a moment later)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class GatewayProcess:
    proc: asyncio.subprocess.Process
    web: int
    api: int
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


Start = Callable[..., Awaitable[GatewayProcess]]


async def wait_ready(gw: GatewayProcess) -> None:
    """Poll /api/health with short requests until 200, the process dies, or time runs out."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if gw.proc.returncode is not None:
            pytest.fail(f"gateway exited with {gw.proc.returncode}:\n{gw.output()}")
        with contextlib.suppress(OSError, asyncio.IncompleteReadError, asyncio.TimeoutError):
            reply = await http_request(gw.api, get("127.0.0.1", "/api/health"))
            if reply.status == 200:
                return
        await asyncio.sleep(0.05)  # probe interval, not synchronisation
    pytest.fail(f"gateway not ready after {STARTUP_TIMEOUT}s:\n{gw.output()}")


@pytest.fixture
async def start_gateway(tmp_path: Path) -> AsyncIterator[Start]:
    """Start ``gateway run`` on free ports; kill whatever is left at teardown, by PID."""
    if not GATEWAY.exists():
        pytest.fail(f"{GATEWAY} is missing: run `.venv/bin/pip install -e .`")
    started: list[GatewayProcess] = []

    async def start(backend_url: str, grace: str = "10s") -> GatewayProcess:
        web, api = free_port(), free_port()
        (tmp_path / "dynamic.yml").write_text(
            "http:\n  routers:\n    app:\n      rule: Host(`app.test`)\n      service: app\n"
            f"  services:\n    app:\n      loadBalancer:\n        servers:\n"
            f"          - url: {backend_url}\n"
        )
        (tmp_path / "sluice.yml").write_text(
            f'entryPoints:\n  web:\n    address: "127.0.0.1:{web}"\n'
            f"    transport:\n      lifeCycle:\n        graceTimeOut: {grace}\n"
            f'providers:\n  file:\n    filename: dynamic.yml\napi:\n  address: "127.0.0.1:{api}"\n'
        )
        log = tmp_path / f"gateway-{len(started)}.log"
        with log.open("wb") as out:
            proc = await asyncio.create_subprocess_exec(
                str(GATEWAY), "run", "--config", str(tmp_path / "sluice.yml"),
                stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out, cwd=tmp_path,
            )  # fmt: skip
        gw = GatewayProcess(proc, web, api, log)
        started.append(gw)
        await wait_ready(gw)
        return gw

    yield start
    for gw in started:
        if gw.proc.returncode is None:
            gw.proc.kill()
            await gw.proc.wait()


Respond = Callable[[str], Awaitable[bytes]]


async def answer_ok(target: str) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class Backend:
    """A keep-alive HTTP/1.1 backend in the test's loop that closes its connections on ``close``.

    Unlike a bare ``asyncio.Server`` on Python 3.11, closing it also closes
    the connections the gateway pooled, so none outlives the test's loop.
    """

    def __init__(self, respond: Respond = answer_ok) -> None:
        self.respond = respond
        self.targets: list[str] = []
        self.handlers: set[asyncio.Task[Any]] = set()

    async def start(self) -> Backend:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self.server.sockets[0].getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        try:
            while True:  # requests without bodies, one after another
                head = await reader.readuntil(b"\r\n\r\n")
                self.targets.append(head.split(b" ", 2)[1].decode())
                writer.write(await self.respond(self.targets[-1]))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            self.handlers.discard(task)

    async def close(self) -> None:
        self.server.close()
        for task in list(self.handlers):
            task.cancel()
        await asyncio.gather(*self.handlers, return_exceptions=True)


@dataclass
class SlowBackend:
    """Answers ``?delay=S`` after S seconds; ``received`` is set once a request arrives."""

    backend: Backend
    received: asyncio.Event


@pytest.fixture
async def slow_backend() -> AsyncIterator[SlowBackend]:
    received = asyncio.Event()

    async def respond(target: str) -> bytes:
        received.set()
        delay = float(parse_qs(urlsplit(target).query).get("delay", ["0"])[0])
        await asyncio.sleep(delay)  # the backend's own slowness, the subject of the test
        return b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nslow"

    backend = await Backend(respond).start()
    yield SlowBackend(backend, received)
    await backend.close()


async def connect_refused(port: int) -> bool:
    """Whether a new TCP connection to 127.0.0.1:port is refused."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2)
    except OSError as exc:
        return exc.errno == errno.ECONNREFUSED
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return False


async def test_sigterm_drains_in_flight_request_and_refuses_new_connections(
    slow_backend: SlowBackend, start_gateway: Start
) -> None:
    """SIGTERM: the in-flight request completes with 200, new connects are refused, exit 0."""
    gw = await start_gateway(slow_backend.backend.url, grace="10s")
    in_flight = asyncio.ensure_future(http_request(gw.web, get("app.test", "/slow?delay=1.5")))
    # Only once the backend holds the request is it certainly in flight in the gateway.
    await asyncio.wait_for(slow_backend.received.wait(), 5)
    gw.proc.send_signal(signal.SIGTERM)

    # The listener closes at once; until it has, a connect may still succeed.
    deadline = time.monotonic() + 1.0
    refused = False
    while not refused and time.monotonic() < deadline:
        refused = await connect_refused(gw.web)
    assert refused, "new connections were still accepted 1s after SIGTERM"
    assert not in_flight.done(), "the in-flight request ended before the listener closed"

    reply = await asyncio.wait_for(in_flight, 5)
    assert (reply.status, reply.body) == (200, b"slow")
    assert await asyncio.wait_for(gw.proc.wait(), 5) == 0
    assert "Traceback" not in gw.output()


async def test_grace_timeout_cuts_requests_that_outlast_it(
    slow_backend: SlowBackend, start_gateway: Start
) -> None:
    """With graceTimeOut 1s a 5s request is cut and the process exits 0 about 1s after SIGTERM."""
    gw = await start_gateway(slow_backend.backend.url, grace="1s")
    in_flight = asyncio.ensure_future(http_request(gw.web, get("app.test", "/slow?delay=5")))
    await asyncio.wait_for(slow_backend.received.wait(), 5)
    signalled = time.monotonic()
    gw.proc.send_signal(signal.SIGTERM)

    assert await asyncio.wait_for(gw.proc.wait(), 4) == 0
    elapsed = time.monotonic() - signalled
    assert 0.9 <= elapsed <= 2.5, f"exited {elapsed:.2f}s after SIGTERM"
    with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
        await asyncio.wait_for(in_flight, 2)
    assert "Traceback" not in gw.output()
