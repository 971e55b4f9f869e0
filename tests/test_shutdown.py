"""Graceful shutdown of a real ``gateway run`` process on SIGTERM.

The gateway runs as a subprocess of the test on free 127.0.0.1 ports; the
slow backend is a recording server in the test's own event loop, so the test
knows the moment a request is in flight (the backend has it) before it
signals. Readiness is a bounded poll of ``/api/health``.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.backends import get, http_request
from tests.subprocesses import Backend, GatewayProcess, free_port, launch, refused_within


@dataclass
class Listening(GatewayProcess):
    """A ``gateway run`` and the ports of its ``web`` entry point and its API."""

    web: int
    api: int


Start = Callable[..., Awaitable[Listening]]


@pytest.fixture
async def start_gateway(tmp_path: Path) -> AsyncIterator[Start]:
    """Start ``gateway run`` on free ports; kill whatever is left at teardown, by PID."""
    started: list[Listening] = []

    async def start(backend_url: str, grace: str = "10s") -> Listening:
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
        proc = await launch("run", "--config", str(tmp_path / "sluice.yml"), cwd=tmp_path, log=log)
        gw = Listening(proc, log, web=web, api=api)
        started.append(gw)
        await gw.wait_ready(api)
        return gw

    yield start
    for gw in started:
        await gw.kill()


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
    assert await refused_within(gw.web, 1.0), "new connections were still accepted 1s after SIGTERM"
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
