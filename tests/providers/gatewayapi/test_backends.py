"""Tests for providers.gatewayapi.backends: backendRef -> Service -> EndpointSlice endpoints.

Spec references are to /work/notes/gatewayapi-spec.md (§1.9 Service and
EndpointSlice, §2.8 backends, §2.11 check order).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from providers.gatewayapi.backends import Resolved, Unresolved, resolve
from providers.gatewayapi.objects import (
    GROUP,
    BackendRef,
    Endpoint,
    EndpointSlice,
    GrantFrom,
    GrantTo,
    Meta,
    ObjectSet,
    ReferenceGrant,
    Service,
    ServicePort,
    SlicePort,
)

WEB_PORT = ServicePort(80, name="http", target_port="web", app_protocol="kubernetes.io/ws")


def service(
    name: str = "web",
    namespace: str = "apps",
    ports: tuple[ServicePort, ...] = (WEB_PORT,),
    **fields: str,
) -> Service:
    return Service(Meta(name, namespace), ports=ports, **fields)


def endpoint_slice(
    name: str,
    *endpoints: Endpoint,
    service_name: str = "web",
    namespace: str = "apps",
    ports: tuple[SlicePort, ...] = (SlicePort(8080, name="http"),),
    address_type: str = "IPv4",
) -> EndpointSlice:
    return EndpointSlice(
        Meta(name, namespace),
        service_name=service_name,
        address_type=address_type,
        ports=ports,
        endpoints=endpoints,
    )


def world(*items: Service | EndpointSlice | ReferenceGrant) -> ObjectSet:
    objects = ObjectSet()
    for item in items:
        key = (item.meta.namespace, item.meta.name)
        if isinstance(item, Service):
            objects.services[key] = item
        elif isinstance(item, EndpointSlice):
            objects.slices[key] = item
        else:
            objects.grants[key] = item
    return objects


def ready(*addresses: str) -> Endpoint:
    return Endpoint(addresses=addresses, ready=True)


def resolve_web(objects: ObjectSet, **ref: Any) -> Resolved | Unresolved:
    backend = replace(BackendRef("web", "apps", port=80), **ref)
    return resolve(objects, backend, from_kind="HTTPRoute", from_namespace="apps")


def servers_of(result: Resolved | Unresolved) -> tuple[tuple[str, int], ...]:
    assert isinstance(result, Resolved), result
    return result.servers


# --- resolution -------------------------------------------------------------------------------


def test_resolves_service_port_to_ready_endpoints() -> None:
    """A Service port resolves to its slice endpoints on the slice port, with its appProtocol."""
    objects = world(service(), endpoint_slice("web-1", ready("10.0.0.2"), ready("10.0.0.1")))
    assert resolve_web(objects) == Resolved(
        servers=(("10.0.0.1", 8080), ("10.0.0.2", 8080)), app_protocol="kubernetes.io/ws"
    )


def test_named_target_port_resolves_through_the_slice_port_name() -> None:
    """targetPort "web" becomes the number the slice gives the Service port's name (§1.9)."""
    objects = world(
        service(
            ports=(
                ServicePort(80, name="http", target_port="web"),
                ServicePort(81, name="admin", target_port=9000),
            )
        ),
        endpoint_slice(
            "web-1",
            ready("10.0.0.1"),
            ports=(SlicePort(9000, name="admin"), SlicePort(3000, name="http")),
        ),
    )
    assert resolve_web(objects) == Resolved(servers=(("10.0.0.1", 3000),))
    assert resolve_web(objects, port=81) == Resolved(servers=(("10.0.0.1", 9000),))


def test_unnamed_single_port_matches_the_unnamed_slice_port() -> None:
    """A Service with one unnamed port matches the slice port with no name."""
    objects = world(
        service(ports=(ServicePort(8080),)),
        endpoint_slice("web-1", ready("10.0.0.1"), ports=(SlicePort(8080),)),
    )
    assert resolve_web(objects, port=8080) == Resolved(servers=(("10.0.0.1", 8080),))


def test_slice_without_the_port_name_contributes_nothing() -> None:
    """A slice whose ports do not name the Service port is skipped, not guessed."""
    objects = world(
        service(),
        endpoint_slice("web-1", ready("10.0.0.1"), ports=(SlicePort(9000, name="metrics"),)),
        endpoint_slice("web-2", ready("10.0.0.2")),
    )
    assert resolve_web(objects) == Resolved(
        servers=(("10.0.0.2", 8080),), app_protocol="kubernetes.io/ws"
    )


def test_slice_port_must_have_the_service_port_protocol() -> None:
    """A slice port with the right name but another protocol is not the Service port's."""
    objects = world(
        service(ports=(ServicePort(53, name="dns"),)),
        endpoint_slice(
            "web-1", ready("10.0.0.1"), ports=(SlicePort(53, name="dns", protocol="UDP"),)
        ),
    )
    assert resolve_web(objects, port=53) == Resolved(servers=())


