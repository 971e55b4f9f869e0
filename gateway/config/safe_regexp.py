"""Go regexps that run in linear time on client input: ``compile_safe``.

Rule matchers (``HostRegexp``, ``PathRegexp``, ``HeaderRegexp``,
``QueryRegexp``, ``HostSNIRegexp``) and middleware regexes run operator
patterns on text the client chose. Python's ``re`` backtracks: one request
can stall the event loop for seconds (``^/api/(.*)/(.*)/(.*)/v1$`` on a 4 KB
path took 19.6 s). Traefik uses Go's ``regexp``, an RE2 port, which is linear
in the input; so is every ``SafePattern``.

A pattern is checked with ``compile_go`` first, so invalid patterns fail with
its messages; it must then also compile in RE2 (which refuses what Go refuses
and ``re`` accepts, such as ``a{1001}``), whichever engine runs it, so whether
a pattern loads never depends on the choice below. Then it runs on:

* Python ``re`` (about 0.15 us per search) only when its parse tree
  (``re._parser``) proves the backtracking work linear with a small factor:

  - nothing but literals, one-character classes, ``.``, anchors and ``\\b``,
    groups, alternation and repeats: no back-references or look-around;
  - at most one unbounded repeat (``*``, ``+``, ``{n,}``), whose body is one
    character (a class, literal or ``.``) and which is inside no other repeat;
  - and then, with ``fan`` the number of ways the pattern can match at one
    position, the unbounded repeat aside (alternatives add; a bounded repeat
    ``{m,n}`` of a body with ``f`` ways multiplies by ``(n-m+1)*f**n``) and
    ``width`` the characters its bounded parts can consume, ``fan * (width +
    1)`` must be at most ``SCAN_BUDGET``, or ``ANCHORED_BUDGET`` for a
    pattern anchored at the start (``^`` without ``(?m)``, or ``\\A``) with
    no unbounded repeat. Every start position, and every length the one
    unbounded repeat gives back, then costs at most that many steps, so a
    search is linear in the input (constant, for the anchored kind);
  - an unanchored pattern may hold its unbounded repeat only as its very
    last item, with a minimum of 0 or 1: ``re`` retries every start
    position, so ``[0-9]+/`` unanchored is quadratic (0.2 s on 16 KB of
    digits) while ``/v[0-9]+`` stops at its first match.

* RE2 (``google-re2``, 1-2 us per search) otherwise, compiled from the Go
  source, which RE2 reads natively (Go's ``regexp`` is a port of RE2):
  ``\\z``, ``(?i)`` mid-pattern, ``[[:alpha:]]`` and ``\\Q..\\E`` mean what
  they mean in Go.
  Text is handed over as UTF-8; lone surrogates (bytes that were not UTF-8,
  decoded with ``surrogateescape``) become U+FFFD, one character each, as Go
  reads an invalid byte, so offsets and groups index the caller's string.

Where the engines differ, RE2 is the one that agrees with Go: ``\\s`` does
not match ``\\v``, ``(?i)`` folds non-ASCII letters, ``a{,5}`` is a literal.
These are ``compile_go`` translation gaps, not engine choices.
"""

from __future__ import annotations

import functools
import re
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal, Protocol, overload

import re2  # type: ignore[import-untyped]

from gateway.config.go_regexp import GoRegexpError, compile_go

if TYPE_CHECKING:
    import sre_constants as _c
    import sre_parse as _parser
else:
    from re import _constants as _c
    from re import _parser

__all__ = [
    "ANCHORED_BUDGET",
    "SCAN_BUDGET",
    "Engine",
    "SafeMatch",
    "SafePattern",
    "compile_safe",
]

Engine = Literal["re", "re2"]
# Backtracking steps per input character (per search, when anchored) that
# keep a 32 KiB request target under a few milliseconds in the worst case.
SCAN_BUDGET = 32
ANCHORED_BUDGET = 10_000
_CAP = 1 << 62

