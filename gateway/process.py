"""Process-level assembly for ``gateway run``: logging, event loop, API, workers.

``run_process`` is what the CLI calls. With one worker it serves in this
process; with more it becomes the supervisor of ``gateway.supervisor``.

Operator mistakes found only when serving starts (an address already in use,
a provider set up twice) end the process with exit status 1 and one ERROR
line naming what failed, never a traceback; a traceback means a bug.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

from gateway import __version__
from gateway.access_log import AccessLog
from gateway.api.server import ApiState
from gateway.app import Gateway
from gateway.config.errors import ConfigError
from gateway.config.static import StaticConfig
from gateway.metrics import Metrics, create_metrics
from gateway.observer import Observer
from providers.base import Provider
from providers.file.provider import FileProvider

log = logging.getLogger(__name__)

# Where the demo backend listens when the quickstart's dynamic configuration
# does not say (see ``quickstart_backend``).
QUICKSTART_BACKEND = ("127.0.0.1", 8081)
QUICKSTART_SERVICE = "whoami"


class StartupError(Exception):
    """Serving could not start for a reason the operator can fix; ``str`` says which."""


def setup_logging(static: StaticConfig, *, multiprocess: bool = False) -> None:
    """Log at ``log.level`` to ``log.filePath`` or stderr.

    With several processes each line names its process ("MainProcess" for
    the supervisor, "sluice-worker-N"), or N workers' lines are indistinct.
    """
    level: int = getattr(logging, static.log.level.upper(), logging.INFO)
    who = " %(processName)s" if multiprocess else ""
    fmt = f"%(asctime)s %(levelname)s{who} %(name)s: %(message)s"
    if static.log.file_path:
        logging.basicConfig(level=level, format=fmt, filename=static.log.file_path)
    else:
        logging.basicConfig(level=level, format=fmt, stream=sys.stderr)
    if static.log.format == "json":
        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonFormatter())


class JsonFormatter(logging.Formatter):
    """``log.format: json``: one JSON object per line, with Traefik's field names."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "process": record.processName,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry)


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
        provider = FileProvider(static.providers.file, base_dir=base_dir)
        provider.manifests.default_address = static.providers.gateway_a_p_i.default_address
        providers.append(provider)
    if static.providers.kubernetes is not None:
        from providers.kubernetes.provider import KubernetesProvider

        providers.append(KubernetesProvider(static.providers.kubernetes))
    return providers


def quickstart_backend(static: StaticConfig, base_dir: Path) -> tuple[str, int]:
    """Where the demo backend listens: the first server of the ``whoami`` service.

    Following the dynamic configuration keeps the two in step when someone
    points the quickstart at another file (``--providers.file.filename``),
    which is also how tests run it on free ports.
    """
    if static.providers.file is None:
        return QUICKSTART_BACKEND
    try:
        snapshot = FileProvider(static.providers.file, base_dir=base_dir).load()
    except ConfigError:
        return QUICKSTART_BACKEND
    if isinstance(snapshot, ConfigError):
        return QUICKSTART_BACKEND
    service = snapshot.http.services.get(QUICKSTART_SERVICE)
    if service is None or service.load_balancer is None or not service.load_balancer.servers:
        return QUICKSTART_BACKEND
    url = urlsplit(service.load_balancer.servers[0].url)
    try:
        port = url.port
    except ValueError:
        return QUICKSTART_BACKEND
    return (url.hostname or QUICKSTART_BACKEND[0]), (port or 80)


async def start_quickstart_backend(static: StaticConfig, base_dir: Path) -> asyncio.Server:
    from gateway.whoami import serve_whoami

    host, port = quickstart_backend(static, base_dir)
    try:
        backend = await serve_whoami(host, port, name="quickstart")
    except OSError as exc:
        raise StartupError(
            f"quickstart: demo backend cannot listen on {host}:{port}: {exc}"
        ) from None
    log.info("quickstart: demo backend on http://%s:%d", host, port)
    return backend


