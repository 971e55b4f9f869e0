"""Tests for gateway.config.decoder: typed decoding rules and their error messages."""

from __future__ import annotations

import pytest

from gateway.config.decoder import parse_duration
from gateway.config.dynamic import MiddlewareConfig
from gateway.config.errors import ConfigError, Origin
from gateway.config.loader import parse_dynamic


def error_of(text: str, file: str = "d.yaml") -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_dynamic(text, file)
    return info.value


ROUTER = """\
http:
  routers:
    api:
      rule: Host(`a`)
      service: s
"""


def test_unknown_key_suggests_the_closest_one() -> None:
    """An unknown key is an error with a did-you-mean suggestion and its line."""
    err = error_of(ROUTER + "      servce: x\n")
    assert err.origin == Origin("d.yaml", 6)
    assert err.path == "http.routers.api"
    assert err.message == 'unknown key "servce" (did you mean "service"?)'


def test_keys_match_ignoring_case_like_traefik() -> None:
    """Keys spelled in another case (entrypoints, healthcheck) are accepted."""
    config = parse_dynamic(ROUTER + "      EntryPoints: [web]\n", "d.yaml")
    assert config.http.routers["api"].entry_points == ("web",)
    assert "http.routers.api.entryPoints" in config.origins


def test_same_key_in_two_cases_is_an_error() -> None:
    """entryPoints and entrypoints in one mapping are reported as a repeat."""
    err = error_of(ROUTER + "      entryPoints: [a]\n      entrypoints: [b]\n")
    assert '"entrypoints" repeats "entryPoints"' in err.message


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("priority: true", "expected an integer, got a boolean (true)"),
        ("priority: high", 'expected an integer, got "high"'),
        ("priority: 1.5", "expected an integer, got a number (1.5)"),
        ("entryPoints: web", 'expected a list, got "web"'),
        ("entryPoints: {a: b}", "expected a list, got a mapping"),
        ("middlewares: [[a]]", "expected a string, got a list"),
        ("tls: [a]", "expected a mapping, got a list"),
    ],
    ids=[
        "int-not-bool",
        "int-not-str",
        "int-not-float",
        "list-not-str",
        "list-not-map",
        "str-not-list",
        "map-not-list",
    ],
)
def test_wrong_types_are_errors(line: str, message: str) -> None:
    """A value of the wrong type names what was expected and what was found."""
    err = error_of(ROUTER + f"      {line}\n")
    assert err.message == message
    assert err.origin is not None and err.origin.line == 6


def test_string_fields_take_any_scalar_as_written() -> None:
    """A string field takes numbers and YAML 1.1 booleans literally."""
    config = parse_dynamic(
        "http:\n  routers:\n    r:\n      rule: Host(`a`)\n      service: 0x1F\n"
        "      middlewares: [no, 8080]\n",
        "d.yaml",
    )
    router = config.http.routers["r"]
    assert router.service == "0x1F"
    assert router.middlewares == ("no", "8080")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1h2m3.5s", 3723.5),
        ("250ms", 0.25),
        ("10us", 1e-5),
        ("10µs", 1e-5),
        ("1.5h", 5400.0),
        ("0", 0.0),
        ("-2s", -2.0),
        (".5s", 0.5),
        ("3ns", 3e-9),
    ],
    ids=lambda v: str(v),
)
def test_go_durations_parse(text: str, seconds: float) -> None:
    """Go duration strings parse to seconds."""
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "10", "1x", "s", "1h 2m", "1.2.3s", "abc"], ids=repr)
def test_bad_go_durations_are_refused(text: str) -> None:
    """Strings Go's time.ParseDuration refuses raise ValueError."""
    with pytest.raises(ValueError):
        parse_duration(text)


HEALTH = """\
http:
  services:
    s:
      loadBalancer:
        healthCheck:
          interval: {value}
"""


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("10s", 10.0), ("5", 5.0), ("1.5", 1.5), ('"1m30s"', 90.0), ("0", 0.0)],
    ids=["go-string", "int-seconds", "float-seconds", "quoted", "zero"],
)
def test_duration_fields_take_go_strings_or_seconds(value: str, seconds: float) -> None:
    """Duration fields accept Go durations and plain numbers of seconds."""
    config = parse_dynamic(HEALTH.format(value=value), "d.yaml")
    lb = config.http.services["s"].load_balancer
    assert lb is not None and lb.health_check is not None
    assert lb.health_check.interval == seconds


