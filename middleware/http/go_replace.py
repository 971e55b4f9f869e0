"""Go's ``Regexp.ReplaceAllString``, on patterns from ``compile_safe``.

Owns the replacement loop and the ``$`` template expansion (``Regexp.Expand``)
that ``replacePathRegex``, ``redirectRegex`` and ``redirectScheme`` use.

Invariants:

* The template is parsed once, when the middleware is built; a request only
  joins literals and groups.
* Matches are replaced where Go's loop replaces them: an empty match right
  after a previous match is left alone, where ``re.sub`` would replace it.
* The loop searches one prepared text (``SafePattern.searcher``), so a
  replacement costs time linear in the text on either engine.
"""

from __future__ import annotations

from gateway.config.safe_regexp import SafeMatch, SafePattern


class GoReplace:
    """A regex and a template, replaced as Go's ``Regexp.ReplaceAllString`` does.

    The template expands ``$1``, ``${1}``, ``$name``, ``${name}`` and ``$$``
    as ``Regexp.Expand`` does: a name is the longest run of letters, digits
    and ``_`` (so ``$1x`` names group ``1x``, which is empty), an unknown or
    unmatched group expands to nothing, and a ``$`` starting no name stays.
    """

    __slots__ = ("pattern", "parts")

    def __init__(self, pattern: SafePattern, template: str) -> None:
        self.pattern = pattern
        self.parts = _parse_template(template, pattern)

    def expand(self, match: SafeMatch) -> str:
        return "".join(p if isinstance(p, str) else (match.group(p) or "") for p in self.parts)

    def replace_all(self, src: str) -> str:
        # Go's loop, not re.sub: an empty match right after a match is not
        # replaced (Python >= 3.7 replaces it: "x*" on "abxd" differs).
        search = self.pattern.searcher(src)
        out: list[str] = []
        last = pos = 0
        end = len(src)
        while pos <= end:
            match = search(pos)
            if match is None:
                break
            start, stop = match.span()
            out.append(src[last:start])
            if stop > last or start == 0:
                out.append(self.expand(match))
            last = stop
            pos = pos + 1 if pos + 1 > stop else stop
        out.append(src[last:])
        return "".join(out)


def _parse_template(template: str, pattern: SafePattern) -> tuple[str | int, ...]:
    parts: list[str | int] = []
    literal: list[str] = []
    i = 0
    while True:
        dollar = template.find("$", i)
        if dollar < 0:
            literal.append(template[i:])
            break
        literal.append(template[i:dollar])
        i = dollar + 1
        if template.startswith("$", i):
            literal.append("$")
            i += 1
            continue
        name, after = _template_name(template, i)
        if name is None:
            literal.append("$")
            continue
        i = after
        group = _group(name, pattern)
        if group is not None:
            parts.append("".join(literal))
            literal = []
            parts.append(group)
    parts.append("".join(literal))
    return tuple(p for p in parts if p != "")


def _template_name(template: str, i: int) -> tuple[str | None, int]:
    brace = template.startswith("{", i)
    start = end = i + 1 if brace else i
    while end < len(template) and (
        template[end].isalpha() or template[end].isdecimal() or template[end] == "_"
    ):
        end += 1
    if end == start:
        return None, i
    name = template[start:end]
    if brace:
        if not template.startswith("}", end):
            return None, i
        end += 1
    return name, end


def _group(name: str, pattern: SafePattern) -> int | None:
    if name.isascii() and name.isdigit() and (name == "0" or name[0] != "0"):
        number = int(name)
        return number if number <= pattern.groups else None
    return pattern.groupindex.get(name)
