"""Conformance port, GATEWAY-HTTP extended: the CORS filter.

Upstream ``httproute-cors`` (routes ``cors-multiple-origins-methods-headers``,
``cors-wildcard-methods``, ``cors-wildcard-origin``,
``cors-wildcard-methods-headers-auth``, and the ``-unauth`` twin the Go test
requests but the stored YAML lacks: same origins, methods and headers, no
credentials) and ``httproute-cors-allow-credentials-behavior`` (its YAML is
not stored either; the Go test needs ``https://app.example`` allowed, so
both rules list it). Checks are the suite's: a preflight is answered by the
gateway with 200 or 204 (403 also for a refused origin); header values are
compared ignoring whitespace and list order; some headers must be absent.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.providers.gatewayapi.conformance.base import running


def cors_route(name: str, path: str, cors: str) -> str:
    return f"""---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: gateway-conformance-infra}}
spec:
  parentRefs: [{{name: same-namespace}}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: {path}}}}}]
    filters: [{{type: CORS, cors: {cors}}}]
    backendRefs: [{{name: infra-backend-v1, port: 8080}}]
"""


CORS = "".join((
    cors_route("cors-multiple-origins-methods-headers", "/cors-1", (
        "{allowOrigins: ['https://www.foo.com', 'https://*.bar.com'], "
        "allowMethods: [GET, OPTIONS], allowHeaders: [x-header-1, x-header-2], "
        "exposeHeaders: [x-header-3, x-header-4], allowCredentials: true, maxAge: 3600}"
    )),
    cors_route("cors-wildcard-methods", "/cors-2",
               "{allowOrigins: ['https://www.foo.com'], allowMethods: ['*']}"),
    cors_route("cors-wildcard-origin", "/cors-wildcard-origin",
               "{allowOrigins: ['*'], allowMethods: [PUT], allowCredentials: false}"),
    cors_route("cors-wildcard-methods-headers-auth", "/cors-wildcard-methods-headers", (
        "{allowOrigins: ['https://other.foo.com'], allowMethods: ['*'], allowHeaders: ['*'], "
        "allowCredentials: true}"
    )),
    cors_route("cors-wildcard-methods-headers-unauth", "/cors-wildcard-methods-headers-unauth",
               "{allowOrigins: ['https://other.foo.com'], allowMethods: ['*'], "
               "allowHeaders: ['*']}"),
    cors_route("cors-allow-credentials-false", "/cors-behavior-creds-false",
               "{allowOrigins: ['https://app.example'], allowCredentials: false}"),
    cors_route("cors-allow-credentials-true", "/cors-behavior-creds-true",
               "{allowOrigins: ['https://app.example'], allowCredentials: true}"),
))

ACRM = "access-control-request-method"
ACRH = "access-control-request-headers"
ACAO = "access-control-allow-origin"
ACAM = "access-control-allow-methods"
ACAH = "access-control-allow-headers"
ACEH = "access-control-expose-headers"
ACAC = "access-control-allow-credentials"
MAX_AGE = "access-control-max-age"
FOO, BAR, DEEP_BAR = "https://www.foo.com", "https://www.bar.com", "https://xpto.www.bar.com"
FOOBAR, FOOBAR_PORT, OTHER = "https://foobar.com", "https://foobar.com:12345", "https://other.foo.com"
PREFLIGHT_1 = {ACAM: ["GET, OPTIONS"], ACAH: ["x-header-1, x-header-2"],
               ACEH: ["x-header-3, x-header-4"], MAX_AGE: ["3600"], ACAC: ["true"]}
CREDENTIALED = {"Cookie": "sid=abc123", "Authorization": "Bearer test"}


def case(
    name: str, method: str, path: str, headers: dict[str, str], statuses: tuple[int, ...],
    valid: dict[str, list[str]], absent: tuple[str, ...] = (),
) -> tuple[str, str, dict[str, str], tuple[int, ...], dict[str, list[str]], tuple[str, ...]]:
    return (name, method, path, headers, statuses, valid, absent)  # type: ignore[return-value]


CASES = [
    case("preflight-exact-origin", "OPTIONS", "/cors-1",
         {"Origin": FOO, ACRM: "GET", ACRH: "x-header-1, x-header-2"}, (200, 204),
         {ACAO: [FOO], **PREFLIGHT_1}),
    case("preflight-wildcard-origin", "OPTIONS", "/cors-1",
         {"Origin": BAR, ACRM: "GET", ACRH: "x-header-1, x-header-2"}, (200,),
         {ACAO: [BAR], **PREFLIGHT_1}),
    case("preflight-wildcard-many-labels", "OPTIONS", "/cors-1",
         {"Origin": DEEP_BAR, ACRM: "GET", ACRH: "x-header-1, x-header-2"}, (200,),
         {ACAO: [DEEP_BAR], **PREFLIGHT_1}),
    case("preflight-refused-origin", "OPTIONS", "/cors-1",
         {"Origin": FOOBAR, ACRM: "GET"}, (200, 204, 403), {}, (ACAO,)),
    case("simple-exact-origin", "GET", "/cors-1",
         {"Origin": FOO, ACRM: "GET", ACRH: "x-header-1, x-header-2"}, (200, 204),
         {ACAO: [FOO]}),
    case("simple-wildcard-origin", "GET", "/cors-1",
         {"Origin": BAR, ACRM: "GET", ACRH: "x-header-1, x-header-2"}, (200, 204),
         {ACAO: [BAR]}),
    case("simple-refused-origin", "GET", "/cors-1",
         {"Origin": FOOBAR, ACRM: "GET"}, (), {}, (ACAO,)),
    case("preflight-wildcard-methods-no-credentials", "OPTIONS", "/cors-2",
         {"Origin": FOO, ACRM: "POST"}, (200, 204), {ACAM: ["POST", "*"], ACAO: [FOO]}, (ACAC,)),
    case("preflight-any-origin", "OPTIONS", "/cors-wildcard-origin",
         {"Origin": FOOBAR, ACRM: "PUT"}, (200, 204), {ACAO: [FOOBAR, "*"], ACAM: ["PUT"]},
         (ACAC,)),
    case("preflight-any-origin-with-port", "OPTIONS", "/cors-wildcard-origin",
         {"Origin": FOOBAR_PORT, ACRM: "PUT"}, (200, 204),
         {ACAO: [FOOBAR_PORT, "*"], ACAM: ["PUT"]}, (ACAC,)),
    case("simple-any-origin-with-port", "PUT", "/cors-wildcard-origin",
         {"Origin": FOOBAR_PORT}, (200,), {ACAO: [FOOBAR_PORT, "*"]}),
    case("simple-any-origin", "PUT", "/cors-wildcard-origin",
         {"Origin": FOOBAR}, (200, 204), {ACAO: [FOOBAR, "*"]}, (ACAC,)),
    case("preflight-credentials-echo-origin", "OPTIONS", "/cors-wildcard-methods-headers",
         {"Origin": OTHER, ACRM: "PUT", ACRH: "x-header-1, x-header-2"}, (200,),
         {ACAO: [OTHER], ACAM: ["PUT"], ACAH: ["x-header-1, x-header-2"], ACAC: ["true"]}),
    case("preflight-no-credentials-wildcards", "OPTIONS", "/cors-wildcard-methods-headers-unauth",
         {"Origin": OTHER, ACRM: "PUT", ACRH: "x-header-1, x-header-2"}, (200,),
         {ACAO: [OTHER, "*"], ACAM: ["PUT", "*"], ACAH: ["x-header-1, x-header-2", "*"]},
         (ACAC,)),
    case("simple-credentials-echo-origin", "GET", "/cors-wildcard-methods-headers",
         {"Origin": OTHER, "Authorization": "Bearer test"}, (200,),
         {ACAO: [OTHER], ACAC: ["true"]}),
    case("simple-no-credentials", "GET", "/cors-wildcard-methods-headers-unauth",
         {"Origin": OTHER, "Authorization": "Bearer test"}, (200,), {ACAO: [OTHER]}, (ACAC,)),
    case("credentials-false", "GET", "/cors-behavior-creds-false",
         {"Origin": "https://app.example", **CREDENTIALED}, (200,), {}, (ACAC,)),
    case("credentials-true-refused-origin", "GET", "/cors-behavior-creds-true",
         {"Origin": "http://not-app.example", **CREDENTIALED}, (200,), {}, (ACAC,)),
    case("credentials-true", "GET", "/cors-behavior-creds-true",
         {"Origin": "https://app.example", **CREDENTIALED}, (200,),
         {ACAC: ["true"], ACAO: ["https://app.example"]}),
]


def normal(value: str) -> frozenset[str]:
    """A header value as the suite compares it: whitespace ignored, list order ignored."""
    return frozenset(item.strip().lower() for item in value.split(","))


@pytest.mark.parametrize(
    ("name", "method", "path", "headers", "statuses", "valid", "absent"),
    CASES, ids=[c[0] for c in CASES],
)
async def test_cors(
    tmp_path: Path, name: str, method: str, path: str, headers: dict[str, str],
    statuses: tuple[int, ...], valid: dict[str, list[str]], absent: tuple[str, ...],
) -> None:
    """HTTPRouteCORS, HTTPRouteCORSAllowCredentialsBehavior: preflight and simple answers."""
    async with running(tmp_path, CORS) as s:
        extra = (("Content-Length", "0"),) if method in ("PUT", "POST") else ()
        reply = await s.request("same-namespace", path, method=method,
                                headers=(*headers.items(), *extra))
        problems = []
        if statuses and reply.status not in statuses:
            problems.append(f"status {reply.status} not in {statuses}")
        for header, options in valid.items():
            got = reply.header(header)
            if got is None or normal(got) not in {normal(o) for o in options}:
                problems.append(f"{header}: {got!r} not one of {options}")
        problems += [f"{h} present: {reply.header(h)!r}" for h in absent if reply.header(h)]
        assert problems == []
