"""Tests for gateway.http.health against real HTTP servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gateway.config.dynamic import DefaultCertificate, HealthCheck, TLSConfig, TLSStore
from gateway.config.errors import ConfigError
from gateway.config.model import frozen_map
from gateway.http.health import HealthChecker, HealthTarget
from gateway.http.tls import build_client_tls, build_server_tls
from tests.certs import make_ca


@dataclass
class Seen:
    method: str
    target: str
    headers: dict[str, str]


# Answers (status, extra header lines) for a request target.
Responder = Callable[[str], tuple[int, str]]


@dataclass
class Backend:
    """A tiny HTTP/1.1 server: answers ``respond(target)`` and records each request."""

    port: int = 0
    status: int = 200
    respond: Responder | None = None
    requests: list[Seen] = field(default_factory=list)
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            line, *fields = head.split("\r\n")
            method, target, _ = line.split(" ")
            headers = {}
            for f in fields:
                if f:
                    name, _, value = f.partition(":")
                    headers[name.lower()] = value.strip()
            # Recorded before answering, so a client that has its answer can
            # count on the request being seen.
            async with self.arrived:
                self.requests.append(Seen(method, target, headers))
                self.arrived.notify_all()
            status, extra = self.respond(target) if self.respond else (self.status, "")
            writer.write(
                f"HTTP/1.1 {status} Whatever\r\n{extra}Content-Length: 2\r\n\r\nhi".encode()
            )
            await writer.drain()
        writer.close()

    async def wait_requests(self, n: int) -> None:
        async with self.arrived:
            await self.arrived.wait_for(lambda: len(self.requests) >= n)


@contextlib.asynccontextmanager
async def running(backend: Backend, ssl_ctx: ssl.SSLContext | None = None) -> AsyncIterator[None]:
    server = await asyncio.start_server(backend.handle, "127.0.0.1", 0, ssl=ssl_ctx)
    backend.port = server.sockets[0].getsockname()[1]
    async with server:
        yield


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    b = Backend()
    async with running(b):
        yield b


def checker(
    url: str,
    on_change: Callable[[HealthTarget, bool], None] = lambda t, up: None,
    ssl_context: ssl.SSLContext | None = None,
    **options: object,
) -> tuple[HealthChecker, HealthTarget]:
    target = HealthTarget(url)
    config = HealthCheck(**options)  # type: ignore[arg-type]
    return HealthChecker(
        config, [target], on_change, service="svc", ssl_context=ssl_context
    ), target


@pytest.mark.parametrize(
    ("base", "path", "expected"),
    [
        ("", "/health", "/health"),
        ("/base", "/health", "/health"),
        ("/base/", "health", "/base/health"),
        ("/base", "health", "/health"),
        ("", "/health?full=1&x=y", "/health?full=1&x=y"),
        ("/api/", "", "/api/"),
    ],
    ids=[
        "absolute",
        "absolute-replaces-base",
        "relative-to-base-dir",
        "relative-replaces-last-segment",
        "query",
        "empty-path-is-server-url",
    ],
)
async def test_path_resolved_against_server_url(
    backend: Backend, base: str, path: str, expected: str
) -> None:
    """The path is resolved against the server URL as a URL reference, as Traefik does."""
    hc, target = checker(backend.url + base, path=path)
    assert await hc.check_once(target)
    assert backend.requests[-1].target == expected


async def test_request_head(backend: Backend) -> None:
    """Method, Host (server host:port), extra headers and Connection: close reach the server."""
    hc, target = checker(backend.url, method="HEAD", headers=frozen_map({"X-Probe": "yes"}))
    assert await hc.check_once(target)
    seen = backend.requests[-1]
    assert seen.method == "HEAD"
    assert seen.headers["host"] == f"127.0.0.1:{backend.port}"
    assert seen.headers["x-probe"] == "yes"
    assert seen.headers["connection"] == "close"


async def test_hostname_overrides_host_header(backend: Backend) -> None:
    """hostname sets the Host header; a Host entry in headers is ignored."""
    hc, target = checker(
        backend.url, hostname="health.internal", headers=frozen_map({"Host": "evil"})
    )
    assert await hc.check_once(target)
    assert backend.requests[-1].headers["host"] == "health.internal"


async def test_port_override(backend: Backend) -> None:
    """port replaces the server's port, and the Host header follows it."""
    hc, target = checker("http://127.0.0.1:1/app", port=backend.port, path="/hc")
    assert await hc.check_once(target)
    assert backend.requests[-1].target == "/hc"
    assert backend.requests[-1].headers["host"] == f"127.0.0.1:{backend.port}"


