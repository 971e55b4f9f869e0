"""Gateways and their listeners: entry points to open, conflicts, certificates, listener status.

Each Gateway of our GatewayClass binds its listeners on its own address:
``spec.addresses[0]`` when it is an IP address, else the provider's default
(every interface). Listeners of one Gateway on one port share one Sluice
entry point (``gateway-<ns>-<name>-<hash>-<port>``, ``-udp`` for UDP), so
several HTTP/HTTPS/TLS listeners on a port are told apart by host name and
SNI, as the spec's "distinct listeners" allow (reference §2.10):

* same port, incompatible protocols (TCP or UDP with anything else of its
  transport, HTTP with HTTPS or TLS) -> ``Conflicted=True ProtocolConflict``
  on all of them; HTTPS and TLS may share a port (SNI tells them apart);
* same port, protocol and hostname -> ``Conflicted=True HostnameConflict``.

No winner is picked: conflicted listeners are not served, the others are.
Certificates of HTTPS and TLS-terminate listeners come from Secrets of type
``kubernetes.io/tls``; a Secret in another namespace needs a ReferenceGrant.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from providers.gatewayapi.objects import Gateway, Listener, ObjectSet, RouteKind
from providers.gatewayapi.refs import listener_kinds, reference_permitted

HTTP_FAMILY = {"HTTP": "http", "HTTPS": "tls", "TLS": "tls"}
CORE_PROTOCOLS = ("HTTP", "HTTPS", "TLS", "TCP", "UDP")

Condition = tuple[str, str, str, str]  # type, status, reason, message


@dataclass(slots=True)
class ListenerState:
    """One listener after checking: where it is served and its conditions so far."""

    gateway: Gateway
    listener: Listener
    entry_point: str = ""
    supported: tuple[RouteKind, ...] = ()
    conditions: dict[str, Condition] = field(default_factory=dict)
    certificates: list[dict[str, str]] = field(default_factory=list)  # inline PEM pairs
    attached: set[tuple[str, str, str]] = field(default_factory=set)  # route kind, ns, name

    @property
    def usable(self) -> bool:
        accepted = self.conditions.get("Accepted")
        return accepted is not None and accepted[1] == "True"

    def set(self, type_: str, status: str, reason: str, message: str = "") -> None:
        self.conditions[type_] = (type_, status, reason, message)


@dataclass(slots=True)
class GatewayPlan:
    gateway: Gateway
    address: str
    listeners: list[ListenerState]
    entry_points: dict[str, dict[str, Any]]


def entry_point_name(base: str, port: int, protocol: str) -> str:
    return f"{base}-{port}" + ("-udp" if protocol == "UDP" else "")


def plan_gateway(
    gateway: Gateway, objects: ObjectSet, base: str, default_address: str
) -> GatewayPlan:
    """Check ``gateway``'s listeners and decide the entry points that serve them."""
    address = next(
        (a.value for a in gateway.addresses if a.type == "IPAddress" and a.value), default_address
    )
    host = f"[{address}]" if ":" in address else address
    states = [ListenerState(gateway, listener) for listener in gateway.listeners]
    for state in states:
        _check_protocol_and_kinds(state)
    _check_conflicts(states)
    entry_points: dict[str, dict[str, Any]] = {}
    for state in states:
        listener = state.listener
        if listener.protocol in ("HTTPS", "TLS") and listener.tls_mode == "Terminate":
            _certificates(state, objects)
        if "Accepted" not in state.conditions:
            state.set("Accepted", "True", "Accepted")
        if not state.usable:
            state.set("Programmed", "False", "Invalid", "the listener is not accepted")
            continue
        resolved = state.conditions.get("ResolvedRefs")
        if resolved is not None and resolved[2] == "InvalidCertificateRef":
            state.set("Programmed", "False", "Invalid", "no usable certificate")
            continue
        name = entry_point_name(base, listener.port, listener.protocol)
        state.entry_point = name
        suffix = "/udp" if listener.protocol == "UDP" else ""
        # SO_REUSEPORT: two replicas on one host serve the same listeners side
        # by side, and a restart hands over without refusing a connection.
        entry_points[name] = {"address": f"{host}:{listener.port}{suffix}", "reusePort": True}
        state.set("Programmed", "True", "Programmed")
        state.conditions.setdefault("ResolvedRefs", ("ResolvedRefs", "True", "ResolvedRefs", ""))
        state.conditions.setdefault("Conflicted", ("Conflicted", "False", "NoConflicts", ""))
    return GatewayPlan(gateway, address, states, entry_points)


