"""Gateway API objects -> Sluice's dynamic configuration, entry points and status.

``translate(objects)`` is the whole translation of one snapshot; both the
file provider and the Kubernetes provider call it. Its output is plain
mappings in the file dialect (``entryPoints``, ``http``, ``tcp``, ``udp``,
``tls``), so the loader, validator and compiler see nothing new, plus the
status of every object the controller owns.

Order of work (reference: /work/notes/gatewayapi-spec.md):

1. GatewayClasses with ``controllerName: sluice.dev/gateway-controller`` are
   accepted; others, and their Gateways, are ignored (no status written).
2. Each Gateway's listeners are checked and given entry points
   (``listeners.py``).
3. Each route's parentRefs are attached to listeners (§2.2: sectionName and
   port, allowed kinds and namespaces, protocol, hostname intersection),
   each parent getting ``Accepted`` with the first reason that failed.
4. HTTPRoutes are translated by ``httproute.py`` (precedence, filters,
   backends); TCPRoute, UDPRoute and TLSRoute (passthrough) become TCP and
   UDP routers to weighted services of their endpoints.
5. Status: GatewayClass, Gateway (with addresses and listeners'
   ``attachedRoutes``), each route's parents.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from providers.gatewayapi.backends import Resolved, Unresolved, resolve
from providers.gatewayapi.httproute import Attachment, object_name, translate_http_route
from providers.gatewayapi.httproute_filters import extension_name
from providers.gatewayapi.httproute_rules import route_ranks
from providers.gatewayapi.listeners import GatewayPlan, ListenerState, plan_gateway
from providers.gatewayapi.objects import (
    CONTROLLER,
    GROUP,
    SLUICE_GROUP,
    BackendRef,
    Gateway,
    HTTPRoute,
    L4Route,
    ObjectSet,
    ParentRef,
)
from providers.gatewayapi.refs import (
    PROTOCOL_KINDS,
    host_matches,
    hostname_intersection,
    namespace_allowed,
)

ObjectKey = tuple[str, str, str]  # kind, namespace ("" if cluster-scoped), name
# Listener protocols each route kind can ride on.
_CARRIERS = {
    "HTTPRoute": ("HTTP", "HTTPS"),
    "TLSRoute": ("TLS",),
    "TCPRoute": ("TCP",),
    "UDPRoute": ("UDP",),
}


@dataclass(slots=True)
class Translation:
    """One snapshot's configuration (file-dialect mappings) and status."""

    config: dict[str, Any] = field(default_factory=dict)
    status: dict[ObjectKey, dict[str, Any]] = field(default_factory=dict)


def translate(
    objects: ObjectSet,
    *,
    default_address: str = "",
    controller: str = CONTROLLER,
    problems: Mapping[tuple[str, str, str], str] | None = None,
) -> Translation:
    """Translate one snapshot; ``problems`` are the parser's kept-but-unusable objects.

    A route among ``problems`` is attached (so its parents get status) but
    generates nothing: its parents say ``Accepted=False UnsupportedValue``.
    """
    problems = problems or {}
    out = Translation()
    config: dict[str, Any] = {
        "entryPoints": {},
        "http": {"routers": {}, "services": {}, "middlewares": {}},
        "tcp": {"routers": {}, "services": {}},
        "udp": {"routers": {}, "services": {}},
        "tls": {"certificates": []},
    }
    out.config = config
    classes = {
        name: gc for name, gc in objects.gateway_classes.items()
        if gc.controller_name == controller
    }
    for name, gc in classes.items():
        out.status[("GatewayClass", "", name)] = {
            "conditions": [_condition("Accepted", "True", "Accepted", "", gc.meta.generation)]
        }
    plans: dict[tuple[str, str], GatewayPlan] = {}
    for key, gateway in sorted(objects.gateways.items()):
        if gateway.class_name not in classes:
            continue
        base = object_name("gateway", gateway.meta.namespace, gateway.meta.name)
        plan = plan_gateway(gateway, objects, base, default_address)
        plans[key] = plan
        config["entryPoints"].update(plan.entry_points)
        for state in plan.listeners:
            if state.entry_point:
                config["tls"]["certificates"].extend(state.certificates)
    # A Middleware is defined where it is used: HTTP middlewares and TCP/UDP
    # ones have different types, and every defined one must decode.
    for namespace, name in sorted(_http_extension_refs(objects)):
        middleware = objects.middlewares.get((namespace, name))
        if middleware is not None:
            config["http"]["middlewares"][extension_name(namespace, name)] = dict(middleware.spec)
    extensions = set(objects.middlewares)
    ranks = route_ranks(objects.http_routes.values())
    for key, route in sorted(objects.http_routes.items()):
        attachments = _attach(out, "HTTPRoute", route.meta, route.parent_refs, route.hostnames,
                              plans, objects)
        problem = problems.get(("HTTPRoute", *key))
        if problem is not None:
            _unsupported(out, ("HTTPRoute", *key), problem, route.meta.generation)
            continue
        _translate_http(out, route, attachments, objects, ranks[key], len(ranks), extensions)
    for l4_key, l4 in sorted(objects.l4_routes.items()):
        kind = l4_key[0]
        attachments = _attach(out, kind, l4.meta, l4.parent_refs, l4.hostnames, plans, objects)
        problem = problems.get(l4_key)
        if problem is not None:
            _unsupported(out, l4_key, problem, l4.meta.generation)
            continue
        _translate_l4(out, l4, attachments, objects)
    for plan in plans.values():
        out.status[("Gateway", plan.gateway.meta.namespace, plan.gateway.meta.name)] = (
            _gateway_status(plan)
        )
    return out