_SINGLE = frozenset({_c.LITERAL, _c.NOT_LITERAL, _c.ANY, _c.IN})
_REPEATS = frozenset({_c.MAX_REPEAT, _c.MIN_REPEAT})
_SURROGATE = re.compile("[\ud800-\udfff]")


class SafeMatch(Protocol):
    """What callers read from a match, on either engine (a subset of ``re.Match``)."""

    @overload
    def group(self, group: Literal[0] = 0, /) -> str: ...
    @overload
    def group(self, group: str | int, /) -> str | Any: ...
    def span(self, group: int | str = 0, /) -> tuple[int, int]: ...
    def start(self, group: int | str = 0, /) -> int: ...
    def end(self, group: int | str = 0, /) -> int: ...


class Search(Protocol):
    def __call__(self, string: str, pos: int = 0, /) -> SafeMatch | None: ...


class SafePattern:
    """A compiled Go regexp; ``search``, ``match`` and ``fullmatch`` work as ``re``'s.

    ``searcher(text)`` returns ``search`` bound to one text, for loops that
    search it again and again from later positions (Go's replace loop): RE2
    prepares the text once instead of at every call.
    """

    __slots__ = ("pattern", "engine", "groups", "groupindex", "search", "match", "fullmatch")

    def __init__(
        self,
        pattern: str,
        engine: Engine,
        groups: int,
        groupindex: Mapping[str, int],
        searches: tuple[Search, ...],
    ) -> None:
        self.pattern = pattern
        self.engine: Engine = engine
        self.groups = groups
        self.groupindex = groupindex
        self.search, self.match, self.fullmatch = searches

    def searcher(self, text: str) -> Callable[[int], SafeMatch | None]:
        search = self.search
        if isinstance(search, _Re2Search):
            return search.on(text)
        return lambda pos: search(text, pos)

    def __repr__(self) -> str:
        return f"SafePattern({self.pattern!r}, engine={self.engine!r})"


@functools.lru_cache(maxsize=1024)
def compile_safe(go_pattern: str, engine: Engine | None = None) -> SafePattern:
    """Compile a Go regexp to run in linear time; raises ``GoRegexpError`` (a ValueError).

    ``engine`` forces one engine (for differential tests); by default Python
    ``re`` runs the patterns proven linear and RE2 the rest.
    """
    compiled = compile_go(go_pattern)
    regexp = _re2_compile(go_pattern)
    if engine is None:
        engine = "re" if _linear(compiled.pattern) else "re2"
    if engine == "re":
        searches: tuple[Search, ...] = (compiled.search, compiled.match, compiled.fullmatch)
        return SafePattern(go_pattern, "re", compiled.groups, compiled.groupindex, searches)
    names: dict[str, int] = regexp.groupindex
    match = regexp._regexp.Match  # the binding's one call that returns every span
    searches = tuple(_Re2Search(match, anchor, names) for anchor in _ANCHORS)
    return SafePattern(go_pattern, "re2", regexp.groups, names, searches)


def _re2_compile(go_pattern: str) -> Any:
    options = re2.Options()
    options.log_errors = False  # RE2 would log every refused pattern to stderr
    try:
        return re2.compile(go_pattern, options)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else "refused by RE2"
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise GoRegexpError(str(reason)) from None


# -- the linearity proof -----------------------------------------------------------------


class _Unproven(Exception):
    """The parse tree holds something the cost model does not cover."""


Items = Iterable[tuple[Any, Any]]


