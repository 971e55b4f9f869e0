"""Leader election over a ``coordination.k8s.io/v1`` Lease: which replica writes status.

Every replica serves traffic; only the holder of the Lease writes status, so
replicas never fight over it. The algorithm is client-go's
``leaderelection``: a replica takes the Lease when it does not exist, when it
has no holder, or when its record has not changed for ``leaseDurationSeconds``
as measured on this replica's own monotonic clock since it first saw that
record (so clock skew between nodes cannot make a live holder look expired);
the holder renews every ``duration / 5`` and steps down when it has not
renewed for ``2/3`` of the duration. Every write carries the record's
``resourceVersion``, so of two replicas racing for the Lease exactly one wins
(the other gets 409 Conflict). On shutdown the holder empties
``holderIdentity`` (client-go's ``ReleaseOnCancel``) so another replica takes
over at once instead of after a full duration.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

logger = logging.getLogger(__name__)

# The Lease calls below, as RBAC names them: read (get), create, replace (update).
VERBS = ("get", "create", "update")


def _micro_time() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseElector:
    """Campaigns for one Lease and reports every change of leadership to ``on_change``."""

    def __init__(
        self,
        api: client.ApiClient,
        *,
        namespace: str,
        name: str,
        duration: float,
        identity: str,
        on_change: Callable[[bool], None],
    ) -> None:
        self._api: Any = client.CoordinationV1Api(api)  # called with raw mappings
        self.namespace = namespace
        self.name = name
        self.duration = max(1.0, duration)
        self.identity = identity
        self._on_change = on_change
        self.leading = False
        self.decided = asyncio.Event()  # set after the first attempt, won or lost
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        self._renewed_at = 0.0

    async def run(self) -> None:
        retry = self.duration / 5
        while True:
            try:
                won = await asyncio.to_thread(self._attempt)
            except (ApiException, OSError, ValueError) as exc:
                logger.warning("kubernetes provider: lease %s/%s: %s", self.namespace,
                               self.name, exc)
                won = self.leading and time.monotonic() - self._renewed_at < self.duration * 2 / 3
            if won != self.leading:
                self.leading = won
                logger.info("kubernetes provider: %s %s the lease %s/%s", self.identity,
                            "holds" if won else "does not hold", self.namespace, self.name)
                self._on_change(won)
            self.decided.set()
            await asyncio.sleep(retry)

    async def release(self) -> None:
        """Give the Lease up if held (best effort: the holder is shutting down)."""
        if not self.leading:
            return
        self.leading = False
        try:
            await asyncio.to_thread(self._release)
        except (ApiException, OSError, ValueError) as exc:
            logger.warning("kubernetes provider: releasing lease %s/%s: %s", self.namespace,
                           self.name, exc)

    def _read(self) -> dict[str, Any] | None:
        try:
            response = self._api.read_namespaced_lease(
                self.name, self.namespace, _preload_content=False, _request_timeout=10
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        data = json.loads(response.data)
        return data if isinstance(data, dict) else None

    def _attempt(self) -> bool:
        """One try to take or renew the Lease; whether this replica holds it now."""
        now = time.monotonic()
        lease = self._read()
        seconds = max(1, round(self.duration))
        if lease is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": self._spec(seconds, transitions=0, acquired=_micro_time()),
            }
            return self._write(lambda: self._api.create_namespaced_lease(
                self.namespace, body, _preload_content=False, _request_timeout=10), now)
        spec = lease.get("spec") or {}
        record = (spec.get("holderIdentity"), spec.get("renewTime"),
                  lease["metadata"].get("resourceVersion"))
        if record != self._observed:
            self._observed, self._observed_at = record, now
        holder = spec.get("holderIdentity") or ""
        held_for = float(spec.get("leaseDurationSeconds") or seconds)
        if holder and holder != self.identity and now - self._observed_at < held_for:
            return False
        transitions = int(spec.get("leaseTransitions") or 0)
        acquired = spec.get("acquireTime") or _micro_time()
        if holder != self.identity:
            transitions += 1
            acquired = _micro_time()
        lease["spec"] = self._spec(seconds, transitions, acquired)
        return self._write(lambda: self._api.replace_namespaced_lease(
            self.name, self.namespace, lease, _preload_content=False, _request_timeout=10), now)

    def _write(self, call: Callable[[], Any], now: float) -> bool:
        try:
            call()
        except ApiException as exc:
            if exc.status == 409:
                return False  # another replica wrote first
            raise
        self._renewed_at = now
        return True

    def _spec(self, seconds: int, transitions: int, acquired: str) -> dict[str, Any]:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": seconds,
            "acquireTime": acquired,
            "renewTime": _micro_time(),
            "leaseTransitions": transitions,
        }

    def _release(self) -> None:
        lease = self._read()
        if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
            return
        lease["spec"]["holderIdentity"] = ""
        self._api.replace_namespaced_lease(self.name, self.namespace, lease,
                                           _preload_content=False, _request_timeout=10)
