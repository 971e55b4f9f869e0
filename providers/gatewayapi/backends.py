"""backendRef -> the addresses behind it, through a Service and its EndpointSlices.

``resolve`` answers one backendRef with either the servers to balance over or
the reason it cannot be used, in the order of spec §2.11: an unsupported
group/kind is ``InvalidKind``; a cross-namespace reference without a
ReferenceGrant is ``RefNotPermitted`` even when the Service does not exist; a
missing Service or Service port is ``BackendNotFound``.

Endpoints follow Kubernetes' own reading of EndpointSlices (spec §1.9,
[K8S-ES]): every slice labelled with the Service's name in its namespace
counts; the endpoint port is the slice port with the Service port's name and
protocol (this is how a named ``targetPort`` resolves); ``ready`` unset means
ready; endpoints that are not ready or are terminating are skipped; FQDN slices
are ignored, as kube-proxy does. A Service whose endpoints are all down
resolves to zero servers, which the translator answers with 503, not 500
(spec §2.8). Legacy ``Endpoints`` reach here already mirrored into slices by
``parse``.

The server list is deduplicated and sorted (IPv4 before IPv6, numerically,
then port) so that the same cluster state always yields an equal snapshot,
whatever order the API listed the slices and endpoints in.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from providers.gatewayapi.objects import (
    GROUP,
    BackendRef,
    EndpointSlice,
    ObjectSet,
    Service,
    ServicePort,
)
from providers.gatewayapi.refs import reference_permitted

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Resolved:
    """The ready endpoints of a backendRef's Service port; possibly none."""

    servers: tuple[tuple[str, int], ...]  # (ip as written, port)
    app_protocol: str = ""  # the Service port's appProtocol, "" when unset


@dataclass(frozen=True, slots=True)
class Unresolved:
    """Why a backendRef cannot be used: a route ``ResolvedRefs=False`` reason and message."""

    reason: str  # InvalidKind | RefNotPermitted | BackendNotFound | UnsupportedProtocol
    message: str


def resolve(
    objects: ObjectSet,
    ref: BackendRef,
    *,
    from_kind: str,
    from_namespace: str,
    protocol: str = "TCP",
) -> Resolved | Unresolved:
    """Resolve ``ref``, written in a ``from_kind`` object in ``from_namespace``.

    ``protocol`` is the transport the route needs from the Service port (TCP
    for HTTP, TLS and TCP routes; UDP for UDPRoute). A port with the right
    number but another protocol is ``UnsupportedProtocol``, as in Traefik.
    """
    where = f"{ref.namespace}/{ref.name}"
    if ref.group != "" or ref.kind != "Service":
        group = ref.group or "core"
        return Unresolved(
            "InvalidKind",
            f"backendRef {where} has unsupported kind {ref.kind} in group {group}; "
            "only core Services are supported",
        )
    if not reference_permitted(
        objects,
        from_group=GROUP,
        from_kind=from_kind,
        from_namespace=from_namespace,
        to_group="",
        to_kind="Service",
        to_namespace=ref.namespace,
        to_name=ref.name,
    ):
        return Unresolved(
            "RefNotPermitted",
            f"backendRef to Service {where} is not permitted: no ReferenceGrant in namespace "
            f"{ref.namespace} allows {from_kind} references from namespace {from_namespace}",
        )
    service = objects.services.get((ref.namespace, ref.name))
    if service is None:
        return Unresolved("BackendNotFound", f"Service {where} not found")
    if service.type == "ExternalName":
        # Spec §1.4: ExternalName backends are implementation-specific and
        # SHOULD NOT be supported; their DNS name would let a route reach any
        # host, bypassing ReferenceGrant.
        return Unresolved(
            "BackendNotFound",
            f"Service {where} is of type ExternalName, which Sluice does not resolve",
        )
    if ref.port == 0:
        return Unresolved("BackendNotFound", f"backendRef to Service {where} has no port")
    port = _service_port(service, ref.port, protocol)
    if isinstance(port, Unresolved):
        return port
    return Resolved(servers=_servers(objects, service, port), app_protocol=port.app_protocol)


def _service_port(service: Service, number: int, protocol: str) -> ServicePort | Unresolved:
    where = f"{service.meta.namespace}/{service.meta.name}"
    numbered = [port for port in service.ports if port.port == number]
    for port in numbered:
        if port.protocol == protocol:
            return port
    if numbered:
        others = ", ".join(sorted({port.protocol for port in numbered}))
        return Unresolved(
            "UnsupportedProtocol",
            f"Service {where} port {number} is {others}, the route needs {protocol}",
        )
    return Unresolved("BackendNotFound", f"Service {where} has no port {number}")


def _servers(
    objects: ObjectSet, service: Service, port: ServicePort
) -> tuple[tuple[str, int], ...]:
    namespace, name = service.meta.namespace, service.meta.name
    found: dict[tuple[IPAddress, int], str] = {}
    for (slice_ns, _), eps in sorted(objects.slices.items()):
        if slice_ns != namespace or eps.service_name != name or eps.address_type == "FQDN":
            continue
        target = _slice_port(eps, port)
        if target == 0:
            continue
        for endpoint in eps.endpoints:
            # [K8S-ES]: ready nil is "unknown", read as ready; terminating nil
            # is "not terminating".
            if endpoint.ready is False or endpoint.terminating is True:
                continue
            for address in endpoint.addresses:
                try:
                    ip = ipaddress.ip_address(address)
                except ValueError:
                    continue  # not dialable; the API server validates these in a cluster
                found.setdefault((ip, target), address)
    return tuple((found[key], key[1]) for key in sorted(found, key=_order))


def _slice_port(eps: EndpointSlice, port: ServicePort) -> int:
    # Names are unique per Service and protocol, and both sides leave the name
    # empty for a Service with a single unnamed port.
    for candidate in eps.ports:
        if candidate.name == port.name and candidate.protocol == port.protocol:
            return candidate.port
    return 0


def _order(key: tuple[IPAddress, int]) -> tuple[int, int, int]:
    ip, port = key
    return ip.version, int(ip), port
