"""The ``jwt`` middleware through a running gateway, with keys generated per test run."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from tests.backends import RecordingBackend, get, http_request
from tests.harness import start_gateway

SECRET = "s" * 32 + "-a-secret-long-enough-for-hs256"


@dataclass(frozen=True)
class Keys:
    rsa: rsa.RSAPrivateKey
    rsa_other: rsa.RSAPrivateKey
    ec: ec.EllipticCurvePrivateKey
    ed: ed25519.Ed25519PrivateKey

    def pem(self, name: str) -> str:
        key = getattr(self, name)
        return (
            key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(
        rsa=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        rsa_other=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        ec=ec.generate_private_key(ec.SECP256R1()),
        ed=ed25519.Ed25519PrivateKey.generate(),
    )


@pytest.fixture
async def backend() -> AsyncIterator[RecordingBackend]:
    b = await RecordingBackend().start()
    yield b
    await b.close()


def config(url: str, options: dict[str, Any]) -> str:
    """Router ``app`` behind middleware ``auth`` (``jwt`` with ``options``, as a JSON
    flow mapping, which YAML reads as it is)."""
    return f"""http:
  routers:
    app:
      rule: Host(`app.test`)
      service: app
      middlewares: [auth]
  services:
    app:
      loadBalancer:
        servers: [{{url: "{url}"}}]
  middlewares:
    auth:
      jwt: {json.dumps(options)}
"""


def claims(exp_in: int = 300, nbf_in: int | None = None, **extra: Any) -> dict[str, Any]:
    """A payload for subject alice, its times relative to now (taken when the test runs)."""
    now = int(time.time())
    out = {"sub": "alice", "iat": now, "exp": now + exp_in, **extra}
    if nbf_in is not None:
        out["nbf"] = now + nbf_in
    return out


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], payload: dict[str, Any]) -> str:
    """A compact JWS's first two segments."""
    return b64(json.dumps(header).encode()) + "." + b64(json.dumps(payload).encode())


async def call(port: int, token: str | None = None, extra: str = "", path: str = "/") -> Any:
    headers = f"Authorization: Bearer {token}\r\n" if token is not None else ""
    return await http_request(port, get("app.test", path, headers + extra))


def assert_refused(reply: Any, description: str | None = None) -> None:
    assert reply.status == 401
    challenge = reply.header("www-authenticate")
    assert challenge is not None and challenge.startswith("Bearer")
    assert 'error="invalid_token"' in challenge
    if description is not None:
        assert description in challenge


@pytest.mark.parametrize(
    ("alg", "source", "signer"),
    [
        ("RS256", "publicKey", "rsa"),
        ("PS384", "publicKeyFile", "rsa"),
        ("ES256", "publicKey", "ec"),
        ("EdDSA", "publicKeyFile", "ed"),
        ("HS256", "signingSecret", None),
        ("HS512", "signingSecretBase64Encoded", None),
    ],
    ids=[
        "rs256-inline-pem",
        "ps384-pem-file",
        "es256-inline-pem",
        "eddsa-pem-file",
        "hs256",
        "hs512-base64",
    ],
)
async def test_valid_token_reaches_backend(tmp_path, backend, keys, alg, source, signer):
    """A token signed with the configured key passes, and the backend sees the request."""
    options: dict[str, Any]
    if signer is not None:
        pem = keys.pem(signer)
        if source == "publicKeyFile":
            (tmp_path / "key.pem").write_text(pem)
            options = {"publicKeyFile": str(tmp_path / "key.pem")}
        else:
            options = {"publicKey": pem}
        signing: Any = getattr(keys, signer)
    elif source == "signingSecret":
        options = {"signingSecret": SECRET}
        signing = SECRET.encode()
    else:
        secret = bytes(range(64))
        options = {
            "signingSecret": base64.b64encode(secret).decode(),
            "signingSecretBase64Encoded": True,
        }
        signing = secret
    gw = await start_gateway(tmp_path, config(backend.url, options))
    try:
        reply = await call(gw.port(), jwt.encode(claims(), signing, algorithm=alg))
        assert reply.status == 200
        assert reply.json()["target"] == "/"
        # Hub's forwardAuthorization defaults to false: the token stays at the gateway.
        assert backend.requests[-1].header("authorization") is None
        forged = jwt.encode(claims(), keys.rsa_other, algorithm="RS256")
        assert_refused(await call(gw.port(), forged))
        assert len(backend.requests) == 1
    finally:
        await gw.stop()


