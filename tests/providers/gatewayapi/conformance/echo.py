"""An echo backend that answers like the conformance suite's echo-basic server.

Every request gets 200 and a JSON body describing it as received: ``path``
(the request target, query included), ``host``, ``method``, ``proto``,
``headers`` (canonical name -> list of values, as Go's ``http.Header``),
``namespace`` and ``pod``. The suite identifies the backend that served a
request by ``pod`` (its Service name is the prefix) and compares the request
it saw against the expectation; this does the same over a real socket on
127.0.0.1. Requests are also kept in ``requests`` and queued on ``arrivals``
(mirror checks wait on it), and ``?delay=1s``/``500ms`` delays the answer as
echo-basic does (timeout checks).
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field

from tests.backends import RecordingBackend, Seen


def canonical(name: str) -> str:
    """Go's CanonicalMIMEHeaderKey: ``x-foo-bar`` -> ``X-Foo-Bar``."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


@dataclass
class EchoBackend:
    """One echo "pod" of a Service; ``pod`` is reported in every answer."""

    namespace: str
    pod: str
    backend: RecordingBackend | None = None
    # every request as it arrives, for mirror checks (the suite reads pod logs instead)
    arrivals: asyncio.Queue[Seen] = field(default_factory=asyncio.Queue)

    async def start(self) -> EchoBackend:
        self.backend = await RecordingBackend(responder=self._answer).start()
        return self

    @property
    def port(self) -> int:
        assert self.backend is not None
        return self.backend.port

    @property
    def requests(self) -> list[Seen]:
        assert self.backend is not None
        return self.backend.requests

    def _answer(self, seen: Seen) -> bytes | asyncio.Future[bytes]:
        self.arrivals.put_nowait(seen)
        # echo-basic's ?delay=<Go duration> (only the forms the suite uses: 1s, 500ms)
        delay = re.search(r"[?&]delay=(\d+)(ms|s)\b", seen.target)
        if delay is None:
            return self._reply(seen)
        seconds = int(delay.group(1)) / (1000 if delay.group(2) == "ms" else 1)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(seconds, self._settle, future, seen)
        return future

    def _settle(self, future: asyncio.Future[bytes], seen: Seen) -> None:
        if not future.done():
            future.set_result(self._reply(seen))

    def _reply(self, seen: Seen) -> bytes:
        headers: dict[str, list[str]] = {}
        host = ""
        for name, value in seen.headers:
            if name.lower() == "host":
                host = value
                continue
            headers.setdefault(canonical(name), []).append(value)
        body = json.dumps(
            {
                "path": seen.target,
                "host": host,
                "method": seen.method,
                "proto": "HTTP/1.1",
                "headers": headers,
                "namespace": self.namespace,
                "pod": self.pod,
            }
        ).encode()
        return (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"X-Content-Type-Options: nosniff\r\nContent-Length: %d\r\n\r\n%s"
            % (len(body), body)
        )

    async def close(self) -> None:
        if self.backend is not None:
            await self.backend.close()
