"""``digestAuth``: HTTP Digest authentication (RFC 7616, MD5, ``qop=auth``) against htdigest users.

Traefik v3 options: ``users`` and ``usersFile`` hold ``user:realm:HA1`` lines
(merged, the file winning), ``realm`` (default ``traefik``) is the realm
challenged with and the only one whose users can log in, ``headerField``
carries the user name to the backend, ``removeHeader`` drops
``Authorization`` before forwarding.

Nonces are stateless: a millisecond ``time.monotonic()`` stamp, random salt,
and an HMAC-SHA256 of both under a secret drawn when the middleware is built, so a
reload or restart invalidates them. A nonce is accepted for
``NONCE_LIFETIME`` seconds, and each nonce's highest ``nc`` is remembered so
a replayed request is refused. As RFC 7616 section 3.3 asks, a request whose
digest is right but whose nonce is expired, foreign or replayed gets a 401
with ``stale=true`` (the client retries with the fresh nonce without asking
the user again); any other failure gets a plain challenge.

Choices where Traefik (go-http-auth) is silent or loose: no ``opaque`` is
sent (the HMAC nonce already carries all the state it could); ``uri`` must be
the request target (or its path when the client left the query out), not
merely a prefix of it; MD5-sess, SHA-256 and ``userhash`` are not offered;
no ``Authentication-Info`` is sent back (optional in RFC 7616 section 3.5,
and it would make this filter edit every response).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import time
from collections.abc import Mapping

from gateway.config.model import model
from middleware.contract import BuildContext, Filter, Handler, Request, Response
from middleware.http.basic_auth import (
    DEFAULT_REALM,
    authorization,
    check_common,
    quoted,
    realm_of,
    unauthorized,
    user_lines,
)
from middleware.http.htpasswd import parse_htdigest

log = logging.getLogger(__name__)

NONCE_LIFETIME = 300.0
# Nonces whose nc is tracked at once; beyond this the oldest half turn stale.
NONCE_CAPACITY = 4096

_AUTHORIZATION = b"authorization"
_PARAM = re.compile(
    r"""\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]*))\s*(?:,|$)"""
)
_ESCAPE = re.compile(r"\\(.)")
_REQUIRED = ("username", "nonce", "uri", "response", "qop", "nc", "cnonce")
# Nonce layout, in hex digits: issue time (ms), random salt, truncated HMAC-SHA256.
_STAMP = 12
_SALT = 16
_HEAD = _STAMP + _SALT
_MAC = 32


@model
class DigestAuthOptions:
    users: tuple[str, ...] = ()
    users_file: str = ""
    realm: str = DEFAULT_REALM
    header_field: str = ""
    remove_header: bool = False


def digest_params(value: str) -> dict[str, str] | None:
    """The auth-params of a ``Digest`` credentials value (names lower-cased), or None."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        return None
    params: dict[str, str] = {}
    pos, end = 0, len(rest)
    while pos < end:
        match = _PARAM.match(rest, pos)
        if match is None or match.end() == pos:
            return None
        name, quoted_value, token = match.groups()
        params[name.lower()] = _ESCAPE.sub(r"\1", quoted_value) if token is None else token
        pos = match.end()
    return params


