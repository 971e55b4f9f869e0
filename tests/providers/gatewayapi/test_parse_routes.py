"""Tests for providers.gatewayapi.parse_routes: HTTPRoute and L4 route defaults and CEL rules.

Spec references are to /work/notes/gatewayapi-spec.md (§1.4 common route parts,
§1.5 HTTPRoute, §1.6 TLSRoute, §1.7 TCPRoute/UDPRoute); messages are the upstream
XValidation messages of apis/v1/httproute_types.go and shared_types.go.
"""

from __future__ import annotations

import pytest
import yaml

from providers.gatewayapi.objects import (
    GROUP,
    BackendRef,
    HTTPMatch,
    HTTPRoute,
    HTTPRule,
    L4Route,
    ParentRef,
    PathMatch,
    Retry,
    ValueMatch,
)
from providers.gatewayapi.parse import ParseResult, parse_objects

NOW = "2024-05-06T07:08:09Z"
GW = "gateway.networking.k8s.io"


def parse(text: str) -> ParseResult:
    return parse_objects(((d, None) for d in yaml.safe_load_all(text) if d), now=NOW)


def route(spec: str) -> tuple[HTTPRoute | None, ParseResult]:
    result = parse(
        f"apiVersion: {GW}/v1\nkind: HTTPRoute\nmetadata: {{name: r, namespace: app}}\n"
        f"spec:\n{spec}"
    )
    return result.objects.http_routes.get(("app", "r")), result


def rule(text: str) -> tuple[HTTPRule | None, ParseResult]:
    """One rule written as the YAML mapping ``text`` (flow style)."""
    found, result = route(f"  rules: [{text}]\n")
    return (found.rules[0] if found else None), result


def error_of(result: ParseResult) -> tuple[str, str]:
    assert len(result.errors) == 1, [str(e) for e in result.errors]
    return result.errors[0].path, result.errors[0].message


# --- defaults (spec §1.4, §1.5) -------------------------------------------------------------


def test_route_without_rules_matches_everything() -> None:
    """Absent rules default to one rule matching PathPrefix / (CRD default)."""
    found, result = route("  parentRefs: [{name: gw}]\n")
    assert result.errors == [] and found is not None
    assert found.rules == (HTTPRule(matches=(HTTPMatch(path=PathMatch("PathPrefix", "/")),)),)


def test_parent_ref_defaults() -> None:
    """parentRef group, kind and namespace default to Gateway API, Gateway and the route's."""
    found, _ = route(
        "  parentRefs:\n  - {name: gw}\n"
        "  - {name: other, namespace: infra, sectionName: https, port: 443}\n"
    )
    assert found is not None
    assert found.parent_refs == (
        ParentRef(name="gw", namespace="app", group=GROUP, kind="Gateway"),
        ParentRef("other", "infra", GROUP, "Gateway", section_name="https", port=443),
    )


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("{}", HTTPMatch()),
        ("{path: {value: /a}}", HTTPMatch(path=PathMatch("PathPrefix", "/a"))),
        ("{path: {type: Exact}}", HTTPMatch(path=PathMatch("Exact", "/"))),
        ("{method: GET}", HTTPMatch(method="GET")),
        (
            "{headers: [{name: X-A, value: '1'}], queryParams: [{name: q, value: v}]}",
            HTTPMatch(headers=(ValueMatch("X-A", "1"),), query_params=(ValueMatch("q", "v"),)),
        ),
        (
            "{path: {type: RegularExpression, value: '/a/[0-9]+'},"
            " headers: [{type: RegularExpression, name: x, value: '^v[12]$'}]}",
            HTTPMatch(
                path=PathMatch("RegularExpression", "/a/[0-9]+"),
                headers=(ValueMatch("x", "^v[12]$", "RegularExpression"),),
            ),
        ),
    ],
    ids=[
        "empty-match",
        "path-type-default",
        "path-value-default",
        "method",
        "header-and-query",
        "regular-expressions",
    ],
)
def test_match_defaults(written: str, expected: HTTPMatch) -> None:
    """Path type PathPrefix, value /, and header/query type Exact are filled in."""
    found, result = rule(f"{{matches: [{written}]}}")
    assert result.errors == [] and found is not None
    assert found.matches == (expected,)


