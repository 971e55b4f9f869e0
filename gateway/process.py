"""Process-level assembly for ``gateway run``: logging, event loop, API, workers.

``run_process`` is what the CLI calls. With one worker it serves in this
process; with more it becomes the supervisor of ``gateway.workers``.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

from gateway import __version__
from gateway.access_log import AccessLog
from gateway.app import Gateway
from gateway.config.static import StaticConfig
from gateway.metrics import Metrics, create_metrics
from gateway.observer import Observer
from providers.base import Provider
from providers.file.provider import FileProvider

log = logging.getLogger(__name__)

QUICKSTART_BACKEND = ("127.0.0.1", 8081)


def setup_logging(static: StaticConfig) -> None:
    level: int = getattr(logging, static.log.level.upper(), logging.INFO)
    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    if static.log.file_path:
        logging.basicConfig(level=level, format=fmt, filename=static.log.file_path)
    else:
        logging.basicConfig(level=level, format=fmt, stream=sys.stderr)


def install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency
        log.warning("uvloop is not available; running on the default asyncio loop")
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def make_providers(static: StaticConfig, base_dir: Path) -> list[Provider]:
    providers: list[Provider] = []
    if static.providers.file is not None:
        providers.append(FileProvider(static.providers.file, base_dir=base_dir))
    return providers


def run_process(
    static: StaticConfig, *, base_dir: Path, workers: int = 1, quickstart: bool = False
) -> int:
    """Serve until SIGTERM/SIGINT; returns the exit status."""
    setup_logging(static)
    if workers > 1:
        from gateway.workers import run_supervisor

        return run_supervisor(static, base_dir=base_dir, workers=workers, quickstart=quickstart)
    install_uvloop()
    metrics = (
        create_metrics(static.metrics.prometheus) if static.metrics.prometheus is not None else None
    )
    return asyncio.run(serve(static, base_dir=base_dir, metrics=metrics, quickstart=quickstart))


async def serve(
    static: StaticConfig,
    *,
    base_dir: Path,
    metrics: Metrics | None,
    quickstart: bool = False,
    providers: list[Provider] | None = None,
) -> int:
    """Run one serving process: providers, listeners and the API."""
    backend = None
    if quickstart:
        from gateway.whoami import serve_whoami

        backend = await serve_whoami(*QUICKSTART_BACKEND, name="quickstart")
        log.info("quickstart: demo backend on http://%s:%d", *QUICKSTART_BACKEND)
    access_log = AccessLog(static.access_log) if static.access_log is not None else None
    gateway = Gateway(
        static,
        providers=providers if providers is not None else make_providers(static, base_dir),
        metrics=metrics,
        observer=Observer(metrics, access_log),
    )
    gateway.install_signal_handlers()
    runner = None
    if static.api is not None:
        from gateway.api.server import build_api_app, start_api
        from gateway.api.state import GatewayState

        app = build_api_app(GatewayState(gateway), metrics=metrics, version=__version__)
        runner = await start_api(app, static.api.address)
        log.info("API and dashboard on http://%s/", static.api.address)
    try:
        await gateway.run()
    finally:
        if runner is not None:
            await runner.cleanup()
        if access_log is not None:
            access_log.close()
        if backend is not None:
            backend.close()
    return 0
