"""Conformance port, GATEWAY-HTTP core routing: attachment, hostnames, matching, precedence.

Each test loads the upstream test's manifests (kubernetes-sigs/gateway-api
``conformance/tests/<name>.yaml``, adapted as ``base.py`` says) and asserts
what the upstream Go test asserts: the backend pod that answers each request
and the route's and Gateway's status conditions.
"""

from __future__ import annotations

from pathlib import Path

from tests.providers.gatewayapi.conformance.base import INFRA, WEB, running

ACCEPTED = {"Accepted": ("True", "Accepted"), "ResolvedRefs": ("True", "ResolvedRefs")}

SIMPLE = """
apiVersion: gateway.networking.k8s.io/v1beta1
kind: HTTPRoute
metadata: {name: gateway-conformance-infra-test, namespace: gateway-conformance-infra}
spec:
  parentRefs:
  - name: same-namespace
  rules:
  - backendRefs:
    - name: infra-backend-v1
      port: 8080
"""


async def test_simple_same_namespace(tmp_path: Path) -> None:
    """HTTPRouteSimpleSameNamespace: a route in the Gateway's namespace is accepted and served."""
    async with running(tmp_path, SIMPLE) as s:
        assert s.parent_conditions(
            "HTTPRoute", INFRA, "gateway-conformance-infra-test"
        ) == ACCEPTED
        assert s.listener("same-namespace", "http")["attachedRoutes"] == 1
        reply = await s.request("same-namespace", "/")
        assert reply.status == 200
        assert (reply.json()["pod"], reply.json()["namespace"]) == ("infra-backend-v1-pod", INFRA)


CROSS_NAMESPACE = """
apiVersion: gateway.networking.k8s.io/v1beta1
kind: HTTPRoute
metadata: {name: cross-namespace, namespace: gateway-conformance-web-backend}
spec:
  parentRefs:
  - name: backend-namespaces
    namespace: gateway-conformance-infra
  rules:
  - backendRefs:
    - name: web-backend
      port: 8080
"""


async def test_cross_namespace(tmp_path: Path) -> None:
    """HTTPRouteCrossNamespace: a route in a namespace selected by label attaches and serves."""
    async with running(tmp_path, CROSS_NAMESPACE) as s:
        assert s.parent_conditions("HTTPRoute", WEB, "cross-namespace") == ACCEPTED
        reply = await s.request("backend-namespaces", "/")
        assert (reply.status, reply.json()["pod"], reply.json()["namespace"]) == (
            200, "web-backend-pod", WEB
        )


MATCHING = """
apiVersion: gateway.networking.k8s.io/v1beta1
kind: HTTPRoute
metadata: {name: matching, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace}]
  rules:
  - matches:
    - path: {type: PathPrefix, value: /}
    - headers: [{name: version, value: one}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches:
    - path: {type: PathPrefix, value: /v2}
    - headers: [{name: version, value: two}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
"""


async def test_matching(tmp_path: Path) -> None:
    """HTTPRouteMatching: element-wise path prefixes and header matches pick the rule."""
    cases = [
        ("/", (), "infra-backend-v1-pod"),
        ("/example", (), "infra-backend-v1-pod"),
        ("/", (("Version", "one"),), "infra-backend-v1-pod"),
        ("/v2", (), "infra-backend-v2-pod"),
        ("/v2/example", (), "infra-backend-v2-pod"),
        ("/", (("Version", "two"),), "infra-backend-v2-pod"),
        ("/v2example", (), "infra-backend-v1-pod"),
        ("/foo/v2/example", (), "infra-backend-v1-pod"),
    ]
    async with running(tmp_path, MATCHING) as s:
        got = [(p, h, await s.pod("same-namespace", p, headers=h)) for p, h, _ in cases]
        assert got == cases


PATH_MATCH_ORDER = """
apiVersion: gateway.networking.k8s.io/v1beta1
kind: HTTPRoute
metadata: {name: path-matching-order, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace}]
  rules:
  - {matches: [{path: {type: Exact, value: /match}}],
     backendRefs: [{name: infra-backend-v1, port: 8080}]}
  - {matches: [{path: {type: Exact, value: /match/exact}}],
     backendRefs: [{name: infra-backend-v2, port: 8080}]}
  - {matches: [{path: {type: Exact, value: /match/exact/one}}],
     backendRefs: [{name: infra-backend-v3, port: 8080}]}
  - {matches: [{path: {type: PathPrefix, value: /match/}}],
     backendRefs: [{name: infra-backend-v3, port: 8080}]}
  - {matches: [{path: {type: PathPrefix, value: /match/prefix/}}],
     backendRefs: [{name: infra-backend-v1, port: 8080}]}
  - {matches: [{path: {type: PathPrefix, value: /match/prefix/one}}],
     backendRefs: [{name: infra-backend-v2, port: 8080}]}
"""


