"""Metrics, access log, API and middleware failure isolation on a running gateway."""

from __future__ import annotations

import json

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from gateway import __version__
from gateway.access_log import AccessLog
from gateway.api.server import bound_port, build_api_app, start_api
from gateway.api.state import GatewayState
from gateway.config.model import model
from gateway.config.static import AccessLog as AccessLogConfig
from gateway.config.static import Prometheus
from gateway.metrics import create_metrics
from middleware.contract import BuildContext, Filter, Handler, Request, Response
from middleware.registry import load_registry
from tests.backends import RecordingBackend, closed_port, get, http_request
from tests.harness import start_gateway


def dynamic(url: str, middlewares: str = "") -> str:
    return f"""
http:
  routers:
    app:
      rule: Host(`app.test`)
      service: app
      {middlewares}
  services:
    app:
      loadBalancer:
        servers: [{{url: "{url}"}}]
"""


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    out = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                out.append((sample.labels, sample.value))
    return out


async def test_metrics_count_requests_by_router_and_code(tmp_path):
    """Requests are counted per entry point, router, service and status code."""
    backend = await RecordingBackend().start()
    metrics = create_metrics(Prometheus(add_routers_labels=True))
    gw = await start_gateway(tmp_path, dynamic(backend.url), metrics=metrics)
    try:
        for _ in range(3):
            assert (await http_request(gw.port(), get("app.test"))).status == 200
        assert (await http_request(gw.port(), get("nobody.test"))).status == 404
        text = metrics.render()[0].decode()
        routers = samples(text, "sluice_router_requests_total")
        assert (
            {"router": "app@file", "service": "app@file", "method": "GET", "code": "200"},
            3.0,
        ) in routers
        entry = samples(text, "sluice_entrypoint_requests_total")
        assert any(lab["code"] == "404" and v == 1.0 for lab, v in entry)
        assert samples(text, "sluice_config_reloads_total")[0][1] == 1.0
        up = samples(text, "sluice_service_server_up")
        assert up == [({"service": "app@file", "url": backend.url}, 1.0)]
    finally:
        await gw.stop()
        await backend.close()


async def test_access_log_writes_json_lines(tmp_path):
    """With the JSON access log on, each request writes one line with Traefik's field names."""
    backend = await RecordingBackend().start()
    path = tmp_path / "access.json"
    access = AccessLog(AccessLogConfig(file_path=str(path), format="json"))
    gw = await start_gateway(tmp_path, dynamic(backend.url), access_log=access)
    try:
        assert (await http_request(gw.port(), get("app.test", "/x?y=1"))).status == 200
        access.flush()
        line = json.loads(path.read_text().splitlines()[-1])
        assert line["RouterName"] == "app@file"
        assert line["DownstreamStatus"] == 200
        assert line["RequestPath"] == "/x?y=1"
        assert line["ServiceURL"] == backend.url
    finally:
        await gw.stop()
        access.close()
        await backend.close()


async def test_access_log_names_the_user_basic_auth_let_in(tmp_path):
    """ClientUsername in the access log is the user an auth middleware admitted."""
    backend = await RecordingBackend().start()
    path = tmp_path / "access.json"
    access = AccessLog(AccessLogConfig(file_path=str(path), format="json"))
    # {SHA} hash of "secret" for user alice.
    auth = (
        "  middlewares:\n    auth:\n      basicAuth:\n"
        '        users: ["alice:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ="]\n'
    )
    text = dynamic(backend.url, "middlewares: [auth]") + auth
    gw = await start_gateway(tmp_path, text, access_log=access)
    try:
        login = "Authorization: Basic YWxpY2U6c2VjcmV0\r\n"
        assert (await http_request(gw.port(), get("app.test", "/", login))).status == 200
        assert (await http_request(gw.port(), get("app.test"))).status == 401
        access.flush()
        users = [json.loads(line)["ClientUsername"] for line in path.read_text().splitlines()]
        assert users == ["alice", "-"]
    finally:
        await gw.stop()
        access.close()
        await backend.close()


