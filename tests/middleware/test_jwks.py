"""JWK sets: parsing, and the ``jwksUrl`` cache against a real key server.

The key server is an aiohttp.web app on 127.0.0.1 that counts its fetches
and can hold them (``gate``), fail them (``status``) and rotate its keys.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from middleware.http.jwks import (
    ASYMMETRIC_ALGORITHMS,
    JWKSCache,
    cache_lifetime,
    parse_jwks,
)
from tests.backends import RecordingBackend, closed_port, get, http_request
from tests.harness import start_gateway


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwk(private: Any, kid: str | None, **extra: Any) -> dict[str, Any]:
    public = private.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        out = RSAAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        out = ECAlgorithm.to_jwk(public, as_dict=True)
    else:
        out = OKPAlgorithm.to_jwk(public, as_dict=True)
    if kid is not None:
        out["kid"] = kid
    return {**out, **extra}


@pytest.fixture(scope="module")
def rsa_a() -> rsa.RSAPrivateKey:
    return rsa_key()


@pytest.fixture(scope="module")
def rsa_b() -> rsa.RSAPrivateKey:
    return rsa_key()


@dataclass
class KeyServer:
    """A JWKS endpoint: serves ``keys``, counts fetches, and records their headers."""

    keys: list[dict[str, Any]]
    cache_control: str = ""
    status: int = 200
    fetches: int = 0
    seen: list[dict[str, str]] = field(default_factory=list)
    fetched: asyncio.Event = field(default_factory=asyncio.Event)
    gate: asyncio.Event | None = None
    runner: web.AppRunner | None = None
    port: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.fetches += 1
        self.seen.append(dict(request.headers))
        self.fetched.set()
        if self.gate is not None:
            await self.gate.wait()
        headers = {"Cache-Control": self.cache_control} if self.cache_control else {}
        if self.status != 200:
            return web.Response(status=self.status, text="down")
        return web.json_response({"keys": self.keys}, headers=headers)

    async def start(self) -> KeyServer:
        app = web.Application()
        app.router.add_get("/jwks.json", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/jwks.json"

    async def next_fetch(self) -> None:
        """Wait for the next fetch to arrive (a fresh event per wait)."""
        self.fetched.clear()
        await asyncio.wait_for(self.fetched.wait(), 10)

    async def close(self) -> None:
        if self.gate is not None:
            self.gate.set()
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def server(rsa_a) -> AsyncIterator[KeyServer]:
    s = await KeyServer([jwk(rsa_a, "a")]).start()
    yield s
    await s.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    s = aiohttp.ClientSession()
    yield s
    await s.close()


@pytest.fixture
async def backend() -> AsyncIterator[RecordingBackend]:
    b = await RecordingBackend().start()
    yield b
    await b.close()


def config(backend_url: str, jwks_url: str) -> str:
    return f"""http:
  routers:
    app:
      rule: Host(`app.test`)
      service: app
      middlewares: [auth]
  services:
    app:
      loadBalancer:
        servers: [{{url: "{backend_url}"}}]
  middlewares:
    auth:
      jwt:
        jwksUrl: "{jwks_url}"
        forwardHeaders: {{X-User: sub}}
