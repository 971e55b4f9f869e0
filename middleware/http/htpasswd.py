"""User lists for basicAuth and digestAuth: htpasswd and htdigest lines, and password hashes.

Sans-IO: callers read ``usersFile`` themselves and hand its text in. Both
middlewares merge their ``users`` option with the file as Traefik does (file
lines come last, so a user defined in both takes the file's entry); blank
lines and ``#`` comments in the file are skipped. Every malformed entry is a
``ValueError`` naming the option and the entry's index or line number, and so
is a hash in a format this module cannot verify: it is refused at load rather
than failing every login later.

Verifiable formats (those of Traefik's go-http-auth, plus ``$1$`` because it
is the same algorithm as apr1 with another magic string):

- bcrypt, ``$2a$``, ``$2b$``, ``$2y$`` (and ``$2x$``, treated as ``$2b$`` as
  go-http-auth does): slow on purpose; ``PasswordHash.slow`` says so.
- MD5-crypt, ``$apr1$`` (Apache) and ``$1$`` (FreeBSD/glibc).
- ``{SHA}`` + base64 of the SHA-1 digest.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import Enum

import bcrypt


class Scheme(Enum):
    BCRYPT = "bcrypt"
    MD5_CRYPT = "md5-crypt"
    SHA1 = "sha1"


SUPPORTED = "bcrypt ($2y$, $2b$, $2a$), MD5-crypt ($apr1$, $1$) or SHA-1 ({SHA})"

_BCRYPT = re.compile(r"\$2[abxy]\$(\d\d)\$[./A-Za-z0-9]{53}")
_MD5_CRYPT = re.compile(r"\$(apr1|1)\$([^$]{0,8})\$[./A-Za-z0-9]{22}")
_DES_CRYPT = re.compile(r"[./A-Za-z0-9]{13}")
_HEX32 = re.compile(r"[0-9a-fA-F]{32}")

# Formats people do paste into htpasswd files, with the reason they are refused.
_UNSUPPORTED: tuple[tuple[str, str], ...] = (
    ("$5$", "SHA-256-crypt ($5$) is not supported"),
    ("$6$", "SHA-512-crypt ($6$) is not supported"),
    ("$argon2", "argon2 is not supported"),
    ("$y$", "yescrypt ($y$) is not supported"),
    ("{SSHA}", "salted SHA-1 ({SSHA}) is not supported"),
)

# bcrypt reads only the first 72 bytes of a password; Apache and Go compare
# longer ones by that prefix, while the bcrypt package refuses them outright.
_BCRYPT_MAX = 72


@dataclass(frozen=True, slots=True)
class PasswordHash:
    """One user's stored hash, checked for shape when parsed."""

    scheme: Scheme
    text: str

    @property
    def slow(self) -> bool:
        """Whether verifying costs enough (bcrypt) that it must not run on the event loop."""
        return self.scheme is Scheme.BCRYPT

    def verify(self, password: bytes) -> bool:
        """Whether ``password`` hashes to this hash (constant-time comparison)."""
        if self.scheme is Scheme.BCRYPT:
            stored = self.text.encode("ascii")
            if stored.startswith(b"$2x$"):
                stored = b"$2b$" + stored[4:]
            return bcrypt.checkpw(password[:_BCRYPT_MAX], stored)
        if self.scheme is Scheme.MD5_CRYPT:
            _, magic, salt, _ = self.text.split("$", 3)
            computed = md5_crypt(password, salt.encode("ascii"), f"${magic}$".encode("ascii"))
            return hmac.compare_digest(computed, self.text.encode("ascii"))
        digest = base64.b64encode(hashlib.sha1(password).digest())
        return hmac.compare_digest(b"{SHA}" + digest, self.text.encode("ascii"))


def parse_hash(text: str) -> PasswordHash:
    """A stored hash, or ``ValueError`` saying why it cannot be verified."""
    if _BCRYPT.fullmatch(text):
        cost = int(text[4:6])
        if not 4 <= cost <= 31:
            raise ValueError(f"bcrypt cost {cost} is outside 4..31")
        return PasswordHash(Scheme.BCRYPT, text)
    if text.startswith("$2"):
        raise ValueError("malformed bcrypt hash")
    if _MD5_CRYPT.fullmatch(text):
        return PasswordHash(Scheme.MD5_CRYPT, text)
    if text.startswith(("$apr1$", "$1$")):
        raise ValueError("malformed MD5-crypt hash")
    if text.startswith("{SHA}"):
        try:
            raw = base64.b64decode(text[5:], validate=True)
        except binascii.Error:
            raw = b""
        if len(raw) != 20:
            raise ValueError("malformed {SHA} hash: expected base64 of 20 bytes")
        return PasswordHash(Scheme.SHA1, text)
    for prefix, reason in _UNSUPPORTED:
        if text.startswith(prefix):
            raise ValueError(f"{reason}; use {SUPPORTED}")
    if _DES_CRYPT.fullmatch(text):
        raise ValueError(f"traditional DES crypt is not supported; use {SUPPORTED}")
    raise ValueError(
        f"not a recognised hash (plain-text passwords are not accepted); use {SUPPORTED}"
    )


