"""Combining dynamic configuration: files of one provider, snapshots of many.

``combine`` joins the files of one provider the way Traefik's file provider
joins a directory: named objects from every file end up side by side and
``tls.certificates`` concatenate; a name defined twice is an error naming
both places (Traefik warns and keeps the first, which hides mistakes).

``merge`` joins the newest snapshot of every provider into the one
configuration the runtime serves. Router, service, middleware and
serversTransport names become ``name@provider`` (for tcp and udp too), and so
do references to them that are not qualified already: an unqualified
reference means "in my own provider", as in Traefik. A provider may not use
``@`` in its own names. TLS options and stores stay unqualified, shared by
every provider (Traefik keeps ``default`` that way), so a router's
``tls.options: foo@file`` is read as ``foo``; two providers may define the
same TLS options only identically.

Origins follow their objects: ``http.routers.api.rule`` becomes
``http.routers.api@file.rule``. The renamed origins are worked out on first
read (``_Origins``), since only error messages read them.

``collection_paused`` is here, at the bottom of the modules that build large
configurations (loader, validator, runtime compiler, router table), so all of
them can use it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from gateway.config.dynamic import (
    DynamicConfig,
    HTTPConfig,
    HTTPRouter,
    HTTPService,
    TLSConfig,
)
from gateway.config.errors import ConfigError, Origin
from gateway.config.model import frozen_map

T = TypeVar("T")

# (attribute of HTTPConfig, YAML key, what one of them is called)
_HTTP_SECTIONS = (
    ("routers", "routers", "router"),
    ("services", "services", "service"),
    ("middlewares", "middlewares", "middleware"),
    ("servers_transports", "serversTransports", "serversTransport"),
)
# Sections of the raw tcp/udp configuration whose entries are named objects.
_RAW_SECTIONS = ("routers", "services", "middlewares", "serverstransports")


def combine(configs: Sequence[DynamicConfig]) -> DynamicConfig:
    """The files of one provider as one snapshot; duplicate names are errors."""
    if len(configs) == 1:
        return configs[0]
    return _join(configs, tls_equal_ok=False)


def merge(snapshots: Mapping[str, DynamicConfig]) -> DynamicConfig:
    """Every provider's snapshot, keyed by provider name, as one configuration."""
    with collection_paused():
        return _join(
            [_qualify(provider, config) for provider, config in snapshots.items()],
            tls_equal_ok=True,
        )


@contextlib.contextmanager
def collection_paused() -> Iterator[None]:
    """Hold off CPython's cyclic collector while a large configuration is built.

    Loading or compiling 10,000 routers allocates a few hundred thousand
    long-lived objects and no cycles; with the collector on, each of its
    full passes rescans them (and the serving process's own heap), which
    more than doubled the time to load. The collector is process-wide: a
    thread finding it already paused leaves re-enabling to whoever paused it.
    """
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def _join(configs: Sequence[DynamicConfig], *, tls_equal_ok: bool) -> DynamicConfig:
    http: dict[str, Any] = {}
    for attr, key, what in _HTTP_SECTIONS:
        parts = [(getattr(c.http, attr), c.origins) for c in configs]
        http[attr] = frozen_map(_union(parts, f"http.{key}", what, equal_ok=False))
    tls = TLSConfig(
        certificates=tuple(cert for c in configs for cert in c.tls.certificates),
        options=frozen_map(
            _union(
                [(c.tls.options, c.origins) for c in configs],
                "tls.options",
                "TLS options",
                equal_ok=tls_equal_ok,
            )
        ),
        stores=frozen_map(
            _union(
                [(c.tls.stores, c.origins) for c in configs],
                "tls.stores",
                "TLS store",
                equal_ok=tls_equal_ok,
            )
        ),
    )
    return DynamicConfig(
        http=HTTPConfig(**http),
        tls=tls,
        tcp=_join_raw([(c.tcp, c.origins) for c in configs], "tcp"),
        udp=_join_raw([(c.udp, c.origins) for c in configs], "udp"),
        entry_points=frozen_map(
            _union(
                [(c.entry_points, c.origins) for c in configs if c.entry_points],
                "entryPoints",
                "entry point",
                equal_ok=False,
            )
        )
        if any(c.entry_points for c in configs)
        else None,
        origins=_Origins(tuple(part for c in configs for part in _parts(c.origins))),
    )


def _union(
    parts: Iterable[tuple[Mapping[str, T], Mapping[str, Origin]]],
    path: str,
    what: str,
    *,
    equal_ok: bool,
) -> dict[str, T]:
    out: dict[str, T] = {}
    # Where each name came from, looked up only for an error: origins may be
    # computed lazily (_Origins).
    where: dict[str, Mapping[str, Origin]] = {}
    for items, origins in parts:
        for name, item in items.items():
            if name in out:
                sub = f"{path}.{name}"
                if equal_ok and out[name] == item:
                    continue
                first = where[name].get(sub)
                also = f" (first defined at {first})" if first else ""
                raise ConfigError(
                    f'{what} "{name}" is defined more than once{also}',
                    origin=origins.get(sub),
                    path=sub,
                )
            out[name] = item
            where[name] = origins
    return out


