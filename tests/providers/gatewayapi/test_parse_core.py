"""Tests for providers.gatewayapi.parse_core: Service, EndpointSlice, Endpoints, Secret,
ReferenceGrant and Sluice Middleware.

Spec references are to /work/notes/gatewayapi-spec.md §1.8 (ReferenceGrant) and §1.9
(Service, EndpointSlice, legacy Endpoints, Secret, Namespace).
"""

from __future__ import annotations

import pytest
import yaml

from providers.gatewayapi.objects import (
    Endpoint,
    GrantFrom,
    GrantTo,
    ServicePort,
    SlicePort,
)
from providers.gatewayapi.parse import ParseResult, parse_objects

NOW = "2024-05-06T07:08:09Z"


def parse(text: str) -> ParseResult:
    return parse_objects(((d, None) for d in yaml.safe_load_all(text) if d), now=NOW)


def errors(result: ParseResult) -> list[tuple[str, str]]:
    return [(e.path, e.message) for e in result.errors]


# --- Service ------------------------------------------------------------------------------


def test_service_fields_and_defaults() -> None:
    """Type ClusterIP, port protocol TCP and targetPort 0 (= port) are the defaults."""
    result = parse(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec:\n"
        "  ports:\n  - {name: http, port: 8080, targetPort: 3000, appProtocol: kubernetes.io/h2c}\n"
        "  - {name: dns, port: 53, protocol: UDP, targetPort: dns-port}\n"
        "  - {name: plain, port: 81}\n"
    )
    service = result.objects.services[("shop", "web")]
    assert (service.type, service.cluster_ip, service.external_name) == ("ClusterIP", "", "")
    assert service.ports == (
        ServicePort(8080, "http", "TCP", 3000, "kubernetes.io/h2c"),
        ServicePort(53, "dns", "UDP", "dns-port"),
        ServicePort(81, "plain", "TCP", 0),
    )


def test_headless_and_external_name_services() -> None:
    """clusterIP None (headless) and ExternalName are kept for the resolver to judge."""
    result = parse(
        "apiVersion: v1\nkind: Service\nmetadata: {name: h}\n"
        "spec: {clusterIP: None, ports: [{port: 80}]}\n---\n"
        "apiVersion: v1\nkind: Service\nmetadata: {name: e}\n"
        "spec: {type: ExternalName, externalName: db.example.com}\n"
    )
    services = result.objects.services
    assert services[("default", "h")].cluster_ip == "None"
    assert (services[("default", "e")].type, services[("default", "e")].external_name) == (
        "ExternalName",
        "db.example.com",
    )


@pytest.mark.parametrize(
    ("ports", "path", "message"),
    [
        ("[{port: 80}, {port: 81}]", "spec.ports[0].name", "required value"),
        ("[{name: a, port: 80}, {name: a, port: 81}]", "spec.ports[1].name", 'duplicate value "a"'),
        (
            "[{name: a, port: 80}, {name: b, port: 80}]",
            "spec.ports[1]",
            "duplicate port and protocol",
        ),
        ("[{port: 80, protocol: QUIC}]", "spec.ports[0].protocol", 'unsupported value "QUIC"'),
        ("[{port: 80, targetPort: Web_Port}]", "spec.ports[0].targetPort", "does not match"),
        ("[{port: 80, targetPort: 0}]", "spec.ports[0].targetPort", "greater than or equal to 1"),
        ("[{}]", "spec.ports[0].port", "required value"),
        ("[{port: 80, name: HTTP}]", "spec.ports[0].name", "does not match"),
    ],
    ids=[
        "two-unnamed-ports",
        "duplicate-names",
        "duplicate-port",
        "bad-protocol",
        "bad-target-name",
        "target-zero",
        "no-port",
        "upper-case-name",
    ],
)
def test_service_errors(ports: str, path: str, message: str) -> None:
    """Service ports follow Kubernetes' validation: names, uniqueness, protocols."""
    result = parse(
        f"apiVersion: v1\nkind: Service\nmetadata: {{name: s}}\nspec: {{ports: {ports}}}"
    )
    assert result.objects.services == {}
    [(where, text)] = errors(result)
    assert (where, message in text) == (f"Service default/s: {path}", True), text


# --- EndpointSlice ---------------------------------------------------------------------------


def test_endpoint_slice_fields() -> None:
    """The service-name label ties a slice to its Service; nil conditions stay None."""
    result = parse(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
        "metadata: {name: web-abc, labels: {kubernetes.io/service-name: web}}\n"
        "addressType: IPv4\nports: [{name: http, port: 3000}, {port: 53, protocol: UDP}]\n"
        "endpoints:\n- addresses: [10.0.0.1]\n- addresses: [10.0.0.2]\n"
        "  conditions: {ready: false, serving: true, terminating: true}\n"
    )
    found = result.objects.slices[("default", "web-abc")]
    assert (found.service_name, found.address_type) == ("web", "IPv4")
    assert found.ports == (SlicePort(3000, "http"), SlicePort(53, "", "UDP"))
    assert found.endpoints == (
        Endpoint(("10.0.0.1",)),
        Endpoint(("10.0.0.2",), ready=False, serving=True, terminating=True),
    )


