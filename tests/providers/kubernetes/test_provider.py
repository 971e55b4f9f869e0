"""The Kubernetes provider against a stand-in API server: snapshots, watches, relists, status.

The real ``kubernetes`` client talks HTTP to ``FakeAPIServer`` (a real aiohttp
server on 127.0.0.1); nothing of ours is mocked. Spec rules cited are from
/work/notes/gatewayapi-spec.md.
"""

from __future__ import annotations

import asyncio
import copy
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.config.dynamic import DynamicConfig
from gateway.config.errors import ConfigError
from gateway.config.static import KubernetesProviderConfig
from providers.kubernetes.provider import KubernetesProvider
from providers.kubernetes.watcher import Backoff
from tests.certs import make_ca
from tests.providers.kubernetes.fake_apiserver import GW, FakeAPIServer

FAST = Backoff(initial=0.05, cap=0.2)


def gateway_class() -> dict[str, Any]:
    return {"apiVersion": f"{GW}/v1", "kind": "GatewayClass", "metadata": {"name": "sluice"},
            "spec": {"controllerName": "sluice.dev/gateway-controller"}}


def gateway(namespace: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": f"{GW}/v1", "kind": "Gateway",
        "metadata": {"name": "edge", "namespace": namespace},
        "spec": {
            "gatewayClassName": "sluice",
            "addresses": [{"type": "IPAddress", "value": "127.0.0.1"}],
            "listeners": [{"name": "http", "protocol": "HTTP", "port": 8080,
                           "allowedRoutes": {"namespaces": {"from": "All"}}}],
        },
    }


def route(name: str, path: str, namespace: str = "default", service: str = "app",
          gateway_namespace: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": f"{GW}/v1", "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "parentRefs": [{"name": "edge", "namespace": gateway_namespace}],
            "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": path}}],
                       "backendRefs": [{"name": service, "port": 80}]}],
        },
    }


def service(name: str = "app", namespace: str = "default", ip: str = "127.0.0.5"
            ) -> list[dict[str, Any]]:
    return [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace},
         "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 9000}]}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": f"{name}-1", "namespace": namespace,
                      "labels": {"kubernetes.io/service-name": name}},
         "addressType": "IPv4", "ports": [{"name": "http", "port": 9000}],
         "endpoints": [{"addresses": [ip], "conditions": {"ready": True}}]},
    ]


def cluster(fake: FakeAPIServer) -> None:
    for obj in [gateway_class(), gateway(), route("app", "/app"), *service()]:
        fake.put(obj)


def rules(config: DynamicConfig | ConfigError) -> list[str]:
    assert isinstance(config, DynamicConfig), config
    return sorted(r.rule for r in config.http.routers.values())


def servers(config: DynamicConfig | ConfigError) -> set[str]:
    assert isinstance(config, DynamicConfig), config
    return {
        s.url for svc in config.http.services.values() if svc.load_balancer is not None
        for s in svc.load_balancer.servers
    }


@pytest.fixture
async def fake() -> AsyncIterator[FakeAPIServer]:
    server = FakeAPIServer()
    await server.start()
    yield server
    await server.stop()


def provider_for(fake: FakeAPIServer, tmp_path: Path, identity: str = "replica",
                 **options: Any) -> KubernetesProvider:
    path = tmp_path / "kubeconfig"
    path.write_text(fake.kubeconfig())
    config = KubernetesProviderConfig(kubeconfig=str(path), **options)
    return KubernetesProvider(config, environ={}, home=tmp_path, backoff=FAST, identity=identity)


async def next_snapshot(snapshots: AsyncIterator[DynamicConfig | ConfigError]
                        ) -> DynamicConfig | ConfigError:
    async with asyncio.timeout(15):
        return await anext(snapshots)


