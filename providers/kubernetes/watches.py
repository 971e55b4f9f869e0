"""The running watchers, one per (resource, namespace), kept in step with discovery.

The kinds a cluster serves change while Sluice runs: a Gateway API bundle is
installed after the gateway, TCPRoute's CRD is added, a CRD is upgraded to
serve ``v1``, a CRD is deleted. ``WatchSet.update`` takes each discovery's
answer and makes the running watchers match it:

* a kind that appeared gets its watchers; their first list reaches the cache
  like any list, so the next snapshot includes its objects;
* a kind that disappeared has its watchers stopped and its objects dropped
  from the cache (the API server deletes a CRD's objects with it);
* a kind now served in another version gets new watchers in that version and
  the old ones stopped, its objects kept meanwhile: the new watchers' first
  list replaces them, so no snapshot ever lacks them.

Invariant: only changes of the current watchers reach the cache. A stopped
watcher's thread may still deliver one last list or event (it was read before
the stop); ``arrive`` drops it, on the loop's thread, where membership is
decided.

``synced`` is set once every watcher started before it has listed once (the
provider's first snapshot waits for it); watchers started later do not delay
anything, since a list arriving after that just triggers a rebuild.

A 404 on a watcher's list or watch means its kind may have gone; the watcher
reports it through ``on_missing`` (on the loop's thread) so discovery can run
at once rather than at its next tick.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence

from kubernetes import client

from providers.kubernetes.cache import ObjectCache
from providers.kubernetes.resources import Resource
from providers.kubernetes.watcher import Backoff, Event, Replace, Watcher


class WatchSet:
    """Watchers for the resources of the last ``update``; loop thread only."""

    def __init__(
        self,
        api: client.ApiClient,
        cache: ObjectCache,
        namespaces: Sequence[str],
        *,
        backoff: Backoff,
        watch_timeout: int,
        on_missing: Callable[[], None],
    ) -> None:
        self._api = api
        self._cache = cache
        self._namespaces: list[str | None] = list(namespaces) or [None]
        self._backoff = backoff
        self._watch_timeout = watch_timeout
        self._on_missing = on_missing
        self._loop = asyncio.get_running_loop()
        self._by_resource: dict[Resource, list[Watcher]] = {}
        self._pending: set[Watcher] = set()
        self._retired: list[Watcher] = []  # stopped, perhaps not yet joined
        self.synced = asyncio.Event()

    @property
    def resources(self) -> list[Resource]:
        return list(self._by_resource)

    @property
    def watchers(self) -> list[Watcher]:
        return [w for watchers in self._by_resource.values() for w in watchers]

    def update(self, resources: Sequence[Resource]) -> tuple[list[Resource], list[Resource]]:
        """Watch exactly ``resources``; the resources started and stopped, for the log."""
        wanted = set(resources)
        stopped = [r for r in self._by_resource if r not in wanted]
        started = [r for r in resources if r not in self._by_resource]
        kinds_kept = {(r.group, r.kind) for r in wanted}
        for resource in stopped:
            for watcher in self._by_resource.pop(resource):
                self._retire(watcher)
            if (resource.group, resource.kind) not in kinds_kept:
                for namespace in self._scopes(resource):
                    self._cache.apply(Replace(resource, namespace, []))
        for resource in started:
            watchers = [self._watcher(resource, ns) for ns in self._scopes(resource)]
            self._by_resource[resource] = watchers
            if not self.synced.is_set():
                self._pending.update(watchers)
            for watcher in watchers:
                watcher.start()
        self._check_synced()
        return started, stopped

    def stop(self) -> None:
        """Stop every watcher (returns at once; ``join`` waits for their threads)."""
        for resource in list(self._by_resource):
            for watcher in self._by_resource.pop(resource):
                self._retire(watcher)

    async def join(self, timeout: float) -> None:
        for watcher in self._retired:
            await asyncio.to_thread(watcher.join, timeout)
        self._retired.clear()

    def _scopes(self, resource: Resource) -> list[str | None]:
        return self._namespaces if resource.namespaced else [None]

    def _watcher(self, resource: Resource, namespace: str | None) -> Watcher:
        holder: list[Watcher] = []

        def sink(change: Replace | Event) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed while we stopped
                self._loop.call_soon_threadsafe(self._arrive, holder[0], change)

        def missing() -> None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._missing, holder[0])

        watcher = Watcher(
            self._api, resource, namespace, sink, backoff=self._backoff,
            watch_timeout=self._watch_timeout, on_missing=missing,
        )
        holder.append(watcher)
        return watcher

    def _current(self, watcher: Watcher) -> bool:
        return watcher in self._by_resource.get(watcher.resource, ())

    def _arrive(self, watcher: Watcher, change: Replace | Event) -> None:
        if not self._current(watcher):
            return
        self._cache.apply(change)
        if isinstance(change, Replace) and watcher in self._pending:
            self._pending.discard(watcher)
            self._check_synced()

    def _missing(self, watcher: Watcher) -> None:
        if self._current(watcher):
            self._on_missing()

    def _retire(self, watcher: Watcher) -> None:
        watcher.stop()
        self._pending.discard(watcher)
        self._retired = [w for w in self._retired if w.alive]
        self._retired.append(watcher)

    def _check_synced(self) -> None:
        if not self._pending and self._by_resource:
            self.synced.set()


def describe(resources: Sequence[Resource]) -> str:
    """``Kind (apiVersion)`` of each resource, for the log."""
    return ", ".join(f"{r.kind} ({r.api_version})" for r in resources) or "nothing"

