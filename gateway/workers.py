"""Multi-core serving, worker side: N processes on SO_REUSEPORT listeners fed by a supervisor.

The supervisor runs the providers, validates and compiles each snapshot
(so a bad file is rejected once, with one error), serves the API, and sends
every accepted configuration to the workers over a pipe. Workers bind their
own listeners with SO_REUSEPORT, so the kernel spreads connections across
them, and apply what they receive with ``Gateway.apply_merged``. Metrics go
through prometheus_client's multiprocess directory and are summed by the
supervisor's ``/metrics``.

The pipe carries tuples. Supervisor to worker: ``("config", seq, config)``,
where ``config`` is None while no valid configuration exists (the worker then
listens and answers 404, as a single process does). Worker to supervisor:
``("serving", pid)`` once its listeners are open and ``("applied", seq, ok)``
after each configuration. ``/api/overview`` reports both under ``workers``,
so a caller can tell when a reload has reached every worker.

Invariants: a worker that dies while the supervisor runs is restarted with
the current configuration (after a backoff when it keeps dying young); a
worker that cannot start at all during start-up stops the supervisor with
exit status 1. SIGTERM to the supervisor is passed to every worker, each
drains, and the supervisor exits 0 once all have exited 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import copyreg
import logging
import os
import sys
from collections.abc import Awaitable
from multiprocessing.connection import Connection
from pathlib import Path
from types import MappingProxyType
from typing import Any

from gateway.app import Gateway
from gateway.config.static import StaticConfig
from gateway.process import StartupError

log = logging.getLogger(__name__)

# A worker that could not open its listeners exits with this status.
EXIT_STARTUP = 3
# A worker that dies sooner than this after starting is restarted after a backoff.
STABLE_AFTER = 5.0
MAX_BACKOFF = 30.0


def _mapping_proxy(items: dict[Any, Any]) -> MappingProxyType[Any, Any]:
    return MappingProxyType(items)


def _reduce_mapping_proxy(m: MappingProxyType[Any, Any]) -> tuple[Any, tuple[dict[Any, Any]]]:
    # The type itself cannot be pickled by reference (builtins has no
    # "mappingproxy"), so rebuild through a module-level function.
    return _mapping_proxy, (dict(m),)


# Configuration objects hold read-only mappings; let them cross the pipe.
copyreg.pickle(MappingProxyType, _reduce_mapping_proxy)


async def first_of(*waits: Awaitable[Any]) -> None:
    """Return when the first of ``waits`` finishes; cancel the rest."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
    for task in done:
        task.result()  # surface an exception rather than carry on


# -- worker side ---------------------------------------------------------------------


def worker_main(static: StaticConfig, conn: Connection, index: int, metrics_dir: str) -> None:
    from gateway.metrics import create_metrics
    from gateway.process import install_uvloop, setup_logging

    setup_logging(static, multiprocess=True)
    install_uvloop()
    metrics = (
        create_metrics(static.metrics.prometheus, multiprocess_dir=Path(metrics_dir))
        if static.metrics.prometheus is not None
        else None
    )
    try:
        asyncio.run(_worker_serve(static, conn, index, metrics))
    except StartupError as exc:
        log.error("worker %d: %s", index, exc)
        sys.exit(EXIT_STARTUP)


async def _worker_serve(static: StaticConfig, conn: Connection, index: int, metrics: Any) -> None:
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
    configured = asyncio.Event()

    def on_readable() -> None:
        try:
            while conn.poll():
                kind, seq, config = conn.recv()
                if kind != "config":
                    continue
                ok = config is None or gateway.apply_merged(config, provider="supervisor")
                conn.send(("applied", seq, ok))
                configured.set()
        except (EOFError, OSError):
            # The supervisor is gone: nobody will feed or restart this worker.
            loop.remove_reader(conn.fileno())
            gateway.stop()

    loop.add_reader(conn.fileno(), on_readable)
    try:
        await first_of(configured.wait(), gateway.stopping.wait())
        if gateway.stopping.is_set():
            return
        try:
            await gateway.open_listeners()
        except (OSError, ValueError) as exc:
            raise StartupError(f"cannot listen: {exc}") from None
        with contextlib.suppress(OSError):
            conn.send(("serving", os.getpid()))
        log.info("worker %d (pid %d) serving", index, os.getpid())
        await gateway.stopping.wait()
    finally:
        with contextlib.suppress(ValueError, OSError):
            loop.remove_reader(conn.fileno())
        await gateway.shutdown()


# -- supervisor side -----------------------------------------------------------------
