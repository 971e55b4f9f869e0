"""Conformance port, GATEWAY-HTTP extended: retry, backendRequest timeout edges, percentage mirror.

Upstream ``httproute-retry`` (rules ``code-500-attempts-3``,
``code-all-attempts-2``, ``code-all-attempts-0``), with echo-basic's retry
simulation (``responseCode``/``succeedAfter``/``uuid``: the first
``succeedAfter`` requests of one uuid answer ``responseCode``) served by
``RetryEcho`` below behind its own Service ``retry-backend`` (upstream uses
infra-backend-v3, whose pods run echo-basic); ``httproute-timeout-backend-request``
and the spec's edges of ``timeouts.backendRequest``; and
``httproute-request-percentage-mirror``, whose copies are counted over many
requests within a tolerance.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.backends import Seen
from tests.providers.gatewayapi.conformance.base import (
    INFRA,
    mirror_copies_settled,
    running,
    services_yaml,
)
from tests.providers.gatewayapi.conformance.echo import EchoBackend


class RetryEcho(EchoBackend):
    """echo-basic's retry simulation: fail a uuid's first ``succeedAfter`` requests."""

    tries: Counter[str]

    def _reply(self, seen: Seen) -> bytes:
        query = parse_qs(urlsplit(seen.target).query)
        if "uuid" not in query:
            return super()._reply(seen)
        uuid = query["uuid"][0]
        self.tries[uuid] += 1
        if self.tries[uuid] <= int(query["succeedAfter"][0]):
            code = int(query["responseCode"][0])
            return b"HTTP/1.1 %d Simulated\r\nContent-Length: 0\r\n\r\n" % code
        return super()._reply(seen)


def retry_rule(path: str, codes: str, attempts: int) -> str:
    return f"""
  - matches: [{{path: {{type: PathPrefix, value: {path}}}}}]
    retry: {{codes: [{codes}], attempts: {attempts}}}
    backendRefs: [{{name: retry-backend, port: 8080}}]"""


RETRIES = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: retries, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace}]
  rules:""" + "".join((
    retry_rule("/retry/code-500-attempts-3", "500", 3),
    retry_rule("/retry/code-all-attempts-2", "500, 502, 503, 504", 2),
    retry_rule("/retry/code-all-attempts-0", "500, 502, 503, 504", 0),
)) + "\n"

# path, responseCode, succeedAfter, expected status, tries the backend sees
RETRY_CASES = [
    ("/retry/code-500-attempts-3", 500, 2, 200, 3),
    ("/retry/code-500-attempts-3", 500, 4, 500, 4),
    ("/retry/code-500-attempts-3", 503, 2, 503, 1),
    ("/retry/code-all-attempts-2", 500, 1, 200, 2),
    ("/retry/code-all-attempts-2", 500, 3, 500, 3),
    ("/retry/code-all-attempts-2", 502, 1, 200, 2),
    ("/retry/code-all-attempts-2", 502, 3, 502, 3),
    ("/retry/code-all-attempts-2", 503, 1, 200, 2),
    ("/retry/code-all-attempts-2", 503, 3, 503, 3),
    ("/retry/code-all-attempts-2", 504, 1, 200, 2),
    ("/retry/code-all-attempts-2", 504, 3, 504, 3),
    # Edges (spec): attempts counts retries after the first try, so 3 attempts
    # absorb 3 failures; an explicit 0 disables retrying.
    ("/retry/code-500-attempts-3", 500, 3, 200, 4),
    ("/retry/code-all-attempts-0", 500, 1, 500, 1),
]


async def test_retry(tmp_path: Path) -> None:
    """HTTPRouteRetry: listed codes are retried up to attempts times; others are not."""
    echo = RetryEcho(INFRA, "retry-backend-pod")
    echo.tries = Counter()
    await echo.start()
    try:
        manifests = RETRIES + services_yaml([(INFRA, "retry-backend", 8080, echo.port)])
        async with running(tmp_path, manifests) as s:
            assert s.parent_conditions("HTTPRoute", INFRA, "retries") == {
                "Accepted": ("True", "Accepted"), "ResolvedRefs": ("True", "ResolvedRefs")
            }
            got = []
            for n, (path, code, after, _, _) in enumerate(RETRY_CASES):
                target = f"{path}?responseCode={code}&succeedAfter={after}&uuid=u{n}"
                reply = await s.request("same-namespace", target)
                got.append((path, code, after, reply.status, echo.tries[f"u{n}"]))
            assert got == RETRY_CASES
    finally:
        await echo.close()


TIMEOUTS = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: backend-request-timeout, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /backend-timeout}}]
    timeouts: {backendRequest: 500ms}
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /backend-timeout-disabled}}]
    timeouts: {backendRequest: 0s}
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /backend-timeout-under-request}}]
    timeouts: {request: 5s, backendRequest: 200ms}
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /backend-timeout-per-try}}]
    timeouts: {request: 5s, backendRequest: 200ms}
    retry: {codes: [504], attempts: 1}
    backendRefs: [{name: infra-backend-v1, port: 8080}]
