"""Dynamic configuration: routers, services, middlewares and TLS material.

The shape and key names are Traefik v3's file-provider dialect, so an existing
Traefik dynamic file loads unchanged. A ``DynamicConfig`` is one immutable
snapshot: providers yield them, the app merges them (qualifying names as
``name@provider``) and the runtime compiles them.

Middleware options stay raw here (``MiddlewareConfig.options``): their schema
belongs to each middleware type in ``middleware/``, which validates them when
the runtime builds the chain; ``origin`` lets those errors name file and line.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from gateway.config.errors import Origin
from gateway.config.model import Duration, empty_map, frozen_map, key, model

field = dataclasses.field

# --- HTTP services -----------------------------------------------------------


@model
class Server:
    REQUIRED = ("url",)

    url: str = ""
    weight: int = 1
    preserve_path: bool = False


@model
class HealthCheck:
    scheme: str = ""
    mode: str = "http"
    path: str = "/"
    method: str = "GET"
    status: int = 0  # 0: any 2xx or 3xx is healthy, as in Traefik
    port: int = 0
    interval: Duration = 30.0
    unhealthy_interval: Duration = 0.0
    timeout: Duration = 5.0
    hostname: str = ""
    follow_redirects: bool = True
    headers: Mapping[str, str] = empty_map()


@model
class Cookie:
    name: str = ""
    secure: bool = False
    http_only: bool = False
    same_site: str = ""
    max_age: int = 0
    path: str = "/"
    domain: str = ""


@model
class Sticky:
    cookie: Cookie | None = None


@model
class ResponseForwarding:
    flush_interval: Duration = 0.1


@model
class PassiveHealthCheck:
    """Traefik v3.4's passive checks: failures within a window take a server out."""

    failure_window: Duration = 10.0
    max_failed_attempts: int = 1


@model
class ServersLoadBalancer:
    servers: tuple[Server, ...] = ()
    strategy: str = "wrr"
    sticky: Sticky | None = None
    health_check: HealthCheck | None = None
    passive_health_check: PassiveHealthCheck | None = None
    pass_host_header: bool = True
    response_forwarding: ResponseForwarding = ResponseForwarding()
    servers_transport: str = ""


@model
class WRRService:
    REQUIRED = ("name",)

    name: str = ""
    weight: int = 1
    # Sluice addition (HTTP only): middlewares for the requests this member
    # takes, after the router's own (Gateway API backendRef filters).
    middlewares: tuple[str, ...] = ()


@model
class WeightedService:
    services: tuple[WRRService, ...] = ()
    sticky: Sticky | None = None
    health_check: Mapping[str, Any] | None = None


@model
class FailoverService:
    """Send to ``service`` while it has an available server, else to ``fallback``."""

    REQUIRED = ("service", "fallback")

    service: str = ""
    fallback: str = ""
    health_check: Mapping[str, Any] | None = None


@model
class StatusService:
    """Sluice addition: a service that answers every request with ``code`` itself.

    The Gateway API translation uses it for a rule's share of traffic that
    has no usable backend (the spec's 500).
    """

    code: int = 500


@model
class HTTPService:
    ONE_OF = ("load_balancer", "weighted", "failover", "status")

    load_balancer: ServersLoadBalancer | None = None
    weighted: WeightedService | None = None
    failover: FailoverService | None = None
    status: StatusService | None = None


# --- HTTP routers and middlewares --------------------------------------------


@model
class Domain:
    main: str = ""
    sans: tuple[str, ...] = ()


@model
class RouterTLS:
    options: str = ""
    cert_resolver: str = ""
    domains: tuple[Domain, ...] = ()


@model
class HTTPRouter:
    REQUIRED = ("rule", "service")

    rule: str = ""
    rule_syntax: str = ""
    priority: int = 0  # 0: the length of the rule, as in Traefik
    entry_points: tuple[str, ...] = ()  # empty: every HTTP entry point
    middlewares: tuple[str, ...] = ()
    service: str = ""
    tls: RouterTLS | None = None
    observability: Mapping[str, Any] | None = None


@model
class MiddlewareConfig:
    """One named middleware: its type key (``basicAuth``) and raw options."""

    kind: str
    options: Mapping[str, Any] = empty_map()
    origin: Origin | None = None


@model
class ForwardingTimeouts:
    dial_timeout: Duration = 30.0
    response_header_timeout: Duration = 0.0
    idle_conn_timeout: Duration = 90.0


@model
class ServersTransport:
    server_name: str = ""
    insecure_skip_verify: bool = False
    root_c_as: tuple[str, ...] = key("rootCAs", ())
    max_idle_conns_per_host: int = 200
    forwarding_timeouts: ForwardingTimeouts = ForwardingTimeouts()
    # Sluice speaks HTTP/1.1 to servers, so HTTP/2 is always "disabled".
    disable_h_t_t_p2: bool = key("disableHTTP2", False)


@model
class HTTPConfig:
    routers: Mapping[str, HTTPRouter] = empty_map()
    services: Mapping[str, HTTPService] = empty_map()
    middlewares: Mapping[str, MiddlewareConfig] = empty_map()
    servers_transports: Mapping[str, ServersTransport] = empty_map()


# --- TLS ---------------------------------------------------------------------


@model
class Certificate:
    REQUIRED = ("cert_file", "key_file")

    cert_file: str = ""
    key_file: str = ""
    stores: tuple[str, ...] = ()


@model
class ClientAuth:
    ca_files: tuple[str, ...] = ()
    client_auth_type: str = "NoClientCert"


@model
class TLSOptions:
    min_version: str = "VersionTLS12"
    max_version: str = ""
    cipher_suites: tuple[str, ...] = ()
    curve_preferences: tuple[str, ...] = ()
    client_auth: ClientAuth | None = None
    sni_strict: bool = False
    # Deprecated in Traefik and without effect there; accepted so old files load.
    prefer_server_cipher_suites: bool = False
    alpn_protocols: tuple[str, ...] = key("alpnProtocols", ("h2", "http/1.1"))


@model
class DefaultCertificate:
    cert_file: str = ""
    key_file: str = ""


@model
class TLSStore:
    default_certificate: DefaultCertificate | None = None


@model
class TLSConfig:
    certificates: tuple[Certificate, ...] = ()
    options: Mapping[str, TLSOptions] = empty_map()
    stores: Mapping[str, TLSStore] = empty_map()


# --- The snapshot ------------------------------------------------------------


@model
class DynamicConfig:
    http: HTTPConfig = HTTPConfig()
    tls: TLSConfig = TLSConfig()
    # tcp and udp arrive with the L4 issue; they are accepted here so that a
    # Traefik file using them still loads.
    tcp: Mapping[str, Any] | None = None
    udp: Mapping[str, Any] | None = None
    # Sluice addition: entry points that come and go with the configuration
    # (Gateway API listeners; a file may declare them too). Raw, in the static
    # schema (``gateway.config.static.EntryPoint``); names are global, not
    # qualified by provider, and may not repeat a static entry point's.
    entry_points: Mapping[str, Any] | None = None
    # Where each object was defined, by dotted key path ("http.routers.api",
    # "http.routers.api.service"). Left out of ==, so moving lines around is
    # not a configuration change.
    origins: Mapping[str, Origin] = field(default_factory=frozen_map, compare=False)
