"""digestAuth through a running gateway, with a client computing RFC 7616 responses."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import secrets
import urllib.error
import urllib.request

import pytest

from middleware.http.digest_auth import Nonces
from tests.backends import RecordingBackend, Reply, get, http_request
from tests.harness import start_gateway


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def htdigest(user: str, realm: str, password: str) -> str:
    return f"{user}:{realm}:{md5(f'{user}:{realm}:{password}')}"


def config(url: str, options: dict[str, object]) -> str:
    """Every path behind digestAuth ``auth``; ``open.test`` without it."""
    return f"""http:
  routers:
    app:
      rule: PathPrefix(`/`)
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
      digestAuth: {json.dumps(options)}
"""


_PARAM = re.compile(r'(\w+)=(?:"([^"]*)"|([^\s,]+))')


def challenge_of(reply: Reply) -> dict[str, str]:
    """The Digest challenge's parameters (the test's own parser)."""
    header = reply.header("www-authenticate") or ""
    assert header.startswith("Digest "), header
    return {m[1]: m[2] if m[2] is not None else m[3] for m in _PARAM.finditer(header[7:])}


def authorization(
    challenge: dict[str, str],
    user: str,
    password: str,
    *,
    method: str = "GET",
    uri: str = "/",
    nc: str = "00000001",
    nonce: str | None = None,
) -> str:
    """The Authorization line answering ``challenge`` (RFC 7616 section 3.4.1, qop=auth)."""
    realm = challenge["realm"]
    nonce = nonce or challenge["nonce"]
    cnonce = secrets.token_hex(8)
    ha1 = md5(f"{user}:{realm}:{password}")
    ha2 = md5(f"{method}:{uri}")
    response = md5(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")
    return (
        f'Authorization: Digest username="{user}", realm="{realm}", nonce="{nonce}", '
        f'uri="{uri}", algorithm=MD5, qop=auth, nc={nc}, cnonce="{cnonce}", '
        f'response="{response}"\r\n'
    )


async def challenge_for(port: int, path: str = "/") -> dict[str, str]:
    reply = await http_request(port, get("app.test", path))
    assert reply.status == 401
    return challenge_of(reply)


@pytest.fixture
async def backend():
    b = await RecordingBackend().start()
    yield b
    await b.close()


async def test_standard_library_digest_client_gets_through(tmp_path, backend):
    """urllib's own Digest implementation answers the challenge and reaches the backend."""
    # The example from Traefik's documentation: user "test", password "test".
    options = {"users": ["test:traefik:a2688e031edb4be6a3797f3882655c05"]}
    gw = await start_gateway(tmp_path, config(backend.url, options))
    try:
        url = f"http://127.0.0.1:{gw.port()}/docs/page?x=1"

        def fetch(password: str) -> int:
            passwords = urllib.request.HTTPPasswordMgr()
            passwords.add_password("traefik", url, "test", password)
            opener = urllib.request.build_opener(
                urllib.request.ProxyHandler({}), urllib.request.HTTPDigestAuthHandler(passwords)
            )
            try:
                with opener.open(url, timeout=10) as response:
                    return int(response.status)
            except urllib.error.HTTPError as exc:
                exc.close()
                return exc.code

        assert await asyncio.to_thread(fetch, "test") == 200
        assert backend.requests[-1].target == "/docs/page?x=1"
        assert await asyncio.to_thread(fetch, "wrong") == 401
    finally:
        await gw.stop()


async def test_challenge_success_and_header_field(tmp_path, backend):
    """A computed response passes, headerField names the user, Authorization is kept."""
    options = {"users": [htdigest("alice", "traefik", "pw")], "headerField": "X-User"}
    gw = await start_gateway(tmp_path, config(backend.url, options))
    try:
        port = gw.port()
        reply = await http_request(port, get("app.test", "/a"))
        assert reply.status == 401
        assert re.fullmatch(
            r'Digest realm="traefik", nonce="[0-9a-f]+", algorithm=MD5, qop="auth"',
            reply.header("www-authenticate") or "",
        )
        challenge = challenge_of(reply)
        auth = authorization(challenge, "alice", "pw", uri="/a?q=1")
        ok = await http_request(port, get("app.test", "/a?q=1", auth + "X-User: root\r\n"))
        assert ok.status == 200
        seen = backend.requests[-1]
        assert [v for k, v in seen.headers if k.lower() == "x-user"] == ["alice"]
        assert (seen.header("authorization") or "").startswith("Digest username=")
        # The same nonce with a higher nc is a new, valid request.
        auth = authorization(challenge, "alice", "pw", uri="/a?q=1", nc="00000002")
        assert (await http_request(port, get("app.test", "/a?q=1", auth))).status == 200
    finally:
        await gw.stop()