"""


def token(key: Any, kid: str | None, sub: str = "alice") -> str:
    now = int(time.time())
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode({"sub": sub, "exp": now + 300}, key, "RS256", headers=headers)


async def call(port: int, bearer: str) -> Any:
    return await http_request(port, get("app.test", "/", f"Authorization: Bearer {bearer}\r\n"))


# -- through the gateway --------------------------------------------------------------


async def test_first_request_fetches_once(tmp_path, backend, server, rsa_a):
    """Nothing is fetched at load; the first request fetches, later ones use the cache."""
    gw = await start_gateway(tmp_path, config(backend.url, server.url))
    try:
        assert server.fetches == 0
        for _ in range(3):
            reply = await call(gw.port(), token(rsa_a, "a"))
            assert reply.status == 200
            assert backend.requests[-1].header("x-user") == "alice"
        assert server.fetches == 1
        # The shared session does not decompress, so the fetch asks for none.
        assert server.seen[0].get("Accept-Encoding") == "identity"
    finally:
        await gw.stop()


async def test_rotated_key_triggers_exactly_one_refetch(tmp_path, backend, server, rsa_a, rsa_b):
    """A token whose kid is not yet known refetches once; another unknown kid right
    after is refused without fetching again."""
    gw = await start_gateway(tmp_path, config(backend.url, server.url))
    try:
        assert (await call(gw.port(), token(rsa_a, "a"))).status == 200
        assert server.fetches == 1
        server.keys = [jwk(rsa_a, "a"), jwk(rsa_b, "b")]
        reply = await call(gw.port(), token(rsa_b, "b", sub="bob"))
        assert reply.status == 200
        assert backend.requests[-1].header("x-user") == "bob"
        assert server.fetches == 2
        assert (await call(gw.port(), token(rsa_b, "b"))).status == 200
        unknown = await call(gw.port(), token(rsa_b, "c"))
        assert unknown.status == 401
        assert "kid" in (unknown.header("www-authenticate") or "")
        assert server.fetches == 2
    finally:
        await gw.stop()


async def test_concurrent_first_requests_share_one_fetch(tmp_path, backend, server, rsa_a):
    """Requests arriving while the first fetch is held all wait for that one fetch."""
    server.gate = asyncio.Event()
    gw = await start_gateway(tmp_path, config(backend.url, server.url))
    try:
        calls = [asyncio.ensure_future(call(gw.port(), token(rsa_a, "a"))) for _ in range(20)]
        await server.next_fetch()
        server.gate.set()
        replies = await asyncio.gather(*calls)
        assert [r.status for r in replies] == [200] * 20
        assert server.fetches == 1
    finally:
        await gw.stop()


async def test_unreachable_jwks_refuses_and_logs_once(tmp_path, backend, rsa_a, caplog):
    """With the key server down, requests get 401 without queueing, and the failure
    is logged once."""
    url = f"http://127.0.0.1:{await closed_port()}/jwks.json"
    gw = await start_gateway(tmp_path, config(backend.url, url))
    try:
        with caplog.at_level(logging.DEBUG, logger="middleware.http.jwks"):
            for _ in range(3):
                reply = await call(gw.port(), token(rsa_a, "a"))
                assert reply.status == 401
                assert "unavailable" in (reply.header("www-authenticate") or "")
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert "auth@file" in warnings[0].getMessage() and url in warnings[0].getMessage()
        assert backend.requests == []
    finally:
        await gw.stop()


# -- the cache on its own ---------------------------------------------------------------


def cache_for(server: KeyServer, session: aiohttp.ClientSession, **kwargs: Any) -> JWKSCache:
    return JWKSCache(server.url, lambda: session, ASYMMETRIC_ALGORITHMS, name="t", **kwargs)


async def test_concurrent_refreshes_share_one_fetch(server, session):
    """Every caller during a fetch gets that fetch; one request reaches the server."""
    server.gate = asyncio.Event()
    cache = cache_for(server, session, min_interval=0)
    try:
        waits = [cache.load() for _ in range(5)] + [cache.refresh() for _ in range(5)]
        assert all(w is not None for w in waits)
        await server.next_fetch()
        server.gate.set()
        await asyncio.gather(*waits)  # type: ignore[arg-type]
        assert server.fetches == 1
        assert cache.loaded and set(cache.keys.by_kid) == {"a"}
    finally:
        cache.close()


async def test_refresh_is_rate_limited(server, session):
    """After an unknown-kid refresh, another within min_interval is refused (None)."""
    cache = cache_for(server, session, min_interval=3600)
    try:
        await cache.load()  # type: ignore[misc]
        first = cache.refresh()
        assert first is not None
        await first
        assert cache.refresh() is None
        assert server.fetches == 2
    finally:
        cache.close()


async def test_failed_fetch_keeps_keys_and_logs_once(server, session, rsa_b, caplog):
    """A failing server leaves the known keys in place; the failure is a single warning,
    and recovery is logged."""
    cache = cache_for(server, session, min_interval=0)
    try:
        with caplog.at_level(logging.DEBUG, logger="middleware.http.jwks"):
            await cache.load()  # type: ignore[misc]
            server.status = 500
            for _ in range(3):
                await cache.refresh()  # type: ignore[misc]
            assert set(cache.keys.by_kid) == {"a"}
            server.status = 200
            server.keys = [{"kty": "RSA", "kid": "junk"}]
            await cache.refresh()  # type: ignore[misc]
            assert set(cache.keys.by_kid) == {"a"}
            server.keys = [jwk(rsa_b, "b")]
            await cache.refresh()  # type: ignore[misc]
            assert set(cache.keys.by_kid) == {"b"}
        assert server.fetches == 6
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "HTTP 500" in warnings[0].getMessage()
        assert any("again" in r.getMessage() for r in caplog.records if r.levelno == logging.INFO)
    finally:
        cache.close()


@pytest.mark.parametrize(
    ("cache_control", "bounds", "low", "high"),
    [
        ("max-age=0", (0.2, 30.0), 0.2, 5.0),
        ("public, max-age=86400", (0.05, 0.3), 0.3, 5.0),
        ("max-age=1", (0.05, 30.0), 1.0, 5.0),
    ],
    ids=["floor", "ceiling", "max-age"],
)
async def test_periodic_refresh_follows_max_age(server, session, cache_control, bounds, low, high):
    """The next fetch comes after Cache-Control max-age, clamped to [min_ttl, max_ttl]."""
    server.cache_control = cache_control
    cache = cache_for(server, session, min_ttl=bounds[0], max_ttl=bounds[1])
    try:
        await cache.load()  # type: ignore[misc]
        done = time.monotonic()
        await server.next_fetch()
        assert low * 0.9 <= time.monotonic() - done <= high
    finally:
        cache.close()


async def test_close_stops_fetching(server, session):
    """A closed cache starts no fetch; its keys stay readable."""
    cache = cache_for(server, session, min_interval=0)
    await cache.load()  # type: ignore[misc]
    cache.close()
    assert cache.refresh() is None and cache.load() is None
    assert set(cache.keys.by_kid) == {"a"}


# -- parsing, sans-IO ---------------------------------------------------------------


def test_parse_binds_algorithms_by_key_type(rsa_a):
    """RSA keys get RS*/PS*, P-256 gets ES256, Ed25519 gets EdDSA; a stated alg narrows."""
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ed_key = ed25519.Ed25519PrivateKey.generate()
    data = json.dumps(
        {
            "keys": [
                jwk(rsa_a, "r"),
                jwk(rsa_a, "r-ps", alg="PS256"),
                jwk(ec_key, "e"),
                jwk(ed_key, None),
            ]
        }
    )
    keys, skipped = parse_jwks(data, ASYMMETRIC_ALGORITHMS)
    assert skipped == []
    assert keys.by_kid["r"].algorithms == ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
    assert keys.by_kid["r-ps"].algorithms == ("PS256",)
    assert keys.by_kid["e"].algorithms == ("ES256",)
    assert len(keys) == 4 and keys.keys[3].algorithms == ("EdDSA",)
    narrowed, _ = parse_jwks(data, ("ES256",))
    assert set(narrowed.by_kid) == {"e"}


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ({"kty": "oct", "k": "c2VjcmV0"}, "signingSecret"),
        ("ENC", "use"),
        ("SHORT", "2048"),
        ({"kty": "XYZ"}, "XYZ"),
        ("MISMATCH", "not allowed"),
        ("NONE", "not allowed"),
        ([1, 2], "not an object"),
        ({"kty": "RSA", "kid": 7}, "kid"),
    ],
    ids=[
        "oct",
        "use-enc",
        "short-rsa",
        "unknown-kty",
        "alg-mismatch",
        "alg-none",
        "not-object",
        "kid-type",
    ],
)
def test_parse_skips_unusable_keys(rsa_a, entry, reason):
    """Keys that cannot verify an allowed algorithm are skipped with a reason."""
    if entry == "ENC":
        entry = jwk(rsa_a, "x", use="enc")
    elif entry == "SHORT":
        entry = jwk(rsa.generate_private_key(public_exponent=65537, key_size=1024), "x")
    elif entry == "MISMATCH":
        entry = jwk(rsa_a, "x", alg="ES256")
    elif entry == "NONE":
        entry = jwk(rsa_a, "x", alg="none")
    keys, skipped = parse_jwks(json.dumps({"keys": [entry, jwk(rsa_a, "ok")]}), ("RS256",))
    assert set(keys.by_kid) == {"ok"}
    assert len(skipped) == 1 and reason in skipped[0]


@pytest.mark.parametrize(
    "data", ["not json", "[]", '{"keys": {}}'], ids=["not-json", "array", "keys-not-list"]
)
def test_parse_rejects_non_sets(data):
    """Input that is not a JWK set at all raises ValueError."""
    with pytest.raises(ValueError):
        parse_jwks(data, ASYMMETRIC_ALGORITHMS)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("", 300.0),
        ("max-age=120", 120.0),
        ("public, max-age=5", 60.0),
        ("max-age=999999", 3600.0),
        ("no-store", 60.0),
        ("no-cache, max-age=600", 60.0),
        ('MAX-AGE="900"', 900.0),
    ],
    ids=["absent", "max-age", "below-floor", "above-ceiling", "no-store", "no-cache", "quoted"],
)
def test_cache_lifetime(header, seconds):
    """Cache-Control gives the refresh period, clamped, defaulting when silent."""
    assert cache_lifetime(header, 300.0, 60.0, 3600.0) == seconds
