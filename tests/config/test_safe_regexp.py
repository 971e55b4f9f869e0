"""Tests for gateway.config.safe_regexp: linear-time Go regexps on either engine."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from gateway.config.go_regexp import GoRegexpError, compile_go
from gateway.config.safe_regexp import Engine, SafeMatch, SafePattern, compile_safe
from middleware.http.go_replace import GoReplace

CATASTROPHIC = r"^/api/(.*)/(.*)/(.*)/v1$"

# pattern, engine chosen, id
ENGINES = [
    (r"^/api/v[0-9]+/", "re", "anchored-one-unbounded"),
    (r"^/users/[^/]+/posts$", "re", "anchored-class-repeat-then-literal"),
    (r"^/(en|de|fr)/.*", "re", "anchored-alternation"),
    (r"^[a-z0-9-]{1,63}\.example\.com$", "re", "anchored-bounded-label"),
    (r"^(?:[0-9]{1,3}\.){3}[0-9]{1,3}$", "re", "anchored-nested-bounded"),
    (r"\Afoo.*", "re", "backslash-a-anchor"),
    (r"/v[0-9]+", "re", "unanchored-unbounded-tail"),
    (r"\.(jpg|png|gif)$", "re", "unanchored-small-alternation"),
    (r"(?m)^a.*", "re", "multiline-tail"),
    ("foo", "re", "literal"),
    ("", "re", "empty"),
    (CATASTROPHIC, "re2", "three-unbounded"),
    (r"[0-9]+/", "re2", "unanchored-unbounded-not-tail"),
    (r"/api/.*$", "re2", "unanchored-unbounded-before-end"),
    (r"x{2,}", "re2", "unanchored-tail-minimum-two"),
    (r"(?m)^a.*b", "re2", "multiline-caret-is-no-anchor"),
    (r"(?:[0-9]{1,3}\.){3}[0-9]{1,3}", "re2", "unanchored-large-fan"),
    (r"^(a|b)*c", "re", "one-character-alternation-in-repeat"),
    (r"^(ab|b)*c", "re2", "alternation-in-unbounded-repeat"),
    (r"^(a+)+$", "re2", "nested-unbounded"),
    (r"^(ab*){2}", "re2", "unbounded-in-bounded"),
    (r"^https://([a-z0-9-]+\.)?example\.com$", "re2", "optional-group-with-unbounded"),
    (r"a{1000}", "re2", "wide-bounded"),
    (r"^[a-z]{0,60}[a-z]{0,60}[a-z]{0,60}x", "re2", "anchored-fan-over-budget"),
]


@pytest.mark.parametrize(
    ("pattern", "engine"), [(p, e) for p, e, _ in ENGINES], ids=[i for _, _, i in ENGINES]
)
def test_engine_choice(pattern: str, engine: str) -> None:
    """Python re runs only the patterns the cost model proves linear; RE2 the rest."""
    assert compile_safe(pattern).engine == engine


# Shaped to make each pattern's backtracking work its worst on one engine or the other.
HOSTILE = [
    "/api/" + "a/" * 32768,
    "a" * 65536,
    "1" * 65536,
    "/" * 65536,
    "/api/" * 13107 + "\n",
    "ab" * 32768 + "\n",
]


def best_of(runs: int, call: Callable[[], object]) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)


@pytest.mark.parametrize("pattern", [p for p, _, _ in ENGINES], ids=[i for _, _, i in ENGINES])
def test_search_time_is_linear_on_hostile_input(pattern: str) -> None:
    """On 64 KiB of hostile text a search costs under 100 linear scans of that text."""
    safe = compile_safe(pattern)
    scan = compile_safe("[#~]", engine="re").search  # visits every character, finds none
    for text in HOSTILE:
        baseline = best_of(3, lambda t=text: scan(t))  # type: ignore[misc]
        spent = best_of(3, lambda t=text: safe.search(t))  # type: ignore[misc]
        assert spent < 100 * baseline, (safe.engine, text[:20], spent, baseline)


@pytest.mark.parametrize(
    "text",
    ["/api/" + "a/" * 32768, "/api/" + "a/" * 32768 + "v1"],
    ids=["no-match", "match-with-captures"],
)
def test_catastrophic_pattern_on_64k_path_is_linear(text: str) -> None:
    """The 19.6 s-on-4 KB PathRegexp returns on 64 KiB within 100 linear scans."""
    safe = compile_safe(CATASTROPHIC)
    scan = compile_safe("[#~]", engine="re").search
    baseline = best_of(3, lambda: scan(text))
    found: list[SafeMatch | None] = []
    spent = best_of(3, lambda: found.append(safe.search(text)))
    assert spent < 100 * baseline, (spent, baseline)
    if text.endswith("v1"):
        assert found[0] is not None and found[0].span(1) == (5, len(text) - 7)
    else:
        assert found[0] is None


PATTERNS = [
    r"^/api/v[0-9]+/",
    CATASTROPHIC,
    r"[0-9]+/",
    r"/v[0-9]+",
    r"\.(jpg|png|gif)$",
    r"^[a-z0-9-]{1,63}\.example\.com$",
    r"(?:[0-9]{1,3}\.){3}[0-9]{1,3}",
    r"^https://([a-z0-9-]+\.)?example\.com$",
    r"^(https?):\/\/(\[[\w:.]+\]|[\w\._-]+)?(:\d+)?(.*)$",
    r"(?m)^a.*$",
    r"^/users/[^/]+/posts$",
    r"/api/.*$",
    r"^/(en|de|fr)/.*",
    r"x*",
    r"a|b|",
    r"(a*)(b?)",
    r"(?P<first>[a-z]+)/(?<second>[0-9]*)",
    r"(?i)^/ADMIN",
    r"\bfoo\b",
    r"(?s)a.b",
    r"a.b",
    r"[^/]+$",
    r"(a|ab)(c|bcd)(d*)",
    r"\Qa.b\E+",
    r"[[:alpha:]]+[[:digit:]]*",
    r"é+",
    r".",
    r"^$",
    r"",
    r"(\d+)-(\d+)",
    r"((a)|b)+",
    r"a(?i)b|c",
    r"\x{e9}|\101",
    r"[^a]",
    r"$",
]
TEXTS = [
    "",
    "/",
    "/api/v1/users",
    "/api/a/b/c/v1",
    "/api/a/b/c/v1\n",
    "/ADMIN/x",
    "/admin",
    "img/cat.png",
    "www.example.com",
    "https://a.example.com",
    "http://[::1]:8080/p?q",
    "a\nb\nab",
    "abcd",
    "foo bar_foo",
    "a.b a\nb",
    "/users/42/posts",
    "/en/docs",
    "café/é x",
    "/caf\udce9/\udcff",
    "12-34 5-6",
    "xxabyyAB C",
    "é\ufffdA",
]


def outcome(found: SafeMatch | None, groups: int) -> object:
    if found is None:
        return None
    return [(found.span(g), found.group(g)) for g in range(groups + 1)]


def both(pattern: str) -> tuple[SafePattern, SafePattern]:
    return compile_safe(pattern, engine="re"), compile_safe(pattern, engine="re2")


@pytest.mark.parametrize("pattern", PATTERNS)
def test_engines_agree_on_search_match_and_fullmatch(pattern: str) -> None:
    """re and RE2 find the same spans and groups, from every start position."""
    python, google = both(pattern)
    assert (python.groups, dict(python.groupindex)) == (google.groups, dict(google.groupindex))
    for text in TEXTS:
        for method in ("match", "fullmatch"):
            expected = outcome(getattr(python, method)(text), python.groups)
            assert outcome(getattr(google, method)(text), google.groups) == expected, (method, text)
        searcher = google.searcher(text)
        for pos in [*range(len(text) + 2), 0, 3]:  # ends by going back: the cursor resets
            expected = outcome(python.search(text, pos), python.groups)
            assert outcome(google.search(text, pos), google.groups) == expected, (text, pos)
            assert outcome(searcher(pos), google.groups) == expected, (text, pos)


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("template", ["[$0]", "<$1|${2}>", "$first-$$"])
def test_engines_agree_on_go_replace_all(pattern: str, template: str) -> None:
    """Go's ReplaceAllString loop gives the same text on both engines."""
    python, google = both(pattern)
    for text in TEXTS:
        expected = GoReplace(python, template).replace_all(text)
        assert GoReplace(google, template).replace_all(text) == expected, text


