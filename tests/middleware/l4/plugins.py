"""Test-only L4 middleware types, written as a plugin author would write them.

``Tally`` records every admit and release (into a shared ``log``) so tests
can see what a chain called and in which order; ``Boom`` raises where it is
told to, to check that chains fail closed and keep releasing.
"""

from __future__ import annotations

from gateway.config.model import model
from middleware.l4.contract import (
    ConnectionFilter,
    ConnectionInfo,
    DatagramFilter,
    L4BuildContext,
    Rejection,
)


@model
class TallyOptions:
    label: str = ""


class TallyFilter(ConnectionFilter):
    def __init__(self, label: str, log: list[tuple[str, str, int]]) -> None:
        self.label = label
        self.log = log

    def admit(self, info: ConnectionInfo) -> Rejection | None:
        self.log.append(("admit", self.label, info.client_port))
        return None

    def release(self, info: ConnectionInfo) -> None:
        self.log.append(("release", self.label, info.client_port))


class Tally:
    key = "tally"
    options = TallyOptions

    def __init__(self) -> None:
        self.log: list[tuple[str, str, int]] = []
        self.built: list[TallyFilter] = []

    def build(self, options: TallyOptions, context: L4BuildContext) -> ConnectionFilter:
        built = TallyFilter(options.label or context.name, self.log)
        self.built.append(built)
        return built


@model
class BoomOptions:
    on: str = "admit"  # admit | release


class BoomFilter(ConnectionFilter):
    def __init__(self, on: str) -> None:
        self.on = on

    def admit(self, info: ConnectionInfo) -> Rejection | None:
        if self.on == "admit":
            raise RuntimeError("boom in admit")
        return None

    def release(self, info: ConnectionInfo) -> None:
        if self.on == "release":
            raise RuntimeError("boom in release")


class BoomDatagrams(DatagramFilter):
    def admit(self, info: ConnectionInfo, size: int) -> Rejection | None:
        raise RuntimeError("boom per datagram")


class Boom:
    key = "boom"
    options = BoomOptions

    def build(self, options: BoomOptions, context: L4BuildContext) -> ConnectionFilter:
        if options.on not in ("admit", "release"):
            raise ValueError("on: must be admit or release")
        return BoomFilter(options.on)


class UDPBoom:
    key = "boom"
    options = BoomOptions

    def build(self, options: BoomOptions, context: L4BuildContext) -> DatagramFilter:
        return BoomDatagrams()
