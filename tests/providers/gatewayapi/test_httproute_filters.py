"""Tests for providers.gatewayapi.httproute_filters: HTTPRoute filters -> middleware definitions.

Spec references are to /work/notes/gatewayapi-spec.md §2.7. Every emitted
option mapping is decoded with the target middleware's own options model, so
a key the middleware does not know fails here.
"""

from __future__ import annotations

from typing import Any

import pytest

from gateway.config.loader import decode_value
from middleware.http.gateway_cors import CORSOptions
from middleware.http.gateway_filters import HeaderModifierOptions
from middleware.http.gateway_mirror import RequestMirrorOptions
from middleware.http.gateway_redirects import RequestRedirectOptions, URLRewriteOptions
from providers.gatewayapi.backends import Resolved, Unresolved
from providers.gatewayapi.httproute_filters import (
    BuiltFilters,
    FilterContext,
    build_filters,
    extension_name,
)
from providers.gatewayapi.objects import (
    CORS,
    SLUICE_GROUP,
    BackendRef,
    ExtensionRef,
    HeaderModifier,
    HTTPFilter,
    Mirror,
    PathModifier,
    Redirect,
    Rewrite,
)

NS = "apps"
OPTIONS: dict[str, Any] = {
    "gatewayRequestHeaderModifier": HeaderModifierOptions,
    "gatewayResponseHeaderModifier": HeaderModifierOptions,
    "gatewayRequestRedirect": RequestRedirectOptions,
    "gatewayURLRewrite": URLRewriteOptions,
    "gatewayRequestMirror": RequestMirrorOptions,
    "gatewayCORS": CORSOptions,
}


def resolve(ref: BackendRef) -> Resolved | Unresolved:
    """"mirror" has two endpoints, "idle" none; anything else is missing."""
    if ref.name == "mirror":
        return Resolved((("127.0.0.9", 3000), ("::1", 3000)))
    if ref.name == "idle":
        return Resolved(())
    return Unresolved("BackendNotFound", f"Service {ref.namespace}/{ref.name} not found")


def build(
    *filters: HTTPFilter,
    port: int = 80,
    scheme: str = "http",
    matched_prefix: str = "",
    extensions: frozenset[tuple[str, str]] = frozenset(),
) -> BuiltFilters:
    context = FilterContext(prefix="p", namespace=NS, matched_prefix=matched_prefix,
                            listener_port=port, listener_scheme=scheme, resolve=resolve,
                            extensions=extensions)  # fmt: skip
    return build_filters(filters, context)


def options(built: BuiltFilters) -> list[dict[str, Any]]:
    """Each definition's options, in router order, checked against the middleware's model."""
    out = []
    for name in built.names:
        ((kind, value),) = built.definitions[name].items()
        decode_value(OPTIONS[kind], value, origin=None, path=name)
        out.append(value)
    return out


def test_header_modifiers_keep_set_add_remove() -> None:
    """Request and response header modifiers carry set/add/remove as the filter has them."""
    modifier = HeaderModifier(set=(("X-Set", "1"),), add=(("X-Add", "2"),), remove=("X-Gone",))
    built = build(
        HTTPFilter("RequestHeaderModifier", request_header_modifier=modifier),
        HTTPFilter("ResponseHeaderModifier", response_header_modifier=HeaderModifier()),
    )
    assert built.names == ["p-f0-request-headers", "p-f1-response-headers"]
    assert options(built) == [
        {"set": [{"name": "X-Set", "value": "1"}], "add": [{"name": "X-Add", "value": "2"}],
         "remove": ["X-Gone"]},
        {},
    ]  # fmt: skip
    assert list(built.definitions["p-f1-response-headers"]) == ["gatewayResponseHeaderModifier"]


@pytest.mark.parametrize(
    ("redirect", "expected"),
    [
        (Redirect(), {"statusCode": 302}),
        (Redirect(scheme="https", hostname="example.org", port=8443, status_code=301),
         {"statusCode": 301, "scheme": "https", "hostname": "example.org", "port": 8443}),
        (Redirect(path=PathModifier("ReplaceFullPath", "/full")),
         {"statusCode": 302, "path": {"type": "ReplaceFullPath", "replaceFullPath": "/full"}}),
        (Redirect(path=PathModifier("ReplacePrefixMatch", "/new")),
         {"statusCode": 302, "matchedPrefix": "/old",
          "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/new"}}),
    ],
    ids=["defaults", "scheme-host-port-status", "full-path", "prefix"],
)  # fmt: skip
def test_redirect_options(redirect: Redirect, expected: dict[str, Any]) -> None:
    """A redirect keeps the filter's set fields and adds the listener and matched prefix."""
    built = build(HTTPFilter("RequestRedirect", request_redirect=redirect),
                  port=8080, scheme="http", matched_prefix="/old")  # fmt: skip
    assert built.names == ["p-f0-redirect-http8080"]
    assert options(built) == [{**expected, "listenerPort": 8080, "listenerScheme": "http"}]


