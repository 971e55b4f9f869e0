"""``basicAuth``: admit requests carrying ``Authorization: Basic`` credentials of a known user.

Traefik v3 semantics: ``users`` and ``usersFile`` (htpasswd lines, merged,
the file winning) name who may pass; anything else gets 401 with
``WWW-Authenticate: Basic realm="<realm>"``. On success ``headerField``
(when set) carries the user name to the backend, replacing any value the
client sent, and ``removeHeader`` drops ``Authorization`` before forwarding.

Speed: the filter remembers verdicts by the exact ``Authorization`` value,
so a repeat client costs one dict lookup. Only a miss verifies a hash.
bcrypt (about 100 ms by design) then runs in a worker thread (the bcrypt
package releases the GIL) and the request alone waits, in a task; concurrent
misses on the same value share one verification. Failures are remembered in a
separate table, so a flood of wrong guesses neither repeats bcrypt for the
same value nor pushes good clients out of the success table. MD5-crypt and
SHA-1 verify inline: MD5-crypt takes about 0.5 ms of pure-Python work, which
would hold the GIL in a thread as well.

The helpers both auth middlewares share (reading ``users``/``usersFile``,
option checks, the 401 answer) live here; ``digest_auth`` imports them.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import re
from collections.abc import Coroutine, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from gateway.config.model import model
from middleware.contract import BuildContext, Filter, Handler, Headers, Request, Response
from middleware.http.htpasswd import PasswordHash, parse_htpasswd, user_entries

DEFAULT_REALM = "traefik"
# Entries per verdict table; a full table forgets its oldest entry.
CACHE_SIZE = 1024

_AUTHORIZATION = b"authorization"
_BASIC = b"basic "
# RFC 9110 section 5.6.2 token: what a header name may be made of.
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


@model
class BasicAuthOptions:
    users: tuple[str, ...] = ()
    users_file: str = ""
    realm: str = DEFAULT_REALM
    header_field: str = ""
    remove_header: bool = False


def check_common(realm: str, header_field: str) -> None:
    """Refuse a realm or headerField that cannot go into a header as given."""
    if not realm.isprintable() or not realm.isascii():
        raise ValueError(f"realm: {realm!r} must be printable ASCII")
    if header_field and not _TOKEN.fullmatch(header_field):
        raise ValueError(f"headerField: {header_field!r} is not a valid header name")


def realm_of(configured: str) -> str:
    """Traefik falls back to its default realm for an empty one."""
    return configured or DEFAULT_REALM


def quoted(value: str) -> str:
    """``value`` as an RFC 9110 quoted-string."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def authorization(headers: Headers) -> bytes | None:
    """The first ``Authorization`` value, raw."""
    for name, value in headers.raw:
        if len(name) == 13 and name.lower() == _AUTHORIZATION:
            return value
    return None


def unauthorized(challenge: bytes) -> Response:
    """A fresh 401 (outer filters may edit it, so it is never shared)."""
    return Response(
        401,
        headers=Headers(
            [
                (b"WWW-Authenticate", challenge),
                (b"Content-Type", b"text/plain; charset=utf-8"),
            ]
        ),
        body=b"401 Unauthorized\n",
    )


