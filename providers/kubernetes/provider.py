"""The Kubernetes provider: cluster objects in, snapshots out, status written back.

``KubernetesProvider.snapshots`` (name ``kubernetes``):

1. finds credentials (``credentials``) and the versions the cluster serves
   (``resources.discover``); a failure yields a ``ConfigError`` and is retried
   with backoff, so a gateway started before its cluster is reachable comes up
   once it is;
2. starts one list+watch thread per kind and namespace (``watches``),
   feeding the cache on the loop's thread; discovery runs again every
   ``discovery_interval`` (60 s) and at once when a watch gets 404, and the
   watches follow it: a CRD installed after Sluice started is picked up
   without a restart, a deleted one (missed by two discoveries in a row) is
   dropped with its objects;
3. once every watch has listed once (a snapshot of a half-listed cluster would
   route to Services not yet seen), and then after every burst of changes
   (debounced: ``QUIET`` without events ends a burst, ``BURST_LIMIT`` caps the
   wait), rebuilds the configuration from the cache (``snapshot.build``, in a
   worker thread: parsing and translating is CPU work) and yields it when it
   differs from the last one;
4. hands each build's status to the ``StatusWriter``, which writes while this
   replica holds the Lease (always, when ``lease_namespace`` is empty).

The last build's status, refused objects and problems are kept on the
provider for the API, as ``ManifestReader`` keeps them in file mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import AsyncGenerator, Mapping
from pathlib import Path
from typing import Any

from kubernetes import client

from gateway.config.dynamic import DynamicConfig
from gateway.config.errors import ConfigError
from gateway.config.static import KubernetesProviderConfig
from providers.gatewayapi.translate import ObjectKey
from providers.kubernetes.cache import ObjectCache
from providers.kubernetes.credentials import SERVICE_ACCOUNT_DIR, resolve_credentials
from providers.kubernetes.lease import LeaseElector
from providers.kubernetes.resources import Resource, discover
from providers.kubernetes.snapshot import Build, build
from providers.kubernetes.status import StatusWriter, now_rfc3339
from providers.kubernetes.watcher import Backoff, Watcher
from providers.kubernetes.watches import WatchSet, describe

logger = logging.getLogger(__name__)

QUIET = 0.1  # seconds without events that end a burst
BURST_LIMIT = 1.0  # longest a burst may delay a snapshot
# How often discovery runs again. A CRD install is rare and an operator can
# wait a minute for it; discovery costs one request per served group version.
DISCOVERY_INTERVAL = 60.0
CONFIRM_AFTER = 5.0  # longest wait for the discovery confirming that a kind is gone

Snapshot = DynamicConfig | ConfigError


class KubernetesProvider:
    """Gateway API objects from a cluster; see the module docstring."""

    name = "kubernetes"

    def __init__(
        self,
        config: KubernetesProviderConfig,
        *,
        environ: Mapping[str, str] | None = None,
        service_account_dir: Path = SERVICE_ACCOUNT_DIR,
        home: Path | None = None,
        identity: str = "",
        backoff: Backoff | None = None,
        watch_timeout: int = 300,
        discovery_interval: float = DISCOVERY_INTERVAL,
    ) -> None:
        self.config = config
        self._environ = environ
        self._service_account_dir = service_account_dir
        self._home = home
        self.identity = identity or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._backoff = backoff or Backoff()
        self._watch_timeout = watch_timeout
        self._discovery_interval = discovery_interval
        self.status: dict[ObjectKey, dict[str, Any]] = {}
        self.invalid: dict[ObjectKey, str] = {}
        self.problems: dict[tuple[str, str, str], str] = {}
        self.watches: WatchSet | None = None
        self.discoveries = 0  # discovery runs after the first (for tests and the log)
        self.elector: LeaseElector | None = None
        self.writer: StatusWriter | None = None

    @property
    def watchers(self) -> list[Watcher]:
        """The watchers running now."""
        return self.watches.watchers if self.watches is not None else []

    async def snapshots(self) -> AsyncGenerator[Snapshot, None]:
        """Snapshots of the cluster, from the first complete list on; see the module docstring."""
        failures = 0
        while True:
            try:
                api, resources = await asyncio.to_thread(self._connect)
                break
            except ConfigError as exc:
                error = exc
            except Exception as exc:  # the API server unreachable, refusing, or odd
                error = ConfigError(f"kubernetes provider: cannot reach the API server: {exc}")
            failures += 1
            yield error
            await asyncio.sleep(self._backoff.delay(failures))
        tasks: list[asyncio.Task[None]] = []
        try:
            cache = ObjectCache(self.config.namespaces)
            rediscover = asyncio.Event()
            self.watches = WatchSet(
                api, cache, self.config.namespaces, backoff=self._backoff,
                watch_timeout=self._watch_timeout, on_missing=rediscover.set,
            )
            self.watches.update(resources)
            self.writer = StatusWriter(api, cache, resources, backoff=self._backoff)
            tasks.append(asyncio.create_task(self.writer.run()))
            tasks.append(asyncio.create_task(
                self._rediscover(api, self.watches, self.writer, rediscover)))
            if self.config.lease_namespace:
                self.elector = LeaseElector(
                    api, namespace=self.config.lease_namespace, name=self.config.lease_name,
                    duration=self.config.lease_duration, identity=self.identity,
                    on_change=self.writer.lead,
                )
                tasks.append(asyncio.create_task(self.elector.run()))
            else:
                self.writer.lead(True)
            await self.watches.synced.wait()
            logger.info("kubernetes provider: listed %d objects", len(cache))
            last: object = None
            while True:
                cache.changed.clear()
                result = await asyncio.to_thread(
                    build, cache.documents(), default_address=self.config.default_address,
                    now=now_rfc3339(),
                )
                self._keep(result)
                key = ("error", str(result.config)) if isinstance(result.config, ConfigError) \
                    else result.config
                if key != last:
                    last = key
                    yield result.config
                await _settle(cache.changed)
        finally:
            if self.watches is not None:
                self.watches.stop()
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if self.elector is not None:
                await self.elector.release()
            if self.watches is not None:
                await self.watches.join(5.0)
            _close(api)

    def _connect(self) -> tuple[client.ApiClient, list[Resource]]:
        credentials = resolve_credentials(
            self.config.kubeconfig, environ=self._environ,
            service_account_dir=self._service_account_dir, home=self._home,
        )
        configuration = credentials.configuration
        # One pooled connection per watch, plus room for lists, status and the lease.
        configuration.connection_pool_maxsize = 64
        api = client.ApiClient(configuration)
        try:
            resources, missing = discover(api)
        except BaseException:
            _close(api)
            raise
        logger.info("kubernetes provider: using %s", credentials.source)
        if missing:
            logger.warning("kubernetes provider: the cluster does not serve %s; those kinds are "
                           "ignored until it does (discovery runs every %.0fs)",
                           ", ".join(missing), self._discovery_interval)
        return api, resources

    async def _rediscover(
        self, api: client.ApiClient, watches: WatchSet, writer: StatusWriter,
        wake: asyncio.Event,
    ) -> None:
        """Run discovery every ``discovery_interval``, or when ``wake`` is set; follow it.

        A kind is dropped only when two discoveries in a row miss it, the second
        within ``CONFIRM_AFTER`` (sooner when its watch's 404 wakes us): dropping
        takes its routes out of service, and one odd discovery answer (a CRD
        being updated) must not do that.
        """
        absent: set[tuple[str, str]] = set()  # kinds the last discovery missed once
        while True:
            delay = min(CONFIRM_AFTER, self._discovery_interval) if absent \
                else self._discovery_interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), delay)
            wake.clear()
            try:
                found, _ = await asyncio.to_thread(discover, api)
            except Exception as exc:  # unreachable or refusing: keep what is watched
                logger.warning("kubernetes provider: discovery failed (%s); the kinds watched "
                               "stay as they are", exc)
                continue
            self.discoveries += 1
            kinds = {(r.group, r.kind) for r in found}
            missing = [r for r in watches.resources if (r.group, r.kind) not in kinds]
            unconfirmed = [r for r in missing if (r.group, r.kind) not in absent]
            absent = {(r.group, r.kind) for r in unconfirmed}
            if unconfirmed:
                logger.info("kubernetes provider: discovery misses %s; checking again",
                            describe(unconfirmed))
            started, stopped = watches.update([*found, *unconfirmed])
            if not started and not stopped:
                continue
            old = {(r.group, r.kind) for r in stopped}
            new = {(r.group, r.kind) for r in started}
            if gone := [r for r in stopped if (r.group, r.kind) not in new]:
                logger.warning("kubernetes provider: the cluster no longer serves %s; its "
                               "objects are dropped", describe(gone))
            if moved := [r for r in started if (r.group, r.kind) in old]:
                logger.info("kubernetes provider: now watching %s in a new version",
                            describe(moved))
            if came := [r for r in started if (r.group, r.kind) not in old]:
                logger.info("kubernetes provider: the cluster now serves %s; watching it",
                            describe(came))
            writer.use(watches.resources)

    def _keep(self, result: Build) -> None:
        for key, message in result.invalid.items():
            if self.invalid.get(key) != message:
                logger.warning("kubernetes provider: %s %s left out: %s", key[0],
                               "/".join(p for p in key[1:] if p), message)
        self.status = result.status
        self.invalid = result.invalid
        self.problems = result.problems
        if self.writer is not None:
            self.writer.offer(result.status)


async def _settle(changed: asyncio.Event) -> None:
    """Wait for a change, then for the burst it starts to end (or ``BURST_LIMIT``)."""
    await changed.wait()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + BURST_LIMIT
    while True:
        changed.clear()
        left = deadline - loop.time()
        if left <= 0:
            return
        try:
            await asyncio.wait_for(changed.wait(), min(QUIET, left))
        except TimeoutError:
            return


def _close(api: client.ApiClient) -> None:
    close: Any = api.close  # untyped in the client
    close()
