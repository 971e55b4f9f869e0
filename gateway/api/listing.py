"""Query handling of the API's list endpoints: Traefik's filters, sorting and pages.

Traefik's dashboard drives these parameters, so they keep Traefik's names and
behaviour (``pkg/api/criterion.go``, ``sort.go``):

* ``search`` (case-insensitive substring of the name, and of the rule for
  routers), ``status``, and for routers ``serviceName`` and ``middlewareName``;
* ``sortBy`` and ``direction`` (``asc``/``desc``), ties broken by name;
* ``page`` and ``per_page`` (default 100), with the next page number returned
  in the ``X-Next-Page`` header (``1`` on the last page).

Pure functions over plain dicts; the server applies them after redaction.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

DEFAULT_PER_PAGE = 100
NEXT_PAGE_HEADER = "X-Next-Page"

Kind = Literal["entrypoints", "routers", "services", "middlewares"]
Item = dict[str, Any]


class QueryError(ValueError):
    """A malformed list query; the API answers 400 with its message."""


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Item]
    next_page: int


def _text(field: str) -> Callable[[Item], str]:
    return lambda item: str(item.get(field) or "")


def _count(field: str) -> Callable[[Item], int]:
    return lambda item: len(item.get(field) or ())


def _servers(item: Item) -> int:
    balancer = item.get("loadBalancer")
    return len(balancer.get("servers") or ()) if isinstance(balancer, Mapping) else 0


def _priority(item: Item) -> int:
    value = item.get("priority")
    return value if isinstance(value, int) else 0


_SORT_KEYS: dict[Kind, dict[str, Callable[[Item], Any]]] = {
    "entrypoints": {},
    "routers": {
        "provider": _text("provider"),
        "priority": _priority,
        "status": _text("status"),
        "rule": _text("rule"),
        "service": _text("service"),
        "entryPoints": _count("entryPoints"),
    },
    "services": {
        "type": _text("type"),
        "servers": _servers,
        "provider": _text("provider"),
        "status": _text("status"),
    },
    "middlewares": {
        "type": _text("type"),
        "provider": _text("provider"),
        "status": _text("status"),
    },
}


def _int_param(query: Mapping[str, str], key: str, default: int) -> int:
    raw = query.get(key, "")
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise QueryError(f"invalid request: {key}: {raw}")
    return value


def _service_matches(wanted: str, service: str) -> bool:
    # A router's service may be unqualified ("api"), meaning its own provider's.
    if "@" in service:
        return wanted == service
    return wanted.partition("@")[0] == service


def _keep(kind: Kind, item: Item, query: Mapping[str, str]) -> bool:
    status = query.get("status", "")
    if status and str(item.get("status", "")).lower() != status.lower():
        return False
    search = query.get("search", "").lower()
    if search:
        haystack = [str(item.get("name", ""))]
        if kind == "routers":
            haystack.append(str(item.get("rule", "")))
        if not any(search in value.lower() for value in haystack):
            return False
    if kind != "routers":
        return True
    service = query.get("serviceName", "")
    if service and not _service_matches(service, str(item.get("service", ""))):
        return False
    middleware = query.get("middlewareName", "")
    return not middleware or middleware in (item.get("middlewares") or ())


def select(kind: Kind, items: Sequence[Item], query: Mapping[str, str]) -> Page:
    """Filter, sort and paginate ``items`` as Traefik's list endpoints do."""
    kept = [item for item in items if _keep(kind, item, query)]
    name = _text("name")
    primary = _SORT_KEYS[kind].get(query.get("sortBy", ""))
    descending = query.get("direction", "asc") == "desc"
    if primary is None:
        kept.sort(key=name, reverse=descending)
    else:
        key = primary
        kept.sort(key=lambda item: (key(item), name(item)), reverse=descending)

    per_page = _int_param(query, "per_page", DEFAULT_PER_PAGE)
    page = _int_param(query, "page", 1)
    start = (page - 1) * per_page
    if start and start >= len(kept):
        raise QueryError(f"invalid request: page: {page}, per_page: {per_page}")
    next_page = page + 1 if page * per_page < len(kept) else 1
    return Page(kept[start : start + per_page], next_page)
