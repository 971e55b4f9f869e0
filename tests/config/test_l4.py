"""Tests for gateway.config.l4 and l4_checks: TCP and UDP configuration, decoded and checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config.dynamic import DynamicConfig
from gateway.config.errors import ConfigError
from gateway.config.l4 import (
    ClientCertificate,
    L4Config,
    ProxyProtocol,
    TCPHealthCheck,
    TCPServersTransport,
    decode_l4,
    effective_transport,
    parse_server_address,
)
from gateway.config.l4_checks import check_l4
from gateway.config.loader import load_dynamic_paths, parse_dynamic
from gateway.config.merge import merge

FIXTURE = Path(__file__).parent.parent / "fixtures" / "config" / "traefik_dynamic.yaml"

# The examples of Traefik v3's TCP and UDP routing reference, in one file
# (placeholder addresses such as "xx.xx.xx.xx:xx" replaced by real ones).
TRAEFIK_DOCS = """\
tcp:
  routers:
    my-tcp-router:
      entryPoints:
        - "tcp-ep"
        - "websecure"
      rule: "HostSNI(`example.com`)"
      priority: 10
      middlewares:
        - "tcp-ipallowlist"
      tls:
        passthrough: false
        certResolver: "letsencrypt"
        options: "modern-tls"
        domains:
          - main: "example.com"
            sans:
              - "www.example.com"
      service: my-tcp-service
    my-tls-router:
      rule: "HostSNI(`example.org`)"
      service: "my-tcp-service"
      tls:
        passthrough: true
    Router-1:
      rule: "ClientIP(`192.168.0.12`)"
      entryPoints:
      - "web"
      service: service-1
      priority: 2
    my-router:
      rule: "HostSNI(`*`)"
      service: service-1
      observability:
        metrics: false
        accessLogs: false
        tracing: false
  services:
    my-tcp-service:
      loadBalancer:
        servers:
        - address: "127.0.0.1:5432"
        - address: "[::1]:5432"
          tls: true
        healthCheck:
          send: "PING"
          expect: "PONG"
          interval: "10s"
          timeout: "3s"
        serversTransport: "mytransport"
    service-1:
      loadBalancer:
        servers:
        - address: "127.0.0.1:8080"
        proxyProtocol:
          version: 1
        terminationDelay: 200
    app:
      weighted:
        services:
        - name: appv1
          weight: 3
        - name: appv2
          weight: 1
    appv1:
      loadBalancer:
        servers:
        - address: "127.0.0.1:8081"
    appv2:
      loadBalancer:
        servers:
        - address: "127.0.0.1:8082"
  middlewares:
    tcp-ipallowlist:
      ipAllowList:
        sourceRange:
          - "127.0.0.1/32"
          - "192.168.1.7"
  serversTransports:
    mytransport:
      dialTimeout: "30s"
      dialKeepAlive: "20s"
      terminationDelay: "200ms"
      proxyProtocol: {}
      tls:
        serverName: "example.com"
        certificates:
          - "/path/to/cert1.pem"
          - "/path/to/cert2.pem"
        insecureSkipVerify: true
        rootCAs:
          - "/path/to/rootca.pem"
        peerCertURI: "spiffe://example.org/peer"
        spiffe:
          ids:
            - "spiffe://example.org/id1"
            - "spiffe://example.org/id2"
          trustDomain: "example.org"
udp:
  routers:
    my-udp-router:
      entryPoints:
        - "udp-ep"
        - "dns"
      service: my-udp-service
  services:
    my-udp-service:
      loadBalancer:
        servers:
          - address: "127.0.0.1:5353"
    app:
      weighted:
        services:
          - name: appv1
            weight: 3
          - name: appv2
            weight: 1
    appv1:
      loadBalancer:
        servers:
          - address: "127.0.0.1:5354"
    appv2:
      loadBalancer:
        servers:
          - address: "127.0.0.1:5355"
tls:
  options:
    modern-tls:
      minVersion: VersionTLS13