# Go source, text, whether Go's regexp matches: places where compile_go's
# translation and Go differ, and RE2 (which reads the Go source) sides with Go.
GO_SEMANTICS = [
    (r"^\s$", "\v", False, "space-class-excludes-vertical-tab"),
    (r"(?i)^é$", "É", True, "case-folding-is-unicode"),
    (r"^a{,2}$", "a{,2}", True, "brace-comma-is-literal"),
    (r"^.$", "\udcff", True, "invalid-byte-is-one-character"),
]


@pytest.mark.parametrize(
    ("pattern", "text", "matches"),
    [(p, t, m) for p, t, m, _ in GO_SEMANTICS],
    ids=[i for _, _, _, i in GO_SEMANTICS],
)
def test_re2_matches_as_go_does(pattern: str, text: str, matches: bool) -> None:
    """RE2 compiled from the Go source matches what Go's regexp matches."""
    assert (compile_safe(pattern, engine="re2").search(text) is not None) is matches


INVALID = [
    r"(a)\1",
    "(?=a)",
    "a++",
    r"\pL",
    "(?U)a*",
    r"a\Z",
    "(a",
    "[a",
    r"\q",
    "(?P=n)",
    "a{2}{3}",
]


@pytest.mark.parametrize("pattern", INVALID)
def test_invalid_patterns_fail_with_compile_go_message(pattern: str) -> None:
    """A pattern compile_go refuses is refused with the very same message."""
    with pytest.raises(GoRegexpError) as go:
        compile_go(pattern)
    with pytest.raises(GoRegexpError) as safe:
        compile_safe(pattern)
    assert str(safe.value) == str(go.value)


@pytest.mark.parametrize(
    ("pattern", "message"),
    [("x{1001}", "{1001}"), ("^(?:a{100}){100}$", "{100}")],
    ids=["repeat-over-1000", "nested-repeat-over-1000"],
)
def test_patterns_go_refuses_fail_on_every_engine(
    pattern: str, message: str, capfd: pytest.CaptureFixture[str]
) -> None:
    """What RE2 (and Go) refuse fails to load, whichever engine would run it, quietly."""
    engines: tuple[Engine | None, ...] = (None, "re", "re2")
    for engine in engines:
        with pytest.raises(ValueError, match="invalid repetition size") as caught:
            compile_safe(pattern, engine=engine)
        assert message in str(caught.value)
    assert capfd.readouterr().err == ""


def test_named_groups_and_missing_groups() -> None:
    """Named and unmatched groups read as in re; unknown groups raise IndexError."""
    google = compile_safe(r"(?P<a>x)|(?<b>y)", engine="re2")
    found = google.search("_y")
    assert found is not None
    assert (found.group("b"), found.group("a"), found.group(), found.span("a")) == (
        "y",
        None,
        "y",
        (-1, -1),
    )
    assert (found.start(), found.end(2)) == (1, 2)
    with pytest.raises(IndexError):
        found.group(3)
    with pytest.raises(IndexError):
        found.group("c")