async def test_path_match_order(tmp_path: Path) -> None:
    """HTTPRoutePathMatchOrder: Exact beats prefixes; the longest prefix wins."""
    cases = [
        ("/match/exact/one", "infra-backend-v3-pod"),
        ("/match/exact", "infra-backend-v2-pod"),
        ("/match", "infra-backend-v1-pod"),
        ("/match/prefix/one/any", "infra-backend-v2-pod"),
        ("/match/prefix/any", "infra-backend-v1-pod"),
        ("/match/any", "infra-backend-v3-pod"),
    ]
    async with running(tmp_path, PATH_MATCH_ORDER) as s:
        assert s.parent_conditions("HTTPRoute", INFRA, "path-matching-order") == ACCEPTED
        assert [(p, await s.pod("same-namespace", p)) for p, _ in cases] == cases


ACROSS_ROUTES = """
apiVersion: gateway.networking.k8s.io/v1beta1
kind: HTTPRoute
metadata: {name: matching-part1, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace}]
  hostnames: [example.com, example.net]
  rules:
  - matches:
    - path: {type: PathPrefix, value: /}
    - headers: [{name: version, value: one}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: HTTPRoute
metadata: {name: matching-part2, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace}]
  hostnames: ["*.com"]
  rules:
  - matches:
    - path: {type: PathPrefix, value: /v2}
    - headers: [{name: version, value: two}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
"""


async def test_matching_across_routes(tmp_path: Path) -> None:
    """HTTPRouteMatchingAcrossRoutes: precedence applies across routes sharing a listener."""
    cases = [
        ("example.com", "/", (), "infra-backend-v1-pod"),
        ("example.net", "/", (), "infra-backend-v1-pod"),
        ("example.com", "/example", (), "infra-backend-v1-pod"),
        ("example.net", "/example", (), "infra-backend-v1-pod"),
        ("example.com", "/example", (("Version", "one"),), "infra-backend-v1-pod"),
        ("example.com", "/v2", (), "infra-backend-v2-pod"),
        ("example.net", "/v2", (), "infra-backend-v1-pod"),
        ("example.com", "/v2/example", (), "infra-backend-v2-pod"),
        ("example.com", "/", (("Version", "two"),), "infra-backend-v2-pod"),
        ("example.org", "/v2", (), "status 404"),
    ]
    async with running(tmp_path, ACROSS_ROUTES) as s:
        got = [
            (host, p, h, await s.pod("same-namespace", p, host=host, headers=h))
            for host, p, h, _ in cases
        ]
        assert got == cases


HEADER_MATCHING = """
apiVersion: gateway.networking.k8s.io/v1beta1
kind: HTTPRoute
metadata: {name: header-matching, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace}]
  rules:
  - matches: [{headers: [{name: version, value: one}]}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{headers: [{name: version, value: two}]}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
  - matches: [{headers: [{name: version, value: two}, {name: color, value: orange}]}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{headers: [{name: color, value: blue}]}, {headers: [{name: color, value: green}]}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{headers: [{name: color, value: red}]}, {headers: [{name: color, value: yellow}]}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
"""


async def test_header_matching(tmp_path: Path) -> None:
    """HTTPRouteHeaderMatching: exact values, case-insensitive names, most headers win."""
    v1, v2, miss = "infra-backend-v1-pod", "infra-backend-v2-pod", "status 404"
    cases = [
        ((("Version", "one"),), v1),
        ((("Version", "two"),), v2),
        ((("Version", "two"), ("Color", "orange")), v1),
        ((("Version", "two"), ("Color", "blue")), v2),
        ((("Color", "blue"),), v1),
        ((("Color", "green"),), v1),
        ((("Color", "red"),), v2),
        ((("Color", "yellow"),), v2),
        ((("Color", "orange"),), miss),
        ((("Version", "three"),), miss),
        ((("Some-Other-Header", "one"),), miss),
        ((("version", "one"),), v1),
        ((("VERSION", "two"),), v2),
    ]
    async with running(tmp_path, HEADER_MATCHING) as s:
        got = [(h, await s.pod("same-namespace", "/", headers=h)) for h, _ in cases]
        assert got == cases


