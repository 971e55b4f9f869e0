"""Tests for gateway.config.loader: YAML to frozen configuration, with located errors."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
import yaml

from gateway.config.dynamic import DynamicConfig, HTTPRouter
from gateway.config.errors import ConfigError, Origin
from gateway.config.loader import (
    decode,
    decode_value,
    load_dynamic_paths,
    load_static,
    parse_dynamic,
    parse_static,
)
from gateway.config.model import Duration, empty_map, model

FIXTURE = Path(__file__).parent.parent / "fixtures" / "config" / "traefik_dynamic.yaml"


ROUTER = """\
http:
  routers:
    api:
      rule: Host(`a`)
      service: s
"""


# --- The Traefik fixture -------------------------------------------------------


def test_traefik_fixture_loads_unchanged() -> None:
    """A Traefik v3 dynamic file from the documentation's examples loads as is."""
    config = load_dynamic_paths([FIXTURE])
    api = config.http.routers["api"]
    assert api.entry_points == ("websecure",)
    assert api.middlewares == ("auth", "secure-headers")
    assert api.priority == 100
    assert api.tls is not None and api.tls.cert_resolver == "letsencrypt"
    assert api.tls.domains[0].sans == ("*.example.com",)
    blog = config.http.routers["blog"]
    assert blog.tls is not None and blog.tls.options == ""
    lb = config.http.services["api"].load_balancer
    assert lb is not None
    assert [s.weight for s in lb.servers] == [2, 1]
    assert lb.servers[1].preserve_path
    assert not lb.pass_host_header
    assert lb.health_check is not None
    assert (lb.health_check.interval, lb.health_check.timeout) == (10.0, 3.0)
    assert lb.health_check.headers == {"X-Health-Check": "1"}
    assert lb.sticky is not None and lb.sticky.cookie is not None
    assert lb.sticky.cookie.max_age == 3600
    assert lb.response_forwarding.flush_interval == pytest.approx(0.1)
    weighted = config.http.services["canary"].weighted
    assert weighted is not None and [m.name for m in weighted.services] == ["api", "api-v2"]
    transport = config.http.servers_transports["internal"]
    assert transport.forwarding_timeouts.idle_conn_timeout == 90.0
    assert transport.root_c_as == ("/etc/ssl/internal-ca.pem",)
    assert config.tls.options["modern"].client_auth is not None
    assert config.tls.stores["default"].default_certificate is not None
    assert len(config.tls.certificates) == 2


def test_fixture_middlewares_keep_kind_and_raw_options() -> None:
    """Each middleware becomes its type key plus frozen raw options."""
    config = load_dynamic_paths([FIXTURE])
    kinds = {name: m.kind for name, m in config.http.middlewares.items()}
    assert kinds["auth"] == "basicAuth"
    assert kinds["only-lan"] == "ipAllowList"
    auth = config.http.middlewares["auth"]
    assert isinstance(auth.options, MappingProxyType)
    assert isinstance(auth.options["users"], tuple)
    assert auth.options["removeHeader"] is True
    assert auth.origin == Origin(str(FIXTURE), 79)
    assert config.http.middlewares["json"].options == {}


def test_fixture_tcp_and_udp_are_frozen_raw_data() -> None:
    """tcp and udp sections are kept raw, as read-only maps and tuples."""
    config = load_dynamic_paths([FIXTURE])
    assert config.tcp is not None and config.udp is not None
    router = config.tcp["routers"]["postgres"]
    assert isinstance(router, MappingProxyType)
    assert router["entryPoints"] == ("pg",)
    assert config.udp["services"]["dns"]["loadBalancer"]["servers"][0]["address"] == (
        "127.0.0.1:5353"
    )


@pytest.mark.parametrize(
    ("path", "line"),
    [
        ("http.routers.api", 5),
        ("http.routers.api.rule", 6),
        ("http.routers.api.service", 13),
        ("http.routers.api.tls.options", 15),
        ("http.services.api", 35),
        ("http.services.api.loadBalancer.servers[1].url", 40),
        ("http.services.api.loadBalancer.healthCheck.interval", 48),
        ("http.services.canary.weighted.services[1]", 72),
        ("http.middlewares.auth", 79),
        ("http.middlewares.auth.basicAuth.realm", 84),
        ("http.serversTransports.internal", 115),
        ("tls.options.modern", 164),
        ("tcp.routers.postgres.service", 132),
    ],
    ids=lambda v: str(v),
)
def test_origins_record_every_key_path(path: str, line: int) -> None:
    """The snapshot records the file and line of each dotted key path."""
    config = load_dynamic_paths([FIXTURE])
    assert config.origins[path] == Origin(str(FIXTURE), line)


