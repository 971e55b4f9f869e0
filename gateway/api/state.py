"""The API's view of a running ``Gateway``, in Traefik's JSON shapes.

``GatewayState`` implements ``gateway.api.server.ApiState`` by reading the
gateway's current merged configuration, compiled generation and errors. It
returns plain dictionaries; the API layer redacts secrets before sending.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from gateway.config.model import yaml_key

if TYPE_CHECKING:
    from gateway.app import Gateway


def to_plain(value: Any) -> Any:
    """A configuration object as JSON-ready data with Traefik's key names."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(value):
            if f.name == "origins" or f.name == "origin":
                continue
            item = getattr(value, f.name)
            if item is None or item == () or (isinstance(item, Mapping) and not item):
                continue
            out[yaml_key(f)] = to_plain(item)
        return out
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [to_plain(v) for v in value]
    return value


def _provider(name: str) -> str:
    return name.rpartition("@")[2] if "@" in name else ""


class GatewayState:
    """Reads a ``Gateway`` for the API."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def health(self) -> tuple[bool, str]:
        return self.gateway.ready()

    def errors(self) -> list[dict[str, Any]]:
        return [
            {"provider": provider, **error.as_dict()}
            for provider, error in self.gateway.errors.items()
        ]

    def overview(self) -> dict[str, Any]:
        gw = self.gateway
        routers = self.http_routers()
        services = self.http_services()
        middlewares = self.http_middlewares()

        def section(items: list[dict[str, Any]]) -> dict[str, int]:
            return {
                "total": len(items),
                "warnings": sum(1 for i in items if i.get("status") == "warning"),
                "errors": sum(1 for i in items if i.get("status") == "disabled"),
            }

        return {
            "http": {
                "routers": section(routers),
                "services": section(services),
                "middlewares": section(middlewares),
            },
            # Traefik's overview counts TCP and UDP too; their listings come with #7.
            "tcp": self._l4_counts("tcp"),
            "udp": self._l4_counts("udp"),
            "features": {
                "metrics": "prometheus" if gw.metrics is not None else "",
                "accessLog": gw.observer.access_log is not None,
                "bpf": "userspace fallback (arrives with the eBPF layer)",
            },
            "providers": sorted(gw.snapshots) or [p.name for p in gw.providers],
            "configuration": {
                "generation": gw.compiler.generation,
                "reloads": gw.reloads,
                "lastReload": gw.last_reload,
                "valid": not gw.errors,
                "errors": self.errors(),
            },
            "uptimeSeconds": round(time.time() - gw.started_at, 3),
        }

    def _l4_counts(self, protocol: str) -> dict[str, dict[str, int]]:
        config = self.gateway.config
        raw = getattr(config, protocol, None) if config is not None else None
        counts: dict[str, dict[str, int]] = {}
        for section in ("routers", "services", "middlewares"):
            items: Mapping[str, Any] = next(
                (v for k, v in (raw or {}).items() if k.lower() == section and v), {}
            )
            counts[section] = {"total": len(items), "warnings": 0, "errors": 0}
        return counts

    def rawdata(self) -> dict[str, Any]:
        config = self.gateway.config
        data: dict[str, Any] = {"routers": {}, "services": {}, "middlewares": {}}
        if config is not None:
            data["routers"] = {r["name"]: r for r in self.http_routers()}
            data["services"] = {s["name"]: s for s in self.http_services()}
            data["middlewares"] = {m["name"]: m for m in self.http_middlewares()}
            data["tls"] = to_plain(config.tls)
        data["errors"] = self.errors()
        return data

    def gateway_api(self) -> list[dict[str, Any]]:
        """Every Gateway API object a provider translated, with its status, by kind and name."""
        out: list[dict[str, Any]] = []
        for provider in self.gateway.providers:
            reader = getattr(provider, "manifests", None)
            status = getattr(reader, "status", None) or getattr(provider, "status", None) or {}
            for (kind, namespace, name), item in sorted(status.items()):
                metadata: dict[str, Any] = {"name": name}
                if namespace:
                    metadata["namespace"] = namespace
                # Kubernetes' shape, so tools written against a cluster read it as is.
                out.append(
                    {
                        "apiVersion": "gateway.networking.k8s.io/v1",
                        "kind": kind,
                        "metadata": metadata,
                        "status": item,
                        "provider": provider.name,
                    }
                )
        return out

    def entry_points(self) -> list[dict[str, Any]]:
        out = []
        for name, ep in self.gateway.static.entry_points.items():
            item = {"name": name, **to_plain(ep)}
            runtime = self.gateway.entry_points.get(name)
            if runtime is not None:
                item["openConnections"] = len(runtime.connections)
            out.append(item)
        return out

    def http_routers(self) -> list[dict[str, Any]]:
        config = self.gateway.config
        if config is None:
            return []
        out = []
        for name, router in config.http.routers.items():
            item = to_plain(router)
            item.update(
                name=name,
                provider=_provider(name),
                status="enabled",
                using=list(router.entry_points or self.gateway.tcp_entry_point_names()),
                priority=router.priority or len(router.rule),
            )
            out.append(item)
        return out

    def http_services(self) -> list[dict[str, Any]]:
        gw = self.gateway
        config = gw.config
        if config is None:
            return []
        used: dict[str, list[str]] = {}
        for rname, router in config.http.routers.items():
            used.setdefault(router.service, []).append(rname)
        compiled = gw.compiled
        now = time.monotonic()
        out = []
        for name, service in config.http.services.items():
            item = to_plain(service)
            item.update(
                name=name, provider=_provider(name), status="enabled", usedBy=used.get(name, [])
            )
            if compiled is not None and service.load_balancer is not None:
                item["serverStatus"] = {
                    s.url: "UP" if s.available(now) else "DOWN"
                    for (svc, _), s in compiled.servers.items()
                    if svc == name
                }
            item["type"] = "loadbalancer" if service.load_balancer is not None else "weighted"
            out.append(item)
        return out

    def http_middlewares(self) -> list[dict[str, Any]]:
        config = self.gateway.config
        if config is None:
            return []
        used: dict[str, list[str]] = {}
        for rname, router in config.http.routers.items():
            for m in router.middlewares:
                used.setdefault(m, []).append(rname)
        return [
            {
                "name": name,
                "provider": _provider(name),
                "type": mw.kind,
                mw.kind: to_plain(mw.options),
                "status": "enabled",
                "usedBy": used.get(name, []),
            }
            for name, mw in config.http.middlewares.items()
        ]
