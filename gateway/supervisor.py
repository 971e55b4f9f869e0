"""The supervisor of ``--workers N``: starts, feeds, restarts and stops the workers.

It runs the providers, validates and compiles each snapshot (so a bad file is
rejected once, with one error), serves the API and ``/metrics`` (summed over
the workers' multiprocess directory), and sends every accepted configuration
to the workers over their pipes; ``gateway.workers`` is the other end. The
pipe protocol and the restart rules are described there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from gateway.api.state import GatewayState
from gateway.app import Gateway
from gateway.config.dynamic import DynamicConfig
from gateway.config.errors import ConfigError
from gateway.config.static import StaticConfig
from gateway.process import StartupError
from gateway.workers import MAX_BACKOFF, STABLE_AFTER, first_of, worker_main

log = logging.getLogger(__name__)


@dataclass
class WorkerHandle:
    """One worker process as the supervisor sees it."""

    index: int
    proc: BaseProcess
    conn: Connection
    started: float
    exited: asyncio.Future[int]
    serving: bool = False
    generation: int = -1
    restarts: int = 0  # how many processes this slot had before this one
    young_deaths: int = 0  # consecutive deaths sooner than STABLE_AFTER, for the backoff


@dataclass
class Supervisor:
    """Starts, feeds, restarts and stops the workers."""

    static: StaticConfig
    count: int
    metrics_dir: Path
    # Called when start-up fails and everything must stop.
    on_fatal: Callable[[], None] | None = None
    handles: dict[int, WorkerHandle] = field(default_factory=dict)
    config: DynamicConfig | None = None
    generation: int = 0
    stopping: bool = False
    started: bool = False  # every initial worker has served at least once
    failure: str = ""

    def __post_init__(self) -> None:
        self.ctx = multiprocessing.get_context("spawn")
        self._restart_timers: dict[int, asyncio.TimerHandle] = {}

    def start_worker(self, index: int, restarts: int = 0, young_deaths: int = 0) -> None:
        loop = asyncio.get_running_loop()
        parent, child = self.ctx.Pipe()
        proc = self.ctx.Process(
            target=worker_main,
            args=(self.static, child, index, str(self.metrics_dir)),
            name=f"sluice-worker-{index}",
            daemon=False,
        )
        proc.start()
        child.close()
        handle = WorkerHandle(
            index=index,
            proc=proc,
            conn=parent,
            started=time.monotonic(),
            exited=loop.create_future(),
            restarts=restarts,
            young_deaths=young_deaths,
        )
        self.handles[index] = handle
        loop.add_reader(parent.fileno(), self._on_message, handle)
        # The sentinel becomes readable when the process ends: no polling.
        loop.add_reader(proc.sentinel, self._on_exit, handle)
        self._send(handle, ("config", self.generation, self.config))

    def _send(self, handle: WorkerHandle, message: tuple[str, int, DynamicConfig | None]) -> None:
        try:
            handle.conn.send(message)
        except OSError as exc:
            # The exit handler restarts it; the new process gets the config then.
            log.warning("worker %d: cannot send configuration: %s", handle.index, exc)

    def broadcast(self, config: DynamicConfig) -> None:
        self.config = config
        self.generation += 1
        for handle in list(self.handles.values()):
            if not handle.exited.done():
                self._send(handle, ("config", self.generation, config))

    def _on_message(self, handle: WorkerHandle) -> None:
        try:
            while handle.conn.poll():
                message = handle.conn.recv()
                if message[0] == "serving":
                    handle.serving = True
                    if not self.started and all(h.serving for h in self.handles.values()):
                        self.started = True
                        log.info("all %d workers serving", self.count)
                elif message[0] == "applied" and message[2]:
                    handle.generation = message[1]
        except (EOFError, OSError):
            # The process is ending; its sentinel reports that.
            asyncio.get_running_loop().remove_reader(handle.conn.fileno())

    def _on_exit(self, handle: WorkerHandle) -> None:
        from gateway.metrics import mark_process_dead

        loop = asyncio.get_running_loop()
        loop.remove_reader(handle.proc.sentinel)
        with contextlib.suppress(ValueError, OSError):
            loop.remove_reader(handle.conn.fileno())
        handle.proc.join()  # reap; the sentinel says it has already exited
        code = handle.proc.exitcode if handle.proc.exitcode is not None else -1
        handle.conn.close()
        handle.serving = False
        if handle.proc.pid is not None and self.static.metrics.prometheus is not None:
            mark_process_dead(handle.proc.pid, self.metrics_dir)
        handle.exited.set_result(code)
        if self.stopping:
            return
        if not self.started:
            self.failure = (
                f"worker {handle.index} (pid {handle.proc.pid}) could not start "
                f"(exit status {code})"
            )
            log.error("%s; stopping", self.failure)
            if self.on_fatal is not None:
                self.on_fatal()
            return
        young = time.monotonic() - handle.started < STABLE_AFTER
        young_deaths = handle.young_deaths + 1 if young else 0
        # One early death is restarted at once; a crash loop backs off.
        delay = 0.0 if young_deaths <= 1 else min(MAX_BACKOFF, 0.25 * 2 ** min(young_deaths, 10))
        log.error(
            "worker %d (pid %s) exited with status %s; restarting in %.1fs",
            handle.index,
            handle.proc.pid,
            code,
            delay,
        )
        self._restart_timers[handle.index] = loop.call_later(
            delay, self._restart, handle.index, handle.restarts + 1, young_deaths
        )

    def _restart(self, index: int, restarts: int, young_deaths: int) -> None:
        self._restart_timers.pop(index, None)
        if not self.stopping:
            self.start_worker(index, restarts, young_deaths)

    def ready(self) -> tuple[bool, str]:
        serving = sum(1 for h in self.handles.values() if h.serving)
        if not self.started or not serving:
            return False, f"{serving} of {self.count} workers serving"
        return True, "ok"

    def describe(self) -> dict[str, Any]:
        return {
            "supervisor": os.getpid(),
            "count": self.count,
            "generation": self.generation,
            "processes": [
                {
                    "index": h.index,
                    "pid": h.proc.pid,
                    "serving": h.serving,
                    "generation": h.generation,
                    "restarts": h.restarts,
                }
                for h in sorted(self.handles.values(), key=lambda h: h.index)
            ],
        }

    async def stop(self, grace: float) -> bool:
        """SIGTERM every worker and wait; True when all exited cleanly."""
        self.stopping = True
        for timer in self._restart_timers.values():
            timer.cancel()
        handles = list(self.handles.values())
        for handle in handles:
            if not handle.exited.done() and handle.proc.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(handle.proc.pid, signal.SIGTERM)
        pending = [h.exited for h in handles if not h.exited.done()]
        if pending:
            await asyncio.wait(pending, timeout=grace + 5)
        clean = True
        for handle in handles:
            if not handle.exited.done():
                log.error("worker %d (pid %s) did not stop; killing", handle.index, handle.proc.pid)
                handle.proc.kill()
                await handle.exited
            code = handle.exited.result()
            # SIGTERM before the worker installed its handlers ends it by signal.
            if code != 0 and not (code == -signal.SIGTERM and not handle.serving):
                log.error("worker %d exited with status %s", handle.index, code)
                clean = False
        return clean


def preflight(static: StaticConfig) -> None:
    """Fail now if an entry point's address is taken, naming the entry point.

    Workers bind with SO_REUSEPORT, which would let them join the listeners
    of another process holding the port with that option (an old instance
    still running) and silently share its traffic. A plain bind, closed at
    once, refuses that case too.
    """
    from gateway.http.entrypoint import bind_socket, bind_udp_socket

    for name, ep in static.entry_points.items():
        try:
            if ep.protocol == "udp":
                bind_udp_socket(ep.listen_address, reuse_port=False).close()
            else:
                bind_socket(ep.address, reuse_port=False).close()
        except (OSError, ValueError) as exc:
            raise StartupError(
                f"entry point {name}: cannot listen on {ep.address}: {exc}"
            ) from None


class SupervisorState(GatewayState):
    """The API's view in multi-worker mode: readiness and ``workers`` include the workers."""

    def __init__(self, gateway: Gateway, supervisor: Supervisor) -> None:
        super().__init__(gateway)
        self.supervisor = supervisor

    def health(self) -> tuple[bool, str]:
        ready, reason = super().health()
        return self.supervisor.ready() if ready else (ready, reason)

    def overview(self) -> dict[str, Any]:
        data = super().overview()
        data["workers"] = self.supervisor.describe()
        return data