def md5_hex(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def expected_response(ha1: str, method: str, params: Mapping[str, str]) -> str:
    """RFC 7616 section 3.4.1 ``response`` for ``qop=auth``."""
    ha2 = md5_hex(f"{method}:{params['uri']}")
    nonce, nc, cnonce, qop = params["nonce"], params["nc"], params["cnonce"], params["qop"]
    return md5_hex(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


class Nonces:
    """Issues and checks HMAC-stamped nonces; sans-IO (the caller passes the time)."""

    __slots__ = ("secret", "lifetime", "capacity", "counts", "floor")

    def __init__(
        self, secret: bytes, lifetime: float = NONCE_LIFETIME, capacity: int = NONCE_CAPACITY
    ) -> None:
        self.secret = secret
        self.lifetime = lifetime
        self.capacity = capacity
        # Nonce -> highest nc accepted with it.
        self.counts: dict[str, int] = {}
        # Nonces stamped at or before this (ms) were forgotten to bound memory: stale.
        self.floor = -1

    def issue(self, now: float) -> str:
        # Random bits keep nonces issued in the same millisecond apart: they
        # would otherwise share one nc sequence and refuse each other as replays.
        head = f"{int(now * 1000):0{_STAMP}x}{os.urandom(_SALT // 2).hex()}"
        return head + self._mac(head)

    def accept(self, nonce: str, count: int, now: float) -> bool:
        """Whether ``nonce`` is ours, unexpired, and ``count`` is above any seen with it."""
        if len(nonce) != _HEAD + _MAC or not nonce.isascii():
            return False
        head = nonce[:_HEAD]
        if not hmac.compare_digest(nonce[_HEAD:], self._mac(head)):
            return False
        issued = int(head[:_STAMP], 16)
        if issued <= self.floor or now - issued / 1000 > self.lifetime:
            return False
        counts = self.counts
        last = counts.get(nonce)
        if last is None:
            if len(counts) >= self.capacity:
                self._forget(now)
                counts = self.counts
                if issued <= self.floor:
                    return False
            last = 0
        if count <= last:
            return False
        counts[nonce] = count
        return True

    def _mac(self, head: str) -> str:
        return hmac.new(self.secret, head.encode("ascii"), hashlib.sha256).hexdigest()[:_MAC]

    def _forget(self, now: float) -> None:
        """Drop expired nonces; if that is not enough, the older half (made stale via floor)."""
        oldest = int((now - self.lifetime) * 1000)
        kept = {n: c for n, c in self.counts.items() if int(n[:_STAMP], 16) >= oldest}
        if len(kept) >= self.capacity:
            stamps = sorted(int(n[:_STAMP], 16) for n in kept)
            self.floor = stamps[len(stamps) // 2]
            kept = {n: c for n, c in kept.items() if int(n[:_STAMP], 16) > self.floor}
        self.counts = kept


class _DigestAuthFilter(Filter):
    __slots__ = ("users", "realm", "header_field", "remove_header", "nonces")

    def __init__(self, options: DigestAuthOptions, users: dict[str, str]) -> None:
        self.users = users
        self.realm = quoted(realm_of(options.realm))
        self.header_field = options.header_field
        self.remove_header = options.remove_header
        self.nonces = Nonces(os.urandom(32))

    def request(self, request: Request) -> Response | None:
        raw = authorization(request.headers)
        if raw is None:
            return self.challenge(stale=False)
        try:
            params = digest_params(raw.decode("utf-8"))
        except UnicodeDecodeError:
            params = None
        if params is None or not self.well_formed(request, params):
            return self.challenge(stale=False)
        user = params["username"]
        ha1 = self.users.get(user)
        if ha1 is None:
            return self.challenge(stale=False)
        # Compared as bytes: compare_digest refuses non-ASCII str, and this is client input.
        response = params["response"].lower().encode("utf-8")
        expected = expected_response(ha1, request.method, params).encode("ascii")
        if not hmac.compare_digest(response, expected):
            return self.challenge(stale=False)
        # The client knows the password; a refused nonce is only stale.
        if not self.nonces.accept(params["nonce"], int(params["nc"], 16), time.monotonic()):
            return self.challenge(stale=True)
        request.user = user
        headers = request.headers
        if self.header_field:
            headers.set_trusted(self.header_field, user.encode("utf-8"))
        if self.remove_header:
            headers.remove(_AUTHORIZATION)
        return None

    @staticmethod
    def well_formed(request: Request, params: Mapping[str, str]) -> bool:
        if any(name not in params for name in _REQUIRED):
            return False
        if params.get("algorithm", "MD5").upper() != "MD5" or params["qop"].lower() != "auth":
            return False
        nc = params["nc"]
        if len(nc) != 8 or not all(c in "0123456789abcdefABCDEF" for c in nc):
            return False
        uri = params["uri"]
        return uri == request.target or (uri == request.raw_path and "?" not in uri)

    def challenge(self, *, stale: bool) -> Response:
        nonce = self.nonces.issue(time.monotonic())
        text = f'Digest realm={self.realm}, nonce="{nonce}", algorithm=MD5, qop="auth"'
        return unauthorized((text + ", stale=true" if stale else text).encode("latin-1"))


class DigestAuth:
    key = "digestAuth"
    options = DigestAuthOptions

    def build(self, options: DigestAuthOptions, next: Handler, context: BuildContext) -> Filter:
        check_common(options.realm, options.header_field)
        entries = parse_htdigest(user_lines(options.users, options.users_file))
        challenged = realm_of(options.realm)
        users = {user: ha1 for (user, realm), ha1 in entries.items() if realm == challenged}
        if not users:
            raise ValueError(f"users: no user is defined for realm {challenged!r}")
        others = sorted({user for user, realm in entries if realm != challenged} - set(users))
        if others:
            # Traefik keeps them too; they can never log in, since only realm is challenged.
            log.warning(
                "middleware %s: users %s are for another realm than %r and cannot log in",
                context.name,
                ", ".join(others),
                challenged,
            )
        return _DigestAuthFilter(options, users)