# --- attachment ------------------------------------------------------------------------


@dataclass(slots=True)
class _Attached:
    state: ListenerState
    hostnames: tuple[str, ...]
    siblings: list[ListenerState] = field(default_factory=list)  # the Gateway's listeners


def _attach(
    out: Translation,
    kind: str,
    meta: Any,
    parent_refs: tuple[ParentRef, ...],
    hostnames: tuple[str, ...],
    plans: dict[tuple[str, str], GatewayPlan],
    objects: ObjectSet,
) -> list[_Attached]:
    """Attach a route to listeners; record each parent's ``Accepted`` condition."""
    attached: list[_Attached] = []
    parents = out.status.setdefault((kind, meta.namespace, meta.name), {"parents": []})
    for ref in parent_refs:
        if ref.group != GROUP or ref.kind != "Gateway":
            continue
        plan = plans.get((ref.namespace, ref.name))
        if plan is None:
            continue  # not ours, or no such Gateway: no status entry (reference §2.2.1)
        found, reason, message = _listeners_for(kind, meta, ref, hostnames, plan, objects)
        for item in found:
            item.state.attached.add((kind, meta.namespace, meta.name))
        attached.extend(found)
        parents["parents"].append(
            {
                "parentRef": _parent_ref(ref),
                "controllerName": CONTROLLER,
                "conditions": [
                    _condition(
                        "Accepted", "True" if found else "False", reason, message,
                        meta.generation,
                    )
                ],
            }
        )
    return attached


def _listeners_for(
    kind: str,
    meta: Any,
    ref: ParentRef,
    hostnames: tuple[str, ...],
    plan: GatewayPlan,
    objects: ObjectSet,
) -> tuple[list[_Attached], str, str]:
    candidates = [
        s for s in plan.listeners
        if (not ref.section_name or s.listener.name == ref.section_name)
        and (not ref.port or s.listener.port == ref.port)
    ]
    if not candidates:
        return [], "NoMatchingParent", "no listener matches the parentRef's sectionName/port"
    gateway_ns = plan.gateway.meta.namespace
    # Kinds as the listener writes them (or its protocol's default); whether the
    # protocol can carry the kind is the next step, with its own reason (§2.2).
    allowed = [
        s for s in candidates
        if any(
            k.kind == kind and k.group == GROUP
            for k in s.listener.kinds or PROTOCOL_KINDS.get(s.listener.protocol, ())
        )
        and namespace_allowed(s.listener, gateway_ns, meta.namespace, objects)
    ]
    if not allowed:
        return [], "NotAllowedByListeners", "no listener allows this route's kind or namespace"
    carriers = [s for s in allowed if s.listener.protocol in _CARRIERS.get(kind, ())]
    if not carriers:
        return [], "NoMatchingParent", f"no listener's protocol can carry a {kind}"
    matched: list[_Attached] = []
    for state in carriers:
        if kind in ("TCPRoute", "UDPRoute"):
            matched.append(_Attached(state, (), plan.listeners))
            continue
        common = hostname_intersection(state.listener.hostname, hostnames)
        if common is not None:
            matched.append(_Attached(state, common, plan.listeners))
    if not matched:
        return [], "NoMatchingListenerHostname", "no listener hostname intersects the route's"
    return matched, "Accepted", ""


# --- routes --------------------------------------------------------------------------------


