"""Tests for providers.gatewayapi.parse: kinds, versions, metadata, origins, robustness.

Spec references are to /work/notes/gatewayapi-spec.md. Field-level rules of
each kind are tested in test_parse_gateway.py, test_parse_routes.py,
test_parse_filters.py and test_parse_core.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
import yaml

from gateway.config.errors import ConfigError, Origin
from gateway.config.l4 import OriginFinder
from gateway.config.yaml_nodes import Map, Node, Seq, from_yaml, to_raw
from providers.gatewayapi.parse import ParseResult, is_kube_object, parse_duration, parse_objects

NOW = "2024-05-06T07:08:09Z"


def parse(text: str) -> ParseResult:
    return parse_objects(((d, None) for d in yaml.safe_load_all(text) if d), now=NOW)


def _origins(node: Node, path: str, out: dict[str, Origin]) -> dict[str, Origin]:
    if isinstance(node, Map):
        for entry in node.entries:
            at = f"{path}.{entry.key}" if path else entry.key
            if entry.origin is not None:
                out[at] = entry.origin
            _origins(entry.value, at, out)
    elif isinstance(node, Seq):
        for i, item in enumerate(node.items):
            if item.origin is not None:
                out[f"{path}[{i}]"] = item.origin
            _origins(item, f"{path}[{i}]", out)
    return out


def located(text: str, file: str = "routes.yaml") -> list[tuple[Any, OriginFinder]]:
    """Multi-document YAML as (document, origin finder) pairs, as the file provider gives them."""
    docs = []
    for node in yaml.compose_all(text, Loader=yaml.SafeLoader):
        if node is None:
            continue
        tree = from_yaml(node, file)
        docs.append((to_raw(tree), OriginFinder(_origins(tree, "", {}))))
    return docs


def only_error(result: ParseResult) -> ConfigError:
    assert len(result.errors) == 1, [str(e) for e in result.errors]
    return result.errors[0]


# --- which documents are Kubernetes objects ---------------------------------------------


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({"apiVersion": "v1", "kind": "Service"}, True),
        ({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "spec": {}}, True),
        ({"http": {"routers": {}}}, False),
        ({"apiVersion": "v1"}, False),
        ({"kind": "Service"}, False),
        ({"apiVersion": 1, "kind": "Service"}, False),
    ],
    ids=["core", "gateway-api", "traefik-dialect", "no-kind", "no-api-version", "odd-types"],
)
def test_is_kube_object(doc: Mapping[str, Any], expected: bool) -> None:
    """A document is a Kubernetes object when it has string apiVersion and kind."""
    assert is_kube_object(doc) is expected


# --- every version of every kind (spec §1.1) ------------------------------------------------

GW = "gateway.networking.k8s.io"
MINIMAL: dict[str, tuple[str, str]] = {
    # kind -> (ObjectSet attribute, minimal body after metadata)
    "GatewayClass": ("gateway_classes", "spec: {controllerName: sluice.dev/gateway-controller}"),
    "Gateway": (
        "gateways",
        "spec: {gatewayClassName: c, listeners: [{name: l, port: 80, protocol: HTTP}]}",
    ),
    "HTTPRoute": ("http_routes", "spec: {}"),
    "TLSRoute": (
        "l4_routes",
        "spec: {hostnames: [a.example.com], rules: [{backendRefs: [{name: s, port: 1}]}]}",
    ),
    "TCPRoute": ("l4_routes", "spec: {rules: [{backendRefs: [{name: s, port: 1}]}]}"),
    "UDPRoute": ("l4_routes", "spec: {rules: [{backendRefs: [{name: s, port: 1}]}]}"),
    "ReferenceGrant": (
        "grants",
        "spec: {from: [{group: '', kind: Service, namespace: a}],"
        " to: [{group: '', kind: Service}]}",
    ),
    "Service": ("services", "spec: {ports: [{port: 80}]}"),
    "EndpointSlice": ("slices", "addressType: IPv4"),
    "Secret": ("secrets", "data: {}"),
    "Namespace": ("namespaces", ""),
    "Middleware": ("middlewares", "spec: {stripPrefix: {prefixes: [/a]}}"),
}
VERSIONS = [
    ("GatewayClass", f"{GW}/v1"),
    ("GatewayClass", f"{GW}/v1beta1"),
    ("Gateway", f"{GW}/v1"),
    ("Gateway", f"{GW}/v1beta1"),
    ("HTTPRoute", f"{GW}/v1"),
    ("HTTPRoute", f"{GW}/v1beta1"),
    ("TLSRoute", f"{GW}/v1"),
    ("TLSRoute", f"{GW}/v1alpha3"),
    ("TLSRoute", f"{GW}/v1alpha2"),
    ("TCPRoute", f"{GW}/v1"),
    ("TCPRoute", f"{GW}/v1alpha2"),
    ("UDPRoute", f"{GW}/v1"),
    ("UDPRoute", f"{GW}/v1alpha2"),
    ("ReferenceGrant", f"{GW}/v1"),
    ("ReferenceGrant", f"{GW}/v1beta1"),
    ("ReferenceGrant", f"{GW}/v1alpha2"),
    ("Service", "v1"),
    ("EndpointSlice", "discovery.k8s.io/v1"),
    ("Secret", "v1"),
    ("Namespace", "v1"),
    ("Middleware", "sluice.dev/v1alpha1"),
]


@pytest.mark.parametrize(("kind", "api_version"), VERSIONS, ids=[f"{k}-{v}" for k, v in VERSIONS])
def test_every_served_version_is_read(kind: str, api_version: str) -> None:
    """Every apiVersion the spec lists for a kind is accepted (spec §1.1)."""
    attribute, body = MINIMAL[kind]
    result = parse(f"apiVersion: {api_version}\nkind: {kind}\nmetadata: {{name: x}}\n{body}\n")
    assert result.errors == []
    assert len(getattr(result.objects, attribute)) == 1


@pytest.mark.parametrize(
    ("api_version", "kind"),
    [(f"{GW}/v2", "HTTPRoute"), (f"{GW}/v1alpha1", "TCPRoute"), ("v2", "Service")],
    ids=["httproute-v2", "tcproute-v1alpha1", "service-v2"],
)
def test_known_kind_in_unserved_version_is_an_error(api_version: str, kind: str) -> None:
    """A Gateway API or core kind in a version that is not served is refused at apiVersion."""
    error = only_error(parse(f"apiVersion: {api_version}\nkind: {kind}\nmetadata: {{name: x}}\n"))
    assert error.path == f"{kind} default/x: apiVersion"
    assert "served:" in error.message


@pytest.mark.parametrize(
    "text",
    [
        "apiVersion: traefik.io/v1alpha1\nkind: Middleware\nmetadata: {name: m}\nspec: {}",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}",
        f"apiVersion: {GW}/v1\nkind: GRPCRoute\nmetadata: {{name: g}}\nspec: {{}}",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}",
    ],
    ids=["traefik-middleware", "deployment", "grpcroute", "configmap"],
)
def test_other_kinds_are_skipped_silently(text: str) -> None:
    """Kinds the translator does not read are ignored: no object, no error."""
    result = parse(text)
    assert result.errors == []
    assert result.problems == {}
    assert result.objects.middlewares == {}


# --- metadata ---------------------------------------------------------------------------


def test_namespaced_kinds_default_to_the_default_namespace() -> None:
    """A namespaced object without metadata.namespace lives in "default"."""
    result = parse("apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {}")
    assert list(result.objects.services) == [("default", "web")]


def test_cluster_scoped_kinds_have_no_namespace() -> None:
    """GatewayClass and Namespace are cluster-scoped: a written namespace is ignored."""
    result = parse(
        f"apiVersion: {GW}/v1\nkind: GatewayClass\nmetadata: {{name: c, namespace: x}}\n"
        "spec: {controllerName: a.b/c}\n---\n"
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: team, labels: {env: prod}}\n"
    )
    assert result.objects.gateway_classes["c"].meta.namespace == ""
    team = result.objects.namespaces["team"]
    assert (team.meta.namespace, dict(team.meta.labels)) == ("", {"env": "prod"})


def test_metadata_fields_are_read() -> None:
    """Labels, annotations, generation, uid and resourceVersion are kept."""
    meta = (
        parse(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: shop\n"
            "  generation: 4\n  uid: u-1\n  resourceVersion: '77'\n  labels: {app: web}\n"
            "  annotations: {note: hi}\n"
        )
        .objects.services[("shop", "web")]
        .meta
    )
    assert (meta.generation, meta.uid, meta.resource_version) == (4, "u-1", "77")
    assert (dict(meta.labels), dict(meta.annotations)) == ({"app": "web"}, {"note": "hi"})


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        (None, NOW),
        ("'2023-01-02T03:04:05Z'", "2023-01-02T03:04:05Z"),
        ("'2023-01-02T03:04:05.250+02:00'", "2023-01-02T01:04:05Z"),
        ("2023-01-02T03:04:05Z", "2023-01-02T03:04:05Z"),
        ("2023-01-02", "2023-01-02T00:00:00Z"),
    ],
    ids=["absent-uses-now", "utc", "offset-and-fraction", "yaml-timestamp", "yaml-date"],
)
def test_creation_timestamp_defaults_and_normalises(written: str | None, expected: str) -> None:
    """creationTimestamp defaults to now and is kept as UTC seconds, sortable as text."""
    stamp = f"  creationTimestamp: {written}\n" if written else ""
    result = parse(f"apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\n{stamp}")
    assert result.objects.secrets[("default", "s")].meta.created == expected


def test_generation_defaults_to_one() -> None:
    """An object without metadata.generation is at generation 1 (spec §1.1)."""
    result = parse("apiVersion: v1\nkind: Secret\nmetadata: {name: s}")
    assert result.objects.secrets[("default", "s")].meta.generation == 1


@pytest.mark.parametrize(
    ("metadata", "path", "message"),
    [
        ("{}", "Service: metadata.name", "required value"),
        ("{name: Web}", "Service default/Web: metadata.name", "does not match"),
        ("{name: a.b}", "Service default/a.b: metadata.name", "does not match"),
        ("{name: w, namespace: A_B}", "Service A_B/w: metadata.namespace", "does not match"),
        ("{name: w, labels: {n: 1}}", "Service default/w: metadata.labels.n", "expected a string"),
        ("{name: w, generation: x}", "Service default/w: metadata.generation", "expected an"),
        (
            "{name: w, creationTimestamp: yesterday}",
            "Service default/w: metadata.creationTimestamp",
            "is not an RFC 3339 timestamp",
        ),
        ("[]", "Service: metadata", "expected a mapping, got a list"),
    ],
    ids=[
        "no-name",
        "upper-case-name",
        "service-name-not-dns-label",
        "bad-namespace",
        "label-not-string",
        "generation-not-int",
        "bad-timestamp",
        "metadata-not-mapping",
    ],
)
def test_invalid_metadata_is_refused(metadata: str, path: str, message: str) -> None:
    """Metadata the API server refuses leaves the object out with a located error."""
    result = parse(f"apiVersion: v1\nkind: Service\nmetadata: {metadata}\nspec: {{}}")
    error = only_error(result)
    assert (error.path, message in error.message) == (path, True), str(error)
    assert result.objects.services == {}


# --- durations (GEP-2257, spec §1.4) ----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0s", 0.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("500ms", 0.5),
        ("1m1s1ms", 61.001),
        ("99999s", 99999.0),
        ("1h1m1s1ms", 3661.001),
    ],
    ids=["zero", "hour", "hour-minutes", "millis", "mixed", "five-digits", "four-parts"],
)
def test_durations_read_as_seconds(text: str, seconds: float) -> None:
    """GEP-2257 durations become float seconds."""
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text",
    ["", "1", "1.5s", "1d", "100000s", "1us", "-1s", "1h1m1s1ms1h", " 1s", "1S", "1s\n"],
    ids=[
        "empty",
        "no-unit",
        "fraction",
        "days",
        "six-digits",
        "micros",
        "negative",
        "five-parts",
        "space",
        "upper-case",
        "trailing-newline",
    ],
)
def test_durations_outside_gep_2257_are_refused(text: str) -> None:
    """Only ^([0-9]{1,5}(h|m|s|ms)){1,4}$ is a Gateway API duration."""
    with pytest.raises(ValueError):
        parse_duration(text)


# --- duplicates, lists, origins ----------------------------------------------------------


def test_an_object_defined_twice_keeps_the_first() -> None:
    """A second definition of one kind/namespace/name is an error naming the first."""
    docs = located(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {type: NodePort}\n---\n"
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {}\n"
    )
    result = parse_objects(docs, now=NOW)
    error = only_error(result)
    assert str(error) == (
        "routes.yaml:8: Service default/web: metadata.name: "
        "Service default/web is defined more than once (first defined at routes.yaml:3)"
    )
    assert result.objects.services[("default", "web")].type == "NodePort"


def test_same_name_in_other_kind_or_namespace_is_not_a_duplicate() -> None:
    """Objects are keyed by kind, namespace and name together."""
    result = parse(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\n---\n"
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: b}\n---\n"
        "apiVersion: v1\nkind: Secret\nmetadata: {name: web}\n"
    )
    assert result.errors == []
    assert len(result.objects.services) == 2


def test_a_v1_list_is_read_item_by_item_with_origins() -> None:
    """kind: List holds objects; an error in one item points into that item."""
    docs = located(
        "apiVersion: v1\nkind: List\nitems:\n"
        "- apiVersion: v1\n  kind: Namespace\n  metadata: {name: a}\n"
        "- apiVersion: v1\n  kind: Service\n  metadata: {name: web}\n"
        "  spec:\n    type: Nope\n"
    )
    result = parse_objects(docs, now=NOW)
    assert list(result.objects.namespaces) == ["a"]
    error = only_error(result)
    assert (error.origin, error.path) == (
        Origin("routes.yaml", 11),
        "Service default/web: spec.type",
    )


ROUTE = """\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: web
  namespace: shop
