"""HTTPRoute filters as Sluice middleware definitions (file-dialect mappings).

One middleware per filter, in the filter list's order (the spec: filters
SHOULD apply in order). Each maps onto a type from
``middleware/http/gateway_*.py`` whose option keys are the filter's own fields
in camelCase (spec notes §2.7), plus what the filter needs from its context:

* ``RequestHeaderModifier`` / ``ResponseHeaderModifier`` ->
  ``gatewayRequestHeaderModifier`` / ``gatewayResponseHeaderModifier``
  (``set``/``add`` as ``[{name, value}]``, ``remove`` as names);
* ``RequestRedirect`` -> ``gatewayRequestRedirect`` plus ``matchedPrefix`` (the
  rule's PathPrefix value, for ``ReplacePrefixMatch``) and the listener's
  ``listenerPort`` / ``listenerScheme`` (the default port of a redirect is the
  listener's, §2.7), so its definition differs per listener;
* ``URLRewrite`` -> ``gatewayURLRewrite`` plus ``matchedPrefix``;
* ``RequestMirror`` -> ``gatewayRequestMirror`` with the mirror backendRef
  resolved to ``backends: [{url}]`` and ``percent`` or ``fraction``. A mirror
  whose backendRef does not resolve is left out and reported (``ResolvedRefs``)
  and the primary traffic is unaffected (§2.7); one with no ready endpoint is
  left out silently: there is nothing to copy to;
* ``CORS`` -> ``gatewayCORS`` (Sluice's ``headers`` CORS is Traefik's, which
  the spec's differs from: wildcard origins, default ports, echoing for ``*``,
  ``maxAge`` 5; see ``middleware/http/gateway_cors.py``);
* ``ExtensionRef`` to a ``sluice.dev`` ``Middleware`` -> a reference to the
  middleware the translator registers for that object (``extension_name``).

A filter that cannot be honoured (an ExtensionRef to an unknown kind or a
missing object, a filter type Sluice lacks) must not be skipped: the
requests it would have processed get an error (spec §2.7, ``HTTPRouteFilter``
"MUST NOT be skipped"). ``build_filters`` then reports ``failed`` and the
caller routes the rule to a 500 answer.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from providers.gatewayapi.backends import Resolved, Unresolved
from providers.gatewayapi.objects import (
    SLUICE_GROUP,
    BackendRef,
    HeaderModifier,
    HTTPFilter,
    PathModifier,
)

Problem = tuple[str, str, str]  # (condition type, reason, message)
Resolver = Callable[[BackendRef], Resolved | Unresolved]

# Short, stable name parts per filter type.
_SHORT = {
    "RequestHeaderModifier": "request-headers",
    "ResponseHeaderModifier": "response-headers",
    "RequestRedirect": "redirect",
    "URLRewrite": "rewrite",
    "RequestMirror": "mirror",
    "CORS": "cors",
}


def extension_name(namespace: str, name: str) -> str:
    """The middleware name a ``sluice.dev`` ``Middleware`` object is registered under."""
    return f"{namespace}-{name}"


def server_url(ip: str, port: int) -> str:
    host = f"[{ip}]" if ":" in ip else ip
    return f"http://{host}:{port}"


@dataclass(frozen=True, slots=True)
class FilterContext:
    """What a rule's filters need beyond themselves."""

    prefix: str  # middleware names start with it
    namespace: str  # the route's, for ExtensionRef
    matched_prefix: str  # the rule's PathPrefix value ("" without one)
    listener_port: int
    listener_scheme: str  # http | https
    resolve: Resolver
    extensions: Collection[tuple[str, str]]  # (namespace, name) of known Middleware objects


@dataclass(slots=True)
class BuiltFilters:
    names: list[str] = field(default_factory=list)  # for the router's middlewares, in order
    definitions: dict[str, dict[str, Any]] = field(default_factory=dict)  # to add
    problems: list[Problem] = field(default_factory=list)
    failed: bool = False  # a filter cannot be honoured: answer 500 instead


def build_filters(filters: Sequence[HTTPFilter], ctx: FilterContext) -> BuiltFilters:
    """The middlewares for ``filters``; see the module doc."""
    out = BuiltFilters()
    for index, item in enumerate(filters):
        if item.type == "ExtensionRef" and item.extension_ref is not None:
            _extension(item, ctx, out)
            continue
        definition = _definition(item, ctx, out)
        if definition is None:
            continue
        short = _SHORT[item.type]
        name = f"{ctx.prefix}-f{index}-{short}"
        if item.type == "RequestRedirect":
            name += f"-{ctx.listener_scheme}{ctx.listener_port}"
        out.names.append(name)
        out.definitions[name] = definition
    return out