READINESS = [
    # (id, ready, serving, terminating, used) — [K8S-ES] nil semantics
    ("all-unset-reads-as-ready", None, None, None, True),
    ("ready", True, None, None, True),
    ("ready-not-terminating", True, True, False, True),
    ("not-ready", False, None, None, False),
    ("not-ready-but-serving", False, True, None, False),
    ("unset-ready-not-serving", None, False, None, True),
    ("terminating-unset-ready", None, None, True, False),
    ("terminating-but-ready", True, True, True, False),
    ("terminating-serving-not-ready", False, True, True, False),
]


@pytest.mark.parametrize(
    ("is_ready", "serving", "terminating", "used"),
    [case[1:] for case in READINESS],
    ids=[case[0] for case in READINESS],
)
def test_endpoint_readiness(
    is_ready: bool | None, serving: bool | None, terminating: bool | None, used: bool
) -> None:
    """ready unset means ready; not-ready and terminating endpoints are skipped (§1.9)."""
    endpoint = Endpoint(("10.0.0.1",), ready=is_ready, serving=serving, terminating=terminating)
    objects = world(service(), endpoint_slice("web-1", endpoint))
    result = resolve_web(objects)
    assert isinstance(result, Resolved)
    assert result.servers == ((("10.0.0.1", 8080),) if used else ())


def test_no_ready_endpoints_resolves_to_no_servers() -> None:
    """A Service whose endpoints are all down resolves (503 territory), it is not an error."""
    objects = world(service(), endpoint_slice("web-1", Endpoint(("10.0.0.1",), ready=False)))
    assert resolve_web(objects) == Resolved(servers=(), app_protocol="kubernetes.io/ws")


def test_service_without_slices_resolves_to_no_servers() -> None:
    """No EndpointSlice at all is also zero servers, not BackendNotFound."""
    assert resolve_web(world(service())) == Resolved(servers=(), app_protocol="kubernetes.io/ws")


def test_multiple_slices_are_joined_deduplicated_and_sorted() -> None:
    """Every slice of the Service counts; repeats collapse; order does not depend on input."""
    objects = world(
        service(),
        endpoint_slice("web-b", ready("10.0.0.10", "10.0.0.2"), ready("10.0.0.1")),
        endpoint_slice("web-a", ready("10.0.0.2"), ready("10.0.0.9")),
        # Mid-rollout: the same name maps to another number in a newer slice.
        endpoint_slice("web-c", ready("10.0.0.1"), ports=(SlicePort(8081, name="http"),)),
    )
    assert servers_of(resolve_web(objects)) == (
        ("10.0.0.1", 8080),
        ("10.0.0.1", 8081),
        ("10.0.0.2", 8080),
        ("10.0.0.9", 8080),
        ("10.0.0.10", 8080),
    )


def test_slices_of_other_services_and_namespaces_are_ignored() -> None:
    """Only slices labelled with this Service's name in its namespace count."""
    objects = world(
        service(),
        endpoint_slice("web-1", ready("10.0.0.1")),
        endpoint_slice("api-1", ready("10.0.0.2"), service_name="api"),
        endpoint_slice("web-1", ready("10.0.0.3"), namespace="other"),
    )
    assert servers_of(resolve_web(objects)) == (("10.0.0.1", 8080),)


def test_ipv6_addresses_are_kept_as_written_after_ipv4() -> None:
    """IPv6 slices resolve; addresses stay as written; IPv4 sorts first, then IPv6."""
    objects = world(
        service(),
        endpoint_slice("web-v6", ready("fd00::10", "fd00::2"), address_type="IPv6"),
        endpoint_slice("web-v4", ready("10.0.0.1")),
    )
    assert servers_of(resolve_web(objects)) == (
        ("10.0.0.1", 8080),
        ("fd00::2", 8080),
        ("fd00::10", 8080),
    )


def test_ipv6_spellings_of_one_address_collapse() -> None:
    """Two spellings of one IPv6 address are one server; the first spelling is kept."""
    objects = world(
        service(),
        endpoint_slice("web-1", ready("FD00:0::1"), ready("fd00::1"), address_type="IPv6"),
    )
    assert servers_of(resolve_web(objects)) == (("FD00:0::1", 8080),)


def test_fqdn_slices_and_unparsable_addresses_are_skipped() -> None:
    """FQDN slices are ignored as kube-proxy does; a non-IP address is never dialled."""
    objects = world(
        service(),
        endpoint_slice("web-dns", ready("web.example.com"), address_type="FQDN"),
        endpoint_slice("web-1", ready("not-an-ip", "10.0.0.1")),
    )
    assert servers_of(resolve_web(objects)) == (("10.0.0.1", 8080),)


