"""Tests for gateway.access_log: CLF and JSON lines, buffering, failures."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from pathlib import Path

import pytest

from gateway.access_log import AccessEntry, AccessLog
from gateway.config.static import AccessLog as AccessLogConfig

# 2021-03-04T05:06:07.250Z
START = 1614834367.25

CLF = re.compile(
    r'(?P<ip>\S+) - (?P<user>\S+) \[(?P<time>[^\]]+)\] "(?P<method>\S+) (?P<path>\S+) '
    r'(?P<proto>\S+)" (?P<status>\d+) (?P<size>\d+) "(?P<referer>(?:[^"\\]|\\.)*)" '
    r'"(?P<ua>(?:[^"\\]|\\.)*)" (?P<count>\d+) "(?P<router>[^"]*)" "(?P<upstream>[^"]*)" '
    r"(?P<ms>\d+)ms$"
)


def entry(**overrides: object) -> AccessEntry:
    fields: dict[str, object] = {
        "client_host": "127.0.0.1",
        "client_port": 54321,
        "start": START,
        "method": "GET",
        "path": "/api/items?page=2",
        "protocol": "HTTP/1.1",
        "status": 200,
        "size": 1234,
        "duration": 0.0427,
        "router": "api@file",
        "service": "api@file",
        "service_url": "http://127.0.0.1:8080",
        "entry_point": "web",
        "host": "example.test:8000",
        "user_agent": "curl/8.0",
        "referer": "http://example.test/",
    }
    fields.update(overrides)
    return AccessEntry(**fields)  # type: ignore[arg-type]


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def test_common_format(tmp_path: Path) -> None:
    """A CLF line carries Traefik's fields in Traefik's order."""
    path = tmp_path / "access.log"
    access = AccessLog(AccessLogConfig(file_path=str(path)))
    access.log(entry())
    access.close()

    [line] = lines(path)
    m = CLF.match(line)
    assert m is not None, line
    assert m.groupdict() == {
        "ip": "127.0.0.1",
        "user": "-",
        "time": "04/Mar/2021:05:06:07 +0000",
        "method": "GET",
        "path": "/api/items?page=2",
        "proto": "HTTP/1.1",
        "status": "200",
        "size": "1234",
        "referer": "http://example.test/",
        "ua": "curl/8.0",
        "count": "1",
        "router": "api@file",
        "upstream": "http://127.0.0.1:8080",
        "ms": "42",
    }


def test_common_format_placeholders(tmp_path: Path) -> None:
    """Missing referer, agent, router and upstream print as "-", like Traefik."""
    path = tmp_path / "access.log"
    access = AccessLog(AccessLogConfig(file_path=str(path)))
    access.log(entry(referer="", user_agent="", router="", service_url="", status=404, size=0))
    access.close()
    [line] = lines(path)
    assert line.endswith(' 404 0 "-" "-" 1 "-" "-" 42ms')


@pytest.mark.parametrize(
    ("agent", "logged"),
    [
        ('evil" 200 1 "x', r'"evil\" 200 1 \"x"'),
        ("back\\slash", r'"back\\slash"'),
        ("tab\there", r'"tab\x09here"'),
    ],
    ids=["quote", "backslash", "control"],
)
def test_common_format_escapes(tmp_path: Path, agent: str, logged: str) -> None:
    """Quotes, backslashes and control characters cannot forge CLF fields."""
    path = tmp_path / "access.log"
    access = AccessLog(AccessLogConfig(file_path=str(path)))
    access.log(entry(user_agent=agent))
    access.close()
    [line] = lines(path)
    assert f'"http://example.test/" {logged} 1 ' in line
    assert CLF.match(line) is not None


def test_json_format(tmp_path: Path) -> None:
    """A JSON line uses Traefik's field names and units."""
    path = tmp_path / "access.json"
    access = AccessLog(AccessLogConfig(file_path=str(path), format="json"))
    access.log(entry(request_id="abc-123", retry_attempts=1))
    access.close()

    [line] = lines(path)
    record = json.loads(line)
    assert record["ClientHost"] == "127.0.0.1"
    assert record["ClientPort"] == "54321"
    assert record["ClientAddr"] == "127.0.0.1:54321"
    assert record["RequestMethod"] == "GET"
    assert record["RequestPath"] == "/api/items?page=2"
    assert record["RequestProtocol"] == "HTTP/1.1"
    assert record["RequestHost"] == "example.test"
    assert record["RequestAddr"] == "example.test:8000"
    assert record["DownstreamStatus"] == 200
    assert record["DownstreamContentSize"] == 1234
    assert record["Duration"] == 42_700_000
    assert record["RouterName"] == "api@file"
    assert record["ServiceName"] == "api@file"
    assert record["ServiceURL"] == "http://127.0.0.1:8080"
    assert record["ServiceAddr"] == "127.0.0.1:8080"
    assert record["EntryPointName"] == "web"
    assert record["StartUTC"] == "2021-03-04T05:06:07.250000Z"
    assert record["RequestCount"] == 1
    assert record["RetryAttempts"] == 1
    assert record["request_User-Agent"] == "curl/8.0"
    assert record["request_Referer"] == "http://example.test/"
    assert record["request_X-Request-Id"] == "abc-123"
    assert record["level"] == "info"
    assert list(record) == sorted(record)


