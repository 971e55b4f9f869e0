"""Tests for gateway.l4.tcp_health against real TCP (and TLS) servers on 127.0.0.1.

``Backend`` is a scriptable server the test starts: it reads the request it
expects, answers, and counts the connections it sees open and close. Every
scenario runs on asyncio's loop and on uvloop (the gateway's), whose TLS and
close paths differ, and must end with every connection its backends accepted
closed by the checker (``run`` waits for that): that is how "a check closes
what it opens" is checked everywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvloop

from gateway.config.errors import ConfigError
from gateway.config.l4 import TCPHealthCheck
from gateway.l4.tcp_health import MAX_PAYLOAD, Address, TCPHealthChecker
from tests.certs import make_ca

WAIT = 10.0
LOGGER = "gateway.l4.tcp_health"
LOOPS = [
    pytest.param(asyncio.new_event_loop, id="asyncio"),
    pytest.param(uvloop.new_event_loop, id="uvloop"),
]


@dataclass(eq=False)
class Backend:
    """Reads ``request_len`` bytes, writes each of ``reply`` (drained), then waits for EOF.

    ``silent``: answer nothing; ``close_early``: close right after replying;
    ``endless``: after ``reply``, keep writing until the client goes away.
    """

    reply: tuple[bytes, ...] = ()
    request_len: int = 0
    silent: bool = False
    close_early: bool = False
    endless: bool = False
    tls: ssl.SSLContext | None = None
    port: int = 0
    received: list[bytes] = field(default_factory=list)
    opened: int = 0
    closed: int = 0
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    server: asyncio.Server | None = None

    @property
    def address(self) -> Address:
        return ("127.0.0.1", self.port)

    async def start(self) -> None:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", self.port, ssl=self.tls)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening (later connections are refused); open ones go on."""
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._count(opened=1)
        try:
            with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
                self.received.append(await reader.readexactly(self.request_len))
                if not self.silent:
                    for piece in self.reply:
                        writer.write(piece)
                        await writer.drain()
                    while self.endless:
                        writer.write(b"x" * 65536)
                        await writer.drain()
                if not self.close_early:
                    while await reader.read(65536):
                        pass
        finally:
            writer.close()
            await self._count(closed=1)

    async def _count(self, *, opened: int = 0, closed: int = 0) -> None:
        async with self.changed:
            self.opened += opened
            self.closed += closed
            self.changed.notify_all()

    async def wait(self, predicate: Callable[[Backend], bool]) -> None:
        async with self.changed:
            await self.changed.wait_for(lambda: predicate(self))


@dataclass
class Harness:
    """Starts backends for one scenario and stops them after it."""

    backends: list[Backend] = field(default_factory=list)

    async def serve(self, **options: Any) -> Backend:
        backend = Backend(**options)
        await backend.start()
        self.backends.append(backend)
        return backend

    async def all_closed(self) -> None:
        for backend in self.backends:
            await backend.wait(lambda b: b.closed == b.opened)

    async def stop(self) -> None:
        for backend in self.backends:
            if backend.server is not None:
                backend.server.close()
                await backend.server.wait_closed()


Scenario = Callable[[Harness], Coroutine[Any, Any, None]]
Run = Callable[[Scenario], None]


@pytest.fixture(params=LOOPS)
def run(request: pytest.FixtureRequest) -> Run:
    """Run a scenario on the parametrised loop; then every backend connection must be closed."""

    def run(scenario: Scenario) -> None:
        async def bounded() -> None:
            harness = Harness()
            try:
                async with asyncio.timeout(WAIT):
                    await scenario(harness)
                    await harness.all_closed()
            finally:
                await harness.stop()

        with asyncio.Runner(loop_factory=request.param) as runner:
            runner.run(bounded())

    return run


