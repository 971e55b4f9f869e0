"""examples/kubernetes holds manifests that fit together and fit Sluice, checked without a cluster.

Every manifest parses and names a well-known kind; the ConfigMap's static
configuration loads with the Deployment's command-line overrides; the sample
Gateway API objects parse, translate and decode with every condition healthy;
and the RBAC grants are exactly what the provider uses
(``providers.kubernetes.resources.permissions``), no more, no less.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from gateway.config.dynamic import DynamicConfig
from gateway.config.loader import parse_static
from gateway.config.static import StaticConfig
from providers.gatewayapi.objects import CONTROLLER, SLUICE_GROUP
from providers.gatewayapi.parse import parse_objects
from providers.gatewayapi.translate import translate
from providers.kubernetes.resources import permissions
from providers.kubernetes.snapshot import build

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "kubernetes"
NOW = "2024-01-01T00:00:00Z"
NODE_IP = "192.0.2.10"

# kind -> (apiVersion, namespaced)
KINDS: dict[str, tuple[str, bool]] = {
    "Namespace": ("v1", False),
    "ServiceAccount": ("v1", True),
    "ConfigMap": ("v1", True),
    "Service": ("v1", True),
    "Deployment": ("apps/v1", True),
    "ClusterRole": ("rbac.authorization.k8s.io/v1", False),
    "ClusterRoleBinding": ("rbac.authorization.k8s.io/v1", False),
    "Role": ("rbac.authorization.k8s.io/v1", True),
    "RoleBinding": ("rbac.authorization.k8s.io/v1", True),
    "CustomResourceDefinition": ("apiextensions.k8s.io/v1", False),
    "GatewayClass": ("gateway.networking.k8s.io/v1", False),
    "Gateway": ("gateway.networking.k8s.io/v1", True),
    "HTTPRoute": ("gateway.networking.k8s.io/v1", True),
    "Middleware": (f"{SLUICE_GROUP}/v1alpha1", True),
}
# Built-in kinds -> the official client's model, whose fields are the API's.
MODELS = {
    kind: f"V1{kind}" for kind in (
        "Namespace", "ServiceAccount", "ConfigMap", "Service", "Deployment", "ClusterRole",
        "ClusterRoleBinding", "Role", "RoleBinding", "CustomResourceDefinition")
}
NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


def manifests(folder: Path = EXAMPLE) -> list[tuple[str, dict[str, Any]]]:
    """(file relative to the example, document) for every document of every manifest."""
    out = []
    for path in sorted(folder.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                out.append((str(path.relative_to(EXAMPLE)), doc))
    return out


def one(kind: str, name: str = "") -> dict[str, Any]:
    """The one object of ``kind`` (named ``name``, when given) among the manifests."""
    found = [doc for _, doc in manifests()
             if doc["kind"] == kind and name in ("", doc["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def sluice_pod() -> dict[str, Any]:
    pod: dict[str, Any] = one("Deployment", "sluice")["spec"]["template"]["spec"]
    return pod


def static_config() -> StaticConfig:
    """The ConfigMap's sluice.yml with the Deployment's --dotted=value flags, as run would."""
    config = one("ConfigMap")
    container = sluice_pod()["containers"][0]
    overrides = []
    for arg in container["args"][1:]:
        key, _, value = arg[2:].partition("=")
        if key != "config":
            overrides.append((key, value.replace("$(HOST_IP)", NODE_IP)))
    return parse_static(config["data"]["sluice.yml"], "03-config.yaml", overrides)


SCALARS = {"bool", "bytes", "datetime", "float", "int", "object", "str"}


def unknown_fields(value: Any, type_name: str, path: str) -> list[str]:
    """Key paths in ``value`` that the client's model ``type_name`` has no field for."""
    if value is None or type_name in SCALARS or type_name == "V1JSONSchemaProps":
        return []  # JSONSchemaProps: the CRD's free-form schema
    # The client spells containers "List[X]"/"Dict[str, X]" (older: "list[X]"/"dict(str, X)").
    if match := re.fullmatch(r"[Ll]ist\[(.*)\]", type_name):
        return [bad for i, item in enumerate(value)
                for bad in unknown_fields(item, match[1], f"{path}[{i}]")]
    if match := re.fullmatch(r"Dict\[str, (.*)\]|dict\(str, (.*)\)", type_name):
        inner = match[1] or match[2]
        return [bad for key, item in value.items()
                for bad in unknown_fields(item, inner, f"{path}.{key}")]
    model = getattr(client, type_name)
    fields = {json_key: attr for attr, json_key in model.attribute_map.items()}
    out = []
    for key, item in value.items():
        if key not in fields:
            out.append(f"{path}.{key}")
        else:
            out += unknown_fields(item, model.openapi_types[fields[key]], f"{path}.{key}")
    return out


def grants(rules: list[dict[str, Any]]) -> set[tuple[str, str, str, tuple[str, ...]]]:
    """(group, resource, verb, resourceNames) for every combination a rule list allows."""
    out = set()
    for rule in rules:
        names = tuple(rule.get("resourceNames", ()))
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    out.add((group, resource, verb, names))
    return out


