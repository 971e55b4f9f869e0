"""basicAuth through a running gateway: hash formats, header options, usersFile, caching."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import subprocess
import time

import bcrypt
import pytest

from tests.backends import RecordingBackend, get, http_request
from tests.harness import start_gateway


def config(url: str, options: dict[str, object]) -> str:
    """Router ``app.test`` behind basicAuth ``auth`` with ``options``; ``open.test`` without."""
    return f"""http:
  routers:
    app:
      rule: Host(`app.test`)
      service: app
      middlewares: [auth]
    open:
      rule: Host(`open.test`)
      service: app
  services:
    app:
      loadBalancer:
        servers: [{{url: "{url}"}}]
  middlewares:
    auth:
      basicAuth: {json.dumps(options)}
"""


def basic(user: str, password: str) -> str:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return f"Authorization: Basic {token}\r\n"


def openssl_passwd(flag: str, salt: str, password: str) -> str:
    """A reference MD5-crypt hash from OpenSSL, not from our own code."""
    out = subprocess.run(
        ["openssl", "passwd", flag, "-salt", salt, password],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


def sha1_hash(password: str) -> str:
    return "{SHA}" + base64.b64encode(hashlib.sha1(password.encode()).digest()).decode()


HASHES = {
    "bcrypt": lambda pw: bcrypt.hashpw(pw.encode(), bcrypt.gensalt(4)).decode(),
    "bcrypt-2y": lambda pw: "$2y$" + bcrypt.hashpw(pw.encode(), bcrypt.gensalt(4)).decode()[4:],
    "apr1-openssl": lambda pw: openssl_passwd("-apr1", "Nacl0123", pw),
    "md5crypt-openssl": lambda pw: openssl_passwd("-1", "pepper", pw),
    "sha1": sha1_hash,
}


@pytest.fixture
async def backend():
    b = await RecordingBackend().start()
    yield b
    await b.close()


@pytest.mark.parametrize("make_hash", HASHES.values(), ids=HASHES.keys())
async def test_right_wrong_and_missing_credentials(tmp_path, backend, make_hash):
    """The right password passes; a wrong, missing or unknown one gets 401 and a challenge."""
    users = [f"alice:{make_hash('correct horse')}"]
    gw = await start_gateway(tmp_path, config(backend.url, {"users": users}))
    try:
        port = gw.port()
        ok = await http_request(port, get("app.test", "/in", basic("alice", "correct horse")))
        assert ok.status == 200
        assert ok.json()["target"] == "/in"
        cases = {
            "wrong": basic("alice", "correct horsE"),
            "missing": "",
            "unknown-user": basic("bob", "correct horse"),
            "other-scheme": "Authorization: Bearer abc\r\n",
            "not-base64": "Authorization: Basic !!!\r\n",
            "no-colon": "Authorization: Basic " + base64.b64encode(b"alice").decode() + "\r\n",
        }
        for case, extra in cases.items():
            reply = await http_request(port, get("app.test", "/in", extra))
            assert reply.status == 401, case
            assert reply.header("www-authenticate") == 'Basic realm="traefik"', case
            assert reply.body == b"401 Unauthorized\n", case
        # Cached verdicts answer the same way the second time.
        again = await http_request(port, get("app.test", "/in", basic("alice", "correct horse")))
        assert again.status == 200
        wrong = await http_request(port, get("app.test", "/in", basic("alice", "correct horsE")))
        assert wrong.status == 401
        assert len(backend.requests) == 2
    finally:
        await gw.stop()


async def test_header_field_carries_user_and_authorization_is_kept(tmp_path, backend):
    """headerField names the user to the backend (replacing a client's value, however
    spelled); Authorization is forwarded by default."""
    options = {
        "users": [f"alice:{sha1_hash('pw')}"],
        "headerField": "X-WebAuth-User",
        "realm": 'my "realm"',
    }
    gw = await start_gateway(tmp_path, config(backend.url, options))
    try:
        spoofs = "X-WebAuth-User: admin\r\nX_WebAuth_User: admin\r\nx.webauth.user: admin\r\n"
        extra = basic("alice", "pw") + spoofs
        reply = await http_request(gw.port(), get("app.test", "/", extra))
        assert reply.status == 200
        seen = backend.requests[-1]
        folded = [
            v
            for k, v in seen.headers
            if k.lower().translate({45: None, 95: None, 46: None}) == "xwebauthuser"
        ]
        assert folded == ["alice"]
        assert seen.header("authorization") == basic("alice", "pw")[15:-2]
        denied = await http_request(gw.port(), get("app.test", "/"))
        assert denied.header("www-authenticate") == 'Basic realm="my \\"realm\\""'
    finally:
        await gw.stop()


async def test_remove_header_strips_authorization(tmp_path, backend):
    """removeHeader drops Authorization before forwarding; an empty realm means "traefik"."""
    options = {"users": [f"alice:{sha1_hash('pw')}"], "removeHeader": True, "realm": ""}
    gw = await start_gateway(tmp_path, config(backend.url, options))
    try:
        reply = await http_request(gw.port(), get("app.test", "/", basic("alice", "pw")))
        assert reply.status == 200
        assert "authorization" not in backend.requests[-1].header_names()
        denied = await http_request(gw.port(), get("app.test", "/"))
        assert denied.header("www-authenticate") == 'Basic realm="traefik"'
    finally:
        await gw.stop()


async def test_users_file_merges_with_users_and_wins(tmp_path, backend):
    """usersFile users can log in, users entries too, and the file's entry wins for a name
    in both."""
    users_file = tmp_path / "htpasswd"
    users_file.write_text(
        "# team\n\n"
        f"alice:{openssl_passwd('-apr1', 'fileSalt', 'from-file')}\n"
        f"bob:{bcrypt.hashpw(b'bob-pw', bcrypt.gensalt(4)).decode()}\n"
    )
    options = {
        "users": [f"alice:{sha1_hash('from-users')}", f"carol:{sha1_hash('carol-pw')}"],
        "usersFile": str(users_file),
    }
    gw = await start_gateway(tmp_path, config(backend.url, options))
    try:
        expected = {
            ("alice", "from-file"): 200,
            ("alice", "from-users"): 401,
            ("bob", "bob-pw"): 200,
            ("carol", "carol-pw"): 200,
        }
        for (user, password), status in expected.items():
            reply = await http_request(gw.port(), get("app.test", "/", basic(user, password)))
            assert reply.status == status, (user, password)
    finally:
        await gw.stop()


async def test_bcrypt_verification_does_not_block_other_requests(tmp_path, backend):
    """While a cache-miss bcrypt check runs, requests on another router keep being answered."""
    slow = bcrypt.hashpw(b"pw", bcrypt.gensalt(13)).decode()  # about half a second
    gw = await start_gateway(tmp_path, config(backend.url, {"users": [f"alice:{slow}"]}))
    try:
        port = gw.port()
        pending = asyncio.ensure_future(
            http_request(port, get("app.test", "/", basic("alice", "pw")))
        )
        answered = 0
        while not pending.done():
            reply = await http_request(port, get("open.test"))
            assert reply.status == 200
            answered += 1
        assert (await pending).status == 200
        # Had bcrypt run on the loop, at most a request or two would slip in first.
        assert answered >= 10, answered
    finally:
        await gw.stop()


async def test_verdicts_are_cached_so_bcrypt_runs_once_per_value(tmp_path, backend):
    """A repeated wrong (or right) Authorization value is answered from the cache, not bcrypt."""
    slow = bcrypt.hashpw(b"pw", bcrypt.gensalt(12)).decode()  # about a quarter second
    gw = await start_gateway(tmp_path, config(backend.url, {"users": [f"alice:{slow}"]}))
    try:
        port = gw.port()
        for password, status in (("bad", 401), ("pw", 200)):
            started = time.monotonic()
            first = await http_request(port, get("app.test", "/", basic("alice", password)))
            miss = time.monotonic() - started
            assert first.status == status
            started = time.monotonic()
            for _ in range(10):
                reply = await http_request(port, get("app.test", "/", basic("alice", password)))
                assert reply.status == status
            # Ten uncached checks would take ten times the first one.
            assert time.monotonic() - started < miss, password
    finally:
        await gw.stop()


async def test_concurrent_misses_on_one_value_all_get_the_verdict(tmp_path, backend):
    """Requests racing on the same uncached value all get the shared verification's answer."""
    slow = bcrypt.hashpw(b"pw", bcrypt.gensalt(10)).decode()
    gw = await start_gateway(tmp_path, config(backend.url, {"users": [f"alice:{slow}"]}))
    try:
        port = gw.port()
        requests = [get("app.test", "/", basic("alice", pw)) for pw in ["pw"] * 6 + ["no"] * 6]
        replies = await asyncio.gather(*(http_request(port, raw) for raw in requests))
        assert [r.status for r in replies] == [200] * 6 + [401] * 6
    finally:
        await gw.stop()