"""

DOCS_ENTRY_POINTS = {
    "tcp-ep": "tcp",
    "websecure": "tcp",
    "web": "tcp",
    "udp-ep": "udp",
    "dns": "udp",
}
ENTRY_POINTS = {"pg": "tcp", "web": "tcp", "dns": "udp", "syslog": "udp"}


def merged(text: str, file: str = "l4.yaml") -> DynamicConfig:
    return merge({"file": parse_dynamic(text, file)})


def errors_of(text: str, entry_points: dict[str, str] = ENTRY_POINTS) -> list[str]:
    _, errors = check_l4(merged(text), entry_points=entry_points)
    return [str(e) for e in errors]


def decode_error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        decode_l4(merged(text))
    return str(info.value)


# --- Traefik's own files load unchanged ---------------------------------------------


def test_traefik_documentation_examples_load_and_check_clean() -> None:
    """The TCP and UDP examples of Traefik v3's reference load unchanged and pass the checks."""
    l4, errors = check_l4(merged(TRAEFIK_DOCS), entry_points=DOCS_ENTRY_POINTS)
    assert errors == []
    assert l4 is not None
    router = l4.tcp.routers["my-tcp-router@file"]
    assert router.entry_points == ("tcp-ep", "websecure")
    assert router.priority == 10
    assert router.middlewares == ("tcp-ipallowlist@file",)
    assert router.service == "my-tcp-service@file"
    assert router.tls is not None and not router.tls.passthrough
    assert (router.tls.cert_resolver, router.tls.options) == ("letsencrypt", "modern-tls")
    assert router.tls.domains[0].sans == ("www.example.com",)
    passthrough = l4.tcp.routers["my-tls-router@file"].tls
    assert passthrough is not None and passthrough.passthrough
    assert l4.tcp.routers["my-router@file"].observability == {
        "metrics": False,
        "accessLogs": False,
        "tracing": False,
    }
    lb = l4.tcp.services["my-tcp-service@file"].load_balancer
    assert lb is not None
    assert [(s.address, s.tls, s.weight) for s in lb.servers] == [
        ("127.0.0.1:5432", False, 1),
        ("[::1]:5432", True, 1),
    ]
    assert lb.health_check == TCPHealthCheck(send="PING", expect="PONG", interval=10.0, timeout=3.0)
    assert lb.servers_transport == "mytransport@file"
    legacy = l4.tcp.services["service-1@file"].load_balancer
    assert legacy is not None
    assert legacy.proxy_protocol == ProxyProtocol(version=1)
    assert legacy.termination_delay == 200
    weighted = l4.tcp.services["app@file"].weighted
    assert weighted is not None
    assert [(m.name, m.weight) for m in weighted.services] == [("appv1@file", 3), ("appv2@file", 1)]
    assert l4.tcp.middlewares["tcp-ipallowlist@file"] == {
        "ipAllowList": {"sourceRange": ("127.0.0.1/32", "192.168.1.7")}
    }
    transport = l4.tcp.servers_transports["mytransport@file"]
    assert (transport.dial_timeout, transport.dial_keep_alive) == (30.0, 20.0)
    assert transport.termination_delay == pytest.approx(0.2)
    assert transport.proxy_protocol == ProxyProtocol(version=2)
    assert transport.tls is not None
    assert transport.tls.certificates == (
        ClientCertificate(cert_file="/path/to/cert1.pem"),
        ClientCertificate(cert_file="/path/to/cert2.pem"),
    )
    assert transport.tls.root_c_as == ("/path/to/rootca.pem",)
    assert transport.tls.peer_cert_u_r_i == "spiffe://example.org/peer"
    assert transport.tls.spiffe is not None and transport.tls.spiffe.trust_domain == "example.org"
    udp_router = l4.udp.routers["my-udp-router@file"]
    assert udp_router.entry_points == ("udp-ep", "dns")
    assert (udp_router.rule, udp_router.priority) == ("", 0)
    udp_lb = l4.udp.services["my-udp-service@file"].load_balancer
    assert udp_lb is not None and udp_lb.servers[0].address == "127.0.0.1:5353"
    udp_weighted = l4.udp.services["app@file"].weighted
    assert udp_weighted is not None and len(udp_weighted.services) == 2


def test_project_fixture_tcp_and_udp_sections_decode() -> None:
    """The shared Traefik fixture's tcp and udp sections decode and check clean."""
    l4, errors = check_l4(
        load_dynamic_paths([FIXTURE]), entry_points={"pg": "tcp", "dns": "udp", "web": "tcp"}
    )
    assert errors == []
    assert l4 is not None
    router = l4.tcp.routers["postgres"]
    assert router.tls is not None and router.tls.passthrough
    assert l4.udp.routers["dns"].service == "dns"


