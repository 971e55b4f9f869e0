"""Helpers for tests that run the installed ``gateway`` command as a real subprocess.

Owns the pieces those tests share: the path of the console script, free
127.0.0.1 ports, starting ``gateway ARGS`` with its output in a log file,
a bounded readiness poll that fails with that log when the process dies or
time runs out, stopping by PID, and a keep-alive backend in the test's own
event loop. Every process started here is one the test must stop; nothing
here sleeps to synchronise, only to pace a poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.backends import get, http_request

GATEWAY = Path(sys.executable).with_name("gateway")
STARTUP_TIMEOUT = 15.0
PROBE_INTERVAL = 0.05

T = TypeVar("T")


def require_gateway() -> None:
    """Fail the test (not error it) when the console script is not installed."""
    if not GATEWAY.exists():
        pytest.fail(f"{GATEWAY} is missing: run `.venv/bin/pip install -e .`")


def free_port() -> int:
    """A port nothing listens on now (the gateway binds it a moment later)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def launch(*args: str, cwd: Path, log: Path) -> asyncio.subprocess.Process:
    """Start ``gateway ARGS`` in ``cwd`` with stdout and stderr going to ``log``."""
    require_gateway()
    with log.open("wb") as out:
        return await asyncio.create_subprocess_exec(
            str(GATEWAY), *args,
            stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out, cwd=cwd,
        )  # fmt: skip


@dataclass
class GatewayProcess:
    """A running ``gateway`` subprocess and the file its output goes to."""

    proc: asyncio.subprocess.Process
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    async def poll(
        self,
        what: str,
        probe: Callable[[], Awaitable[T | None]],
        *,
        timeout: float = STARTUP_TIMEOUT,
        tolerate: tuple[type[Exception], ...] = (),
    ) -> T:
        """Call ``probe`` until it returns a value; fail if the process exits or time runs out.

        Connection errors are expected while the process starts, so they only
        mean "not yet"; ``tolerate`` adds further exceptions that mean the same.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.returncode is not None:
                pytest.fail(f"gateway exited with {self.proc.returncode}:\n{self.output()}")
            with contextlib.suppress(OSError, asyncio.IncompleteReadError, *tolerate):
                result = await probe()
                if result is not None:
                    return result
            await asyncio.sleep(PROBE_INTERVAL)  # probe interval, not synchronisation
        pytest.fail(f"timed out after {timeout}s waiting for {what}:\n{self.output()}")

    async def wait_ready(self, api: int) -> None:
        """Poll /api/health on 127.0.0.1:api with short requests until it answers 200."""

        async def healthy() -> bool | None:
            reply = await http_request(api, get("127.0.0.1", "/api/health"))
            return True if reply.status == 200 else None

        await self.poll("/api/health to answer 200", healthy)

    async def kill(self) -> None:
        """SIGKILL the process if it still runs, and reap it."""
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()

    async def stop(self, grace: float, *, kill_first: Iterable[int] = ()) -> None:
        """SIGTERM, wait up to ``grace`` seconds, then SIGKILL ``kill_first`` and the process.

        ``kill_first`` names children (workers) that a killed parent would
        leave behind.
        """
        if self.proc.returncode is None:
            self.proc.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), grace)
        if self.proc.returncode is None:
            for pid in kill_first:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        await self.kill()


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


async def refused_within(port: int, seconds: float) -> bool:
    """Whether new connections to 127.0.0.1:port are refused within ``seconds``.

    A listener being closed may still accept a connect or two, so this
    tries again, each time on a fresh connection, until refused or too late.
    """
    deadline = time.monotonic() + seconds
    refused = False
    while not refused and time.monotonic() < deadline:
        refused = await connect_refused(port)
    return refused


Respond = Callable[[str], Awaitable[bytes]]


async def answer_ok(target: str) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class Backend:
    """A keep-alive HTTP/1.1 backend in the test's loop that closes its connections on ``close``.

    Unlike a bare ``asyncio.Server`` on Python 3.11, closing it also closes
    the connections the gateway pooled, so none outlives the test's loop.
    ``targets`` lists the request targets it received, in order.
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
