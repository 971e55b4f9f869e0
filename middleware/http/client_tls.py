"""A middleware's client TLS options as an ``ssl.SSLContext``, as Traefik's ClientTLS.

Owns the ``tls`` option block of middlewares that call out (``forwardAuth``):
``ca``, ``cert`` and ``key``, each a file path or PEM text, and
``insecureSkipVerify``.

Invariants:

* Without ``ca`` the system bundle verifies the server, as in Traefik.
* ``cert`` and ``key`` come together or not at all.
* Whatever cannot be loaded raises ``ValueError`` naming the ``tls.*`` key
  and the path (never the PEM text itself), so the configuration is refused
  at load time.
* PEM key material written out for ``ssl`` lives in a private (0600) file in
  a temporary directory removed once the context holds it.
"""

from __future__ import annotations

import os
import ssl
import tempfile


def client_context(*, ca: str, cert: str, key: str, insecure_skip_verify: bool) -> ssl.SSLContext:
    """The context for ``tls``: ``ca``, ``cert`` and ``key`` are paths or PEM text."""
    if bool(cert) != bool(key):
        raise ValueError("tls: both cert and key must be set")
    try:
        if not ca:
            context = ssl.create_default_context()  # the system bundle, as in Traefik
        elif _is_pem(ca):
            context = ssl.create_default_context(cadata=ca)
        else:
            context = ssl.create_default_context(cafile=ca)
    except (OSError, ValueError) as exc:
        raise ValueError(f"tls.ca: cannot load {_shown(ca)}: {_reason(exc)}") from None
    if insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cert:
        # ssl loads key pairs from files only: PEM text is spilled to a private
        # directory for the duration of the load.
        with tempfile.TemporaryDirectory() as tmp:
            paths = []
            for name, value in (("cert.pem", cert), ("key.pem", key)):
                if _is_pem(value):
                    path = os.path.join(tmp, name)
                    with open(path, "w", opener=lambda p, fl: os.open(p, fl, 0o600)) as f:
                        f.write(value)
                    value = path
                paths.append(value)
            try:
                context.load_cert_chain(paths[0], paths[1])
            except OSError as exc:
                where = f"{_shown(cert)} and {_shown(key)}"
                raise ValueError(f"tls.cert/tls.key: cannot load {where}: {_reason(exc)}") from None
    return context


def _is_pem(value: str) -> bool:
    return "-----BEGIN" in value


def _shown(value: str) -> str:
    return "PEM text" if _is_pem(value) else repr(value)


def _reason(exc: Exception) -> str:
    return (exc.strerror if isinstance(exc, OSError) else None) or str(exc)
