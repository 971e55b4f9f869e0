"""Entry points declared by the dynamic configuration open and close as it changes."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.backends import RecordingBackend, closed_port, get, http_request
from tests.harness import start_gateway


def config(url: str, port: int | None, host: str = "127.0.0.1") -> str:
    entry = f'entryPoints:\n  extra:\n    address: "{host}:{port}"\n' if port is not None else ""
    return entry + f"""
http:
  routers:
    app:
      rule: Host(`app.test`)
      service: app
  services:
    app:
      loadBalancer:
        servers: [{{url: "{url}"}}]
"""


async def refused(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionRefusedError:
        return True
    writer.close()
    return False


async def test_declared_entry_point_serves_and_goes_away(tmp_path: Path) -> None:
    """A dynamic entry point serves the routers; removing it closes the port; re-adding reopens."""
    backend = await RecordingBackend().start()
    port = await closed_port()
    gw = await start_gateway(tmp_path, config(backend.url, port))
    try:
        assert (await http_request(port, get("app.test"))).status == 200
        await gw.reload(config(backend.url, None))
        await gw.gateway.reopens[-1]
        assert await refused(port)
        assert (await http_request(gw.port(), get("app.test"))).status == 200
        await gw.reload(config(backend.url, port))
        await gw.gateway.reopens[-1]
        assert (await http_request(port, get("app.test"))).status == 200
    finally:
        await gw.stop()
        await backend.close()


async def test_changed_address_moves_the_entry_point(tmp_path: Path) -> None:
    """A new address for the same entry point name closes the old port and opens the new."""
    backend = await RecordingBackend().start()
    first, second = await closed_port(), await closed_port()
    gw = await start_gateway(tmp_path, config(backend.url, first))
    try:
        await gw.reload(config(backend.url, second))
        await gw.gateway.reopens[-1]
        assert await refused(first)
        assert (await http_request(second, get("app.test"))).status == 200
    finally:
        await gw.stop()
        await backend.close()


async def test_redefining_a_static_entry_point_is_rejected(tmp_path: Path) -> None:
    """A dynamic entry point may not take a static one's name; the last good config stays."""
    backend = await RecordingBackend().start()
    gw = await start_gateway(tmp_path, config(backend.url, None))
    try:
        errors = await gw.reload(
            'entryPoints:\n  web:\n    address: "127.0.0.1:1"\n', expect_ok=False
        )
        assert "already defined in the static configuration" in str(errors)
        assert (await http_request(gw.port(), get("app.test"))).status == 200
    finally:
        await gw.stop()
        await backend.close()
