"""The cache's raw objects -> one dynamic configuration and the status the cluster should show.

The same parse and translate as file mode, with one difference: in file mode
one invalid object makes the whole snapshot an error (the files are one unit
an operator edits; the error points at the line, and the last good
configuration keeps serving). In Kubernetes mode objects belong to different
people and arrive one by one, already admitted by the API server: one team's
bad HTTPRoute must not freeze every other team's routes. So an object the
parser refuses is left out of the snapshot, and the refusal goes where
Kubernetes users look, the object's own status: ``Accepted=False`` with reason
``UnsupportedValue`` on each parent of a route, ``Invalid`` on a Gateway or
GatewayClass. (An object of another controller gets no status, as for valid
ones.) Refused objects without a status we own (a Service, a Middleware) are
reported in ``Build.invalid`` for the log.

The configuration as a whole can still be an error: the generated mappings
are decoded by the normal loader, and a Sluice ``Middleware`` whose ``spec``
is not a valid middleware fails there; the app then keeps the last good one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.config.dynamic import DynamicConfig
from gateway.config.errors import ConfigError
from gateway.config.loader import decode_value
from providers.gatewayapi.files import without_empty
from providers.gatewayapi.objects import CONTROLLER, GROUP
from providers.gatewayapi.parse import parse_objects
from providers.gatewayapi.translate import ObjectKey, translate

ROUTE_KINDS = ("HTTPRoute", "TLSRoute", "TCPRoute", "UDPRoute")


@dataclass(slots=True)
class Build:
    """One snapshot's configuration (or why there is none) and status."""

    config: DynamicConfig | ConfigError
    status: dict[ObjectKey, dict[str, Any]] = field(default_factory=dict)
    # Objects left out, with why; the ones that can carry it have it in ``status`` too.
    invalid: dict[ObjectKey, str] = field(default_factory=dict)
    problems: dict[tuple[str, str, str], str] = field(default_factory=dict)


def build(docs: Sequence[Mapping[str, Any]], *, default_address: str, now: str) -> Build:
    """Parse and translate ``docs`` (raw objects with apiVersion and kind)."""
    parsed = parse_objects(((doc, None) for doc in docs), now=now)
    labels = {_label(doc): doc for doc in docs}
    invalid: dict[ObjectKey, str] = {}
    refused: dict[ObjectKey, Mapping[str, Any]] = {}
    for error in parsed.errors:
        label, _, where = error.path.partition(": ")
        doc = labels.get(label)
        if doc is None:
            continue
        key = _object_key(doc)
        message = f"{where}: {error.message}" if where else error.message
        invalid.setdefault(key, message)
        refused.setdefault(key, doc)
    translation = translate(parsed.objects, default_address=default_address,
                            problems=parsed.problems)
    status = dict(translation.status)
    for key, doc in refused.items():
        found = _refused_status(key, doc, invalid[key], status)
        if found is not None:
            status[key] = found
    try:
        config: DynamicConfig | ConfigError = decode_value(
            DynamicConfig, without_empty(translation.config), origin=None, path=""
        )
    except ConfigError as exc:
        config = exc
    return Build(config, status, invalid, dict(parsed.problems))


def _refused_status(
    key: ObjectKey, doc: Mapping[str, Any], message: str, status: Mapping[ObjectKey, Any]
) -> dict[str, Any] | None:
    kind, namespace, _ = key
    generation = _generation(doc)
    found = doc.get("spec")
    spec: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    if kind == "GatewayClass":
        if spec.get("controllerName") != CONTROLLER:
            return None
        return {"conditions": [_condition("Accepted", "Invalid", message, generation)]}
    if kind == "Gateway":
        if ("GatewayClass", "", spec.get("gatewayClassName")) not in status:
            return None
        return {"conditions": [
            _condition("Accepted", "Invalid", message, generation),
            _condition("Programmed", "Invalid", message, generation),
        ]}
    if kind not in ROUTE_KINDS:
        return None
    parents = []
    refs = spec.get("parentRefs")
    for ref in refs if isinstance(refs, list) else ():
        if not isinstance(ref, Mapping) or not isinstance(ref.get("name"), str):
            continue
        if ref.get("group", GROUP) != GROUP or ref.get("kind", "Gateway") != "Gateway":
            continue
        gateway_ns = str(ref.get("namespace") or namespace)
        if ("Gateway", gateway_ns, ref["name"]) not in status:
            continue  # not one of ours (reference §3.4: no entry for foreign parents)
        parent_ref: dict[str, Any] = {
            "group": GROUP, "kind": "Gateway", "namespace": gateway_ns, "name": ref["name"],
        }
        for field_name in ("sectionName", "port"):
            if ref.get(field_name):
                parent_ref[field_name] = ref[field_name]
        parents.append({
            "parentRef": parent_ref,
            "controllerName": CONTROLLER,
            "conditions": [_condition("Accepted", "UnsupportedValue", message, generation)],
        })
    return {"parents": parents} if parents else None


def _condition(type_: str, reason: str, message: str, generation: int) -> dict[str, Any]:
    return {"type": type_, "status": "False", "reason": reason, "message": message,
            "observedGeneration": generation}


def _generation(doc: Mapping[str, Any]) -> int:
    metadata = doc.get("metadata")
    value = metadata.get("generation") if isinstance(metadata, Mapping) else None
    return value if isinstance(value, int) and value > 0 else 1


def _object_key(doc: Mapping[str, Any]) -> ObjectKey:
    metadata = doc.get("metadata")
    metadata = metadata if isinstance(metadata, Mapping) else {}
    return (str(doc.get("kind")), str(metadata.get("namespace") or ""), str(metadata.get("name")))


def _label(doc: Mapping[str, Any]) -> str:
    """The label the parser puts first in an error's path (``HTTPRoute ns/name``)."""
    kind, namespace, name = _object_key(doc)
    return f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"