def test_no_tcp_or_udp_section_decodes_empty() -> None:
    """A configuration without tcp or udp decodes to empty sections."""
    assert decode_l4(DynamicConfig()) == L4Config()
    assert check_l4(DynamicConfig(), entry_points={}) == (L4Config(), [])


def test_defaults_follow_traefik_except_the_termination_delay() -> None:
    """Defaults are Traefik's, but no termination delay applies unless one is set."""
    l4 = decode_l4(
        merged(
            "tcp:\n"
            "  services:\n"
            "    s:\n"
            "      loadBalancer:\n"
            "        servers: [{address: '127.0.0.1:1'}]\n"
            "        healthCheck: {}\n"
            "  serversTransports:\n"
            "    t: {}\n"
        )
    )
    lb = l4.tcp.services["s@file"].load_balancer
    assert lb is not None
    assert lb.termination_delay is None and lb.proxy_protocol is None
    assert lb.health_check == TCPHealthCheck(interval=30.0, timeout=5.0, unhealthy_interval=0.0)
    assert l4.tcp.servers_transports["t@file"] == TCPServersTransport(
        dial_timeout=30.0, dial_keep_alive=15.0, termination_delay=None, proxy_protocol=None
    )


def test_keys_match_ignoring_case_as_in_traefik() -> None:
    """Keys spelled as some Traefik pages spell them (loadbalancer, rootcas) decode."""
    l4 = decode_l4(
        merged(
            "tcp:\n"
            "  services:\n"
            "    s:\n"
            "      loadbalancer:\n"
            "        servers: [{address: '127.0.0.1:1'}]\n"
            "        healthcheck: {send: x}\n"
            "  serverstransports:\n"
            "    t: {tls: {rootcas: [ca.pem]}}\n"
        )
    )
    lb = l4.tcp.services["s@file"].load_balancer
    assert lb is not None and lb.health_check is not None and lb.health_check.send == "x"
    tls = l4.tcp.servers_transports["t@file"].tls
    assert tls is not None and tls.root_c_as == ("ca.pem",)


def test_decoded_sections_are_frozen() -> None:
    """Decoded sections are immutable snapshots; equal input decodes equal."""
    l4 = decode_l4(merged(TRAEFIK_DOCS))
    assert l4 == decode_l4(merged(TRAEFIK_DOCS))
    with pytest.raises(AttributeError):
        l4.tcp.routers["my-tcp-router@file"].rule = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        l4.tcp.routers["x"] = l4.tcp.routers["my-tcp-router@file"]  # type: ignore[index]


# --- Decoding errors name file, line and key path ------------------------------------

DECODE_ERRORS: list[tuple[str, str, str]] = [
    (
        "tcp:\n  routers:\n    db:\n      rule: HostSNI(`*`)\n      servce: pg\n",
        'l4.yaml:5: tcp.routers.db@file: unknown key "servce" (did you mean "service"?)',
        "unknown-key",
    ),
    (
        "tcp:\n  routers:\n    db:\n      rule: HostSNI(`*`)\n",
        'l4.yaml:3: tcp.routers.db@file: missing required key "service"',
        "missing-service",
    ),
    (
        "tcp:\n  routers:\n    db:\n      service: pg\n",
        'l4.yaml:3: tcp.routers.db@file: missing required key "rule"',
        "missing-rule",
    ),
    (
        "tcp:\n  routers:\n    db:\n      rule: HostSNI(`*`)\n      service: pg\n"
        "      priority: high\n",
        'l4.yaml:6: tcp.routers.db@file.priority: expected an integer, got "high"',
        "priority-not-an-integer",
    ),
    (
        "tcp:\n  services:\n    pg:\n      loadBalancer:\n        servers: []\n"
        "      weighted:\n        services: []\n",
        'l4.yaml:3: tcp.services.pg@file: only one of "loadBalancer", "weighted" may be set, '
        "got loadBalancer and weighted",
        "load-balancer-and-weighted",
    ),
    (
        "tcp:\n  services:\n    pg: {}\n",
        'l4.yaml:3: tcp.services.pg@file: expected one of "loadBalancer", "weighted"',
        "service-of-no-kind",
    ),
    (
        "tcp:\n  services:\n    pg:\n      loadBalancer:\n        servers:\n"
        "          - weight: 2\n",
        'l4.yaml:6: tcp.services.pg@file.loadBalancer.servers[0]: missing required key "address"',
        "server-without-address",
    ),
    (
        "tcp:\n  serversTransports:\n    t:\n      dialTimeout: soon\n",
        'l4.yaml:4: tcp.serversTransports.t@file.dialTimeout: expected a duration like "10s", '
        '"1m30s" or "250ms" (or seconds), got "soon"',
        "bad-duration",
    ),
    (
        "tcp:\n  routers: {}\n  service: {}\n",
        'l4.yaml:3: tcp: unknown key "service" (did you mean "services"?)',
        "unknown-section",
    ),
    (
        "udp:\n  routers:\n    dns:\n      service: dns\n      tls: {}\n",
        'l4.yaml:5: udp.routers.dns@file: unknown key "tls"',
        "udp-router-has-no-tls",
    ),
    (
        "udp:\n  serversTransports:\n    t: {}\n",
        'l4.yaml:2: udp: unknown key "serversTransports"',
        "udp-has-no-servers-transports",
    ),
]