def test_rule_without_matches_matches_everything() -> None:
    """A rule without matches gets the default PathPrefix / match."""
    found, _ = rule("{backendRefs: [{name: s, port: 80}]}")
    assert found is not None and found.matches == (HTTPMatch(),)


def test_backend_ref_defaults() -> None:
    """backendRef group "", kind Service, weight 1, namespace the route's (spec §1.4)."""
    found, result = rule(
        "{backendRefs: [{name: a, port: 80}, {name: b, namespace: o, port: 81, weight: 0},"
        " {group: example.com, kind: Bucket, name: c}]}"
    )
    assert result.errors == [] and found is not None
    assert found.backend_refs == (
        BackendRef(name="a", namespace="app", port=80),
        BackendRef(name="b", namespace="o", port=81, weight=0),
        BackendRef(name="c", namespace="app", group="example.com", kind="Bucket"),
    )


def test_repeated_header_names_keep_the_first() -> None:
    """Header names are case-insensitive: a later equivalent name is ignored (spec §1.5)."""
    found, result = rule(
        "{matches: [{headers: [{name: Version, value: one}, {name: version, value: two}]}]}"
    )
    assert result.errors == [] and found is not None
    assert found.matches[0].headers == (ValueMatch("Version", "one"),)


def test_names_hostnames_timeouts_and_retry() -> None:
    """Rule names, hostnames, timeouts (seconds) and retry are read."""
    found, result = route(
        "  hostnames: [example.com, '*.example.net']\n"
        "  rules:\n  - name: main\n    timeouts: {request: 10s, backendRequest: 500ms}\n"
        "    retry: {codes: [500, 503], attempts: 3, backoff: 100ms}\n"
        "  - {name: second, timeouts: {request: 0s, backendRequest: 1h}, retry: {}}\n"
    )
    assert result.errors == [] and found is not None
    first, second = found.rules
    assert found.hostnames == ("example.com", "*.example.net")
    assert (first.name, first.request_timeout, first.backend_request_timeout) == ("main", 10, 0.5)
    assert first.retry == Retry(codes=(500, 503), attempts=3, backoff=0.1)
    assert (second.request_timeout, second.backend_request_timeout) == (0, 3600)
    assert second.retry == Retry()


# --- path values (spec §1.5 HTTPPathMatch CEL) ----------------------------------------------

FOR = "when type one of ['Exact', 'PathPrefix']"
PATHS = [
    ("no-slash", "Exact", "abc", f"value must be an absolute path and start with '/' {FOR}"),
    ("empty", "PathPrefix", "''", f"value must be an absolute path and start with '/' {FOR}"),
    ("double-slash", "PathPrefix", "/a//b", f"must not contain '//' {FOR}"),
    ("dot-segment", "Exact", "/a/./b", f"must not contain '/./' {FOR}"),
    ("dot-dot-segment", "Exact", "/a/../b", f"must not contain '/../' {FOR}"),
    ("encoded-slash", "PathPrefix", "/a%2fb", f"must not contain '%2f' {FOR}"),
    ("encoded-slash-upper", "PathPrefix", "/a%2Fb", f"must not contain '%2F' {FOR}"),
    ("fragment", "Exact", "'/a#b'", f"must not contain '#' {FOR}"),
    ("ends-dot-dot", "PathPrefix", "/a/..", f"must not end with '/..' {FOR}"),
    ("ends-dot", "PathPrefix", "/a/.", f"must not end with '/.' {FOR}"),
    ("space", "Exact", "'/a b'", "must only contain valid characters"),
    ("bad-escape", "Exact", "/a%zz", "must only contain valid characters"),
    ("too-long", "Exact", "/" + "a" * 1024, "no more than 1024 characters"),
]


@pytest.mark.parametrize(
    ("kind", "value", "message"), [p[1:] for p in PATHS], ids=[p[0] for p in PATHS]
)
def test_path_values_follow_the_cel_rules(kind: str, value: str, message: str) -> None:
    """Exact and PathPrefix values obey the HTTPPathMatch CEL rules."""
    _, result = rule(f"{{matches: [{{path: {{type: {kind}, value: {value}}}}}]}}")
    path, text = error_of(result)
    assert path == "HTTPRoute app/r: spec.rules[0].matches[0].path.value"
    assert message in text