def test_json_format_ipv6_and_unrouted(tmp_path: Path) -> None:
    """IPv6 clients get a bracketed ClientAddr; unrouted requests omit router fields."""
    path = tmp_path / "access.json"
    access = AccessLog(AccessLogConfig(file_path=str(path), format="json"))
    access.log(entry(client_host="::1", router="", service="", service_url="", host="[::1]:8000"))
    access.close()
    record = json.loads(lines(path)[0])
    assert record["ClientAddr"] == "[::1]:54321"
    assert record["RequestHost"] == "::1"
    assert "RouterName" not in record
    assert "ServiceURL" not in record


def test_request_count_numbers_requests(tmp_path: Path) -> None:
    """Entries without a request count are numbered in order; given counts are kept."""
    path = tmp_path / "access.json"
    access = AccessLog(AccessLogConfig(file_path=str(path), format="json"))
    access.log(entry())
    access.log(entry())
    access.log(entry(request_count=99))
    access.close()
    assert [json.loads(line)["RequestCount"] for line in lines(path)] == [1, 2, 99]


async def next_tick() -> None:
    """Resolve after every callback already queued with call_soon has run."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    loop.call_soon(done.set_result, None)
    await done


async def test_lines_of_one_tick_are_written_together(tmp_path: Path) -> None:
    """Without bufferingSize, lines logged in one tick are written at the end of it."""
    path = tmp_path / "access.log"
    access = AccessLog(AccessLogConfig(file_path=str(path)))
    access.log(entry())
    access.log(entry())
    assert path.read_text() == ""
    await next_tick()
    assert len(lines(path)) == 2
    access.close()


async def test_buffering_size_batches_lines(tmp_path: Path) -> None:
    """With bufferingSize N, lines are written once N have gathered, and on close."""
    path = tmp_path / "access.log"
    access = AccessLog(AccessLogConfig(file_path=str(path), buffering_size=3))
    for _ in range(2):
        access.log(entry())
    await next_tick()
    assert path.read_text() == ""
    access.log(entry())
    assert len(lines(path)) == 3
    access.log(entry())
    access.close()
    assert len(lines(path)) == 4


def test_stdout_when_no_file(capsys: pytest.CaptureFixture[str]) -> None:
    """Without filePath the lines go to standard output."""
    access = AccessLog(AccessLogConfig())
    access.log(entry())
    access.close()
    out = capsys.readouterr().out
    assert CLF.match(out.rstrip("\n")) is not None


def test_unknown_format_falls_back_to_common(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An unsupported format is reported and CLF is used, as Traefik does."""
    path = tmp_path / "access.log"
    with caplog.at_level(logging.ERROR, logger="gateway.access_log"):
        access = AccessLog(AccessLogConfig(file_path=str(path), format="xml"))
    assert "unsupported format 'xml'" in caplog.text
    access.log(entry())
    access.close()
    assert CLF.match(lines(path)[0]) is not None


def test_write_failure_is_reported_once(caplog: pytest.LogCaptureFixture) -> None:
    """A failing write drops the lines, warns once, and never raises into the request."""
    access = AccessLog(AccessLogConfig(file_path="/dev/full"))
    with caplog.at_level(logging.WARNING, logger="gateway.access_log"):
        for _ in range(3):
            access.log(entry())
            access.flush()
    warnings = [r for r in caplog.records if "cannot write" in r.getMessage()]
    assert len(warnings) == 1
    access.close()


def test_reopen_follows_rotation(tmp_path: Path) -> None:
    """reopen() starts a new file after an external rotation renamed the old one."""
    path = tmp_path / "access.log"
    access = AccessLog(AccessLogConfig(file_path=str(path)))
    access.log(entry())
    access.flush()
    path.rename(tmp_path / "access.log.1")
    access.reopen()
    access.log(entry())
    access.close()
    assert len(lines(tmp_path / "access.log.1")) == 1
    assert len(lines(path)) == 1


def test_log_after_close_is_dropped(tmp_path: Path) -> None:
    """Requests finishing after close() do not write or raise."""
    path = tmp_path / "access.log"
    access = AccessLog(AccessLogConfig(file_path=str(path)))
    access.close()
    access.log(entry())
    access.flush()
    assert path.read_text() == ""