def read_users_file(path: str) -> str:
    """The file's text; ``OSError`` names the option (the chain compiler reports it)."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"usersFile {path}: not UTF-8 text: {exc.reason}") from None
    except OSError as exc:
        raise OSError(f"usersFile {path}: {exc.strerror or exc}") from None


def basic_credentials(value: bytes) -> tuple[str, bytes] | None:
    """``(user, password)`` from a ``Basic`` Authorization value, or None if malformed."""
    if value[:6].lower() != _BASIC:
        return None
    try:
        decoded = base64.b64decode(value[6:].strip(), validate=True)
        user, sep, password = decoded.partition(b":")
        if not sep:
            return None
        # RFC 7617 section 2.1: UTF-8 is the only charset a server may announce.
        return user.decode("utf-8"), password
    except (binascii.Error, UnicodeDecodeError):
        return None


# Slow hashes (bcrypt) are checked on threads of their own, never the loop's
# default executor, which also resolves host names for the whole gateway; and
# at most this many checks are queued at once, across every basicAuth.
MAX_VERIFYING = 64
_VERIFYING: set[asyncio.Future[bool]] = set()
_HASHER: ThreadPoolExecutor | None = None


def _hasher() -> ThreadPoolExecutor:
    global _HASHER
    if _HASHER is None:
        _HASHER = ThreadPoolExecutor(max_workers=2, thread_name_prefix="sluice-bcrypt")
    return _HASHER


class _BasicAuthFilter(Filter):
    __slots__ = ("users", "challenge", "header_field", "remove_header", "ok", "bad", "pending")

    def __init__(self, options: BasicAuthOptions, users: dict[str, PasswordHash]) -> None:
        self.users = users
        self.challenge = f"Basic realm={quoted(realm_of(options.realm))}".encode("ascii")
        self.header_field = options.header_field
        self.remove_header = options.remove_header
        # Authorization value -> user name as the client sent it (UTF-8 bytes).
        self.ok: dict[bytes, bytes] = {}
        # Authorization values known to be wrong (values only; dicts keep order).
        self.bad: dict[bytes, None] = {}
        self.pending: dict[bytes, asyncio.Future[bool]] = {}

    def request(self, request: Request) -> Response | Coroutine[Any, Any, Response | None] | None:
        value = authorization(request.headers)
        if value is None:
            return unauthorized(self.challenge)
        user = self.ok.get(value)
        if user is not None:
            self.admit(request, user)
            return None
        if value in self.bad:
            return unauthorized(self.challenge)
        credentials = basic_credentials(value)
        if credentials is None:
            return unauthorized(self.challenge)
        name, password = credentials
        stored = self.users.get(name)
        if stored is None:
            # Cheap to decide again, so not worth a slot that a costly verdict could use.
            return unauthorized(self.challenge)
        if stored.slow:
            return self.verify_off_loop(request, value, name, stored, password)
        return self.settle(request, value, name, stored.verify(password))

    def settle(self, request: Request, value: bytes, name: str, ok: bool) -> Response | None:
        self.record(value, name, ok)
        if ok:
            self.admit(request, name.encode("utf-8"))
            return None
        return unauthorized(self.challenge)

    def record(self, value: bytes, name: str, ok: bool) -> None:
        if ok:
            _remember(self.ok, value, name.encode("utf-8"))
        else:
            _remember(self.bad, value, None)

    async def verify_off_loop(
        self, request: Request, value: bytes, name: str, stored: PasswordHash, password: bytes
    ) -> Response | None:
        running = self.pending.get(value)
        if running is None:
            # Settled by another request between this one's miss and now?
            user = self.ok.get(value)
            if user is not None:
                self.admit(request, user)
                return None
            if value in self.bad:
                return unauthorized(self.challenge)
            if len(_VERIFYING) >= MAX_VERIFYING:
                # A flood of distinct passwords: refuse rather than queue
                # bcrypt work without bound (Retry-After, as rateLimit does).
                return Response(
                    429, headers=Headers([(b"Retry-After", b"1")]), body=b"Too Many Requests"
                )
            running = asyncio.get_running_loop().run_in_executor(
                _hasher(), stored.verify, password
            )
            _VERIFYING.add(running)
            running.add_done_callback(_VERIFYING.discard)
            self.pending[value] = running
            running.add_done_callback(functools.partial(self.verified, value, name))
        # Shielded: a client that goes away must not cancel a verdict others wait for.
        if await asyncio.shield(running):
            self.admit(request, name.encode("utf-8"))
            return None
        return unauthorized(self.challenge)

    def verified(self, value: bytes, name: str, running: asyncio.Future[bool]) -> None:
        # Recorded here, not by a waiter, so the verdict is kept even if every waiter left.
        del self.pending[value]
        if not running.cancelled() and running.exception() is None:
            self.record(value, name, running.result())

    def admit(self, request: Request, user: bytes) -> None:
        request.user = user.decode("utf-8", "replace")
        headers = request.headers
        if self.header_field:
            headers.set_trusted(self.header_field, user)
        if self.remove_header:
            headers.remove(_AUTHORIZATION)


def _remember(table: dict[bytes, Any], value: bytes, verdict: Any) -> None:
    if len(table) >= CACHE_SIZE:
        del table[next(iter(table))]
    table[value] = verdict


def user_lines(users: Sequence[str], users_file: str) -> Iterator[tuple[str, str]]:
    """The merged ``users`` and ``usersFile`` entries; an error if neither is given."""
    if not users and not users_file:
        raise ValueError("users: give users or usersFile (or both)")
    text = read_users_file(users_file) if users_file else None
    return user_entries(users, users_file, text)


class BasicAuth:
    key = "basicAuth"
    options = BasicAuthOptions

    def build(self, options: BasicAuthOptions, next: Handler, context: BuildContext) -> Filter:
        check_common(options.realm, options.header_field)
        users = parse_htpasswd(user_lines(options.users, options.users_file))
        if not users:
            # A middleware nobody can pass is almost surely a mistake (an empty file).
            raise ValueError("users: no users defined")
        return _BasicAuthFilter(options, users)