def test_parse_dynamic_locates_keys_in_the_named_file() -> None:
    """parse_dynamic records origins under the file name it is given."""
    config = parse_dynamic(ROUTER, "x.yaml")
    assert config.origins["http.routers.api"] == Origin("x.yaml", 3)
    assert config.origins["http.routers.api.service"] == Origin("x.yaml", 5)


# --- Several files ---------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_files_combine_into_one_snapshot(tmp_path: Path) -> None:
    """Named objects from several files are combined; certificates concatenate."""
    a = write(
        tmp_path / "a.yaml",
        ROUTER + "tls:\n  certificates:\n    - {certFile: a.crt, keyFile: a.key}\n",
    )
    b = write(
        tmp_path / "b.yaml",
        "http:\n  services:\n    s:\n      loadBalancer:\n        servers: [{url: 'http://x'}]\n"
        "tls:\n  certificates:\n    - {certFile: b.crt, keyFile: b.key}\n",
    )
    config = load_dynamic_paths([a, b])
    assert set(config.http.routers) == {"api"}
    assert set(config.http.services) == {"s"}
    assert [c.cert_file for c in config.tls.certificates] == ["a.crt", "b.crt"]
    assert config.origins["http.routers.api"] == Origin(str(a), 3)
    assert config.origins["http.services.s"] == Origin(str(b), 3)


@pytest.mark.parametrize(
    ("section", "body"),
    [
        ("http.routers.api", ROUTER),
        ("tls.options.o", "tls:\n  options:\n    o: {}\n"),
        ("tcp.routers.t", "tcp:\n  routers:\n    t: {service: x}\n"),
    ],
    ids=["router", "tls-options", "tcp-router"],
)
def test_same_name_in_two_files_is_an_error(tmp_path: Path, section: str, body: str) -> None:
    """A name defined in two files is an error naming both files and lines."""
    a = write(tmp_path / "a.yaml", body)
    b = write(tmp_path / "b.yaml", "\n" + body)
    with pytest.raises(ConfigError) as info:
        load_dynamic_paths([a, b])
    err = info.value
    assert err.path == section
    assert err.origin is not None and err.origin.file == str(b)
    assert f"first defined at {a}:" in err.message


def test_no_files_is_an_empty_snapshot() -> None:
    """Loading no files gives an empty configuration."""
    assert load_dynamic_paths([]) == DynamicConfig()


def test_unreadable_file_is_named(tmp_path: Path) -> None:
    """A file that cannot be read is a ConfigError naming it."""
    missing = tmp_path / "missing.yaml"
    with pytest.raises(ConfigError) as info:
        load_dynamic_paths([missing])
    assert info.value.origin == Origin(str(missing))
    assert "cannot read" in info.value.message


def test_non_utf8_file_is_named(tmp_path: Path) -> None:
    """A file that is not UTF-8 is a ConfigError naming it."""
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"http: \xff\n")
    with pytest.raises(ConfigError) as info:
        load_dynamic_paths([bad])
    assert info.value.origin == Origin(str(bad))


# --- Static configuration and overrides ------------------------------------------

STATIC = """\
entryPoints:
  web:
    address: ":80"
providers:
  file:
    directory: dynamic
log:
  level: INFO
"""


def test_static_file_parses() -> None:
    """The static configuration's entry points, providers and log settings load."""
    config = parse_static(STATIC, "s.yaml")
    assert config.entry_points["web"].address == ":80"
    assert config.providers.file is not None and config.providers.file.directory == "dynamic"
    assert config.api is None


