"""Tests for gateway.config.merge: provider snapshots into one qualified configuration."""

from __future__ import annotations

import pytest

from gateway.config.dynamic import DynamicConfig
from gateway.config.errors import ConfigError, Origin
from gateway.config.loader import parse_dynamic
from gateway.config.merge import combine, merge

FILE = """\
http:
  routers:
    api:
      rule: Host(`a`)
      service: api
      middlewares: [auth, "strip@kubernetes"]
      tls:
        options: modern
    my.router:
      rule: Host(`b`)
      service: "other@kubernetes"
  services:
    api:
      loadBalancer:
        servers: [{url: "http://127.0.0.1:1"}]
        serversTransport: internal
    split:
      weighted:
        services:
          - name: api
          - name: "web@kubernetes"
  middlewares:
    auth:
      basicAuth: {users: ["u:p"]}
  serversTransports:
    internal: {serverName: x}
tcp:
  routers:
    db:
      service: db
      middlewares: [lan]
      tls: {options: "modern@file"}
  services:
    db:
      loadBalancer:
        servers: [{address: "127.0.0.1:5432"}]
        serversTransport: t
    both:
      weighted:
        services: [{name: db}, {name: "x@other"}]
tls:
  certificates:
    - {certFile: a.crt, keyFile: a.key}
  options:
    modern: {minVersion: VersionTLS13}
"""

KUBE = """\
http:
  routers:
    api:
      rule: Host(`k`)
      service: web
  services:
    web:
      loadBalancer:
        servers: [{url: "http://127.0.0.1:2"}]
tls:
  certificates:
    - {certFile: k.crt, keyFile: k.key}
  options:
    modern: {minVersion: VersionTLS13}
"""


def merged() -> DynamicConfig:
    return merge(
        {
            "file": parse_dynamic(FILE, "f.yaml"),
            "kubernetes": parse_dynamic(KUBE, "k.yaml"),
        }
    )


def test_names_are_qualified_by_provider() -> None:
    """Routers, services, middlewares and transports become name@provider."""
    config = merged()
    assert set(config.http.routers) == {"api@file", "my.router@file", "api@kubernetes"}
    assert set(config.http.services) == {"api@file", "split@file", "web@kubernetes"}
    assert set(config.http.middlewares) == {"auth@file"}
    assert set(config.http.servers_transports) == {"internal@file"}


def test_references_resolve_to_their_own_provider() -> None:
    """Unqualified references gain their provider; qualified ones are kept."""
    config = merged()
    api = config.http.routers["api@file"]
    assert api.service == "api@file"
    assert api.middlewares == ("auth@file", "strip@kubernetes")
    assert config.http.routers["my.router@file"].service == "other@kubernetes"
    assert config.http.routers["api@kubernetes"].service == "web@kubernetes"
    lb = config.http.services["api@file"].load_balancer
    assert lb is not None and lb.servers_transport == "internal@file"
    weighted = config.http.services["split@file"].weighted
    assert weighted is not None
    assert [m.name for m in weighted.services] == ["api@file", "web@kubernetes"]


def test_default_servers_transport_stays_empty() -> None:
    """An unset serversTransport is not qualified into a name."""
    lb = merged().http.services["web@kubernetes"].load_balancer
    assert lb is not None and lb.servers_transport == ""


def test_tls_options_stay_unqualified_and_shared() -> None:
    """TLS options keep their names; identical definitions merge."""
    config = merged()
    assert set(config.tls.options) == {"modern"}
    tls = config.http.routers["api@file"].tls
    assert tls is not None and tls.options == "modern"


def test_certificates_concatenate_across_providers() -> None:
    """tls.certificates from every provider are kept, in provider order."""
    assert [c.cert_file for c in merged().tls.certificates] == ["a.crt", "k.crt"]


def test_conflicting_tls_options_are_an_error() -> None:
    """The same TLS options name defined differently by two providers is an error."""
    other = parse_dynamic("tls:\n  options:\n    modern: {sniStrict: true}\n", "o.yaml")
    with pytest.raises(ConfigError) as info:
        merge({"file": parse_dynamic(FILE, "f.yaml"), "other": other})
    err = info.value
    assert err.path == "tls.options.modern"
    assert err.origin == Origin("o.yaml", 3)
    assert "first defined at f.yaml:45" in err.message


@pytest.mark.parametrize(
    ("text", "path", "line"),
    [
        ("http:\n  routers:\n    a@x: {rule: r, service: s}\n", "http.routers.a@x", 3),
        ("http:\n  middlewares:\n    m@x: {headers: {}}\n", "http.middlewares.m@x", 3),
        ("tcp:\n  services:\n    s@x: {}\n", "tcp.services.s@x", 3),
    ],
    ids=["router", "middleware", "tcp-service"],
)
def test_at_sign_in_own_names_is_an_error(text: str, path: str, line: int) -> None:
    """A provider may not put @ in the names it defines."""
    with pytest.raises(ConfigError) as info:
        merge({"file": parse_dynamic(text, "f.yaml")})
    err = info.value
    assert (err.path, err.origin) == (path, Origin("f.yaml", line))
    assert 'must not contain "@"' in err.message


def test_origins_follow_qualified_names() -> None:
    """Origins are re-keyed to qualified paths, dotted names included."""
    origins = merged().origins
    assert origins["http.routers.api@file.service"] == Origin("f.yaml", 5)
    assert origins["http.routers.api@kubernetes.service"] == Origin("k.yaml", 5)
    assert origins["http.routers.my.router@file.rule"] == Origin("f.yaml", 10)
    assert origins["http.services.api@file.loadBalancer.servers[0]"] == Origin("f.yaml", 15)
    assert origins["tcp.routers.db@file.service"] == Origin("f.yaml", 30)
    assert origins["tls.options.modern"] == Origin("f.yaml", 45)


def test_tcp_names_and_references_are_qualified() -> None:
    """The raw tcp section gets the same qualification as http."""
    tcp = merged().tcp
    assert tcp is not None
    router = tcp["routers"]["db@file"]
    assert router["service"] == "db@file"
    assert router["middlewares"] == ("lan@file",)
    assert router["tls"]["options"] == "modern"
    assert tcp["services"]["db@file"]["loadBalancer"]["serversTransport"] == "t@file"
    names = [m["name"] for m in tcp["services"]["both@file"]["weighted"]["services"]]
    assert names == ["db@file", "x@other"]


def test_merge_of_nothing_is_empty() -> None:
    """No providers give an empty configuration."""
    assert merge({}) == DynamicConfig()


def test_combine_keeps_a_single_snapshot_as_is() -> None:
    """Combining one file returns it unchanged, origins included."""
    config = parse_dynamic(FILE, "f.yaml")
    assert combine([config]) is config


def test_combine_refuses_identical_duplicates() -> None:
    """Within one provider even an identical redefinition is an error."""
    a = parse_dynamic(KUBE, "a.yaml")
    b = parse_dynamic(KUBE, "b.yaml")
    with pytest.raises(ConfigError) as info:
        combine([a, b])
    assert info.value.path == "http.routers.api"
    assert info.value.origin == Origin("b.yaml", 3)