def _extension(item: HTTPFilter, ctx: FilterContext, out: BuiltFilters) -> None:
    ref = item.extension_ref
    assert ref is not None
    if ref.group != SLUICE_GROUP or ref.kind != "Middleware":
        out.failed = True
        message = (
            f"ExtensionRef to {ref.kind} {ref.name} in group {ref.group or 'core'} is not "
            f"supported (only {SLUICE_GROUP} Middleware); requests to its rule get 500"
        )
        out.problems.append(("ResolvedRefs", "InvalidKind", message))
    elif (ctx.namespace, ref.name) not in ctx.extensions:
        out.failed = True
        message = (
            f"ExtensionRef to Middleware {ctx.namespace}/{ref.name} not found; "
            "requests to its rule get 500"
        )
        out.problems.append(("ResolvedRefs", "BackendNotFound", message))
    else:
        out.names.append(extension_name(ctx.namespace, ref.name))


def _definition(item: HTTPFilter, ctx: FilterContext, out: BuiltFilters) -> dict[str, Any] | None:
    kind = item.type
    if kind == "RequestHeaderModifier" and item.request_header_modifier is not None:
        return {"gatewayRequestHeaderModifier": _headers(item.request_header_modifier)}
    if kind == "ResponseHeaderModifier" and item.response_header_modifier is not None:
        return {"gatewayResponseHeaderModifier": _headers(item.response_header_modifier)}
    if kind == "RequestRedirect" and item.request_redirect is not None:
        redirect = item.request_redirect
        options: dict[str, Any] = {"statusCode": redirect.status_code}
        if redirect.scheme:
            options["scheme"] = redirect.scheme
        if redirect.hostname:
            options["hostname"] = redirect.hostname
        if redirect.port:
            options["port"] = redirect.port
        _path(options, redirect.path, ctx)
        options["listenerPort"] = ctx.listener_port
        options["listenerScheme"] = ctx.listener_scheme
        return {"gatewayRequestRedirect": options}
    if kind == "URLRewrite" and item.url_rewrite is not None:
        options = {}
        if item.url_rewrite.hostname:
            options["hostname"] = item.url_rewrite.hostname
        _path(options, item.url_rewrite.path, ctx)
        return {"gatewayURLRewrite": options}
    if kind == "RequestMirror" and item.request_mirror is not None:
        return _mirror(item, ctx, out)
    if kind == "CORS" and item.cors is not None:
        cors = item.cors
        return {
            "gatewayCORS": {
                "allowOrigins": list(cors.allow_origins),
                "allowCredentials": cors.allow_credentials,
                "allowMethods": list(cors.allow_methods),
                "allowHeaders": list(cors.allow_headers),
                "exposeHeaders": list(cors.expose_headers),
                "maxAge": cors.max_age,
            }
        }
    out.failed = True
    message = f"filter type {kind} is not supported; requests to its rule get 500"
    out.problems.append(("Accepted", "UnsupportedValue", message))
    return None


def _headers(modifier: HeaderModifier) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if modifier.set:
        options["set"] = [{"name": n, "value": v} for n, v in modifier.set]
    if modifier.add:
        options["add"] = [{"name": n, "value": v} for n, v in modifier.add]
    if modifier.remove:
        options["remove"] = list(modifier.remove)
    return options


def _path(options: dict[str, Any], path: PathModifier | None, ctx: FilterContext) -> None:
    if path is None:
        return
    if path.type == "ReplacePrefixMatch":
        options["path"] = {"type": path.type, "replacePrefixMatch": path.value}
        options["matchedPrefix"] = ctx.matched_prefix
    else:
        options["path"] = {"type": path.type, "replaceFullPath": path.value}


def _mirror(item: HTTPFilter, ctx: FilterContext, out: BuiltFilters) -> dict[str, Any] | None:
    mirror = item.request_mirror
    assert mirror is not None
    found = ctx.resolve(mirror.backend)
    if isinstance(found, Unresolved):
        message = f"RequestMirror: {found.message}; the mirror is not configured"
        out.problems.append(("ResolvedRefs", found.reason, message))
        return None
    if not found.servers:
        return None
    options: dict[str, Any] = {"backends": [{"url": server_url(*s)} for s in found.servers]}
    if mirror.denominator == 100:
        options["percent"] = mirror.numerator
    else:
        options["fraction"] = {"numerator": mirror.numerator, "denominator": mirror.denominator}
    return {"gatewayRequestMirror": options}