@pytest.mark.parametrize("value", ['"10"', "ten", "true", "[1]"], ids=repr)
def test_duration_fields_refuse_other_values(value: str) -> None:
    """A duration that is neither a Go duration nor a number is an error."""
    err = error_of(HEALTH.format(value=value))
    assert err.path == "http.services.s.loadBalancer.healthCheck.interval"
    assert err.message.startswith('expected a duration like "10s"')
    assert err.origin == Origin("d.yaml", 6)


def test_missing_required_key_names_the_object() -> None:
    """A router without a service is an error at the router's line."""
    err = error_of("http:\n  routers:\n    api:\n      rule: Host(`a`)\n")
    assert err.path == "http.routers.api"
    assert err.origin == Origin("d.yaml", 3)
    assert err.message == 'missing required key "service"'


def test_null_required_key_counts_as_missing() -> None:
    """A required key set to null is missing."""
    err = error_of("http:\n  routers:\n    api:\n      rule: Host(`a`)\n      service:\n")
    assert err.message == 'missing required key "service"'


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("s: {}", 'expected one of "loadBalancer", "weighted", "failover", "status"'),
        ("s:", 'expected one of "loadBalancer", "weighted", "failover", "status"'),
        (
            "s: {loadBalancer: {}, weighted: {}}",
            'only one of "loadBalancer", "weighted", "failover", "status" may be set, '
            "got loadBalancer and weighted",
        ),
    ],
    ids=["none", "null", "both"],
)
def test_service_needs_exactly_one_kind(body: str, message: str) -> None:
    """A service is a loadBalancer, a weighted or a failover service, exactly one."""
    err = error_of(f"http:\n  services:\n    {body}\n")
    assert err.message == message
    assert err.path == "http.services.s"


def test_null_means_not_set() -> None:
    """Null keeps defaults: optional sections stay None, nested models get defaults."""
    config = parse_dynamic(
        ROUTER + "      tls:\n      priority:\ntls:\n  stores:\n    default:\n", "d.yaml"
    )
    router = config.http.routers["api"]
    assert router.tls is None and router.priority == 0
    assert config.tls.stores["default"].default_certificate is None


def test_empty_mapping_enables_a_section() -> None:
    """tls: {} turns TLS on with defaults, as in Traefik."""
    config = parse_dynamic(ROUTER + "      tls: {}\n", "d.yaml")
    tls = config.http.routers["api"].tls
    assert tls is not None and tls.options == ""


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("m: {}", "a middleware needs exactly one type key (like basicAuth), got none"),
        ("m:", "a middleware needs exactly one type key (like basicAuth), got none"),
        (
            "m: {basicAuth: {}, digestAuth: {}}",
            'a middleware needs exactly one type key (like basicAuth), got "basicAuth", '
            '"digestAuth"',
        ),
    ],
    ids=["empty", "null", "two"],
)
def test_middleware_needs_exactly_one_type(body: str, message: str) -> None:
    """A middleware entry must name exactly one middleware type."""
    err = error_of(f"http:\n  middlewares:\n    {body}\n")
    assert err.message == message
    assert err.origin == Origin("d.yaml", 3)


def test_middleware_options_must_be_a_mapping() -> None:
    """A middleware's options are a mapping (or empty)."""
    err = error_of("http:\n  middlewares:\n    m:\n      stripPrefix: [a]\n")
    assert err.path == "http.middlewares.m.stripPrefix"
    assert err.message == "expected a mapping, got a list"


def test_middleware_with_null_options() -> None:
    """A middleware type with no options gets an empty options map."""
    config = parse_dynamic("http:\n  middlewares:\n    m:\n      contentType:\n", "d.yaml")
    assert config.http.middlewares["m"] == MiddlewareConfig(
        kind="contentType", origin=Origin("d.yaml", 3)
    )


def test_origins_are_left_out_of_equality() -> None:
    """Moving definitions to other lines gives an equal snapshot."""
    moved = "\n\n" + ROUTER
    assert parse_dynamic(ROUTER, "a.yaml") == parse_dynamic(moved, "b.yaml")


def test_origins_key_is_not_read_from_the_file() -> None:
    """The snapshot's origins field cannot be set from YAML."""
    err = error_of("origins: {}\n")
    assert err.message.startswith('unknown key "origins"')