async def test_failures_get_a_plain_challenge(tmp_path, backend):
    """Wrong password, unknown user, wrong uri or method, bad params: 401 without stale."""
    gw = await start_gateway(
        tmp_path, config(backend.url, {"users": [htdigest("a", "traefik", "pw")]})
    )
    try:
        port = gw.port()
        challenge = await challenge_for(port)
        good = authorization(challenge, "a", "pw", uri="/p")
        cases = {
            "wrong-password": get("app.test", "/p", authorization(challenge, "a", "pW", uri="/p")),
            "unknown-user": get("app.test", "/p", authorization(challenge, "b", "pw", uri="/p")),
            "uri-of-other-path": get("app.test", "/other", good),
            "other-method": f"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n{good}\r\n",
            "missing": get("app.test", "/p"),
            "basic-scheme": get("app.test", "/p", "Authorization: Basic YTpwdw==\r\n"),
            "no-qop": get("app.test", "/p", good.replace("qop=auth, ", "")),
            "sha-256": get("app.test", "/p", good.replace("algorithm=MD5", "algorithm=SHA-256")),
            "bad-nc": get("app.test", "/p", good.replace("nc=00000001", "nc=1")),
            "unparsable": get("app.test", "/p", 'Authorization: Digest username="a\r\n'),
            "non-ascii-response": get(
                "app.test", "/p", re.sub(r'response="\w+"', 'response="é"', good)
            ),
        }
        for case, raw in cases.items():
            reply = await http_request(port, raw.encode() if isinstance(raw, str) else raw)
            assert reply.status == 401, case
            params = challenge_of(reply)
            assert params["realm"] == "traefik" and "stale" not in params, case
        assert backend.requests == []
        assert (await http_request(port, get("app.test", "/p", good))).status == 200
    finally:
        await gw.stop()


async def test_stale_nonces_get_stale_true(tmp_path, backend):
    """A right digest over a foreign, replayed or pre-reload nonce gets 401 with stale=true,
    and the fresh nonce then works."""
    users = [htdigest("alice", "traefik", "pw")]
    gw = await start_gateway(tmp_path, config(backend.url, {"users": users}))
    try:
        port = gw.port()
        challenge = await challenge_for(port)
        for nonce in ("0" * 60, "é" * 60, "short"):
            forged = authorization(challenge, "alice", "pw", nonce=nonce)
            reply = await http_request(port, get("app.test", "/", forged))
            assert reply.status == 401, nonce
            assert challenge_of(reply)["stale"] == "true", nonce
        assert challenge_of(reply)["nonce"] != challenge["nonce"]

        first = authorization(challenge, "alice", "pw")
        assert (await http_request(port, get("app.test", "/", first))).status == 200
        replayed = await http_request(port, get("app.test", "/", first))
        assert replayed.status == 401
        assert challenge_of(replayed)["stale"] == "true"

        # A reload draws a new secret: nonces issued before it are stale.
        await gw.reload(config(backend.url, {"users": users, "headerField": "X-U"}))
        again = authorization(challenge, "alice", "pw", nc="00000002")
        reply = await http_request(port, get("app.test", "/", again))
        assert reply.status == 401
        fresh = challenge_of(reply)
        assert fresh["stale"] == "true"
        retry = authorization(fresh, "alice", "pw")
        assert (await http_request(port, get("app.test", "/", retry))).status == 200
        assert backend.requests[-1].header("x-u") == "alice"
        # A wrong password over a foreign nonce is not merely stale.
        wrong = authorization(fresh, "alice", "nope", nonce="0" * 60)
        assert "stale" not in challenge_of(await http_request(port, get("app.test", "/", wrong)))
    finally:
        await gw.stop()


async def test_users_file_realm_and_remove_header(tmp_path, backend):
    """usersFile entries merge with users (file wins); only the configured realm's users log
    in; removeHeader strips Authorization."""
    users_file = tmp_path / "htdigest"
    users_file.write_text(
        f"# staff\n{htdigest('alice', 'staff', 'file-pw')}\n{htdigest('bob', 'staff', 'b')}\n"
        f"{htdigest('carol', 'traefik', 'c')}\n"
    )
    options = {
        "users": [htdigest("alice", "staff", "users-pw"), htdigest("dave", "staff", "d")],
        "usersFile": str(users_file),
        "realm": "staff",
        "removeHeader": True,
    }
    gw = await start_gateway(tmp_path, config(backend.url, options))
    try:
        port = gw.port()
        expected = {
            ("alice", "file-pw"): 200,
            ("alice", "users-pw"): 401,
            ("bob", "b"): 200,
            ("dave", "d"): 200,
            ("carol", "c"): 401,
        }
        for (user, password), status in expected.items():
            challenge = await challenge_for(port)
            assert challenge["realm"] == "staff"
            reply = await http_request(
                port, get("app.test", "/", authorization(challenge, user, password))
            )
            assert reply.status == status, (user, password)
        assert backend.requests
        assert all("authorization" not in seen.header_names() for seen in backend.requests)
    finally:
        await gw.stop()


