"""Go (RE2) regular expressions, translated to Python ``re`` patterns.

Traefik's ``HostRegexp``, ``PathRegexp``, ``HeaderRegexp`` and ``QueryRegexp``
take Go ``regexp`` syntax. Most of it is Python syntax too; this module
rewrites the parts that differ and refuses what Go would refuse, so a rule that
loads here also loads in Traefik and matches the same strings:

* ``$`` outside ``(?m)`` is end of text in Go but "end, or before a final
  newline" in Python: it becomes ``\\Z``. ``\\z`` becomes ``\\Z``; Python's
  own ``\\Z`` is not Go syntax and is refused.
* ``(?<name>...)`` becomes ``(?P<name>...)``; ``\\Q...\\E`` becomes an escaped
  literal; ``\\x{10FFFF}`` becomes ``\\U0010ffff``; octal ``\\123`` becomes a
  hex escape (``\\12`` is a back-reference in Python); ``[[:alpha:]]``-style
  ASCII classes become ranges.
* Perl classes (``\\d``, ``\\w``, ``\\s``, ``\\b``) are ASCII-only in Go, so
  patterns compile with ``re.ASCII``.
* What RE2 rejects is refused with its reason: look-around, back-references,
  atomic groups, possessive quantifiers, ``(?U)``. ``\\p{...}`` Unicode classes
  are valid Go but ``re`` has none, so they are refused too.

Python's ``re`` backtracks where RE2 does not: a pathological pattern written by
the operator can cost more per request here than in Traefik.
"""

from __future__ import annotations

import functools
import re
import warnings

__all__ = ["GoRegexpError", "compile_go", "translate"]


class GoRegexpError(ValueError):
    """A pattern that is not valid Go syntax, or that ``re`` cannot express."""


_POSIX = {
    "alnum": "0-9A-Za-z",
    "alpha": "A-Za-z",
    "ascii": "\\x00-\\x7f",
    "blank": "\\t ",
    "cntrl": "\\x00-\\x1f\\x7f",
    "digit": "0-9",
    "graph": "!-~",
    "lower": "a-z",
    "print": " -~",
    "punct": "!-/:-@\\[-`{-~",
    "space": "\\t\\n\\v\\f\\r ",
    "upper": "A-Z",
    "word": "0-9A-Za-z_",
    "xdigit": "0-9A-Fa-f",
}
# Escapes with the same meaning in both dialects.
_SAME_ESCAPES = frozenset("AbBdDsSwWafntrv")
_OCTAL = frozenset("01234567")
_HEX = frozenset("0123456789abcdefABCDEF")
_DOLLAR = object()  # placeholder: "$" or "\Z", decided once the flags are known


def _octal(pattern: str, i: int) -> tuple[str, int]:
    """Go octal escape at ``pattern[i] == '\\'``: ``\\0``, ``\\0NN`` or ``\\NNN`` (2-3 digits)."""
    j = i + 1
    first = pattern[j]
    if first != "0" and (j + 1 >= len(pattern) or pattern[j + 1] not in _OCTAL):
        raise GoRegexpError(f"back-references such as \\{first} are not supported (RE2)")
    end = j + 1
    while end < len(pattern) and end < j + 3 and pattern[end] in _OCTAL:
        end += 1
    return f"\\x{int(pattern[j:end], 8):02x}", end


def _escape(pattern: str, i: int, in_class: bool) -> tuple[str, int]:
    """Translate the escape starting at ``pattern[i] == '\\'``; return text and next index."""
    if i + 1 >= len(pattern):
        raise GoRegexpError("trailing backslash at end of expression")
    c = pattern[i + 1]
    if c in _SAME_ESCAPES:
        return pattern[i : i + 2], i + 2
    if c == "z" and not in_class:
        return "\\Z", i + 2
    if c == "Q" and not in_class:
        end = pattern.find("\\E", i + 2)
        literal = pattern[i + 2 :] if end < 0 else pattern[i + 2 : end]
        return re.escape(literal), len(pattern) if end < 0 else end + 2
    if c == "x":
        if i + 2 < len(pattern) and pattern[i + 2] == "{":
            close = pattern.find("}", i + 3)
            digits = pattern[i + 3 : close] if close > 0 else ""
            if not digits or not set(digits) <= _HEX or int(digits, 16) > 0x10FFFF:
                raise GoRegexpError(f"invalid escape sequence at position {i}")
            return f"\\U{int(digits, 16):08x}", close + 1
        if i + 3 < len(pattern) and pattern[i + 2] in _HEX and pattern[i + 3] in _HEX:
            return pattern[i : i + 4], i + 4
        raise GoRegexpError(f"invalid escape sequence at position {i}")
    if c in _OCTAL:
        return _octal(pattern, i)
    if c == "Z":
        raise GoRegexpError("\\Z is not Go syntax; \\z matches the end of text")
    if c in "pP":
        raise GoRegexpError(f"Unicode classes \\{c}{{...}} are not supported; use explicit ranges")
    if c.isascii() and c.isalnum():
        raise GoRegexpError(f"invalid escape sequence \\{c} at position {i}")
    return pattern[i : i + 2], i + 2


