"""The types a middleware sees: the request view, the response, the handler.

A middleware is built once per configuration from its validated options and
returns a ``Handler``; the handler is called per request and must keep no
per-request state on itself. The request view is a thin wrapper over the
bytes the HTTP parser produced: header names and values stay ``bytes``
inside, and are decoded (latin-1, as RFC 9110 section 5.5 allows) only when a
middleware asks for them, so requests that pass through no middleware pay
nothing for this API.

A handler either answers itself (``Response(status=401, ...)``) or awaits
``next(request)``; the proxy's terminal handler returns the upstream
response head with ``streamed=True``, and its body is relayed afterwards
without passing through Python handlers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import ClassVar, Protocol, TypeVar


def _b(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("latin-1")


class Headers:
    """An ordered, case-insensitive, multi-valued header list over raw bytes."""

    __slots__ = ("raw",)

    def __init__(self, raw: list[tuple[bytes, bytes]] | None = None) -> None:
        self.raw: list[tuple[bytes, bytes]] = raw if raw is not None else []

    def get(self, name: str | bytes, default: str | None = None) -> str | None:
        """The first value of ``name``, decoded, or ``default``."""
        key = _b(name).lower()
        for k, v in self.raw:
            if k.lower() == key:
                return v.decode("latin-1")
        return default

    def get_all(self, name: str | bytes) -> list[str]:
        """Every value of ``name`` in order."""
        key = _b(name).lower()
        return [v.decode("latin-1") for k, v in self.raw if k.lower() == key]

    def set(self, name: str | bytes, value: str | bytes) -> None:
        """Replace every value of ``name`` with one value."""
        self.remove(name)
        self.raw.append((_b(name), _b(value)))

    def add(self, name: str | bytes, value: str | bytes) -> None:
        """Append one more value of ``name``."""
        self.raw.append((_b(name), _b(value)))

    def remove(self, name: str | bytes) -> None:
        """Drop every value of ``name``."""
        key = _b(name).lower()
        self.raw[:] = [(k, v) for k, v in self.raw if k.lower() != key]

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, (str, bytes)):
            return False
        key = _b(name).lower()
        return any(k.lower() == key for k, _ in self.raw)

    def items(self) -> Iterator[tuple[str, str]]:
        for k, v in self.raw:
            yield k.decode("latin-1"), v.decode("latin-1")

    def __len__(self) -> int:
        return len(self.raw)

    def __repr__(self) -> str:
        return f"Headers({list(self.items())!r})"


class Request:
    """One HTTP request as routing and middleware see it.

    ``path`` is the decoded-for-matching path (no query); ``raw_path`` is the
    request target's path as sent, which is what is forwarded unless a
    middleware rewrites it (setting ``path`` through ``set_path``).
    """

    __slots__ = (
        "method",
        "raw_path",
        "path",
        "query",
        "headers",
        "host",
        "client_ip",
        "client_port",
        "scheme",
        "sni",
        "entry_point",
        "router",
        "http_version",
    )

    def __init__(
        self,
        *,
        method: str,
        raw_path: str,
        query: str,
        headers: Headers,
        host: str,
        client_ip: str,
        client_port: int = 0,
        scheme: str = "http",
        sni: str | None = None,
        entry_point: str = "",
        http_version: str = "1.1",
        path: str | None = None,
    ) -> None:
        self.method = method
        self.raw_path = raw_path
        self.path = raw_path if path is None else path
        self.query = query
        self.headers = headers
        self.host = host
        self.client_ip = client_ip
        self.client_port = client_port
        self.scheme = scheme
        self.sni = sni
        self.entry_point = entry_point
        self.router = ""
        self.http_version = http_version

    def set_path(self, path: str) -> None:
        """Rewrite the path that is forwarded (stripPrefix, replacePath, ...)."""
        self.path = path
        self.raw_path = path

    @property
    def target(self) -> str:
        """The request target forwarded upstream: path and query."""
        return f"{self.raw_path}?{self.query}" if self.query else self.raw_path


class Response:
    """A response head, plus a body when a handler generated the response.

    ``streamed`` responses come from the upstream; their body is relayed by
    the proxy after the head has passed back through the chain.
    """

    __slots__ = ("status", "reason", "headers", "body", "streamed")

    def __init__(
        self,
        status: int = 200,
        *,
        headers: Headers | None = None,
        body: bytes = b"",
        reason: str = "",
        streamed: bool = False,
    ) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers if headers is not None else Headers()
        self.body = body
        self.streamed = streamed


Handler = Callable[[Request], Awaitable[Response]]

O_contra = TypeVar("O_contra", contravariant=True)


class MiddlewareType(Protocol[O_contra]):
    """Builds a configured middleware; ``build`` runs once per configuration."""

    key: ClassVar[str]

    def build(self, options: O_contra, next: Handler) -> Handler: ...