async def test_api_reports_configuration_and_rejected_reload(tmp_path):
    """The API lists routers and shows a rejected file with file, line and key path."""
    backend = await RecordingBackend().start()
    gw = await start_gateway(tmp_path, dynamic(backend.url))
    runner = await start_api(
        build_api_app(GatewayState(gw.gateway), metrics=None, version=__version__), "127.0.0.1:0"
    )
    base = f"http://127.0.0.1:{bound_port(runner)}"
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/api/health") as resp:
                assert resp.status == 200
            async with session.get(f"{base}/api/http/routers/app@file") as resp:
                router = await resp.json()
                assert router["rule"] == "Host(`app.test`)"
                assert router["service"] == "app@file"
            async with session.get(f"{base}/api/http/services/app@file") as resp:
                service = await resp.json()
                assert service["serverStatus"] == {backend.url: "UP"}
            await gw.reload(
                dynamic(backend.url).replace("service: app\n", "service: ghost\n", 1),
                expect_ok=False,
            )
            async with session.get(f"{base}/api/overview") as resp:
                overview = await resp.json()
            error = overview["configuration"]["errors"][0]
            assert error["file"].endswith("dynamic.yml")
            assert error["line"] == 6
            assert error["path"] == "http.routers.app@file.service"
            assert (await http_request(gw.port(), get("app.test"))).status == 200
    finally:
        await runner.cleanup()
        await gw.stop()
        await backend.close()


@model
class _NoOptions:
    pass


class _Explodes:
    """A middleware whose handler raises: the failure must stay inside its request."""

    key = "explodes"
    options = _NoOptions

    def build(self, options: _NoOptions, next: Handler, context: BuildContext) -> Handler:
        async def handler(request: Request) -> Response:
            if request.path == "/boom":
                raise RuntimeError("boom")
            return await next(request)

        return handler


async def test_raising_middleware_answers_500_and_gateway_keeps_serving(tmp_path):
    """A middleware exception answers 500 for that request only, and is counted."""
    backend = await RecordingBackend().start()
    metrics = create_metrics(Prometheus())
    registry = load_registry(plugins=False).with_factories({"explodes": _Explodes()})
    text = (
        dynamic(backend.url, "middlewares: [bad]")
        + "  middlewares:\n    bad:\n      explodes: {}\n"
    )
    gw = await start_gateway(tmp_path, text, metrics=metrics, registry=registry)
    try:
        assert (await http_request(gw.port(), get("app.test", "/boom"))).status == 500
        assert (await http_request(gw.port(), get("app.test", "/fine"))).status == 200
        assert backend.requests[-1].target == "/fine"
        counted = samples(metrics.render()[0].decode(), "sluice_middleware_errors_total")
        assert counted == [({"middleware": "bad@file"}, 1.0)]
    finally:
        await gw.stop()
        await backend.close()


async def test_retries_are_counted_per_service(tmp_path):
    """A request moved off a refusing server counts one retry for its service."""
    backend = await RecordingBackend().start()
    port = await closed_port()
    metrics = create_metrics(Prometheus())
    text = f"""
http:
  routers:
    app: {{rule: "Host(`app.test`)", service: app}}
  services:
    app:
      loadBalancer:
        servers: [{{url: "http://127.0.0.1:{port}"}}, {{url: "{backend.url}"}}]
"""
    gw = await start_gateway(tmp_path, text, metrics=metrics)
    try:
        for _ in range(2):
            assert (await http_request(gw.port(), get("app.test"))).status == 200
        retries = samples(metrics.render()[0].decode(), "sluice_service_retries_total")
        assert retries == [({"service": "app@file"}, 1.0)]
    finally:
        await gw.stop()
        await backend.close()


class _ExplodingFilter:
    """A filter raising on /boom requests and on responses to /bang: counted by name."""

    key = "explodingFilter"
    options = _NoOptions

    def build(self, options: _NoOptions, next: Handler, context: BuildContext) -> Filter:
        class _Boom(Filter):
            def request(self, request: Request) -> None:
                if request.path == "/boom":
                    raise RuntimeError("boom")

            def response(self, request: Request, response: Response) -> None:
                if request.path == "/bang":
                    raise RuntimeError("bang")

        return _Boom()


async def test_raising_inline_filter_is_counted_by_name(tmp_path):
    """Filters run inline: a raise on the request or the response is a 500, counted by name."""
    backend = await RecordingBackend().start()
    metrics = create_metrics(Prometheus())
    registry = load_registry(plugins=False).with_factories({"explodingFilter": _ExplodingFilter()})
    text = (
        dynamic(backend.url, "middlewares: [bad]")
        + "  middlewares:\n    bad:\n      explodingFilter: {}\n"
    )
    gw = await start_gateway(tmp_path, text, metrics=metrics, registry=registry)
    try:
        assert (await http_request(gw.port(), get("app.test", "/boom"))).status == 500
        assert (await http_request(gw.port(), get("app.test", "/bang"))).status == 500
        assert (await http_request(gw.port(), get("app.test", "/fine"))).status == 200
        counted = samples(metrics.render()[0].decode(), "sluice_middleware_errors_total")
        assert counted == [({"middleware": "bad@file"}, 2.0)]
    finally:
        await gw.stop()
        await backend.close()
