"""Fixtures for the plugin's tests: an echo backend and a gateway in the test's loop.

The gateway runs on 127.0.0.1 port 0 with its default middleware registry:
built-ins plus every installed plugin, which is how this package's
``requestId`` is found. Install the package before running these tests
(``pip install -e .`` in this directory).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from gateway.app import Gateway
from gateway.config.errors import ConfigError
from gateway.config.loader import parse_static
from gateway.process import make_providers

from helpers import STATIC


@pytest.fixture
async def backend() -> AsyncIterator[str]:
    """An HTTP server on 127.0.0.1 answering 200 with the request headers it got, as JSON."""

    async def echo(request: web.Request) -> web.Response:
        seen: dict[str, list[str]] = {}
        for name, value in request.headers.items():
            seen.setdefault(name.lower(), []).append(value)
        return web.json_response(seen)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}"
    await runner.cleanup()


Serve = Callable[[str], Awaitable[int]]


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[Serve]:
    """``await serve(dynamic_yaml)`` starts a gateway on it and returns the port; stopped after."""
    running: list[tuple[Gateway, asyncio.Task[None]]] = []

    async def start(text: str) -> int:
        (tmp_path / "dynamic.yml").write_text(text)
        static = parse_static(STATIC, str(tmp_path / "sluice.yml"))
        gateway = Gateway(static, providers=make_providers(static, tmp_path))
        rejected: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        def reject(provider: str, errors: list[ConfigError]) -> None:
            if not rejected.done():
                rejected.set_result(str(errors[0]))

        gateway.on_reject.append(reject)
        task = asyncio.get_running_loop().create_task(gateway.run())
        running.append((gateway, task))
        listening = asyncio.ensure_future(gateway.listening.wait())
        waited: set[asyncio.Future[Any]] = {listening, task, rejected}
        done, _ = await asyncio.wait(
            waited, timeout=10, return_when=asyncio.FIRST_COMPLETED
        )
        listening.cancel()
        if rejected in done:
            pytest.fail(f"configuration rejected: {rejected.result()}")
        if task in done:
            task.result()
        assert listening in done, "gateway did not open its listeners"
        port: int = gateway.entry_points["web"].bound_port
        return port

    yield start
    for gateway, task in running:
        gateway.stop()
        await asyncio.wait_for(task, 30)
