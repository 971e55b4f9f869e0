"""Tests for gateway.metrics: families, label switches, exposition, multi-process mode.

This module must not import prometheus_client at module level: the spawned
workers of the multi-process test import it, and a worker has to call
setup_multiprocess before prometheus_client is first imported.
"""

from __future__ import annotations

import multiprocessing
import sys
from multiprocessing.connection import Connection
from pathlib import Path

import pytest

from gateway.config.static import Prometheus
from gateway.metrics import (
    OTHER_METHOD,
    Metrics,
    create_metrics,
    mark_process_dead,
    render_multiprocess,
    setup_multiprocess,
)

ALL_ON = Prometheus(add_entry_points_labels=True, add_routers_labels=True, add_services_labels=True)


def samples(body: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition body, keyed by name and label set."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(body: bytes, name: str, **labels: str) -> float | None:
    return samples(body).get((name, frozenset(labels.items())))


def names(body: bytes) -> set[str]:
    return {name for name, _ in samples(body)}


def rendered(metrics: Metrics) -> bytes:
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    return body


def test_observe_counts_in_every_family() -> None:
    """observe() counts a request at the entry point, the router and the service."""
    m = create_metrics(ALL_ON)
    m.requests.observe("web", "api@file", "api@file", "GET", 200, 0.05)
    m.requests.observe("web", "api@file", "api@file", "GET", 200, 0.5)
    m.requests.observe("web", "api@file", "api@file", "POST", 502, 2.0)
    body = rendered(m)

    ep = {"entrypoint": "web", "method": "GET", "code": "200", "protocol": "http"}
    assert value(body, "sluice_entrypoint_requests_total", **ep) == 2
    assert value(body, "sluice_entrypoint_request_duration_seconds_count", **ep) == 2
    assert value(body, "sluice_entrypoint_request_duration_seconds_sum", **ep) == pytest.approx(
        0.55
    )
    rt = {"router": "api@file", "service": "api@file", "method": "POST", "code": "502"}
    assert value(body, "sluice_router_requests_total", **rt) == 1
    assert value(body, "sluice_router_request_duration_seconds_count", **rt) == 1
    svc = {"service": "api@file", "method": "GET", "code": "200"}
    assert value(body, "sluice_service_requests_total", **svc) == 2
    assert value(body, "sluice_service_request_duration_seconds_count", **svc) == 2


def test_buckets_come_from_configuration() -> None:
    """Histogram buckets are the configured ones, each observation in its bucket."""
    m = create_metrics(Prometheus(buckets=(0.01, 1.0)))
    m.requests.observe("web", "", "", "GET", 200, 0.5)
    body = rendered(m)
    bucket = "sluice_entrypoint_request_duration_seconds_bucket"
    base = {"entrypoint": "web", "method": "GET", "code": "200", "protocol": "http"}
    assert value(body, bucket, le="0.01", **base) == 0
    assert value(body, bucket, le="1.0", **base) == 1
    assert value(body, bucket, le="+Inf", **base) == 1
    les = {dict(labels)["le"] for name, labels in samples(body) if name == bucket}
    assert les == {"0.01", "1.0", "+Inf"}


@pytest.mark.parametrize(
    ("config", "absent", "present"),
    [
        (
            Prometheus(add_entry_points_labels=False, add_routers_labels=True),
            {
                "sluice_entrypoint_requests_total",
                "sluice_entrypoint_request_duration_seconds_count",
            },
            {"sluice_router_requests_total", "sluice_service_requests_total"},
        ),
        (
            Prometheus(),  # Traefik's defaults: routers off
            {"sluice_router_requests_total", "sluice_router_request_duration_seconds_count"},
            {"sluice_entrypoint_requests_total", "sluice_service_requests_total"},
        ),
        (
            Prometheus(add_services_labels=False, add_routers_labels=True),
            {
                "sluice_service_requests_total",
                "sluice_service_request_duration_seconds_count",
                "sluice_service_server_up",
                "sluice_service_retries_total",
            },
            {"sluice_entrypoint_requests_total", "sluice_router_requests_total"},
        ),
    ],
    ids=["entrypoints-off", "routers-off-by-default", "services-off"],
)
def test_label_switch_removes_family(
    config: Prometheus, absent: set[str], present: set[str]
) -> None:
    """A label switch that is off removes its whole family from the exposition."""
    m = create_metrics(config)
    m.requests.observe("web", "api@file", "api@file", "GET", 200, 0.01)
    m.set_server_up("api@file", "http://127.0.0.1:8080", True)
    m.retry("api@file")
    body = names(rendered(m))
    assert not body & absent
    assert present <= body


def test_unrouted_request_counts_at_entry_point_only() -> None:
    """A request no router matched counts at the entry point, not per router or service."""
    m = create_metrics(ALL_ON)
    m.requests.observe("web", "", "", "GET", 404, 0.001)
    body = rendered(m)
    ep = {"entrypoint": "web", "method": "GET", "code": "404", "protocol": "http"}
    assert value(body, "sluice_entrypoint_requests_total", **ep) == 1
    assert "sluice_router_requests_total" not in names(body)
    assert "sluice_service_requests_total" not in names(body)


def test_unknown_methods_share_one_label() -> None:
    """Invented methods are counted under one label value, bounding cardinality."""
    m = create_metrics(Prometheus())
    for method in ("FOO", "BAR", "FOO"):
        m.requests.observe("web", "", "", method, 400, 0.001)
    body = rendered(m)
    ep = {"entrypoint": "web", "method": OTHER_METHOD, "code": "400", "protocol": "http"}
    assert value(body, "sluice_entrypoint_requests_total", **ep) == 3
    methods = {
        dict(labels).get("method")
        for name, labels in samples(body)
        if name == "sluice_entrypoint_requests_total"
    }
    assert methods == {OTHER_METHOD}


def test_protocol_label() -> None:
    """The entry-point family carries the protocol label the data path passes."""
    m = create_metrics(Prometheus())
    m.requests.observe("web", "", "", "GET", 101, 0.001, protocol="websocket")
    ep = {"entrypoint": "web", "method": "GET", "code": "101", "protocol": "websocket"}
    assert value(rendered(m), "sluice_entrypoint_requests_total", **ep) == 1


def test_gauges_and_counters() -> None:
    """Connections, server state, retries, reloads and middleware errors are exposed."""
    m = create_metrics(Prometheus())
    conns = m.open_connections("web")
    conns.inc()
    conns.inc()
    conns.dec()
    assert m.open_connections("web") is conns
    m.set_server_up("api@file", "http://127.0.0.1:1", True)
    m.set_server_up("api@file", "http://127.0.0.1:2", False)
    m.retry("api@file")
    m.config_reloaded(success=True, at=1000.0)
    m.config_reloaded(success=True, at=2000.0)
    m.config_reloaded(success=False, at=1500.0)
    m.middleware_error("auth@file")
    body = rendered(m)

    assert value(body, "sluice_open_connections", entrypoint="web", protocol="TCP") == 1
    up = "sluice_service_server_up"
    assert value(body, up, service="api@file", url="http://127.0.0.1:1") == 1
    assert value(body, up, service="api@file", url="http://127.0.0.1:2") == 0
    assert value(body, "sluice_service_retries_total", service="api@file") == 1
    assert value(body, "sluice_config_reloads_total") == 2
    assert value(body, "sluice_config_reload_failures_total") == 1
    assert value(body, "sluice_config_last_reload_success_timestamp_seconds") == 2000.0
    assert value(body, "sluice_config_last_reload_failure_timestamp_seconds") == 1500.0
    assert value(body, "sluice_middleware_errors_total", middleware="auth@file") == 1

    m.remove_server("api@file", "http://127.0.0.1:2")
    assert value(rendered(m), up, service="api@file", url="http://127.0.0.1:2") is None


def test_instances_are_independent() -> None:
    """Two Metrics objects in one process keep separate registries."""
    a = create_metrics(Prometheus())
    b = create_metrics(Prometheus())
    a.requests.observe("web", "", "", "GET", 200, 0.01)
    ep = {"entrypoint": "web", "method": "GET", "code": "200", "protocol": "http"}
    assert value(rendered(a), "sluice_entrypoint_requests_total", **ep) == 1
    assert value(rendered(b), "sluice_entrypoint_requests_total", **ep) is None


def test_setup_multiprocess_refuses_after_import(tmp_path: Path) -> None:
    """setup_multiprocess fails loudly once prometheus_client runs in single-process mode."""
    import prometheus_client  # noqa: F401  (the import is the precondition)

    with pytest.raises(RuntimeError, match="imported before setup_multiprocess"):
        setup_multiprocess(tmp_path / "metrics")
    with pytest.raises(RuntimeError, match="imported before setup_multiprocess"):
        create_metrics(Prometheus(), multiprocess_dir=tmp_path / "metrics")


# --- multi-process mode --------------------------------------------------------


def worker(directory: str, requests: int, connections: int, conn: Connection) -> None:
    """A spawned gateway worker: record some traffic, then report its view."""
    metrics = create_metrics(ALL_ON, multiprocess_dir=Path(directory))
    for _ in range(requests):
        metrics.requests.observe("web", "api@file", "api@file", "GET", 200, 0.01)
    gauge = metrics.open_connections("web")
    for _ in range(connections):
        gauge.inc()
    metrics.set_server_up("api@file", "http://127.0.0.1:8080", True)
    body, _ = metrics.render()
    conn.send(body)
    conn.close()


@pytest.fixture
def importable_tests(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let spawned children import this module whatever pytest's import mode."""
    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:
        monkeypatch.syspath_prepend(root)


def run_worker(directory: Path, requests: int, connections: int) -> tuple[int, bytes]:
    ctx = multiprocessing.get_context("spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    process = ctx.Process(target=worker, args=(str(directory), requests, connections, sender))
    process.start()
    sender.close()
    body = receiver.recv()
    process.join()
    assert process.exitcode == 0
    assert process.pid is not None
    return process.pid, body


@pytest.mark.usefixtures("importable_tests")
def test_multiprocess_sums_workers(tmp_path: Path) -> None:
    """Two worker processes write to one directory; rendering sums them."""
    directory = tmp_path / "prom"  # created by the workers' setup_multiprocess
    first_pid, _ = run_worker(directory, requests=3, connections=2)
    second_pid, second_view = run_worker(directory, requests=4, connections=5)

    ep = {"entrypoint": "web", "method": "GET", "code": "200", "protocol": "http"}
    conns = {"entrypoint": "web", "protocol": "TCP"}
    up = {"service": "api@file", "url": "http://127.0.0.1:8080"}
    # A worker's own render() already aggregates every process's files.
    assert value(second_view, "sluice_entrypoint_requests_total", **ep) == 7

    body, content_type = render_multiprocess(directory)
    assert content_type.startswith("text/plain")
    assert value(body, "sluice_entrypoint_requests_total", **ep) == 7
    assert value(body, "sluice_entrypoint_request_duration_seconds_count", **ep) == 7
    rt = {"router": "api@file", "service": "api@file", "method": "GET", "code": "200"}
    assert value(body, "sluice_router_requests_total", **rt) == 7
    assert value(body, "sluice_open_connections", **conns) == 7
    assert value(body, "sluice_service_server_up", **up) == 1

    # A dead worker's connections leave the total; its counted requests stay.
    mark_process_dead(first_pid, directory)
    body, _ = render_multiprocess(directory)
    assert value(body, "sluice_open_connections", **conns) == 5
    assert value(body, "sluice_entrypoint_requests_total", **ep) == 7
    mark_process_dead(second_pid, directory)
    body, _ = render_multiprocess(directory)
    assert value(body, "sluice_open_connections", **conns) is None
    assert value(body, "sluice_service_server_up", **up) is None


def test_setup_multiprocess_clean_removes_stale_files(tmp_path: Path) -> None:
    """The supervisor's clean start drops files a previous run left behind.

    Runs in a spawned child because setup_multiprocess must precede the import.
    """
    stale = tmp_path / "counter_12345.db"
    stale.write_bytes(b"")
    ctx = multiprocessing.get_context("spawn")
    process = ctx.Process(target=setup_multiprocess, args=(tmp_path,), kwargs={"clean": True})
    process.start()
    process.join()
    assert process.exitcode == 0
    assert not stale.exists()