def test_slice_without_endpoints_or_label() -> None:
    """endpoints may be absent (filled later); a slice without the label names no Service."""
    result = parse(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: x}\n"
        "addressType: FQDN\n"
        "ports: [{name: a}]"
    )
    found = result.objects.slices[("default", "x")]
    assert (found.service_name, found.endpoints, found.ports) == ("", (), (SlicePort(0, "a"),))


@pytest.mark.parametrize(
    ("body", "path", "message"),
    [
        ("endpoints: []", "addressType", "required value"),
        ("addressType: IPv5", "addressType", 'unsupported value "IPv5"'),
        (
            "addressType: IPv4\nendpoints: [{addresses: ['::1']}]",
            "endpoints[0].addresses[0]",
            "is not an IPv4 address",
        ),
        (
            "addressType: IPv6\nendpoints: [{addresses: [10.0.0.1]}]",
            "endpoints[0].addresses[0]",
            "is not an IPv6 address",
        ),
        (
            "addressType: IPv4\nendpoints: [{addresses: []}]",
            "endpoints[0].addresses",
            "at least 1 item",
        ),
        (
            "addressType: IPv4\nendpoints: [{addresses: [a], conditions: {ready: 'yes'}}]",
            "endpoints[0].addresses[0]",
            "is not a valid IP address",
        ),
        (
            "addressType: IPv4\nendpoints: [{addresses: [10.0.0.1], conditions: {ready: 'yes'}}]",
            "endpoints[0].conditions.ready",
            "expected a boolean",
        ),
    ],
    ids=[
        "no-address-type",
        "bad-address-type",
        "ipv6-in-ipv4",
        "ipv4-in-ipv6",
        "no-addresses",
        "not-an-ip",
        "ready-not-bool",
    ],
)
def test_endpoint_slice_errors(body: str, path: str, message: str) -> None:
    """Slices Kubernetes would refuse are left out with the key at fault."""
    result = parse(
        f"apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: x}}\n{body}"
    )
    [(where, text)] = errors(result)
    assert (where, message in text) == (f"EndpointSlice default/x: {path}", True), text


# --- legacy Endpoints (spec §1.9) ------------------------------------------------------------


def test_endpoints_are_mirrored_into_slices() -> None:
    """Each subset and address family becomes a slice <name>-mirrored[-i] for the Service."""
    result = parse(
        "apiVersion: v1\nkind: Endpoints\nmetadata: {name: manual, namespace: infra}\nsubsets:\n"
        "- addresses: [{ip: 10.0.0.1}, {ip: 'fd00::1'}]\n  notReadyAddresses: [{ip: 10.0.0.2}]\n"
        "  ports: [{name: first-port, port: 3000}]\n"
        "- addresses: [{ip: 10.0.1.1}]\n  ports: [{port: 53, protocol: UDP}]\n"
    )
    slices = result.objects.slices
    assert sorted(slices) == [
        ("infra", "manual-mirrored"),
        ("infra", "manual-mirrored-1"),
        ("infra", "manual-mirrored-2"),
    ]
    first, v6, second = (
        slices[("infra", n)] for n in ("manual-mirrored", "manual-mirrored-1", "manual-mirrored-2")
    )
    assert {s.service_name for s in slices.values()} == {"manual"}
    assert first.meta.labels["kubernetes.io/service-name"] == "manual"
    assert (first.address_type, first.ports) == ("IPv4", (SlicePort(3000, "first-port"),))
    assert first.endpoints == (
        Endpoint(("10.0.0.1",), ready=True),
        Endpoint(("10.0.0.2",), ready=False),
    )
    assert (v6.address_type, v6.endpoints) == ("IPv6", (Endpoint(("fd00::1",), ready=True),))
    assert (second.ports, second.endpoints) == (
        (SlicePort(53, "", "UDP"),),
        (Endpoint(("10.0.1.1",), ready=True),),
    )


def test_endpoints_without_subsets_mirror_nothing() -> None:
    """An Endpoints object with no subsets yields no slice and no error."""
    result = parse("apiVersion: v1\nkind: Endpoints\nmetadata: {name: manual}\n")
    assert (result.objects.slices, result.errors) == ({}, [])


def test_mirrored_slice_clashing_with_a_real_one_is_a_duplicate() -> None:
    """A slice named like a mirrored one is reported, not silently replaced."""
    result = parse(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: m-mirrored}\n"
        "addressType: IPv4\n---\n"
        "apiVersion: v1\nkind: Endpoints\nmetadata: {name: m}\n"
        "subsets: [{addresses: [{ip: 10.0.0.1}]}]\n"
    )
    assert [path for path, _ in errors(result)] == [
        "EndpointSlice default/m-mirrored: metadata.name"
    ]