@pytest.fixture
def refused_port() -> int:
    """A port on 127.0.0.1 with nothing listening (bound, never listened, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@dataclass
class Changes:
    """Records on_change calls; ``next`` waits for the next one."""

    seen: list[tuple[Address, bool]] = field(default_factory=list)
    queue: asyncio.Queue[tuple[Address, bool]] = field(default_factory=asyncio.Queue)

    def __call__(self, target: Address, up: bool) -> None:
        self.seen.append((target, up))
        self.queue.put_nowait((target, up))

    async def next(self) -> tuple[Address, bool]:
        return await self.queue.get()


def checker(
    targets: list[Address],
    on_change: Callable[[Address, bool], None],
    *,
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    initial_status: dict[Address, bool] | None = None,
    **options: Any,
) -> TCPHealthChecker:
    return TCPHealthChecker(
        TCPHealthCheck(**options),
        targets,
        on_change,
        service="db@file",
        initial_status=initial_status,
        ssl_context=ssl_context,
        server_hostname=server_hostname,
    )


@contextlib.asynccontextmanager
async def running(hc: TCPHealthChecker) -> AsyncIterator[None]:
    """``hc.run()`` as a task for the duration of the block, cancelled after it."""
    task = asyncio.create_task(hc.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
def warned(caplog: pytest.LogCaptureFixture) -> Iterator[Callable[[], list[str]]]:
    """The checker's WARNING messages so far."""
    with caplog.at_level(logging.DEBUG, LOGGER):
        yield lambda: [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def down(backend: Backend | int, reason: str) -> str:
    port = backend if isinstance(backend, int) else backend.port
    return f"tcp service db@file: server 127.0.0.1:{port} is down: {reason}"


# --- one round -------------------------------------------------------------------


def test_connect_only_up(run: Run) -> None:
    """Without send or expect, a completed connection is healthy; no transition, no event."""
    changes = Changes()

    async def scenario(h: Harness) -> None:
        backend = await h.serve()
        hc = checker([backend.address], changes)
        assert await hc.check_once() == {backend.address: True}
        assert dict(hc.status) == {backend.address: True}
        assert backend.opened == 1

    run(scenario)
    assert changes.seen == []


def test_refused_is_down_and_logged_once(
    run: Run, refused_port: int, warned: Callable[[], list[str]]
) -> None:
    """A refused connection is down: one event and one WARNING with the reason, however often."""
    target = ("127.0.0.1", refused_port)
    changes = Changes()

    async def scenario(h: Harness) -> None:
        hc = checker([target], changes)
        assert await hc.check_once() == {target: False}
        assert await hc.check_once() == {target: False}

    run(scenario)
    assert changes.seen == [(target, False)]
    assert warned() == [down(refused_port, f"connection refused (port {refused_port})")]


@pytest.mark.parametrize(
    ("send", "request_len", "reply", "expect", "reason"),
    [
        ("PING\r\n", 6, (b"+PONG\r\n",), "+PONG\r\n", None),
        ("PING\r\n", 6, (b"+PONG\r\nmore to come",), "+PONG", None),
        ("", 0, (b"220 smtp.example ESMTP\r\n",), "220 ", None),
        ("hello", 5, (), "", None),
        ("PING", 4, (b"+PO", b"NG"), "+PONG", None),
        ("PING", 4, (b"-ERR\r\n",), "+PONG", 'unexpected reply "-ERR\\r"'),
        ("PING", 4, (b"+PONK",), "+PONG", 'unexpected reply "+PONK"'),
        ("", 0, (b"\r\nOK",), "OK\r\n", 'unexpected reply "\\r\\nOK"'),
        ("", 0, (b"b" * 100,), "a" * 100, 'unexpected reply "' + "b" * 64 + '"'),
    ],
    ids=[
        "exact-reply",
        "reply-begins-with-expect",
        "expect-without-send",
        "send-without-expect",
        "reply-in-two-writes",
        "mismatch-first-byte",
        "mismatch-last-byte",
        "mismatch-escaped",
        "mismatch-quoted-to-64-bytes",
    ],
)
def test_send_and_expect(
    run: Run,
    warned: Callable[[], list[str]],
    send: str,
    request_len: int,
    reply: tuple[bytes, ...],
    expect: str,
    reason: str | None,
) -> None:
    """send reaches the server; the reply must begin with expect, as Traefik compares it."""
    logged: list[str] = []

    async def scenario(h: Harness) -> None:
        backend = await h.serve(request_len=request_len, reply=reply)
        hc = checker([backend.address], Changes(), send=send, expect=expect)
        assert await hc.check_once() == {backend.address: reason is None}
        assert backend.received == [send.encode()]
        if reason is not None:
            logged.append(down(backend, reason))

    run(scenario)
    assert warned() == logged


def test_silent_server_times_out(run: Run, warned: Callable[[], list[str]]) -> None:
    """A server that accepts but never answers is down once timeout passes."""
    logged: list[str] = []

    async def scenario(h: Harness) -> None:
        backend = await h.serve(request_len=4, silent=True)
        hc = checker([backend.address], Changes(), send="PING", expect="PONG", timeout=0.05)
        assert await hc.check_once() == {backend.address: False}
        logged.append(down(backend, "timeout after 0.05s waiting for the reply"))

    run(scenario)
    assert warned() == logged


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ((), "connection closed after 0 of 4 bytes"),
        ((b"PO",), 'connection closed after 2 of 4 bytes "PO"'),
    ],
    ids=["before-replying", "mid-reply"],
)
def test_early_close_is_down(
    run: Run, warned: Callable[[], list[str]], reply: tuple[bytes, ...], reason: str
) -> None:
    """A server that closes before the whole expected reply arrived is down."""
    logged: list[str] = []

    async def scenario(h: Harness) -> None:
        backend = await h.serve(reply=reply, close_early=True)
        hc = checker([backend.address], Changes(), expect="PONG")
        assert await hc.check_once() == {backend.address: False}
        logged.append(down(backend, reason))

    run(scenario)
    assert warned() == logged


