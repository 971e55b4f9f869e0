"""Typed reads of Kubernetes object fields, with the schema checks the API server makes.

The ``providers.gatewayapi.parse*`` modules read plain mappings (what YAML or
JSON loads into) through these helpers. Each read takes the holding
mapping, the key and the key path of the holding mapping inside its document
(``spec.rules[0]``), and either returns a value of the declared type or raises
``Invalid`` naming the full key path of the bad value. Rules kept:

* types are JSON's, as the API server sees them after YAML-to-JSON: a string
  field refuses ``80`` and ``true``, an integer field refuses ``true`` and
  ``"80"``; a ``null`` value reads as an absent field (Kubernetes prunes
  nulls from non-nullable fields before defaulting);
* patterns are OpenAPI ``pattern`` values (unanchored searches, as the API
  server runs them), copied from the Gateway API Go types
  (``apis/v1/shared_types.go``); ``matches`` runs them, since Python's ``$``
  also matches before a final newline, which the API server's does not;
* ``Duration`` is GEP-2257: ``^([0-9]{1,5}(h|m|s|ms)){1,4}$``, read as seconds.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from gateway.config.errors import Origin

# Where a key path ("spec.rules[0].matches[1]") of one document was written.
OriginFinder = Callable[[str], "Origin | None"]

_DNS_LABELS = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
HOSTNAME = re.compile(rf"^(\*\.)?{_DNS_LABELS}$")
PRECISE_HOSTNAME = re.compile(rf"^{_DNS_LABELS}$")
SECTION_NAME = PRECISE_HOSTNAME
GROUP = re.compile(rf"^$|^{_DNS_LABELS}$")
KIND = re.compile(r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$")
NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$")
CONTROLLER_NAME = re.compile(rf"^{_DNS_LABELS}\/[A-Za-z0-9\/\-._~%!$&'()*+,;=:]+$")
# Both alternatives as written upstream: the second is not anchored at the start.
PROTOCOL = re.compile(
    r"^[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?$|"
    r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/[A-Za-z0-9]+$"
)
ADDRESS_TYPE = re.compile(
    rf"^Hostname|IPAddress|NamedAddress|{_DNS_LABELS}\/[A-Za-z0-9\/\-._~%!$&'()*+,;=:]+$"
)
_DURATION = re.compile(r"^([0-9]{1,5}(h|m|s|ms)){1,4}$")
_DURATION_PART = re.compile(r"([0-9]+)(ms|h|m|s)")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_UNIT = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


class Invalid(Exception):
    """A value the API server would refuse; the whole object is left out."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def describe(value: object) -> str:
    """How a wrong value is named in "expected X, got Y" messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({'true' if value else 'false'})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a number ({value})"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, Sequence):
        return "a list"
    return type(value).__name__


def matches(pattern: re.Pattern[str], value: str) -> bool:
    """Whether ``value`` matches an OpenAPI ``pattern`` (no newline: see the module docstring)."""
    return "\n" not in value and pattern.search(value) is not None


def parse_duration(text: str) -> float:
    """Seconds in a GEP-2257 duration ("1h30m", "500ms", "0s"); ``ValueError`` otherwise."""
    if not matches(_DURATION, text):
        raise ValueError(text)
    return sum(int(n) * _UNIT[unit] for n, unit in _DURATION_PART.findall(text))


# --- reads ---------------------------------------------------------------------------


def opt_map(m: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any] | None:
    value = m.get(key)
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise Invalid(join(path, key), f"expected a mapping, got {describe(value)}")
    return value


def req_map(m: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any]:
    value = opt_map(m, key, path)
    if value is None:
        raise Invalid(join(path, key), "required value")
    return value


def opt_list(
    m: Mapping[str, Any], key: str, path: str, *, min_items: int = 0, max_items: int | None = None
) -> list[Any] | None:
    """The list at ``key``; ``None`` when absent (so CRD defaults can tell absent from empty)."""
    value = m.get(key)
    if value is None:
        return None
    at = join(path, key)
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise Invalid(at, f"expected a list, got {describe(value)}")
    if len(value) < min_items:
        raise Invalid(at, f"must have at least {min_items} item{'s' * (min_items > 1)}")
    if max_items is not None and len(value) > max_items:
        raise Invalid(at, f"must have at most {max_items} item{'s' * (max_items != 1)}")
    return list(value)


def items(
    m: Mapping[str, Any], key: str, path: str, *, min_items: int = 0, max_items: int | None = None
) -> list[tuple[Mapping[str, Any], str]]:
    """The mappings of a list of objects, each with its key path; absent reads as empty."""
    found = opt_list(m, key, path, min_items=min_items, max_items=max_items) or []
    out = []
    for i, item in enumerate(found):
        at = f"{join(path, key)}[{i}]"
        if not isinstance(item, Mapping):
            raise Invalid(at, f"expected a mapping, got {describe(item)}")
        out.append((item, at))
    if min_items and not out:
        raise Invalid(join(path, key), "required value")
    return out


def opt_str(
    m: Mapping[str, Any],
    key: str,
    path: str,
    *,
    pattern: re.Pattern[str] | None = None,
    min_len: int = 0,
    max_len: int | None = None,
) -> str | None:
    value = m.get(key)
    if value is None:
        return None
    at = join(path, key)
    if not isinstance(value, str):
        raise Invalid(at, f"expected a string, got {describe(value)}")
    if len(value) < min_len:
        raise Invalid(at, f"must be at least {min_len} character{'s' * (min_len > 1)} long")
    if max_len is not None and len(value) > max_len:
        raise Invalid(at, f"must be no more than {max_len} characters")
    if pattern is not None and not matches(pattern, value):
        raise Invalid(at, f'"{value}" does not match {pattern.pattern!r}')
    return value


def req_str(
    m: Mapping[str, Any],
    key: str,
    path: str,
    *,
    pattern: re.Pattern[str] | None = None,
    min_len: int = 1,
    max_len: int | None = None,
) -> str:
    value = opt_str(m, key, path, pattern=pattern, min_len=min_len, max_len=max_len)
    if value is None:
        raise Invalid(join(path, key), "required value")
    return value


def opt_int(
    m: Mapping[str, Any], key: str, path: str, *, lo: int | None = None, hi: int | None = None
) -> int | None:
    value = m.get(key)
    if value is None:
        return None
    at = join(path, key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(at, f"expected an integer, got {describe(value)}")
    if lo is not None and value < lo:
        raise Invalid(at, f"must be greater than or equal to {lo}")
    if hi is not None and value > hi:
        raise Invalid(at, f"must be less than or equal to {hi}")
    return value


def req_int(
    m: Mapping[str, Any], key: str, path: str, *, lo: int | None = None, hi: int | None = None
) -> int:
    value = opt_int(m, key, path, lo=lo, hi=hi)
    if value is None:
        raise Invalid(join(path, key), "required value")
    return value


def opt_bool(m: Mapping[str, Any], key: str, path: str) -> bool | None:
    value = m.get(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise Invalid(join(path, key), f"expected a boolean, got {describe(value)}")
    return value


def str_map(
    m: Mapping[str, Any], key: str, path: str, *, max_items: int | None = None
) -> dict[str, str]:
    """A string-to-string map (labels, annotations, TLS options); absent reads as empty."""
    found = opt_map(m, key, path)
    if found is None:
        return {}
    at = join(path, key)
    if max_items is not None and len(found) > max_items:
        raise Invalid(at, f"must have at most {max_items} properties")
    out = {}
    for k, v in found.items():
        if not isinstance(v, str):
            raise Invalid(join(at, str(k)), f"expected a string, got {describe(v)}")
        out[str(k)] = v
    return out


def str_list(
    m: Mapping[str, Any],
    key: str,
    path: str,
    *,
    max_items: int | None = None,
    pattern: re.Pattern[str] | None = None,
    unique: bool = False,
) -> tuple[str, ...]:
    """A list of strings; ``unique`` for ``listType=set`` (duplicates are refused)."""
    found = opt_list(m, key, path, max_items=max_items) or []
    at = join(path, key)
    out: list[str] = []
    for i, value in enumerate(found):
        where = f"{at}[{i}]"
        if not isinstance(value, str):
            raise Invalid(where, f"expected a string, got {describe(value)}")
        if pattern is not None and not matches(pattern, value):
            raise Invalid(where, f'"{value}" does not match {pattern.pattern!r}')
        if unique and value in out:
            raise Invalid(where, f'duplicate value "{value}"')
        out.append(value)
    return tuple(out)


def opt_duration(m: Mapping[str, Any], key: str, path: str) -> float | None:
    text = opt_str(m, key, path)
    if text is None:
        return None
    try:
        return parse_duration(text)
    except ValueError:
        raise Invalid(
            join(path, key), f'"{text}" is not a Gateway API duration (GEP-2257: "1h", "500ms")'
        ) from None


def hostname(value: str, at: str, *, precise: bool = False) -> str:
    """A ``Hostname`` (``*.`` wildcard allowed unless ``precise``), at most 253 characters."""
    pattern = PRECISE_HOSTNAME if precise else HOSTNAME
    if not value or len(value) > 253 or not matches(pattern, value):
        what = "a precise hostname" if precise else "a hostname (optional *. prefix)"
        raise Invalid(at, f'"{value}" is not {what}: RFC 1123 labels in lower case')
    return value


def unique_by(entries: Sequence[tuple[Mapping[str, Any], str]], key: str, what: str) -> None:
    """``listType=map`` keyed by ``key``: two entries with one key value are refused."""
    seen: set[object] = set()
    for entry, at in entries:
        value = entry.get(key)
        if value in seen:
            raise Invalid(join(at, key), f'duplicate {what} "{value}"')
        seen.add(value)


def checked(condition: bool, at: str, message: str) -> None:
    """A CEL rule: ``message`` is the upstream ``XValidation`` message."""
    if not condition:
        raise Invalid(at, message)


class Context:
    """What one object's readers share: its namespace (for reference defaults) and problems.

    A problem is a value the API server accepts but Sluice does not implement
    (an enum value it does not know): the object is kept and the translator
    reports ``Accepted=False`` with reason ``UnsupportedValue`` (spec §1.5).
    """

    __slots__ = ("namespace", "problems")

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.problems: list[str] = []

    def problem(self, at: str, message: str) -> None:
        self.problems.append(f"{at}: {message}")

    def header_value(self, at: str, value: str) -> str:
        """An HTTP field value: control characters would split or corrupt the header."""
        if _CONTROL.search(value):
            self.problem(at, "control characters cannot be sent in an HTTP header or query")
        return value

    def unsupported(self, at: str, value: object, supported: Sequence[str]) -> None:
        shown = f'"{value}"' if isinstance(value, str) else str(value)
        self.problem(at, f"unsupported value {shown} (supported: {', '.join(supported)})")