def test_every_manifest_is_a_well_formed_object() -> None:
    """Each document names a known kind in its apiVersion, a valid name, a namespace if due."""
    docs = manifests()
    assert {doc["kind"] for _, doc in docs} == set(KINDS)
    for file, doc in docs:
        api_version, namespaced = KINDS[doc["kind"]]
        where = f"{file}: {doc['kind']}"
        assert doc["apiVersion"] == api_version, where
        assert NAME.match(doc["metadata"]["name"]), where
        assert ("namespace" in doc["metadata"]) == namespaced, where


def test_built_in_objects_use_only_fields_the_api_has() -> None:
    """No misspelt key (``readinesProbe``) that the API server would drop or refuse."""
    found = [bad for file, doc in manifests() if doc["kind"] in MODELS
             for bad in unknown_fields(doc, MODELS[doc["kind"]], f"{file}: {doc['kind']}")]
    assert found == []


def test_references_between_manifests_resolve() -> None:
    """The pod's account, config and bindings name objects the manifests create."""
    docs = manifests()
    names = {(doc["kind"], doc["metadata"].get("namespace", ""), doc["metadata"]["name"])
             for _, doc in docs}
    namespaces = {name for kind, _, name in names if kind == "Namespace"}
    assert all(ns in namespaces for _, ns, _ in names if ns)
    pod = sluice_pod()
    namespace = one("Deployment", "sluice")["metadata"]["namespace"]
    assert ("ServiceAccount", namespace, pod["serviceAccountName"]) in names
    volume = next(v for v in pod["volumes"] if "configMap" in v)
    assert ("ConfigMap", namespace, volume["configMap"]["name"]) in names
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == volume["name"])
    assert pod["containers"][0]["args"][:2] == ["run", f"--config={mount['mountPath']}/sluice.yml"]
    for kind in ("ClusterRoleBinding", "RoleBinding"):
        binding = one(kind)
        role_ns = binding["metadata"].get("namespace", "")
        assert (binding["roleRef"]["kind"], role_ns, binding["roleRef"]["name"]) in names
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": pod["serviceAccountName"], "namespace": namespace}]


def test_middleware_crd_serves_what_the_provider_reads() -> None:
    """The CRD is sluice.dev/v1alpha1 Middleware, namespaced, its spec kept as written."""
    crd = one("CustomResourceDefinition")["spec"]
    assert (crd["group"], crd["names"]["kind"], crd["scope"]) == (
        SLUICE_GROUP, "Middleware", "Namespaced")
    [version] = crd["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec == {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


def test_configmap_static_config_is_valid() -> None:
    """sluice.yml loads with the Deployment's flags: the provider on, a Lease, the node's IP."""
    kubernetes = static_config().providers.kubernetes
    assert kubernetes is not None
    assert kubernetes.lease_namespace == one("Role")["metadata"]["namespace"]
    assert kubernetes.default_address == NODE_IP


def test_sample_objects_translate_with_every_condition_healthy() -> None:
    """The sample GatewayClass, Gateway, HTTPRoute and Middleware are accepted, resolved, served."""
    docs = [doc for file, doc in manifests() if file.startswith("sample/")]
    parsed = parse_objects(((doc, None) for doc in docs), now=NOW)
    assert parsed.errors == [] and parsed.problems == {}
    assert [gc.controller_name for gc in parsed.objects.gateway_classes.values()] == [CONTROLLER]
    translation = translate(parsed.objects, default_address=NODE_IP, problems=parsed.problems)
    assert set(translation.status) == {
        ("GatewayClass", "", "sluice"), ("Gateway", "sluice-system", "edge"),
        ("HTTPRoute", "demo", "whoami")}
    conditions = []
    for status in translation.status.values():
        conditions += status.get("conditions", [])
        for part in (*status.get("listeners", []), *status.get("parents", [])):
            conditions += part["conditions"]
    healthy = {"Conflicted": "False"}
    assert conditions and all(c["status"] == healthy.get(c["type"], "True") for c in conditions)
    gateway = translation.status[("Gateway", "sluice-system", "edge")]
    assert gateway["addresses"] == [{"type": "IPAddress", "value": NODE_IP}]
    assert gateway["listeners"][0]["attachedRoutes"] == 1
    result = build(docs, default_address=NODE_IP, now=NOW)  # the Middleware's spec decodes too
    assert isinstance(result.config, DynamicConfig), result.config
    assert result.invalid == {}


@pytest.mark.parametrize("kind", ["ClusterRole", "Role"])
def test_rbac_grants_exactly_what_the_provider_uses(kind: str) -> None:
    """ClusterRole: every list/watch/status patch; Role: the Lease, in its namespace, by name."""
    needed = {
        (p.group, p.resource, verb) for p in permissions() for verb in p.verbs
        if p.namespaced_only == (kind == "Role")
    }
    granted = grants(one(kind)["rules"])
    assert {(group, resource, verb) for group, resource, verb, _ in granted} == needed
    assert not any("*" in part for grant in granted for part in grant[:3])
    if kind == "Role":
        lease = static_config().providers.kubernetes
        assert lease is not None
        for _, _, verb, names in granted:
            assert names == (() if verb == "create" else (lease.lease_name,)), verb


def test_readme_names_every_manifest() -> None:
    """The example's README mentions each manifest it asks the reader to apply."""
    readme = (EXAMPLE / "README.md").read_text()
    for path in sorted(EXAMPLE.rglob("*.yaml")):
        assert str(path.relative_to(EXAMPLE)) in readme, path.name
