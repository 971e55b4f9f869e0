"""``jwt``: verify a JSON Web Token on each request, as Traefik Hub's JWT middleware.

Options keep Traefik Hub's names (``signingSecret``, ``signingSecretBase64Encoded``,
``publicKey``, ``jwksFile``, ``jwksUrl``, ``forwardHeaders``,
``forwardAuthorization``, ``tokenKey``); Hub's ``claims`` expressions and
``clientConfig`` are not implemented, so configurations using them are
rejected rather than half-honoured. Sluice adds ``publicKeyFile``,
``algorithms``, ``issuer``, ``audience``, ``requiredClaims``, ``clockSkew``
and ``tokenSource`` (header, scheme, cookie).

Invariants:

- exactly one key source, as Hub requires; every key is decoded in ``build``
  and bound to the algorithms it may verify (``jwks.bind``), so ``none`` is
  never accepted and an RSA key never doubles as an HMAC secret;
- HS* needs ``signingSecret``, and a secret shorter than the hash is refused
  (RFC 7518 section 3.2), so pyjwt never warns on the hot path;
- a request costs one pyjwt ``decode`` (plus reading the header's ``kid``
  for key sets); only a ``jwksUrl`` set being fetched makes a request wait,
  and then for at most one shared fetch (``jwks.JWKSCache``);
- failures answer 401 with ``WWW-Authenticate: Bearer`` and, for a token that
  was present, ``error="invalid_token"`` (RFC 6750 section 3.1).

``jwt_token`` finds the token, strips it and forwards its claims.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections.abc import Awaitable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jwt

from gateway.config.model import Duration, empty_map, model
from middleware.contract import BuildContext, Filter, Handler, Headers, Request, Response
from middleware.http.jwks import (
    ASYMMETRIC_ALGORITHMS,
    HMAC_ALGORITHMS,
    KNOWN_ALGORITHMS,
    JWKSCache,
    KeySet,
    VerificationKey,
    bind,
    hmac_key,
    load_pem_key,
    parse_jwks,
)
from middleware.http.jwt_token import TokenLookup, forward_claims, forwarding

log = logging.getLogger(__name__)


@model
class TokenSource:
    # ``header: ""`` turns the header off; ``headerScheme: ""`` takes the whole value.
    header: str = "Authorization"
    header_scheme: str = "Bearer"
    cookie: str = ""


@model
class JWTOptions:
    signing_secret: str = ""
    signing_secret_base64_encoded: bool = False
    public_key: str = ""
    public_key_file: str = ""
    jwks_file: str = ""
    jwks_url: str = ""
    # Empty: every asymmetric algorithm, or HS256/384/512 with signingSecret.
    algorithms: tuple[str, ...] = ()
    issuer: str = ""
    audience: str = ""
    required_claims: tuple[str, ...] = ()
    # Hub checks exp/nbf/iat with no stated leeway; 0 keeps that strict.
    clock_skew: Duration = 0.0
    token_source: TokenSource = TokenSource()
    # Hub's query parameter name (Hub also reads form bodies; a head filter cannot).
    token_key: str = ""
    forward_headers: Mapping[str, str] = empty_map()
    # Hub's default: the token is stripped from the request once verified.
    forward_authorization: bool = False


_SOURCES = ("signingSecret", "publicKey", "publicKeyFile", "jwksFile", "jwksUrl")
# error_description may not hold '"' or '\' (RFC 6750 section 3).
_UNSAFE_DESCRIPTION = re.compile(r"[^\x20\x21\x23-\x5b\x5d-\x7e]")

_REASONS: dict[type[Exception], str] = {
    jwt.ExpiredSignatureError: "the token expired",
    jwt.ImmatureSignatureError: "the token is not valid yet",
    jwt.InvalidAudienceError: "the token is for another audience",
    jwt.InvalidIssuerError: "the token is from another issuer",
    jwt.InvalidAlgorithmError: "the token's algorithm is not accepted",
    jwt.InvalidSignatureError: "the token's signature is invalid",
    jwt.InvalidKeyError: "no key fits the token",
}


def unauthorized(description: str | None) -> Response:
    """401 with an RFC 6750 challenge; ``None`` when the request carried no token."""
    challenge = b"Bearer"
    if description is not None:
        safe = _UNSAFE_DESCRIPTION.sub("", description)
        challenge = f'Bearer error="invalid_token", error_description="{safe}"'.encode()
    headers = Headers([(b"WWW-Authenticate", challenge), (b"Content-Type", b"text/plain")])
    return Response(401, headers=headers, body=b"401 Unauthorized\n")


def _reason(exc: Exception) -> str:
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"the token lacks the {exc.claim} claim"
    for kind in type(exc).__mro__:
        if kind in _REASONS:
            return _REASONS[kind]
    return "the token is malformed" if isinstance(exc, jwt.DecodeError) else "invalid token"


# -- the key source, decoded once ---------------------------------------------------


def _read(path: str, option: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"{option}: cannot read {path}: {exc.strerror or exc}") from None


def _algorithms(options: JWTOptions, symmetric: bool) -> tuple[str, ...]:
    if not options.algorithms:
        return HMAC_ALGORITHMS if symmetric else ASYMMETRIC_ALGORITHMS
    for name in options.algorithms:
        if name.lower() == "none":
            raise ValueError('algorithms: "none" is never accepted')
        if name not in KNOWN_ALGORITHMS:
            raise ValueError(f"algorithms: unknown algorithm {name!r}")
        if (name in HMAC_ALGORITHMS) != symmetric:
            needs = "a public key, not signingSecret" if symmetric else "signingSecret"
            raise ValueError(f"algorithms: {name} needs {needs}")
    return tuple(dict.fromkeys(options.algorithms))


def load_keys(options: JWTOptions) -> tuple[VerificationKey | KeySet | str, tuple[str, ...]]:
    """The one key source (a key, a key set, or a JWKS URL) and the allowed algorithms."""
    values = (
        options.signing_secret,
        options.public_key,
        options.public_key_file,
        options.jwks_file,
        options.jwks_url,
    )
    given = [name for name, value in zip(_SOURCES, values, strict=True) if value]
    if not given:
        raise ValueError(f"set one of {', '.join(_SOURCES)}")
    if len(given) > 1:
        raise ValueError(f"{given[1]}: set only one key source (also got {given[0]})")
    source = given[0]
    allowed = _algorithms(options, source == "signingSecret")
    if source == "signingSecret":
        secret = options.signing_secret.encode()
        if options.signing_secret_base64_encoded:
            try:
                secret = base64.b64decode(secret.strip(), validate=True)
            except (binascii.Error, ValueError):
                raise ValueError("signingSecret: not valid base64") from None
        return hmac_key(secret, allowed, bool(options.algorithms)), allowed
    if options.signing_secret_base64_encoded:
        raise ValueError("signingSecretBase64Encoded: there is no signingSecret")
    if source == "jwksFile":
        text = options.jwks_file
        # Hub's jwksFile is a path or the set itself.
        data = text.encode() if text.lstrip().startswith("{") else _read(text, source)
        try:
            keys, skipped = parse_jwks(data, allowed)
        except ValueError as exc:
            raise ValueError(f"jwksFile: {exc}") from None
        if not keys:
            raise ValueError("jwksFile: no usable key: " + ("; ".join(skipped) or "it is empty"))
        return keys, allowed
    if source == "jwksUrl":
        url = urlsplit(options.jwks_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError("jwksUrl: expected an absolute http:// or https:// URL")
        return options.jwks_url, allowed
    if source == "publicKey":
        data = options.public_key.encode()
        if b"-----BEGIN" not in data:
            raise ValueError("publicKey: expected PEM text (use publicKeyFile for a path)")
    else:
        data = _read(options.public_key_file, source)
    bound = bind(load_pem_key(data, source), allowed)
    if isinstance(bound, str):
        raise ValueError(f"{source}: the {bound}")
    return bound, allowed


class _JWTFilter(Filter):
    __slots__ = (
        "name",
        "decoder",
        "audience",
        "issuer",
        "leeway",
        "key",
        "key_set",
        "cache",
        "lookup",
        "forward",
        "strip",
    )

    def __init__(
        self,
        options: JWTOptions,
        name: str,
        keys: VerificationKey | KeySet | None,
        cache: JWKSCache | None,
    ) -> None:
        self.name = name
        self.decoder = jwt.PyJWT(
            options={
                # Without a configured audience, any aud is accepted (Hub checks no aud).
                "verify_aud": bool(options.audience),
                "require": list(options.required_claims),
                # Weak keys were refused at load; this keeps pyjwt from warning per request.
                "enforce_minimum_key_length": True,
            }
        )
        self.audience = options.audience or None
        self.issuer = options.issuer or None
        self.leeway = options.clock_skew
        self.key = keys if isinstance(keys, VerificationKey) else None
        self.key_set = keys if isinstance(keys, KeySet) else None
        self.cache = cache
        source = options.token_source
        self.lookup = TokenLookup(
            source.header, source.header_scheme, source.cookie, options.token_key
        )
        self.forward = forwarding(options.forward_headers)
        self.strip = not options.forward_authorization

    def request(self, request: Request) -> Response | Awaitable[Response | None] | None:
        found = self.lookup.find(request)
        if found is None:
            return unauthorized(None)
        token = found[0]
        if self.key is not None:
            return self._check(request, found, (self.key,))
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            return self._fail(exc)
        kid = header.get("kid")
        cache = self.cache
        if cache is not None:
            if not cache.loaded:
                fetch = cache.load()
            elif kid is not None and kid not in cache.keys.by_kid:
                fetch = cache.refresh()
            else:
                fetch = None
            if fetch is not None:
                return self._after_fetch(fetch, request, found, header)
        return self._check_set(request, found, header)

    async def _after_fetch(
        self,
        fetch: Awaitable[None],
        request: Request,
        found: tuple[str, int],
        header: dict[str, Any],
    ) -> Response | None:
        await fetch
        return self._check_set(request, found, header)

    def _check_set(
        self, request: Request, found: tuple[str, int], header: dict[str, Any]
    ) -> Response | None:
        keys = self.key_set if self.cache is None else self.cache.keys
        assert keys is not None
        if self.cache is not None and not self.cache.loaded:
            return unauthorized("the signing keys are unavailable")
        kid = header.get("kid")
        if kid is not None:
            key = keys.by_kid.get(kid)
            if key is None:
                return unauthorized("no key has the token's kid")
            return self._check(request, found, (key,))
        alg = header.get("alg")
        candidates = tuple(k for k in keys.keys if alg in k.algorithms)
        if not candidates:
            return unauthorized("the token's algorithm is not accepted")
        return self._check(request, found, candidates)

    def _check(
        self, request: Request, found: tuple[str, int], keys: tuple[VerificationKey, ...]
    ) -> Response | None:
        token = found[0]
        payload: dict[str, Any] | None = None
        for key in keys:
            try:
                payload = self.decoder.decode(
                    token,
                    key.key,
                    algorithms=key.algorithms,
                    audience=self.audience,
                    issuer=self.issuer,
                    leeway=self.leeway,
                )
                break
            except jwt.InvalidSignatureError as exc:
                # Tokens without a kid are tried against each key of their algorithm.
                if key is keys[-1]:
                    return self._fail(exc)
            except (jwt.PyJWTError, ValueError, TypeError) as exc:
                return self._fail(exc)
        assert payload is not None
        if self.strip:
            self.lookup.strip(request, found)
        forward_claims(request.headers, payload, self.forward)
        return None

    def _fail(self, exc: Exception) -> Response:
        reason = _reason(exc)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("middleware %s: refused a token: %s (%s)", self.name, reason, exc)
        return unauthorized(reason)


class JWTAuth:
    key = "jwt"
    options = JWTOptions

    def build(self, options: JWTOptions, next: Handler, context: BuildContext) -> Filter:
        if options.clock_skew < 0:
            raise ValueError("clockSkew: must not be negative")
        keys, allowed = load_keys(options)
        cache = None
        if isinstance(keys, str):
            # The session is made on the loop at the first fetch, never here.
            cache = JWKSCache(keys, context.http_client, allowed, name=context.name)
            context.on_close(cache.close)
            return _JWTFilter(options, context.name, None, cache)
        return _JWTFilter(options, context.name, keys, cache)