def _class(pattern: str, i: int, out: list[object]) -> int:
    """Copy the character class opening at ``pattern[i] == '['``; return the index after it."""
    out.append("[")
    i += 1
    if i < len(pattern) and pattern[i] == "^":
        out.append("^")
        i += 1
    if i < len(pattern) and pattern[i] == "]":
        out.append("\\]")
        i += 1
    while i < len(pattern):
        c = pattern[i]
        if c == "]":
            out.append("]")
            return i + 1
        if c == "\\":
            text, i = _escape(pattern, i, in_class=True)
            out.append(text)
        elif c == "[" and pattern.startswith("[:", i):
            close = pattern.find(":]", i + 2)
            name = pattern[i + 2 : close] if close > 0 else ""
            if name.startswith("^"):
                raise GoRegexpError(f"negated class [:{name}:] is not supported")
            if name not in _POSIX:
                raise GoRegexpError(f"invalid character class range at position {i}")
            out.append(_POSIX[name])
            i = close + 2
        elif c == "[":
            out.append("\\[")  # a literal in Go; Python warns about nested sets
            i += 1
        else:
            out.append(c)
            i += 1
    raise GoRegexpError("missing closing ]")


def _group(pattern: str, i: int, out: list[object], stack: list[list[str]]) -> tuple[int, bool]:
    """Translate a ``(?`` group head at ``i``; return the next index and whether it sets (?m).

    ``stack`` holds, per open group, the flag groups opened inside it that
    still need closing.
    """
    rest = pattern[i + 2 : i + 4]
    if rest.startswith(("P<", ":")):
        out.append(pattern[i : i + 3])
        stack.append([])
        return i + 3, False
    if rest.startswith("<") and rest not in ("<=", "<!"):
        out.append("(?P<")
        stack.append([])
        return i + 3, False
    if rest.startswith(("=", "!", "<=", "<!")):
        raise GoRegexpError("look-around assertions are not supported (RE2)")
    match = re.compile(r"[a-zA-Z-]*[:)]").match(pattern, i + 2)
    if match is None:
        raise GoRegexpError(f"invalid or unsupported Perl syntax at position {i}")
    flags = match.group()[:-1]
    if not flags or not set(flags) <= set("imsU-") or flags.count("-") > 1 or flags.endswith("-"):
        raise GoRegexpError(f"invalid or unsupported Perl syntax: (?{match.group()}")
    if "U" in flags:
        raise GoRegexpError("the ungreedy flag (?U) has no Python equivalent")
    sets_m = "m" in flags.split("-")[0]
    if match.group().endswith(":"):
        out.append(pattern[i : match.end()])
        stack.append([])
    else:
        # Go lets "(?i)" appear anywhere and last to the end of its group;
        # Python wants global flags first, so open a scoped group instead,
        # closed (and reopened around "|") by ``translate``.
        out.append(f"(?{flags}:")
        stack[-1].append(flags)
    return match.end(), sets_m


def translate(pattern: str) -> str:
    """The Python pattern that matches what Go's ``regexp`` matches for ``pattern``."""
    out: list[object] = []
    stack: list[list[str]] = [[]]
    multiline = False
    i = 0
    n = len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            text, i = _escape(pattern, i, in_class=False)
            out.append(text)
            continue
        if c == "[":
            i = _class(pattern, i, out)
            continue
        if c == "(" and pattern.startswith("(?", i):
            i, sets_m = _group(pattern, i, out, stack)
            multiline = multiline or sets_m
            continue
        if c == "(":
            stack.append([])
            out.append(c)
        elif c == ")":
            if len(stack) == 1:
                raise GoRegexpError(f"unexpected ) at position {i}")
            out.append(")" * (len(stack.pop()) + 1))
        elif c == "|":
            scoped = stack[-1]
            out.append(")" * len(scoped) + "|" + "".join(f"(?{f}:" for f in scoped))
        elif c == "$":
            out.append(_DOLLAR)
        elif c in "*+?}" and i + 1 < n and pattern[i + 1] == "+":
            raise GoRegexpError(f"invalid nested repetition operator at position {i}")
        else:
            out.append(c)
        i += 1
    if len(stack) > 1:
        raise GoRegexpError("missing closing )")
    out.append(")" * len(stack[0]))
    dollar = "$" if multiline else "\\Z"
    return "".join(dollar if part is _DOLLAR else str(part) for part in out)


@functools.lru_cache(maxsize=1024)
def compile_go(pattern: str) -> re.Pattern[str]:
    """Compile a Go regexp; raises ``GoRegexpError`` with a readable reason."""
    translated = translate(pattern)
    try:
        with warnings.catch_warnings():
            # Python flags some valid Go class syntax ("[a--]") as possibly
            # changing meaning in a future version; today it means what Go means.
            warnings.simplefilter("ignore", FutureWarning)
            return re.compile(translated, re.ASCII)
    except re.error as exc:
        raise GoRegexpError(str(exc)) from None
