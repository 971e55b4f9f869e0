"""Verification keys for the ``jwt`` middleware: decoded keys, key sets, a remote set.

``hmac_key`` and ``load_pem_key`` decode a secret or a PEM key once, at load.
``parse_jwks`` turns a JWK set (RFC 7517) into ``VerificationKey``s, each
bound to the JWS algorithms its key type can verify and the configuration
allows; keys that cannot verify anything allowed are skipped, never guessed
at. ``bind`` does the same for a key loaded from PEM.
Binding algorithms to keys is what stops algorithm confusion (RFC 8725
section 2.1): an RSA key is never offered to HMAC, whatever a token says.

``JWKSCache`` holds a ``jwksUrl`` set. Its invariants:

- it fetches only on the event loop, through the gateway's shared client
  session, and never before the first request asks for a key;
- at most one fetch is in flight; everyone who needs it waits on that one;
- a refresh asked for by a token with an unknown ``kid`` starts at most once
  per ``min_interval``, so unknown ``kid``s cannot make it hammer the issuer
  (and while no fetch has succeeded, requests retry it at most that often);
- between those, a timer refetches after the response's ``Cache-Control``
  max-age, clamped to [``min_ttl``, ``max_ttl``];
- a failed fetch keeps the keys it had, and is logged once until one succeeds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import jwt
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from middleware.http.http_client import read_limited

log = logging.getLogger(__name__)

HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
_HMAC_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}
RSA_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
_CURVE_ALGORITHMS = {
    "secp256r1": ("ES256",),
    "secp384r1": ("ES384",),
    # pyjwt knows P-521 as ES512 (RFC 7518's name) and as ES521.
    "secp521r1": ("ES512", "ES521"),
    "secp256k1": ("ES256K",),
}
ASYMMETRIC_ALGORITHMS = (
    *RSA_ALGORITHMS,
    "ES256",
    "ES384",
    "ES512",
    "ES521",
    "ES256K",
    "EdDSA",
)
KNOWN_ALGORITHMS = frozenset((*HMAC_ALGORITHMS, *ASYMMETRIC_ALGORITHMS))

# RFC 7518 section 3.3: RSA keys for RS*/PS* MUST be 2048 bits or larger.
MIN_RSA_BITS = 2048


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """A decoded key (a ``cryptography`` public key, or HMAC secret bytes) and
    the algorithms it may verify, in the allowlist's order."""

    key: Any
    algorithms: tuple[str, ...]
    kid: str | None = None


def key_algorithms(key: object) -> tuple[str, ...]:
    """The JWS algorithms a public key object can verify; () for other key types."""
    if isinstance(key, rsa.RSAPublicKey):
        return RSA_ALGORITHMS
    if isinstance(key, ec.EllipticCurvePublicKey):
        return _CURVE_ALGORITHMS.get(key.curve.name, ())
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return ("EdDSA",)
    return ()


def describe_key(key: object) -> str:
    """A short name for a key's type, for error messages ("RSA 2048", "EC secp256r1")."""
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size}-bit"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name}"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519"
    if isinstance(key, ed448.Ed448PublicKey):
        return "Ed448"
    return type(key).__name__


def bind(key: object, allowed: Iterable[str], kid: str | None = None) -> VerificationKey | str:
    """``key`` bound to the allowed algorithms it fits, or why it fits none."""
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        return f"{describe_key(key)} key is shorter than {MIN_RSA_BITS} bits (RFC 7518 3.3)"
    fits = key_algorithms(key)
    if not fits:
        return f"{describe_key(key)} keys cannot verify JWS signatures"
    algorithms = tuple(a for a in allowed if a in fits)
    if not algorithms:
        return f"{describe_key(key)} key fits none of the allowed algorithms ({', '.join(fits)})"
    return VerificationKey(key, algorithms, kid)


def hmac_key(secret: bytes, allowed: tuple[str, ...], explicit: bool) -> VerificationKey:
    """``signingSecret`` bound to the HS* algorithms it is long enough for.

    RFC 7518 section 3.2: the key MUST be at least the hash's size. Refused at
    load, not per request: an explicit list must fit whole; the default list
    keeps what fits.
    """
    if not secret:
        raise ValueError("signingSecret: is empty")
    short = [a for a in allowed if len(secret) < _HMAC_BYTES[a]]
    fits = tuple(a for a in allowed if a not in short)
    if short and (explicit or not fits):
        raise ValueError(
            f"signingSecret: {len(secret)} bytes is shorter than the {_HMAC_BYTES[short[0]]} "
            f"that {short[0]} requires (RFC 7518 section 3.2)"
        )
    return VerificationKey(secret, fits)


