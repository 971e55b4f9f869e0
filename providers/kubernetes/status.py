"""Status write-back: the status a translation computed, merged into what the cluster holds.

``merge_status`` is pure: it takes an object's current status and the
translator's, and returns the status to write, following the spec's rules
(reference §3): conditions are a map keyed by ``type`` (a type we write
replaces the one held in place; foreign types are kept, never reordered);
``lastTransitionTime`` is kept when a condition's ``status`` did not change,
else it is now; a route's ``status.parents`` entries of other controllers are
kept, ours replaced (or removed, when the route no longer names our Gateways).

``StatusWriter`` owns the writing: it runs on the event loop, is woken when a
new translation arrives, when the cache changes (someone else's write, or the
watch echoing ours), or when the lease makes this replica the leader. It
writes only objects whose merged status differs from the held one, never a
status computed from an older ``generation`` than the cached object's (a new
translation is on its way), and it patches with the held
``resourceVersion`` as a precondition, so a concurrent change gives 409
Conflict instead of a lost update; the watch then brings the change and the
comparison runs again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from providers.gatewayapi.objects import CONTROLLER, GROUP
from providers.gatewayapi.translate import ObjectKey
from providers.kubernetes.cache import ObjectCache
from providers.kubernetes.resources import Resource, patch_status
from providers.kubernetes.watcher import Backoff

logger = logging.getLogger(__name__)

STATUS_KINDS = ("GatewayClass", "Gateway", "HTTPRoute", "TLSRoute", "TCPRoute", "UDPRoute")


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_conditions(
    held: Sequence[Mapping[str, Any]], wanted: Sequence[Mapping[str, Any]], now: str
) -> list[dict[str, Any]]:
    """``wanted`` conditions merged into ``held`` by type, with transition times."""
    by_type = {c.get("type"): c for c in held if isinstance(c, Mapping)}
    stamped: dict[Any, dict[str, Any]] = {}
    for condition in wanted:
        previous = by_type.get(condition["type"])
        out = dict(condition)
        if previous is not None and previous.get("status") == condition["status"] \
                and previous.get("lastTransitionTime"):
            out["lastTransitionTime"] = previous["lastTransitionTime"]
        else:
            out["lastTransitionTime"] = now
        stamped[condition["type"]] = out
    merged = [
        stamped.pop(c.get("type")) if c.get("type") in stamped else dict(c)
        for c in held if isinstance(c, Mapping)
    ]
    merged.extend(stamped.values())
    return merged


def merge_status(
    kind: str, held: Mapping[str, Any] | None, wanted: Mapping[str, Any] | None, now: str
) -> dict[str, Any]:
    """The status to write for an object of ``kind``; ``wanted`` None: Sluice has nothing to say."""
    held = held or {}
    out = dict(held)
    if kind in ("GatewayClass", "Gateway"):
        if wanted is None:
            return out
        out["conditions"] = merge_conditions(held.get("conditions") or [],
                                             wanted.get("conditions", []), now)
        if kind == "Gateway":
            out["listeners"] = _merge_listeners(held.get("listeners") or [],
                                                wanted.get("listeners", []), now)
            if wanted.get("addresses"):
                out["addresses"] = wanted["addresses"]
            else:
                out.pop("addresses", None)
        return out
    held_parents = [p for p in held.get("parents") or [] if isinstance(p, Mapping)]
    ours = {
        _ref_key(p.get("parentRef")): p for p in held_parents
        if p.get("controllerName") == CONTROLLER
    }
    parents = [dict(p) for p in held_parents if p.get("controllerName") != CONTROLLER]
    for parent in (wanted or {}).get("parents", []):
        previous = ours.get(_ref_key(parent["parentRef"]), {})
        entry = dict(parent)
        entry["conditions"] = merge_conditions(previous.get("conditions") or [],
                                               parent["conditions"], now)
        parents.append(entry)
    if parents or "parents" in held:
        out["parents"] = parents
    return out


def _merge_listeners(
    held: Sequence[Any], wanted: Sequence[Mapping[str, Any]], now: str
) -> list[dict[str, Any]]:
    by_name = {item.get("name"): item for item in held if isinstance(item, Mapping)}
    out = []
    for listener in wanted:
        previous = by_name.get(listener["name"], {})
        entry = dict(listener)
        entry["conditions"] = merge_conditions(previous.get("conditions") or [],
                                               listener["conditions"], now)
        out.append(entry)
    return out


def _ref_key(ref: Any) -> tuple[Any, ...]:
    ref = ref if isinstance(ref, Mapping) else {}
    return (ref.get("group", GROUP), ref.get("kind", "Gateway"), ref.get("namespace"),
            ref.get("name"), ref.get("sectionName"), ref.get("port"))


def _generations(status: Mapping[str, Any]) -> set[int]:
    """Every ``observedGeneration`` in a translator status (they are all the same)."""
    found: set[int] = set()
    for key in ("conditions",):
        found.update(c["observedGeneration"] for c in status.get(key, []))
    for section in ("listeners", "parents"):
        for item in status.get(section, []):
            found.update(c["observedGeneration"] for c in item.get("conditions", []))
    return found


class StatusWriter:
    """Writes the newest translation's status to the cluster while this replica leads."""

    def __init__(
        self,
        api: client.ApiClient,
        cache: ObjectCache,
        resources: Sequence[Resource],
        *,
        backoff: Backoff | None = None,
        clock: Callable[[], str] = now_rfc3339,
    ) -> None:
        self._api = api
        self._cache = cache
        self._resources = {r.kind: r for r in resources if r.has_status}
        self._backoff = backoff or Backoff()
        self._clock = clock
        self._wanted: dict[ObjectKey, dict[str, Any]] | None = None
        self._leading = False
        self._wake = asyncio.Event()
        self.writes = 0  # patches sent (for tests and the log)

    def offer(self, status: Mapping[ObjectKey, dict[str, Any]]) -> None:
        """The status of a new translation."""
        self._wanted = dict(status)
        self._wake.set()

    def use(self, resources: Sequence[Resource]) -> None:
        """The resources discovery now finds (kinds come and go, versions change)."""
        self._resources = {r.kind: r for r in resources if r.has_status}
        self._wake.set()

    def lead(self, leading: bool) -> None:
        self._leading = leading
        self._wake.set()

    async def run(self) -> None:
        failures = 0
        while True:
            touched = self._cache.touched
            await _first(self._wake, touched)
            self._wake.clear()
            touched.clear()
            if not self._leading or self._wanted is None:
                continue
            try:
                await self._write_all(self._wanted)
                failures = 0
            except (ApiException, OSError, ValueError) as exc:
                failures += 1
                delay = self._backoff.delay(failures)
                logger.warning("kubernetes provider: writing status failed (%s); retrying in "
                               "%.1fs", exc, delay)
                await asyncio.sleep(delay)
                self._wake.set()

    async def _write_all(self, wanted: Mapping[ObjectKey, dict[str, Any]]) -> None:
        for kind, resource in self._resources.items():
            for doc in self._objects(resource):
                if not self._leading or wanted is not self._wanted:
                    return  # a newer translation or lost lead: start over with it
                await self._write_one(kind, resource, doc, wanted)

    def _objects(self, resource: Resource) -> list[dict[str, Any]]:
        return [
            doc for doc in self._cache.documents()
            if doc.get("kind") == resource.kind
            and str(doc.get("apiVersion", "")).startswith(f"{resource.group}/")
        ]

    async def _write_one(
        self, kind: str, resource: Resource, doc: Mapping[str, Any],
        wanted: Mapping[ObjectKey, dict[str, Any]],
    ) -> None:
        metadata = doc.get("metadata") or {}
        namespace = str(metadata.get("namespace") or "")
        name = str(metadata.get("name"))
        desired = wanted.get((kind, namespace, name))
        if desired is not None and _generations(desired) - {metadata.get("generation", 1)}:
            return  # computed from an older spec; the rebuild for this one is coming
        found = doc.get("status")
        held: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
        merged = merge_status(kind, held, desired, self._clock())
        if merged == held:
            return
        body: dict[str, Any] = {
            "metadata": {"resourceVersion": metadata.get("resourceVersion")},
            "status": {**{k: None for k in held if k not in merged}, **merged},
        }
        try:
            await asyncio.to_thread(patch_status, self._api, resource, namespace, name, body)
        except ApiException as exc:
            if exc.status in (404, 409):
                # Gone, or changed since we read it: the watch brings the news.
                logger.debug("kubernetes provider: status of %s %s/%s: HTTP %s", kind,
                             namespace, name, exc.status)
                return
            raise
        self.writes += 1
        logger.info("kubernetes provider: wrote status of %s %s", kind,
                    f"{namespace}/{name}" if namespace else name)


async def _first(*events: asyncio.Event) -> None:
    """Wait until any of ``events`` is set."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