@pytest.mark.parametrize(
    ("text", "message"), [c[:2] for c in DECODE_ERRORS], ids=[c[2] for c in DECODE_ERRORS]
)
def test_decoding_errors_name_file_line_and_key_path(text: str, message: str) -> None:
    """A shape error names the file, the line and the qualified key path."""
    assert decode_error(text) == message


def test_decoding_error_reports_once_through_check_l4() -> None:
    """check_l4 returns a decoding error as its only problem, with nothing decoded."""
    l4, errors = check_l4(
        merged("tcp:\n  routers:\n    db:\n      rule: x\n"), entry_points=ENTRY_POINTS
    )
    assert l4 is None
    assert [str(e) for e in errors] == [
        'l4.yaml:3: tcp.routers.db@file: missing required key "service"'
    ]


def test_unmerged_configuration_keeps_plain_names() -> None:
    """Before merging, names and key paths are as the file wrote them."""
    config = parse_dynamic("tcp:\n  routers:\n    db:\n      rule: HostSNI(`*`)\n", "f.yaml")
    with pytest.raises(ConfigError) as info:
        decode_l4(config)
    assert str(info.value) == 'f.yaml:3: tcp.routers.db: missing required key "service"'


# --- Cross-reference and range checks ------------------------------------------------

TCP_BASE = """\
tcp:
  routers:
    db:
      entryPoints: [pg]
      rule: HostSNI(`*`)
      service: pg
  services:
    pg:
      loadBalancer:
        servers:
          - address: 127.0.0.1:5432
"""


def tcp_with(**lines: str) -> str:
    """TCP_BASE with whole lines replaced: {"5": "      rule: ..."} (1-based)."""
    out = TCP_BASE.splitlines()
    for number, line in lines.items():
        out[int(number.removeprefix("l")) - 1] = line
    return "\n".join(out) + "\n"


def test_tcp_base_is_valid() -> None:
    """The base configuration the error cases start from has no problem."""
    assert errors_of(TCP_BASE) == []