def load_pem_key(data: bytes, option: str) -> object:
    """The public key in PEM text (a public key or a certificate)."""
    if b"PRIVATE KEY-----" in data:
        raise ValueError(f"{option}: holds a private key; give the public key")
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            return x509.load_pem_x509_certificate(data).public_key()
        return load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ValueError(f"{option}: not a PEM public key or certificate") from None


class KeySet:
    """Verification keys by ``kid``, plus every key for tokens that name none."""

    __slots__ = ("by_kid", "keys")

    def __init__(self, keys: Iterable[VerificationKey] = ()) -> None:
        self.keys: tuple[VerificationKey, ...] = tuple(keys)
        self.by_kid: Mapping[str, VerificationKey] = {
            k.kid: k for k in self.keys if k.kid is not None
        }

    def __len__(self) -> int:
        return len(self.keys)


def parse_jwks(data: bytes | str, allowed: Iterable[str]) -> tuple[KeySet, list[str]]:
    """The keys of a JWK set usable with ``allowed``, and why each other key was skipped.

    Raises ``ValueError`` when ``data`` is not a JWK set at all. Symmetric
    (``oct``) keys are always skipped: HMAC verification takes its secret
    from ``signingSecret`` only, so a key set can never turn a public-key
    configuration into one accepting HS* tokens.
    """
    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError('not a JWK set (expected an object with a "keys" list)')
    allowed = tuple(allowed)
    keys: list[VerificationKey] = []
    skipped: list[str] = []
    for index, jwk in enumerate(document["keys"]):
        label = f"key {index}"
        if not isinstance(jwk, dict):
            skipped.append(f"{label}: not an object")
            continue
        kid = jwk.get("kid")
        if kid is not None and not isinstance(kid, str):
            skipped.append(f"{label}: kid is not a string")
            continue
        if kid is not None:
            label = f"key {kid!r}"
        if jwk.get("use", "sig") != "sig":
            skipped.append(f'{label}: use is {jwk.get("use")!r}, not "sig"')
            continue
        if jwk.get("kty") == "oct":
            skipped.append(f"{label}: symmetric keys come from signingSecret only")
            continue
        # The key is read by its kty alone; a stated alg is checked after binding,
        # so what a remote set claims never chooses how its key material is parsed.
        material = {k: v for k, v in jwk.items() if k != "alg"}
        try:
            parsed = jwt.PyJWK(material, "EdDSA" if jwk.get("kty") == "OKP" else None).key
        except Exception as exc:
            # Remote input: one malformed key must not cost the set its other keys.
            skipped.append(f"{label}: {exc}")
            continue
        public = parsed.public_key() if hasattr(parsed, "public_key") else parsed
        bound = bind(public, allowed, kid)
        if isinstance(bound, str):
            skipped.append(f"{label}: {bound}")
            continue
        stated = jwk.get("alg")
        if stated is not None:
            # A key that names its algorithm verifies with that one only (RFC 7517 4.4).
            if stated not in bound.algorithms:
                skipped.append(f"{label}: its alg {stated!r} is not allowed for it")
                continue
            bound = VerificationKey(bound.key, (stated,), kid)
        keys.append(bound)
    return KeySet(keys), skipped


_MAX_AGE = re.compile(r"(?:^|[,\s])max-age\s*=\s*\"?(\d+)", re.IGNORECASE)
_NO_CACHE = re.compile(r"(?:^|[,\s])(?:no-store|no-cache)(?:$|[,\s=])", re.IGNORECASE)


def cache_lifetime(cache_control: str, default: float, floor: float, ceiling: float) -> float:
    """Seconds to keep a fetched set, from its ``Cache-Control`` (RFC 9111 5.2.2)."""
    if _NO_CACHE.search(cache_control):
        seconds = 0.0
    else:
        match = _MAX_AGE.search(cache_control)
        seconds = float(match.group(1)) if match else default
    return min(max(seconds, floor), ceiling)


