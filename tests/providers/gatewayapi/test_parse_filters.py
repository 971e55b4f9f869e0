"""Tests for providers.gatewayapi.parse_filters: HTTPRoute filters, their defaults and CEL rules.

Spec references are to /work/notes/gatewayapi-spec.md §1.5 (HTTPRouteFilter table,
HTTPPathModifier) and §1.4 (BackendObjectReference, Fraction); messages are the
upstream XValidation messages of apis/v1/httproute_types.go.
"""

from __future__ import annotations

import pytest
import yaml

from providers.gatewayapi.objects import (
    CORS,
    BackendRef,
    ExtensionRef,
    HeaderModifier,
    HTTPFilter,
    HTTPRule,
    Mirror,
    PathModifier,
    Redirect,
    Rewrite,
)
from providers.gatewayapi.parse import ParseResult, parse_objects

NOW = "2024-05-06T07:08:09Z"
KEY = ("HTTPRoute", "app", "r")


def parse_rule(text: str) -> tuple[HTTPRule | None, ParseResult]:
    """An HTTPRoute app/r with the one rule written (flow style) as ``text``."""
    doc = yaml.safe_load(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n"
        f"metadata: {{name: r, namespace: app}}\nspec: {{rules: [{text}]}}\n"
    )
    result = parse_objects([(doc, None)], now=NOW)
    found = result.objects.http_routes.get(("app", "r"))
    return (found.rules[0] if found else None), result


def one_filter(text: str) -> HTTPFilter:
    found, result = parse_rule(f"{{filters: [{text}]}}")
    assert result.errors == [] and found is not None, [str(e) for e in result.errors]
    assert KEY not in result.problems, result.problems
    return found.filters[0]


# --- each filter and its defaults -----------------------------------------------------------