async def test_scheme_override(backend: Backend) -> None:
    """scheme replaces the server's scheme (an https server URL checked over http)."""
    hc, target = checker(f"https://127.0.0.1:{backend.port}", scheme="http")
    assert await hc.check_once(target)


@pytest.mark.parametrize(
    ("status", "expected_status", "healthy"),
    [
        (200, 0, True),
        (204, 0, True),
        (302, 0, True),
        (404, 0, False),
        (503, 0, False),
        (204, 204, True),
        (200, 204, False),
        (503, 503, True),
    ],
    ids=[
        "200-any",
        "204-any",
        "3xx-any",
        "404-any",
        "503-any",
        "204-wants-204",
        "200-wants-204",
        "503-wants-503",
    ],
)
async def test_status_matching(
    backend: Backend, status: int, expected_status: int, healthy: bool
) -> None:
    """Without status any 2xx/3xx is healthy; with it, only that exact status."""
    backend.status = status
    hc, target = checker(backend.url, status=expected_status, follow_redirects=False)
    assert await hc.check_once(target) is healthy


def redirects(target: str) -> tuple[int, str]:
    routes = {
        "/": (302, "Location: /next\r\n"),
        "/next": (301, "Location: http://127.0.0.1:{port}/final\r\n"),
        "/final": (503, ""),
        "/loop": (307, "Location: /loop\r\n"),
        "/away": (302, "Location: http://127.0.0.2:1/elsewhere\r\n"),
        "/broken": (302, "Location: http://127.0.0.1:99999/\r\n"),
    }
    return routes[target]


@pytest.mark.parametrize(
    ("path", "follow", "healthy", "targets"),
    [
        ("/", True, False, ["/", "/next", "/final"]),
        ("/", False, True, ["/"]),
        ("/loop", True, False, ["/loop"] * 11),
        ("/away", True, True, ["/away"]),
        ("/broken", True, False, ["/broken"]),
    ],
    ids=[
        "followed-to-503",
        "not-followed",
        "loop-gives-up",
        "other-server-not-followed",
        "invalid-location",
    ],
)
async def test_redirects(
    backend: Backend, path: str, follow: bool, healthy: bool, targets: list[str]
) -> None:
    """Redirects on the same server are followed (10 at most); the final status decides."""

    def respond(target: str) -> tuple[int, str]:
        status, extra = redirects(target)
        return status, extra.replace("{port}", str(backend.port))

    backend.respond = respond
    hc, target = checker(backend.url, path=path, follow_redirects=follow)
    assert await hc.check_once(target) is healthy
    assert [r.target for r in backend.requests] == targets


@contextlib.contextmanager
def silent_listener() -> Iterator[int]:
    """A port that accepts connections (kernel backlog) but never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_timeout_is_down() -> None:
    """A server that never answers is down once timeout passes."""
    with silent_listener() as port:
        hc, target = checker(f"http://127.0.0.1:{port}", timeout=0.05)
        assert not await hc.check_once(target)


async def test_refused_is_down() -> None:
    """A refused connection is down."""
    hc, target = checker(f"http://127.0.0.1:{closed_port()}")
    assert not await hc.check_once(target)


async def test_garbage_response_is_down() -> None:
    """A response that is not HTTP is down."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        hc, target = checker(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
        assert not await hc.check_once(target)


async def test_interim_response_skipped(backend: Backend) -> None:
    """A 100 Continue before the real response is skipped."""
    backend.respond = lambda target: (100, "\r\nHTTP/1.1 204 No Content\r\n")
    hc, target = checker(backend.url, status=204)
    assert await hc.check_once(target)


async def test_https_verification_follows_transport(tmp_path: Path) -> None:
    """https checks verify like the serversTransport: insecure passes, system roots do not."""
    ca = make_ca(tmp_path)
    crt, key = ca.issue(tmp_path, ["127.0.0.1"])
    # Clients send no SNI for an IP address, so the server answers with its default.
    store = TLSStore(default_certificate=DefaultCertificate(cert_file=str(crt), key_file=str(key)))
    tls = build_server_tls(TLSConfig(stores=frozen_map({"default": store})))
    b = Backend()
    async with running(b, tls.context_for()):
        url = f"https://127.0.0.1:{b.port}"
        insecure, target = checker(url, ssl_context=build_client_tls(True, (), ""))
        assert await insecure.check_once(target)
        trusted, _ = checker(url, ssl_context=build_client_tls(False, (str(ca.cert_path),), ""))
        assert await trusted.check_once(target)
        system_roots, _ = checker(url)
        assert not await system_roots.check_once(target)
    assert len(b.requests) == 2