def _linear(python_pattern: str) -> bool:
    """True when ``re`` provably does linear work on any input (see the module doc)."""
    with warnings.catch_warnings():
        # compile_go already let Python's FutureWarning on "[a--]" pass.
        warnings.simplefilter("ignore", FutureWarning)
        tree = _parser.parse(python_pattern, re.ASCII)
    multiline = bool(tree.state.flags & re.MULTILINE) or _sets_multiline(tree.data)
    try:
        fan, width, unbounded = _measure(tree.data, in_repeat=False)
        if unbounded > 1:
            return False
        if _anchored(tree.data, multiline):
            budget = ANCHORED_BUDGET if unbounded == 0 else SCAN_BUDGET
            return _times(fan, width + 1) <= budget
        if unbounded:
            prefix = _without_tail(list(tree.data))
            if prefix is None:
                return False
            fan, width, _ = _measure(prefix, in_repeat=False)
        return _times(fan, width + 1) <= SCAN_BUDGET
    except _Unproven:
        return False


def _measure(items: Items, in_repeat: bool) -> tuple[int, int, int]:
    """(ways to match at one position, characters consumed, unbounded repeats)."""
    fan, width, unbounded = 1, 0, 0
    for op, av in items:
        if op in _SINGLE:
            width += 1
        elif op is _c.AT:
            pass
        elif op is _c.SUBPATTERN:
            f, w, u = _measure(av[3].data, in_repeat)
            fan, width, unbounded = _times(fan, f), width + w, unbounded + u
        elif op is _c.BRANCH:
            shapes = [_measure(alt.data, in_repeat) for alt in av[1]]
            fan = _times(fan, min(_CAP, sum(s[0] for s in shapes)))
            width += max(s[1] for s in shapes)
            unbounded += sum(s[2] for s in shapes)
        elif op in _REPEATS:
            low, high, body = av
            if high is _c.MAXREPEAT:
                if in_repeat or not _one_character(body.data):
                    raise _Unproven
                width, unbounded = width + 1, unbounded + 1
                continue
            f, w, _ = _measure(body.data, in_repeat=True)
            fan = _times(fan, _times(high - low + 1, _power(f, high)))
            width = min(_CAP, width + _times(high, w))
        else:
            raise _Unproven  # back-references, look-around, atomic groups...
    return fan, width, unbounded


def _one_character(items: Items) -> bool:
    items = list(items)
    if len(items) != 1:
        return False
    op, av = items[0]
    if op is _c.SUBPATTERN:
        return _one_character(av[3].data)
    return op in _SINGLE


def _anchored(items: Items, multiline: bool) -> bool:
    for op, av in items:
        if op is _c.AT:
            return av is _c.AT_BEGINNING_STRING or (av is _c.AT_BEGINNING and not multiline)
        if op is _c.SUBPATTERN:
            return _anchored(av[3].data, multiline)
        return False
    return False


def _sets_multiline(items: Items) -> bool:
    for op, av in items:
        if op is _c.SUBPATTERN and (av[1] & re.MULTILINE or _sets_multiline(av[3].data)):
            return True
        if op is _c.BRANCH and any(_sets_multiline(alt.data) for alt in av[1]):
            return True
        if op in _REPEATS and _sets_multiline(av[2].data):
            return True
    return False


def _without_tail(items: list[tuple[Any, Any]]) -> list[tuple[Any, Any]] | None:
    """``items`` less a last unbounded repeat of minimum 0 or 1, or None if it has none."""
    if not items:
        return None
    op, av = items[-1]
    if op in _REPEATS and av[1] is _c.MAXREPEAT and av[0] <= 1:
        return items[:-1]
    if op is _c.SUBPATTERN:
        inner = _without_tail(list(av[3].data))
        return None if inner is None else items[:-1] + inner
    return None


def _times(a: int, b: int) -> int:
    return min(_CAP, a * b)


def _power(base: int, exponent: int) -> int:
    if base <= 1:
        return base
    return _CAP if exponent * base.bit_length() > 62 else min(_CAP, base**exponent)


# -- RE2 ----------------------------------------------------------------------------------

_ANCHORS = (re2._Anchor.UNANCHORED, re2._Anchor.ANCHOR_START, re2._Anchor.ANCHOR_BOTH)