async def test_missing_token_gets_bare_bearer_challenge(tmp_path, backend, keys):
    """No token, or another scheme, is 401 with ``WWW-Authenticate: Bearer`` and no error code."""
    gw = await start_gateway(tmp_path, config(backend.url, {"publicKey": keys.pem("rsa")}))
    try:
        for extra in ("", "Authorization: Basic YWxpY2U6cHc=\r\n", "Authorization: Bearer \r\n"):
            reply = await call(gw.port(), extra=extra)
            assert reply.status == 401
            assert reply.header("www-authenticate") == "Bearer"
        assert backend.requests == []
    finally:
        await gw.stop()


@pytest.mark.parametrize(
    ("options", "payload", "description"),
    [
        ({}, {"exp_in": -30}, "expired"),
        ({}, {"nbf_in": 120}, "not valid yet"),
        ({"issuer": "https://idp.test"}, {"iss": "https://evil.test"}, "another issuer"),
        ({"issuer": "https://idp.test"}, {}, "lacks the iss claim"),
        ({"audience": "api"}, {"aud": ["web", "mobile"]}, "another audience"),
        ({"audience": "api"}, {}, "lacks the aud claim"),
        ({"requiredClaims": ["email", "sub"]}, {}, "lacks the email claim"),
    ],
    ids=[
        "expired",
        "not-before-in-future",
        "wrong-issuer",
        "no-issuer",
        "wrong-audience",
        "no-audience",
        "missing-required-claim",
    ],
)
async def test_claim_checks_refuse(tmp_path, backend, keys, options, payload, description):
    """Tokens failing exp, nbf, iss, aud or requiredClaims are refused with invalid_token."""
    gw = await start_gateway(
        tmp_path, config(backend.url, {"publicKey": keys.pem("ec"), **options})
    )
    try:
        assert_refused(
            await call(gw.port(), jwt.encode(claims(**payload), keys.ec, "ES256")), description
        )
        assert backend.requests == []
    finally:
        await gw.stop()


@pytest.mark.parametrize(
    ("options", "payload"),
    [
        ({"clockSkew": "60s"}, {"exp_in": -30}),
        ({"clockSkew": 60}, {"nbf_in": 30}),
        ({"issuer": "https://idp.test"}, {"iss": "https://idp.test"}),
        ({"audience": "api"}, {"aud": ["web", "api"]}),
        ({"requiredClaims": ["email"]}, {"email": "a@example.test"}),
        ({}, {"aud": "anyone"}),
    ],
    ids=[
        "expired-within-skew",
        "nbf-within-skew",
        "right-issuer",
        "audience-in-list",
        "required-claim-present",
        "aud-unchecked-without-audience",
    ],
)
async def test_claim_checks_accept(tmp_path, backend, keys, options, payload):
    """Tokens meeting the configured checks pass, clock skew included."""
    gw = await start_gateway(
        tmp_path, config(backend.url, {"publicKey": keys.pem("ec"), **options})
    )
    try:
        assert (
            await call(gw.port(), jwt.encode(claims(**payload), keys.ec, "ES256"))
        ).status == 200
    finally:
        await gw.stop()


async def test_alg_none_is_refused(tmp_path, backend, keys):
    """An unsigned token (``alg: none``) is refused, whatever the key source."""
    gw = await start_gateway(tmp_path, config(backend.url, {"signingSecret": SECRET}))
    try:
        for alg in ("none", "None", "NONE"):
            token = unsigned({"alg": alg, "typ": "JWT"}, claims()) + "."
            assert_refused(await call(gw.port(), token), "algorithm is not accepted")
        assert backend.requests == []
    finally:
        await gw.stop()


async def test_hs256_signed_with_the_public_key_is_refused(tmp_path, backend, keys):
    """Algorithm confusion: an HS256 token keyed with the RSA public key's PEM is refused."""
    pem = keys.pem("rsa")
    gw = await start_gateway(tmp_path, config(backend.url, {"publicKey": pem}))
    try:
        signing_input = unsigned({"alg": "HS256", "typ": "JWT"}, claims())
        mac = hmac.new(pem.encode(), signing_input.encode(), hashlib.sha256).digest()
        assert_refused(await call(gw.port(), f"{signing_input}.{b64(mac)}"), "algorithm")
        assert backend.requests == []
        assert (await call(gw.port(), jwt.encode(claims(), keys.rsa, "RS256"))).status == 200
    finally:
        await gw.stop()


