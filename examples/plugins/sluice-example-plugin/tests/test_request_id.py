"""``requestId`` through a real gateway: generated, propagated, echoed, rejected, validated."""

from __future__ import annotations

import uuid
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from middleware.registry import load_registry

from helpers import dynamic, fetch, gateway_check
from sluice_example_plugin import RequestId

EXAMPLE = Path(__file__).resolve().parent.parent / "example"

PLUGIN_SYNTAX = "      plugin:\n        requestId: {}\n"


def is_uuid4(value: str | None) -> bool:
    try:
        return value is not None and uuid.UUID(value).version == 4
    except ValueError:
        return False


async def test_entry_point_registers_request_id():
    """The installed package registers ``requestId`` in the ``sluice.middleware`` group."""
    found = {ep.name: ep.value for ep in entry_points(group="sluice.middleware")}
    assert found.get("requestId") == "sluice_example_plugin:RequestId"
    assert isinstance(load_registry()["requestId"], RequestId)


async def test_generates_an_id_and_echoes_it(serve, backend):
    """A request without an ID gets a fresh UUID4, sent upstream and back to the client."""
    port = await serve(dynamic(backend, PLUGIN_SYNTAX))
    first = await fetch(port)
    second = await fetch(port)
    assert first.status == 200
    sent = first.echoed()["x-request-id"]
    assert len(sent) == 1 and is_uuid4(sent[0])
    assert first.header("x-request-id") == sent[0]
    assert second.header("x-request-id") != sent[0], "each request gets its own ID"


async def test_keeps_a_well_formed_incoming_id(serve, backend):
    """An ID the client sent is forwarded and echoed unchanged."""
    port = await serve(dynamic(backend, PLUGIN_SYNTAX))
    answer = await fetch(port, headers=[("X-Request-Id", "trace-42.abc")])
    assert answer.echoed()["x-request-id"] == ["trace-42.abc"]
    assert answer.header("x-request-id") == "trace-42.abc"


@pytest.mark.parametrize(
    "sent",
    [
        [("X-Request-Id", "a" * 129)],
        [("X-Request-Id", "has space")],
        [("X-Request-Id", "one"), ("X-Request-Id", "two")],
        [("X-Request-Id", "")],
    ],
    ids=["too-long", "space", "repeated", "empty"],
)
async def test_replaces_a_malformed_incoming_id(serve, backend, sent):
    """A malformed or repeated incoming ID is replaced by one generated ID."""
    port = await serve(dynamic(backend, PLUGIN_SYNTAX))
    answer = await fetch(port, headers=sent)
    seen = answer.echoed()["x-request-id"]
    assert len(seen) == 1 and is_uuid4(seen[0]), seen


async def test_header_name_option_through_plugin_syntax(serve, backend):
    """``plugin: {requestId: {headerName: X-Trace}}`` uses X-Trace instead."""
    trace = "      plugin:\n        requestId: {headerName: X-Trace}\n"
    port = await serve(dynamic(backend, trace))
    answer = await fetch(port)
    assert "x-request-id" not in answer.echoed()
    assert is_uuid4(answer.echoed()["x-trace"][0])
    assert answer.header("x-trace") == answer.echoed()["x-trace"][0]


async def test_direct_key_configuration(serve, backend):
    """``requestId: {...}`` works like a built-in's key, without ``plugin:``."""
    port = await serve(dynamic(backend, "      requestId: {maxLength: 4}\n"))
    kept = await fetch(port, headers=[("X-Request-Id", "abcd")])
    replaced = await fetch(port, headers=[("X-Request-Id", "abcde")])
    assert kept.echoed()["x-request-id"] == ["abcd"]
    assert is_uuid4(replaced.echoed()["x-request-id"][0])


async def test_trust_incoming_off_always_generates(serve, backend):
    """With ``trustIncoming: false`` a client's ID is never kept."""
    port = await serve(dynamic(backend, "      requestId: {trustIncoming: false}\n"))
    answer = await fetch(port, headers=[("X-Request-Id", "mine")])
    assert is_uuid4(answer.echoed()["x-request-id"][0])


async def test_reject_missing_answers_400_without_reaching_upstream(serve, backend):
    """With ``rejectMissing: true`` a request without an ID gets 400; one with an ID passes."""
    port = await serve(dynamic(backend, "      requestId: {rejectMissing: true}\n"))
    refused = await fetch(port)
    assert refused.status == 400
    assert refused.body == b"missing or malformed X-Request-Id header\n"
    passed = await fetch(port, headers=[("X-Request-Id", "ok-1")])
    assert passed.status == 200
    assert passed.echoed()["x-request-id"] == ["ok-1"]


async def test_response_header_off_leaves_responses_alone(serve, backend):
    """With ``responseHeader: false`` the ID goes upstream only."""
    port = await serve(dynamic(backend, "      requestId: {responseHeader: false}\n"))
    answer = await fetch(port)
    assert is_uuid4(answer.echoed()["x-request-id"][0])
    assert answer.header("x-request-id") is None


async def test_gateway_generated_responses_carry_the_id_too(serve, unused_tcp_port):
    """When the upstream cannot be reached, the gateway's 502 still carries the ID."""
    port = await serve(dynamic(f"http://127.0.0.1:{unused_tcp_port}", PLUGIN_SYNTAX))
    answer = await fetch(port, headers=[("X-Request-Id", "lost-1")])
    assert answer.status == 502
    assert answer.header("x-request-id") == "lost-1"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("{headerName: 'Bad Name'}", "requestId: headerName: 'Bad Name' is not a valid header"),
        ("{headerName: Host}", "requestId: headerName: Host frames the message"),
        ("{maxLength: 0}", "requestId: maxLength: 0 is not between 1 and 1024"),
        (
            "{rejectMissing: true, trustIncoming: false}",
            "requestId: rejectMissing: needs trustIncoming",
        ),
        ("{maxLength: lots}", "expected an integer"),
        ("{headerNam: X-Trace}", 'unknown key "headerNam"'),
    ],
    ids=["bad-name", "reserved-name", "zero-length", "contradiction", "wrong-type", "typo"],
)
async def test_invalid_options_fail_gateway_check(tmp_path, backend, options, message):
    """``gateway check`` rejects bad options, naming file, line, middleware and key."""
    (tmp_path / "sluice.yml").write_text(
        "entryPoints:\n  web:\n    address: '127.0.0.1:0'\n"
        "providers:\n  file:\n    filename: dynamic.yml\n"
    )
    (tmp_path / "dynamic.yml").write_text(dynamic(backend, f"      requestId: {options}\n"))
    code, output = await gateway_check(tmp_path / "sluice.yml")
    assert code == 1, output
    assert message in output, output
    assert "dynamic.yml:" in output, output
    assert "http.middlewares.mw" in output, output


async def test_example_configuration_is_valid():
    """The configuration in example/ passes ``gateway check`` with the plugin installed."""
    code, output = await gateway_check(EXAMPLE / "sluice.yml")
    assert code == 0, output