CHECK_ERRORS: list[tuple[str, str, str]] = [
    (
        tcp_with(l6="      service: pgg"),
        'l4.yaml:6: tcp.routers.db@file.service: unknown tcp service "pgg@file" '
        '(did you mean "pg@file"?)',
        "unknown-service",
    ),
    (
        tcp_with(l4="      entryPoints: [pgg]"),
        'l4.yaml:4: tcp.routers.db@file.entryPoints[0]: unknown entry point "pgg" '
        '(did you mean "pg"?)',
        "unknown-entry-point",
    ),
    (
        tcp_with(l4="      entryPoints: [dns]"),
        'l4.yaml:4: tcp.routers.db@file.entryPoints[0]: entry point "dns" is UDP; '
        "TCP routers need a TCP entry point",
        "udp-entry-point-on-tcp-router",
    ),
    (
        tcp_with(l4="      middlewares: [lan]"),
        'l4.yaml:4: tcp.routers.db@file.middlewares[0]: unknown tcp middleware "lan@file"',
        "unknown-middleware",
    ),
    (
        tcp_with(l5="      rule: HostSNI(`*`) && Path(`/`)"),
        "l4.yaml:5: tcp.routers.db@file.rule: column 17: unknown matcher 'Path'",
        "bad-rule-column",
    ),
    (
        tcp_with(l5="      rule: HostSNI(`db.example`)"),
        "l4.yaml:5: tcp.routers.db@file.rule: HostSNI(`db.example`) needs TLS on the router "
        "(tls: {} to terminate, tls.passthrough: true to pass it through); "
        "only HostSNI(`*`) matches plain TCP",
        "host-sni-without-tls",
    ),
    (
        tcp_with(l4="      ruleSyntax: v2"),
        'l4.yaml:4: tcp.routers.db@file.ruleSyntax: unsupported rule syntax "v2": '
        "write the rule in v3 syntax",
        "rule-syntax-v2",
    ),
    (
        tcp_with(l4="      tls: {options: modrn}"),
        'l4.yaml:4: tcp.routers.db@file.tls.options: unknown TLS options "modrn"',
        "unknown-tls-options",
    ),
    (
        tcp_with(l10="        servers: []", l11=""),
        "l4.yaml:10: tcp.services.pg@file.loadBalancer.servers: "
        "no servers: add at least one server address",
        "no-servers",
    ),
    (
        tcp_with(l11="          - address: 127.0.0.1"),
        "l4.yaml:11: tcp.services.pg@file.loadBalancer.servers[0].address: invalid address "
        '"127.0.0.1": expected host:port',
        "address-without-port",
    ),
    (
        tcp_with(l11="          - address: '::1:5432'"),
        "l4.yaml:11: tcp.services.pg@file.loadBalancer.servers[0].address: invalid address "
        '"::1:5432": an IPv6 address is written in brackets: [2001:db8::1]:port',
        "ipv6-without-brackets",
    ),
    (
        tcp_with(l11="          - address: 127.0.0.1:70000"),
        "l4.yaml:11: tcp.services.pg@file.loadBalancer.servers[0].address: invalid address "
        "\"127.0.0.1:70000\": port '70000' is not a number from 1 to 65535",
        "port-out-of-range",
    ),
    (
        tcp_with(l11="          - {address: 127.0.0.1:5432, weight: -1}"),
        "l4.yaml:11: tcp.services.pg@file.loadBalancer.servers[0].weight: must be >= 0, got -1",
        "negative-weight",
    ),
    (
        tcp_with(l10="        serversTransport: tt", l11="        servers: [{address: 'a:1'}]"),
        "l4.yaml:10: tcp.services.pg@file.loadBalancer.serversTransport: unknown "
        'serversTransport "tt@file"',
        "unknown-servers-transport",
    ),
    (
        tcp_with(
            l10="        proxyProtocol: {version: 3}", l11="        servers: [{address: 'a:1'}]"
        ),
        "l4.yaml:10: tcp.services.pg@file.loadBalancer.proxyProtocol.version: "
        "PROXY protocol version must be 1 or 2, got 3",
        "proxy-protocol-version",
    ),
    (
        tcp_with(
            l10="        healthCheck: {interval: 0s}", l11="        servers: [{address: 'a:1'}]"
        ),
        "l4.yaml:10: tcp.services.pg@file.loadBalancer.healthCheck.interval: must be > 0, got 0s",
        "health-check-interval",
    ),
    (
        tcp_with(
            l10="        healthCheck: {port: 70000}", l11="        servers: [{address: 'a:1'}]"
        ),
        "l4.yaml:10: tcp.services.pg@file.loadBalancer.healthCheck.port: "
        "must be a port from 1 to 65535 (or 0), got 70000",
        "health-check-port",
    ),
    (
        TCP_BASE + "  serversTransports:\n    t: {proxyProtocol: {version: 0}}\n",
        "l4.yaml:13: tcp.serversTransports.t@file.proxyProtocol.version: "
        "PROXY protocol version must be 1 or 2, got 0",
        "transport-proxy-protocol-version",
    ),
    (
        TCP_BASE + "    split:\n      weighted:\n        services: [{name: pgg}]\n",
        "l4.yaml:14: tcp.services.split@file.weighted.services[0].name: unknown service "
        '"pgg@file" (did you mean "pg@file"?)',
        "unknown-weighted-member",
    ),
    (
        TCP_BASE + "    split:\n      weighted:\n        services: []\n",
        "l4.yaml:14: tcp.services.split@file.weighted.services: "
        "no services: add at least one name and weight",
        "weighted-without-members",
    ),
    (
        TCP_BASE
        + "    a:\n      weighted:\n        services: [{name: b}]\n"
        + "    b:\n      weighted:\n        services: [{name: a}]\n",
        "l4.yaml:14: tcp.services.a@file.weighted.services: "
        "services form a cycle: a@file -> b@file -> a@file",
        "weighted-cycle",
    ),
]