class JWKSCache:
    """The key set at ``url``, fetched on first use and refreshed as described above."""

    def __init__(
        self,
        url: str,
        client: Callable[[], aiohttp.ClientSession],
        allowed: Iterable[str],
        *,
        name: str = "",
        min_interval: float = 10.0,
        default_ttl: float = 300.0,
        min_ttl: float = 60.0,
        max_ttl: float = 3600.0,
        timeout: float = 5.0,
        limit: int = 1 << 20,
    ) -> None:
        self.url = url
        self.allowed = tuple(allowed)
        self.name = name
        self.min_interval = min_interval
        self.default_ttl = default_ttl
        self.min_ttl = min_ttl
        self.max_ttl = max_ttl
        self.timeout = timeout
        self.limit = limit
        self.keys = KeySet()
        # Whether a fetch ever succeeded; until then requests wait for one.
        self.loaded = False
        self._client = client
        self._inflight: asyncio.Future[None] | None = None
        self._task: asyncio.Task[float] | None = None
        self._timer: asyncio.TimerHandle | None = None
        # When a request last started a fetch, per reason; periodic fetches don't count.
        self._last_demand = {"load": -math.inf, "refresh": -math.inf}
        self._failing = False
        self._closed = False

    def load(self) -> Awaitable[None] | None:
        """The first fetch to wait for (while no fetch has succeeded yet).

        None when an attempt started less than ``min_interval`` ago and failed:
        with no keys, requests are answered at once rather than queued on an
        issuer that is down.
        """
        return self._demand("load")

    def refresh(self) -> Awaitable[None] | None:
        """The fetch to wait for after a token named an unknown ``kid``.

        The one in flight, else a new one unless an unknown ``kid`` already
        started one less than ``min_interval`` ago (then None: answer with the
        keys known). The returned awaitable never raises a fetch error, and
        cancelling a waiter does not cancel the fetch others wait on.
        """
        return self._demand("refresh")

    def _demand(self, reason: str) -> Awaitable[None] | None:
        pending = self._inflight
        if pending is None:
            now = time.monotonic()
            if self._closed or now - self._last_demand[reason] < self.min_interval:
                return None
            self._last_demand[reason] = now
            pending = self._start()
        return asyncio.shield(pending)

    def close(self) -> None:
        """Stop the timer and any fetch; the keys stay usable for requests in flight."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._task is not None:
            self._task.cancel()

    def _start(self) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        waiter = self._inflight = loop.create_future()
        task = self._task = loop.create_task(self._fetch())
        task.add_done_callback(self._fetched)
        return waiter

    def _fetched(self, task: asyncio.Task[float]) -> None:
        ttl = self.min_ttl
        if not task.cancelled():
            error = task.exception()
            if error is None:
                ttl = task.result()
            else:
                self._failed(repr(error))
        waiter, self._inflight, self._task = self._inflight, None, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if not self._closed:
            self._timer = asyncio.get_running_loop().call_later(ttl, self._periodic)

    def _periodic(self) -> None:
        self._timer = None
        if not self._closed and self._inflight is None:
            self._start()

    async def _fetch(self) -> float:
        """Fetch and install the set; the seconds until the next periodic fetch."""
        try:
            async with self._client().get(
                self.url,
                # The shared session does not decompress (the proxy relays bodies as sent).
                headers={"Accept": "application/json", "Accept-Encoding": "identity"},
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            ) as reply:
                if reply.status != 200:
                    raise ValueError(f"HTTP {reply.status}")
                body = await read_limited(reply, self.limit)
                if body is None:
                    raise ValueError(f"larger than {self.limit} bytes")
                cache_control = reply.headers.get("Cache-Control", "")
            keys, skipped = parse_jwks(body, self.allowed)
            if not keys:
                raise ValueError("no usable key: " + ("; ".join(skipped) or "the set is empty"))
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            self._failed(str(exc) or type(exc).__name__)
            return self.min_ttl
        self.keys = keys
        self.loaded = True
        if self._failing:
            self._failing = False
            log.info("middleware %s: fetched JWKS %s again", self.name, self.url)
        if skipped and log.isEnabledFor(logging.DEBUG):
            log.debug("middleware %s: JWKS %s: skipped %s", self.name, self.url, skipped)
        return cache_lifetime(cache_control, self.default_ttl, self.min_ttl, self.max_ttl)

    def _failed(self, reason: str) -> None:
        if self._failing:
            log.debug("middleware %s: fetching JWKS %s failed: %s", self.name, self.url, reason)
            return
        self._failing = True
        log.warning(
            "middleware %s: fetching JWKS %s failed: %s; keeping %d known keys",
            self.name,
            self.url,
            reason,
            len(self.keys),
        )
