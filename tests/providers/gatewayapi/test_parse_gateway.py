"""Tests for providers.gatewayapi.parse_gateway: GatewayClass and Gateway defaults and CEL rules.

Spec references are to /work/notes/gatewayapi-spec.md (§1.2 GatewayClass, §1.3
Gateway); messages are the upstream XValidation messages of apis/v1/gateway_types.go.
"""

from __future__ import annotations

import pytest
import yaml

from providers.gatewayapi.objects import (
    GROUP,
    Gateway,
    GatewayAddress,
    LabelSelector,
    RouteKind,
    SecretRef,
)
from providers.gatewayapi.parse import ParseResult, parse_objects

NOW = "2024-05-06T07:08:09Z"
HEAD = (
    "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n"
    "metadata: {name: gw, namespace: infra}\n"
)


def parse(text: str) -> ParseResult:
    return parse_objects(((d, None) for d in yaml.safe_load_all(text) if d), now=NOW)


def gateway(listeners: str, extra: str = "") -> tuple[Gateway | None, ParseResult]:
    result = parse(f"{HEAD}spec:\n  gatewayClassName: sluice\n  listeners:\n{listeners}{extra}")
    return result.objects.gateways.get(("infra", "gw")), result


def test_gateway_class_fields() -> None:
    """controllerName is read and parametersRef noted (spec §1.2)."""
    result = parse(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: a}\n"
        "spec: {controllerName: sluice.dev/gateway-controller}\n---\n"
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: b}\n"
        "spec:\n  controllerName: example.com/other\n"
        "  parametersRef: {group: example.com, kind: Config, name: c}\n"
    )
    classes = result.objects.gateway_classes
    assert classes["a"].controller_name == "sluice.dev/gateway-controller"
    assert (classes["a"].has_parameters_ref, classes["b"].has_parameters_ref) == (False, True)


@pytest.mark.parametrize(
    ("spec", "path", "message"),
    [
        ("{}", "spec.controllerName", "required value"),
        ("{controllerName: sluice.dev}", "spec.controllerName", "does not match"),
        ("{controllerName: a.b/c, description: " + "x" * 65 + "}", "spec.description", "64"),
        (
            "{controllerName: a.b/c, parametersRef: {name: p}}",
            "spec.parametersRef.group",
            "required",
        ),
    ],
    ids=["no-controller", "controller-without-path", "long-description", "params-without-group"],
)
def test_gateway_class_errors(spec: str, path: str, message: str) -> None:
    """A GatewayClass the API server refuses is left out with the key path at fault."""
    result = parse(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: a}\n"
        f"spec: {spec}\n"
    )
    assert [(e.path, message in e.message) for e in result.errors] == [
        (f"GatewayClass a: {path}", True)
    ]


def test_listener_defaults() -> None:
    """tls.mode, certificateRef group/kind/namespace, namespaces.from and kind group default."""
    found, result = gateway(
        "  - {name: web, port: 80, protocol: HTTP}\n"
        "  - name: secure\n    port: 443\n    protocol: HTTPS\n    hostname: '*.example.com'\n"
        "    tls: {certificateRefs: [{name: cert}, {name: other, namespace: certs}]}\n"
        "    allowedRoutes: {kinds: [{kind: HTTPRoute}]}\n"
    )
    assert result.errors == [] and found is not None
    web, secure = found.listeners
    assert (web.tls_mode, web.namespaces_from, web.kinds, web.hostname) == (
        "Terminate",
        "Same",
        (),
        "",
    )
    assert secure.certificate_refs == (
        SecretRef(name="cert", namespace="infra", group="", kind="Secret"),
        SecretRef(name="other", namespace="certs", group="", kind="Secret"),
    )
    assert secure.kinds == (RouteKind(kind="HTTPRoute", group=GROUP),)
    assert (secure.hostname, secure.tls_mode) == ("*.example.com", "Terminate")


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("HTTP", "HTTP"),
        ("http", "HTTP"),
        ("Https", "HTTPS"),
        ("tcp", "TCP"),
        ("INVALID", "INVALID"),
        ("example.com/quic", "example.com/quic"),
    ],
    ids=["upper", "lower", "mixed", "tcp", "unknown-kept", "domain-prefixed-kept"],
)
def test_core_protocols_are_case_insensitive(written: str, expected: str) -> None:
    """Core ProtocolType values are normalised; other protocols are kept for UnsupportedProtocol."""
    tls = "    tls: {certificateRefs: [{name: c}]}\n" if expected == "HTTPS" else ""
    found, result = gateway(f"  - name: l\n    port: 1111\n    protocol: {written}\n{tls}")
    assert result.errors == [] and found is not None
    assert found.listeners[0].protocol == expected


def test_passthrough_and_options() -> None:
    """A TLS listener may pass through; Terminate may use options instead of certificates."""
    found, result = gateway(
        "  - {name: pass, port: 443, protocol: TLS, tls: {mode: Passthrough}}\n"
        "  - {name: opts, port: 8443, protocol: TLS, tls: {options: {example.com/x: 'y'}}}\n"
    )
    assert result.errors == [] and found is not None
    assert [(x.tls_mode, dict(x.tls_options)) for x in found.listeners] == [
        ("Passthrough", {}),
        ("Terminate", {"example.com/x": "y"}),
    ]


