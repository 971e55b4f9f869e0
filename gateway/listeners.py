"""One TCP entry point's listening socket, and which acceptor serves it.

An entry point's socket is bound once and stays open for the life of the
process; acceptors work on duplicates of it (``dup``), so switching how an
entry point accepts never closes the port, and a connection arriving during
a switch waits in the kernel's backlog instead of being refused.

Three acceptors (``Mode``):

* ``http``: the ``EntryPointRuntime``'s own asyncio server (uvloop accepts in
  C), with the entry point's TLS context when its routers use TLS. Used when
  the entry point has no TCP router and takes no PROXY protocol: the common
  case costs nothing extra.
* ``direct``: an asyncio server whose protocol routes each connection to a
  TCP router in ``connection_made`` (``TCPEntry.direct``): plain TCP routers
  only, nothing to peek at.
* ``l4``: a ``TCPEntry`` accepting itself, so it can read the PROXY header
  and peek at the ClientHello before any transport exists; it relays to a
  TCP router or hands the connection to the same ``EntryPointRuntime``
  (``adopt``).

``update`` moves between them as the configuration changes; connections
accepted before a switch carry on where they are.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from typing import Literal

from gateway.http.entrypoint import EntryPointRuntime
from gateway.l4.tcp_entry import TCPEntry

Mode = Literal["http", "direct", "l4"]


class TCPListener:
    """A bound TCP entry point: its socket, its HTTP runtime and its TCP entry."""

    def __init__(self, sock: socket.socket, http: EntryPointRuntime, tcp: TCPEntry) -> None:
        self.sock = sock
        self.http = http
        self.tcp = tcp
        self.mode: Mode = "http"
        self._direct: asyncio.Server | None = None
        http.listen_socket = sock
        # Reloads in quick succession must not switch the same listener at once.
        self._switching = asyncio.Lock()

    @property
    def l4(self) -> bool:
        """Whether TCP routers take this entry point's connections."""
        return self.mode != "http"

    async def start(self, mode: Mode) -> None:
        self.mode = mode
        if mode == "http":
            await self.http.start(self.sock.dup())
        else:
            await self._start_tcp(mode)

    async def update(self, mode: Mode, ssl_context: ssl.SSLContext | None) -> bool:
        """Serve with acceptor ``mode`` and TLS ``ssl_context``; True if anything changed."""
        async with self._switching:
            return await self._update(mode, ssl_context)

    async def _update(self, mode: Mode, ssl_context: ssl.SSLContext | None) -> bool:
        http = self.http
        tls_changed = (ssl_context is None) != (http.ssl_context is None)
        if mode == self.mode and not tls_changed:
            return False
        if mode != "http" and self.mode != "http":
            _set_tls(http, ssl_context)
            if mode != self.mode:
                self._stop_tcp()
                await self._start_tcp(mode)
        elif self.mode != "http":
            self._stop_tcp()
            await http.reopen(self.sock.dup(), ssl_context)
        elif mode != "http":
            http.stop_accepting()
            _set_tls(http, ssl_context)
            await self._start_tcp(mode)
        else:
            http.stop_accepting()
            await http.reopen(self.sock.dup(), ssl_context)
        self.mode = mode
        return True

    async def _start_tcp(self, mode: Mode) -> None:
        self.http.start_sweeper()
        if mode == "direct":
            loop = asyncio.get_running_loop()
            self._direct = await loop.create_server(
                self.tcp.direct, sock=self.sock.dup(), backlog=1024
            )
        else:
            self.tcp.start(self.sock.dup())

    def _stop_tcp(self) -> None:
        self.tcp.stop_accepting()
        if self._direct is not None:
            self._direct.close()
            self._direct = None

    async def drain(self, grace: float) -> None:
        """Stop accepting, let both acceptors' connections finish for ``grace`` seconds."""
        self._stop_tcp()
        self.http.stop_accepting()
        # Closing the last descriptor closes the port: new connections are refused.
        self.sock.close()
        plain = self.tcp.plain_http
        await asyncio.gather(
            self.http.drain(grace),
            self.tcp.drain(grace),
            *([plain.drain(grace)] if plain is not None else []),
        )


def _set_tls(http: EntryPointRuntime, ssl_context: ssl.SSLContext | None) -> None:
    http.ssl_context = ssl_context
    http.settings.scheme = b"https" if ssl_context is not None else b"http"
