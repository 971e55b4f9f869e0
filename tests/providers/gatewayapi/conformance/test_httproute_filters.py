"""Conformance port, GATEWAY-HTTP filters: header modifiers, redirects, URL rewrites.

Manifests follow the upstream ``httproute-request-header-modifier``,
``-response-header-modifier``, ``-redirect-*``, ``-30x-redirect`` and
``-rewrite-*`` tests; the checks are theirs: the request as the echo backend
received it, the response headers, and the redirect ``Location`` parts.
Requests carry no Host of their own (the suite sends the Gateway address),
so redirects keep that address as host unless the filter sets one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.providers.gatewayapi.conformance.base import running


def rule(path: str, filters: str, *, backend: bool = True) -> str:
    backends = "\n    backendRefs: [{name: infra-backend-v1, port: 8080}]" if backend else ""
    return f"""
  - matches: [{{path: {{type: PathPrefix, value: {path}}}}}]
    filters:{filters}{backends}"""


def route(name: str, *rules: str, gateway: str = "same-namespace", section: str = "") -> str:
    parent = f"{{name: {gateway}" + (f", sectionName: {section}}}" if section else "}")
    return f"""
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: gateway-conformance-infra}}
spec:
  parentRefs: [{parent}]
  rules:{"".join(rules)}
"""


def headers_of(echo: dict[str, Any]) -> dict[str, str]:
    """The suite compares each header as its values joined by commas, names case-insensitively."""
    return {k.lower(): ",".join(v) for k, v in echo["headers"].items()}


REQUEST_HEADER_MODIFIER = route(
    "request-header-modifier",
    rule("/set", """
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: X-Header-Set, value: set-overwrites-values}]"""),
    rule("/add", """
    - type: RequestHeaderModifier
      requestHeaderModifier:
        add: [{name: X-Header-Add, value: add-appends-values}]"""),
    rule("/remove", """
    - type: RequestHeaderModifier
      requestHeaderModifier:
        remove: [X-Header-Remove]"""),
    rule("/multiple", """
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set:
        - {name: X-Header-Set-1, value: header-set-1}
        - {name: X-Header-Set-2, value: header-set-2}
        add:
        - {name: X-Header-Add-1, value: header-add-1}
        - {name: X-Header-Add-2, value: header-add-2}
        - {name: X-Header-Add-3, value: header-add-3}
        remove: [X-Header-Remove-1, X-Header-Remove-2]"""),
)

# path, request headers, expected headers at the backend, headers that must be absent
REQUEST_HEADER_CASES = [
    ("/set", {"Some-Other-Header": "val"},
     {"some-other-header": "val", "x-header-set": "set-overwrites-values"}, ()),
    ("/set", {"Some-Other-Header": "val", "X-Header-Set": "some-other-value"},
     {"x-header-set": "set-overwrites-values"}, ()),
    ("/add", {"Some-Other-Header": "val"}, {"x-header-add": "add-appends-values"}, ()),
    ("/add", {"X-Header-Add": "some-other-value"},
     {"x-header-add": "some-other-value,add-appends-values"}, ()),
    ("/remove", {"X-Header-Remove": "val"}, {}, ("x-header-remove",)),
    ("/multiple",
     {"X-Header-Set-2": "set-val-2", "X-Header-Add-2": "add-val-2",
      "X-Header-Remove-2": "remove-val-2", "Another-Header": "another-header-val"},
     {"x-header-set-1": "header-set-1", "x-header-set-2": "header-set-2",
      "x-header-add-1": "header-add-1", "x-header-add-2": "add-val-2,header-add-2",
      "x-header-add-3": "header-add-3", "another-header": "another-header-val"},
     ("x-header-remove-1", "x-header-remove-2")),
]


async def test_request_header_modifier(tmp_path: Path) -> None:
    """HTTPRouteRequestHeaderModifier: set overwrites, add appends, remove deletes."""
    async with running(tmp_path, REQUEST_HEADER_MODIFIER) as s:
        for path, sent, expected, absent in REQUEST_HEADER_CASES:
            reply = await s.request("same-namespace", path, headers=sent.items())
            seen = headers_of(reply.json())
            assert {k: seen.get(k) for k in expected} == expected, path
            assert [k for k in absent if k in seen] == [], path


RESPONSE_HEADER_MODIFIER = route(
    "response-header-modifier",
    rule("/set", """
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        set: [{name: X-Header-Set, value: set-overwrites-values}]"""),
    rule("/add", """
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        add: [{name: X-Header-Add, value: add-appends-values}]"""),
    rule("/remove", """
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        remove: [X-Content-Type-Options]"""),
    rule("/multiple", """
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        set:
        - {name: X-Header-Set-1, value: header-set-1}
        - {name: Content-Type, value: text/plain}
        add: [{name: X-Header-Add-1, value: header-add-1}]
        remove: [X-Content-Type-Options]"""),
)


async def test_response_header_modifier(tmp_path: Path) -> None:
    """HTTPRouteResponseHeaderModifier: set, add and remove apply to the backend's response."""
    async with running(tmp_path, RESPONSE_HEADER_MODIFIER) as s:
        reply = await s.request("same-namespace", "/set")
        assert reply.header("x-header-set") == "set-overwrites-values"
        reply = await s.request("same-namespace", "/add")
        assert reply.header("x-header-add") == "add-appends-values"
        reply = await s.request("same-namespace", "/remove")
        assert (reply.status, reply.header("x-content-type-options")) == (200, None)
        reply = await s.request("same-namespace", "/multiple")
        assert (
            reply.header("x-header-set-1"), reply.header("content-type"),
            reply.header("x-header-add-1"), reply.header("x-content-type-options"),
        ) == ("header-set-1", "text/plain", "header-add-1", None)


