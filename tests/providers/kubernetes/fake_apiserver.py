"""Test helper: a stand-in Kubernetes API server (aiohttp, 127.0.0.1, port 0).

It implements what the provider uses, as the real API server does it:
discovery (``/apis``, ``/apis/<group>/<version>``); list with
``resourceVersion`` and ``fieldSelector`` (equality only); watch streams
resuming from a ``resourceVersion``, with ``BOOKMARK`` events on request and
``ERROR 410`` for a version older than the last compaction; create, replace
(PUT, with the ``resourceVersion`` precondition: 409 Conflict), get, delete;
the ``status`` subresource with JSON merge patch (RFC 7386), the patch's
``metadata.resourceVersion`` a precondition; ``generation`` bumped when
``spec`` changes. List items come without ``apiVersion``/``kind``, as from
the real server. Every request is logged in ``requests`` in arrival order.

CRD kinds (the groups in ``served``) answer only in the versions served:
``serve`` and ``unserve`` install and remove a kind's version while running,
as applying or deleting its CRD does (removing ends that version's watches;
a list or watch of a version not served is 404 Not Found).
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

GW = "gateway.networking.k8s.io"

# (group, plural) -> (kind, namespaced)
RESOURCES: dict[tuple[str, str], tuple[str, bool]] = {
    ("", "services"): ("Service", True),
    ("", "secrets"): ("Secret", True),
    ("", "namespaces"): ("Namespace", False),
    ("discovery.k8s.io", "endpointslices"): ("EndpointSlice", True),
    ("coordination.k8s.io", "leases"): ("Lease", True),
    (GW, "gatewayclasses"): ("GatewayClass", False),
    (GW, "gateways"): ("Gateway", True),
    (GW, "httproutes"): ("HTTPRoute", True),
    (GW, "tlsroutes"): ("TLSRoute", True),
    (GW, "tcproutes"): ("TCPRoute", True),
    (GW, "udproutes"): ("UDPRoute", True),
    (GW, "referencegrants"): ("ReferenceGrant", True),
    ("sluice.dev", "middlewares"): ("Middleware", True),
}
_BUILT_IN_GROUPS = ("", "discovery.k8s.io", "coordination.k8s.io")
PLURALS = {(group, kind): plural for (group, plural), (kind, _) in RESOURCES.items()}
# What the CRD bundle serves: group -> version -> kinds (first version preferred).
DEFAULT_SERVED: dict[str, dict[str, tuple[str, ...]]] = {
    GW: {
        "v1": ("GatewayClass", "Gateway", "HTTPRoute", "ReferenceGrant"),
        "v1beta1": ("GatewayClass", "Gateway", "HTTPRoute", "ReferenceGrant"),
        "v1alpha2": ("TCPRoute", "UDPRoute", "TLSRoute", "ReferenceGrant"),
    },
    "sluice.dev": {"v1alpha1": ("Middleware",)},
}


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    body: Any = None
    status: int = 0  # the response's, once answered


@dataclass(eq=False)
class _Subscription:
    group: str
    plural: str
    namespace: str | None
    bookmarks: bool
    version: str = "v1"
    queue: asyncio.Queue[dict[str, Any] | None] = field(default_factory=asyncio.Queue)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def _status(code: int, reason: str, message: str) -> web.Response:
    return web.json_response(
        {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
         "reason": reason, "code": code},
        status=code,
    )


class FakeAPIServer:
    """A Kubernetes API server stand-in; ``url`` once started."""

    def __init__(self, served: dict[str, dict[str, tuple[str, ...]]] | None = None) -> None:
        source = served if served is not None else DEFAULT_SERVED
        self.served = {g: dict(versions) for g, versions in source.items()}
        self.objects: dict[tuple[str, str], dict[tuple[str, str], dict[str, Any]]] = {}
        self.version = 100
        self.compacted = 0
        self.log: list[tuple[int, str, str, str, dict[str, Any]]] = []
        self.requests: list[Request] = []
        self.token: str | None = None  # when set, requests need "Authorization: Bearer <token>"
        self._subscriptions: set[_Subscription] = set()
        self._changed = asyncio.Condition()
        self._uids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.url = ""

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"

    async def stop(self) -> None:
        self.drop_watches()
        if self._runner is not None:
            await self._runner.cleanup()

    def kubeconfig(self) -> str:
        return json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "nobody"}}],
            "users": [{"name": "nobody", "user": {}}],
        })

    # --- what tests do -----------------------------------------------------------------------

    def put(self, obj: dict[str, Any], *, unseen: bool = False) -> dict[str, Any]:
        """Create or replace ``obj`` (as ``kubectl apply`` would, without preconditions).

        ``unseen``: no watch hears of it (its event is lost, as in a compaction).
        """
        group, _ = _split(obj["apiVersion"])
        plural = PLURALS[(group, obj["kind"])]
        namespaced = RESOURCES[(group, plural)][1]
        metadata = obj.setdefault("metadata", {})
        if namespaced:
            metadata.setdefault("namespace", "default")
        key = (metadata.get("namespace", "") if namespaced else "", metadata["name"])
        return self._store(group, plural, key, copy.deepcopy(obj), unseen=unseen)

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        group, _ = _split(api_version)
        plural = PLURALS[(group, kind)]
        obj = self.objects.get((group, plural), {}).pop((namespace, name))
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)
        self._emit(group, plural, "DELETED", obj)

    def get(self, kind: str, namespace: str, name: str, group: str = GW) -> dict[str, Any]:
        return self.objects[(group, PLURALS[(group, kind)])][(namespace, name)]

    def compact(self) -> None:
        """Forget the event history: a watch from an older version now gets 410 Gone."""
        self.compacted = self.version
        self.log.clear()

    def drop_watches(self) -> None:
        """End every open watch stream (as an API server restart or load balancer would)."""
        for subscription in list(self._subscriptions):
            subscription.queue.put_nowait(None)

    def bookmark(self) -> None:
        """Send a BOOKMARK at the current version to every watch that asked for them."""
        for subscription in self._subscriptions:
            if subscription.bookmarks:
                kind = RESOURCES[(subscription.group, subscription.plural)][0]
                subscription.queue.put_nowait({"type": "BOOKMARK", "object": {
                    "kind": kind, "metadata": {"resourceVersion": str(self.version)}}})

    def serve(self, group: str, version: str, kind: str) -> None:
        """Serve ``kind`` in ``group/version`` from now on (its CRD applied)."""
        versions = self.served.setdefault(group, {})
        if kind not in versions.get(version, ()):
            versions[version] = (*versions.get(version, ()), kind)
        self._notify()

    def unserve(self, group: str, version: str, kind: str) -> None:
        """Stop serving ``kind`` in ``group/version``, ending its watches there."""
        versions = self.served.get(group, {})
        left = tuple(k for k in versions.get(version, ()) if k != kind)
        if left:
            versions[version] = left
        else:
            versions.pop(version, None)
        if not versions:
            self.served.pop(group, None)
        plural = PLURALS[(group, kind)]
        for subscription in list(self._subscriptions):
            if (subscription.group, subscription.plural, subscription.version) == (
                    group, plural, version):
                subscription.queue.put_nowait(None)
        self._notify()

    def watching(self, plural: str, version: str | None = None) -> int:
        return sum(1 for s in self._subscriptions
                   if s.plural == plural and version in (None, s.version))

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 15.0) -> None:
        """Wait until ``predicate()`` holds; it is checked after every request and change."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(predicate)

    def patches(self, kind: str | None = None) -> list[Request]:
        """The status patches applied (409 Conflicts and other refusals left out)."""
        return [
            r for r in self.requests
            if r.method == "PATCH" and r.path.endswith("/status") and r.status == 200
            and (kind is None or f"/{PLURALS[(GW, kind)]}/" in r.path)
        ]

    # --- storage -----------------------------------------------------------------------------

    def _store(
        self, group: str, plural: str, key: tuple[str, str], obj: dict[str, Any],
        unseen: bool = False,
    ) -> dict[str, Any]:
        collection = self.objects.setdefault((group, plural), {})
        old = collection.get(key)
        self.version += 1
        metadata = obj["metadata"]
        metadata["resourceVersion"] = str(self.version)
        if old is None:
            metadata.setdefault("uid", f"uid-{next(self._uids)}")
            metadata.setdefault("creationTimestamp", "2024-01-01T00:00:00Z")
            metadata["generation"] = 1
        else:
            old_meta = old["metadata"]
            metadata["uid"] = old_meta["uid"]
            metadata["creationTimestamp"] = old_meta["creationTimestamp"]
            changed = obj.get("spec") != old.get("spec")
            metadata["generation"] = old_meta["generation"] + (1 if changed else 0)
            if "status" in old and "status" not in obj:
                obj["status"] = old["status"]
        collection[key] = obj
        if not unseen:
            self._emit(group, plural, "ADDED" if old is None else "MODIFIED", obj)
        return obj

    def _emit(self, group: str, plural: str, type_: str, obj: dict[str, Any]) -> None:
        event_obj = copy.deepcopy(obj)
        self.log.append((self.version, group, plural, type_, event_obj))
        namespace = obj["metadata"].get("namespace")
        for subscription in self._subscriptions:
            if (subscription.group, subscription.plural) == (group, plural) and \
                    subscription.namespace in (None, namespace):
                subscription.queue.put_nowait({"type": type_, "object": event_obj})
        self._notify()

    def _notify(self) -> None:
        async def notify() -> None:
            async with self._changed:
                self._changed.notify_all()
        asyncio.get_running_loop().create_task(notify())

    # --- HTTP --------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json() if request.can_read_body else None
        record = Request(request.method, request.path, dict(request.query), body)
        self.requests.append(record)
        try:
            if self.token is not None and \
                    request.headers.get("Authorization", "").lower() != f"bearer {self.token}":
                response: web.StreamResponse = _status(401, "Unauthorized", "Unauthorized")
            else:
                response = await self._route(request, body)
            record.status = response.status
            return response
        finally:
            self._notify()

    async def _route(self, request: web.Request, body: Any) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        if parts == ["apis"]:
            return web.json_response(self._groups())
        if parts[:1] == ["api"] and len(parts) >= 2:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
            if not rest:
                return self._resource_list(group, parts[2])
        else:
            return _status(404, "NotFound", f"{request.path} not found")
        namespace: str | None = None
        if len(rest) >= 3 and rest[0] == "namespaces" and RESOURCES.get((group, rest[2]),
                                                                        ("", False))[1]:
            namespace, rest = rest[1], rest[2:]
        if not rest or (group, rest[0]) not in RESOURCES:
            return _status(404, "NotFound", f"{request.path} not found")
        plural, name = rest[0], (rest[1] if len(rest) > 1 else None)
        kind = RESOURCES[(group, plural)][0]
        if group in self._crd_groups() and kind not in self.served.get(group, {}).get(
                version, ()):
            return _status(404, "NotFound", f"the server could not find the requested resource "
                           f"({group}/{version} {plural})")
        sub = rest[2] if len(rest) > 2 else None
        if name is None:
            if request.method == "POST":
                return self._create(group, plural, namespace, body)
            if request.query.get("watch") in ("true", "1"):
                return await self._watch(request, group, version, plural, namespace)
            return self._list(request, group, plural, namespace)
        key = (namespace or "", name)
        current = self.objects.get((group, plural), {}).get(key)
        if current is None:
            return _status(404, "NotFound", f'{plural} "{name}" not found')
        if request.method == "GET":
            return web.json_response(current)
        expected = ((body or {}).get("metadata") or {}).get("resourceVersion")
        if expected and expected != current["metadata"]["resourceVersion"]:
            return _status(409, "Conflict", "the object has been modified")
        if request.method == "PATCH" and sub == "status":
            updated = copy.deepcopy(current)
            updated["status"] = merge_patch(current.get("status") or {}, body.get("status"))
            self.version += 1
            updated["metadata"]["resourceVersion"] = str(self.version)
            self.objects[(group, plural)][key] = updated
            self._emit(group, plural, "MODIFIED", updated)
            return web.json_response(updated)
        if request.method == "PUT" and sub is None:
            return web.json_response(self._store(group, plural, key, copy.deepcopy(body)))
        return _status(405, "MethodNotAllowed", f"{request.method} {request.path}")

    def _groups(self) -> dict[str, Any]:
        groups = []
        for group, versions in self.served.items():
            listed = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
            groups.append({"name": group, "versions": listed, "preferredVersion": listed[0]})
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}

    def _resource_list(self, group: str, version: str) -> web.Response:
        kinds = self.served.get(group, {}).get(version)
        if kinds is None:
            return _status(404, "NotFound", f"{group}/{version} not served")
        resources = []
        for kind in kinds:
            plural = PLURALS[(group, kind)]
            namespaced = RESOURCES[(group, plural)][1]
            resources.append({"name": plural, "kind": kind, "namespaced": namespaced,
                              "verbs": ["get", "list", "watch", "patch"]})
            resources.append({"name": f"{plural}/status", "kind": kind,
                              "namespaced": namespaced, "verbs": ["get", "patch"]})
        return web.json_response({"kind": "APIResourceList", "apiVersion": "v1",
                                  "groupVersion": f"{group}/{version}", "resources": resources})

    def _create(
        self, group: str, plural: str, namespace: str | None, body: dict[str, Any]
    ) -> web.Response:
        key = (namespace or "", body["metadata"]["name"])
        if key in self.objects.get((group, plural), {}):
            return _status(409, "AlreadyExists", f'{plural} "{key[1]}" already exists')
        return web.json_response(self._store(group, plural, key, copy.deepcopy(body)),
                                 status=201)

    def _selected(
        self, request: web.Request, group: str, plural: str, namespace: str | None,
        obj: dict[str, Any],
    ) -> bool:
        if namespace is not None and obj["metadata"].get("namespace") != namespace:
            return False
        selector = request.query.get("fieldSelector", "")
        for term in filter(None, selector.split(",")):
            path, _, value = term.partition("=")
            found: Any = obj
            for step in path.split("."):
                found = found.get(step) if isinstance(found, dict) else None
            if str(found) != value:
                return False
        return True

    def _list(
        self, request: web.Request, group: str, plural: str, namespace: str | None
    ) -> web.Response:
        kind = RESOURCES[(group, plural)][0]
        items = []
        for obj in self.objects.get((group, plural), {}).values():
            if self._selected(request, group, plural, namespace, obj):
                item = copy.deepcopy(obj)
                item.pop("apiVersion", None)
                item.pop("kind", None)
                items.append(item)
        return web.json_response({"kind": f"{kind}List", "apiVersion": "v1",
                                  "metadata": {"resourceVersion": str(self.version)},
                                  "items": items})

    def _crd_groups(self) -> set[str]:
        return {group for group, _ in PLURALS if group not in _BUILT_IN_GROUPS}

    async def _watch(
        self, request: web.Request, group: str, version: str, plural: str,
        namespace: str | None,
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        since = request.query.get("resourceVersion", "")
        start = int(since) if since not in ("", "0") else self.version
        if start < self.compacted:
            await self._send(response, {"type": "ERROR", "object": {
                "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 410,
                "reason": "Expired", "message": f"too old resource version: {start}"}})
            return response
        subscription = _Subscription(group, plural, namespace,
                                     request.query.get("allowWatchBookmarks") in ("true", "1"),
                                     version)
        for at, g, p, type_, obj in self.log:
            if at > start and (g, p) == (group, plural) and \
                    self._selected(request, group, plural, namespace, obj):
                subscription.queue.put_nowait({"type": type_, "object": obj})
        self._subscriptions.add(subscription)
        self._notify()
        timeout = float(request.query.get("timeoutSeconds") or 3600)
        try:
            async with asyncio.timeout(timeout):
                while (event := await subscription.queue.get()) is not None:
                    if event["type"] != "BOOKMARK" and not self._selected(
                            request, group, plural, namespace, event["object"]):
                        continue
                    await self._send(response, event)
        except (TimeoutError, ConnectionError):
            pass
        finally:
            self._subscriptions.discard(subscription)
            self._notify()
        return response

    @staticmethod
    async def _send(response: web.StreamResponse, event: dict[str, Any]) -> None:
        await response.write(json.dumps(event).encode() + b"\n")


def _split(api_version: str) -> tuple[str, str]:
    group, _, version = api_version.rpartition("/")
    return group, version