# -- MD5-crypt -----------------------------------------------------------------

_ITOA64 = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# Byte triples of the final digest, in the order MD5-crypt's encoding takes them.
_MD5_ORDER = ((0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5))


def md5_crypt(password: bytes, salt: bytes, magic: bytes = b"$apr1$") -> bytes:
    """Poul-Henning Kamp's MD5-crypt, as Apache's apr1 and glibc's ``$1$`` define it.

    Returns ``magic + salt + "$" + 22 characters``; ``salt`` is cut to 8 bytes.
    """
    salt = salt[:8]
    alternate = hashlib.md5(password + salt + password).digest()
    ctx = hashlib.md5(password + magic + salt)
    n = len(password)
    while n > 0:
        ctx.update(alternate[: min(16, n)])
        n -= 16
    n = len(password)
    while n:
        # The original reads a zeroed buffer here, hence NUL rather than alternate[0].
        ctx.update(b"\x00" if n & 1 else password[:1])
        n >>= 1
    final = ctx.digest()
    # 1000 rounds were meant to slow down brute force (in 1994).
    for i in range(1000):
        step = hashlib.md5(password if i & 1 else final)
        if i % 3:
            step.update(salt)
        if i % 7:
            step.update(password)
        step.update(final if i & 1 else password)
        final = step.digest()
    out = bytearray()
    for a, b, c in _MD5_ORDER:
        out += _to64((final[a] << 16) | (final[b] << 8) | final[c], 4)
    out += _to64(final[11], 2)
    return magic + salt + b"$" + bytes(out)


def _to64(value: int, count: int) -> bytes:
    out = bytearray()
    for _ in range(count):
        out.append(_ITOA64[value & 0x3F])
        value >>= 6
    return bytes(out)


# -- user lists ------------------------------------------------------------------


def user_entries(
    users: Sequence[str], users_file: str = "", file_text: str | None = None
) -> Iterator[tuple[str, str]]:
    """``(where, entry)`` for each entry of ``users`` then each line of the file.

    ``where`` names the entry for error messages (``users[0]``,
    ``usersFile /etc/x line 3``). File lines are stripped; blank lines and
    ``#`` comments are skipped, as Traefik does.
    """
    for i, entry in enumerate(users):
        yield f"users[{i}]", entry.strip()
    if file_text is None:
        return
    for number, line in enumerate(file_text.splitlines(), start=1):
        line = line.strip()
        if line and not line.startswith("#"):
            yield f"usersFile {users_file} line {number}", line


def parse_htpasswd(entries: Iterator[tuple[str, str]]) -> dict[str, PasswordHash]:
    """Users by name from ``user:hash`` entries; a later entry for a user wins."""
    users: dict[str, PasswordHash] = {}
    for where, entry in entries:
        parts = entry.split(":")
        if len(parts) != 2 or not parts[0] or not parts[1]:
            raise ValueError(f"{where}: expected user:hash, got {_show(entry)}")
        try:
            users[parts[0]] = parse_hash(parts[1])
        except ValueError as exc:
            raise ValueError(f"{where}: user {parts[0]!r}: {exc}") from None
    return users


def parse_htdigest(entries: Iterator[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """HA1 (lower-case hex) by ``(user, realm)`` from ``user:realm:HA1`` entries."""
    users: dict[tuple[str, str], str] = {}
    for where, entry in entries:
        parts = entry.split(":")
        if len(parts) != 3 or not parts[0]:
            raise ValueError(f"{where}: expected user:realm:HA1, got {_show(entry)}")
        user, realm, ha1 = parts
        if not _HEX32.fullmatch(ha1):
            raise ValueError(
                f"{where}: user {user!r}: HA1 must be 32 hex digits (MD5 of user:realm:password)"
            )
        users[(user, realm)] = ha1.lower()
    return users


def _show(entry: str) -> str:
    """The entry for an error message, without the secret part."""
    user, sep, _ = entry.partition(":")
    return repr(f"{user}:...") if sep else "an entry without ':'"