@pytest.mark.parametrize(
    ("text", "message"), [c[:2] for c in CHECK_ERRORS], ids=[c[2] for c in CHECK_ERRORS]
)
def test_tcp_check_errors_name_file_line_and_key_path(text: str, message: str) -> None:
    """Each TCP cross-reference or range problem is reported at its file, line and key path."""
    assert errors_of(text) == [message]


UDP_BASE = """\
udp:
  routers:
    dns:
      entryPoints: [dns]
      service: dns
  services:
    dns:
      loadBalancer:
        servers:
          - address: 127.0.0.1:5353
"""


def udp_with(**lines: str) -> str:
    """UDP_BASE with whole lines replaced, as tcp_with does."""
    out = UDP_BASE.splitlines()
    for number, line in lines.items():
        out[int(number.removeprefix("l")) - 1] = line
    return "\n".join(out) + "\n"


def test_udp_base_is_valid() -> None:
    """The UDP base configuration has no problem."""
    assert errors_of(UDP_BASE) == []


UDP_ERRORS: list[tuple[str, str, str]] = [
    (
        udp_with(l5="      service: dsn"),
        'l4.yaml:5: udp.routers.dns@file.service: unknown udp service "dsn@file" '
        '(did you mean "dns@file"?)',
        "unknown-service",
    ),
    (
        udp_with(l4="      entryPoints: [web]"),
        'l4.yaml:4: udp.routers.dns@file.entryPoints[0]: entry point "web" is TCP; '
        'UDP routers need a UDP entry point (an address ending in "/udp")',
        "tcp-entry-point-on-udp-router",
    ),
    (
        udp_with(l4="      rule: HostSNI(`a.example`)"),
        "l4.yaml:4: udp.routers.dns@file.rule: column 1: unknown matcher 'HostSNI'; "
        "UDP rules know only ClientIP",
        "tcp-matcher-in-udp-rule",
    ),
    (
        udp_with(l4="      middlewares: [limit]"),
        'l4.yaml:4: udp.routers.dns@file.middlewares[0]: unknown udp middleware "limit@file"',
        "unknown-middleware",
    ),
    (
        udp_with(l10="          - address: localhost"),
        "l4.yaml:10: udp.services.dns@file.loadBalancer.servers[0].address: invalid address "
        '"localhost": expected host:port',
        "address-without-port",
    ),
    (
        # Two routers taking every datagram of one entry point: Traefik picks one at random.
        "udp:\n"
        "  routers:\n"
        "    dns:\n"
        "      service: dns\n"
        "    other:\n"
        "      entryPoints: [dns]\n"
        "      service: dns\n"
        "  services:\n"
        "    dns:\n"
        "      loadBalancer: {servers: [{address: '127.0.0.1:53'}]}\n",
        'l4.yaml:5: udp.routers.other@file: takes the same datagrams as udp router "dns@file" '
        'on entry point "dns" (same rule and priority): give one a ClientIP rule '
        "or a higher priority",
        "routers-tie-on-an-entry-point",
    ),
]


@pytest.mark.parametrize(
    ("text", "message"), [c[:2] for c in UDP_ERRORS], ids=[c[2] for c in UDP_ERRORS]
)
def test_udp_check_errors_name_file_line_and_key_path(text: str, message: str) -> None:
    """Each UDP cross-reference or range problem is reported at its file, line and key path."""
    assert errors_of(text) == [message]


def test_udp_routers_split_by_client_ip_or_priority_do_not_tie() -> None:
    """Routers on one UDP entry point are fine when a rule or a priority tells them apart."""
    text = (
        "udp:\n"
        "  routers:\n"
        "    lan:\n"
        "      rule: ClientIP(`127.0.0.0/8`)\n"
        "      service: dns\n"
        "    rest:\n"
        "      service: dns\n"
        "    backup:\n"
        "      service: dns\n"
        "      priority: 5\n"
        "  services:\n"
        "    dns:\n"
        "      loadBalancer: {servers: [{address: '127.0.0.1:53'}]}\n"
    )
    assert errors_of(text) == []


