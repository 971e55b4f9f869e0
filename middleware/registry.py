"""The middleware registry: built-ins in one explicit table, plugins by entry point.

Built-ins and plugins are found the same way, by the key a configuration
uses (``headers``, ``basicAuth``); a plugin registers under the entry-point
group ``sluice.middleware`` and may not reuse a built-in's key. Built-ins are
named by ``module:Class`` and imported on first use, so a gateway whose
configuration uses no JWT never imports the JWT code.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from importlib.metadata import entry_points
from typing import Any

from gateway.config.errors import ConfigError
from middleware.contract import MiddlewareType

ENTRY_POINT_GROUP = "sluice.middleware"

# Traefik's HTTP middleware keys, in its documentation's order where it has one.
BUILTINS: dict[str, str] = {
    "addPrefix": "middleware.http.paths:AddPrefix",
    "basicAuth": "middleware.http.basic_auth:BasicAuth",
    "buffering": "middleware.http.buffering:Buffering",
    "circuitBreaker": "middleware.http.circuit_breaker:CircuitBreaker",
    "compress": "middleware.http.compress:Compress",
    "digestAuth": "middleware.http.digest_auth:DigestAuth",
    "errors": "middleware.http.errors:Errors",
    "forwardAuth": "middleware.http.forward_auth:ForwardAuth",
    # Gateway API HTTPRoute filters, exactly as the spec defines them (the
    # Gateway API translation emits these; files may use them too).
    "gatewayCORS": "middleware.http.gateway_cors:GatewayCORS",
    "gatewayRequestHeaderModifier": "middleware.http.gateway_filters:GatewayRequestHeaderModifier",
    "gatewayRequestMirror": "middleware.http.gateway_mirror:GatewayRequestMirror",
    "gatewayRequestRedirect": "middleware.http.gateway_redirects:GatewayRequestRedirect",
    "gatewayRetry": "middleware.http.gateway_policy:GatewayRetry",
    "gatewayTimeouts": "middleware.http.gateway_policy:GatewayTimeouts",
    "gatewayResponseHeaderModifier": (
        "middleware.http.gateway_filters:GatewayResponseHeaderModifier"
    ),
    "gatewayURLRewrite": "middleware.http.gateway_redirects:GatewayURLRewrite",
    "headers": "middleware.http.headers:HeadersMiddleware",
    "inFlightReq": "middleware.http.in_flight:InFlightReq",
    "ipAllowList": "middleware.http.ip_allowlist:IPAllowList",
    "jwt": "middleware.http.jwt_auth:JWTAuth",
    "rateLimit": "middleware.http.rate_limit:RateLimit",
    "redirectRegex": "middleware.http.redirects:RedirectRegex",
    "redirectScheme": "middleware.http.redirects:RedirectScheme",
    "replacePath": "middleware.http.paths:ReplacePath",
    "replacePathRegex": "middleware.http.paths:ReplacePathRegex",
    "retry": "middleware.http.retry:Retry",
    "stripPrefix": "middleware.http.paths:StripPrefix",
    "stripPrefixRegex": "middleware.http.paths:StripPrefixRegex",
}

# ``chain`` is not a factory: the chain compiler expands it into its members.
CHAIN = "chain"
# ``plugin: {NAME: {options}}`` names a plugin as Traefik's configuration does.
PLUGIN = "plugin"


class Registry(Mapping[str, MiddlewareType]):
    """Middleware factories by configuration key, resolved on first use."""

    def __init__(self, factories: Mapping[str, MiddlewareType | str]) -> None:
        self._factories: dict[str, MiddlewareType | str] = dict(factories)

    def __getitem__(self, kind: str) -> MiddlewareType:
        factory = self._factories[kind]
        if isinstance(factory, str):
            factory = self._factories[kind] = _instantiate(_import(factory))
        return factory

    def __iter__(self) -> Iterator[str]:
        return iter(self._factories)

    def __len__(self) -> int:
        return len(self._factories)

    def with_factories(self, extra: Mapping[str, MiddlewareType | str]) -> Registry:
        """A copy with ``extra`` added (tests register middleware this way)."""
        return Registry({**self._factories, **extra})


def _import(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def _instantiate(factory: Any) -> MiddlewareType:
    return factory() if isinstance(factory, type) else factory  # type: ignore[no-any-return]


def load_registry(*, plugins: bool = True) -> Registry:
    """Built-ins plus installed plugins; a plugin shadowing a built-in is an error."""
    factories: dict[str, MiddlewareType | str] = dict(BUILTINS)
    if plugins:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in BUILTINS or ep.name in (CHAIN, PLUGIN):
                raise ConfigError(
                    f"plugin {ep.value!r} registers middleware {ep.name!r}, which is a built-in"
                )
            factories[ep.name] = ep.value
    return Registry(factories)
