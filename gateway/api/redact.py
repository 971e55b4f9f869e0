"""Redaction of secrets in configuration data before the API serialises it.

The API shows configuration as the providers gave it, and some middleware
options hold credentials. Traefik's own options decide the list:
``basicAuth.users`` and ``digestAuth.users`` (htpasswd lines),
``forwardAuth.tls.key``, plugin settings such as ``clientSecret``, ``apiKey``
or ``token``, JWT ``secret``/``signingSecret``/``keys``, and header values
such as ``Authorization`` in ``headers.customRequestHeaders`` or a health
check's ``headers``.

Invariants:

* The output is plain JSON data (dicts, lists, scalars); the input may use
  read-only mappings and tuples, as the configuration model does.
* A value under a secret-named key is replaced by ``"REDACTED"`` however deep;
  lists and mappings keep their shape so the dashboard can still count items.
  Empty values, ``None`` and booleans stay, since "no secret set" is useful to
  see and reveals nothing.
* Private key material (PEM) and htpasswd lines are redacted wherever they
  appear, whatever the key: Traefik accepts inline PEM in ``keyFile``.
* File paths (``usersFile``, ``keyFile`` naming a path) are shown: they are
  not secrets and help diagnose a missing file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

REDACTED = "REDACTED"

# Compared after lowercasing and dropping "-", "_" and ".", so
# "signing_secret", "signingSecret" and "Signing-Secret" are one name.
SECRET_KEYS = frozenset(
    {
        "users",  # basicAuth / digestAuth htpasswd lines
        "key",  # forwardAuth.tls.key, client TLS keys
        "keys",  # JWT verification keys / JWKS
        "secret",
        "password",
        "passwd",
        "token",
        "signingsecret",
        "privatekey",
        "htpasswd",
        "authorization",  # header values: customRequestHeaders, healthCheck.headers
        "proxyauthorization",
        "credentials",
    }
)
SECRET_SUFFIXES = (
    "secret",  # clientSecret, jwtSecret
    "password",
    "passwd",
    "passphrase",
    "token",  # accessToken, bearerToken
    "apikey",  # apiKey, X-Api-Key
    "privatekey",
    "credentials",
)

_PEM_PRIVATE = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")
# user:hash with the hash schemes htpasswd(1) and htdigest write:
# $apr1$ (MD5), $2y$ (bcrypt), {SHA}, $5$/$6$ (crypt SHA-256/512), realm:md5hex.
_HTPASSWD = re.compile(
    r"^[^:\s]+:(?:\$apr1\$|\$2[abxy]\$|\{SHA\}|\$[156]\$|[^:]+:[0-9a-fA-F]{32}$)"
)


def _normal(key: str) -> str:
    return key.lower().replace("-", "").replace("_", "").replace(".", "")


def is_secret_key(key: str) -> bool:
    """Whether values under ``key`` are secrets."""
    name = _normal(key)
    return name in SECRET_KEYS or name.endswith(SECRET_SUFFIXES)


def _is_secret_value(value: str) -> bool:
    return bool(_PEM_PRIVATE.search(value) or _HTPASSWD.match(value))


def redact(obj: Any) -> Any:
    """A JSON-ready copy of ``obj`` with every secret replaced by ``"REDACTED"``."""
    return _walk(obj, hide=False)


def _walk(obj: Any, *, hide: bool) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _walk(v, hide=hide or is_secret_key(str(k))) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_walk(item, hide=hide) for item in obj]
    if obj is None or isinstance(obj, bool):
        return obj
    if isinstance(obj, str):
        if hide:
            return REDACTED if obj else obj
        return REDACTED if _is_secret_value(obj) else obj
    if isinstance(obj, (int, float)):
        return REDACTED if hide else obj
    # Anything else (an Origin, a set) is shown as text, and still checked.
    return _walk(str(obj), hide=hide)