def test_allowed_routes_selector() -> None:
    """from: Selector keeps matchLabels and matchExpressions (spec §1.3)."""
    found, result = gateway(
        "  - name: l\n    port: 80\n    protocol: HTTP\n    allowedRoutes:\n      namespaces:\n"
        "        from: Selector\n        selector:\n          matchLabels: {team: a}\n"
        "          matchExpressions:\n"
        "          - {key: env, operator: In, values: [prod, stage]}\n"
        "          - {key: legacy, operator: DoesNotExist}\n"
    )
    assert result.errors == [] and found is not None
    listener = found.listeners[0]
    assert listener.namespaces_from == "Selector"
    assert listener.namespace_selector == LabelSelector(
        match_labels={"team": "a"},
        match_expressions=(("env", "In", ("prod", "stage")), ("legacy", "DoesNotExist", ())),
    )


def test_addresses() -> None:
    """Address type defaults to IPAddress; an empty value asks for one (spec §1.3)."""
    found, result = gateway(
        "  - {name: l, port: 80, protocol: HTTP}\n",
        "  addresses:\n  - {value: 127.0.0.5}\n  - {type: Hostname, value: gw.example.com}\n"
        "  - {type: IPAddress}\n  - {type: example.com/pool, value: blue}\n"
        "  infrastructure: {parametersRef: {group: example.com, kind: Config, name: c}}\n",
    )
    assert result.errors == [] and found is not None
    assert found.addresses == (
        GatewayAddress(value="127.0.0.5"),
        GatewayAddress(value="gw.example.com", type="Hostname"),
        GatewayAddress(value=""),
        GatewayAddress(value="blue", type="example.com/pool"),
    )
    assert found.has_infrastructure_parameters_ref


