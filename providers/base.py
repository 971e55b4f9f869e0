"""The provider contract: an async iterator of whole configuration snapshots.

A provider watches one source (files, the Kubernetes API) and yields a
complete ``DynamicConfig`` whenever that source changes, never a delta. It
never touches the runtime: the app merges the newest snapshot of every
provider, qualifies names with ``@<provider name>`` and validates the whole.
A source that cannot be read yields a ``ConfigError`` instead of a snapshot,
so the app can report it while the last good configuration keeps serving.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from gateway.config.dynamic import DynamicConfig
from gateway.config.errors import ConfigError


class Provider(Protocol):
    """A source of configuration snapshots."""

    name: str

    def snapshots(self) -> AsyncIterator[DynamicConfig | ConfigError]: ...