EXACT_PATH = """
apiVersion: gateway.networking.k8s.io/v1beta1
kind: HTTPRoute
metadata: {name: exact-matching, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace}]
  rules:
  - matches: [{path: {type: Exact, value: /}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: Exact, value: /two}}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
"""


async def test_exact_path_matching(tmp_path: Path) -> None:
    """HTTPRouteExactPathMatching: Exact paths match only themselves."""
    cases = [
        ("/", "infra-backend-v1-pod"),
        ("/two", "infra-backend-v2-pod"),
        ("/one", "status 404"),
        ("/two/", "status 404"),
        ("/Two", "status 404"),
        ("/nope", "status 404"),
    ]
    async with running(tmp_path, EXACT_PATH) as s:
        assert [(p, await s.pod("same-namespace", p)) for p, _ in cases] == cases


QUERY_PARAMS = """
apiVersion: gateway.networking.k8s.io/v1beta1
kind: HTTPRoute
metadata: {name: query-param-matching, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace}]
  rules:
  - matches: [{queryParams: [{name: animal, value: whale}]}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{queryParams: [{name: animal, value: dolphin}]}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
  - matches: [{queryParams: [{name: animal, value: dolphin}, {name: color, value: blue}]}]
    backendRefs: [{name: infra-backend-v3, port: 8080}]
  - matches: [{queryParams: [{name: ANIMAL, value: Whale}]}]
    backendRefs: [{name: infra-backend-v3, port: 8080}]
"""


async def test_query_param_matching(tmp_path: Path) -> None:
    """HTTPRouteQueryParamMatching: exact, case-sensitive names; most params win."""
    cases = [
        ("/?animal=whale", "infra-backend-v1-pod"),
        ("/?animal=dolphin", "infra-backend-v2-pod"),
        ("/?animal=dolphin&color=blue", "infra-backend-v3-pod"),
        ("/?ANIMAL=Whale", "infra-backend-v3-pod"),
        ("/?animal=dolphin&color=yellow", "infra-backend-v2-pod"),
        ("/?color=blue", "status 404"),
        ("/?animal=phoenix", "status 404"),
        ("/?animal=WHALE", "status 404"),
        ("/", "status 404"),
    ]
    async with running(tmp_path, QUERY_PARAMS) as s:
        assert [(p, await s.pod("same-namespace", p)) for p, _ in cases] == cases


METHOD_MATCHING = """
apiVersion: gateway.networking.k8s.io/v1beta1
kind: HTTPRoute
metadata: {name: method-matching, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace}]
  rules:
  - matches: [{method: POST}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{method: GET}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
"""


async def test_method_matching(tmp_path: Path) -> None:
    """HTTPRouteMethodMatching: the method picks the rule; others find no route."""
    cases = [
        ("POST", "infra-backend-v1-pod"),
        ("GET", "infra-backend-v2-pod"),
        ("HEAD", "status 404"),
    ]
    async with running(tmp_path, METHOD_MATCHING) as s:
        got = []
        for method, _ in cases:
            reply = await s.request("same-namespace", "/", method=method,
                                    headers=(("Content-Length", "0"),))
            got.append((method, reply.json()["pod"] if reply.status == 200 and reply.body
                        else f"status {reply.status}"))
        assert got == cases


WEIGHT = """
apiVersion: gateway.networking.k8s.io/v1beta1
kind: HTTPRoute
metadata: {name: weighted-backends, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace}]
  rules:
  - backendRefs:
    - {name: infra-backend-v1, port: 8080, weight: 70}
    - {name: infra-backend-v2, port: 8080, weight: 30}
    - {name: infra-backend-v3, port: 8080, weight: 0}
"""


async def test_weight(tmp_path: Path) -> None:
    """HTTPRouteWeight: 500 requests split 70/30/0 within 5 %."""
    async with running(tmp_path, WEIGHT) as s:
        counts: dict[str, int] = {}
        for _ in range(500):
            pod = await s.pod("same-namespace", "/")
            counts[pod] = counts.get(pod, 0) + 1
        assert set(counts) == {"infra-backend-v1-pod", "infra-backend-v2-pod"}
        assert abs(counts["infra-backend-v1-pod"] - 350) <= 25
        assert abs(counts["infra-backend-v2-pod"] - 150) <= 25