@pytest.mark.parametrize(
    "value", ["/", "/a/b/", "/a-b_c.d~e", "/%41", "/a:b@c!$&'()*+,;="], ids=str
)
def test_valid_path_values(value: str) -> None:
    """Values made of RFC 3986 path characters and escapes are accepted."""
    found, result = rule(f'{{matches: [{{path: {{type: Exact, value: "{value}"}}}}]}}')
    assert result.errors == [] and found is not None
    assert found.matches[0].path.value == value


def test_regular_expression_paths_skip_the_literal_path_rules() -> None:
    """RegularExpression values are not held to the Exact/PathPrefix character rules."""
    found, result = rule("{matches: [{path: {type: RegularExpression, value: '.*//x'}}]}")
    assert result.errors == [] and found is not None


# --- problems: unsupported values (spec §1.5) ------------------------------------------------

PROBLEMS = [
    (
        "header-value-with-newline",
        '{matches: [{headers: [{name: a, value: "x\\ny"}]}]}',
        "spec.rules[0].matches[0].headers[0].value: control characters",
    ),
    (
        "path-type",
        "{matches: [{path: {type: Glob, value: /a}}]}",
        'spec.rules[0].matches[0].path.type: unsupported value "Glob"',
    ),
    (
        "header-type",
        "{matches: [{headers: [{type: Prefix, name: a, value: b}]}]}",
        'spec.rules[0].matches[0].headers[0].type: unsupported value "Prefix"',
    ),
    (
        "query-type",
        "{matches: [{queryParams: [{type: Prefix, name: a, value: b}]}]}",
        'spec.rules[0].matches[0].queryParams[0].type: unsupported value "Prefix"',
    ),
    (
        "method",
        "{matches: [{method: PURGE}]}",
        'spec.rules[0].matches[0].method: unsupported value "PURGE"',
    ),
    (
        "bad-path-regexp",
        "{matches: [{path: {type: RegularExpression, value: '/(a'}}]}",
        "spec.rules[0].matches[0].path.value: unsupported regular expression",
    ),
    (
        "lookahead-header-regexp",
        "{matches: [{headers: [{type: RegularExpression, name: a, value: '(?=x)'}]}]}",
        "spec.rules[0].matches[0].headers[0].value: unsupported regular expression",
    ),
]


@pytest.mark.parametrize(
    ("text", "problem"), [p[1:] for p in PROBLEMS], ids=[p[0] for p in PROBLEMS]
)
def test_unknown_enum_values_are_problems_not_errors(text: str, problem: str) -> None:
    """Unknown match types and methods keep the route, marked UnsupportedValue."""
    found, result = rule(text)
    assert result.errors == [] and found is not None
    assert result.problems[("HTTPRoute", "app", "r")].startswith(problem)


# --- route and rule errors ------------------------------------------------------------------

