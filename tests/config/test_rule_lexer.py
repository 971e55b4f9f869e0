"""Tests for gateway.config.rule_lexer: Go tokens and string literals."""

from __future__ import annotations

import pytest

from gateway.config.rule_lexer import RuleSyntaxError, quote, tokens


def test_tokens_kinds_and_columns() -> None:
    """Each token carries its kind, decoded text and 1-based column."""
    assert tokens(' Host(`a`, "b\\n") &&\n!(x) || y ') == [
        ("ident", "Host", 2),
        ("(", "(", 6),
        ("string", "a", 7),
        (",", ",", 10),
        ("string", "b\n", 12),
        (")", ")", 17),
        ("&&", "&&", 19),
        ("!", "!", 22),
        ("(", "(", 23),
        ("ident", "x", 24),
        (")", ")", 25),
        ("||", "||", 27),
        ("ident", "y", 30),
        ("end", "", 32),
    ]


def test_tokens_of_empty_rule() -> None:
    """An empty rule is just the end token."""
    assert tokens("") == [("end", "", 1)]


def test_unicode_identifier() -> None:
    """Identifiers follow Go: a letter or underscore, then letters and digits."""
    assert tokens("_Hôst2")[0] == ("ident", "_Hôst2", 1)


@pytest.mark.parametrize(
    "value",
    ["plain", "with `backtick`", 'quote " and \\ slash', "cr\r\nlf", "ctl\x01\x7f", "é ✓"],
    ids=["plain", "backtick", "quote-slash", "crlf", "control", "unicode"],
)
def test_quote_round_trips(value: str) -> None:
    """quote() gives a Go literal that tokenizes back to the same string."""
    assert tokens(quote(value))[0] == ("string", value, 1)


def test_quote_prefers_backticks() -> None:
    """Strings without backticks or CR are quoted raw, as rules are usually written."""
    assert quote('say "hi"') == '`say "hi"`'


def test_error_carries_column() -> None:
    """A lexical error points at the offending character."""
    with pytest.raises(RuleSyntaxError) as caught:
        tokens("Host(`a`) ; x")
    assert (caught.value.column, caught.value.message) == (11, "unexpected character ';'")
