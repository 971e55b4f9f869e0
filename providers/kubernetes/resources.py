"""The kinds the provider watches, in the version the cluster serves, and their list calls.

Core kinds have fixed versions (``v1``, ``discovery.k8s.io/v1``). Gateway API
kinds and Sluice's ``Middleware`` are CRDs whose served versions depend on the
bundle installed, so they are discovered: for each kind, the group's preferred
version if it serves the kind, else the first version in the group's own
priority order that does, among the versions the parser reads. A kind the
cluster does not serve (no TCPRoute CRD installed, say) is left out and
logged; the provider works with the rest.

``permissions`` says what all this needs from RBAC; the example manifests'
ClusterRole is tested against it.

Every list call returns the raw response (``_preload_content=False``) so the
cache keeps plain JSON mappings, the shape the parser reads in file mode too.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from providers.gatewayapi.objects import GROUP, SLUICE_GROUP
from providers.kubernetes import lease

logger = logging.getLogger(__name__)

ListCall = Callable[..., Any]


@dataclass(frozen=True, slots=True)
class Resource:
    """One watched kind: where it is served and how its list is filtered."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    field_selector: str = ""
    has_status: bool = False  # the controller writes its status subresource

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


CORE = (
    Resource("", "v1", "services", "Service"),
    Resource("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice"),
    # Only TLS Secrets: the others are of no use to a gateway and may be many and big.
    Resource("", "v1", "secrets", "Secret", field_selector="type=kubernetes.io/tls"),
    Resource("", "v1", "namespaces", "Namespace", namespaced=False),
)

# kind -> (plural, namespaced, versions the parser reads, has status)
_CRDS: dict[tuple[str, str], tuple[str, bool, tuple[str, ...], bool]] = {
    (GROUP, "GatewayClass"): ("gatewayclasses", False, ("v1", "v1beta1"), True),
    (GROUP, "Gateway"): ("gateways", True, ("v1", "v1beta1"), True),
    (GROUP, "HTTPRoute"): ("httproutes", True, ("v1", "v1beta1"), True),
    (GROUP, "TLSRoute"): ("tlsroutes", True, ("v1", "v1alpha3", "v1alpha2"), True),
    (GROUP, "TCPRoute"): ("tcproutes", True, ("v1", "v1alpha2"), True),
    (GROUP, "UDPRoute"): ("udproutes", True, ("v1", "v1alpha2"), True),
    (GROUP, "ReferenceGrant"): ("referencegrants", True, ("v1", "v1beta1", "v1alpha2"), False),
    (SLUICE_GROUP, "Middleware"): ("middlewares", True, ("v1alpha1",), False),
}


@dataclass(frozen=True, slots=True)
class Permission:
    """One RBAC grant the provider needs: ``verbs`` on ``resource`` of API group ``group``."""

    group: str
    resource: str  # plural, or ``<plural>/status``
    verbs: tuple[str, ...]
    namespaced_only: bool = False  # needed only in one namespace (a Role suffices)


def permissions() -> list[Permission]:
    """Every grant the provider may use, for any kind it can discover.

    list and watch on every kind it reads; patch on the status subresource of
    the kinds it reports on; get, create and update on Leases, in the lease
    namespace only. Discovery needs none: every authenticated client may read it.
    """
    kinds = [(r.group, r.plural, r.has_status) for r in CORE]
    kinds += [(group, plural, status) for (group, _), (plural, _, _, status) in _CRDS.items()]
    out = [Permission(group, plural, ("list", "watch")) for group, plural, _ in kinds]
    out += [Permission(group, f"{plural}/status", ("patch",))
            for group, plural, status in kinds if status]
    out.append(Permission("coordination.k8s.io", "leases", lease.VERBS, namespaced_only=True))
    return out


def discover(api: client.ApiClient, timeout: float = 30.0) -> tuple[list[Resource], list[str]]:
    """The resources to watch, and the kinds the cluster does not serve (for the log)."""
    groups = _raw(client.ApisApi(api).get_api_versions, timeout=timeout).get("groups", [])
    by_name = {g.get("name"): g for g in groups if isinstance(g, dict)}
    found: list[Resource] = list(CORE)
    missing: list[str] = []
    custom = client.CustomObjectsApi(api)
    served: dict[tuple[str, str], list[str]] = {}  # (group, kind) -> versions, preferred first
    for group in (GROUP, SLUICE_GROUP):
        info = by_name.get(group)
        if info is None:
            continue
        versions = [v.get("version") for v in info.get("versions", []) if isinstance(v, dict)]
        preferred = (info.get("preferredVersion") or {}).get("version")
        if preferred in versions:
            versions.remove(preferred)
            versions.insert(0, preferred)
        for version in versions:
            listing = _raw(custom.get_api_resources, group, version, timeout=timeout)
            for item in listing.get("resources", []):
                if "/" in str(item.get("name", "")):
                    continue  # a subresource (status)
                served.setdefault((group, str(item.get("kind"))), []).append(str(version))
    for (group, kind), (plural, namespaced, readable, has_status) in _CRDS.items():
        usable = [v for v in served.get((group, kind), []) if v in readable]
        if not usable:
            missing.append(f"{group}/{kind}")
            continue
        found.append(Resource(group, usable[0], plural, kind, namespaced, has_status=has_status))
    return found, missing


def _raw(call: Callable[..., Any], *args: Any, timeout: float) -> dict[str, Any]:
    """The JSON body of a discovery call; ``{}`` when the path is not served (404)."""
    try:
        response = call(*args, _preload_content=False, _request_timeout=timeout)
    except ApiException as exc:
        if exc.status == 404:
            return {}
        raise
    data = json.loads(response.data or b"{}")
    return data if isinstance(data, dict) else {}


def list_call(api: client.ApiClient, resource: Resource, namespace: str | None) -> ListCall:
    """The list/watch call of ``resource``, in ``namespace`` or (``None``) every namespace."""
    if resource.group == "" and resource.version == "v1":
        core = client.CoreV1Api(api)
        if resource.plural == "namespaces":
            return functools.partial(core.list_namespace)
        single = {"services": "service", "secrets": "secret"}[resource.plural]
        if namespace is None:
            return functools.partial(getattr(core, f"list_{single}_for_all_namespaces"))
        return functools.partial(getattr(core, f"list_namespaced_{single}"), namespace)
    if resource.group == "discovery.k8s.io":
        discovery = client.DiscoveryV1Api(api)
        if namespace is None:
            return functools.partial(discovery.list_endpoint_slice_for_all_namespaces)
        return functools.partial(discovery.list_namespaced_endpoint_slice, namespace)
    custom = client.CustomObjectsApi(api)
    if not resource.namespaced or namespace is None:
        return functools.partial(
            custom.list_cluster_custom_object, resource.group, resource.version, resource.plural
        )
    return functools.partial(
        custom.list_namespaced_custom_object,
        resource.group, resource.version, namespace, resource.plural,
    )


def patch_status(
    api: client.ApiClient, resource: Resource, namespace: str, name: str, body: dict[str, Any]
) -> None:
    """Merge-patch the status subresource of one object (raises ``ApiException``)."""
    custom = client.CustomObjectsApi(api)
    if resource.namespaced:
        custom.patch_namespaced_custom_object_status(
            resource.group, resource.version, namespace, resource.plural, name, body,
            _request_timeout=30, _content_type="application/merge-patch+json",
        )
    else:
        custom.patch_cluster_custom_object_status(
            resource.group, resource.version, resource.plural, name, body,
            _request_timeout=30, _content_type="application/merge-patch+json",
        )