FILTERS = [
    (
        "request-header-modifier",
        "{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: A, value: '1'}],"
        " add: [{name: B, value: '2'}], remove: [C]}}",
        HTTPFilter(
            "RequestHeaderModifier",
            request_header_modifier=HeaderModifier(
                set=(("A", "1"),), add=(("B", "2"),), remove=("C",)
            ),
        ),
    ),
    (
        "response-header-modifier",
        "{type: ResponseHeaderModifier, responseHeaderModifier: {remove: [Server]}}",
        HTTPFilter(
            "ResponseHeaderModifier", response_header_modifier=HeaderModifier(remove=("Server",))
        ),
    ),
    (
        "redirect-defaults-to-302",
        "{type: RequestRedirect, requestRedirect: {hostname: example.org}}",
        HTTPFilter(
            "RequestRedirect", request_redirect=Redirect(hostname="example.org", status_code=302)
        ),
    ),
    (
        "redirect-everything",
        "{type: RequestRedirect, requestRedirect: {scheme: https, port: 8443, statusCode: 308,"
        " path: {type: ReplaceFullPath, replaceFullPath: /new}}}",
        HTTPFilter(
            "RequestRedirect",
            request_redirect=Redirect(
                scheme="https",
                port=8443,
                status_code=308,
                path=PathModifier("ReplaceFullPath", "/new"),
            ),
        ),
    ),
    (
        "rewrite",
        "{type: URLRewrite, urlRewrite: {hostname: backend.local,"
        " path: {type: ReplacePrefixMatch, replacePrefixMatch: ''}}}",
        HTTPFilter(
            "URLRewrite",
            url_rewrite=Rewrite(
                hostname="backend.local", path=PathModifier("ReplacePrefixMatch", "")
            ),
        ),
    ),
    (
        "mirror-all",
        "{type: RequestMirror, requestMirror: {backendRef: {name: m, port: 80}}}",
        HTTPFilter("RequestMirror", request_mirror=Mirror(BackendRef("m", "app", 80), 100, 100)),
    ),
    (
        "mirror-percent",
        "{type: RequestMirror, requestMirror: {backendRef: {name: m, port: 80}, percent: 20}}",
        HTTPFilter("RequestMirror", request_mirror=Mirror(BackendRef("m", "app", 80), 20, 100)),
    ),
    (
        "mirror-fraction-default-denominator",
        "{type: RequestMirror, requestMirror: {backendRef: {name: m, namespace: o, port: 80},"
        " fraction: {numerator: 25}}}",
        HTTPFilter("RequestMirror", request_mirror=Mirror(BackendRef("m", "o", 80), 25, 100)),
    ),
    (
        "mirror-fraction",
        "{type: RequestMirror, requestMirror: {backendRef: {name: m, port: 80},"
        " fraction: {numerator: 25, denominator: 50}}}",
        HTTPFilter("RequestMirror", request_mirror=Mirror(BackendRef("m", "app", 80), 25, 50)),
    ),
    (
        "cors-defaults",
        "{type: CORS, cors: {allowOrigins: ['https://*.example.com']}}",
        HTTPFilter("CORS", cors=CORS(allow_origins=("https://*.example.com",), max_age=5)),
    ),
    (
        "cors-everything",
        "{type: CORS, cors: {allowOrigins: ['*'], allowCredentials: true, allowMethods: [GET, PUT],"
        " allowHeaders: [x-a], exposeHeaders: [x-b], maxAge: 60}}",
        HTTPFilter(
            "CORS",
            cors=CORS(("*",), True, ("GET", "PUT"), ("x-a",), ("x-b",), 60),
        ),
    ),
    (
        "extension-ref",
        "{type: ExtensionRef, extensionRef: {group: sluice.dev, kind: Middleware, name: auth}}",
        HTTPFilter("ExtensionRef", extension_ref=ExtensionRef("sluice.dev", "Middleware", "auth")),
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"), [f[1:] for f in FILTERS], ids=[f[0] for f in FILTERS]
)
def test_filters_are_read_with_defaults(text: str, expected: HTTPFilter) -> None:
    """Each filter type fills its member, with redirect 302, mirror 100/100, CORS maxAge 5."""
    assert one_filter(text) == expected


def test_filters_keep_their_order_and_may_repeat_where_allowed() -> None:
    """Filters stay in order; RequestMirror and ExtensionRef may repeat (spec §1.5)."""
    found, result = parse_rule(
        "{filters: ["
        "{type: RequestMirror, requestMirror: {backendRef: {name: a, port: 1}}},"
        "{type: ExtensionRef, extensionRef: {group: sluice.dev, kind: Middleware, name: x}},"
        "{type: RequestMirror, requestMirror: {backendRef: {name: b, port: 1}}},"
        "{type: ExtensionRef, extensionRef: {group: sluice.dev, kind: Middleware, name: y}}]}"
    )
    assert result.errors == [] and found is not None
    assert [f.type for f in found.filters] == ["RequestMirror", "ExtensionRef"] * 2


def test_backend_ref_filters_are_read() -> None:
    """Filters on a backendRef apply to that backend only and are kept on it."""
    found, result = parse_rule(
        "{backendRefs: [{name: a, port: 1, filters: [{type: RequestHeaderModifier,"
        " requestHeaderModifier: {add: [{name: X, value: y}]}}]}, {name: b, port: 1}]}"
    )
    assert result.errors == [] and found is not None
    assert found.backend_refs[0].filters == (
        HTTPFilter(
            "RequestHeaderModifier", request_header_modifier=HeaderModifier(add=(("X", "y"),))
        ),
    )
    assert found.backend_refs[1].filters == ()


def test_replace_prefix_match_with_one_prefix_match() -> None:
    """ReplacePrefixMatch is valid with exactly one PathPrefix match, or the default match."""
    for matches in ("[{path: {type: PathPrefix, value: /a}}]", "[]"):
        found, result = parse_rule(
            f"{{matches: {matches}, filters: [{{type: URLRewrite, urlRewrite:"
            " {path: {type: ReplacePrefixMatch, replacePrefixMatch: /b}}}]}"
        )
        assert result.errors == [] and found is not None


# --- errors: CEL rules ----------------------------------------------------------------------

RHM = "{type: RequestHeaderModifier, requestHeaderModifier: {add: [{name: a, value: b}]}}"
REDIRECT = "{type: RequestRedirect, requestRedirect: {port: 8080}}"
REWRITE = "{type: URLRewrite, urlRewrite: {hostname: a.com}}"
PREFIX_REDIRECT = (
    "{type: RequestRedirect, requestRedirect: {path: {type: ReplacePrefixMatch,"
    " replacePrefixMatch: /x}}}"
)
PREFIX_REWRITE = (
    "{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /x}}}"
)
EXACT = "matches: [{path: {type: Exact, value: /a}}]"
TWO = "matches: [{path: {value: /a}}, {path: {value: /b}}]"
ONE_PREFIX = "path.replacePrefixMatch, exactly one PathPrefix match must be specified"
F0 = "spec.rules[0].filters[0]"

ERRORS = [
    (
        "member-of-other-type",
        "{filters: [{type: URLRewrite, urlRewrite: {}, requestRedirect: {}}]}",
        f"{F0}.requestRedirect",
        "filter.requestRedirect must be nil if the filter.type is not RequestRedirect",
    ),
    (
        "member-missing",
        "{filters: [{type: CORS}]}",
        F0,
        "filter.cors must be specified for CORS filter.type",
    ),
    (
        "unknown-type-with-member",
        "{filters: [{type: Gzip, requestHeaderModifier: {}}]}",
        f"{F0}.requestHeaderModifier",
        "filter.requestHeaderModifier must be nil if the filter.type is not RequestHeaderModifier",
    ),
    ("no-type", "{filters: [{cors: {}}]}", f"{F0}.type", "required value"),
    (
        "redirect-and-rewrite",
        f"{{filters: [{REDIRECT}, {REWRITE}]}}",
        "spec.rules[0].filters",
        "May specify either httpRouteFilterRequestRedirect or httpRouteFilterRequestRewrite,"
        " but not both",
    ),
    (
        "repeated-request-header-modifier",
        f"{{filters: [{RHM}, {RHM}]}}",
        "spec.rules[0].filters",
        "RequestHeaderModifier filter cannot be repeated",
    ),
    (
        "repeated-response-header-modifier",
        "{filters: [{type: ResponseHeaderModifier, responseHeaderModifier: {}},"
        " {type: ResponseHeaderModifier, responseHeaderModifier: {}}]}",
        "spec.rules[0].filters",
        "ResponseHeaderModifier filter cannot be repeated",
    ),
    (
        "repeated-redirect",
        f"{{filters: [{REDIRECT}, {REDIRECT}]}}",
        "spec.rules[0].filters",
        "RequestRedirect filter cannot be repeated",
    ),
    (
        "repeated-rewrite",
        f"{{filters: [{REWRITE}, {REWRITE}]}}",
        "spec.rules[0].filters",
        "URLRewrite filter cannot be repeated",
    ),
    (
        "repeated-cors",
        "{filters: [{type: CORS, cors: {}}, {type: CORS, cors: {}}]}",
        "spec.rules[0].filters",
        "CORS filter cannot be repeated",
    ),
    (
        "backend-repeated-filter",
        f"{{backendRefs: [{{name: s, port: 1, filters: [{RHM}, {RHM}]}}]}}",
        "spec.rules[0].backendRefs[0].filters",
        "RequestHeaderModifier filter cannot be repeated",
    ),
    (
        "redirect-with-backends",
        f"{{filters: [{REDIRECT}], backendRefs: [{{name: s, port: 1}}]}}",
        "spec.rules[0]",
        "RequestRedirect filter must not be used together with backendRefs",
    ),
    (
        "prefix-redirect-exact-match",
        f"{{{EXACT}, filters: [{PREFIX_REDIRECT}]}}",
        "spec.rules[0]",
        f"When using RequestRedirect filter with {ONE_PREFIX}",
    ),
    (
        "prefix-rewrite-two-matches",
        f"{{{TWO}, filters: [{PREFIX_REWRITE}]}}",
        "spec.rules[0]",
        f"When using URLRewrite filter with {ONE_PREFIX}",
    ),
    (
        "backend-prefix-redirect-exact-match",
        f"{{{EXACT}, backendRefs: [{{name: s, port: 1, filters: [{PREFIX_REDIRECT}]}}]}}",
        "spec.rules[0]",
        f"Within backendRefs, when using RequestRedirect filter with {ONE_PREFIX}",
    ),
    (
        "backend-prefix-rewrite-two-matches",
        f"{{{TWO}, backendRefs: [{{name: s, port: 1, filters: [{PREFIX_REWRITE}]}}]}}",
        "spec.rules[0]",
        f"Within backendRefs, When using URLRewrite filter with {ONE_PREFIX}",
    ),
    (
        "full-path-without-value",
        "{filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath}}}]}",
        f"{F0}.urlRewrite.path",
        "replaceFullPath must be specified when type is set to 'ReplaceFullPath'",
    ),
    (
        "prefix-value-with-full-type",
        "{filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath,"
        " replaceFullPath: /a, replacePrefixMatch: /b}}}]}",
        f"{F0}.urlRewrite.path",
        "type must be 'ReplacePrefixMatch' when replacePrefixMatch is set",
    ),
    (
        "rewrite-wildcard-hostname",
        "{filters: [{type: URLRewrite, urlRewrite: {hostname: '*.a.com'}}]}",
        f"{F0}.urlRewrite.hostname",
        "is not a precise hostname",
    ),
    (
        "redirect-port-zero",
        "{filters: [{type: RequestRedirect, requestRedirect: {port: 0}}]}",
        f"{F0}.requestRedirect.port",
        "greater than or equal to 1",
    ),
    (
        "mirror-percent-and-fraction",
        "{filters: [{type: RequestMirror, requestMirror: {backendRef: {name: m, port: 1},"
        " percent: 5, fraction: {numerator: 1}}}]}",
        f"{F0}.requestMirror",
        "Only one of percent or fraction may be specified in HTTPRequestMirrorFilter",
    ),
    (
        "mirror-fraction-over-one",
        "{filters: [{type: RequestMirror, requestMirror: {backendRef: {name: m, port: 1},"
        " fraction: {numerator: 3, denominator: 2}}}]}",
        f"{F0}.requestMirror.fraction",
        "numerator must be less than or equal to denominator",
    ),
    (
        "mirror-percent-over-100",
        "{filters: [{type: RequestMirror,"
        " requestMirror: {backendRef: {name: m, port: 1}, percent: 101}}]}",
        f"{F0}.requestMirror.percent",
        "less than or equal to 100",
    ),
    (
        "mirror-without-port",
        "{filters: [{type: RequestMirror, requestMirror: {backendRef: {name: m}}}]}",
        f"{F0}.requestMirror.backendRef",
        "Must have port for Service reference",
    ),
    (
        "mirror-without-backend",
        "{filters: [{type: RequestMirror, requestMirror: {percent: 1}}]}",
        f"{F0}.requestMirror.backendRef",
        "required value",
    ),
    (
        "cors-star-origin-and-more",
        "{filters: [{type: CORS, cors: {allowOrigins: ['*', 'https://a']}}]}",
        f"{F0}.cors.allowOrigins",
        "AllowOrigins cannot contain '*' alongside other origins",
    ),
    (
        "cors-star-method-and-more",
        "{filters: [{type: CORS, cors: {allowMethods: ['*', GET]}}]}",
        f"{F0}.cors.allowMethods",
        "AllowMethods cannot contain '*' alongside other methods",
    ),
    (
        "cors-star-header-and-more",
        "{filters: [{type: CORS, cors: {allowHeaders: ['*', x-a]}}]}",
        f"{F0}.cors.allowHeaders",
        "AllowHeaders cannot contain '*' alongside other methods",
    ),
    (
        "cors-unknown-method",
        "{filters: [{type: CORS, cors: {allowMethods: [get]}}]}",
        f"{F0}.cors.allowMethods[0]",
        'unsupported value "get"',
    ),
    (
        "cors-max-age-zero",
        "{filters: [{type: CORS, cors: {maxAge: 0}}]}",
        f"{F0}.cors.maxAge",
        "greater than or equal to 1",
    ),
    (
        "cors-repeated-origin",
        "{filters: [{type: CORS, cors: {allowOrigins: [a, a]}}]}",
        f"{F0}.cors.allowOrigins[1]",
        'duplicate value "a"',
    ),
    (
        "header-set-twice",
        "{filters: [{type: RequestHeaderModifier, requestHeaderModifier:"
        " {set: [{name: a, value: '1'}, {name: a, value: '2'}]}}]}",
        f"{F0}.requestHeaderModifier.set[1].name",
        'duplicate header name "a"',
    ),
    (
        "header-removed-twice",
        "{filters: [{type: RequestHeaderModifier, requestHeaderModifier: {remove: [a, a]}}]}",
        f"{F0}.requestHeaderModifier.remove[1]",
        'duplicate value "a"',
    ),
    (
        "header-value-empty",
        "{filters: [{type: ResponseHeaderModifier, responseHeaderModifier:"
        " {add: [{name: a, value: ''}]}}]}",
        f"{F0}.responseHeaderModifier.add[0].value",
        "at least 1 character",
    ),
    (
        "extension-ref-without-kind",
        "{filters: [{type: ExtensionRef, extensionRef: {group: sluice.dev, name: x}}]}",
        f"{F0}.extensionRef.kind",
        "required value",
    ),
]


@pytest.mark.parametrize(
    ("text", "path", "message"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS]
)
def test_filter_errors(text: str, path: str, message: str) -> None:
    """Filters the API server would refuse leave the route out, with the CEL message."""
    found, result = parse_rule(text)
    assert found is None
    assert [e.path for e in result.errors] == [f"HTTPRoute app/r: {path}"], [
        str(e) for e in result.errors
    ]
    assert message in result.errors[0].message, result.errors[0].message


# --- problems: values Sluice cannot implement (spec §1.5) -------------------------------------

PROBLEMS = [
    (
        "header-value-with-crlf",
        "{type: RequestHeaderModifier,"
        ' requestHeaderModifier: {set: [{name: a, value: "x\\r\\nB: y"}]}}',
        f"{F0}.requestHeaderModifier.set[0].value: control characters",
    ),
    ("unknown-type", "{type: Gzip}", f'{F0}.type: unsupported value "Gzip"'),
    (
        "external-auth",
        "{type: ExternalAuth, externalAuth: {protocol: HTTP}}",
        f'{F0}.type: unsupported value "ExternalAuth"',
    ),
    (
        "redirect-scheme",
        "{type: RequestRedirect, requestRedirect: {scheme: ftp}}",
        f'{F0}.requestRedirect.scheme: unsupported value "ftp"',
    ),
    (
        "redirect-status",
        "{type: RequestRedirect, requestRedirect: {statusCode: 305}}",
        f"{F0}.requestRedirect.statusCode: unsupported value 305",
    ),
    (
        "path-modifier-type",
        "{type: URLRewrite, urlRewrite: {path: {type: ReplaceRegex}}}",
        f'{F0}.urlRewrite.path.type: unsupported value "ReplaceRegex"',
    ),
    (
        "two-actions-one-header",
        "{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: X-A, value: '1'}],"
        " remove: [x-a]}}",
        f'{F0}.requestHeaderModifier: several actions for header "x-a"',
    ),
]


@pytest.mark.parametrize(
    ("text", "problem"), [p[1:] for p in PROBLEMS], ids=[p[0] for p in PROBLEMS]
)
def test_unsupported_filter_values_are_problems(text: str, problem: str) -> None:
    """Unknown filter types and enum values keep the route, marked UnsupportedValue."""
    found, result = parse_rule(f"{{filters: [{text}]}}")
    assert result.errors == [] and found is not None
    assert result.problems[KEY].startswith(problem), result.problems[KEY]