async def test_initial_list_gives_a_snapshot_that_routes(fake: FakeAPIServer, tmp_path: Path
                                                         ) -> None:
    """The first snapshot holds the listed route, its Service's endpoints and the listener."""
    cluster(fake)
    snapshots = provider_for(fake, tmp_path).snapshots()
    try:
        config = await next_snapshot(snapshots)
        assert any("`/app`" in rule for rule in rules(config))
        assert servers(config) == {"http://127.0.0.5:9000"}
        assert isinstance(config, DynamicConfig) and config.entry_points
        assert ":8080" in str(next(iter(config.entry_points.values())))
    finally:
        await snapshots.aclose()


async def test_route_added_by_watch_event_gives_new_snapshot(fake: FakeAPIServer,
                                                            tmp_path: Path) -> None:
    """An HTTPRoute created after the list arrives by watch and yields a new snapshot."""
    cluster(fake)
    provider = provider_for(fake, tmp_path)
    snapshots = provider.snapshots()
    try:
        await next_snapshot(snapshots)
        await fake.wait_for(lambda: fake.watching("httproutes") == 1)
        fake.put(route("api", "/api"))
        config = await next_snapshot(snapshots)
        assert any("`/api`" in rule for rule in rules(config))
        assert any("`/app`" in rule for rule in rules(config))
        assert all(w.lists == 1 for w in provider.watchers)  # no relist needed
    finally:
        await snapshots.aclose()


async def test_deleted_route_leaves_the_snapshot(fake: FakeAPIServer, tmp_path: Path) -> None:
    """A DELETED event removes the route's routers."""
    cluster(fake)
    snapshots = provider_for(fake, tmp_path).snapshots()
    try:
        await next_snapshot(snapshots)
        await fake.wait_for(lambda: fake.watching("httproutes") == 1)
        fake.delete(f"{GW}/v1", "HTTPRoute", "default", "app")
        config = await next_snapshot(snapshots)
        assert rules(config) == []
    finally:
        await snapshots.aclose()


async def test_gone_on_watch_relists(fake: FakeAPIServer, tmp_path: Path) -> None:
    """410 Gone when resuming a watch makes the watcher list again, and the list is the truth."""
    cluster(fake)
    provider = provider_for(fake, tmp_path)
    snapshots = provider.snapshots()
    try:
        await next_snapshot(snapshots)
        await fake.wait_for(lambda: fake.watching("httproutes") == 1)
        # The route changes, its event is lost to compaction: only a relist can show it.
        changed = copy.deepcopy(fake.get("HTTPRoute", "default", "app"))
        changed["spec"]["rules"][0]["matches"][0]["path"]["value"] = "/moved"
        fake.put(changed, unseen=True)
        fake.compact()
        fake.drop_watches()
        config = await next_snapshot(snapshots)
        assert any("`/moved`" in rule for rule in rules(config))
        watcher = next(w for w in provider.watchers if w.resource.kind == "HTTPRoute")
        assert watcher.lists == 2
    finally:
        await snapshots.aclose()


async def test_watch_resumes_from_last_version_without_relist(fake: FakeAPIServer,
                                                              tmp_path: Path) -> None:
    """A dropped watch reconnects from its resourceVersion; events meanwhile are not lost."""
    cluster(fake)
    provider = provider_for(fake, tmp_path)
    snapshots = provider.snapshots()
    try:
        await next_snapshot(snapshots)
        await fake.wait_for(lambda: fake.watching("httproutes") == 1)
        fake.drop_watches()
        fake.put(route("api", "/api"))
        config = await next_snapshot(snapshots)
        assert any("`/api`" in rule for rule in rules(config))
        assert all(w.lists == 1 for w in provider.watchers)
        resumed = [r for r in fake.requests if r.path.endswith("/httproutes")
                   and r.query.get("watch") == "true"]
        assert len(resumed) >= 2 and all(r.query.get("resourceVersion") for r in resumed)
    finally:
        await snapshots.aclose()