def _translate_http(
    out: Translation,
    route: HTTPRoute,
    attached: list[_Attached],
    objects: ObjectSet,
    rank: int,
    count: int,
    extensions: set[tuple[str, str]],
) -> None:
    usable = [a for a in attached if a.state.entry_point]
    attachments = [
        Attachment(
            entry_point=a.state.entry_point,
            hostnames=a.hostnames,
            listener_port=a.state.listener.port,
            tls=a.state.listener.protocol == "HTTPS",
            excluded=_more_specific(a.state, a.siblings),
        )
        for a in usable
    ]

    def resolver(ref: BackendRef) -> Resolved | Unresolved:
        return resolve(objects, ref, from_kind="HTTPRoute", from_namespace=route.meta.namespace)

    result = translate_http_route(
        route, attachments, resolver, rank=rank, route_count=count, extensions=extensions
    )
    http = out.config["http"]
    http["routers"].update(result.routers)
    http["services"].update(result.services)
    http["middlewares"].update(result.middlewares)
    _finish_parents(out, ("HTTPRoute", route.meta.namespace, route.meta.name),
                    result.problems, route.meta.generation)


def _translate_l4(
    out: Translation, route: L4Route, attached: list[_Attached], objects: ObjectSet
) -> None:
    protocol = "UDP" if route.kind == "UDPRoute" else "TCP"
    section = "udp" if protocol == "UDP" else "tcp"
    base = object_name(route.kind.lower(), route.meta.namespace, route.meta.name)
    problems: list[tuple[str, str, str]] = []
    members: list[dict[str, Any]] = []
    services = out.config[section]["services"]
    for r, rule in enumerate(route.rules):
        for b, ref in enumerate(rule.backend_refs):
            found = resolve(objects, ref, from_kind=route.kind,
                            from_namespace=route.meta.namespace, protocol=protocol)
            if isinstance(found, Unresolved):
                problems.append(("ResolvedRefs", found.reason, found.message))
                continue
            if ref.weight <= 0 or not found.servers:
                continue
            name = f"{base}-r{r}-b{b}"
            services[name] = {"loadBalancer": {"servers": [
                {"address": f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"}
                for ip, port in found.servers
            ]}}
            members.append({"name": name, "weight": ref.weight})
    service = f"{base}-all"
    if members:
        services[service] = {"weighted": {"services": members}}
    chain, missing = _l4_middlewares(out, route, objects, section)
    if missing:
        # Fail closed: a route whose allowlist or limit is missing is not served.
        problems.insert(0, ("Accepted", "UnsupportedValue", missing))
        members = []
    for a, item in enumerate(attached):
        if not item.state.entry_point or not members:
            continue
        router: dict[str, Any] = {"entryPoints": [item.state.entry_point], "service": service}
        if chain:
            router["middlewares"] = chain
        routers = out.config[section]["routers"]
        if route.kind == "TLSRoute":
            # One router per hostname: an exact name beats any wildcard, a
            # longer wildcard a shorter one (as listeners are chosen, §2.4).
            for h, hostname in enumerate(item.hostnames or ("*",)):
                wildcard = hostname.startswith("*")
                terminate = item.state.listener.tls_mode == "Terminate"
                routers[f"{base}-a{a}-h{h}"] = {
                    **router,
                    "rule": _sni_matcher(hostname),
                    "priority": (1 if wildcard else 2) * 1000 + len(hostname),
                    # A Terminate listener ends TLS here with its certificates
                    # (TLSRouteModeTerminate); Passthrough relays it untouched.
                    "tls": {} if terminate else {"passthrough": True},
                }
            continue
        if section == "tcp":
            router["rule"] = "HostSNI(`*`)"
        routers[f"{base}-a{a}"] = router
    _finish_parents(out, (route.kind, route.meta.namespace, route.meta.name), problems,
                    route.meta.generation)


MIDDLEWARES_ANNOTATION = "sluice.dev/middlewares"


def _http_extension_refs(objects: ObjectSet) -> set[tuple[str, str]]:
    """(namespace, name) of the Sluice Middlewares HTTPRoutes reference (ExtensionRef)."""
    found: set[tuple[str, str]] = set()
    for (namespace, _), route in objects.http_routes.items():
        for rule in route.rules:
            filters = [*rule.filters, *(f for ref in rule.backend_refs for f in ref.filters)]
            for item in filters:
                ref = item.extension_ref
                if ref is not None and ref.group == SLUICE_GROUP and ref.kind == "Middleware":
                    found.add((namespace, ref.name))
    return found


def _l4_middlewares(
    out: Translation, route: L4Route, objects: ObjectSet, section: str
) -> tuple[list[str], str]:
    """Middlewares a TCP/UDP/TLS route names in its ``sluice.dev/middlewares`` annotation.

    Beyond the spec: the annotation lists Sluice ``Middleware`` objects
    (``name`` in the route's namespace, or ``namespace/name``) whose ``spec``
    is a TCP or UDP middleware (``ipAllowList``, ``inFlightConn``,
    ``rateLimit``). Returns the middleware names, and what is missing.
    """
    text = route.meta.annotations.get(MIDDLEWARES_ANNOTATION, "")
    names: list[str] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        namespace, _, name = item.rpartition("/")
        namespace = namespace or route.meta.namespace
        middleware = objects.middlewares.get((namespace, name))
        if middleware is None:
            return [], f"Middleware {namespace}/{name} named in {MIDDLEWARES_ANNOTATION} not found"
        key = extension_name(namespace, name)
        out.config[section].setdefault("middlewares", {})[key] = dict(middleware.spec)
        names.append(key)
    return names, ""


def _more_specific(state: ListenerState, siblings: list[ListenerState]) -> tuple[str, ...]:
    """Hostnames of the listeners sharing ``state``'s entry point that lie within its own.

    Listener isolation: a request for such a host belongs to that listener's
    routes only, even when this (less specific) listener's routes match it.
    """
    mine = state.listener.hostname
    found: list[str] = []
    for other in siblings:
        host = other.listener.hostname
        if (
            other is state
            or other.entry_point != state.entry_point
            or not host
            or host == mine
            or other.listener.protocol not in ("HTTP", "HTTPS")
        ):
            continue
        if not mine or host_matches(mine, host):
            found.append(host)
    return tuple(sorted(set(found)))


def _sni_matcher(hostname: str) -> str:
    """A TLSRoute hostname as a TCP rule matcher.

    A Gateway API wildcard covers any number of labels (``*.com`` matches
    ``a.b.com``), Sluice's ``HostSNI(`*.x`)`` exactly one: wildcards become a
    regexp on the suffix.
    """
    if hostname.startswith("*.") and hostname != "*":
        suffix = re.escape(hostname[1:])
        return f"HostSNIRegexp(`^.+{suffix}$`)"
    return f"HostSNI(`{hostname}`)"


def _unsupported(out: Translation, key: ObjectKey, problem: str, generation: int) -> None:
    for parent in out.status.get(key, {}).get("parents", []):
        parent["conditions"] = [
            _condition("Accepted", "False", "UnsupportedValue", problem, generation),
            _condition("ResolvedRefs", "True", "ResolvedRefs", "", generation),
        ]


def _finish_parents(
    out: Translation, key: ObjectKey, problems: list[tuple[str, str, str]], generation: int
) -> None:
    """Add ``ResolvedRefs`` (and any route-level problem) to each parent's conditions."""
    resolved = next((p for p in problems if p[0] == "ResolvedRefs"), None)
    for parent in out.status.get(key, {}).get("parents", []):
        conditions = parent["conditions"]
        for type_, reason, message in problems:
            if type_ == "Accepted" and conditions[0]["status"] == "True":
                conditions[0] = _condition("Accepted", "False", reason, message, generation)
            elif type_ == "PartiallyInvalid":
                conditions.append(_condition(type_, "True", reason, message, generation))
        if resolved is None:
            conditions.append(_condition("ResolvedRefs", "True", "ResolvedRefs", "", generation))
        else:
            conditions.append(
                _condition("ResolvedRefs", "False", resolved[1], resolved[2], generation)
            )


# --- status --------------------------------------------------------------------------------


def _gateway_status(plan: GatewayPlan) -> dict[str, Any]:
    gateway: Gateway = plan.gateway
    generation = gateway.meta.generation
    listeners = []
    valid = 0
    for state in plan.listeners:
        valid += state.usable
        listeners.append(
            {
                "name": state.listener.name,
                "supportedKinds": [{"group": k.group, "kind": k.kind} for k in state.supported],
                "attachedRoutes": len(state.attached),
                "conditions": [
                    _condition(t, s, r, m, generation) for t, s, r, m in state.conditions.values()
                ],
            }
        )
    if valid == len(plan.listeners):
        accepted = _condition("Accepted", "True", "Accepted", "", generation)
    else:
        accepted = _condition(
            "Accepted", "True" if valid else "False", "ListenersNotValid",
            f"{len(plan.listeners) - valid} listener(s) not valid", generation,
        )
    programmed = (
        _condition("Programmed", "True", "Programmed", "", generation)
        if valid
        else _condition("Programmed", "False", "Invalid", "no listener can be served", generation)
    )
    status: dict[str, Any] = {"conditions": [accepted, programmed], "listeners": listeners}
    if plan.address:
        status["addresses"] = [{"type": "IPAddress", "value": plan.address}]
    return status


def _condition(
    type_: str, status: str, reason: str, message: str, generation: int
) -> dict[str, Any]:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
    }


def _parent_ref(ref: ParentRef) -> dict[str, Any]:
    out: dict[str, Any] = {
        "group": ref.group, "kind": ref.kind, "namespace": ref.namespace, "name": ref.name,
    }
    if ref.section_name:
        out["sectionName"] = ref.section_name
    if ref.port:
        out["port"] = ref.port
    return out