def test_endless_reply_read_only_to_expect(run: Run) -> None:
    """A server that never stops writing is judged on the first len(expect) bytes, then closed."""

    async def scenario(h: Harness) -> None:
        backend = await h.serve(reply=(b"PONG",), endless=True)
        hc = checker([backend.address], Changes(), expect="PONG")
        assert await hc.check_once() == {backend.address: True}

    run(scenario)


def test_port_overrides_server_port(run: Run, refused_port: int) -> None:
    """port sends the check to the server's host on that port; status keeps the server's key."""
    target = ("127.0.0.1", refused_port)

    async def scenario(h: Harness) -> None:
        backend = await h.serve(request_len=4, reply=(b"PONG",))
        hc = checker([target], Changes(), port=backend.port, send="PING", expect="PONG")
        assert await hc.check_once() == {target: True}
        assert backend.received == [b"PING"]

    run(scenario)


def test_targets_checked_concurrently(run: Run) -> None:
    """One round checks every target at once: both connections open before either times out."""

    async def scenario(h: Harness) -> None:
        a = await h.serve(silent=True)
        b = await h.serve(silent=True)
        hc = checker([a.address, b.address], Changes(), expect="x", timeout=1.0)
        round_ = asyncio.ensure_future(hc.check_once())
        await a.wait(lambda s: s.opened == 1)
        await b.wait(lambda s: s.opened == 1)
        assert not round_.done()
        assert await round_ == {a.address: False, b.address: False}

    run(scenario)


def test_initial_status_sets_first_transition(run: Run) -> None:
    """The first verdict fires on_change only where it differs from initial_status."""
    changes = Changes()

    async def scenario(h: Harness) -> None:
        a = await h.serve()
        b = await h.serve()
        initial = {a.address: False, b.address: True}
        hc = checker([a.address, b.address], changes, initial_status=initial)
        assert dict(hc.status) == initial
        await hc.check_once()
        assert changes.seen == [(a.address, True)]
        assert dict(hc.status) == {a.address: True, b.address: True}

    run(scenario)


