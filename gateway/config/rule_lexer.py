"""The lexical layer of the rule language: Go tokens and Go string literals.

A rule is a Go expression, so its strings are Go literals: raw in backticks
(carriage returns dropped, no escapes) or double-quoted, decoded as
``strconv.Unquote`` does (``\\n``, ``\\xHH``, 3-digit octal, ``\\uHHHH``,
``\\UHHHHHHHH``; no ``\\'``, no raw newline). ``tokens`` turns a rule into
``(kind, text, column)`` tuples; ``quote`` is its inverse for one string.
Errors are ``RuleSyntaxError`` with the 1-based column of the offending text.
"""

from __future__ import annotations

import re
from typing import NoReturn

__all__ = ["RuleSyntaxError", "Token", "describe", "quote", "tokens"]


class RuleSyntaxError(Exception):
    """A rule that does not parse, with the 1-based column at fault."""

    def __init__(self, message: str, column: int) -> None:
        self.message = message
        self.column = column
        super().__init__(message, column)

    def __str__(self) -> str:
        return f"column {self.column}: {self.message}"


# Each match is one token and the whitespace before it; "bad" is where no token starts.
_LEX = re.compile(
    r"""[ \t\r\n]*
    (?: (?P<ident>[^\W\d]\w*)
      | (?P<raw>`[^`]*`)
      | (?P<quoted>"(?:[^"\\\n]|\\.)*")
      | (?P<op>&&|\|\||[()!,])
      | (?P<bad>.)
      | \Z
    )""",
    re.VERBOSE | re.DOTALL,
)
_ONE_CALL = re.compile(r"([^\W\d]\w*)\(`([^`]*)`\)")
_PLAIN = re.compile(r'[^"\\\n]+')
_SIMPLE_ESCAPES = {"a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11, "\\": 92, '"': 34}
_HEX_WIDTH = {"x": 2, "u": 4, "U": 8}

Token = tuple[str, str, int]  # kind, text, column


def tokens(rule: str) -> list[Token]:
    """The tokens of ``rule``, ending with an ``("end", "", len + 1)`` token."""
    call = _ONE_CALL.fullmatch(rule)
    if call is not None:
        # Most rules are one matcher with one raw string (Host(`a.example`));
        # one match instead of five keeps a 10,000-router reload quick.
        name, arg = call.group(1, 2)
        size = len(name)
        return [
            ("ident", name, 1),
            ("(", "(", size + 1),
            ("string", arg.replace("\r", ""), size + 2),
            (")", ")", len(rule)),
            ("end", "", len(rule) + 1),
        ]
    found: list[Token] = []
    for m in _LEX.finditer(rule):
        kind = m.lastgroup
        if kind is None:  # trailing whitespace
            continue
        column = m.start(kind) + 1
        text = m.group(kind)
        if kind == "ident":
            found.append(("ident", text, column))
        elif kind == "op":
            found.append((text, text, column))
        elif kind == "raw":
            found.append(("string", text[1:-1].replace("\r", ""), column))
        elif kind == "quoted":
            text = _unquote(rule, column - 1)[0] if "\\" in text else text[1:-1]
            found.append(("string", text, column))
        else:
            _lex_error(rule, column - 1)
    found.append(("end", "", len(rule) + 1))
    return found


def _lex_error(rule: str, pos: int) -> NoReturn:
    """Raise the error for the text at ``pos``, which starts no token."""
    c, column = rule[pos], pos + 1
    if c == "`":
        raise RuleSyntaxError("unterminated string: no closing backtick", column)
    if c == '"':
        _unquote(rule, pos)  # raises the precise error
    if c in "&|":
        raise RuleSyntaxError(f"'{c}' is not an operator; use '{c}{c}'", column)
    if c == "'":
        message = "single quotes do not delimit strings; use backticks or double quotes"
        raise RuleSyntaxError(message, column)
    hint = "; arguments are strings in backticks" if c.isdigit() else ""
    raise RuleSyntaxError(f"unexpected character {c!r}{hint}", column)


def _unquote(rule: str, start: int) -> tuple[str, int]:
    """Decode the double-quoted literal at ``rule[start]`` as Go's ``strconv.Unquote``."""
    out = bytearray()
    i, n = start + 1, len(rule)
    while True:
        m = _PLAIN.match(rule, i)
        if m is not None:
            out += m.group().encode("utf-8")
            i = m.end()
        if i >= n:
            raise RuleSyntaxError('unterminated string: no closing "', start + 1)
        c = rule[i]
        if c == '"':
            break
        if c == "\n":
            raise RuleSyntaxError("newline in string", i + 1)
        i = _unescape(rule, i, out)
    try:
        return out.decode("utf-8"), i + 1
    except UnicodeDecodeError:
        raise RuleSyntaxError("string is not valid UTF-8", start + 1) from None


def _unescape(rule: str, i: int, out: bytearray) -> int:
    """Append the escape at ``rule[i] == '\\'`` to ``out``; return the next index."""
    e = rule[i + 1 : i + 2]
    if e in _SIMPLE_ESCAPES:
        out.append(_SIMPLE_ESCAPES[e])
        return i + 2
    if e and e in _HEX_WIDTH:
        digits = rule[i + 2 : i + 2 + _HEX_WIDTH[e]]
        if len(digits) != _HEX_WIDTH[e] or not all(d in "0123456789abcdefABCDEF" for d in digits):
            raise RuleSyntaxError(f"\\{e} needs {_HEX_WIDTH[e]} hex digits", i + 1)
        value = int(digits, 16)
        if e == "x":
            out.append(value)
        elif value > 0x10FFFF or 0xD800 <= value <= 0xDFFF:
            raise RuleSyntaxError(f"\\{e}{digits} is not a Unicode code point", i + 1)
        else:
            out += chr(value).encode("utf-8")
        return i + 2 + len(digits)
    digits = rule[i + 1 : i + 4]
    if e and e in "01234567":
        if len(digits) != 3 or not all(d in "01234567" for d in digits) or int(digits, 8) > 255:
            raise RuleSyntaxError("octal escapes take 3 digits up to \\377", i + 1)
        out.append(int(digits, 8))
        return i + 4
    raise RuleSyntaxError(f"unknown escape sequence \\{e}", i + 1)


def describe(token: Token) -> str:
    """How an error message names ``token``."""
    kind, text, _ = token
    if kind == "end":
        return "the end of the rule"
    if kind == "string":
        return f"the string {text!r}"
    return f"'{text}'"


def quote(value: str) -> str:
    """``value`` as a Go literal: backticks when possible, else double quotes."""
    if "`" not in value and "\r" not in value:
        return f"`{value}`"
    escaped = []
    for ch in value:
        if ch in '"\\':
            escaped.append("\\" + ch)
        elif ch == "\n":
            escaped.append("\\n")
        elif ch < " " or ch == "\x7f":
            escaped.append(f"\\x{ord(ch):02x}")
        else:
            escaped.append(ch)
    return '"' + "".join(escaped) + '"'