class _Text:
    """A str as RE2 reads it: UTF-8 bytes, with offsets mapped back and forth.

    Offsets are converted from a cursor that only moves forward while the
    caller's positions do, so a search loop over one text stays linear.
    """

    __slots__ = ("string", "data", "ascii", "_norm", "_char", "_byte")

    def __init__(self, string: str) -> None:
        self.string = string
        self.ascii = string.isascii()
        self._norm = string
        if self.ascii:
            self.data = string.encode("ascii")
        else:
            try:
                self.data = string.encode("utf-8")
            except UnicodeEncodeError:
                self._norm = _SURROGATE.sub("\ufffd", string)
                self.data = self._norm.encode("utf-8")
        self._char = self._byte = 0

    def byte_offset(self, char: int) -> int:
        if self.ascii:
            return char
        if char < self._char:
            self._char = self._byte = 0
        self._byte += len(self._norm[self._char : char].encode("utf-8"))
        self._char = char
        return self._byte

    def spans(self, raw: list[tuple[int, int]]) -> list[tuple[int, int]]:
        if self.ascii:
            return raw
        chars: dict[int, int] = {-1: -1}
        for offset in sorted({o for span in raw for o in span if o >= 0}):
            if offset < self._byte:
                self._char = self._byte = 0
            self._char += len(self.data[self._byte : offset].decode("utf-8"))
            self._byte = offset
            chars[offset] = self._char
        return [(chars[a], chars[b]) for a, b in raw]


class _Re2Search:
    """``search``, ``match`` or ``fullmatch`` of one RE2 pattern, by its anchor."""

    __slots__ = ("_match", "_anchor", "_names")

    def __init__(self, match: Any, anchor: Any, names: Mapping[str, int]) -> None:
        self._match = match
        self._anchor = anchor
        self._names = names

    def __call__(self, string: str, pos: int = 0, /) -> SafeMatch | None:
        if string.isascii():
            data = string.encode("ascii")
            pos = min(max(pos, 0), len(data))
            spans = self._match(self._anchor, data, pos, len(data))
            return None if spans[0][0] < 0 else _Re2Match(string, spans, self._names)
        return self._on(_Text(string), pos)

    def on(self, string: str) -> Callable[[int], SafeMatch | None]:
        text = _Text(string)
        return lambda pos: self._on(text, pos)

    def _on(self, text: _Text, pos: int) -> SafeMatch | None:
        start = text.byte_offset(min(max(pos, 0), len(text.string)))
        spans = self._match(self._anchor, text.data, start, len(text.data))
        if spans[0][0] < 0:
            return None
        return _Re2Match(text.string, text.spans(spans), self._names)


class _Re2Match:
    """A successful RE2 match, read like ``re.Match`` (spans index the caller's str)."""

    __slots__ = ("string", "_spans", "_names")

    def __init__(self, string: str, spans: list[tuple[int, int]], names: Mapping[str, int]):
        self.string = string
        self._spans = spans
        self._names = names

    def _index(self, group: int | str) -> int:
        index = self._names.get(group, -1) if isinstance(group, str) else group
        if not 0 <= index < len(self._spans):
            raise IndexError("no such group")
        return index

    @overload
    def group(self, group: Literal[0] = 0, /) -> str: ...
    @overload
    def group(self, group: str | int, /) -> str | Any: ...
    def group(self, group: str | int = 0, /) -> str | Any:
        start, end = self._spans[self._index(group)]
        return None if start < 0 else self.string[start:end]

    def span(self, group: int | str = 0, /) -> tuple[int, int]:
        return self._spans[self._index(group)]

    def start(self, group: int | str = 0, /) -> int:
        return self._spans[self._index(group)][0]

    def end(self, group: int | str = 0, /) -> int:
        return self._spans[self._index(group)][1]

    def __repr__(self) -> str:
        return f"<SafeMatch span={self.span()!r} match={self.group()!r}>"
