"""Static configuration: what the process needs before it serves anything.

Key names follow Traefik v3's static configuration (``entryPoints``,
``providers``, ``api``, ``metrics``, ``accessLog``, ``log``,
``serversTransport``). Sluice additions are marked as such; they sit where a
Traefik user would look for them. Defaults are Traefik's unless a comment says
why Sluice differs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from gateway.config.dynamic import ServersTransport
from gateway.config.model import Duration, empty_map, key, model

EntryPointProtocol = Literal["tcp", "udp"]


@model
class LifeCycle:
    request_accept_grace_timeout: Duration = 0.0
    grace_time_out: Duration = key("graceTimeOut", 10.0)


@model
class RespondingTimeouts:
    # Traefik's readTimeout bounds reading a whole request (60s default).
    read_timeout: Duration = 60.0
    write_timeout: Duration = 0.0
    idle_timeout: Duration = 180.0
    # Sluice addition: the time a client has to send a complete request head.
    # Go's ReadHeaderTimeout; the slowloris defence Traefik leaves to readTimeout.
    read_header_timeout: Duration = 10.0


@model
class EntryPointTransport:
    life_cycle: LifeCycle = LifeCycle()
    responding_timeouts: RespondingTimeouts = RespondingTimeouts()
    keep_alive_max_requests: int = 0
    keep_alive_max_time: Duration = 0.0


@model
class ForwardedHeaders:
    trusted_i_ps: tuple[str, ...] = key("trustedIPs", ())
    insecure: bool = False


@model
class EntryPointDomain:
    main: str = ""
    sans: tuple[str, ...] = ()


@model
class EntryPointTLS:
    """Traefik's ``entryPoints.<name>.http.tls``: TLS for every router on it."""

    options: str = ""
    cert_resolver: str = ""
    domains: tuple[EntryPointDomain, ...] = ()


@model
class EntryPointHTTP:
    middlewares: tuple[str, ...] = ()
    tls: EntryPointTLS | None = None
    # Largest request head (request line + headers) accepted, in bytes.
    max_header_bytes: int = 32768


@model
class EntryPointUDP:
    """Traefik's ``entryPoints.<name>.udp``: a session ends after this long without a datagram."""

    timeout: Duration = 3.0


@model
class EntryPointTCP:
    """Sluice addition: TCP-router connections on this entry point.

    A relayed connection with no byte either way for ``idleTimeout`` is
    closed; 0 (the default, as in Traefik) never closes an idle one, so
    quiet database or SSH sessions stay up.
    """

    idle_timeout: Duration = 0.0


@model
class EntryPoint:
    """One listening address; Traefik's ``:8000/tcp`` and ``:5353/udp`` suffixes name its protocol.

    ``address`` keeps meaning ``[host]:port`` for every TCP entry point: a
    ``/tcp`` suffix (the default protocol) is dropped on construction. A UDP
    entry point keeps its ``/udp`` suffix in ``address``, so the protocol
    survives ``dataclasses.replace`` and no TCP binder can open it by mistake;
    ``listen_address`` is the ``[host]:port`` part for either. Any other
    suffix stays as written, and the address check reports it.
    """

    REQUIRED = ("address",)

    address: str = ""
    transport: EntryPointTransport = EntryPointTransport()
    forwarded_headers: ForwardedHeaders = ForwardedHeaders()
    proxy_protocol: ForwardedHeaders = ForwardedHeaders()
    http: EntryPointHTTP = EntryPointHTTP()
    udp: EntryPointUDP = EntryPointUDP()
    tcp: EntryPointTCP = EntryPointTCP()
    reuse_port: bool = False

    def __post_init__(self) -> None:
        host_port, protocol = split_address(self.address)
        if protocol == "tcp":
            object.__setattr__(self, "address", host_port)
        elif protocol == "udp":
            object.__setattr__(self, "address", f"{host_port}/udp")

    @property
    def protocol(self) -> EntryPointProtocol:
        """``"udp"`` for a ``/udp`` address, else ``"tcp"`` (Traefik's default)."""
        return "udp" if self.address.endswith("/udp") else "tcp"

    @property
    def listen_address(self) -> str:
        """``[host]:port`` to bind, without the protocol suffix."""
        return self.address.removesuffix("/udp")


def split_address(address: str) -> tuple[str, str]:
    """``(host:port, protocol)`` as Traefik's ``GetAddress``/``GetProtocol`` read it.

    The protocol follows the first ``/``, ignoring case, and is ``"tcp"`` when
    there is none. It is returned lower-cased and may be neither tcp nor udp;
    callers that bind report that.
    """
    host_port, sep, protocol = address.partition("/")
    return host_port, protocol.lower() if sep else "tcp"


@model
class FileProviderConfig:
    filename: str = ""
    directory: str = ""
    watch: bool = True


@model
class KubernetesProviderConfig:
    """Sluice's Kubernetes provider (Gateway API objects, Services, EndpointSlices, Secrets).

    Credentials are found as the client's own tools find them: in-cluster
    service account, else ``kubeconfig``, ``$KUBECONFIG`` or ``~/.kube/config``.
    """

    kubeconfig: str = ""
    namespaces: tuple[str, ...] = ()  # empty: every namespace
    # Several replicas: one leader writes status (Lease in this namespace).
    lease_namespace: str = ""
    lease_name: str = "sluice-gateway-controller"
    lease_duration: Duration = 15.0
    # Where Gateways without spec.addresses listen ("": every interface).
    default_address: str = ""


@model
class GatewayAPIFileConfig:
    """Sluice addition: Gateway API manifests read by the file provider."""

    # Where Gateways without spec.addresses listen ("": every interface).
    default_address: str = ""


@model
class Providers:
    providers_throttle_duration: Duration = 2.0
    file: FileProviderConfig | None = None
    kubernetes: KubernetesProviderConfig | None = None
    gateway_a_p_i: GatewayAPIFileConfig = key("gatewayAPI", GatewayAPIFileConfig())


@model
class API:
    # Sluice addition: the API and dashboard listen on their own address,
    # loopback by default, instead of Traefik's "traefik" entry point.
    address: str = "127.0.0.1:9000"
    dashboard: bool = True
    insecure: bool = False
    debug: bool = False


@model
class Prometheus:
    buckets: tuple[float, ...] = (0.1, 0.3, 1.2, 5.0)
    add_entry_points_labels: bool = True
    add_routers_labels: bool = False
    add_services_labels: bool = True
    # Sluice addition: also serve /metrics on this address (the API serves it always).
    address: str = ""


@model
class Metrics:
    prometheus: Prometheus | None = None


@model
class AccessLog:
    file_path: str = ""
    format: str = "common"  # "common" or "json"
    buffering_size: int = 0


@model
class Log:
    level: str = "INFO"
    file_path: str = ""
    format: str = "common"


@model
class StaticConfig:
    entry_points: Mapping[str, EntryPoint] = empty_map()
    providers: Providers = Providers()
    api: API | None = None
    metrics: Metrics = Metrics()
    access_log: AccessLog | None = None
    log: Log = Log()
    servers_transport: ServersTransport = ServersTransport()