"""

# path, status, the longest the answer may take (s), requests the backend sees
TIMEOUT_CASES = [
    ("/backend-timeout", 200, 1.0, 1),
    ("/backend-timeout?delay=1s", 504, 0.9, 1),
    # "0s" disables the timeout.
    ("/backend-timeout-disabled?delay=500ms", 200, 5.0, 1),
    # backendRequest bounds the try even when request is longer, and the
    # gateway answers at the bound, not when the backend finally does.
    ("/backend-timeout-under-request?delay=1s", 504, 0.9, 1),
    ("/backend-timeout-under-request?delay=100ms", 200, 5.0, 1),
]


async def test_backend_request_timeout_edges(tmp_path: Path) -> None:
    """HTTPRouteTimeoutBackendRequest: 504 at the bound, 0s disables, request does not widen it."""
    async with running(tmp_path, TIMEOUTS) as s:
        echo = s.echoes[(INFRA, "infra-backend-v1")]
        got = []
        for path, _, limit, _ in TIMEOUT_CASES:
            before = len(echo.requests)
            started = time.monotonic()
            status = (await s.request("same-namespace", path)).status
            took = time.monotonic() - started
            got.append((path, status, limit if took < limit else took,
                        len(echo.requests) - before))
        assert got == TIMEOUT_CASES


async def test_backend_request_timeout_bounds_each_retry(tmp_path: Path) -> None:
    """HTTPRoute timeouts + retry (spec §2.9): backendRequest bounds each try, 504 is retried."""
    async with running(tmp_path, TIMEOUTS) as s:
        echo = s.echoes[(INFRA, "infra-backend-v1")]
        started = time.monotonic()
        reply = await s.request("same-namespace", "/backend-timeout-per-try?delay=1s")
        took = time.monotonic() - started
        tries = [r.target for r in echo.requests]
        assert (reply.status, tries, took < 0.9) == (
            504, ["/backend-timeout-per-try?delay=1s"] * 2, True
        )


PERCENT_MIRROR = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: request-percentage-mirror, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /percent-mirror}}]
    filters:
    - type: RequestMirror
      requestMirror:
        backendRef: {name: infra-backend-v2, namespace: gateway-conformance-infra, port: 8080}
        percent: 20
    backendRefs: [{name: infra-backend-v1, port: 8080, namespace: gateway-conformance-infra}]
  - matches: [{path: {type: PathPrefix, value: /percent-mirror-fraction}}]
    filters:
    - type: RequestMirror
      requestMirror:
        backendRef: {name: infra-backend-v2, namespace: gateway-conformance-infra, port: 8080}
        fraction: {numerator: 25, denominator: 50}
    backendRefs: [{name: infra-backend-v1, port: 8080, namespace: gateway-conformance-infra}]
  - matches: [{path: {type: PathPrefix, value: /percent-multi-mirror-and-modify-headers}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: X-Header-Set, value: set-overwrites-values}]
        add:
        - {name: X-Header-Add, value: header-val-1}
        - {name: X-Header-Add-Append, value: header-val-2}
        remove: [X-Header-Remove]
    - type: RequestMirror
      requestMirror:
        backendRef: {name: infra-backend-v2, namespace: gateway-conformance-infra, port: 8080}
        percent: 35
    - type: RequestMirror
      requestMirror:
        backendRef: {name: infra-backend-v3, namespace: gateway-conformance-infra, port: 8080}
        percent: 50
    backendRefs: [{name: infra-backend-v1, port: 8080, namespace: gateway-conformance-infra}]
"""
REQUESTS = 1000


def within(count: int, percent: int) -> bool:
    """Copies are drawn at random per request: allow five binomial standard deviations.

    The suite allows 5 % of the expected count over 500 requests and retries
    the whole check up to five times; one draw of 1000 with 5 sigma is as
    reliable and still tells 20 % from 35 % or 50 %.
    """
    p = percent / 100
    return abs(count - REQUESTS * p) <= 5 * math.sqrt(REQUESTS * p * (1 - p))


@pytest.mark.parametrize(
    ("path", "shares"),
    [
        pytest.param("/percent-mirror", {"infra-backend-v2": 20}, id="percent"),
        pytest.param("/percent-mirror-fraction", {"infra-backend-v2": 50}, id="fraction"),
        pytest.param("/percent-multi-mirror-and-modify-headers",
                     {"infra-backend-v2": 35, "infra-backend-v3": 50}, id="multi-and-headers"),
    ],
)
async def test_request_percentage_mirror(
    tmp_path: Path, path: str, shares: dict[str, int]
) -> None:
    """HTTPRouteRequestPercentageMirror: each mirror gets its share of copies, as modified."""
    sent = (("X-Header-Remove", "remove-val"), ("X-Header-Add-Append", "append-val-1"))
    async with running(tmp_path, PERCENT_MIRROR) as s:
        primary = s.echoes[(INFRA, "infra-backend-v1")]
        for _ in range(0, REQUESTS, 20):
            replies = await asyncio.gather(*(
                s.request("same-namespace", path, headers=sent) for _ in range(20)
            ))
            assert {r.status for r in replies} == {200}
        await mirror_copies_settled()
        assert len(primary.requests) == REQUESTS
        counts = {name: len(s.echoes[(INFRA, name)].requests) for name in shares}
        assert {n: within(c, shares[n]) for n, c in counts.items()} == dict.fromkeys(
            shares, True
        ), counts
        if "headers" in path:
            for echo in (primary, *(s.echoes[(INFRA, n)] for n in shares)):
                seen = echo.requests[0]
                assert (seen.header("x-header-set"), seen.header("x-header-add"),
                        # compared as the suite does: all values joined by commas
                        ",".join(v.replace(" ", "") for k, v in seen.headers
                                 if k.lower() == "x-header-add-append"),
                        seen.header("x-header-remove")) == (
                    "set-overwrites-values", "header-val-1", "append-val-1,header-val-2",
                    None,
                ), echo.pod