def redirect(fields: str) -> str:
    return f"""
    - type: RequestRedirect
      requestRedirect: {{{fields}}}"""


REDIRECTS = (
    route(
        "redirect-host-and-status",
        rule("/hostname-redirect", redirect("hostname: example.org"), backend=False),
        rule("/host-and-status", redirect("hostname: example.org, statusCode: 301"),
             backend=False),
    )
    + route(
        "redirect-path",
        rule("/original-prefix", redirect(
            "path: {type: ReplacePrefixMatch, replacePrefixMatch: /replacement-prefix}"),
            backend=False),
        rule("/full", redirect(
            "path: {type: ReplaceFullPath, replaceFullPath: /full-path-replacement}"),
            backend=False),
        rule("/path-and-host", redirect(
            "hostname: example.org, "
            "path: {type: ReplacePrefixMatch, replacePrefixMatch: /replacement-prefix}"),
            backend=False),
        rule("/path-and-status", redirect(
            "statusCode: 301, "
            "path: {type: ReplacePrefixMatch, replacePrefixMatch: /replacement-prefix}"),
            backend=False),
    )
    + route(
        "redirect-port",
        rule("/port", redirect("port: 8083"), backend=False),
        rule("/port-and-host", redirect("hostname: example.org, port: 8083"), backend=False),
        rule("/port-and-status", redirect("port: 8083, statusCode: 301"), backend=False),
    )
    + route(
        "redirect-scheme",
        rule("/scheme", redirect("scheme: https"), backend=False),
        rule("/scheme-and-host", redirect("hostname: example.org, scheme: https"),
             backend=False),
        rule("/scheme-and-status", redirect("scheme: https, statusCode: 301"), backend=False),
    )
    + route(
        "redirect-30x",
        rule("/see-other", redirect("statusCode: 303"), backend=False),
        rule("/temporary", redirect("statusCode: 307"), backend=False),
        rule("/permanent", redirect("statusCode: 308"), backend=False),
    )
)

# path, status, Location ("{gw}" is the Gateway address the request used as Host)
REDIRECT_CASES = [
    ("/hostname-redirect", 302, "http://example.org/hostname-redirect"),
    ("/host-and-status", 301, "http://example.org/host-and-status"),
    ("/original-prefix/lemon", 302, "http://{gw}/replacement-prefix/lemon"),
    ("/full/path/original", 302, "http://{gw}/full-path-replacement"),
    ("/path-and-host", 302, "http://example.org/replacement-prefix"),
    ("/path-and-status", 301, "http://{gw}/replacement-prefix"),
    ("/port", 302, "http://{gw}:8083/port"),
    ("/port-and-host", 302, "http://example.org:8083/port-and-host"),
    ("/port-and-status", 301, "http://{gw}:8083/port-and-status"),
    ("/scheme", 302, "https://{gw}/scheme"),
    ("/scheme-and-host", 302, "https://example.org/scheme-and-host"),
    ("/scheme-and-status", 301, "https://{gw}/scheme-and-status"),
    ("/see-other", 303, "http://{gw}/see-other"),
    ("/temporary", 307, "http://{gw}/temporary"),
    ("/permanent", 308, "http://{gw}/permanent"),
]


@pytest.mark.parametrize(("path", "status", "location"), REDIRECT_CASES,
                         ids=[c[0].strip("/") for c in REDIRECT_CASES])
async def test_redirects(tmp_path: Path, path: str, status: int, location: str) -> None:
    """HTTPRouteRedirectHostAndStatus/Path/Port/Scheme and 303/307/308: the Location built."""
    async with running(tmp_path, REDIRECTS) as s:
        gw = s.address("same-namespace")
        reply = await s.request("same-namespace", path, method="POST" if status == 303 else "GET",
                                headers=(("Content-Length", "0"),))
        assert (reply.status, reply.header("location")) == (status, location.format(gw=gw))


PORT_AND_SCHEME = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: same-namespace-with-http-8080, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: "{GATEWAY_CLASS_NAME}"
  listeners:
  - {name: http, port: 80, protocol: HTTP}
  - {name: http-8080, port: 8080, protocol: HTTP}