async def test_run_reports_transitions_only(backend: Backend) -> None:
    """on_change fires once per transition: down after failures, up after recovery."""
    changes: asyncio.Queue[tuple[HealthTarget, bool]] = asyncio.Queue()
    hc, target = checker(
        backend.url, lambda t, up: changes.put_nowait((t, up)), interval=0.005, timeout=1.0
    )
    task = asyncio.create_task(hc.run())
    try:
        await backend.wait_requests(3)  # healthy and staying so: no event
        backend.status = 503
        assert await changes.get() == (target, False)
        assert hc.status[target] is False
        seen = len(backend.requests)
        await backend.wait_requests(seen + 3)  # still down: no event
        backend.status = 200
        assert await changes.get() == (target, True)
        await backend.wait_requests(len(backend.requests) + 3)
        assert changes.empty()
        assert hc.status[target] is True
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_unhealthy_interval_paces_down_servers(backend: Backend) -> None:
    """A down server is re-checked every unhealthyInterval, not every interval."""
    backend.status = 503
    changes: asyncio.Queue[bool] = asyncio.Queue()
    hc, _ = checker(
        backend.url,
        lambda t, up: changes.put_nowait(up),
        interval=3600.0,
        unhealthy_interval=0.005,
    )
    task = asyncio.create_task(hc.run())
    try:
        assert await changes.get() is False  # the first check runs at once
        await backend.wait_requests(3)
        backend.status = 200
        assert await changes.get() is True
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_initial_status_carries_over(backend: Backend) -> None:
    """A target seeded as down reports its recovery; an unseeded one starts up."""
    changes: asyncio.Queue[tuple[HealthTarget, bool]] = asyncio.Queue()
    seeded, fresh = HealthTarget(backend.url), HealthTarget(backend.url + "/other")
    hc = HealthChecker(
        HealthCheck(interval=0.005),
        [seeded, fresh],
        lambda t, up: changes.put_nowait((t, up)),
        service="svc",
        initial_status={seeded: False},
    )
    assert dict(hc.status) == {seeded: False, fresh: True}
    task = asyncio.create_task(hc.run())
    try:
        assert await changes.get() == (seeded, True)
        await backend.wait_requests(len(backend.requests) + 4)
        assert changes.empty()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_failing_listener_does_not_stop_checks(backend: Backend) -> None:
    """An on_change callback that raises is logged and checking goes on."""
    backend.status = 503
    calls: list[bool] = []

    def explode(target: HealthTarget, up: bool) -> None:
        calls.append(up)
        raise RuntimeError("listener bug")

    hc, _ = checker(backend.url, explode, interval=0.005)
    task = asyncio.create_task(hc.run())
    try:
        await backend.wait_requests(3)
        assert calls == [False]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.parametrize(
    ("options", "url", "needle"),
    [
        ({"mode": "grpc"}, "http://127.0.0.1:1", "mode"),
        ({"headers": frozen_map({"X-A": "b\r\nInjected: 1"})}, "http://127.0.0.1:1", "header"),
        ({"method": "GET /x"}, "http://127.0.0.1:1", "method"),
        ({"hostname": "a\r\nX: y"}, "http://127.0.0.1:1", "hostname"),
        ({"scheme": "ftp"}, "http://127.0.0.1:1", "not an ASCII http"),
        ({}, "ftp://127.0.0.1:1", "not an ASCII http"),
        ({}, "http://127.0.0.1:99999", "not an ASCII http"),
        ({"path": "/héalth"}, "http://127.0.0.1:1", "not an ASCII http"),
    ],
    ids=[
        "grpc-mode",
        "header-injection",
        "method-injection",
        "hostname-injection",
        "bad-scheme-override",
        "bad-scheme",
        "bad-port",
        "non-ascii-path",
    ],
)
def test_invalid_configuration(options: dict[str, Any], url: str, needle: str) -> None:
    """Unsupported modes, unsafe headers and non-HTTP server URLs are ConfigErrors."""
    with pytest.raises(ConfigError, match=needle):
        HealthChecker(HealthCheck(**options), [HealthTarget(url)], print, service="svc")