async def test_bookmark_advances_the_resume_version(fake: FakeAPIServer, tmp_path: Path) -> None:
    """After a BOOKMARK a reconnect resumes from its version: earlier compaction costs no relist."""
    cluster(fake)
    provider = provider_for(fake, tmp_path)
    snapshots = provider.snapshots()
    try:
        await next_snapshot(snapshots)
        await fake.wait_for(lambda: fake.watching("services") == 1)
        # A change elsewhere moves the version past the Services watch's last event ...
        fake.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}})
        fake.bookmark()  # ... and the bookmark tells it so,
        seen = len(fake.requests)
        fake.compact()  # so history up to now can go without costing it a relist.
        fake.drop_watches()
        await fake.wait_for(lambda: fake.watching("services") == 1 and len(fake.requests) > seen)
        fake.put(route("api", "/api"))
        config = await next_snapshot(snapshots)
        assert any("`/api`" in rule for rule in rules(config))
        watcher = next(w for w in provider.watchers if w.resource.kind == "Service")
        assert watcher.lists == 1
    finally:
        await snapshots.aclose()


async def test_status_written_with_conditions(fake: FakeAPIServer, tmp_path: Path) -> None:
    """GatewayClass, Gateway and HTTPRoute get their status patched (reference §3.1, §3.2, §3.4)."""
    cluster(fake)
    snapshots = provider_for(fake, tmp_path).snapshots()
    try:
        await next_snapshot(snapshots)

        def written() -> bool:
            return all(fake.patches(kind) for kind in ("GatewayClass", "Gateway", "HTTPRoute"))

        await fake.wait_for(written)
        gc = fake.get("GatewayClass", "", "sluice")["status"]
        assert [(c["type"], c["status"]) for c in gc["conditions"]] == [("Accepted", "True")]
        gw = fake.get("Gateway", "default", "edge")["status"]
        assert {(c["type"], c["status"]) for c in gw["conditions"]} == {
            ("Accepted", "True"), ("Programmed", "True")}
        assert gw["listeners"][0]["attachedRoutes"] == 1
        parents = fake.get("HTTPRoute", "default", "app")["status"]["parents"]
        assert parents[0]["controllerName"] == "sluice.dev/gateway-controller"
        assert {(c["type"], c["status"], c["observedGeneration"])
                for c in parents[0]["conditions"]} == {
            ("Accepted", "True", 1), ("ResolvedRefs", "True", 1)}
        assert all(c["lastTransitionTime"] for c in parents[0]["conditions"])
    finally:
        await snapshots.aclose()


async def test_status_keeps_transition_time_and_foreign_parents(fake: FakeAPIServer,
                                                                tmp_path: Path) -> None:
    """Unchanged conditions keep lastTransitionTime; other controllers' parents survive (§3)."""
    cluster(fake)
    app = fake.get("HTTPRoute", "default", "app")
    foreign = {"parentRef": {"name": "other"}, "controllerName": "example.com/other",
               "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted"}]}
    app["status"] = {"parents": [foreign]}
    snapshots = provider_for(fake, tmp_path).snapshots()
    try:
        await next_snapshot(snapshots)
        await fake.wait_for(lambda: bool(fake.patches("HTTPRoute")))
        parents = fake.get("HTTPRoute", "default", "app")["status"]["parents"]
        assert parents[0] == foreign and len(parents) == 2
        # Someone rewinds the times (a status write the provider sees by watch) ...
        rewound = copy.deepcopy(fake.get("HTTPRoute", "default", "app"))
        for c in rewound["status"]["parents"][1]["conditions"]:
            c["lastTransitionTime"] = "2000-01-01T00:00:00Z"
        fake.put(rewound)
        # ... then a backend disappears: ResolvedRefs flips, Accepted does not (§3.4).
        fake.delete("v1", "Service", "default", "app")
        await next_snapshot(snapshots)

        def conditions() -> dict[str, Any]:
            parents = fake.get("HTTPRoute", "default", "app")["status"]["parents"]
            return {c["type"]: c for c in parents[1]["conditions"]}

        await fake.wait_for(lambda: conditions()["ResolvedRefs"]["status"] == "False")
        assert conditions()["ResolvedRefs"]["lastTransitionTime"] != "2000-01-01T00:00:00Z"
        assert conditions()["Accepted"]["lastTransitionTime"] == "2000-01-01T00:00:00Z"
        assert fake.get("HTTPRoute", "default", "app")["status"]["parents"][0] == foreign
    finally:
        await snapshots.aclose()


