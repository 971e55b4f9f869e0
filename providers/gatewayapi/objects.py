"""The Kubernetes objects the Gateway API translator reads, as typed, defaulted values.

Only the fields Sluice uses are kept; every API version a kind is served in
(``v1``, ``v1beta1``, ``v1alpha2``, ``v1alpha3``) is normalised to the ``v1``
shape, and the defaults the API server would apply (``+kubebuilder:default``)
are filled in, so file mode and Kubernetes mode translate the same values.
Parsing from plain mappings is ``providers.gatewayapi.parse``'s job.

Reference: /work/notes/gatewayapi-spec.md §1 (fields, defaults, versions).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway.config.errors import Origin

GROUP = "gateway.networking.k8s.io"
CONTROLLER = "sluice.dev/gateway-controller"
SLUICE_GROUP = "sluice.dev"


@dataclass(frozen=True, slots=True)
class Meta:
    """``metadata``; ``generation`` and ``created`` are synthesised in file mode."""

    name: str
    namespace: str = ""  # "" for cluster-scoped kinds
    generation: int = 1
    created: str = ""  # RFC 3339 creationTimestamp; sorts chronologically as text
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    uid: str = ""
    resource_version: str = ""
    origin: Origin | None = None  # where the object was written (file mode)


# --- references ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ParentRef:
    name: str
    namespace: str  # defaulted to the route's namespace
    group: str = GROUP
    kind: str = "Gateway"
    section_name: str = ""
    port: int = 0  # 0: not set


@dataclass(frozen=True, slots=True)
class BackendRef:
    name: str
    namespace: str  # defaulted to the referring object's namespace
    port: int = 0  # the Service port; 0: not set (an error for a Service)
    group: str = ""
    kind: str = "Service"
    weight: int = 1
    filters: tuple[HTTPFilter, ...] = ()  # HTTPRoute backendRefs only


@dataclass(frozen=True, slots=True)
class SecretRef:
    name: str
    namespace: str
    group: str = ""
    kind: str = "Secret"


@dataclass(frozen=True, slots=True)
class LabelSelector:
    match_labels: Mapping[str, str] = field(default_factory=dict)
    # (key, operator In|NotIn|Exists|DoesNotExist, values)
    match_expressions: tuple[tuple[str, str, tuple[str, ...]], ...] = ()


# --- GatewayClass and Gateway ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GatewayClass:
    meta: Meta
    controller_name: str
    has_parameters_ref: bool = False


@dataclass(frozen=True, slots=True)
class RouteKind:
    kind: str
    group: str = GROUP


@dataclass(frozen=True, slots=True)
class Listener:
    name: str
    port: int
    protocol: str  # HTTP, HTTPS, TLS, TCP, UDP, or an unsupported "domain/Name"
    hostname: str = ""  # "" = every host
    tls_mode: str = "Terminate"  # or Passthrough; meaningful for HTTPS and TLS
    certificate_refs: tuple[SecretRef, ...] = ()
    tls_options: Mapping[str, str] = field(default_factory=dict)
    namespaces_from: str = "Same"  # Same | All | Selector
    namespace_selector: LabelSelector | None = None
    kinds: tuple[RouteKind, ...] = ()  # empty: derived from the protocol


@dataclass(frozen=True, slots=True)
class GatewayAddress:
    value: str
    type: str = "IPAddress"


@dataclass(frozen=True, slots=True)
class Gateway:
    meta: Meta
    class_name: str
    listeners: tuple[Listener, ...]
    addresses: tuple[GatewayAddress, ...] = ()
    has_infrastructure_parameters_ref: bool = False


# --- HTTPRoute ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PathMatch:
    type: str = "PathPrefix"  # Exact | PathPrefix | RegularExpression
    value: str = "/"


@dataclass(frozen=True, slots=True)
class ValueMatch:
    """A header or query-parameter match."""

    name: str
    value: str
    type: str = "Exact"  # or RegularExpression


@dataclass(frozen=True, slots=True)
class HTTPMatch:
    path: PathMatch = PathMatch()
    headers: tuple[ValueMatch, ...] = ()
    query_params: tuple[ValueMatch, ...] = ()
    method: str = ""


@dataclass(frozen=True, slots=True)
class HeaderModifier:
    set: tuple[tuple[str, str], ...] = ()
    add: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PathModifier:
    type: str  # ReplaceFullPath | ReplacePrefixMatch
    value: str


@dataclass(frozen=True, slots=True)
class Redirect:
    scheme: str = ""
    hostname: str = ""
    path: PathModifier | None = None
    port: int = 0
    status_code: int = 302


@dataclass(frozen=True, slots=True)
class Rewrite:
    hostname: str = ""
    path: PathModifier | None = None


@dataclass(frozen=True, slots=True)
class Mirror:
    backend: BackendRef
    numerator: int = 100  # percent, or fraction numerator/denominator
    denominator: int = 100


@dataclass(frozen=True, slots=True)
class CORS:
    allow_origins: tuple[str, ...] = ()
    allow_credentials: bool = False
    allow_methods: tuple[str, ...] = ()
    allow_headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    max_age: int = 5


@dataclass(frozen=True, slots=True)
class ExtensionRef:
    group: str
    kind: str
    name: str


@dataclass(frozen=True, slots=True)
class HTTPFilter:
    """One filter; ``type`` names which member is set."""

    type: str
    request_header_modifier: HeaderModifier | None = None
    response_header_modifier: HeaderModifier | None = None
    request_redirect: Redirect | None = None
    url_rewrite: Rewrite | None = None
    request_mirror: Mirror | None = None
    cors: CORS | None = None
    extension_ref: ExtensionRef | None = None


@dataclass(frozen=True, slots=True)
class Retry:
    codes: tuple[int, ...] = ()
    attempts: int = 1
    backoff: float | None = None  # seconds


@dataclass(frozen=True, slots=True)
class HTTPRule:
    matches: tuple[HTTPMatch, ...] = (HTTPMatch(),)
    filters: tuple[HTTPFilter, ...] = ()
    backend_refs: tuple[BackendRef, ...] = ()
    name: str = ""
    request_timeout: float | None = None  # seconds; None: not set; 0: no timeout
    backend_request_timeout: float | None = None
    retry: Retry | None = None


@dataclass(frozen=True, slots=True)
class HTTPRoute:
    meta: Meta
    parent_refs: tuple[ParentRef, ...]
    hostnames: tuple[str, ...] = ()
    rules: tuple[HTTPRule, ...] = (HTTPRule(),)


# --- L4 routes --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class L4Rule:
    backend_refs: tuple[BackendRef, ...]
    name: str = ""


@dataclass(frozen=True, slots=True)
class L4Route:
    """A TCPRoute, UDPRoute or TLSRoute (``kind`` says which)."""

    kind: str  # TCPRoute | UDPRoute | TLSRoute
    meta: Meta
    parent_refs: tuple[ParentRef, ...]
    rules: tuple[L4Rule, ...]
    hostnames: tuple[str, ...] = ()  # TLSRoute only


# --- ReferenceGrant and core objects --------------------------------------------------


@dataclass(frozen=True, slots=True)
class GrantFrom:
    group: str
    kind: str
    namespace: str


@dataclass(frozen=True, slots=True)
class GrantTo:
    group: str
    kind: str
    name: str = ""  # "": every object of that kind in the grant's namespace


@dataclass(frozen=True, slots=True)
class ReferenceGrant:
    meta: Meta
    from_: tuple[GrantFrom, ...]
    to: tuple[GrantTo, ...]


@dataclass(frozen=True, slots=True)
class ServicePort:
    port: int
    name: str = ""
    protocol: str = "TCP"
    target_port: int | str = 0  # number, or a named container port; 0: same as port
    app_protocol: str = ""


@dataclass(frozen=True, slots=True)
class Service:
    meta: Meta
    ports: tuple[ServicePort, ...] = ()
    type: str = "ClusterIP"
    cluster_ip: str = ""
    external_name: str = ""


@dataclass(frozen=True, slots=True)
class Endpoint:
    addresses: tuple[str, ...]
    ready: bool | None = None  # None: unknown, read as ready (Kubernetes' rule)
    serving: bool | None = None
    terminating: bool | None = None


@dataclass(frozen=True, slots=True)
class SlicePort:
    port: int
    name: str = ""
    protocol: str = "TCP"


@dataclass(frozen=True, slots=True)
class EndpointSlice:
    meta: Meta
    service_name: str  # label kubernetes.io/service-name
    address_type: str = "IPv4"
    ports: tuple[SlicePort, ...] = ()
    endpoints: tuple[Endpoint, ...] = ()


@dataclass(frozen=True, slots=True)
class Secret:
    meta: Meta
    type: str = "Opaque"
    data: Mapping[str, bytes] = field(default_factory=dict)  # decoded (data and stringData)


@dataclass(frozen=True, slots=True)
class Namespace:
    meta: Meta


@dataclass(frozen=True, slots=True)
class SluiceMiddleware:
    """Sluice's ``Middleware`` (``sluice.dev/v1alpha1``): ``spec`` is a file-dialect definition."""

    meta: Meta
    spec: Mapping[str, object]


@dataclass(slots=True)
class ObjectSet:
    """Every object of one snapshot, by kind, keyed by (namespace, name)."""

    gateway_classes: dict[str, GatewayClass] = field(default_factory=dict)
    gateways: dict[tuple[str, str], Gateway] = field(default_factory=dict)
    http_routes: dict[tuple[str, str], HTTPRoute] = field(default_factory=dict)
    l4_routes: dict[tuple[str, str, str], L4Route] = field(default_factory=dict)  # kind, ns, name
    grants: dict[tuple[str, str], ReferenceGrant] = field(default_factory=dict)
    services: dict[tuple[str, str], Service] = field(default_factory=dict)
    slices: dict[tuple[str, str], EndpointSlice] = field(default_factory=dict)
    secrets: dict[tuple[str, str], Secret] = field(default_factory=dict)
    namespaces: dict[str, Namespace] = field(default_factory=dict)
    middlewares: dict[tuple[str, str], SluiceMiddleware] = field(default_factory=dict)
