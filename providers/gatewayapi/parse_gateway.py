"""GatewayClass and Gateway manifests -> ``objects.GatewayClass`` / ``objects.Gateway``.

Fills the CRD defaults (listener ``tls.mode`` Terminate, certificateRef group
"" / kind Secret / the Gateway's namespace, ``allowedRoutes.namespaces.from``
Same, route kind group ``gateway.networking.k8s.io``, address type IPAddress)
and checks the CEL rules of ``GatewaySpec.listeners``, ``ListenerTLSConfig``
and ``GatewaySpec.addresses`` with their upstream messages
(``apis/v1/gateway_types.go``; spec notes §1.2, §1.3).

Core protocol names are case-insensitive ("All Core ProtocolType values MUST
be treated case-insensitively"), so they are normalised to upper case here;
other protocols are kept as written and the translator reports them
``UnsupportedProtocol``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any

from providers.gatewayapi.objects import (
    GROUP,
    Gateway,
    GatewayAddress,
    GatewayClass,
    LabelSelector,
    Listener,
    Meta,
    RouteKind,
    SecretRef,
)
from providers.gatewayapi.parse_fields import (
    ADDRESS_TYPE,
    CONTROLLER_NAME,
    HOSTNAME,
    KIND,
    PROTOCOL,
    SECTION_NAME,
    Context,
    Invalid,
    checked,
    hostname,
    items,
    join,
    matches,
    opt_map,
    opt_str,
    req_int,
    req_map,
    req_str,
    str_list,
    str_map,
)
from providers.gatewayapi.parse_fields import GROUP as GROUP_PATTERN

CORE_PROTOCOLS = ("HTTP", "HTTPS", "TLS", "TCP", "UDP")
_NO_TLS = re.compile(r"(?i)^(HTTP|TCP|UDP)$")
_NO_HOSTNAME = re.compile(r"(?i)^(TCP|UDP)$")
_HTTPS = re.compile(r"(?i)^HTTPS$")
_SELECTOR_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


def parse_gateway_class(doc: Mapping[str, Any], meta: Meta, ctx: Context) -> GatewayClass:
    spec = req_map(doc, "spec", "")
    controller = req_str(spec, "controllerName", "spec", pattern=CONTROLLER_NAME, max_len=253)
    opt_str(spec, "description", "spec", max_len=64)
    params = opt_map(spec, "parametersRef", "spec")
    if params is not None:
        _parameters_ref(params, "spec.parametersRef", namespaced=True)
    return GatewayClass(
        meta=meta, controller_name=controller, has_parameters_ref=params is not None
    )


def parse_gateway(doc: Mapping[str, Any], meta: Meta, ctx: Context) -> Gateway:
    spec = req_map(doc, "spec", "")
    class_name = req_str(spec, "gatewayClassName", "spec", max_len=253)
    entries = items(spec, "listeners", "spec", min_items=1, max_items=64)
    listeners = tuple(_listener(entry, at, ctx) for entry, at in entries)
    _check_listeners(entries, listeners)
    addresses = _addresses(spec)
    infra = opt_map(spec, "infrastructure", "spec")
    params = None if infra is None else opt_map(infra, "parametersRef", "spec.infrastructure")
    if params is not None:
        _parameters_ref(params, "spec.infrastructure.parametersRef", namespaced=False)
    return Gateway(
        meta=meta,
        class_name=class_name,
        listeners=listeners,
        addresses=addresses,
        has_infrastructure_parameters_ref=params is not None,
    )


def _parameters_ref(ref: Mapping[str, Any], at: str, *, namespaced: bool) -> None:
    req_str(ref, "group", at, pattern=GROUP_PATTERN, min_len=0, max_len=253)
    req_str(ref, "kind", at, pattern=KIND, max_len=63)
    req_str(ref, "name", at, max_len=253)
    if namespaced:
        opt_str(ref, "namespace", at, max_len=63)


# --- listeners ---------------------------------------------------------------------------


def _listener(entry: Mapping[str, Any], at: str, ctx: Context) -> Listener:
    name = req_str(entry, "name", at, pattern=SECTION_NAME, max_len=253)
    host = opt_str(entry, "hostname", at)
    if host is not None:
        hostname(host, join(at, "hostname"))
    port = req_int(entry, "port", at, lo=1, hi=65535)
    protocol = req_str(entry, "protocol", at, pattern=PROTOCOL, max_len=255)
    if protocol.upper() in CORE_PROTOCOLS:
        protocol = protocol.upper()
    tls_mode = "Terminate"
    certificate_refs: tuple[SecretRef, ...] = ()
    options: dict[str, str] = {}
    tls = opt_map(entry, "tls", at)
    if tls is not None:
        tls_at = join(at, "tls")
        tls_mode = opt_str(tls, "mode", tls_at) or "Terminate"
        checked(
            tls_mode in ("Terminate", "Passthrough"),
            join(tls_at, "mode"),
            f'unsupported value "{tls_mode}": supported values: "Terminate", "Passthrough"',
        )
        certificate_refs = tuple(
            _secret_ref(ref, ref_at, ctx.namespace)
            for ref, ref_at in items(tls, "certificateRefs", tls_at, max_items=64)
        )
        options = str_map(tls, "options", tls_at, max_items=16)
        checked(
            tls_mode != "Terminate" or bool(certificate_refs) or bool(options),
            tls_at,
            "certificateRefs or options must be specified when mode is Terminate",
        )
    namespaces_from, selector, kinds = _allowed_routes(entry, at)
    return Listener(
        name=name,
        port=port,
        protocol=protocol,
        hostname=host or "",
        tls_mode=tls_mode,
        certificate_refs=certificate_refs,
        tls_options=options,
        namespaces_from=namespaces_from,
        namespace_selector=selector,
        kinds=kinds,
    )


def _secret_ref(ref: Mapping[str, Any], at: str, namespace: str) -> SecretRef:
    return SecretRef(
        name=req_str(ref, "name", at, max_len=253),
        namespace=opt_str(ref, "namespace", at, max_len=63) or namespace,
        group=opt_str(ref, "group", at, pattern=GROUP_PATTERN, max_len=253) or "",
        kind=opt_str(ref, "kind", at, pattern=KIND, max_len=63) or "Secret",
    )


def _allowed_routes(
    entry: Mapping[str, Any], at: str
) -> tuple[str, LabelSelector | None, tuple[RouteKind, ...]]:
    allowed = opt_map(entry, "allowedRoutes", at)
    if allowed is None:
        return "Same", None, ()
    at = join(at, "allowedRoutes")
    namespaces_from, selector = "Same", None
    namespaces = opt_map(allowed, "namespaces", at)
    if namespaces is not None:
        ns_at = join(at, "namespaces")
        namespaces_from = opt_str(namespaces, "from", ns_at) or "Same"
        checked(
            namespaces_from in ("All", "Selector", "Same"),
            join(ns_at, "from"),
            f'unsupported value "{namespaces_from}": supported values: "All", "Selector", "Same"',
        )
        found = opt_map(namespaces, "selector", ns_at)
        if found is not None:
            selector = label_selector(found, join(ns_at, "selector"))
    kinds = tuple(
        RouteKind(
            kind=req_str(kind, "kind", kind_at, pattern=KIND, max_len=63),
            group=opt_str(kind, "group", kind_at, pattern=GROUP_PATTERN, max_len=253) or GROUP,
        )
        for kind, kind_at in items(allowed, "kinds", at, max_items=8)
    )
    return namespaces_from, selector, kinds


def label_selector(found: Mapping[str, Any], at: str) -> LabelSelector:
    """A ``metav1.LabelSelector``, with the operator/values rules Kubernetes applies."""
    labels = str_map(found, "matchLabels", at)
    expressions = []
    for expr, expr_at in items(found, "matchExpressions", at):
        key = req_str(expr, "key", expr_at)
        operator = req_str(expr, "operator", expr_at)
        values = str_list(expr, "values", expr_at)
        checked(
            operator in _SELECTOR_OPERATORS,
            join(expr_at, "operator"),
            f'"{operator}" is not a valid selector operator (In, NotIn, Exists, DoesNotExist)',
        )
        if operator in ("In", "NotIn"):
            checked(bool(values), join(expr_at, "values"), f"must be specified for {operator}")
        else:
            checked(not values, join(expr_at, "values"), f"may not be specified for {operator}")
        expressions.append((key, operator, values))
    return LabelSelector(match_labels=labels, match_expressions=tuple(expressions))


def _check_listeners(
    entries: list[tuple[Mapping[str, Any], str]], listeners: tuple[Listener, ...]
) -> None:
    """The CEL rules on ``GatewaySpec.listeners``, checked on the values as written."""
    for (entry, at), listener in zip(entries, listeners, strict=True):
        written = str(entry.get("protocol"))
        checked(
            not (_NO_TLS.search(written) and entry.get("tls") is not None),
            join(at, "tls"),
            "tls must not be specified for protocols ['HTTP', 'TCP', 'UDP']",
        )
        checked(
            not (_HTTPS.search(written) and listener.tls_mode != "Terminate"),
            join(at, "tls.mode"),
            "tls mode must be Terminate for protocol HTTPS",
        )
        checked(
            not (_NO_HOSTNAME.search(written) and listener.hostname),
            join(at, "hostname"),
            "hostname must not be specified for protocols ['TCP', 'UDP']",
        )
    names: set[str] = set()
    triples: set[tuple[int, str, object]] = set()
    for (entry, at), listener in zip(entries, listeners, strict=True):
        checked(
            listener.name not in names,
            join(at, "name"),
            "Listener name must be unique within the Gateway",
        )
        names.add(listener.name)
        triple = (listener.port, str(entry.get("protocol")), entry.get("hostname"))
        checked(
            triple not in triples,
            at,
            "Combination of port, protocol and hostname must be unique for each listener",
        )
        triples.add(triple)


# --- addresses ---------------------------------------------------------------------------


def _addresses(spec: Mapping[str, Any]) -> tuple[GatewayAddress, ...]:
    out = []
    seen: set[tuple[str, str]] = set()
    for entry, at in items(spec, "addresses", "spec", max_items=16):
        kind = opt_str(entry, "type", at, pattern=ADDRESS_TYPE, max_len=253) or "IPAddress"
        value = opt_str(entry, "value", at, max_len=253) or ""
        value_at = join(at, "value")
        if kind == "IPAddress" and value:
            try:
                ipaddress.ip_address(value)
            except ValueError:
                raise Invalid(value_at, f'"{value}" is not a valid IP address') from None
        if kind == "Hostname" and value:
            checked(
                matches(HOSTNAME, value),
                value_at,
                "Hostname value must be empty or contain only valid characters "
                f"(matching {HOSTNAME.pattern})",
            )
        if kind in ("IPAddress", "Hostname") and value:
            checked((kind, value) not in seen, value_at, f"{kind} values must be unique")
            seen.add((kind, value))
        out.append(GatewayAddress(value=value, type=kind))
    return tuple(out)
