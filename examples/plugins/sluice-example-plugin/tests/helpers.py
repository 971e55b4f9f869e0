"""Plain helpers for the plugin's tests: configuration text, a client, ``gateway check``."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

# The console script installed beside this interpreter (``gateway check``).
GATEWAY = Path(sys.executable).with_name("gateway")

STATIC = """entryPoints:
  web:
    address: "127.0.0.1:0"
providers:
  file:
    filename: dynamic.yml
"""


def dynamic(backend: str, middleware: str, *, host: str = "app.test") -> str:
    """One router for ``host`` through middleware ``mw`` (defined by ``middleware``)."""
    return f"""http:
  routers:
    app:
      rule: Host(`{host}`)
      service: app
      middlewares: [mw]
  services:
    app:
      loadBalancer:
        servers: [{{url: "{backend}"}}]
  middlewares:
    mw:
{middleware}
"""


@dataclass
class Answer:
    status: int
    headers: dict[str, list[str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None

    def echoed(self) -> dict[str, list[str]]:
        """The request headers the echo backend received, by lower-case name."""
        seen: dict[str, list[str]] = json.loads(self.body)
        return seen




async def fetch(
    port: int, path: str = "/", *, host: str = "app.test", headers: Iterable[tuple[str, str]] = ()
) -> Answer:
    """GET ``path`` from the gateway on 127.0.0.1:port with Host ``host`` and ``headers``."""
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        sent = [("Host", host), *headers]
        async with session.get(f"http://127.0.0.1:{port}{path}", headers=sent) as reply:
            got: dict[str, list[str]] = {}
            for name, value in reply.headers.items():
                got.setdefault(name.lower(), []).append(value)
            return Answer(reply.status, got, await reply.read())


async def gateway_check(config: Path) -> tuple[int, str]:
    """Run ``gateway check --config config``; its exit code and output."""
    if not GATEWAY.exists():
        pytest.fail(f"{GATEWAY} is missing: install sluice into this environment")
    proc = await asyncio.create_subprocess_exec(
        str(GATEWAY),
        "check",
        "--config",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")