async def test_status_not_rewritten_when_unchanged(fake: FakeAPIServer, tmp_path: Path) -> None:
    """A change that alters no status (a new unrelated Service) writes nothing."""
    cluster(fake)
    snapshots = provider_for(fake, tmp_path).snapshots()
    try:
        await next_snapshot(snapshots)
        await fake.wait_for(lambda: len(fake.patches()) == 3)
        for obj in service("unrelated", ip="127.0.0.9"):
            fake.put(obj)  # rebuilds, but changes neither configuration nor status
        fake.put(route("api", "/api"))  # the Gateway's attachedRoutes and the new route change
        config = await next_snapshot(snapshots)
        assert any("`/api`" in rule for rule in rules(config))
        await fake.wait_for(lambda: len(fake.patches()) >= 5)
        kinds = [r.path.rsplit("/", 3)[-3] for r in fake.patches()[3:]]
        assert sorted(kinds) == ["gateways", "httproutes"]
    finally:
        await snapshots.aclose()


async def test_invalid_route_is_skipped_and_reported_in_status(fake: FakeAPIServer,
                                                               tmp_path: Path) -> None:
    """A route the parser refuses is left out; the others still route; its status says why."""
    cluster(fake)
    bad = route("bad", "/bad")
    bad["spec"]["rules"][0]["matches"][0]["path"]["value"] = "no-leading-slash"
    fake.put(bad)
    provider = provider_for(fake, tmp_path)
    snapshots = provider.snapshots()
    try:
        config = await next_snapshot(snapshots)
        assert any("`/app`" in rule for rule in rules(config))
        assert ("HTTPRoute", "default", "bad") in provider.invalid
        await fake.wait_for(
            lambda: "status" in fake.get("HTTPRoute", "default", "bad"))
        parent = fake.get("HTTPRoute", "default", "bad")["status"]["parents"][0]
        accepted = parent["conditions"][0]
        assert (accepted["type"], accepted["status"], accepted["reason"]) == (
            "Accepted", "False", "UnsupportedValue")
        assert "spec.rules[0]" in accepted["message"]
    finally:
        await snapshots.aclose()


async def test_namespaces_filter(fake: FakeAPIServer, tmp_path: Path) -> None:
    """With namespaces set, objects elsewhere are not watched and not routed."""
    cluster(fake)
    fake.put(route("elsewhere", "/elsewhere", namespace="team-b"))
    for obj in service(namespace="team-b", ip="127.0.0.7"):
        fake.put(obj)
    snapshots = provider_for(fake, tmp_path, namespaces=("default",)).snapshots()
    try:
        config = await next_snapshot(snapshots)
        assert not any("/elsewhere" in rule for rule in rules(config))
        assert servers(config) == {"http://127.0.0.5:9000"}
        namespaced = [r.path for r in fake.requests if "/namespaces/" in r.path]
        assert namespaced and all("/namespaces/default/" in p for p in namespaced)
    finally:
        await snapshots.aclose()