SAME = "when parentRefs includes 2 or more references to the same parent"
ROUTE_ERRORS = [
    (
        "same-parent-twice",
        "  parentRefs: [{name: gw}, {name: gw}]\n",
        "spec.parentRefs[1]",
        f"sectionName or port must be unique {SAME}",
    ),
    (
        "same-parent-one-section",
        "  parentRefs: [{name: gw}, {name: gw, sectionName: a}]\n",
        "spec.parentRefs[1]",
        f"sectionName or port must be specified {SAME}",
    ),
    (
        "same-section-twice",
        "  parentRefs: [{name: gw, sectionName: a}, {name: gw, sectionName: a}]\n",
        "spec.parentRefs[1]",
        "sectionName or port must be unique",
    ),
    (
        "parent-without-name",
        "  parentRefs: [{sectionName: a}]\n",
        "spec.parentRefs[0].name",
        "required value",
    ),
    (
        "bad-section-name",
        "  parentRefs: [{name: gw, sectionName: A}]\n",
        "spec.parentRefs[0].sectionName",
        "does not match",
    ),
    (
        "bad-parent-port",
        "  parentRefs: [{name: gw, port: 0}]\n",
        "spec.parentRefs[0].port",
        "greater than or equal to 1",
    ),
    ("bad-hostname", "  hostnames: ['*']\n", "spec.hostnames[0]", "is not a hostname"),
    (
        "too-many-hostnames",
        "  hostnames: [" + ", ".join(f"h{i}.com" for i in range(17)) + "]\n",
        "spec.hostnames",
        "at most 16 items",
    ),
    ("empty-rules", "  rules: []\n", "spec.rules", "at least 1 item"),
    (
        "too-many-rules",
        "  rules: [" + ", ".join("{}" for _ in range(17)) + "]\n",
        "spec.rules",
        "at most 16 items",
    ),
    (
        "too-many-matches",
        "  rules: ["
        + ", ".join("{matches: [" + ", ".join("{}" for _ in range(33)) + "]}" for _ in range(4))
        + "]\n",
        "spec.rules",
        "the total number of matches across all rules in a route must be less than 128",
    ),
    (
        "duplicate-rule-names",
        "  rules: [{name: a}, {name: a}]\n",
        "spec.rules[1].name",
        "Rule name must be unique within the route",
    ),
    (
        "duplicate-header",
        "  rules: [{matches: [{headers: [{name: a, value: '1'}, {name: a, value: '2'}]}]}]\n",
        "spec.rules[0].matches[0].headers[1].name",
        'duplicate name "a"',
    ),
    (
        "duplicate-query",
        "  rules: [{matches: [{queryParams: [{name: a, value: '1'}, {name: a, value: '2'}]}]}]\n",
        "spec.rules[0].matches[0].queryParams[1].name",
        'duplicate name "a"',
    ),
    (
        "empty-header-value",
        "  rules: [{matches: [{headers: [{name: a, value: ''}]}]}]\n",
        "spec.rules[0].matches[0].headers[0].value",
        "at least 1 character",
    ),
    (
        "bad-header-name",
        "  rules: [{matches: [{headers: [{name: 'a b', value: x}]}]}]\n",
        "spec.rules[0].matches[0].headers[0].name",
        "does not match",
    ),
    (
        "header-value-number",
        "  rules: [{matches: [{headers: [{name: a, value: 1}]}]}]\n",
        "spec.rules[0].matches[0].headers[0].value",
        "expected a string, got an integer (1)",
    ),
    (
        "backend-without-port",
        "  rules: [{backendRefs: [{name: s}]}]\n",
        "spec.rules[0].backendRefs[0]",
        "Must have port for Service reference",
    ),
    (
        "explicit-service-without-port",
        "  rules: [{backendRefs: [{group: '', kind: Service, name: s}]}]\n",
        "spec.rules[0].backendRefs[0]",
        "Must have port for Service reference",
    ),
    (
        "weight-too-big",
        "  rules: [{backendRefs: [{name: s, port: 1, weight: 1000001}]}]\n",
        "spec.rules[0].backendRefs[0].weight",
        "less than or equal to 1000000",
    ),
    (
        "negative-weight",
        "  rules: [{backendRefs: [{name: s, port: 1, weight: -1}]}]\n",
        "spec.rules[0].backendRefs[0].weight",
        "greater than or equal to 0",
    ),
    (
        "bad-duration",
        "  rules: [{timeouts: {request: 1.5s}}]\n",
        "spec.rules[0].timeouts.request",
        "is not a Gateway API duration",
    ),
    (
        "backend-longer-than-request",
        "  rules: [{timeouts: {request: 1s, backendRequest: 2s}}]\n",
        "spec.rules[0].timeouts",
        "backendRequest timeout cannot be longer than request timeout",
    ),
    (
        "retry-code-out-of-range",
        "  rules: [{retry: {codes: [600]}}]\n",
        "spec.rules[0].retry.codes[0]",
        "from 400 to 599",
    ),
    (
        "retry-code-repeated",
        "  rules: [{retry: {codes: [500, 500]}}]\n",
        "spec.rules[0].retry.codes[1]",
        "duplicate value 500",
    ),
    (
        "negative-attempts",
        "  rules: [{retry: {attempts: -1}}]\n",
        "spec.rules[0].retry.attempts",
        "greater than or equal to 0",
    ),
    ("no-spec", None, "spec", "required value"),
]


@pytest.mark.parametrize(
    ("spec", "path", "message"), [e[1:] for e in ROUTE_ERRORS], ids=[e[0] for e in ROUTE_ERRORS]
)
def test_route_errors(spec: str | None, path: str, message: str) -> None:
    """Routes the API server would refuse are left out with the rule's message and key path."""
    if spec is None:
        result = parse(
            f"apiVersion: {GW}/v1\nkind: HTTPRoute\nmetadata: {{name: r, namespace: app}}\n"
        )
        found = result.objects.http_routes.get(("app", "r"))
    else:
        found, result = route(spec)
    assert found is None
    where, text = error_of(result)
    assert where == f"HTTPRoute app/r: {path}"
    assert message in text, text