WEIGHT_ZERO = """
apiVersion: gateway.networking.k8s.io/v1beta1
kind: HTTPRoute
metadata: {name: all-backends-weight-zero, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace}]
  rules:
  - backendRefs:
    - {name: infra-backend-v1, port: 8080, weight: 0}
    - {name: infra-backend-v2, port: 8080, weight: 0}
"""


async def test_all_backends_weight_zero(tmp_path: Path) -> None:
    """HTTPRouteAllBackendsWeightZero: a rule whose backends all weigh 0 answers 500."""
    async with running(tmp_path, WEIGHT_ZERO) as s:
        assert s.parent_conditions("HTTPRoute", INFRA, "all-backends-weight-zero") == ACCEPTED
        assert (await s.request("same-namespace", "/")).status == 500


GENERATION = """
apiVersion: gateway.networking.k8s.io/v1beta1
kind: HTTPRoute
metadata: {name: observed-generation-bump, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace}]
  rules:
  - backendRefs: [{name: infra-backend-v1, port: 8080}]
"""


async def test_observed_generation_bump(tmp_path: Path) -> None:
    """HTTPRouteObservedGenerationBump: conditions follow the route's generation on a spec edit."""
    async with running(tmp_path, GENERATION) as s:
        def generations() -> set[int]:
            parent = s.status("HTTPRoute", INFRA, "observed-generation-bump")["parents"][0]
            return {c["observedGeneration"] for c in parent["conditions"]}

        assert generations() == {1}
        await s.apply(GENERATION.replace("infra-backend-v1", "infra-backend-v2"))
        assert generations() == {2}
        assert s.parent_conditions("HTTPRoute", INFRA, "observed-generation-bump") == ACCEPTED
        assert await s.pod("same-namespace", "/") == "infra-backend-v2-pod"


TIMESTAMP_TIE = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: a-newer, namespace: gateway-conformance-infra,
           creationTimestamp: "2024-01-02T00:00:00Z"}
spec:
  parentRefs: [{name: same-namespace}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /tie}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: b-older, namespace: gateway-conformance-infra,
           creationTimestamp: "2024-01-01T00:00:00Z"}
spec:
  parentRefs: [{name: same-namespace}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /tie}}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /tie}}]
    backendRefs: [{name: infra-backend-v3, port: 8080}]
"""


async def test_precedence_ties_oldest_route_then_first_rule(tmp_path: Path) -> None:
    """HTTPRoute matches (precedence 6 and 8): the oldest route wins a tie, then its first rule."""
    async with running(tmp_path, TIMESTAMP_TIE) as s:
        assert await s.pod("same-namespace", "/tie") == "infra-backend-v2-pod"


SERVICE_TYPES = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: service-types, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /headless}}]
    backendRefs: [{name: headless, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /manual-endpoints}}]
    backendRefs: [{name: manual-endpoints, port: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: headless, namespace: gateway-conformance-infra}
spec:
  clusterIP: None
  ports: [{name: http, port: 8080, targetPort: 3000}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: headless-a
  namespace: gateway-conformance-infra
  labels: {kubernetes.io/service-name: headless}
addressType: IPv4
ports: [{name: http, port: PORT}]
endpoints: [{addresses: [127.0.0.1], conditions: {ready: true}}]
---
apiVersion: v1
kind: Service
metadata: {name: manual-endpoints, namespace: gateway-conformance-infra}
spec:
  ports: [{name: http, port: 8080, targetPort: 3000}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: manual-endpoints, namespace: gateway-conformance-infra}
subsets:
- addresses: [{ip: 127.0.0.1}]
  ports: [{name: http, port: PORT}]
"""


async def test_service_types(tmp_path: Path) -> None:
    """HTTPRouteServiceTypes: headless Services and manual Endpoints resolve to their endpoints."""
    from tests.providers.gatewayapi.conformance.echo import EchoBackend

    echo = await EchoBackend(INFRA, "manual-pod").start()
    try:
        async with running(tmp_path, SERVICE_TYPES.replace("PORT", str(echo.port))) as s:
            assert s.parent_conditions("HTTPRoute", INFRA, "service-types") == ACCEPTED
            assert await s.pod("same-namespace", "/headless") == "manual-pod"
            assert await s.pod("same-namespace", "/manual-endpoints") == "manual-pod"
    finally:
        await echo.close()