async def test_discovery_picks_served_versions(fake: FakeAPIServer, tmp_path: Path) -> None:
    """Each CRD kind is watched in the version the cluster serves (TCPRoute only as v1alpha2)."""
    cluster(fake)
    provider = provider_for(fake, tmp_path)
    snapshots = provider.snapshots()
    try:
        await next_snapshot(snapshots)
        versions = {w.resource.kind: w.resource.version for w in provider.watchers}
        assert versions["HTTPRoute"] == "v1"
        assert versions["TCPRoute"] == "v1alpha2"
        assert versions["Middleware"] == "v1alpha1"
    finally:
        await snapshots.aclose()


async def test_unreachable_api_server_yields_error_then_recovers(tmp_path: Path) -> None:
    """An API server that is not up yet gives a ConfigError, then snapshots once it is."""
    fake = FakeAPIServer()
    await fake.start()
    url = fake.url
    await fake.stop()
    path = tmp_path / "kubeconfig"
    path.write_text(fake.kubeconfig())
    provider = KubernetesProvider(KubernetesProviderConfig(kubeconfig=str(path)), environ={},
                                  home=tmp_path, backoff=FAST)
    snapshots = provider.snapshots()
    try:
        error = await next_snapshot(snapshots)
        assert isinstance(error, ConfigError) and "cannot reach" in str(error)
        assert url in str(error) or "127.0.0.1" in str(error)
    finally:
        await snapshots.aclose()


async def test_in_cluster_service_account_over_tls(tmp_path: Path) -> None:
    """In-cluster credentials: https to KUBERNETES_SERVICE_HOST, the account's CA and token."""
    ca = make_ca(tmp_path)
    cert, key = ca.issue(tmp_path, ["127.0.0.1"])
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    fake = FakeAPIServer()
    fake.token = "s3cret"
    await fake.start(ssl_context=context)
    cluster(fake)
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text("s3cret")
    (account / "ca.crt").write_text(ca.cert_path.read_text())
    port = fake.url.rsplit(":", 1)[1]
    environ = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": port}
    provider = KubernetesProvider(KubernetesProviderConfig(), environ=environ,
                                  service_account_dir=account, home=tmp_path, backoff=FAST)
    snapshots = provider.snapshots()
    try:
        config = await next_snapshot(snapshots)
        assert any("`/app`" in rule for rule in rules(config))
    finally:
        await snapshots.aclose()
        await fake.stop()


async def test_two_replicas_one_writes_status(fake: FakeAPIServer, tmp_path: Path) -> None:
    """Only the Lease holder writes status; when it stops, the other takes over and writes."""
    cluster(fake)
    lease = {"lease_namespace": "kube-system", "lease_name": "sluice", "lease_duration": 1.0}
    first = provider_for(fake, tmp_path, identity="first", **lease)
    second = provider_for(fake, tmp_path, identity="second", **lease)
    one, two = first.snapshots(), second.snapshots()
    try:
        await next_snapshot(one)
        assert first.elector is not None
        await fake.wait_for(lambda: len(fake.patches()) == 3)
        await next_snapshot(two)
        assert second.elector is not None
        async with asyncio.timeout(15):
            await second.elector.decided.wait()
        assert first.elector.leading and not second.elector.leading
        fake.put(route("api", "/api"))
        await next_snapshot(one)
        await next_snapshot(two)
        await fake.wait_for(lambda: "status" in fake.get("HTTPRoute", "default", "api"))
        await one.aclose()  # releases the Lease
        assert fake.get("Lease", "kube-system", "sluice", group="coordination.k8s.io")[
            "spec"]["holderIdentity"] in ("", "second")
        fake.delete("v1", "Service", "default", "app")
        await next_snapshot(two)
        await fake.wait_for(lambda: any(
            c["status"] == "False"
            for c in fake.get("HTTPRoute", "default", "app")["status"]["parents"][0]["conditions"]
        ))
        assert second.elector.leading
        assert len(fake.patches("HTTPRoute")) == 3  # app, api, app again: never twice
        assert sum(1 for r in fake.patches() if r.path.endswith("/api/status")) == 1
    finally:
        await one.aclose()
        await two.aclose()