async def test_a_flood_of_distinct_passwords_is_refused_not_queued(tmp_path, backend):
    """Past the cap on queued bcrypt checks, distinct wrong passwords get 429, not a queue."""
    slow = bcrypt.hashpw(b"pw", bcrypt.gensalt(10)).decode()
    gw = await start_gateway(tmp_path, config(backend.url, {"users": [f"alice:{slow}"]}))
    try:
        port = gw.port()
        requests = [get("app.test", "/", basic("alice", f"guess{i}")) for i in range(90)]
        replies = await asyncio.gather(*(http_request(port, raw) for raw in requests))
        statuses = [r.status for r in replies]
        assert set(statuses) == {401, 429}
        assert statuses.count(401) >= 64
        assert (await http_request(port, get("open.test"))).status == 200
    finally:
        await gw.stop()


BAD_OPTIONS = {
    "no-users": ({"realm": "x"}, "basicAuth: users: give users or usersFile"),
    "bad-entry": (
        {"users": ["alice:" + sha1_hash("a"), "bob"]},
        "basicAuth: users[1]: expected user:hash, got an entry without ':'",
    ),
    "unsupported-hash": (
        {"users": ["alice:$6$salt$" + "a" * 86]},
        "basicAuth: users[0]: user 'alice': SHA-512-crypt ($6$) is not supported",
    ),
    "missing-file": (
        {"usersFile": "/nonexistent/htpasswd"},
        "basicAuth: usersFile /nonexistent/htpasswd: No such file or directory",
    ),
    "empty-file": ({"usersFile": "EMPTY"}, "basicAuth: users: no users defined"),
    "header-field": (
        {"users": ["a:" + sha1_hash("a")], "headerField": "X-User\r\nX-Admin"},
        "basicAuth: headerField: 'X-User\\r\\nX-Admin' is not a valid header name",
    ),
    "realm": (
        {"users": ["a:" + sha1_hash("a")], "realm": "caf\u00e9"},
        "basicAuth: realm: 'caf\u00e9' must be printable ASCII",
    ),
    "bad-file-line": ({"usersFile": "BAD"}, "basicAuth: usersFile BAD line 3: expected user:hash"),
}


async def test_invalid_options_are_rejected_at_load(tmp_path, backend):
    """Bad users, files and hashes are load errors naming middleware, key and line; the old
    config keeps serving."""
    (tmp_path / "empty").write_text("# nobody yet\n")
    (tmp_path / "bad").write_text(f"alice:{sha1_hash('a')}\n\nbob:{sha1_hash('b')}:extra\n")
    good = config(backend.url, {"users": [f"alice:{sha1_hash('pw')}"]})
    gw = await start_gateway(tmp_path, good)
    line = good.splitlines().index("    auth:") + 1
    try:
        for case, (options, message) in BAD_OPTIONS.items():
            options = {
                k: str(tmp_path / v.lower()) if v in ("EMPTY", "BAD") else v
                for k, v in options.items()
            }
            message = message.replace("BAD", str(tmp_path / "bad"))
            errors = await gw.reload(config(backend.url, options), expect_ok=False)
            text = str(errors[0])  # type: ignore[index]
            assert message in text, (case, text)
            assert f"dynamic.yml:{line}: http.middlewares.auth" in text, (case, text)
            reply = await http_request(gw.port(), get("app.test", "/", basic("alice", "pw")))
            assert reply.status == 200, case
    finally:
        await gw.stop()
