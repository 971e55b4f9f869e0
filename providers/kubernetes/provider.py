"""The Kubernetes provider: cluster objects in, snapshots out, status written back.

``KubernetesProvider.snapshots`` (name ``kubernetes``):

1. finds credentials (``credentials``) and the versions the cluster serves
   (``resources.discover``); a failure yields a ``ConfigError`` and is retried
   with backoff, so a gateway started before its cluster is reachable comes up
   once it is;
2. starts one list+watch thread per kind and namespace (``watcher``), feeding
   the cache on the loop's thread;
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
from providers.kubernetes.watcher import Backoff, Event, Replace, Watcher

logger = logging.getLogger(__name__)

QUIET = 0.1  # seconds without events that end a burst
BURST_LIMIT = 1.0  # longest a burst may delay a snapshot

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
    ) -> None:
        self.config = config
        self._environ = environ
        self._service_account_dir = service_account_dir
        self._home = home
        self.identity = identity or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._backoff = backoff or Backoff()
        self._watch_timeout = watch_timeout
        self.status: dict[ObjectKey, dict[str, Any]] = {}
        self.invalid: dict[ObjectKey, str] = {}
        self.problems: dict[tuple[str, str, str], str] = {}
        self.watchers: list[Watcher] = []
        self.elector: LeaseElector | None = None
        self.writer: StatusWriter | None = None

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
            synced = self._start_watchers(api, resources, cache)
            self.writer = StatusWriter(api, cache, resources, backoff=self._backoff)
            tasks.append(asyncio.create_task(self.writer.run()))
            if self.config.lease_namespace:
                self.elector = LeaseElector(
                    api, namespace=self.config.lease_namespace, name=self.config.lease_name,
                    duration=self.config.lease_duration, identity=self.identity,
                    on_change=self.writer.lead,
                )
                tasks.append(asyncio.create_task(self.elector.run()))
            else:
                self.writer.lead(True)
            await synced.wait()
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
            for watcher in self.watchers:
                watcher.stop()
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if self.elector is not None:
                await self.elector.release()
            for watcher in self.watchers:
                await asyncio.to_thread(watcher.join, 5.0)
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
                           "ignored", ", ".join(missing))
        return api, resources

    def _start_watchers(
        self, api: client.ApiClient, resources: list[Resource], cache: ObjectCache
    ) -> asyncio.Event:
        """Start every watch; the event returned is set once each has listed once."""
        loop = asyncio.get_running_loop()
        synced = asyncio.Event()
        pending: set[int] = set()

        def arrive(index: int, change: Replace | Event) -> None:
            cache.apply(change)
            if isinstance(change, Replace) and index in pending:
                pending.discard(index)
                if not pending:
                    synced.set()

        def sink_for(index: int) -> Any:
            def sink(change: Replace | Event) -> None:
                with contextlib.suppress(RuntimeError):  # the loop closed while we stopped
                    loop.call_soon_threadsafe(arrive, index, change)
            return sink

        namespaces: list[str | None] = list(self.config.namespaces) or [None]
        self.watchers = []
        for resource in resources:
            for namespace in namespaces if resource.namespaced else [None]:
                index = len(self.watchers)
                pending.add(index)
                self.watchers.append(Watcher(
                    api, resource, namespace, sink_for(index), backoff=self._backoff,
                    watch_timeout=self._watch_timeout,
                ))
        for watcher in self.watchers:
            watcher.start()
        return synced

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