@pytest.mark.parametrize(
    ("key", "value", "check"),
    [
        ("entryPoints.web.address", ":8080", lambda c: c.entry_points["web"].address),
        ("entrypoints.web.address", ":8080", lambda c: c.entry_points["web"].address),
        ("entryPoints.websecure.address", ":443", lambda c: c.entry_points["websecure"].address),
        ("api.address", "127.0.0.1:9001", lambda c: c.api.address),
        ("log.level", "DEBUG", lambda c: c.log.level),
        ("providers.file.directory", "/x", lambda c: c.providers.file.directory),
        ("providers.file.watch", "false", lambda c: c.providers.file.watch),
        (
            "entryPoints.web.http.maxHeaderBytes",
            "3",
            lambda c: c.entry_points["web"].http.max_header_bytes,
        ),
        (
            "entryPoints.web.forwardedHeaders.trustedIPs",
            "198.51.100.0/24, 127.0.0.1",
            lambda c: c.entry_points["web"].forwarded_headers.trusted_i_ps,
        ),
        ("metrics.prometheus.buckets", "0.5,1", lambda c: c.metrics.prometheus.buckets),
        (
            "entryPoints.web.transport.respondingTimeouts.readTimeout",
            "5s",
            lambda c: c.entry_points["web"].transport.responding_timeouts.read_timeout,
        ),
    ],
    ids=[
        "address",
        "lower-case",
        "new-entry-point",
        "api",
        "log",
        "provider",
        "bool",
        "int",
        "list",
        "float-list",
        "duration",
    ],
)
def test_overrides_apply_on_top_of_the_file(key: str, value: str, check: Any) -> None:
    """Traefik-style dotted overrides set typed values over the file's."""
    expected: dict[str, object] = {
        ":8080": ":8080",
        ":443": ":443",
        "127.0.0.1:9001": "127.0.0.1:9001",
        "DEBUG": "DEBUG",
        "/x": "/x",
        "false": False,
        "3": 3,
        "198.51.100.0/24, 127.0.0.1": ("198.51.100.0/24", "127.0.0.1"),
        "0.5,1": (0.5, 1.0),
        "5s": 5.0,
    }
    config = parse_static(STATIC, "s.yaml", [(key, value)])
    assert check(config) == expected[value]


def test_override_keeps_other_file_values() -> None:
    """An override changes one key and leaves its siblings from the file."""
    config = parse_static(STATIC, "s.yaml", [("providers.file.watch", "false")])
    assert config.providers.file is not None
    assert config.providers.file.directory == "dynamic"
    assert config.entry_points["web"].address == ":80"


def test_true_switches_a_section_on_and_false_off() -> None:
    """Setting a section to true enables it with defaults; false disables it."""
    on = parse_static("", "s.yaml", [("api", "true")])
    assert on.api is not None and on.api.address == "127.0.0.1:9000"
    kept = parse_static("api:\n  address: ':1'\n", "s.yaml", [("api", "true")])
    assert kept.api is not None and kept.api.address == ":1"
    off = parse_static("api:\n  address: ':1'\n", "s.yaml", [("api", "false")])
    assert off.api is None


@pytest.mark.parametrize(
    ("key", "value", "path", "message"),
    [
        ("log.levle", "DEBUG", "log", 'unknown key "levle" (did you mean "level"?)'),
        (
            "entryPoints.web.reusePort",
            "maybe",
            "entryPoints.web.reusePort",
            'expected true or false, got "maybe"',
        ),
        ("log.level.x", "1", "log.level", "cannot set x: log.level is not a mapping here"),
        ("log..level", "1", "log..level", 'invalid override key "log..level"'),
    ],
    ids=["unknown", "type", "not-a-mapping", "empty-segment"],
)
def test_override_errors_name_the_command_line(
    key: str, value: str, path: str, message: str
) -> None:
    """A bad override is an error at <command line> with its key path."""
    with pytest.raises(ConfigError) as info:
        parse_static(STATIC, "s.yaml", [(key, value)])
    err = info.value
    assert (err.origin, err.path, err.message) == (Origin("<command line>"), path, message)
    assert str(err).startswith("<command line>: ")


def test_load_static_reads_the_file(tmp_path: Path) -> None:
    """load_static reads and parses a file, with overrides."""
    path = write(tmp_path / "static.yaml", STATIC)
    config = load_static(path, [("log.level", "DEBUG")])
    assert config.log.level == "DEBUG"


def test_load_static_unreadable_names_the_file(tmp_path: Path) -> None:
    """An unreadable static file is a ConfigError naming it."""
    with pytest.raises(ConfigError) as info:
        load_static(tmp_path / "nope.yaml")
    assert info.value.origin == Origin(str(tmp_path / "nope.yaml"))


def test_static_errors_name_file_and_line() -> None:
    """Static configuration errors carry the file, line and key path."""
    with pytest.raises(ConfigError) as info:
        parse_static("entryPoints:\n  web:\n    adress: ':80'\n", "s.yaml")
    assert str(info.value) == (
        's.yaml:3: entryPoints.web: unknown key "adress" (did you mean "address"?)'
    )


def test_entry_point_requires_an_address() -> None:
    """An entry point without an address is an error."""
    with pytest.raises(ConfigError) as info:
        parse_static("entryPoints:\n  web: {}\n", "s.yaml")
    assert info.value.message == 'missing required key "address"'


# --- decode and decode_value ------------------------------------------------------


@model
class RateOptions:
    REQUIRED = ("average",)

    average: int = 0
    period: Duration = 1.0
    sources: tuple[str, ...] = ()
    labels: Mapping[str, str] = empty_map()


