"""Multi-core serving: one supervisor, N worker processes on SO_REUSEPORT listeners.

The supervisor runs the providers, validates and compiles each snapshot
(so a bad file is rejected once, with one error), serves the API, and sends
every accepted configuration to the workers over a pipe. Workers bind their
own listeners with SO_REUSEPORT, so the kernel spreads connections across
them, and apply what they receive with ``Gateway.apply_merged``. Metrics go
through prometheus_client's multiprocess directory and are summed by the
supervisor's ``/metrics``.

A worker that dies is restarted with the current configuration; SIGTERM to
the supervisor is passed to every worker, each drains, and the supervisor
exits 0 once they have.
"""

from __future__ import annotations

import asyncio
import contextlib
import copyreg
import logging
import multiprocessing
import os
import signal
import tempfile
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import MappingProxyType
from typing import Any

from gateway import __version__
from gateway.config.dynamic import DynamicConfig
from gateway.config.static import StaticConfig

log = logging.getLogger(__name__)


def _reduce_mapping_proxy(m: MappingProxyType[Any, Any]) -> tuple[Any, tuple[dict[Any, Any]]]:
    return MappingProxyType, (dict(m),)


# Configuration objects hold read-only mappings; let them cross the pipe.
copyreg.pickle(MappingProxyType, _reduce_mapping_proxy)


def _worker_main(static: StaticConfig, conn: Connection, index: int, metrics_dir: str) -> None:
    from gateway.metrics import create_metrics
    from gateway.process import install_uvloop, setup_logging

    setup_logging(static)
    install_uvloop()
    metrics = (
        create_metrics(static.metrics.prometheus, multiprocess_dir=Path(metrics_dir))
        if static.metrics.prometheus is not None
        else None
    )
    asyncio.run(_worker_serve(static, conn, index, metrics))


async def _worker_serve(static: StaticConfig, conn: Connection, index: int, metrics: Any) -> None:
    from gateway.app import Gateway
    from gateway.observer import Observer

    gateway = Gateway(
        static,
        providers=[],
        metrics=metrics,
        observer=Observer(metrics, None),
        reuse_port=True,
        record_reloads=False,
    )
    gateway.install_signal_handlers()
    loop = asyncio.get_running_loop()
    first = asyncio.Event()

    def on_readable() -> None:
        try:
            while conn.poll():
                config = conn.recv()
                if isinstance(config, DynamicConfig):
                    gateway.apply_merged(config, provider="supervisor")
                    first.set()
        except (EOFError, OSError):
            loop.remove_reader(conn.fileno())
            gateway.stop()

    loop.add_reader(conn.fileno(), on_readable)
    await first.wait()
    await gateway.open_listeners()
    log.info("worker %d (pid %d) serving", index, os.getpid())
    await gateway.stopping.wait()
    loop.remove_reader(conn.fileno())
    await gateway.shutdown()


class Supervisor:
    """Starts, feeds, restarts and stops the workers."""

    def __init__(self, static: StaticConfig, workers: int, metrics_dir: Path) -> None:
        self.static = static
        self.count = workers
        self.metrics_dir = metrics_dir
        self.ctx = multiprocessing.get_context("spawn")
        self.procs: dict[int, tuple[BaseProcess, Connection]] = {}
        self.config: DynamicConfig | None = None
        self.stopping = False

    def start_worker(self, index: int) -> None:
        parent, child = self.ctx.Pipe()
        proc = self.ctx.Process(
            target=_worker_main,
            args=(self.static, child, index, str(self.metrics_dir)),
            name=f"sluice-worker-{index}",
            daemon=False,
        )
        proc.start()
        child.close()
        self.procs[index] = (proc, parent)
        if self.config is not None:
            parent.send(self.config)

    def broadcast(self, config: DynamicConfig) -> None:
        self.config = config
        for _, conn in self.procs.values():
            with contextlib.suppress(OSError):
                conn.send(config)

    async def watch(self) -> None:
        """Restart workers that exit while not stopping."""
        from gateway.metrics import mark_process_dead

        while not self.stopping:
            await asyncio.sleep(0.5)
            for index, (proc, conn) in list(self.procs.items()):
                if proc.is_alive() or self.stopping:
                    continue
                log.error(
                    "worker %d (pid %s) exited with %s; restarting", index, proc.pid, proc.exitcode
                )
                conn.close()
                if proc.pid is not None:
                    mark_process_dead(proc.pid, self.metrics_dir)
                self.start_worker(index)

    async def stop(self, grace: float) -> None:
        self.stopping = True
        for proc, _ in self.procs.values():
            if proc.pid is not None and proc.is_alive():
                os.kill(proc.pid, signal.SIGTERM)
        loop = asyncio.get_running_loop()
        for proc, conn in self.procs.values():
            await loop.run_in_executor(None, proc.join, grace + 5)
            if proc.is_alive():
                proc.kill()
            conn.close()


def run_supervisor(
    static: StaticConfig, *, base_dir: Path, workers: int, quickstart: bool = False
) -> int:
    """Run the supervisor and ``workers`` workers until SIGTERM."""
    from gateway.process import install_uvloop

    metrics_dir = Path(tempfile.mkdtemp(prefix="sluice-metrics-"))
    metrics = None
    if static.metrics.prometheus is not None:
        from gateway.metrics import create_metrics

        metrics = create_metrics(static.metrics.prometheus, multiprocess_dir=metrics_dir)
    install_uvloop()
    return asyncio.run(_supervise(static, base_dir, workers, metrics, metrics_dir, quickstart))


async def _supervise(
    static: StaticConfig,
    base_dir: Path,
    workers: int,
    metrics: Any,
    metrics_dir: Path,
    quickstart: bool,
) -> int:
    from gateway.app import Gateway
    from gateway.observer import Observer
    from gateway.process import make_providers

    supervisor = Supervisor(static, workers, metrics_dir)
    gateway = Gateway(
        static,
        providers=make_providers(static, base_dir),
        metrics=metrics,
        observer=Observer(metrics, None),
        serve=False,
    )
    gateway.on_config.append(supervisor.broadcast)
    gateway.install_signal_handlers()
    backend = None
    if quickstart:
        from gateway.process import QUICKSTART_BACKEND
        from gateway.whoami import serve_whoami

        backend = await serve_whoami(*QUICKSTART_BACKEND, name="quickstart")
    runner = None
    if static.api is not None:
        from gateway.api.server import build_api_app, start_api
        from gateway.api.state import GatewayState

        runner = await start_api(
            build_api_app(GatewayState(gateway), metrics=metrics, version=__version__),
            static.api.address,
        )
    for index in range(workers):
        supervisor.start_worker(index)
    watcher = asyncio.get_running_loop().create_task(supervisor.watch())
    try:
        await gateway.run()
    finally:
        watcher.cancel()
        grace = max(
            (ep.transport.life_cycle.grace_time_out for ep in static.entry_points.values()),
            default=10.0,
        )
        await supervisor.stop(grace)
        if runner is not None:
            await runner.cleanup()
        if backend is not None:
            backend.close()
    return 0
