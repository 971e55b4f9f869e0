"""One TCP entry point's listening socket, and which acceptor serves it.

An entry point's socket is bound once and stays open for the life of the
process; acceptors work on duplicates of it (``dup``), so switching how an
entry point accepts never closes the port, and a connection arriving during
a switch waits in the kernel's backlog instead of being refused.

Two acceptors:

* HTTP: the ``EntryPointRuntime``'s own asyncio server (uvloop accepts in C),
  with the entry point's TLS context when its routers use TLS. Used when the
  entry point has no TCP router and takes no PROXY protocol: the common case
  costs nothing extra.
* L4: a ``TCPEntry``, which peeks at each connection and relays it to a TCP
  router or hands it to the same ``EntryPointRuntime`` (``adopt``).

``update`` moves between them as the configuration changes; connections
accepted before a switch carry on where they are.
"""

from __future__ import annotations

import asyncio
import socket
import ssl

from gateway.http.entrypoint import EntryPointRuntime
from gateway.l4.tcp_entry import TCPEntry


class TCPListener:
    """A bound TCP entry point: its socket, its HTTP runtime and its TCP entry."""

    def __init__(self, sock: socket.socket, http: EntryPointRuntime, tcp: TCPEntry) -> None:
        self.sock = sock
        self.http = http
        self.tcp = tcp
        self.l4 = False
        http.listen_socket = sock
        # Reloads in quick succession must not switch the same listener at once.
        self._switching = asyncio.Lock()

    async def start(self, *, l4: bool) -> None:
        self.l4 = l4
        if l4:
            self.http.start_sweeper()
            self.tcp.start(self.sock.dup())
        else:
            await self.http.start(self.sock.dup())

    async def update(self, *, l4: bool, ssl_context: ssl.SSLContext | None) -> bool:
        """Serve with acceptor ``l4`` and TLS ``ssl_context``; True if anything changed."""
        async with self._switching:
            return await self._update(l4, ssl_context)

    async def _update(self, l4: bool, ssl_context: ssl.SSLContext | None) -> bool:
        http = self.http
        tls_changed = (ssl_context is None) != (http.ssl_context is None)
        if l4 == self.l4 and not tls_changed:
            return False
        if self.l4 and l4:
            _set_tls(http, ssl_context)
        elif self.l4:
            self.tcp.stop_accepting()
            await http.reopen(self.sock.dup(), ssl_context)
        elif l4:
            http.stop_accepting()
            _set_tls(http, ssl_context)
            http.start_sweeper()
            self.tcp.start(self.sock.dup())
        else:
            http.stop_accepting()
            await http.reopen(self.sock.dup(), ssl_context)
        self.l4 = l4
        return True

    async def drain(self, grace: float) -> None:
        """Stop accepting, let both acceptors' connections finish for ``grace`` seconds."""
        self.tcp.stop_accepting()
        self.http.stop_accepting()
        # Closing the last descriptor closes the port: new connections are refused.
        self.sock.close()
        await asyncio.gather(self.http.drain(grace), self.tcp.drain(grace))


def _set_tls(http: EntryPointRuntime, ssl_context: ssl.SSLContext | None) -> None:
    http.ssl_context = ssl_context
    http.settings.scheme = b"https" if ssl_context is not None else b"http"
