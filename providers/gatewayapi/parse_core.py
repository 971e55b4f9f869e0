"""Core and supporting kinds -> objects: Service, EndpointSlice, Endpoints, Secret,
ReferenceGrant and Sluice's Middleware.

Kept as Kubernetes' own validation keeps them: Service ports need names when
there are several, and names and (port, protocol) pairs are unique; an
EndpointSlice's addresses match its ``addressType``; Secret ``data`` is
base64 and ``stringData`` (plain text) wins over it key by key, as the API
server merges them; a ReferenceGrant has 1 to 16 ``from`` and ``to`` entries
(``spec`` is required since Gateway API 1.6).

Legacy ``Endpoints`` are mirrored into EndpointSlices the way Kubernetes'
mirroring controller does it: one slice per subset and address family,
labelled with the Endpoints' name as ``kubernetes.io/service-name``;
``addresses`` are ready, ``notReadyAddresses`` are not. The first slice is
named ``<name>-mirrored``, the next ``<name>-mirrored-1`` and so on.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Mapping
from typing import Any

from providers.gatewayapi.objects import (
    Endpoint,
    EndpointSlice,
    GrantFrom,
    GrantTo,
    Meta,
    Namespace,
    ReferenceGrant,
    Secret,
    Service,
    ServicePort,
    SlicePort,
    SluiceMiddleware,
)
from providers.gatewayapi.parse_fields import (
    GROUP,
    KIND,
    NAMESPACE,
    Context,
    Invalid,
    checked,
    describe,
    items,
    join,
    matches,
    opt_bool,
    opt_int,
    opt_map,
    opt_str,
    req_int,
    req_map,
    req_str,
    str_list,
    str_map,
)

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
_PROTOCOLS = ("TCP", "UDP", "SCTP")
_SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
_ADDRESS_TYPES = ("IPv4", "IPv6", "FQDN")
# IANA_SVC_NAME: what a named targetPort must look like.
_PORT_NAME = re.compile(r"^(?=.*[a-z])[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")


def _enum(value: str, allowed: tuple[str, ...], at: str) -> str:
    checked(
        value in allowed,
        at,
        f'unsupported value "{value}": supported values: {", ".join(allowed)}',
    )
    return value


# --- Service -----------------------------------------------------------------------------


def parse_service(doc: Mapping[str, Any], meta: Meta, ctx: Context) -> Service:
    spec = opt_map(doc, "spec", "") or {}
    entries = items(spec, "ports", "spec")
    ports = tuple(_service_port(entry, at) for entry, at in entries)
    names: set[str] = set()
    pairs: set[tuple[int, str]] = set()
    for port, (_, at) in zip(ports, entries, strict=True):
        checked(bool(port.name) or len(ports) == 1, join(at, "name"), "required value")
        checked(port.name not in names, join(at, "name"), f'duplicate value "{port.name}"')
        checked((port.port, port.protocol) not in pairs, at, "duplicate port and protocol")
        names.add(port.name)
        pairs.add((port.port, port.protocol))
    kind = _enum(opt_str(spec, "type", "spec") or "ClusterIP", _SERVICE_TYPES, "spec.type")
    return Service(
        meta=meta,
        ports=ports,
        type=kind,
        cluster_ip=opt_str(spec, "clusterIP", "spec") or "",
        external_name=opt_str(spec, "externalName", "spec") or "",
    )


def _service_port(entry: Mapping[str, Any], at: str) -> ServicePort:
    target: int | str = 0
    raw = entry.get("targetPort")
    if isinstance(raw, str):
        target = req_str(entry, "targetPort", at, pattern=_PORT_NAME, max_len=15)
    elif raw is not None:
        target = req_int(entry, "targetPort", at, lo=1, hi=65535)
    return ServicePort(
        port=req_int(entry, "port", at, lo=1, hi=65535),
        name=opt_str(entry, "name", at, pattern=NAMESPACE, max_len=63) or "",
        protocol=_enum(opt_str(entry, "protocol", at) or "TCP", _PROTOCOLS, join(at, "protocol")),
        target_port=target,
        app_protocol=opt_str(entry, "appProtocol", at) or "",
    )


# --- EndpointSlice and Endpoints ---------------------------------------------------------


def parse_endpoint_slice(doc: Mapping[str, Any], meta: Meta, ctx: Context) -> EndpointSlice:
    address_type = _enum(req_str(doc, "addressType", ""), _ADDRESS_TYPES, "addressType")
    endpoints = []
    for entry, at in items(doc, "endpoints", "", max_items=1000):
        addresses = str_list(entry, "addresses", at, max_items=100)
        checked(bool(addresses), join(at, "addresses"), "must have at least 1 item")
        for i, address in enumerate(addresses):
            _check_address(address, address_type, f"{join(at, 'addresses')}[{i}]")
        conditions = opt_map(entry, "conditions", at) or {}
        conditions_at = join(at, "conditions")
        endpoints.append(
            Endpoint(
                addresses=addresses,
                ready=opt_bool(conditions, "ready", conditions_at),
                serving=opt_bool(conditions, "serving", conditions_at),
                terminating=opt_bool(conditions, "terminating", conditions_at),
            )
        )
    ports = tuple(
        SlicePort(
            port=opt_int(entry, "port", at, lo=0, hi=65535) or 0,
            name=opt_str(entry, "name", at, max_len=63) or "",
            protocol=_enum(
                opt_str(entry, "protocol", at) or "TCP", _PROTOCOLS, join(at, "protocol")
            ),
        )
        for entry, at in items(doc, "ports", "", max_items=100)
    )
    return EndpointSlice(
        meta=meta,
        service_name=meta.labels.get(SERVICE_NAME_LABEL, ""),
        address_type=address_type,
        ports=ports,
        endpoints=tuple(endpoints),
    )


def _check_address(address: str, address_type: str, at: str) -> None:
    if address_type == "FQDN":
        return
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        raise Invalid(at, f'"{address}" is not a valid IP address') from None
    checked(
        parsed.version == (4 if address_type == "IPv4" else 6),
        at,
        f'"{address}" is not an {address_type} address',
    )


def parse_endpoints(doc: Mapping[str, Any], meta: Meta, ctx: Context) -> tuple[EndpointSlice, ...]:
    """Legacy ``Endpoints`` as the EndpointSlices Kubernetes would mirror them into."""
    groups: list[tuple[str, list[Endpoint], tuple[SlicePort, ...]]] = []
    for subset, at in items(doc, "subsets", ""):
        ports = tuple(
            SlicePort(
                port=req_int(port, "port", port_at, lo=1, hi=65535),
                name=opt_str(port, "name", port_at, max_len=63) or "",
                protocol=_enum(
                    opt_str(port, "protocol", port_at) or "TCP",
                    _PROTOCOLS,
                    join(port_at, "protocol"),
                ),
            )
            for port, port_at in items(subset, "ports", at)
        )
        by_family: dict[str, list[Endpoint]] = {}
        for key, ready in (("addresses", True), ("notReadyAddresses", False)):
            for address, address_at in items(subset, key, at):
                ip = req_str(address, "ip", address_at)
                try:
                    family = "IPv4" if ipaddress.ip_address(ip).version == 4 else "IPv6"
                except ValueError:
                    raise Invalid(join(address_at, "ip"), f'"{ip}" is not a valid IP') from None
                by_family.setdefault(family, []).append(Endpoint(addresses=(ip,), ready=ready))
        groups.extend((family, found, ports) for family, found in by_family.items())
    labels = {**meta.labels, SERVICE_NAME_LABEL: meta.name}
    slices = []
    for i, (family, endpoints, ports) in enumerate(groups):
        name = f"{meta.name}-mirrored" + (f"-{i}" if i else "")
        slice_meta = Meta(
            name=name,
            namespace=meta.namespace,
            generation=meta.generation,
            created=meta.created,
            labels=labels,
            annotations=meta.annotations,
            origin=meta.origin,
        )
        slices.append(
            EndpointSlice(
                meta=slice_meta,
                service_name=meta.name,
                address_type=family,
                ports=ports,
                endpoints=tuple(endpoints),
            )
        )
    return tuple(slices)


# --- Secret, Namespace, ReferenceGrant, Middleware ---------------------------------------


def parse_secret(doc: Mapping[str, Any], meta: Meta, ctx: Context) -> Secret:
    data: dict[str, bytes] = {}
    for key, text in str_map(doc, "data", "").items():
        checked(matches(_SECRET_KEY, key), join("data", key), "invalid key name")
        try:
            data[key] = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise Invalid(join("data", key), "invalid base64 data") from None
    for key, text in str_map(doc, "stringData", "").items():
        checked(matches(_SECRET_KEY, key), join("stringData", key), "invalid key name")
        data[key] = text.encode()
    return Secret(meta=meta, type=opt_str(doc, "type", "") or "Opaque", data=data)


def parse_namespace(doc: Mapping[str, Any], meta: Meta, ctx: Context) -> Namespace:
    return Namespace(meta=meta)


def parse_reference_grant(doc: Mapping[str, Any], meta: Meta, ctx: Context) -> ReferenceGrant:
    spec = req_map(doc, "spec", "")
    from_ = tuple(
        GrantFrom(
            group=req_str(entry, "group", at, pattern=GROUP, min_len=0, max_len=253),
            kind=req_str(entry, "kind", at, pattern=KIND, max_len=63),
            namespace=req_str(entry, "namespace", at, pattern=NAMESPACE, max_len=63),
        )
        for entry, at in items(spec, "from", "spec", min_items=1, max_items=16)
    )
    to = tuple(
        GrantTo(
            group=req_str(entry, "group", at, pattern=GROUP, min_len=0, max_len=253),
            kind=req_str(entry, "kind", at, pattern=KIND, max_len=63),
            name=opt_str(entry, "name", at, min_len=1, max_len=253) or "",
        )
        for entry, at in items(spec, "to", "spec", min_items=1, max_items=16)
    )
    return ReferenceGrant(meta=meta, from_=from_, to=to)


def parse_middleware(doc: Mapping[str, Any], meta: Meta, ctx: Context) -> SluiceMiddleware:
    spec = doc.get("spec")
    if not isinstance(spec, Mapping):
        raise Invalid("spec", f"expected a middleware definition (a mapping), got {describe(spec)}")
    return SluiceMiddleware(meta=meta, spec=spec)