def test_rewrite_options() -> None:
    """URLRewrite keeps hostname and path; ReplacePrefixMatch gets the rule's prefix."""
    rewrite = Rewrite(hostname="elsewhere.example", path=PathModifier("ReplacePrefixMatch", "/"))
    built = build(HTTPFilter("URLRewrite", url_rewrite=rewrite), matched_prefix="/strip")
    assert options(built) == [{
        "hostname": "elsewhere.example", "matchedPrefix": "/strip",
        "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}}]  # fmt: skip


def test_mirrors_resolve_their_backend_and_share() -> None:
    """Mirrors get every endpoint URL and their percent or fraction (§2.7)."""
    built = build(
        HTTPFilter("RequestMirror", request_mirror=Mirror(BackendRef("mirror", NS, 80), 20)),
        HTTPFilter("RequestMirror", request_mirror=Mirror(BackendRef("mirror", NS, 80), 25, 50)),
    )
    urls = [{"url": "http://127.0.0.9:3000"}, {"url": "http://[::1]:3000"}]
    assert options(built) == [
        {"backends": urls, "percent": 20},
        {"backends": urls, "fraction": {"numerator": 25, "denominator": 50}},
    ]
    assert built.names == ["p-f0-mirror", "p-f1-mirror"]


def test_unusable_mirrors_are_left_out() -> None:
    """A mirror that does not resolve is reported and dropped; one with no endpoint is dropped."""
    built = build(
        HTTPFilter("RequestMirror", request_mirror=Mirror(BackendRef("gone", NS, 80))),
        HTTPFilter("RequestMirror", request_mirror=Mirror(BackendRef("idle", NS, 80))),
    )
    assert (built.names, built.failed) == ([], False)
    assert built.problems == [("ResolvedRefs", "BackendNotFound",
                               f"RequestMirror: Service {NS}/gone not found; "
                               "the mirror is not configured")]  # fmt: skip


def test_cors_options() -> None:
    """CORS becomes gatewayCORS with all of the filter's fields (§2.7)."""
    cors = CORS(allow_origins=("https://*.bar.com",), allow_credentials=True,
                allow_methods=("GET", "OPTIONS"), allow_headers=("x-header-1",),
                expose_headers=("x-header-3",), max_age=3600)  # fmt: skip
    (value,) = options(build(HTTPFilter("CORS", cors=cors)))
    decoded = decode_value(CORSOptions, value, origin=None, path="")
    assert decoded == CORSOptions(allow_origins=("https://*.bar.com",), allow_credentials=True,
                                  allow_methods=("GET", "OPTIONS"), allow_headers=("x-header-1",),
                                  expose_headers=("x-header-3",), max_age=3600)  # fmt: skip


@pytest.mark.parametrize(
    ("ref", "reason"),
    [
        (ExtensionRef(SLUICE_GROUP, "Middleware", "auth"), None),
        (ExtensionRef(SLUICE_GROUP, "Middleware", "other"), "BackendNotFound"),
        (ExtensionRef("example.com", "Middleware", "auth"), "InvalidKind"),
        (ExtensionRef(SLUICE_GROUP, "Filter", "auth"), "InvalidKind"),
    ],
    ids=["known", "missing", "foreign-group", "foreign-kind"],
)
def test_extension_refs(ref: ExtensionRef, reason: str | None) -> None:
    """ExtensionRef names a known Sluice Middleware, or fails the rule with a reason (§2.7)."""
    known = frozenset({(NS, "auth")})
    built = build(HTTPFilter("ExtensionRef", extension_ref=ref), extensions=known)
    if reason is None:
        assert built.names == [extension_name(NS, "auth")]
        assert (built.definitions, built.failed) == ({}, False)
    else:
        assert built.failed
        assert [p[:2] for p in built.problems] == [("ResolvedRefs", reason)]


def test_unknown_filter_type_fails() -> None:
    """A filter type Sluice lacks fails the rule rather than being skipped."""
    built = build(HTTPFilter("ExternalAuth"), HTTPFilter("CORS", cors=CORS()))
    assert built.failed
    assert [p[:2] for p in built.problems] == [("Accepted", "UnsupportedValue")]
