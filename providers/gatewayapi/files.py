"""Gateway API in file mode: manifests read from the file provider's files, translated.

The file provider hands every file holding Kubernetes objects to
``ManifestReader.read``; the objects of all of them together are one
snapshot of the cluster's state (parse, then ``translate``), and the result
is one more ``DynamicConfig`` the provider combines with its Traefik-dialect
files. An object the API server would refuse makes the whole snapshot an
error naming file, line and key path, like any other invalid file: the last
good configuration keeps serving. The status computed for the last good
snapshot is kept on the reader, for the API.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.config.dynamic import DynamicConfig
from gateway.config.errors import Origin
from gateway.config.loader import decode_value
from providers.gatewayapi.manifests import FileMetadata, load_manifests
from providers.gatewayapi.parse import parse_objects
from providers.gatewayapi.translate import ObjectKey, translate


class ManifestReader:
    """Turns the manifest files of one snapshot into dynamic configuration and status."""

    def __init__(self, *, default_address: str = "") -> None:
        self.default_address = default_address
        self.metadata = FileMetadata()
        self.status: dict[ObjectKey, dict[str, Any]] = {}
        # (kind, namespace, name) -> why Sluice keeps but cannot implement it
        self.problems: dict[tuple[str, str, str], str] = {}
        # Of the manifest files last read: any edit is news, even one that
        # changes neither configuration nor status (an object kept for later).
        self.digest = ""

    def read(self, files: Sequence[tuple[Path, str]]) -> DynamicConfig:
        """``files``: (path, text) of each manifest file. Raises ``ConfigError``."""
        documents = []
        digest = hashlib.sha256()
        for path, text in files:
            documents.extend(load_manifests(text, str(path)))
            digest.update(text.encode())
        self.digest = digest.hexdigest()
        self.metadata.stamp(documents)
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        parsed = parse_objects(documents, now=now)
        if parsed.errors:
            raise parsed.errors[0]
        translation = translate(
            parsed.objects, default_address=self.default_address, problems=parsed.problems
        )
        origin = Origin(str(files[0][0])) if files else None
        config = decode_value(
            DynamicConfig, without_empty(translation.config), origin=origin, path=""
        )
        self.status = stamp_transitions(translation.status, self.status, now)
        self.problems = dict(parsed.problems)
        return config


def without_empty(config: Mapping[str, Any]) -> dict[str, Any]:
    """Drop empty sections: an empty ``tcp`` would still make an empty section."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            inner = {k: v for k, v in value.items() if v}
            if inner:
                out[key] = inner
        elif value:
            out[key] = value
    return out


def stamp_transitions(
    status: dict[ObjectKey, dict[str, Any]],
    previous: dict[ObjectKey, dict[str, Any]],
    now: str,
) -> dict[ObjectKey, dict[str, Any]]:
    """Give every condition a ``lastTransitionTime``: kept while its status is unchanged."""

    def conditions(item: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
        found = [("", item.get("conditions", []))]
        found += [(f"l:{x['name']}", x.get("conditions", [])) for x in item.get("listeners", [])]
        found += [
            (f"p:{x['parentRef']}", x.get("conditions", [])) for x in item.get("parents", [])
        ]
        return found

    for key, item in status.items():
        before = {
            (where, c["type"]): c
            for where, listed in conditions(previous.get(key, {}))
            for c in listed
        }
        for where, listed in conditions(item):
            for condition in listed:
                old = before.get((where, condition["type"]))
                if old is not None and old["status"] == condition["status"]:
                    condition["lastTransitionTime"] = old["lastTransitionTime"]
                else:
                    condition["lastTransitionTime"] = now
    return status
