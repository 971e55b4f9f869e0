"""Tests for gateway.config.go_regexp: Go RE2 syntax translated to Python re."""

from __future__ import annotations

import re

import pytest

from gateway.config.go_regexp import GoRegexpError, compile_go, translate

TRANSLATIONS = [
    ("^/api$", r"^/api\Z", "dollar-is-end-of-text"),
    (r"a\z", r"a\Z", "lower-z"),
    ("(?m)^a$", "(?m:^a$)", "multiline-keeps-dollar"),
    ("(?i)abc", "(?i:abc)", "leading-flags-scoped"),
    ("a(?i)b|c", "a(?i:b)|(?i:c)", "flags-mid-pattern-span-alternation"),
    ("(a(?i)b|c)d", "(a(?i:b)|(?i:c))d", "flags-end-with-group"),
    ("(?i:ab)c", "(?i:ab)c", "scoped-flags-unchanged"),
    ("(?<id>[0-9]+)", "(?P<id>[0-9]+)", "angle-named-group"),
    ("(?P<id>x)", "(?P<id>x)", "python-named-group"),
    (r"\Qa.b*\E+", r"a\.b\*+", "quoted-literal"),
    (r"\Qa.b", r"a\.b", "quoted-literal-to-end"),
    (r"\x{1F600}", r"\U0001f600", "braced-hex"),
    (r"\x41", r"\x41", "plain-hex"),
    (r"\012", r"\x0a", "octal-three-digits"),
    (r"\0", r"\x00", "octal-zero"),
    ("[[:alpha:]_]+", "[A-Za-z_]+", "posix-class"),
    ("[[:digit:][:upper:]]", "[0-9A-Z]", "two-posix-classes"),
    ("[]a]", r"[\]a]", "bracket-first-in-class"),
    ("[^]a]", r"[^\]a]", "bracket-first-in-negated-class"),
    ("[[a]", r"[\[a]", "open-bracket-in-class"),
    ("[$]", "[$]", "dollar-in-class"),
    (r"\.\$", r"\.\$", "escaped-punctuation"),
]


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [(p, e) for p, e, _ in TRANSLATIONS],
    ids=[i for _, _, i in TRANSLATIONS],
)
def test_translate(pattern: str, expected: str) -> None:
    """Go syntax that differs from Python's is rewritten to the same meaning."""
    assert translate(pattern) == expected


REJECTED = [
    (r"(a)\1", "back-reference", "backreference"),
    ("(?=a)", "look-around", "lookahead"),
    ("(?<!a)b", "look-around", "lookbehind"),
    ("a++", "nested repetition", "possessive"),
    (r"\pL", "Unicode classes", "unicode-class"),
    (r"\p{Greek}", "Unicode classes", "unicode-class-braced"),
    ("(?U)a*", "ungreedy", "ungreedy-flag"),
    (r"a\Z", r"\z matches", "python-end-anchor"),
    ("(a", "missing closing )", "unclosed-group"),
    ("a)", "unexpected )", "stray-paren"),
    ("[a", "missing closing ]", "unclosed-class"),
    (r"\q", "invalid escape", "unknown-escape"),
    ("(?P=n)", "unsupported Perl syntax", "python-backreference"),
    ("(?#note)", "unsupported Perl syntax", "comment-group"),
    ("(?>a)", "unsupported Perl syntax", "atomic-group"),
    ("[[:^alpha:]]", "negated class", "negated-posix"),
    ("[[:alphabet:]]", "character class", "unknown-posix"),
    (r"\x{110000}", "invalid escape", "hex-out-of-range"),
    ("a\\", "trailing backslash", "trailing-backslash"),
    ("a{2}{3}", "multiple repeat", "python-compile-error"),
]


@pytest.mark.parametrize(
    ("pattern", "reason"), [(p, r) for p, r, _ in REJECTED], ids=[i for _, _, i in REJECTED]
)
def test_rejected(pattern: str, reason: str) -> None:
    """What RE2 refuses, or re cannot express, raises GoRegexpError with the reason."""
    with pytest.raises(GoRegexpError, match=re.escape(reason)):
        compile_go(pattern)


def test_dollar_does_not_match_before_final_newline() -> None:
    """`$` is end of text, as in Go, not "before a trailing newline"."""
    assert compile_go("^/admin$").search("/admin\n") is None
    assert compile_go("^/admin$").search("/admin") is not None


def test_perl_classes_are_ascii() -> None:
    """`\\d` and `\\w` are ASCII-only, as in Go."""
    assert compile_go(r"^\d+$").search("\u0663") is None
    assert compile_go(r"^\w+$").search("é") is None


def test_scoped_flags_keep_alternation() -> None:
    """A mid-pattern `(?i)` covers the rest of its group, across `|`."""
    pattern = compile_go("a(?i)b|c")
    assert pattern.fullmatch("aB")
    assert pattern.fullmatch("C")
    assert not pattern.fullmatch("AB")


def test_class_with_double_dash_compiles_without_warning() -> None:
    """`[+--]` is a range in Go; Python's FutureWarning about it is not raised."""
    assert compile_go("^[+--]$").search(",")
