"""Conformance port, GATEWAY-HTTP extended: request mirroring and timeouts.

Upstream ``httproute-request-mirror``, ``httproute-request-multiple-mirrors``,
``httproute-timeout-request`` and ``httproute-timeout-backend-request``. The
suite detects a mirrored request in the mirror pod's log; here the echo
backend queues each arrival and the test waits on that queue.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.providers.gatewayapi.conformance.base import INFRA, running

MIRROR = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: request-mirror, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /mirror}}]
    filters:
    - type: RequestMirror
      requestMirror: {backendRef: {name: infra-backend-v2, port: 8080}}
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /multi-mirror}}]
    filters:
    - type: RequestMirror
      requestMirror: {backendRef: {name: infra-backend-v2, port: 8080}}
    - type: RequestMirror
      requestMirror: {backendRef: {name: infra-backend-v3, port: 8080}}
    backendRefs: [{name: infra-backend-v1, port: 8080}]
"""


async def test_request_mirror_and_multiple_mirrors(tmp_path: Path) -> None:
    """HTTPRouteRequestMirror, HTTPRouteRequestMultipleMirrors: copies reach every mirror."""
    async with running(tmp_path, MIRROR) as s:
        assert await s.pod("same-namespace", "/mirror") == "infra-backend-v1-pod"
        v2 = s.echoes[(INFRA, "infra-backend-v2")].arrivals
        v3 = s.echoes[(INFRA, "infra-backend-v3")].arrivals
        assert (await asyncio.wait_for(v2.get(), 5)).target == "/mirror"
        assert await s.pod("same-namespace", "/multi-mirror") == "infra-backend-v1-pod"
        assert (await asyncio.wait_for(v2.get(), 5)).target == "/multi-mirror"
        assert (await asyncio.wait_for(v3.get(), 5)).target == "/multi-mirror"


TIMEOUTS = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: timeouts, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /request-timeout}}]
    timeouts: {request: 200ms}
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /backend-timeout}}]
    timeouts: {backendRequest: 200ms}
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /disable-request-timeout}}]
    timeouts: {request: 0s}
    backendRefs: [{name: infra-backend-v1, port: 8080}]
"""


async def test_timeouts(tmp_path: Path) -> None:
    """HTTPRouteTimeoutRequest, HTTPRouteTimeoutBackendRequest: expiry is 504; 0s disables."""
    async with running(tmp_path, TIMEOUTS) as s:
        got = [
            (path, (await s.request("same-namespace", path)).status)
            for path in (
                "/request-timeout?delay=1s",
                "/backend-timeout?delay=1s",
                "/request-timeout",
                "/disable-request-timeout?delay=500ms",
            )
        ]
        assert got == [
            ("/request-timeout?delay=1s", 504),
            ("/backend-timeout?delay=1s", 504),
            ("/request-timeout", 200),
            ("/disable-request-timeout?delay=500ms", 200),
        ]