BAD_OPTIONS = {
    "no-users": ({"realm": "x"}, "digestAuth: users: give users or usersFile"),
    "bad-ha1": ({"users": ["a:traefik:nothex"]}, "digestAuth: users[0]: user 'a': HA1 must be 32"),
    "two-fields": (
        {"users": [htdigest("a", "traefik", "p"), "b:" + "0" * 32]},
        "digestAuth: users[1]: expected user:realm:HA1",
    ),
    "no-user-in-realm": (
        {"users": [htdigest("a", "other", "p")]},
        "digestAuth: users: no user is defined for realm 'traefik'",
    ),
    "bad-file-line": ({"usersFile": "BAD"}, "digestAuth: usersFile BAD line 2"),
    "header-field": (
        {"users": [htdigest("a", "traefik", "p")], "headerField": "X User"},
        "digestAuth: headerField: 'X User' is not a valid header name",
    ),
}


async def test_invalid_options_are_rejected_at_load(tmp_path, backend):
    """Missing users, malformed lines and an empty realm are load errors naming middleware,
    key and line; the old config keeps serving."""
    bad = tmp_path / "bad"
    bad.write_text(f"{htdigest('a', 'traefik', 'p')}\nb:traefik\n")
    good = config(backend.url, {"users": [htdigest("a", "traefik", "p")]})
    gw = await start_gateway(tmp_path, good)
    line = good.splitlines().index("    auth:") + 1
    try:
        for case, (options, message) in BAD_OPTIONS.items():
            options = {k: str(bad) if v == "BAD" else v for k, v in options.items()}
            errors = await gw.reload(config(backend.url, options), expect_ok=False)
            text = str(errors[0])  # type: ignore[index]
            assert message.replace("BAD", str(bad)) in text, (case, text)
            assert f"dynamic.yml:{line}: http.middlewares.auth" in text, (case, text)
            challenge = await challenge_for(gw.port())
            auth = authorization(challenge, "a", "p")
            assert (await http_request(gw.port(), get("app.test", "/", auth))).status == 200
    finally:
        await gw.stop()


async def test_nonces_expire_and_refuse_replays():
    """A nonce is accepted until its lifetime ends, each nc once; other secrets' are not."""
    nonces = Nonces(b"k" * 32, lifetime=10.0)
    nonce = nonces.issue(1000.0)
    assert nonces.accept(nonce, 1, 1000.5)
    assert not nonces.accept(nonce, 1, 1001.0)  # replayed nc
    assert nonces.accept(nonce, 3, 1009.9)
    assert not nonces.accept(nonce, 4, 1010.1)  # expired
    assert not Nonces(b"j" * 32).accept(Nonces(b"k" * 32).issue(5.0), 1, 5.0)
    assert not nonces.accept(nonce[:-1] + ("0" if nonce[-1] != "0" else "1"), 1, 1000.5)


async def test_nonce_table_stays_bounded_and_forgotten_nonces_turn_stale():
    """Past capacity, expired nonces are dropped first, then the older half, which turn stale."""
    nonces = Nonces(b"k" * 32, lifetime=100.0, capacity=4)
    old = [nonces.issue(1.0), nonces.issue(2.0)]
    recent = [nonces.issue(150.0), nonces.issue(151.0)]
    assert all(nonces.accept(n, 1, 2.0) for n in old)
    assert all(nonces.accept(n, 1, 151.0) for n in recent)
    n152 = nonces.issue(152.0)
    assert nonces.accept(n152, 1, 154.0)
    assert set(nonces.counts) == {*recent, n152}  # only the expired pair made room
    assert nonces.accept(recent[0], 2, 154.0)
    n153, n154 = nonces.issue(153.0), nonces.issue(154.0)
    assert nonces.accept(n153, 1, 154.0)
    assert nonces.accept(n154, 1, 154.0)
    assert set(nonces.counts) == {n153, n154}
    # Forgotten nonces would accept any nc again, so they are stale instead.
    assert not nonces.accept(recent[0], 3, 154.0)
    assert not nonces.accept(n152, 2, 154.0)
    assert nonces.accept(n153, 2, 154.0)