def test_decode_value_reads_plain_data() -> None:
    """Raw options decode into an options class with the loader's rules."""
    raw = MappingProxyType({"average": 5, "Period": "1m", "sources": ("a", "b")})
    options = decode_value(RateOptions, raw, origin=Origin("d.yaml", 7), path="m.rateLimit")
    assert options == RateOptions(average=5, period=60.0, sources=("a", "b"))


@pytest.mark.parametrize(
    ("raw", "path", "message"),
    [
        ({"average": "x"}, "m.rateLimit.average", 'expected an integer, got "x"'),
        (
            {"average": 1, "perod": "1s"},
            "m.rateLimit",
            'unknown key "perod" (did you mean "period"?)',
        ),
        ({}, "m.rateLimit", 'missing required key "average"'),
        (
            {"average": 1, "labels": {"a": None}},
            "m.rateLimit.labels.a",
            "expected a string, got null",
        ),
        ({"average": 1, "sources": "a"}, "m.rateLimit.sources", 'expected a list, got "a"'),
    ],
    ids=["type", "unknown", "missing", "null-in-map", "list"],
)
def test_decode_value_errors_carry_origin_and_path(
    raw: dict[str, object], path: str, message: str
) -> None:
    """Errors decoding plain data name the given origin and the key path."""
    with pytest.raises(ConfigError) as info:
        decode_value(RateOptions, raw, origin=Origin("d.yaml", 7), path="m.rateLimit")
    assert (info.value.origin, info.value.path, info.value.message) == (
        Origin("d.yaml", 7),
        path,
        message,
    )


def test_decode_value_turns_bools_into_go_strings() -> None:
    """A boolean given for a string field reads as Go spells it."""
    router = decode_value(HTTPRouter, {"rule": "r", "service": True}, origin=None, path="r")
    assert router.service == "true"


def test_decode_takes_a_pyyaml_node() -> None:
    """decode() decodes a composed PyYAML node, with lines in errors."""
    node = yaml.compose("rule: Host(`a`)\nservice: s\n", Loader=yaml.SafeLoader)
    assert decode(HTTPRouter, node, file="x.yaml").service == "s"
    bad = yaml.compose("rule: Host(`a`)\n", Loader=yaml.SafeLoader)
    with pytest.raises(ConfigError) as info:
        decode(HTTPRouter, bad, file="x.yaml", path="http.routers.r")
    assert str(info.value) == 'x.yaml:1: http.routers.r: missing required key "service"'


# --- Entry-point protocols (/tcp, /udp) -------------------------------------------


@pytest.mark.parametrize(
    ("written", "address", "protocol", "listen"),
    [
        (":80", ":80", "tcp", ":80"),
        ("127.0.0.1:8000/tcp", "127.0.0.1:8000", "tcp", "127.0.0.1:8000"),
        (":8000/TCP", ":8000", "tcp", ":8000"),
        (":5353/udp", ":5353/udp", "udp", ":5353"),
        (":53/UDP", ":53/udp", "udp", ":53"),
        ("[::1]:53/udp", "[::1]:53/udp", "udp", "[::1]:53"),
        (":1/sctp", ":1/sctp", "tcp", ":1/sctp"),
    ],
    ids=["plain", "tcp-suffix", "tcp-upper", "udp", "udp-upper", "udp-ipv6", "unknown-suffix"],
)
def test_entry_point_address_names_its_protocol(
    written: str, address: str, protocol: str, listen: str
) -> None:
    """A /tcp suffix is dropped from address; /udp stays and sets the protocol."""
    config = parse_static(f"entryPoints:\n  ep:\n    address: '{written}'\n", "s.yaml")
    ep = config.entry_points["ep"]
    assert (ep.address, ep.protocol, ep.listen_address) == (address, protocol, listen)


def test_udp_entry_point_from_the_command_line() -> None:
    """--entryPoints.<name>.address=:53/udp makes a UDP entry point."""
    config = parse_static("", "s.yaml", [("entryPoints.dns.address", ":53/udp")])
    assert config.entry_points["dns"].protocol == "udp"
    assert config.entry_points["dns"].listen_address == ":53"


def test_udp_entry_point_keeps_its_protocol_when_copied() -> None:
    """dataclasses.replace on a UDP entry point keeps it UDP (the suffix stays in address)."""
    import dataclasses

    ep = parse_static("entryPoints:\n  dns: {address: ':53/udp'}\n", "s.yaml").entry_points["dns"]
    assert dataclasses.replace(ep, reuse_port=True).protocol == "udp"
