"""Kubernetes manifests (plain mappings, as YAML or JSON load) -> a typed ``ObjectSet``.

The one entry point is ``parse_objects``. It reads every kind the Gateway API
translator needs, in every API version the spec notes list for it (§1.1),
normalised to the v1 shape with the API server's defaults filled in, and it
checks what the API server would refuse: schema types, required fields,
enums, patterns and the CRDs' CEL rules (file mode has no API server to do
it). The readers live beside this module: ``parse_gateway`` (GatewayClass,
Gateway), ``parse_routes`` and ``parse_filters`` (routes), ``parse_core``
(Service, EndpointSlice, Endpoints, Secret, Namespace, ReferenceGrant, Sluice
Middleware), on the typed reads of ``parse_fields``.

Invariants:

* it never raises on bad input. An object the API server would refuse is
  left out and yields one ``ConfigError`` whose path names the object and
  the key (``HTTPRoute default/web: spec.rules[0].matches[1].path.value``)
  and whose origin is the file and line the document's ``OriginFinder``
  gives for that key; an object written twice keeps its first definition;
* an object the API server accepts but Sluice cannot implement as written
  (unknown enum values where the API says ``UnsupportedValue``, spec §1.5) is
  kept, and ``problems[(kind, namespace, name)]`` says why; the translator
  reports such a route ``Accepted=False`` with reason ``UnsupportedValue``;
* kinds and groups it does not know (other CRDs, Traefik's ``Middleware``)
  are skipped without a word; a known kind in an unknown version is an error;
* namespaced kinds default ``metadata.namespace`` to ``default``;
  ``creationTimestamp`` defaults to ``now``, ``generation`` to 1 (file mode
  bumps it across reloads: the caller's job, as only it sees two versions);
  timestamps are normalised to UTC seconds (``2024-01-02T03:04:05Z``), the
  form Kubernetes writes, so that they sort chronologically as text;
* fields it does not read are ignored, as the API server prunes unknown
  fields: experimental-channel fields (``sessionPersistence``, Gateway
  ``tls``...) load, and so, silently, does a misspelt key;
* a ``v1`` ``List`` is read item by item (``kubectl get -o yaml`` writes them).
"""

from __future__ import annotations

import contextlib
import datetime
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.config.errors import ConfigError, Origin
from providers.gatewayapi.objects import (
    GROUP,
    SLUICE_GROUP,
    EndpointSlice,
    Gateway,
    GatewayClass,
    HTTPRoute,
    L4Route,
    Meta,
    Namespace,
    ObjectSet,
    ReferenceGrant,
    Secret,
    Service,
    SluiceMiddleware,
)
from providers.gatewayapi.parse_core import (
    parse_endpoint_slice,
    parse_endpoints,
    parse_middleware,
    parse_namespace,
    parse_reference_grant,
    parse_secret,
    parse_service,
)
from providers.gatewayapi.parse_fields import (
    NAMESPACE,
    Context,
    Invalid,
    OriginFinder,
    opt_int,
    opt_str,
    parse_duration,
    req_map,
    req_str,
    str_map,
)
from providers.gatewayapi.parse_gateway import parse_gateway, parse_gateway_class
from providers.gatewayapi.parse_routes import parse_http_route, parse_l4_route

__all__ = [
    "OriginFinder",
    "ParseResult",
    "is_kube_object",
    "parse_duration",
    "parse_objects",
]

_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_Parse = Callable[[str, Mapping[str, Any], Meta, Context], Any]