async def test_algorithms_allowlist_limits_the_key(tmp_path, backend, keys):
    """With ``algorithms: [PS256]`` an RS256 token from the same RSA key is refused."""
    options = {"publicKey": keys.pem("rsa"), "algorithms": ["PS256"]}
    gw = await start_gateway(tmp_path, config(backend.url, options))
    try:
        assert_refused(await call(gw.port(), jwt.encode(claims(), keys.rsa, "RS256")))
        assert (await call(gw.port(), jwt.encode(claims(), keys.rsa, "PS256"))).status == 200
    finally:
        await gw.stop()


async def test_token_from_cookie_and_query(tmp_path, backend, keys):
    """The token is found in the configured cookie or query parameter, and stripped there."""
    options = {"publicKey": keys.pem("rsa"), "tokenSource": {"cookie": "session"}}
    options["tokenKey"] = "access_token"
    gw = await start_gateway(tmp_path, config(backend.url, options))
    token = jwt.encode(claims(), keys.rsa, "RS256")
    try:
        reply = await call(gw.port(), extra=f"Cookie: theme=dark; session={token}; lang=en\r\n")
        assert reply.status == 200
        assert backend.requests[-1].header("cookie") == "theme=dark; lang=en"
        reply = await call(gw.port(), path=f"/list?page=2&access_token={token}&sort=asc")
        assert reply.status == 200
        assert backend.requests[-1].target == "/list?page=2&sort=asc"
        assert_refused(await call(gw.port(), path="/list?access_token=not.a.token"), "malformed")
        assert_refused(await call(gw.port(), extra="Cookie: session=x.y.z\r\n"))
    finally:
        await gw.stop()


async def test_custom_header_without_scheme_and_forward_authorization(tmp_path, backend, keys):
    """``tokenSource.header`` with an empty scheme takes the whole value; forwardAuthorization
    keeps it for the backend."""
    options = {
        "signingSecret": SECRET,
        "tokenSource": {"header": "X-Api-Token", "headerScheme": ""},
        "forwardAuthorization": True,
    }
    gw = await start_gateway(tmp_path, config(backend.url, options))
    token = jwt.encode(claims(), SECRET, "HS256")
    try:
        reply = await call(gw.port(), extra=f"X-Api-Token: {token}\r\n")
        assert reply.status == 200
        assert backend.requests[-1].header("x-api-token") == token
        # The Authorization header is not where this middleware looks.
        assert (await call(gw.port(), token)).status == 401
    finally:
        await gw.stop()


async def test_claims_forwarded_as_headers(tmp_path, backend, keys):
    """forwardHeaders sets each header from its claim (nested, non-string, missing),
    replacing whatever the client sent."""
    options = {
        "publicKey": keys.pem("rsa"),
        "forwardHeaders": {
            "X-User": "sub",
            "X-Name": "profile.name",
            "X-Dotted": "a\\.b",
            "X-Roles": "roles",
            "X-Admin": "admin",
            "X-Missing": "nope",
            "X-Evil": "evil",
        },
    }
    gw = await start_gateway(tmp_path, config(backend.url, options))
    payload = claims(
        profile={"name": "Alice Doe"},
        roles=["dev", "ops"],
        admin=True,
        evil="a\r\nInjected: yes",
        **{"a.b": "dotted"},
    )
    try:
        reply = await call(
            gw.port(),
            jwt.encode(payload, keys.rsa, "RS256"),
            extra="X-User: mallory\r\nX-Missing: spoofed\r\n",
        )
        assert reply.status == 200
        seen = backend.requests[-1]
        assert [v for k, v in seen.headers if k.lower() == "x-user"] == ["alice"]
        assert seen.header("x-name") == "Alice Doe"
        assert seen.header("x-dotted") == "dotted"
        assert seen.header("x-roles") == '["dev","ops"]'
        assert seen.header("x-admin") == "true"
        assert seen.header("x-missing") == ""
        assert seen.header("x-evil") == "aInjected: yes"
        assert seen.header("injected") is None
    finally:
        await gw.stop()