async def start_api_server(address: str, app: web.Application) -> web.AppRunner:
    """Serve the API app on ``address``; a StartupError when it cannot listen."""
    from gateway.api.server import start_api

    try:
        runner = await start_api(app, address)
    except (OSError, ValueError) as exc:
        raise StartupError(f"api: cannot listen on {address}: {exc}") from None
    log.info("API and dashboard on http://%s/", address)
    return runner


async def start_api_servers(
    static: StaticConfig, state: ApiState, metrics: Metrics | None
) -> list[web.AppRunner]:
    """The API (``api.address``) and, when set, a /metrics-only listener
    (``metrics.prometheus.address``, for scrapers kept off the API)."""
    from gateway.api.server import build_api_app, build_metrics_app, start_api

    runners: list[web.AppRunner] = []
    try:
        if static.api is not None:
            app = build_api_app(state, metrics=metrics, version=__version__)
            runners.append(await start_api_server(static.api.address, app))
        prometheus = static.metrics.prometheus
        if metrics is not None and prometheus is not None and prometheus.address:
            try:
                runners.append(await start_api(build_metrics_app(metrics), prometheus.address))
            except (OSError, ValueError) as exc:
                raise StartupError(
                    f"metrics: cannot listen on {prometheus.address}: {exc}"
                ) from None
            log.info("metrics on http://%s/metrics", prometheus.address)
    except BaseException:
        for runner in runners:
            await runner.cleanup()
        raise
    return runners


def run_process(
    static: StaticConfig, *, base_dir: Path, workers: int = 1, quickstart: bool = False
) -> int:
    """Serve until SIGTERM/SIGINT; returns the exit status."""
    setup_logging(static, multiprocess=workers > 1)
    if workers > 1:
        from gateway.supervisor import run_supervisor

        return run_supervisor(static, base_dir=base_dir, workers=workers, quickstart=quickstart)
    install_uvloop()
    metrics = (
        create_metrics(static.metrics.prometheus) if static.metrics.prometheus is not None else None
    )
    try:
        return asyncio.run(serve(static, base_dir=base_dir, metrics=metrics, quickstart=quickstart))
    except (StartupError, ConfigError) as exc:
        log.error("%s", exc)
        return 1


async def serve(
    static: StaticConfig,
    *,
    base_dir: Path,
    metrics: Metrics | None,
    quickstart: bool = False,
    providers: list[Provider] | None = None,
) -> int:
    """Run one serving process: providers, listeners and the API.

    Raises ``StartupError`` (or ``ConfigError``) when it cannot start; once
    listening, returns 0 after SIGTERM and the drain.
    """
    backend = None
    runners: list[web.AppRunner] = []
    access_log = AccessLog(static.access_log) if static.access_log is not None else None
    gateway: Gateway | None = None
    try:
        if quickstart:
            backend = await start_quickstart_backend(static, base_dir)
        gateway = Gateway(
            static,
            providers=providers if providers is not None else make_providers(static, base_dir),
            metrics=metrics,
            observer=Observer(metrics, access_log),
        )
        gateway.install_signal_handlers()
        from gateway.api.state import GatewayState

        runners = await start_api_servers(static, GatewayState(gateway), metrics)
        try:
            await gateway.run()
        except (OSError, ValueError) as exc:
            failed = next(
                (
                    n
                    for n in static.entry_points
                    if n not in gateway.entry_points and n not in gateway.udp_entry_points
                ),
                "?",
            )
            address = static.entry_points[failed].address if failed in static.entry_points else ""
            await gateway.shutdown()
            raise StartupError(f"entry point {failed}: cannot listen on {address}: {exc}") from None
    finally:
        for runner in runners:
            await runner.cleanup()
        if access_log is not None:
            access_log.close()
        if backend is not None:
            backend.close()
    return 0
