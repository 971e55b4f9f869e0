"""The raw objects the watches have seen: the provider's picture of the cluster.

Objects are kept as the API server sent them (plain JSON mappings, with
``apiVersion`` and ``kind``), keyed by (group, kind, namespace, name). The
cache is touched only on the event loop's thread, so it needs no lock; the
watch threads hand their lists and events over with ``call_soon_threadsafe``.

Two signals, because two consumers care about different changes:

* ``changed``: something that can alter the translation changed (anything but
  ``status``, ``metadata.resourceVersion`` and ``metadata.managedFields``), so
  a snapshot must be rebuilt. Status writes, ours included, do not count:
  otherwise every status write would cause a rebuild;
* ``touched``: anything changed, status included, so the status writer
  compares what it wants written with what the cluster now holds.

With ``namespaces`` set, objects of other namespaces are dropped on arrival
(cluster-scoped Namespaces included: only the listed ones are kept).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any

from providers.kubernetes.resources import Resource
from providers.kubernetes.watcher import Event, Replace

CacheKey = tuple[str, str, str, str]  # group, kind, namespace ("" cluster-scoped), name
_VOLATILE_METADATA = ("resourceVersion", "managedFields")


class ObjectCache:
    """Raw objects by key, with change signals; loop thread only."""

    def __init__(self, namespaces: Iterable[str] = ()) -> None:
        self.namespaces = frozenset(namespaces)
        self._objects: dict[CacheKey, dict[str, Any]] = {}
        self.changed = asyncio.Event()
        self.touched = asyncio.Event()

    def __len__(self) -> int:
        return len(self._objects)

    def get(self, group: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self._objects.get((group, kind, namespace, name))

    def documents(self) -> list[dict[str, Any]]:
        """Every object, for the parser (a new list; the mappings are not copied)."""
        return list(self._objects.values())

    def apply(self, change: Replace | Event) -> None:
        if isinstance(change, Replace):
            self._replace(change)
        else:
            self._event(change)

    def _replace(self, change: Replace) -> None:
        resource = change.resource
        stale = {
            key for key in self._objects
            if key[:2] == (resource.group, resource.kind)
            and (change.namespace is None or key[2] == change.namespace)
        }
        significant = False
        for item in change.items:
            key = self._key(resource, item)
            if key is None:
                continue
            stale.discard(key)
            significant |= self._put(key, item)
        for key in stale:
            del self._objects[key]
            significant = True
        self._signal(significant)

    def _event(self, change: Event) -> None:
        key = self._key(change.resource, change.object)
        if key is None:
            return
        if change.type == "DELETED":
            self._signal(self._objects.pop(key, None) is not None)
        else:
            self._signal(self._put(key, change.object))

    def _put(self, key: CacheKey, obj: dict[str, Any]) -> bool:
        """Store ``obj``; whether it differs from the old one beyond status and versions."""
        old = self._objects.get(key)
        self._objects[key] = obj
        return old is None or _essence(old) != _essence(obj)

    def _signal(self, significant: bool) -> None:
        self.touched.set()
        if significant:
            self.changed.set()

    def _key(self, resource: Resource, obj: Mapping[str, Any]) -> CacheKey | None:
        metadata = obj.get("metadata")
        if not isinstance(metadata, Mapping) or not isinstance(metadata.get("name"), str):
            return None
        name = metadata["name"]
        namespace = str(metadata.get("namespace") or "") if resource.namespaced else ""
        if self.namespaces:
            if resource.namespaced and namespace not in self.namespaces:
                return None
            if resource.kind == "Namespace" and name not in self.namespaces:
                return None
        return (resource.group, resource.kind, namespace, name)


def _essence(obj: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in obj.items() if k != "status"}
    metadata = obj.get("metadata")
    if isinstance(metadata, Mapping):
        out["metadata"] = {k: v for k, v in metadata.items() if k not in _VOLATILE_METADATA}
    return out