def test_headless_service_resolves_like_any() -> None:
    """clusterIP None still resolves through its slices (T:httproute-service-types)."""
    objects = world(service(cluster_ip="None"), endpoint_slice("web-1", ready("10.0.0.1")))
    assert servers_of(resolve_web(objects)) == (("10.0.0.1", 8080),)


def test_udp_route_uses_the_udp_port_of_a_dual_protocol_service() -> None:
    """With TCP and UDP on one number, ``protocol`` picks the Service port and its slice port."""
    objects = world(
        service(
            ports=(ServicePort(53, name="dns-tcp"), ServicePort(53, name="dns-udp", protocol="UDP"))
        ),
        endpoint_slice(
            "web-1",
            ready("10.0.0.1"),
            ports=(
                SlicePort(5353, name="dns-tcp"),
                SlicePort(5300, name="dns-udp", protocol="UDP"),
            ),
        ),
    )
    ref = BackendRef("web", "apps", port=53)
    udp = resolve(objects, ref, from_kind="UDPRoute", from_namespace="apps", protocol="UDP")
    tcp = resolve(objects, ref, from_kind="TCPRoute", from_namespace="apps")
    assert udp == Resolved(servers=(("10.0.0.1", 5300),))
    assert tcp == Resolved(servers=(("10.0.0.1", 5353),))


# --- failures and their order (§2.11) -----------------------------------------------------------

FAILURES = [
    # (id, backendRef fields, objects present, reason)
    ("unknown-kind", {"kind": "Pod"}, "service", "InvalidKind"),
    ("unknown-group", {"group": "example.com"}, "service", "InvalidKind"),
    ("core-spelled-as-name", {"group": "core"}, "service", "InvalidKind"),
    ("kind-checked-before-grant", {"kind": "Pod", "namespace": "other"}, "none", "InvalidKind"),
    ("cross-namespace-without-grant", {"namespace": "other"}, "other-service", "RefNotPermitted"),
    ("grant-checked-before-existence", {"namespace": "other"}, "none", "RefNotPermitted"),
    ("missing-service", {}, "none", "BackendNotFound"),
    ("missing-port", {"port": 81}, "service", "BackendNotFound"),
    ("port-unset", {"port": 0}, "service", "BackendNotFound"),
    ("port-is-not-target-port", {"port": 8080}, "service", "BackendNotFound"),
]


@pytest.mark.parametrize(
    ("fields", "present", "reason"),
    [case[1:] for case in FAILURES],
    ids=[case[0] for case in FAILURES],
)
def test_unresolvable_refs_report_the_spec_reason(
    fields: dict[str, str | int], present: str, reason: str
) -> None:
    """Kind, then ReferenceGrant, then existence decide the ResolvedRefs reason (§2.11)."""
    items = {
        "service": (service(), endpoint_slice("web-1", ready("10.0.0.1"))),
        "other-service": (service(namespace="other"),),
        "none": (),
    }[present]
    result = resolve_web(world(*items), **fields)
    assert isinstance(result, Unresolved)
    assert result.reason == reason
    assert "web" in result.message


def test_reference_grant_lets_a_route_reach_another_namespace() -> None:
    """A grant for HTTPRoutes from "apps" opens Service other/web (T:httproute-reference-grant)."""
    objects = world(
        service(namespace="other"),
        endpoint_slice("web-1", ready("10.0.0.1"), namespace="other"),
        ReferenceGrant(
            Meta("allow", "other"),
            from_=(GrantFrom(GROUP, "HTTPRoute", "apps"),),
            to=(GrantTo("", "Service", "web"),),
        ),
    )
    assert servers_of(resolve_web(objects, namespace="other")) == (("10.0.0.1", 8080),)
    tcp = resolve(
        objects, BackendRef("web", "other", port=80), from_kind="TCPRoute", from_namespace="apps"
    )
    assert isinstance(tcp, Unresolved) and tcp.reason == "RefNotPermitted"


def test_external_name_service_is_refused_with_the_reason() -> None:
    """ExternalName Services are not resolved, and the message says so (§1.4 SHOULD NOT)."""
    objects = world(service(type="ExternalName", external_name="example.com"))
    result = resolve_web(objects)
    assert isinstance(result, Unresolved)
    assert result.reason == "BackendNotFound"
    assert "ExternalName" in result.message


def test_port_of_the_wrong_protocol_is_unsupported_protocol() -> None:
    """A UDPRoute to a TCP-only Service port is UnsupportedProtocol, as in Traefik."""
    objects = world(service(ports=(ServicePort(53, name="dns"),)))
    result = resolve(
        objects,
        BackendRef("web", "apps", port=53),
        from_kind="UDPRoute",
        from_namespace="apps",
        protocol="UDP",
    )
    assert isinstance(result, Unresolved)
    assert result.reason == "UnsupportedProtocol"
    assert "TCP" in result.message and "UDP" in result.message
