"""Watches follow discovery: kinds that appear, disappear or change version while running.

Through the provider against ``FakeAPIServer``, whose ``serve``/``unserve``
stand in for applying and deleting a CRD. Nothing of ours is mocked.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.config.static import KubernetesProviderConfig
from providers.kubernetes.provider import KubernetesProvider
from tests.providers.kubernetes.fake_apiserver import GW, FakeAPIServer
from tests.providers.kubernetes.test_provider import (
    FAST,
    cluster,
    next_snapshot,
    route,
    rules,
)

Served = dict[str, dict[str, tuple[str, ...]]]

# The default bundle without HTTPRoute: its CRD is not installed yet.
NO_HTTPROUTE: Served = {
    GW: {
        "v1": ("GatewayClass", "Gateway", "ReferenceGrant"),
        "v1alpha2": ("TCPRoute", "UDPRoute", "TLSRoute", "ReferenceGrant"),
    },
    "sluice.dev": {"v1alpha1": ("Middleware",)},
}
# An older bundle: HTTPRoute only as v1beta1.
HTTPROUTE_BETA: Served = {
    GW: {
        "v1": ("GatewayClass", "Gateway", "ReferenceGrant"),
        "v1beta1": ("HTTPRoute",),
        "v1alpha2": ("TCPRoute", "UDPRoute", "TLSRoute", "ReferenceGrant"),
    },
    "sluice.dev": {"v1alpha1": ("Middleware",)},
}


@pytest.fixture
async def servers() -> AsyncIterator[list[FakeAPIServer]]:
    started: list[FakeAPIServer] = []
    yield started
    for server in started:
        await server.stop()


async def start(servers: list[FakeAPIServer], served: Served
                ) -> FakeAPIServer:
    fake = FakeAPIServer(served)
    await fake.start()
    servers.append(fake)
    return fake


def provider_for(fake: FakeAPIServer, tmp_path: Path, interval: float) -> KubernetesProvider:
    path = tmp_path / "kubeconfig"
    path.write_text(fake.kubeconfig())
    return KubernetesProvider(KubernetesProviderConfig(kubeconfig=str(path)), environ={},
                              home=tmp_path, backoff=FAST, discovery_interval=interval)


def watched(provider: KubernetesProvider, kind: str) -> set[str]:
    return {w.resource.version for w in provider.watchers if w.resource.kind == kind}


async def test_kind_installed_after_start_is_watched(servers: list[FakeAPIServer],
                                                     tmp_path: Path) -> None:
    """A CRD applied after the first discovery is found by the periodic one, and routes."""
    fake = await start(servers, NO_HTTPROUTE)
    cluster(fake)
    provider = provider_for(fake, tmp_path, interval=0.05)
    snapshots = provider.snapshots()
    try:
        assert rules(await next_snapshot(snapshots)) == []
        assert watched(provider, "HTTPRoute") == set()
        fake.serve(GW, "v1", "HTTPRoute")
        config = await next_snapshot(snapshots)
        assert any("`/app`" in rule for rule in rules(config))
        assert watched(provider, "HTTPRoute") == {"v1"}
        await fake.wait_for(lambda: bool(fake.patches("HTTPRoute")))  # the writer knows it too
    finally:
        await snapshots.aclose()


async def test_deleted_kind_is_dropped_after_a_watch_404(servers: list[FakeAPIServer],
                                                        tmp_path: Path) -> None:
    """A deleted CRD: its watch's 404 starts discovery; once confirmed, its objects leave."""
    fake = await start(servers, HTTPROUTE_BETA)  # the fake copies what it serves
    fake.serve(GW, "v1", "HTTPRoute")
    cluster(fake)
    provider = provider_for(fake, tmp_path, interval=3600)  # only a 404 can trigger it
    snapshots = provider.snapshots()
    try:
        assert any("`/app`" in rule for rule in rules(await next_snapshot(snapshots)))
        await fake.wait_for(lambda: fake.watching("httproutes") == 1)
        fake.unserve(GW, "v1beta1", "HTTPRoute")
        fake.unserve(GW, "v1", "HTTPRoute")
        assert rules(await next_snapshot(snapshots)) == []
        assert watched(provider, "HTTPRoute") == set()
        # The timer never fires (an hour): the 404 started discovery, and a second one
        # confirmed the kind gone before anything was dropped.
        assert provider.discoveries >= 2
    finally:
        await snapshots.aclose()


async def test_kind_served_in_a_new_version_moves_without_a_gap(servers: list[FakeAPIServer],
                                                                tmp_path: Path) -> None:
    """An upgraded CRD serving v1: the watch moves there; routes never leave the snapshot."""
    fake = await start(servers, HTTPROUTE_BETA)
    cluster(fake)
    provider = provider_for(fake, tmp_path, interval=0.05)
    snapshots = provider.snapshots()
    try:
        assert any("`/app`" in rule for rule in rules(await next_snapshot(snapshots)))
        assert watched(provider, "HTTPRoute") == {"v1beta1"}
        fake.serve(GW, "v1", "HTTPRoute")
        await fake.wait_for(lambda: watched(provider, "HTTPRoute") == {"v1"}
                            and fake.watching("httproutes", "v1") == 1)
        fake.put(route("api", "/api"))
        config = await next_snapshot(snapshots)
        for path in ("`/app`", "`/api`"):  # a gap would have yielded a snapshot without /app
            assert any(path in rule for rule in rules(config))
        await fake.wait_for(lambda: any(r.path.endswith("/httproutes/api/status")
                                        for r in fake.patches("HTTPRoute")))
        api = next(r for r in fake.patches("HTTPRoute") if r.path.endswith("/api/status"))
        assert api.path.startswith(f"/apis/{GW}/v1/")
    finally:
        await snapshots.aclose()