L = "  - {name: a, port: 80, protocol: HTTP}\n"
ERRORS = [
    # (id, listeners, extra spec, path, message)
    (
        "tls-on-http",
        "  - {name: a, port: 80, protocol: HTTP, tls: {mode: Passthrough}}\n",
        "",
        "spec.listeners[0].tls",
        "tls must not be specified for protocols ['HTTP', 'TCP', 'UDP']",
    ),
    (
        "tls-on-tcp",
        "  - {name: a, port: 9, protocol: tcp, tls: {mode: Passthrough}}\n",
        "",
        "spec.listeners[0].tls",
        "tls must not be specified for protocols ['HTTP', 'TCP', 'UDP']",
    ),
    (
        "tls-on-udp",
        "  - {name: a, port: 9, protocol: UDP, tls: {mode: Passthrough}}\n",
        "",
        "spec.listeners[0].tls",
        "tls must not be specified for protocols ['HTTP', 'TCP', 'UDP']",
    ),
    (
        "https-passthrough",
        "  - {name: a, port: 443, protocol: HTTPS, tls: {mode: Passthrough}}\n",
        "",
        "spec.listeners[0].tls.mode",
        "tls mode must be Terminate for protocol HTTPS",
    ),
    (
        "hostname-on-tcp",
        "  - {name: a, port: 9, protocol: TCP, hostname: a.com}\n",
        "",
        "spec.listeners[0].hostname",
        "hostname must not be specified for protocols ['TCP', 'UDP']",
    ),
    (
        "hostname-on-udp",
        "  - {name: a, port: 9, protocol: UDP, hostname: a.com}\n",
        "",
        "spec.listeners[0].hostname",
        "hostname must not be specified for protocols ['TCP', 'UDP']",
    ),
    (
        "duplicate-names",
        L + "  - {name: a, port: 81, protocol: HTTP}\n",
        "",
        "spec.listeners[1].name",
        "Listener name must be unique within the Gateway",
    ),
    (
        "duplicate-triple",
        L + "  - {name: b, port: 80, protocol: HTTP}\n",
        "",
        "spec.listeners[1]",
        "Combination of port, protocol and hostname must be unique for each listener",
    ),
    (
        "terminate-without-certs",
        "  - {name: a, port: 443, protocol: HTTPS, tls: {}}\n",
        "",
        "spec.listeners[0].tls",
        "certificateRefs or options must be specified when mode is Terminate",
    ),
    (
        "bad-tls-mode",
        "  - {name: a, port: 443, protocol: TLS, tls: {mode: Reencrypt}}\n",
        "",
        "spec.listeners[0].tls.mode",
        'unsupported value "Reencrypt"',
    ),
    (
        "bad-from",
        "  - {name: a, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: None}}}\n",
        "",
        "spec.listeners[0].allowedRoutes.namespaces.from",
        'unsupported value "None"',
    ),
    (
        "port-zero",
        "  - {name: a, port: 0, protocol: HTTP}\n",
        "",
        "spec.listeners[0].port",
        "greater than or equal to 1",
    ),
    (
        "port-too-big",
        "  - {name: a, port: 65536, protocol: HTTP}\n",
        "",
        "spec.listeners[0].port",
        "less than or equal to 65535",
    ),
    (
        "port-as-text",
        "  - {name: a, port: '80', protocol: HTTP}\n",
        "",
        "spec.listeners[0].port",
        'expected an integer, got "80"',
    ),
    ("no-listeners", "    []\n", "", "spec.listeners", "at least 1 item"),
    (
        "bad-protocol",
        "  - {name: a, port: 80, protocol: 'h t t p'}\n",
        "",
        "spec.listeners[0].protocol",
        "does not match",
    ),
    ("no-protocol", "  - {name: a, port: 80}\n", "", "spec.listeners[0].protocol", "required"),
    (
        "bad-listener-name",
        "  - {name: A, port: 80, protocol: HTTP}\n",
        "",
        "spec.listeners[0].name",
        "does not match",
    ),
    (
        "upper-case-hostname",
        "  - {name: a, port: 80, protocol: HTTP, hostname: Foo.com}\n",
        "",
        "spec.listeners[0].hostname",
        "is not a hostname",
    ),
    (
        "hostname-with-final-newline",
        '  - {name: a, port: 80, protocol: HTTP, hostname: "a.com\\n"}\n',
        "",
        "spec.listeners[0].hostname",
        "is not a hostname",
    ),
    (
        "inner-wildcard",
        "  - {name: a, port: 80, protocol: HTTP, hostname: 'a.*.com'}\n",
        "",
        "spec.listeners[0].hostname",
        "is not a hostname",
    ),
    (
        "bad-selector-operator",
        "  - name: a\n    port: 80\n    protocol: HTTP\n    allowedRoutes:\n      namespaces:\n"
        "        from: Selector\n        selector: {matchExpressions: [{key: k, operator: Has}]}\n",
        "",
        "spec.listeners[0].allowedRoutes.namespaces.selector.matchExpressions[0].operator",
        "not a valid selector operator",
    ),
    (
        "in-without-values",
        "  - name: a\n    port: 80\n    protocol: HTTP\n    allowedRoutes:\n      namespaces:\n"
        "        from: Selector\n        selector: {matchExpressions: [{key: k, operator: In}]}\n",
        "",
        "spec.listeners[0].allowedRoutes.namespaces.selector.matchExpressions[0].values",
        "must be specified for In",
    ),
    (
        "exists-with-values",
        "  - name: a\n    port: 80\n    protocol: HTTP\n    allowedRoutes:\n      namespaces:\n"
        "        from: Selector\n"
        "        selector: {matchExpressions: [{key: k, operator: Exists, values: [x]}]}\n",
        "",
        "spec.listeners[0].allowedRoutes.namespaces.selector.matchExpressions[0].values",
        "may not be specified for Exists",
    ),
    (
        "bad-ip-address",
        L,
        "  addresses: [{value: 'not-an-ip'}]\n",
        "spec.addresses[0].value",
        "is not a valid IP address",
    ),
    (
        "duplicate-ip-address",
        L,
        "  addresses: [{value: 127.0.0.1}, {value: 127.0.0.1}]\n",
        "spec.addresses[1].value",
        "IPAddress values must be unique",
    ),
    (
        "bad-hostname-address",
        L,
        "  addresses: [{type: Hostname, value: 'A.com'}]\n",
        "spec.addresses[0].value",
        "Hostname value must be empty or contain only valid characters",
    ),
    (
        "bad-address-type",
        L,
        "  addresses: [{type: 'bad type', value: x}]\n",
        "spec.addresses[0].type",
        "does not match",
    ),
    (
        "kind-without-kind",
        "  - {name: a, port: 80, protocol: HTTP, allowedRoutes: {kinds: [{}]}}\n",
        "",
        "spec.listeners[0].allowedRoutes.kinds[0].kind",
        "required",
    ),
]


@pytest.mark.parametrize(
    ("listeners", "extra", "path", "message"),
    [e[1:] for e in ERRORS],
    ids=[e[0] for e in ERRORS],
)
def test_gateway_errors(listeners: str, extra: str, path: str, message: str) -> None:
    """The schema and CEL rules of GatewaySpec refuse the Gateway with the rule's message."""
    found, result = gateway(listeners, extra)
    assert found is None
    assert [(e.path, e.message) for e in result.errors] == [
        (f"Gateway infra/gw: {path}", result.errors[0].message)
    ]
    assert message in result.errors[0].message


def test_distinct_hostnames_share_a_port() -> None:
    """Listeners on one port and protocol are fine when their hostnames differ."""
    found, result = gateway(
        "  - {name: a, port: 80, protocol: HTTP, hostname: a.example.com}\n"
        "  - {name: b, port: 80, protocol: HTTP, hostname: '*.example.com'}\n"
        "  - {name: c, port: 80, protocol: HTTP}\n"
    )
    assert result.errors == [] and found is not None
    assert [x.hostname for x in found.listeners] == ["a.example.com", "*.example.com", ""]


def test_gateway_needs_a_class() -> None:
    """gatewayClassName is required."""
    result = parse(f"{HEAD}spec:\n  listeners: [{{name: a, port: 80, protocol: HTTP}}]\n")
    assert [e.path for e in result.errors] == ["Gateway infra/gw: spec.gatewayClassName"]