def test_endpoints_errors() -> None:
    """A subset address that is not an IP refuses the Endpoints object."""
    result = parse(
        "apiVersion: v1\nkind: Endpoints\nmetadata: {name: m}\nsubsets: [{addresses: [{ip: x}]}]"
    )
    assert errors(result) == [
        ("Endpoints default/m: subsets[0].addresses[0].ip", '"x" is not a valid IP')
    ]


# --- Secret, ReferenceGrant, Middleware -------------------------------------------------------


def test_secret_data_is_decoded() -> None:
    """data is base64-decoded, stringData encoded, and stringData wins per key (spec §1.9)."""
    result = parse(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: cert}\ntype: kubernetes.io/tls\n"
        "data: {tls.crt: aGVsbG8=, tls.key: b2xk}\nstringData: {tls.key: new, extra: x}\n---\n"
        "apiVersion: v1\nkind: Secret\nmetadata: {name: plain}\n"
    )
    cert = result.objects.secrets[("default", "cert")]
    assert (cert.type, dict(cert.data)) == (
        "kubernetes.io/tls",
        {"tls.crt": b"hello", "tls.key": b"new", "extra": b"x"},
    )
    assert result.objects.secrets[("default", "plain")].type == "Opaque"


@pytest.mark.parametrize(
    ("body", "path", "message"),
    [
        ("data: {tls.crt: 'not base64!'}", "data.tls.crt", "invalid base64 data"),
        ("data: {'a/b': aGk=}", "data.a/b", "invalid key name"),
        ("stringData: {k: 1}", "stringData.k", "expected a string"),
    ],
    ids=["bad-base64", "bad-key", "string-data-not-string"],
)
def test_secret_errors(body: str, path: str, message: str) -> None:
    """Secret data the API server would refuse leaves the Secret out."""
    result = parse(f"apiVersion: v1\nkind: Secret\nmetadata: {{name: s}}\n{body}")
    assert errors(result) == [(f"Secret default/s: {path}", errors(result)[0][1])]
    assert message in errors(result)[0][1]


def test_reference_grant_fields() -> None:
    """from and to entries are kept; a to entry without name covers the whole kind (§1.8)."""
    result = parse(
        "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\n"
        "metadata: {name: g, namespace: backends}\nspec:\n"
        "  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: web}]\n"
        "  to: [{group: '', kind: Service}, {group: '', kind: Secret, name: cert}]\n"
    )
    grant = result.objects.grants[("backends", "g")]
    assert grant.from_ == (GrantFrom("gateway.networking.k8s.io", "HTTPRoute", "web"),)
    assert grant.to == (GrantTo("", "Service"), GrantTo("", "Secret", "cert"))


@pytest.mark.parametrize(
    ("spec", "path", "message"),
    [
        (None, "spec", "required value"),
        ("{from: [], to: [{group: '', kind: Service}]}", "spec.from", "at least 1 item"),
        ("{from: [{group: '', kind: Gateway, namespace: a}]}", "spec.to", "required value"),
        (
            "{from: [{kind: Gateway, namespace: a}], to: [{group: '', kind: Secret}]}",
            "spec.from[0].group",
            "required value",
        ),
        (
            "{from: [{group: '', kind: Gateway}], to: [{group: '', kind: Secret}]}",
            "spec.from[0].namespace",
            "required value",
        ),
    ],
    ids=["no-spec", "empty-from", "no-to", "from-without-group", "from-without-namespace"],
)
def test_reference_grant_errors(spec: str | None, path: str, message: str) -> None:
    """ReferenceGrant's required fields and list sizes are enforced."""
    body = f"spec: {spec}\n" if spec else ""
    result = parse(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: ReferenceGrant\n"
        f"metadata: {{name: g}}\n{body}"
    )
    [(where, text)] = errors(result)
    assert (where, message in text) == (f"ReferenceGrant default/g: {path}", True), text


def test_sluice_middleware_keeps_its_spec_raw() -> None:
    """A sluice.dev Middleware's spec is a file-dialect definition, kept as written."""
    result = parse(
        "apiVersion: sluice.dev/v1alpha1\nkind: Middleware\n"
        "metadata: {name: strip, namespace: web}\n"
        "spec:\n  stripPrefix:\n    prefixes: [/api]\n"
    )
    middleware = result.objects.middlewares[("web", "strip")]
    assert dict(middleware.spec) == {"stripPrefix": {"prefixes": ["/api"]}}


def test_sluice_middleware_needs_a_spec() -> None:
    """A Middleware without a mapping spec is refused."""
    result = parse("apiVersion: sluice.dev/v1alpha1\nkind: Middleware\nmetadata: {name: m}\n")
    assert [p for p, _ in errors(result)] == ["Middleware default/m: spec"]