spec:
  parentRefs:
  - name: gw
  rules:
  - matches:
    - path:
        type: Exact
        value: /ok
    - path:
        type: PathPrefix
        value: /a//b
"""


def test_errors_name_the_file_line_object_and_key_path() -> None:
    """An invalid object yields a ConfigError with file, line, object and key path."""
    result = parse_objects(located(ROUTE), now=NOW)
    error = only_error(result)
    assert error.origin == Origin("routes.yaml", 16)
    assert error.path == "HTTPRoute shop/web: spec.rules[0].matches[1].path.value"
    assert str(error) == (
        "routes.yaml:16: HTTPRoute shop/web: spec.rules[0].matches[1].path.value: "
        "must not contain '//' when type one of ['Exact', 'PathPrefix']"
    )
    assert result.objects.http_routes == {}


def test_objects_remember_where_they_were_written() -> None:
    """Meta.origin is the line of metadata.name in file mode, None without origins."""
    fixed = ROUTE.replace("/a//b", "/a/b")
    with_origins = parse_objects(located(fixed), now=NOW)
    assert with_origins.objects.http_routes[("shop", "web")].meta.origin == Origin("routes.yaml", 4)
    assert parse(fixed).objects.http_routes[("shop", "web")].meta.origin is None


def test_errors_without_origins_still_name_the_key_path() -> None:
    """Kubernetes mode has no origins: the error keeps its path and no file."""
    error = only_error(parse(ROUTE))
    assert error.origin is None
    assert error.path == "HTTPRoute shop/web: spec.rules[0].matches[1].path.value"


def test_problems_are_keyed_by_kind_namespace_and_name() -> None:
    """An accepted object Sluice cannot implement is kept and its problem recorded."""
    result = parse(ROUTE.replace("/a//b", "/b").replace("type: PathPrefix", "type: Glob"))
    assert result.errors == []
    assert ("shop", "web") in result.objects.http_routes
    assert result.problems == {
        ("HTTPRoute", "shop", "web"): "spec.rules[0].matches[1].path.type: unsupported value "
        '"Glob" (supported: Exact, PathPrefix, RegularExpression)'
    }


# --- robustness -----------------------------------------------------------------------------

GARBAGE = [
    f"apiVersion: {GW}/v1\nkind: HTTPRoute\nmetadata: {{name: r}}\nspec: []",
    f"apiVersion: {GW}/v1\nkind: HTTPRoute\nmetadata: {{name: r}}\nspec: {{rules: x}}",
    f"apiVersion: {GW}/v1\nkind: HTTPRoute\nmetadata: {{name: r}}\nspec: {{rules: [1, 2]}}",
    f"apiVersion: {GW}/v1\nkind: HTTPRoute\nmetadata: {{name: r}}\n"
    "spec: {rules: [{matches: [{headers: [{name: [a], value: 1}]}]}]}",
    f"apiVersion: {GW}/v1\nkind: HTTPRoute\nmetadata: {{name: r}}\n"
    "spec: {rules: [{filters: [{type: [x]}]}]}",
    f"apiVersion: {GW}/v1\nkind: HTTPRoute\nmetadata: {{name: r}}\n"
    "spec: {rules: [{backendRefs: [{name: s, port: 1, filters: {}}]}]}",
    f"apiVersion: {GW}/v1\nkind: Gateway\nmetadata: {{name: g}}\n"
    "spec: {gatewayClassName: c, listeners: [{name: l, port: '80', protocol: HTTP}]}",
    f"apiVersion: {GW}/v1\nkind: Gateway\nmetadata: {{name: g}}\n"
    "spec: {gatewayClassName: c, listeners: {a: 1}}",
    f"apiVersion: {GW}/v1\nkind: TCPRoute\nmetadata: {{name: t}}\nspec: {{rules: [{{}}]}}",
    f"apiVersion: {GW}/v1\nkind: ReferenceGrant\nmetadata: {{name: g}}\nspec: {{from: [x]}}",
    "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: true}]}",
    "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {a: [1]}",
    "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: e}\n"
    "addressType: IPv4\nendpoints: [{addresses: [300.1.1.1]}]",
    "apiVersion: v1\nkind: Endpoints\nmetadata: {name: e}\nsubsets: [{addresses: [{ip: 7}]}]",
    "apiVersion: sluice.dev/v1alpha1\nkind: Middleware\nmetadata: {name: m}\nspec: [1]",
]


@pytest.mark.parametrize("text", GARBAGE, ids=[f"garbage-{i}" for i in range(len(GARBAGE))])
def test_malformed_objects_never_raise(text: str) -> None:
    """Any malformed object becomes exactly one error; parse_objects never raises."""
    result = parse(text)
    assert len(result.errors) == 1, [str(e) for e in result.errors]
    assert result.errors[0].path


def test_documents_that_are_not_objects_are_skipped() -> None:
    """Traefik-dialect documents and non-mappings passed in are ignored."""
    result = parse_objects(
        [({"http": {"routers": {}}}, None), ([1, 2], None), ("text", None)],  # type: ignore[list-item]
        now=NOW,
    )
    assert (result.errors, result.problems) == ([], {})