def _join_raw(
    parts: Sequence[tuple[Mapping[str, Any] | None, Mapping[str, Origin]]], proto: str
) -> Mapping[str, Any] | None:
    present = [(raw, origins) for raw, origins in parts if raw is not None]
    if not present:
        return None
    out: dict[str, Any] = {}
    for key in dict.fromkeys(k for raw, _ in present for k in raw):
        values = [(raw[key], origins) for raw, origins in present if key in raw]
        if all(isinstance(v, Mapping) for v, _ in values):
            out[key] = frozen_map(
                _union(values, f"{proto}.{key}", f"{proto} {key}", equal_ok=False)
            )
        elif all(v == values[0][0] for v, _ in values):
            out[key] = values[0][0]
        else:
            path = f"{proto}.{key}"
            raise ConfigError("is defined more than once", origin=values[1][1].get(path), path=path)
    return frozen_map(out)


# --- Qualifying names ----------------------------------------------------------


def _qualify(provider: str, config: DynamicConfig) -> DynamicConfig:
    def ref(name: str) -> str:
        return f"{name}@{provider}" if name and "@" not in name else name

    def own(section: str, name: str) -> str:
        if "@" in name:
            path = f"{section}.{name}"
            raise ConfigError(
                f'name "{name}" must not contain "@": the provider adds "@{provider}" itself',
                origin=config.origins.get(path),
                path=path,
            )
        return f"{name}@{provider}"

    http = config.http
    renamed: dict[str, Iterable[str]] = {}
    for attr, key, _ in _HTTP_SECTIONS:
        renamed[f"http.{key}"] = getattr(http, attr).keys()
    routers = {own("http.routers", n): _router_refs(r, ref) for n, r in http.routers.items()}
    services = {own("http.services", n): _service_refs(s, ref) for n, s in http.services.items()}
    middlewares = {own("http.middlewares", n): m for n, m in http.middlewares.items()}
    transports = {own("http.serversTransports", n): t for n, t in http.servers_transports.items()}
    raw: dict[str, Mapping[str, Any] | None] = {}
    for proto in ("tcp", "udp"):
        section = getattr(config, proto)
        raw[proto] = None if section is None else _qualify_raw(section, proto, own, ref)
        for key, value in (section or {}).items():
            if key.lower() in _RAW_SECTIONS and isinstance(value, Mapping):
                renamed[f"{proto}.{key}"] = value.keys()
    return DynamicConfig(
        http=HTTPConfig(
            routers=frozen_map(routers),
            services=frozen_map(services),
            middlewares=frozen_map(middlewares),
            servers_transports=frozen_map(transports),
        ),
        tls=config.tls,
        tcp=raw["tcp"],
        udp=raw["udp"],
        entry_points=config.entry_points,
        origins=_Origins(((config.origins, _sections(renamed), provider),)),
    )


def _bare(name: str) -> str:
    return name.partition("@")[0]


def _router_refs(router: HTTPRouter, ref: Callable[[str], str]) -> HTTPRouter:
    tls = router.tls
    if tls is not None and "@" in tls.options:
        tls = dataclasses.replace(tls, options=_bare(tls.options))
    return _replace(
        router,
        service=ref(router.service),
        middlewares=tuple(ref(m) for m in router.middlewares) if router.middlewares else (),
        tls=tls,
    )


@functools.cache
def _init_fields(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls) if f.init)


def _replace(obj: T, **changes: Any) -> T:
    """``dataclasses.replace`` without its per-call checks: it runs for every router."""
    cls: type = type(obj)
    kwargs = {name: getattr(obj, name) for name in _init_fields(cls)}
    kwargs.update(changes)
    result: T = cls(**kwargs)
    return result


def _service_refs(service: HTTPService, ref: Callable[[str], str]) -> HTTPService:
    if service.load_balancer is not None:
        lb = service.load_balancer
        return dataclasses.replace(
            service,
            load_balancer=dataclasses.replace(lb, servers_transport=ref(lb.servers_transport)),
        )
    if service.weighted is not None:
        weighted = service.weighted
        members = tuple(
            dataclasses.replace(
                m, name=ref(m.name), middlewares=tuple(ref(n) for n in m.middlewares)
            )
            for m in weighted.services
        )
        return dataclasses.replace(
            service, weighted=dataclasses.replace(weighted, services=members)
        )
    if service.failover is not None:
        failover = service.failover
        return dataclasses.replace(
            service,
            failover=dataclasses.replace(
                failover, service=ref(failover.service), fallback=ref(failover.fallback)
            ),
        )
    return service


