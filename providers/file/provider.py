"""The file provider: one YAML file or a directory of them, watched for changes.

Each snapshot is the whole configuration, re-read from disk; a file that
cannot be read or parsed yields a ``ConfigError`` instead, and the app keeps
serving the last good configuration. A snapshot equal to the one yielded
before it (origins aside: moving lines is no change) is not yielded again.

Watching: the directory holding the files is watched with inotify, so files
added, removed, renamed into place or replaced by an atomic rename are all
seen. Bursts are coalesced (~50 ms of quiet) so one editor save gives one
snapshot. Without inotify, or once the directory itself is gone, the
provider polls instead, and returns to inotify when it can. Either way a
signature of the files (names and content hashes) decides whether to
reload. In directory mode only ``*.yml``/``*.yaml`` files directly in the
directory count; hidden files and editor leftovers (``.#x.yaml``,
``x.yaml~``, ``.x.yaml.swp``) are ignored.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import AsyncGenerator
from pathlib import Path

from gateway.config.dynamic import DynamicConfig
from gateway.config.errors import ConfigError, Origin
from gateway.config.loader import parse_dynamic, read_text
from gateway.config.merge import collection_paused, combine
from gateway.config.static import FileProviderConfig
from providers.file.inotify import Inotify
from providers.gatewayapi.files import ManifestReader
from providers.gatewayapi.manifests import is_manifest

logger = logging.getLogger(__name__)

QUIET = 0.05  # seconds without events that end a burst
BURST_LIMIT = 0.5  # longest a burst may delay a reload

Snapshot = DynamicConfig | ConfigError
# What a snapshot is compared by: ConfigError has identity equality.
_Key = tuple[str, object]
Signature = tuple[object, ...]


def is_config_name(name: str) -> bool:
    """Whether a directory entry is a configuration file, not a temp file."""
    if name.startswith((".", "#")) or name.endswith("~"):
        return False
    return name.lower().endswith((".yml", ".yaml"))


def _key(snapshot: Snapshot) -> _Key:
    if isinstance(snapshot, ConfigError):
        return ("error", str(snapshot))
    return ("config", snapshot)


class FileProvider:
    """Dynamic configuration from ``providers.file``."""

    name = "file"

    def __init__(
        self,
        config: FileProviderConfig,
        *,
        base_dir: Path,
        poll_interval: float = 0.1,
        use_inotify: bool = True,
    ) -> None:
        if bool(config.filename) == bool(config.directory):
            raise ConfigError("set exactly one of filename and directory", path="providers.file")
        self.config = config
        self.poll_interval = poll_interval
        self.use_inotify = use_inotify
        self.file: Path | None = base_dir / config.filename if config.filename else None
        self.directory: Path | None = base_dir / config.directory if config.directory else None
        self.watched: Path = self.directory or (self.file or base_dir).parent
        self._inotify_failure = ""
        # Gateway API objects among the files (file mode), and their status.
        self.manifests = ManifestReader()

    def _key(self, snapshot: Snapshot) -> tuple[_Key, str]:
        """What decides that a snapshot is new: its configuration, or the manifests.

        An edit of the Kubernetes objects is yielded even when it changes no
        routing (a GatewayClass edited, a route whose parent went away), as a
        cluster's watch would report it: its status is news for the API and
        for anyone waiting on the reload.
        """
        return _key(snapshot), self.manifests.digest

    # --- reading ------------------------------------------------------------

    def paths(self) -> list[Path]:
        """The files one snapshot is read from, in the order they combine."""
        if self.directory is None:
            return [self.file] if self.file is not None else []
        try:
            with os.scandir(self.directory) as entries:
                names = sorted(e.name for e in entries if is_config_name(e.name) and e.is_file())
        except OSError as exc:
            raise ConfigError(
                f"cannot read directory: {exc.strerror or exc}", origin=Origin(str(self.directory))
            ) from None
        return [self.directory / n for n in names]

    def load(self) -> Snapshot:
        """One snapshot of everything on disk now: the Traefik dialect and manifests."""
        try:
            dialect: list[DynamicConfig] = []
            manifests: list[tuple[Path, str]] = []
            with collection_paused():
                for path in self.paths():
                    text = read_text(path)
                    if is_manifest(text, str(path)):
                        manifests.append((path, text))
                    else:
                        dialect.append(parse_dynamic(text, str(path)))
                if manifests:
                    dialect.append(self.manifests.read(manifests))
                return combine(dialect) if dialect else DynamicConfig()
        except ConfigError as exc:
            return exc

    def signature(self) -> Signature:
        """What changes whenever a reload could give a different result.

        File contents are hashed rather than trusting mtime and size: the
        kernel stamps mtime from a clock that ticks every few milliseconds,
        so two same-sized saves inside one tick would look unchanged.
        """
        try:
            paths = self.paths()
        except ConfigError as exc:
            return ("unreadable", str(exc))
        marks: list[object] = []
        for path in paths:
            try:
                digest = hashlib.blake2b(path.read_bytes(), digest_size=16).digest()
            except OSError as exc:
                marks.append((path.name, exc.errno))
            else:
                marks.append((path.name, digest))
        return tuple(marks)

    # --- watching -----------------------------------------------------------

    def _open_inotify(self) -> Inotify | None:
        if not self.use_inotify:
            return None
        try:
            return Inotify(self.watched)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            if reason != self._inotify_failure:
                logger.warning(
                    "file provider: cannot watch %s with inotify (%s); polling every %gs",
                    self.watched,
                    reason,
                    self.poll_interval,
                )
                self._inotify_failure = reason
            return None

    async def snapshots(self) -> AsyncGenerator[Snapshot, None]:
        """The initial snapshot, then (with ``watch``) one per change."""
        watching = self.config.watch
        # The watch starts before the first read, so no change slips between.
        inotify = self._open_inotify() if watching else None
        try:
            signature = await asyncio.to_thread(self.signature)
            snapshot = await asyncio.to_thread(self.load)
            yield snapshot
            if not watching:
                return
            last = self._key(snapshot)
            while True:
                inotify, signature, changed = await self._wait(inotify, signature)
                if not changed:
                    continue
                snapshot = await asyncio.to_thread(self.load)
                key = self._key(snapshot)
                if key != last:
                    last = key
                    logger.info("file provider: configuration changed in %s", self.watched)
                    yield snapshot
        finally:
            if inotify is not None:
                inotify.close()

    async def _wait(
        self, inotify: Inotify | None, signature: Signature
    ) -> tuple[Inotify | None, Signature, bool]:
        """Wait for the next possible change; return the new state and whether to reload."""
        if inotify is not None:
            # Any event in the directory wakes us, not only events on our
            # names: a symlink swapped over them (Kubernetes ConfigMap volumes
            # do this) is an event on another name. The signature decides.
            await inotify.batch(QUIET, BURST_LIMIT)
            if inotify.lost:
                logger.warning(
                    "file provider: %s was removed or moved; polling for it", self.watched
                )
                inotify.close()
                inotify = None
            current = await asyncio.to_thread(self.signature)
            return inotify, current, current != signature
        await asyncio.sleep(self.poll_interval)
        inotify = self._open_inotify() if self.watched.is_dir() else None
        current = await asyncio.to_thread(self.signature)
        return inotify, current, current != signature