def test_listener_error_is_contained(
    run: Run, refused_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    """An on_change that raises is logged; the verdict still stands."""
    target = ("127.0.0.1", refused_port)

    def broken(target: Address, up: bool) -> None:
        raise RuntimeError("listener bug")

    async def scenario(h: Harness) -> None:
        hc = checker([target], broken)
        assert await hc.check_once() == {target: False}
        assert hc.status[target] is False

    with caplog.at_level(logging.ERROR, LOGGER):
        run(scenario)
    assert any(r.levelno == logging.ERROR and r.exc_info for r in caplog.records)


@pytest.mark.parametrize("key", ["send", "expect"], ids=["send", "expect"])
def test_payload_over_traefik_limit_rejected(key: str) -> None:
    """send or expect over 65535 bytes is a ConfigError naming the key."""
    options: dict[str, Any] = {key: "x" * (MAX_PAYLOAD + 1)}
    config = TCPHealthCheck(**options)
    with pytest.raises(ConfigError) as info:
        TCPHealthChecker(config, [], lambda t, up: None, service="db@file")
    assert f"tcp.services.db@file.loadBalancer.healthCheck.{key}" in str(info.value)


# --- TLS -------------------------------------------------------------------------


@dataclass
class TLSPair:
    server: ssl.SSLContext
    client: ssl.SSLContext  # trusts the server's CA


def tls_pair(tmp_path: Path, names: list[str]) -> TLSPair:
    ca = make_ca(tmp_path)
    crt, key = ca.issue(tmp_path, names)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(crt, key)
    return TLSPair(server, ssl.create_default_context(cafile=str(ca.cert_path)))


def test_tls_check(run: Run, tmp_path: Path) -> None:
    """With ssl_context the check handshakes, verifies and exchanges send/expect over TLS."""
    tls = tls_pair(tmp_path, ["127.0.0.1"])

    async def scenario(h: Harness) -> None:
        backend = await h.serve(tls=tls.server, request_len=4, reply=(b"PONG",))
        hc = checker(
            [backend.address], Changes(), ssl_context=tls.client, send="PING", expect="PONG"
        )
        assert await hc.check_once() == {backend.address: True}
        assert backend.received == [b"PING"]

    run(scenario)


def test_tls_server_hostname(run: Run, tmp_path: Path) -> None:
    """server_hostname is the name verified; without it the target's host must match."""
    tls = tls_pair(tmp_path, ["backend.internal"])

    async def scenario(h: Harness) -> None:
        backend = await h.serve(tls=tls.server)
        named = checker(
            [backend.address], Changes(), ssl_context=tls.client, server_hostname="backend.internal"
        )
        assert await named.check_once() == {backend.address: True}
        by_host = checker([backend.address], Changes(), ssl_context=tls.client)
        assert await by_host.check_once() == {backend.address: False}

    run(scenario)


def test_tls_untrusted_certificate_is_down(
    run: Run, tmp_path: Path, warned: Callable[[], list[str]]
) -> None:
    """A certificate the context does not trust fails the check with the TLS reason."""
    tls = tls_pair(tmp_path, ["127.0.0.1"])

    async def scenario(h: Harness) -> None:
        backend = await h.serve(tls=tls.server)
        hc = checker([backend.address], Changes(), ssl_context=ssl.create_default_context())
        assert await hc.check_once() == {backend.address: False}

    run(scenario)
    [message] = warned()
    assert "SSLCertVerificationError connecting" in message


def test_plain_check_of_tls_server_is_down(run: Run, tmp_path: Path) -> None:
    """Without ssl_context, a TLS server's answer to plain bytes is not the expected reply."""
    tls = tls_pair(tmp_path, ["127.0.0.1"])

    async def scenario(h: Harness) -> None:
        backend = await h.serve(tls=tls.server)
        hc = checker([backend.address], Changes(), send="PING\r\n", expect="PONG", timeout=2.0)
        assert await hc.check_once() == {backend.address: False}

    run(scenario)


# --- run -------------------------------------------------------------------------


def test_run_reports_transitions(run: Run, warned: Callable[[], list[str]]) -> None:
    """run fires on_change once per transition: down when the server goes, up when it is back."""
    changes = Changes()
    address: list[Address] = []

    async def scenario(h: Harness) -> None:
        backend = await h.serve()
        address.append(backend.address)
        hc = checker([backend.address], changes, interval=0.005, timeout=1.0)
        async with running(hc):
            await backend.wait(lambda b: b.closed >= 3)  # healthy and staying so: no event
            assert changes.seen == []
            await backend.stop()
            assert await changes.next() == (backend.address, False)
            await backend.start()  # on the same port again
            assert await changes.next() == (backend.address, True)
            await backend.wait(lambda b: b.closed >= 5)

    run(scenario)
    assert changes.seen == [(address[0], False), (address[0], True)]
    assert len(warned()) == 1


@pytest.mark.parametrize(
    ("interval", "unhealthy_interval", "frequent", "once"),
    [
        (3600.0, 0.005, ["down"], "up"),
        (0.005, 3600.0, ["up"], "down"),
        (0.005, 0.0, ["up", "down"], ""),
    ],
    ids=["down-rechecked-sooner", "down-rechecked-later", "unset-means-interval"],
)
def test_unhealthy_interval_paces_down_servers(
    run: Run, interval: float, unhealthy_interval: float, frequent: list[str], once: str
) -> None:
    """A down server is re-checked every unhealthyInterval, an up one every interval."""
    changes = Changes()

    async def scenario(h: Harness) -> None:
        backends = {"up": await h.serve(reply=(b"OK",)), "down": await h.serve(reply=(b"NO",))}
        hc = checker(
            [b.address for b in backends.values()],
            changes,
            expect="OK",
            interval=interval,
            unhealthy_interval=unhealthy_interval,
        )
        async with running(hc):
            assert await changes.next() == (backends["down"].address, False)
            for name in frequent:
                await backends[name].wait(lambda b: b.closed >= 4)
            if once:
                await backends[once].wait(lambda b: b.closed >= 1)
                assert backends[once].opened == 1
        assert dict(hc.status) == {backends["up"].address: True, backends["down"].address: False}

    run(scenario)


def test_cancel_mid_check_closes_connection(run: Run) -> None:
    """Cancelling run while a check waits for its reply closes that connection."""

    async def scenario(h: Harness) -> None:
        backend = await h.serve(silent=True)
        hc = checker([backend.address], Changes(), expect="PONG", timeout=3600.0)
        async with running(hc):
            await backend.wait(lambda b: b.opened == 1)
        # ``run`` then waits for the backend to see that connection closed.

    run(scenario)
