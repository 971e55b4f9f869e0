"""Tests for gateway.config.validate: cross-reference checks on a merged configuration."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.config.dynamic import DynamicConfig
from gateway.config.errors import Origin
from gateway.config.loader import load_dynamic_paths, parse_dynamic
from gateway.config.merge import merge
from gateway.config.validate import validate

FIXTURE = Path(__file__).parent.parent / "fixtures" / "config" / "traefik_dynamic.yaml"
ENTRY_POINTS = {"web", "websecure"}


def merged(text: str) -> DynamicConfig:
    return merge({"file": parse_dynamic(text, "d.yaml")})


def services(body: str, router: str = "service: s") -> str:
    """A router (line 3, extra keys from line 5) to service "s", plus more services."""
    return f"""\
http:
  routers:
    r:
      rule: Host(`a.example`)
      {router}
  services:
    s:
      loadBalancer:
        servers: [{{url: "http://127.0.0.1:1"}}]
{body}"""


def test_traefik_fixture_is_valid() -> None:
    """The Traefik fixture, merged as the file provider, has no errors."""
    config = merge({"file": load_dynamic_paths([FIXTURE])})
    assert validate(config, entry_points=ENTRY_POINTS) == []


def test_empty_config_is_valid() -> None:
    """An empty configuration has nothing to complain about."""
    assert validate(DynamicConfig(), entry_points=()) == []


ROUTER_CASES = [
    pytest.param(
        "service: ss",
        "http.routers.r@file.service",
        'unknown service "ss@file" (did you mean "s@file"?)',
        id="unknown-service",
    ),
    pytest.param(
        "service: s@other",
        "http.routers.r@file.service",
        'unknown service "s@other"',
        id="other-provider",
    ),
    pytest.param(
        "middlewares: [auth]",
        "http.routers.r@file.middlewares[0]",
        'unknown middleware "auth@file"',
        id="unknown-middleware",
    ),
    pytest.param(
        "entryPoints: [web, websecur]",
        "http.routers.r@file.entryPoints[1]",
        'unknown entry point "websecur" (did you mean "websecure"?)',
        id="unknown-entry-point",
    ),
    pytest.param(
        "tls: {options: strict}",
        "http.routers.r@file.tls.options",
        'unknown TLS options "strict"',
        id="unknown-tls-options",
    ),
    pytest.param(
        "ruleSyntax: v2",
        "http.routers.r@file.ruleSyntax",
        'unsupported rule syntax "v2": write the rule in v3 syntax',
        id="rule-syntax-v2",
    ),
]


@pytest.mark.parametrize(("extra", "path", "message"), ROUTER_CASES)
def test_router_reference_errors(extra: str, path: str, message: str) -> None:
    """Router references that do not resolve are reported at their key."""
    router = extra if extra.startswith("service") else f"{extra}\n      service: s"
    text = services("", router)
    errors = validate(merged(text), entry_points=ENTRY_POINTS)
    assert [(e.path, e.message) for e in errors] == [(path, message)]
    assert errors[0].origin is not None and errors[0].origin.line == 5


@pytest.mark.parametrize("options", ["default", "default@internal"], ids=str)
def test_default_tls_options_need_no_definition(options: str) -> None:
    """tls.options "default" always exists."""
    text = services("").replace("service: s\n", f"service: s\n      tls: {{options: {options}}}\n")
    assert validate(merged(text), entry_points=ENTRY_POINTS) == []


def test_bad_rule_reports_the_column() -> None:
    """A rule that does not parse is reported with its 1-based column."""
    text = services("").replace("Host(`a.example`)", "Host(`a.example`")
    errors = validate(merged(text), entry_points=ENTRY_POINTS)
    assert len(errors) == 1
    err = errors[0]
    assert err.path == "http.routers.r@file.rule"
    assert err.origin == Origin("d.yaml", 4)
    assert re.fullmatch(r"column \d+: .+", err.message)
    assert str(err).startswith("d.yaml:4: http.routers.r@file.rule: column ")


SERVICE_CASES = [
    pytest.param(
        "servers: [{url: 'ftp://127.0.0.1'}]",
        "loadBalancer.servers[0].url",
        'URL "ftp://127.0.0.1" needs scheme http, https or h2c, got "ftp"',
        id="bad-scheme",
    ),
    pytest.param(
        "servers: [{url: '127.0.0.1:80'}]",
        "loadBalancer.servers[0].url",
        'URL "127.0.0.1:80" needs scheme http, https or h2c, got none',
        id="no-scheme",
    ),
    pytest.param(
        "servers: [{url: 'http://'}]",
        "loadBalancer.servers[0].url",
        'URL "http://" has no host',
        id="no-host",
    ),
    pytest.param(
        "servers: [{url: 'http://127.0.0.1:99999'}]",
        "loadBalancer.servers[0].url",
        'invalid URL "http://127.0.0.1:99999": Port out of range 0-65535',
        id="bad-port",
    ),
    pytest.param(
        "servers: [{url: 'http://a', weight: -1}]",
        "loadBalancer.servers[0].weight",
        "must be >= 0, got -1",
        id="negative-weight",
    ),
    pytest.param(
        "serversTransport: tr",
        "loadBalancer.serversTransport",
        'unknown serversTransport "tr@file"',
        id="unknown-transport",
    ),
    pytest.param(
        "healthCheck: {interval: 0}",
        "loadBalancer.healthCheck.interval",
        "must be > 0, got 0s",
        id="zero-interval",
    ),
    pytest.param(
        "healthCheck: {timeout: -1s}",
        "loadBalancer.healthCheck.timeout",
        "must be > 0, got -1s",
        id="negative-timeout",
    ),
]


@pytest.mark.parametrize(("body", "path", "message"), SERVICE_CASES)
def test_load_balancer_errors(body: str, path: str, message: str) -> None:
    """Server URLs, weights, transports and health checks are checked."""
    text = services(f"    t:\n      loadBalancer:\n        {body}\n")
    errors = validate(merged(text), entry_points=ENTRY_POINTS)
    assert [(e.path, e.message) for e in errors] == [(f"http.services.t@file.{path}", message)]
    assert errors[0].origin is not None and errors[0].origin.line == 12


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8080/", "https://[::1]:8443", "h2c://backend", "http://a.example/x?y"],
    ids=str,
)
def test_good_server_urls_pass(url: str) -> None:
    """http, https and h2c URLs with a host are accepted."""
    text = services(f"    t:\n      loadBalancer:\n        servers: [{{url: '{url}'}}]\n")
    assert validate(merged(text), entry_points=ENTRY_POINTS) == []


def test_weighted_member_must_exist() -> None:
    """A weighted service naming an unknown service is an error at that member."""
    text = services(
        "    w:\n      weighted:\n        services:\n          - name: s\n          - name: x\n"
    )
    errors = validate(merged(text), entry_points=ENTRY_POINTS)
    assert [(e.path, e.message) for e in errors] == [
        (
            "http.services.w@file.weighted.services[1].name",
            'unknown service "x@file" (did you mean "w@file"?)',
        )
    ]
    assert errors[0].origin == Origin("d.yaml", 14)


def test_weighted_member_weight_must_not_be_negative() -> None:
    """Weighted members need a weight >= 0."""
    text = services("    w:\n      weighted:\n        services: [{name: s, weight: -2}]\n")
    errors = validate(merged(text), entry_points=ENTRY_POINTS)
    assert [(e.path, e.message) for e in errors] == [
        ("http.services.w@file.weighted.services[0].weight", "must be >= 0, got -2")
    ]


@pytest.mark.parametrize(
    ("body", "cycle"),
    [
        ("    a:\n      weighted: {services: [{name: a}]}\n", "a@file -> a@file"),
        (
            "    a:\n      weighted: {services: [{name: s}, {name: b}]}\n"
            "    b:\n      weighted: {services: [{name: c}]}\n"
            "    c:\n      weighted: {services: [{name: a}]}\n",
            "a@file -> b@file -> c@file -> a@file",
        ),
    ],
    ids=["self", "three"],
)
def test_weighted_cycles_are_reported_once(body: str, cycle: str) -> None:
    """A loop of weighted services is one error naming the whole loop."""
    errors = validate(merged(services(body)), entry_points=ENTRY_POINTS)
    assert [e.message for e in errors] == [f"services form a cycle: {cycle}"]
    assert errors[0].path == "http.services.a@file.weighted.services"


def test_shared_weighted_member_is_not_a_cycle() -> None:
    """Two weighted services sharing a third form a diamond, not a loop."""
    body = (
        "    a:\n      weighted: {services: [{name: b}, {name: c}]}\n"
        "    b:\n      weighted: {services: [{name: d}]}\n"
        "    c:\n      weighted: {services: [{name: d}]}\n"
        "    d:\n      weighted: {services: [{name: s}]}\n"
    )
    assert validate(merged(services(body)), entry_points=ENTRY_POINTS) == []


def test_every_error_is_reported() -> None:
    """Validation collects all problems rather than stopping at the first."""
    text = services("").replace("service: s", "service: x\n      entryPoints: [nope]")
    errors = validate(merged(text), entry_points=ENTRY_POINTS)
    assert [e.path for e in errors] == [
        "http.routers.r@file.service",
        "http.routers.r@file.entryPoints[0]",
    ]


def test_errors_without_recorded_origin_use_the_nearest_one() -> None:
    """A path with no origin of its own borrows its closest recorded parent's."""
    text = services("").replace("service: s\n", "service: s\n      tls: {options: nope}\n")
    config = merged(text)
    trimmed = {k: v for k, v in config.origins.items() if not k.endswith(".options")}
    config = DynamicConfig(http=config.http, tls=config.tls, origins=trimmed)
    errors = validate(config, entry_points=ENTRY_POINTS)
    assert errors[0].origin == Origin("d.yaml", 6)


def test_http_router_on_a_udp_entry_point_is_an_error() -> None:
    """An HTTP router naming a UDP entry point is told so, at its line."""
    config = merged(services("", "service: s\n      entryPoints: [dns]"))
    errors = validate(config, entry_points=ENTRY_POINTS, udp_entry_points={"dns"})
    assert [(e.path, e.message, e.origin.line if e.origin else 0) for e in errors] == [
        (
            "http.routers.r@file.entryPoints[0]",
            'entry point "dns" is a UDP entry point; HTTP routers need a TCP one',
            6,
        )
    ]
