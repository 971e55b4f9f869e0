"""Configuration errors that name the file, line and key path at fault.

``ConfigError`` is the only exception the loader and validator raise for bad
input. Its ``str()`` is the message a person sees in the log, in ``gateway
check`` and in ``/api/overview``::

    dynamic.yaml:12: http.routers.api.service: unknown service "apii" (did you mean "api"?)
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a value came from: a file (or ``<flag>``), and a 1-based line."""

    file: str
    line: int = 0

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file


class ConfigError(Exception):
    """Invalid configuration, located as precisely as the input allows."""

    def __init__(self, message: str, *, origin: Origin | None = None, path: str = "") -> None:
        self.message = message
        self.origin = origin
        self.path = path
        super().__init__(str(self))

    def __str__(self) -> str:
        parts = []
        if self.origin is not None:
            parts.append(str(self.origin))
        if self.path:
            parts.append(self.path)
        parts.append(self.message)
        return ": ".join(parts)

    def as_dict(self) -> dict[str, object]:
        """The shape ``/api/overview`` reports."""
        return {
            "file": self.origin.file if self.origin else None,
            "line": self.origin.line if self.origin else None,
            "path": self.path,
            "message": self.message,
            "error": str(self),
        }


def suggestion(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean "x"?)`` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    if not close:
        lowered = {c.lower(): c for c in choices}
        if word.lower() in lowered:
            close = [lowered[word.lower()]]
    return f' (did you mean "{close[0]}"?)' if close else ""