async def test_jwks_file_selects_key_by_kid(tmp_path, backend, keys):
    """A jwksFile (path or inline) verifies by kid, and kid-less tokens against each key."""
    jwks = {
        "keys": [
            {**RSAAlgorithm.to_jwk(keys.rsa.public_key(), as_dict=True), "kid": "r1"},
            {**ECAlgorithm.to_jwk(keys.ec.public_key(), as_dict=True), "kid": "e1"},
            {"kty": "oct", "k": b64(SECRET.encode()), "kid": "h1"},
        ]
    }
    (tmp_path / "jwks.json").write_text(json.dumps(jwks))
    for source in (str(tmp_path / "jwks.json"), json.dumps(jwks)):
        gw = await start_gateway(tmp_path, config(backend.url, {"jwksFile": source}))
        try:
            for key, alg, kid in ((keys.rsa, "RS256", "r1"), (keys.ec, "ES256", "e1")):
                token = jwt.encode(claims(), key, alg, headers={"kid": kid})
                assert (await call(gw.port(), token)).status == 200
            assert (await call(gw.port(), jwt.encode(claims(), keys.ec, "ES256"))).status == 200
            wrong_kid = jwt.encode(claims(), keys.rsa, "RS256", headers={"kid": "e1"})
            assert_refused(await call(gw.port(), wrong_kid))
            unknown = jwt.encode(claims(), keys.rsa, "RS256", headers={"kid": "zz"})
            assert_refused(await call(gw.port(), unknown), "kid")
            # The oct key in the set never enables HMAC.
            hs = jwt.encode(claims(), SECRET, "HS256", headers={"kid": "h1"})
            assert_refused(await call(gw.port(), hs))
        finally:
            await gw.stop()


@pytest.mark.parametrize(
    ("options", "key", "message"),
    [
        ({}, "jwt", "set one of signingSecret, publicKey"),
        ({"signingSecret": SECRET, "algorithms": ["HS256", "none"]}, "algorithms", '"none"'),
        ({"publicKey": "RSA", "algorithms": ["HS256"]}, "algorithms", "HS256 needs signingSecret"),
        ({"jwksUrl": "http://127.0.0.1:1/k", "algorithms": ["RS257"]}, "algorithms", "unknown"),
        ({"signingSecret": SECRET, "algorithms": ["RS256"]}, "algorithms", "needs a public key"),
        ({"signingSecret": "short"}, "signingSecret", "shorter than the 32"),
        ({"signingSecret": "@@", "signingSecretBase64Encoded": True}, "signingSecret", "base64"),
        (
            {"publicKey": "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n"},
            "publicKey",
            "not a PEM public key",
        ),
        ({"publicKeyFile": "/nonexistent/key.pem"}, "publicKeyFile", "cannot read"),
        ({"signingSecret": SECRET, "jwksUrl": "http://127.0.0.1:1/"}, "jwksUrl", "only one"),
        ({"jwksUrl": "/.well-known/jwks.json"}, "jwksUrl", "absolute"),
        ({"jwksFile": '{"keys": []}'}, "jwksFile", "no usable key"),
        (
            {"signingSecret": SECRET, "forwardHeaders": {"Content-Length": "sub"}},
            "forwardHeaders",
            "Content-Length",
        ),
        ({"signingSecret": SECRET, "clockSkew": "-5s"}, "clockSkew", "negative"),
        ({"signingSecret": SECRET, "claims": "Equals(`grp`, `admin`)"}, "claims", "claims"),
    ],
    ids=[
        "no-key-source",
        "alg-none",
        "hs-without-secret",
        "unknown-alg",
        "rs-with-secret",
        "short-secret",
        "bad-base64",
        "unreadable-pem",
        "missing-pem-file",
        "two-sources",
        "relative-jwks-url",
        "empty-jwks-file",
        "reserved-forward-header",
        "negative-skew",
        "hub-claims-unsupported",
    ],
)
async def test_invalid_options_rejected_at_load(tmp_path, backend, keys, options, key, message):
    """A bad option is a load error naming the middleware, the key and the line;
    the previous configuration keeps serving."""
    if options.get("publicKey") == "RSA":
        options = {**options, "publicKey": keys.pem("rsa")}
    good = config(backend.url, {"signingSecret": SECRET})
    gw = await start_gateway(tmp_path, good)
    try:
        errors = await gw.reload(config(backend.url, options), expect_ok=False)
        text = str(errors[0])  # type: ignore[index]
        assert "dynamic.yml:" in text and "http.middlewares.auth" in text
        assert key in text and message in text
        token = jwt.encode(claims(), SECRET, "HS256")
        assert (await call(gw.port(), token)).status == 200
    finally:
        await gw.stop()