""" + "".join(
    route(
        f"redirect-port-and-scheme-{section}",
        rule("/scheme-nil-and-port-nil", redirect("hostname: example.org"), backend=False),
        rule("/scheme-nil-and-port-80", redirect("hostname: example.org, port: 80"),
             backend=False),
        rule("/scheme-nil-and-port-8080", redirect("hostname: example.org, port: 8080"),
             backend=False),
        rule("/scheme-https-and-port-nil", redirect("hostname: example.org, scheme: https"),
             backend=False),
        rule("/scheme-https-and-port-443",
             redirect("hostname: example.org, scheme: https, port: 443"), backend=False),
        rule("/scheme-https-and-port-8443",
             redirect("hostname: example.org, scheme: https, port: 8443"), backend=False),
        gateway="same-namespace-with-http-8080", section=section,
    )
    for section in ("http", "http-8080")
)

PORT_AND_SCHEME_CASES = [
    (80, "/scheme-nil-and-port-nil", "http://example.org/scheme-nil-and-port-nil"),
    (80, "/scheme-nil-and-port-80", "http://example.org/scheme-nil-and-port-80"),
    (80, "/scheme-nil-and-port-8080", "http://example.org:8080/scheme-nil-and-port-8080"),
    (80, "/scheme-https-and-port-nil", "https://example.org/scheme-https-and-port-nil"),
    (80, "/scheme-https-and-port-443", "https://example.org/scheme-https-and-port-443"),
    (80, "/scheme-https-and-port-8443", "https://example.org:8443/scheme-https-and-port-8443"),
    (8080, "/scheme-nil-and-port-nil", "http://example.org:8080/scheme-nil-and-port-nil"),
    (8080, "/scheme-nil-and-port-80", "http://example.org/scheme-nil-and-port-80"),
    (8080, "/scheme-https-and-port-nil", "https://example.org/scheme-https-and-port-nil"),
]


async def test_redirect_port_and_scheme(tmp_path: Path) -> None:
    """HTTPRouteRedirectPortAndScheme (HTTP listeners): listener port kept, defaults omitted."""
    async with running(tmp_path, PORT_AND_SCHEME) as s:
        got = []
        for port, path, _ in PORT_AND_SCHEME_CASES:
            reply = await s.request("same-namespace-with-http-8080", path, port=port)
            got.append((port, path, reply.header("location")))
        assert got == PORT_AND_SCHEME_CASES


def rewrite(fields: str) -> str:
    return f"""
    - type: URLRewrite
      urlRewrite: {{{fields}}}"""


REWRITES = route(
    "rewrite-host",
    rule("/one", rewrite("hostname: one.example.org")),
    rule("/", rewrite("hostname: example.org")),
) + route(
    "rewrite-path",
    rule("/prefix/one", rewrite("path: {type: ReplacePrefixMatch, replacePrefixMatch: /one}")),
    rule("/full/one", rewrite("path: {type: ReplaceFullPath, replaceFullPath: /one}")),
    rule("/full/rewrite-path-and-modify-headers",
         rewrite("path: {type: ReplaceFullPath, replaceFullPath: /test}") + """
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: X-Header-Set, value: set-overwrites-values}]
        add: [{name: X-Header-Add-Append, value: append-val-1}]
        remove: [X-Header-Remove]"""),
    rule("/prefix/rewrite-path-and-modify-headers",
         rewrite("path: {type: ReplacePrefixMatch, replacePrefixMatch: /prefix}") + """
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: X-Header-Set, value: set-overwrites-values}]
        add: [{name: X-Header-Add-Append, value: append-val-1}]
        remove: [X-Header-Remove]"""),
    rule("/strip-prefix", rewrite("path: {type: ReplacePrefixMatch, replacePrefixMatch: /}")),
)

# request path, Host sent, path at the backend, Host at the backend
REWRITE_CASES = [
    ("/one", "", "/one", "one.example.org"),
    ("/", "", "/", "example.org"),
    ("/prefix/one/two", "", "/one/two", ""),
    ("/full/one/two", "", "/one", ""),
    ("/full/rewrite-path-and-modify-headers/test", "", "/test", ""),
    ("/prefix/rewrite-path-and-modify-headers/subpath", "", "/prefix/subpath", ""),
    ("/strip-prefix/three", "", "/three", ""),
    ("/strip-prefix", "", "/", ""),
]


async def test_rewrites(tmp_path: Path) -> None:
    """HTTPRouteRewriteHost and HTTPRouteRewritePath: the request the backend receives."""
    async with running(tmp_path, REWRITES) as s:
        gw = s.address("same-namespace")
        got = []
        for path, _, _, _ in REWRITE_CASES:
            echo = (await s.request("same-namespace", path)).json()
            got.append((path, "", echo["path"], "" if echo["host"] == gw else echo["host"]))
        assert got == REWRITE_CASES
        echo = (await s.request(
            "same-namespace", "/full/rewrite-path-and-modify-headers/test",
            headers=(("X-Header-Add-Append", "header-val-2"), ("X-Header-Remove", "x"),
                     ("X-Header-Set", "other")),
        )).json()
        seen = headers_of(echo)
        assert (seen.get("x-header-set"), seen.get("x-header-add-append"),
                "x-header-remove" in seen) == (
            "set-overwrites-values", "header-val-2,append-val-1", False
        )