def _qualify_raw(
    section: Mapping[str, Any],
    proto: str,
    own: Callable[[str, str], str],
    ref: Callable[[str], str],
) -> Mapping[str, Any]:
    def refs(value: Any) -> Any:
        if isinstance(value, str):
            return ref(value)
        if isinstance(value, tuple):
            return tuple(ref(v) if isinstance(v, str) else v for v in value)
        return value

    def router(obj: Any) -> Any:
        obj = _update(obj, "service", refs)
        obj = _update(obj, "middlewares", refs)
        return _update(obj, "tls", lambda t: _update(t, "options", _bare_any))

    def members(items: Any) -> Any:
        if not isinstance(items, tuple):
            return items
        return tuple(_update(m, "name", refs) for m in items)

    def service(obj: Any) -> Any:
        obj = _update(obj, "weighted", lambda w: _update(w, "services", members))
        return _update(obj, "loadBalancer", lambda lb: _update(lb, "serversTransport", refs))

    fixers: dict[str, Callable[[Any], Any]] = {"routers": router, "services": service}
    out: dict[str, Any] = {}
    for key, value in section.items():
        kind = key.lower()
        if kind in _RAW_SECTIONS and isinstance(value, Mapping):
            fix = fixers.get(kind, lambda obj: obj)
            value = frozen_map({own(f"{proto}.{key}", n): fix(o) for n, o in value.items()})
        out[key] = value
    return frozen_map(out)


def _bare_any(value: Any) -> Any:
    return _bare(value) if isinstance(value, str) else value


def _update(obj: Any, key: str, fix: Callable[[Any], Any]) -> Any:
    """``obj`` with ``fix`` applied to its ``key`` (any case), if it has one."""
    if not isinstance(obj, Mapping):
        return obj
    lowered = key.lower()
    if not any(k.lower() == lowered for k in obj):
        return obj
    return frozen_map({k: fix(v) if k.lower() == lowered else v for k, v in obj.items()})


# One provider's origins: its key paths, the named sections to qualify in
# them (names, and whether any name holds "." or "["), and the provider.
_Part = tuple[Mapping[str, Origin], Mapping[str, tuple[frozenset[str], bool]], str]


class _Origins(Mapping[str, Origin]):
    """Merged origins, worked out on first use.

    A merge renames every key path (50,000 for 10,000 routers), but origins
    are read only to locate an error; so the renaming waits until then. Parts
    combine as ``_join`` always combined them: the first part naming a path
    wins. Read-only; it pickles as its parts (read-only maps, which the
    workers' reducer for ``MappingProxyType`` covers).
    """

    __slots__ = ("_flat", "_parts")

    def __init__(self, parts: tuple[_Part, ...]) -> None:
        self._parts = parts
        self._flat: dict[str, Origin] | None = None

    def _paths(self) -> dict[str, Origin]:
        flat = self._flat
        if flat is None:
            flat = {}
            for origins, sections, provider in self._parts:
                if sections:
                    origins = {
                        _qualified_path(path, sections, provider): origin
                        for path, origin in origins.items()
                    }
                for path, origin in origins.items():
                    flat.setdefault(path, origin)
            self._flat = flat
        return flat

    def __getitem__(self, path: str) -> Origin:
        return self._paths()[path]

    def __iter__(self) -> Iterator[str]:
        return iter(self._paths())

    def __len__(self) -> int:
        return len(self._paths())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._paths()!r})"


def _parts(origins: Mapping[str, Origin]) -> tuple[_Part, ...]:
    if isinstance(origins, _Origins):
        return origins._parts
    return ((origins, {}, ""),)


def _sections(renamed: Mapping[str, Iterable[str]]) -> dict[str, tuple[frozenset[str], bool]]:
    sections: dict[str, tuple[frozenset[str], bool]] = {}
    for prefix, found in renamed.items():
        names = frozenset(found)
        sections[prefix] = (names, any("." in n or "[" in n for n in names))
    return sections


def _qualified_path(
    path: str, sections: Mapping[str, tuple[frozenset[str], bool]], provider: str
) -> str:
    # Every renamed section is two keys deep ("http.routers", "tcp.services").
    second = path.find(".", path.find(".") + 1)
    section = sections.get(path[:second]) if second > 0 else None
    if section is None:
        return path
    found, dotted = section
    start = second + 1
    if not dotted:
        # No name holds "." or "[": the name ends at the first of them.
        end = path.find(".", start)
        bracket = path.find("[", start, end if end >= 0 else len(path))
        if bracket >= 0:
            end = bracket
        if end < 0:
            end = len(path)
        if path[start:end] in found:
            return f"{path[:end]}@{provider}{path[end:]}"
        return path
    rest = path[start:]
    # Names may hold dots ("my.router"): take the longest name that fits.
    cut = len(rest)
    while cut >= 0:
        if rest[:cut] in found:
            return f"{path[:start]}{rest[:cut]}@{provider}{rest[cut:]}"
        cut = max(rest.rfind(".", 0, cut), rest.rfind("[", 0, cut))
    return path
