"""Scaffolding shared by the middleware tests: one router behind one middleware, and a gateway.

``config`` builds the dynamic file (router ``app`` using middleware ``mw``);
``serving`` runs it against a fresh RecordingBackend; ``TRUSTING`` is a
static file whose entry point believes X-Forwarded-* from 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from tests.backends import RecordingBackend
from tests.harness import RunningGateway, start_gateway

HOST_RULE = "Host(`app.test`)"

TRUSTING = """entryPoints:
  web:
    address: "127.0.0.1:0"
    forwardedHeaders:
      trustedIPs: ["127.0.0.1/32"]
providers:
  file:
    filename: dynamic.yml
"""


def config(url: str, middleware: str, *, rule: str = HOST_RULE, tls: bool = False) -> str:
    """Router ``app`` on ``rule`` using middleware ``mw``, defined as ``middleware``."""
    tls_line = "\n      tls: {}" if tls else ""
    return f"""http:
  routers:
    app:
      rule: {rule}
      service: app
      middlewares: [mw]{tls_line}
  services:
    app:
      loadBalancer:
        servers: [{{url: "{url}"}}]
  middlewares:
    mw:
      {middleware}
"""


# The line of "mw:" in ``config``'s text (without tls), which load errors name.
MW_LINE = 12


@contextlib.asynccontextmanager
async def serving(
    tmp_path: Path, middleware: str, static: str = "", *, rule: str = HOST_RULE
) -> AsyncIterator[tuple[RunningGateway, RecordingBackend]]:
    """A gateway serving ``config`` for ``middleware`` in front of a new backend."""
    backend = await RecordingBackend().start()
    gw = await start_gateway(tmp_path, config(backend.url, middleware, rule=rule), static=static)
    try:
        yield gw, backend
    finally:
        await gw.stop()
        await backend.close()