@dataclass(slots=True)
class ParseResult:
    """The objects read, the objects refused, and the kept objects Sluice cannot implement."""

    objects: ObjectSet = field(default_factory=ObjectSet)
    errors: list[ConfigError] = field(default_factory=list)
    # (kind, namespace, name) -> why; namespace "" for cluster-scoped kinds.
    problems: dict[tuple[str, str, str], str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Kind:
    versions: tuple[str, ...]
    parse: _Parse
    namespaced: bool = True
    name_pattern: re.Pattern[str] = _SUBDOMAIN
    name_max: int = 253


def _any_version(parse: Callable[[Mapping[str, Any], Meta, Context], Any]) -> _Parse:
    return lambda version, doc, meta, ctx: parse(doc, meta, ctx)


def _l4(kind: str) -> _Parse:
    return lambda version, doc, meta, ctx: parse_l4_route(kind, version, doc, meta, ctx)


_KINDS: dict[tuple[str, str], _Kind] = {
    (GROUP, "GatewayClass"): _Kind(
        ("v1", "v1beta1"), _any_version(parse_gateway_class), namespaced=False
    ),
    (GROUP, "Gateway"): _Kind(("v1", "v1beta1"), _any_version(parse_gateway)),
    (GROUP, "HTTPRoute"): _Kind(("v1", "v1beta1"), _any_version(parse_http_route)),
    (GROUP, "TLSRoute"): _Kind(("v1", "v1alpha3", "v1alpha2"), _l4("TLSRoute")),
    (GROUP, "TCPRoute"): _Kind(("v1", "v1alpha2"), _l4("TCPRoute")),
    (GROUP, "UDPRoute"): _Kind(("v1", "v1alpha2"), _l4("UDPRoute")),
    (GROUP, "ReferenceGrant"): _Kind(
        ("v1", "v1beta1", "v1alpha2"), _any_version(parse_reference_grant)
    ),
    ("", "Service"): _Kind(
        ("v1",), _any_version(parse_service), name_pattern=_DNS1035, name_max=63
    ),
    ("", "Endpoints"): _Kind(("v1",), _any_version(parse_endpoints)),
    ("discovery.k8s.io", "EndpointSlice"): _Kind(("v1",), _any_version(parse_endpoint_slice)),
    ("", "Secret"): _Kind(("v1",), _any_version(parse_secret)),
    ("", "Namespace"): _Kind(("v1",), _any_version(parse_namespace), False, NAMESPACE, 63),
    (SLUICE_GROUP, "Middleware"): _Kind(("v1alpha1",), _any_version(parse_middleware)),
}


def is_kube_object(doc: Mapping[str, Any]) -> bool:
    """Whether a document is a Kubernetes object (it has ``apiVersion`` and ``kind``).

    A Traefik-dialect file has neither key at its top level.
    """
    return isinstance(doc.get("apiVersion"), str) and isinstance(doc.get("kind"), str)


def parse_objects(
    docs: Iterable[tuple[Mapping[str, Any], OriginFinder | None]], *, now: str
) -> ParseResult:
    """Read every Kubernetes object among ``docs``; see the module docstring.

    ``docs`` pairs each document with a finder of the file and line of a key
    path inside it (``"spec.rules[0]"``), or ``None`` when it has no origins
    (Kubernetes mode). ``now`` (RFC 3339) stands in for a missing
    ``creationTimestamp``.
    """
    result = ParseResult()
    with contextlib.suppress(ValueError):  # an odd ``now`` is still a timestamp of sorts
        now = _timestamp(now) or now
    reader = _Reader(result, now)
    for doc, finder in docs:
        reader.document(doc, finder or _nowhere)
    return result


def _nowhere(path: str) -> Origin | None:
    return None


class _Reader:
    def __init__(self, result: ParseResult, now: str) -> None:
        self.result = result
        self.now = now
        self.first: dict[tuple[str, str, str], Origin | None] = {}

    def document(self, doc: Mapping[str, Any], origin: OriginFinder) -> None:
        if not isinstance(doc, Mapping) or not is_kube_object(doc):
            return
        group, _, version = str(doc["apiVersion"]).rpartition("/")
        kind = str(doc["kind"])
        if (group, version, kind) == ("", "v1", "List"):
            found = doc.get("items")
            for i, item in enumerate(found if isinstance(found, list | tuple) else ()):
                self.document(item, _within(origin, f"items[{i}]"))
            return
        spec = _KINDS.get((group, kind))
        if spec is None:
            return
        label = _rough_label(kind, doc, spec.namespaced)
        try:
            if version not in spec.versions:
                served = ", ".join(f"{group}/{v}".lstrip("/") for v in spec.versions)
                raise Invalid(
                    "apiVersion",
                    f'{kind} is not served as "{doc["apiVersion"]}" (served: {served})',
                )
            meta = self.meta(doc, spec, origin)
            label = _label(kind, meta)
            ctx = Context(meta.namespace)
            parsed = spec.parse(version, doc, meta, ctx)
        except Invalid as exc:
            self.error(exc.message, origin(exc.path), f"{label}: {exc.path}")
            return
        except Exception as exc:  # a reader bug must cost one object, not the snapshot
            self.error(f"cannot read this object ({exc!r})", origin("kind"), label)
            return
        stored = [self.store(obj, origin) for obj in _each(parsed)]
        if ctx.problems and all(stored):
            self.result.problems[(kind, meta.namespace, meta.name)] = "; ".join(ctx.problems)

    def meta(self, doc: Mapping[str, Any], spec: _Kind, origin: OriginFinder) -> Meta:
        md = req_map(doc, "metadata", "")
        name = req_str(md, "name", "metadata", pattern=spec.name_pattern, max_len=spec.name_max)
        namespace = opt_str(md, "namespace", "metadata", pattern=NAMESPACE, max_len=63)
        try:
            created = _timestamp(md.get("creationTimestamp")) or self.now
        except ValueError:
            raise Invalid(
                "metadata.creationTimestamp",
                f"{md.get('creationTimestamp')!r} is not an RFC 3339 timestamp",
            ) from None
        return Meta(
            name=name,
            namespace=(namespace or "default") if spec.namespaced else "",
            generation=opt_int(md, "generation", "metadata", lo=1) or 1,
            created=created,
            labels=str_map(md, "labels", "metadata"),
            annotations=str_map(md, "annotations", "metadata"),
            uid=opt_str(md, "uid", "metadata") or "",
            resource_version=opt_str(md, "resourceVersion", "metadata") or "",
            origin=origin("metadata.name"),
        )

    def store(self, obj: Any, origin: OriginFinder) -> bool:
        """File ``obj`` under its key; ``False`` (and an error) when the key is taken."""
        objects = self.result.objects
        meta: Meta = obj.meta
        kind = obj.kind if isinstance(obj, L4Route) else _KIND_NAMES[type(obj)]
        key = (kind, meta.namespace, meta.name)
        if key in self.first:
            first = self.first[key]
            where = f" (first defined at {first})" if first is not None else ""
            self.error(
                f"{_label(kind, meta)} is defined more than once{where}",
                origin("metadata.name"),
                f"{_label(kind, meta)}: metadata.name",
            )
            return False
        self.first[key] = meta.origin
        ns_name = (meta.namespace, meta.name)
        if isinstance(obj, GatewayClass):
            objects.gateway_classes[meta.name] = obj
        elif isinstance(obj, Namespace):
            objects.namespaces[meta.name] = obj
        elif isinstance(obj, L4Route):
            objects.l4_routes[key] = obj
        else:
            getattr(objects, _SLOTS[type(obj)])[ns_name] = obj
        return True

    def error(self, message: str, origin: Origin | None, path: str) -> None:
        self.result.errors.append(ConfigError(message, origin=origin, path=path))


_KIND_NAMES: dict[type, str] = {
    GatewayClass: "GatewayClass",
    Gateway: "Gateway",
    HTTPRoute: "HTTPRoute",
    ReferenceGrant: "ReferenceGrant",
    Service: "Service",
    EndpointSlice: "EndpointSlice",
    Secret: "Secret",
    Namespace: "Namespace",
    SluiceMiddleware: "Middleware",
}
_SLOTS: dict[type, str] = {
    Gateway: "gateways",
    HTTPRoute: "http_routes",
    ReferenceGrant: "grants",
    Service: "services",
    EndpointSlice: "slices",
    Secret: "secrets",
    SluiceMiddleware: "middlewares",
}


def _each(parsed: Any) -> tuple[Any, ...]:
    return parsed if isinstance(parsed, tuple) else (parsed,)


def _within(origin: OriginFinder, prefix: str) -> OriginFinder:
    return lambda path: origin(f"{prefix}.{path}" if path else prefix)


def _label(kind: str, meta: Meta) -> str:
    return f"{kind} {meta.namespace}/{meta.name}" if meta.namespace else f"{kind} {meta.name}"


def _rough_label(kind: str, doc: Mapping[str, Any], namespaced: bool) -> str:
    """The object's label before its metadata is known to be valid."""
    md = doc.get("metadata")
    name = md.get("name") if isinstance(md, Mapping) else None
    if not isinstance(name, str):
        return kind
    namespace = md.get("namespace") if isinstance(md, Mapping) else None
    if not namespaced:
        return f"{kind} {name}"
    return f"{kind} {namespace if isinstance(namespace, str) and namespace else 'default'}/{name}"


def _timestamp(value: object) -> str | None:
    """``value`` as Kubernetes writes a timestamp; ``ValueError`` if it is not one."""
    if value is None:
        return None
    if isinstance(value, datetime.datetime):
        moment = value
    elif isinstance(value, datetime.date):  # YAML 1.1 reads a bare date as one
        moment = datetime.datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        moment = datetime.datetime.fromisoformat(value)
    else:
        raise ValueError(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