def test_every_problem_is_reported_not_only_the_first() -> None:
    """All problems come back at once, each at its own line."""
    text = tcp_with(l4="      entryPoints: [nowhere]", l6="      service: unrelated-database")
    assert errors_of(text) == [
        'l4.yaml:6: tcp.routers.db@file.service: unknown tcp service "unrelated-database@file"',
        'l4.yaml:4: tcp.routers.db@file.entryPoints[0]: unknown entry point "nowhere"',
    ]


def test_tls_router_with_host_sni_and_default_transport_pass() -> None:
    """A HostSNI router with TLS, the default TLS options and default@internal are accepted."""
    text = tcp_with(
        l4="      tls: {passthrough: true, options: default}",
        l5="      rule: HostSNI(`db.example`) || HostSNIRegexp(`^x`)",
        l10="        serversTransport: default@internal",
        l11="        servers: [{address: 'db.internal:5432'}]",
    )
    assert errors_of(text) == []


def test_origin_found_when_the_file_spells_keys_in_lower_case() -> None:
    """A key written in another case still locates its error on the right line."""
    text = tcp_with(
        l9="      loadbalancer:",
        l11="          - address: nowhere",
    )
    assert errors_of(text) == [
        "l4.yaml:11: tcp.services.pg@file.loadBalancer.servers[0].address: invalid address "
        '"nowhere": expected host:port'
    ]


# --- Server addresses --------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:5432", ("127.0.0.1", 5432)),
        ("[::1]:53", ("::1", 53)),
        ("[2001:db8::1]:443", ("2001:db8::1", 443)),
        ("db.internal:5432", ("db.internal", 5432)),
        ("my_host:1", ("my_host", 1)),
    ],
    ids=["ipv4", "ipv6-loopback", "ipv6", "name", "underscore"],
)
def test_server_addresses_parse(address: str, expected: tuple[str, int]) -> None:
    """host:port addresses, IPv6 in brackets, give host and port."""
    assert parse_server_address(address) == expected


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("", "expected host:port"),
        (":5432", "no host"),
        ("127.0.0.1:", "port '' is not a number from 1 to 65535"),
        ("127.0.0.1:0", "port '0' is not a number from 1 to 65535"),
        ("xx.xx.xx.xx:xx", "port 'xx' is not a number from 1 to 65535"),
        ("private-ip-server-1:8080/", "port '8080/' is not a number from 1 to 65535"),
        ("[::1:53", "unbalanced brackets"),
        ("[db]:53", "'db' in brackets is not an IPv6 address"),
        ("a b:53", "'a b' is not a host name or address"),
        ("tcp://a:53", "an IPv6 address is written in brackets: [2001:db8::1]:port"),
    ],
    ids=[
        "empty",
        "no-host",
        "no-port",
        "port-zero",
        "doc-placeholder",
        "trailing-slash",
        "unbalanced",
        "name-in-brackets",
        "space",
        "url",
    ],
)
def test_bad_server_addresses_say_why(address: str, reason: str) -> None:
    """A bad server address raises ValueError with the reason."""
    with pytest.raises(ValueError) as info:
        parse_server_address(address)
    assert str(info.value) == reason


# --- The transport a load balancer dials with ----------------------------------------


def test_effective_transport_follows_traefik() -> None:
    """A named serversTransport wins; else the load balancer's deprecated fields apply."""
    l4 = decode_l4(merged(TRAEFIK_DOCS))
    transports = l4.tcp.servers_transports
    named = l4.tcp.services["my-tcp-service@file"].load_balancer
    legacy = l4.tcp.services["service-1@file"].load_balancer
    plain = l4.tcp.services["appv1@file"].load_balancer
    assert named is not None and legacy is not None and plain is not None
    assert effective_transport(named, transports) is transports["mytransport@file"]
    resolved = effective_transport(legacy, transports)
    assert resolved.proxy_protocol == ProxyProtocol(version=1)
    assert resolved.termination_delay == pytest.approx(0.2)
    assert effective_transport(plain, transports) == TCPServersTransport()
    assert effective_transport(plain, transports).termination_delay is None