def run_supervisor(
    static: StaticConfig, *, base_dir: Path, workers: int, quickstart: bool = False
) -> int:
    """Run the supervisor and ``workers`` workers until SIGTERM; the exit status."""
    from gateway.process import install_uvloop

    metrics_dir = Path(tempfile.mkdtemp(prefix="sluice-metrics-"))
    try:
        metrics = None
        if static.metrics.prometheus is not None:
            from gateway.metrics import create_metrics

            metrics = create_metrics(static.metrics.prometheus, multiprocess_dir=metrics_dir)
        install_uvloop()
        return asyncio.run(_supervise(static, base_dir, workers, metrics, metrics_dir, quickstart))
    except (StartupError, ConfigError) as exc:
        log.error("%s", exc)
        return 1
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


async def _supervise(
    static: StaticConfig,
    base_dir: Path,
    workers: int,
    metrics: Any,
    metrics_dir: Path,
    quickstart: bool,
) -> int:
    from gateway.observer import Observer
    from gateway.process import make_providers, start_api_servers, start_quickstart_backend

    gateway = Gateway(
        static,
        providers=make_providers(static, base_dir),
        metrics=metrics,
        observer=Observer(metrics, None),
        serve=False,
    )
    supervisor = Supervisor(static, workers, metrics_dir, on_fatal=gateway.stop)
    gateway.on_config.append(supervisor.broadcast)
    gateway.install_signal_handlers()
    backend = None
    runners: list[Any] = []
    running: asyncio.Task[None] | None = None
    try:
        if quickstart:
            backend = await start_quickstart_backend(static, base_dir)
        runners = await start_api_servers(static, SupervisorState(gateway, supervisor), metrics)
        running = asyncio.get_running_loop().create_task(gateway.run())
        # Workers start with the first verdict on the configuration, good or bad.
        await first_of(gateway.loaded.wait(), gateway.stopping.wait(), asyncio.shield(running))
        if not gateway.stopping.is_set():
            preflight(static)
            for index in range(workers):
                supervisor.start_worker(index)
        await running
    finally:
        gateway.stop()
        if running is not None and not running.done():
            await asyncio.wait([running])
        grace = max(
            (ep.transport.life_cycle.grace_time_out for ep in static.entry_points.values()),
            default=10.0,
        )
        clean = await supervisor.stop(grace)
        for runner in runners:
            await runner.cleanup()
        if backend is not None:
            backend.close()
    if supervisor.failure:
        return 1
    return 0 if clean else 1