def test_distinct_parent_refs_are_accepted() -> None:
    """One Gateway may be referenced twice through different sections or ports."""
    found, result = route(
        "  parentRefs:\n  - {name: gw, sectionName: a}\n  - {name: gw, sectionName: b}\n"
        "  - {name: gw, namespace: app, sectionName: a}\n  - {name: other}\n"
    )
    assert result.errors == [] and found is not None
    assert len(found.parent_refs) == 4


# --- L4 routes (spec §1.6, §1.7) -----------------------------------------------------------

BACKENDS = "{backendRefs: [{name: s, port: 53, weight: 2}]}"


def l4(kind: str, version: str, spec: str) -> tuple[L4Route | None, ParseResult]:
    result = parse(f"apiVersion: {GW}/{version}\nkind: {kind}\nmetadata: {{name: t}}\nspec: {spec}")
    return result.objects.l4_routes.get((kind, "default", "t")), result


def test_l4_route_fields() -> None:
    """L4 routes keep kind, parents, hostnames (TLSRoute) and weighted backends."""
    found, result = l4(
        "TLSRoute",
        "v1",
        f"{{parentRefs: [{{name: gw}}], hostnames: ['*.a.com'], rules: [{BACKENDS}]}}",
    )
    assert result.errors == [] and found is not None
    assert (found.kind, found.hostnames) == ("TLSRoute", ("*.a.com",))
    assert found.parent_refs == (ParentRef(name="gw", namespace="default"),)
    assert found.rules[0].backend_refs == (BackendRef("s", "default", 53, weight=2),)


@pytest.mark.parametrize(
    ("kind", "version", "spec", "valid"),
    [
        ("TCPRoute", "v1", f"{{rules: [{BACKENDS}, {BACKENDS}]}}", False),
        ("TCPRoute", "v1alpha2", f"{{rules: [{BACKENDS}, {BACKENDS}]}}", True),
        ("UDPRoute", "v1", f"{{rules: [{BACKENDS}, {BACKENDS}]}}", False),
        ("UDPRoute", "v1alpha2", f"{{rules: [{BACKENDS}, {BACKENDS}]}}", True),
        ("TLSRoute", "v1", f"{{hostnames: [a.com], rules: [{BACKENDS}, {BACKENDS}]}}", False),
        ("TLSRoute", "v1alpha2", f"{{rules: [{BACKENDS}, {BACKENDS}]}}", True),
        ("TLSRoute", "v1", f"{{rules: [{BACKENDS}]}}", False),
        ("TLSRoute", "v1alpha3", f"{{rules: [{BACKENDS}]}}", False),
        ("TLSRoute", "v1alpha2", f"{{rules: [{BACKENDS}]}}", True),
        ("TLSRoute", "v1", f"{{hostnames: [10.0.0.1], rules: [{BACKENDS}]}}", False),
        ("TCPRoute", "v1", "{}", False),
        ("TCPRoute", "v1", "{rules: [{}]}", False),
        ("TCPRoute", "v1", "{rules: [{backendRefs: [{name: s}]}]}", False),
        (
            "UDPRoute",
            "v1alpha2",
            f"{{rules: [{{name: a, {BACKENDS[1:-1]}}}, {{name: a, {BACKENDS[1:-1]}}}]}}",
            False,
        ),
    ],
    ids=[
        "tcp-v1-two-rules",
        "tcp-v1alpha2-two-rules",
        "udp-v1-two-rules",
        "udp-v1alpha2-two-rules",
        "tls-v1-two-rules",
        "tls-v1alpha2-two-rules",
        "tls-v1-needs-hostnames",
        "tls-v1alpha3-needs-hostnames",
        "tls-v1alpha2-hostnames-optional",
        "tls-v1-ip-hostname",
        "no-rules",
        "rule-without-backends",
        "backend-without-port",
        "duplicate-rule-names",
    ],
)
def test_l4_route_limits_per_version(kind: str, version: str, spec: str, valid: bool) -> None:
    """Rule counts, required hostnames and backendRefs follow each version's schema."""
    found, result = l4(kind, version, spec)
    assert (found is not None, len(result.errors)) == (valid, 0 if valid else 1), [
        str(e) for e in result.errors
    ]
