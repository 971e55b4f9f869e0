"""One list+watch loop per (kind, namespace), each in its own thread, feeding the cache.

The official client is synchronous and a watch holds one streaming HTTP
response open for minutes, so every watch gets a dedicated daemon thread
rather than a slot in asyncio's default executor: that executor is bounded
(``min(32, cpus + 4)``), and a dozen or more long-blocking watches would
starve every other ``asyncio.to_thread`` user (the file provider's reads,
snapshot builds). A thread costs a stack, not CPU, and the count is bounded:
kinds x configured namespaces. Polling instead would lose what watches give:
changes within milliseconds and no repeated full lists.

The loop is client-go's reflector:

* list, hand the whole list to the cache (``replace``: objects missing from it
  are gone), remember the list's ``resourceVersion``;
* watch from that version with bookmarks, handing each event to the cache and
  advancing the version on every event, bookmarks included, so a reconnect
  resumes where the stream stopped; the server ends each watch after
  ``timeout_seconds`` and the loop reconnects from the version it holds;
* ``410 Gone`` (the version was compacted away), as an HTTP status or as an
  ``ERROR`` event: relist at once;
* any other failure: back off exponentially (with jitter, capped), then
  relist — the state missed meanwhile is unknown. A ``404 Not Found`` (the
  kind's CRD was deleted, or its version no longer served) is reported to
  ``on_missing`` first, so the provider can re-run discovery and retire the
  watcher rather than let it retry forever.

Invariant: events reach the cache in the order the server sent them, through
``sink`` (called on this thread; the provider hops to its loop).
"""

from __future__ import annotations

import json
import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes import watch as _watch
from kubernetes.client.exceptions import ApiException

from providers.kubernetes.resources import Resource, list_call

logger = logging.getLogger(__name__)
watch: Any = _watch  # untyped module


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays after failures: ``initial`` doubling up to ``cap``, each with +-20% jitter."""

    initial: float = 0.5
    cap: float = 30.0

    def delay(self, failures: int) -> float:
        base = min(self.cap, self.initial * 2.0 ** max(0, failures - 1))
        return base * random.uniform(0.8, 1.2)


@dataclass(frozen=True, slots=True)
class Replace:
    """A fresh list: the complete set of ``resource`` objects in ``namespace`` (None: all)."""

    resource: Resource
    namespace: str | None
    items: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Event:
    """One watch event: ``type`` ADDED, MODIFIED or DELETED."""

    resource: Resource
    type: str
    object: dict[str, Any]


Sink = Callable[[Replace | Event], None]


class Watcher:
    """The list+watch loop of one resource in one namespace (``None``: every namespace)."""

    def __init__(
        self,
        api: client.ApiClient,
        resource: Resource,
        namespace: str | None,
        sink: Sink,
        *,
        backoff: Backoff | None = None,
        watch_timeout: int = 300,
        on_missing: Callable[[], None] | None = None,
    ) -> None:
        self.resource = resource
        self.namespace = namespace
        self._call = list_call(api, resource, namespace)
        self._sink = sink
        self._backoff = backoff or Backoff()
        self._watch_timeout = watch_timeout
        self._on_missing = on_missing
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._response: Any = None
        self._thread = threading.Thread(
            target=self._run, name=f"kubernetes-watch-{resource.plural}-{namespace or '*'}",
            daemon=True,
        )
        self.lists = 0  # how many lists this watcher made (relists show in tests and logs)

    @property
    def label(self) -> str:
        where = f" in {self.namespace}" if self.namespace else ""
        return f"{self.resource.kind} ({self.resource.api_version}){where}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Ask the loop to end and unblock any read in progress (returns at once)."""
        with self._lock:
            self._stopping.set()
            response = self._response
        if response is not None:
            _shutdown(response)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        version: str | None = None
        failures = 0
        while not self._stopping.is_set():
            try:
                if version is None:
                    version = self._list()
                    failures = 0
                version = self._watch(version)
            except ApiException as exc:
                if self._stopping.is_set():
                    break
                version = None
                if exc.status == 410:
                    logger.info("kubernetes provider: %s: resourceVersion expired; relisting",
                                self.label)
                    continue
                if exc.status == 404 and self._on_missing is not None:
                    self._on_missing()
                failures += 1
                self._pause(failures, f"HTTP {exc.status} {exc.reason}")
            except Exception as exc:  # network errors come in many classes; all mean "retry"
                if self._stopping.is_set():
                    break
                version = None
                failures += 1
                self._pause(failures, repr(exc))

    def _pause(self, failures: int, why: str) -> None:
        delay = self._backoff.delay(failures)
        logger.warning("kubernetes provider: %s: %s; retrying in %.1fs", self.label, why, delay)
        self._stopping.wait(delay)

    def _list(self) -> str:
        kwargs: dict[str, Any] = {"_preload_content": False, "_request_timeout": 60}
        if self.resource.field_selector:
            kwargs["field_selector"] = self.resource.field_selector
        response = self._call(**kwargs)
        body = json.loads(response.data or b"{}")
        items = []
        for item in body.get("items") or ():
            if isinstance(item, dict):
                # List items come without apiVersion and kind; the parser needs both.
                item["apiVersion"] = self.resource.api_version
                item["kind"] = self.resource.kind
                items.append(item)
        self.lists += 1
        if not self._stopping.is_set():
            self._sink(Replace(self.resource, self.namespace, items))
        return str((body.get("metadata") or {}).get("resourceVersion") or "")

    def _watch(self, version: str) -> str:
        """Stream events from ``version``; return the version to resume from."""
        stream = watch.Watch(return_type="object")  # "object": keep raw mappings
        kwargs: dict[str, Any] = {
            "allow_watch_bookmarks": True,
            "resource_version": version,
            # Jitter spreads the reconnects of many watches (client-go: 5-10 min).
            "timeout_seconds": int(self._watch_timeout * random.uniform(1.0, 2.0)),
            "_request_timeout": (30, self._watch_timeout * 2 + 30),
        }
        if self.resource.field_selector:
            kwargs["field_selector"] = self.resource.field_selector
        for event in stream.stream(self._open, **kwargs):
            if self._stopping.is_set():
                break
            obj = event.get("raw_object")
            if not isinstance(obj, dict):
                continue
            found = (obj.get("metadata") or {}).get("resourceVersion")
            if found:
                version = str(found)
            kind = event.get("type")
            if kind in ("ADDED", "MODIFIED", "DELETED"):
                obj.setdefault("apiVersion", self.resource.api_version)
                obj.setdefault("kind", self.resource.kind)
                self._sink(Event(self.resource, str(kind), obj))
        return version

    def _open(self, *args: Any, **kwargs: Any) -> Any:
        """The list call in watch mode, with its response kept so ``stop`` can cut it."""
        response = self._call(*args, **kwargs)
        with self._lock:
            self._response = response
            stopping = self._stopping.is_set()
        if stopping:
            _shutdown(response)
        return response


def _shutdown(response: Any) -> None:
    """Unblock a thread reading ``response`` (urllib3 >= 2.3 ``shutdown``)."""
    try:
        response.shutdown()
    except Exception as exc:  # already closed: nothing to unblock
        logger.debug("kubernetes provider: closing a watch: %r", exc)
