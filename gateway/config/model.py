"""Building blocks shared by the static and dynamic configuration models.

Every configuration class is a frozen, slotted, keyword-only dataclass built by
the loader (``gateway.config.loader``) and never mutated afterwards, so two
snapshots compare with ``==`` and may be shared between tasks without copies.

The loader is driven entirely by these declarations:

* a field's YAML key is its camelCase name, or ``field(metadata={"key": ...})``
  when Traefik's spelling differs from a valid Python identifier;
* ``Duration`` fields accept Traefik durations (``"10s"``, ``"1m30s"``,
  ``"250ms"``) or plain numbers of seconds;
* ``Mapping[str, X]`` fields hold named children (routers, services, ...);
* a class that declares ``ONE_OF`` must have exactly one of those fields set
  (a service is a ``loadBalancer`` *or* a ``weighted`` service);
* a class that declares ``REQUIRED`` rejects snapshots missing those keys.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType
from typing import Annotated, Any, TypeVar, dataclass_transform

T = TypeVar("T")


class DurationMarker:
    """Marks a float field holding seconds, written as a Traefik duration."""


Duration = Annotated[float, DurationMarker]

EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass_transform(frozen_default=True, kw_only_default=True)
def model(cls: type[T]) -> type[T]:
    """Declare a configuration class: frozen, slotted and keyword-only."""
    return dataclasses.dataclass(frozen=True, slots=True, kw_only=True)(cls)


def key(name: str, default: Any = dataclasses.MISSING, **kwargs: Any) -> Any:
    """A field whose YAML key is ``name`` rather than the camelCase field name."""
    metadata = {"key": name}
    if default is dataclasses.MISSING:
        return dataclasses.field(metadata=metadata, **kwargs)
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


def frozen_map(items: Mapping[str, T] | None = None) -> Mapping[str, T]:
    """A read-only mapping; the model's stand-in for a frozen dict."""
    return MappingProxyType(dict(items or {}))


def empty_map() -> Any:
    """Default factory for ``Mapping`` fields."""
    return dataclasses.field(default_factory=frozen_map)


def yaml_key(f: dataclasses.Field[Any]) -> str:
    """The key a field is spelled with in YAML."""
    explicit = f.metadata.get("key")
    if explicit:
        return str(explicit)
    head, *rest = f.name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)
