"""Kubernetes manifests in files: documents with the line of every key, and file-mode metadata.

A dynamic-configuration file holds either the Traefik dialect (one YAML
document) or Kubernetes objects (one or more documents, each with
``apiVersion`` and ``kind``); ``is_manifest`` tells them apart.
``load_manifests`` returns each document as plain data with a finder for the
file and line of any key path in it (``spec.rules[0].matches``), so errors
about an object point at the line that is wrong.

``FileMetadata`` gives objects what the API server would: a
``creationTimestamp`` (the first time Sluice saw the object, unless the file
sets one) and a ``generation`` that goes up by one whenever the object's
``spec`` changes. Both matter: route precedence ties are broken by age, and
status conditions carry ``observedGeneration``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import yaml

from gateway.config.errors import ConfigError, Origin
from gateway.config.yaml_nodes import syntax_error

OriginFinder = Callable[[str], Origin | None]


def is_manifest(text: str, file: str) -> bool:
    """Whether ``text`` is Kubernetes objects (every non-empty document has apiVersion and kind)."""
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError:
        return False  # the dialect's own loader reports the syntax error with its line
    return bool(documents) and all(
        isinstance(d, Mapping) and "apiVersion" in d and "kind" in d for d in documents
    )


def load_manifests(text: str, file: str) -> list[tuple[dict[str, Any], OriginFinder]]:
    """Every document of ``text`` with a finder of each key path's origin."""
    try:
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.MarkedYAMLError as exc:
        raise syntax_error(exc, file) from None
    out: list[tuple[dict[str, Any], OriginFinder]] = []
    constructor = yaml.SafeLoader("")
    for node in nodes:
        if node is None:
            continue
        data = constructor.construct_document(node)
        if data is None:
            continue
        if not isinstance(data, dict):
            line = node.start_mark.line + 1
            raise ConfigError("a Kubernetes manifest document must be a mapping",
                              origin=Origin(file, line))
        lines = dict(_paths(node, ""))
        out.append((data, _finder(file, lines)))
    return out


def _paths(node: yaml.Node, prefix: str) -> Iterator[tuple[str, int]]:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            name = f"{prefix}.{key.value}" if prefix else str(key.value)
            yield name, key.start_mark.line + 1
            yield from _paths(value, name)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            name = f"{prefix}[{index}]"
            yield name, item.start_mark.line + 1
            yield from _paths(item, name)


def _finder(file: str, lines: Mapping[str, int]) -> OriginFinder:
    def find(path: str) -> Origin | None:
        while path:
            line = lines.get(path)
            if line is not None:
                return Origin(file, line)
            cut = max(path.rfind("."), path.rfind("["))
            path = path[:cut] if cut > 0 else ""
        return None

    return find


class FileMetadata:
    """Stamps documents with creationTimestamp and generation as an API server would."""

    def __init__(self, clock: Callable[[], datetime] | None = None) -> None:
        self._clock = clock or (lambda: datetime.now(UTC))
        # (apiVersion group, kind, namespace, name) -> (first seen, spec digest, generation)
        self._seen: dict[tuple[str, str, str, str], tuple[str, str, int]] = {}

    def stamp(self, documents: list[tuple[dict[str, Any], OriginFinder]]) -> None:
        now = self._clock().strftime("%Y-%m-%dT%H:%M:%SZ")
        live: set[tuple[str, str, str, str]] = set()
        for doc, _ in documents:
            meta = doc.get("metadata")
            if not isinstance(meta, dict):
                continue
            group = str(doc.get("apiVersion", "")).rpartition("/")[0]
            key = (group, str(doc.get("kind")), str(meta.get("namespace") or ""),
                   str(meta.get("name")))
            live.add(key)
            digest = hashlib.sha256(
                json.dumps(doc.get("spec"), sort_keys=True, default=str).encode()
            ).hexdigest()
            first, known, generation = self._seen.get(key, (now, digest, 1))
            if known != digest:
                generation += 1
            self._seen[key] = (first, digest, generation)
            meta.setdefault("creationTimestamp", first)
            meta.setdefault("generation", generation)
        for key in list(self._seen):
            if key not in live:
                del self._seen[key]  # deleted: a new object of that name starts afresh