def _check_protocol_and_kinds(state: ListenerState) -> None:
    listener = state.listener
    supported, invalid = listener_kinds(listener)
    state.supported = supported
    if listener.protocol not in CORE_PROTOCOLS:
        state.set(
            "Accepted", "False", "UnsupportedProtocol",
            f"protocol {listener.protocol} is not supported",
        )
    if invalid:
        kinds = ", ".join(k.kind for k in invalid)
        state.set("ResolvedRefs", "False", "InvalidRouteKinds", f"unsupported route kinds: {kinds}")


def _check_conflicts(states: list[ListenerState]) -> None:
    by_port: dict[tuple[int, str], list[ListenerState]] = defaultdict(list)
    for state in states:
        if state.listener.protocol in CORE_PROTOCOLS and "Accepted" not in state.conditions:
            transport = "udp" if state.listener.protocol == "UDP" else "tcp"
            by_port[(state.listener.port, transport)].append(state)
    for group in by_port.values():
        families = {
            HTTP_FAMILY.get(s.listener.protocol, s.listener.protocol.lower()) for s in group
        }
        if len(families) > 1 or (families & {"tcp", "udp"} and len(group) > 1):
            for state in group:
                state.set("Conflicted", "True", "ProtocolConflict",
                          "another listener on this port uses an incompatible protocol")
                state.set("Accepted", "False", "ProtocolConflict",
                          "another listener on this port uses an incompatible protocol")
            continue
        seen: dict[tuple[str, str], list[ListenerState]] = defaultdict(list)
        for state in group:
            seen[(state.listener.protocol, state.listener.hostname)].append(state)
        for same in seen.values():
            if len(same) > 1:
                for state in same:
                    state.set("Conflicted", "True", "HostnameConflict",
                              "another listener on this port has the same hostname")
                    state.set("Accepted", "False", "HostnameConflict",
                              "another listener on this port has the same hostname")


def _certificates(state: ListenerState, objects: ObjectSet) -> None:
    gateway = state.gateway
    refs = state.listener.certificate_refs
    if not refs:
        state.set("ResolvedRefs", "False", "InvalidCertificateRef", "no certificateRefs")
        return
    for ref in refs:
        if ref.group not in ("", "core") or ref.kind != "Secret":
            group = ref.group or "core"
            state.set("ResolvedRefs", "False", "InvalidCertificateRef",
                      f"certificateRef to {ref.kind} in group {group} is not supported")
            return
        namespace = ref.namespace or gateway.meta.namespace
        if namespace != gateway.meta.namespace and not reference_permitted(
            objects,
            from_group="gateway.networking.k8s.io",
            from_kind="Gateway",
            from_namespace=gateway.meta.namespace,
            to_group="",
            to_kind="Secret",
            to_namespace=namespace,
            to_name=ref.name,
        ):
            state.set("ResolvedRefs", "False", "RefNotPermitted",
                      f"no ReferenceGrant allows Secret {namespace}/{ref.name}")
            return
        secret = objects.secrets.get((namespace, ref.name))
        crt = secret.data.get("tls.crt", b"") if secret is not None else b""
        key = secret.data.get("tls.key", b"") if secret is not None else b""
        if secret is None or b"-----BEGIN" not in crt or b"-----BEGIN" not in key:
            what = "not found" if secret is None else "has no PEM tls.crt and tls.key"
            state.set("ResolvedRefs", "False", "InvalidCertificateRef",
                      f"Secret {namespace}/{ref.name} {what}")
            return
        state.certificates.append(
            {"certFile": crt.decode("utf-8", "replace"), "keyFile": key.decode("utf-8", "replace")}
        )
