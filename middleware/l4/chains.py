"""Running an ordered list of L4 filters: ``ConnectionChain`` and ``DatagramChain``.

A chain is built once per configuration and distinct middleware list (see
``compiler``) and shared by every connection routed through it.

``ConnectionChain.admit`` asks each filter in order and stops at the first
rejection. The filters before it already counted the connection, so the
chain releases them (innermost first) before returning: the runtime only
ever calls ``release`` for a connection the whole chain admitted, exactly
once. Filters that do not override ``release`` are skipped in both walks.

A filter that raises refuses what it was asked about (fail closed: an
allowlist that crashes must not let everyone in), is logged with its
middleware's name, and its prebuilt ``Rejection`` has reason
``middleware_error``. An exception in ``release`` is logged and the other
filters are still released, so one faulty plugin cannot leak another's count.

``DatagramChain.admit`` is the per-datagram path: a loop over the filters,
with no allocation when every filter admits.
"""

from __future__ import annotations

import logging

from middleware.l4.contract import (
    FAILED,
    ConnectionFilter,
    ConnectionInfo,
    DatagramFilter,
    Rejection,
)

_log = logging.getLogger(__name__)


class ConnectionChain:
    """A router's TCP middlewares, in the order its ``middlewares`` list names them."""

    __slots__ = ("filters", "names", "needs_release", "_releasing", "_failed")

    def __init__(self, filters: tuple[ConnectionFilter, ...], names: tuple[str, ...]) -> None:
        self.filters = filters
        self.names = names
        # Indexes of filters overriding release, innermost first.
        self._releasing = tuple(i for i in reversed(range(len(filters))) if _releases(filters[i]))
        # Whether the runtime must call release at all (it may skip the bookkeeping).
        self.needs_release = bool(self._releasing)
        self._failed = tuple(Rejection(FAILED, name) for name in names)

    def admit(self, info: ConnectionInfo) -> Rejection | None:
        """``None`` when every filter admits; else the first rejection, others released."""
        i = 0
        try:
            for f in self.filters:
                rejection = f.admit(info)
                if rejection is not None:
                    self._release_before(i, info)
                    return rejection
                i += 1
        except Exception:
            _log.exception("tcp middleware %s failed admitting %r", self.names[i], info)
            self._release_before(i, info)
            return self._failed[i]
        return None

    def release(self, info: ConnectionInfo) -> None:
        """The admitted connection ended: release every filter, innermost first."""
        self._release_before(len(self.filters), info)

    def _release_before(self, end: int, info: ConnectionInfo) -> None:
        filters = self.filters
        for i in self._releasing:
            if i < end:
                try:
                    filters[i].release(info)
                except Exception:
                    _log.exception("tcp middleware %s failed releasing %r", self.names[i], info)

    def __repr__(self) -> str:
        return f"ConnectionChain({list(self.names)!r})"


class DatagramChain:
    """A router's UDP middlewares, asked once per datagram."""

    __slots__ = ("filters", "names", "_failed")

    def __init__(self, filters: tuple[DatagramFilter, ...], names: tuple[str, ...]) -> None:
        self.filters = filters
        self.names = names
        self._failed = tuple(Rejection(FAILED, name) for name in names)

    def admit(self, info: ConnectionInfo, size: int) -> Rejection | None:
        """``None`` to forward the datagram, else the first filter's rejection."""
        i = 0
        try:
            for f in self.filters:
                rejection = f.admit(info, size)
                if rejection is not None:
                    return rejection
                i += 1
        except Exception:
            _log.exception("udp middleware %s failed admitting %r", self.names[i], info)
            return self._failed[i]
        return None

    def __repr__(self) -> str:
        return f"DatagramChain({list(self.names)!r})"


def _releases(f: ConnectionFilter) -> bool:
    return type(f).release is not ConnectionFilter.release
