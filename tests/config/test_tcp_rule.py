"""Tests for gateway.config.tcp_rule: TCP and UDP router rules, parsed and matched."""

from __future__ import annotations

import pytest

from gateway.config.rule import And, Expr, Matcher, Not, Or
from gateway.config.tcp_rule import (
    CATCH_ALL_PRIORITY,
    RuleSyntaxError,
    default_priority,
    is_catch_all,
    needs_client_hello,
    parse_tcp,
    parse_udp,
    tcp_rule,
    udp_rule,
)


def m(name: str, *args: str) -> Matcher:
    return Matcher(name, args)


SNI_A = m("HostSNI", "a.example")
SNI_B = m("HostSNI", "b.example")
H2 = m("ALPN", "h2")
LAN = m("ClientIP", "192.0.2.0/24")

# --- Parsing ---------------------------------------------------------------------

VALID: list[tuple[str, Expr, str]] = [
    ("HostSNI(`a.example`)", SNI_A, "host-sni"),
    ('HostSNI("a.example")', SNI_A, "double-quotes"),
    ("hostsni(`a.example`)", SNI_A, "lower-case-name"),
    ("HOSTSNI(`a.example`)", SNI_A, "upper-case-name"),
    ("Hostsni(`a.example`)", SNI_A, "title-case-name"),
    ("HostSNI(`*`)", m("HostSNI", "*"), "catch-all"),
    ("HostSNI(`*.example.com`)", m("HostSNI", "*.example.com"), "wildcard"),
    ("HostSNI(`192.0.2.1`)", m("HostSNI", "192.0.2.1"), "ipv4-literal"),
    ("HostSNI(`2001:db8::1`)", m("HostSNI", "2001:db8::1"), "ipv6-literal"),
    ("HostSNIRegexp(`^.+\\.example\\.com$`)", m("HostSNIRegexp", "^.+\\.example\\.com$"), "re"),
    ("ClientIP(`192.0.2.0/24`)", LAN, "client-ip-cidr"),
    ("ClientIP(`::1`)", m("ClientIP", "::1"), "client-ip-v6"),
    ("ALPN(`h2`)", H2, "alpn"),
    ("HostSNI(`a.example`) && ALPN(`h2`)", And(SNI_A, H2), "and"),
    ("HostSNI(`a.example`) || HostSNI(`b.example`)", Or(SNI_A, SNI_B), "or"),
    ("!ALPN(`h2`)", Not(H2), "not"),
    (
        "HostSNI(`a.example`) || HostSNI(`b.example`) && !ALPN(`h2`)",
        Or(SNI_A, And(SNI_B, Not(H2))),
        "and-binds-tighter-than-or",
    ),
    (
        "(HostSNI(`a.example`) || HostSNI(`b.example`)) && ALPN(`h2`)",
        And(Or(SNI_A, SNI_B), H2),
        "parentheses-override",
    ),
    (
        "HostSNI(`a.example`) || (HostSNI(`b.example`) && !ALPN(`h2`))",
        Or(SNI_A, And(SNI_B, Not(H2))),
        "documentation-example",
    ),
]


@pytest.mark.parametrize(("rule", "expected"), [v[:2] for v in VALID], ids=[v[2] for v in VALID])
def test_valid_tcp_rules_parse(rule: str, expected: Expr) -> None:
    """Each valid TCP rule yields the expected AST, with Traefik's precedence."""
    assert parse_tcp(rule) == expected


INVALID: list[tuple[str, int, str, str]] = [
    ("", 1, "empty rule", "empty"),
    ("HostSNI(`a`, `b`)", 14, "HostSNI takes 1 argument (one name each; join", "two-names"),
    ("HostSNI()", 9, "HostSNI takes 1 argument", "no-argument"),
    ("HostSNI(``)", 9, "HostSNI: empty argument", "empty-argument"),
    ("Host(`a.example`)", 1, "unknown matcher 'Host' (did you mean \"HostSNI\"?)", "http-matcher"),
    ("Path(`/`)", 1, "unknown matcher 'Path'", "path-matcher"),
    ("HostSNI(`a.example:443`)", 9, "has a port", "name-with-port"),
    ("HostSNI(`a b`)", 9, "is not a valid host name", "space-in-name"),
    ("HostSNI(`a*.example`)", 9, "`*` alone matches every connection", "stray-star"),
    ("HostSNIRegexp(`(?=x)`)", 15, "HostSNIRegexp: invalid regexp", "look-ahead"),
    ("HostSNIRegexp(`a{1001}`)", 15, "invalid repetition size", "repeat-go-refuses"),
    ("HostSNIRegexp(`é`)", 15, "non-ASCII characters are not allowed", "non-ascii-regexp"),
    ("ClientIP(`nope`)", 10, "ClientIP: 'nope' is not an IP address", "bad-ip"),
    ("ClientIP(`fe80::1%eth0`)", 10, "is not an IP address or CIDR range", "zone"),
    ("ALPN(`acme-tls/1`)", 6, "reserved for ACME TLS-ALPN challenges", "acme"),
    ("ALPN(`ACME-TLS/1`)", 6, "reserved for ACME TLS-ALPN challenges", "acme-upper"),
    (
        "HostSNI(`a.example`) &&",
        24,
        "expected a matcher such as HostSNI(`example.com`)",
        "dangling",
    ),
    ("HostSNI(`a.example`) & ALPN(`h2`)", 22, "'&' is not an operator; use '&&'", "single-amp"),
    ("(HostSNI(`a.example`)", 22, "expected ')' to close the '(' at column 1", "unclosed"),
    ("HostSNI('a')", 9, "single quotes do not delimit strings", "single-quotes"),
]


@pytest.mark.parametrize(
    ("rule", "column", "message"), [v[:3] for v in INVALID], ids=[v[3] for v in INVALID]
)
def test_invalid_tcp_rules_name_the_column(rule: str, column: int, message: str) -> None:
    """A bad TCP rule raises RuleSyntaxError at the column of the offending text."""
    with pytest.raises(RuleSyntaxError) as info:
        parse_tcp(rule)
    assert info.value.column == column
    assert message in info.value.message


def test_internationalised_sni_name_is_accepted_as_punycode() -> None:
    """A non-ASCII HostSNI name matches its punycode form, as in Traefik."""
    rule = tcp_rule("HostSNI(`bücher.example`)")
    assert rule.match("xn--bcher-kva.example", "192.0.2.1", ())


def test_udp_rules_know_only_client_ip() -> None:
    """UDP rules parse ClientIP with operators and refuse TCP matchers with a hint."""
    assert parse_udp("ClientIP(`192.0.2.0/24`) && !ClientIP(`192.0.2.9`)") == And(
        LAN, Not(m("ClientIP", "192.0.2.9"))
    )
    with pytest.raises(RuleSyntaxError) as info:
        parse_udp("HostSNI(`a.example`)")
    assert info.value.column == 1
    assert info.value.message == "unknown matcher 'HostSNI'; UDP rules know only ClientIP"
    with pytest.raises(RuleSyntaxError, match="expected a matcher such as ClientIP"):
        parse_udp("ClientIP(`::1`) ||")


# --- Matching --------------------------------------------------------------------

# (rule, sni, client ip, alpn, matches)
MATCHES: list[tuple[str, str | None, str, tuple[str, ...], bool, str]] = [
    ("HostSNI(`*`)", None, "192.0.2.1", (), True, "catch-all-plain-tcp"),
    ("HostSNI(`*`)", "a.example", "192.0.2.1", ("h2",), True, "catch-all-tls"),
    ("HostSNI(`a.example`)", "a.example", "192.0.2.1", (), True, "sni-equal"),
    ("HostSNI(`a.example`)", "A.Example", "192.0.2.1", (), True, "sni-ignores-case"),
    ("HostSNI(`A.example`)", "a.example", "192.0.2.1", (), True, "rule-name-ignores-case"),
    ("HostSNI(`a.example.`)", "a.example", "192.0.2.1", (), True, "rule-trailing-dot"),
    ("HostSNI(`a.example`)", "b.example", "192.0.2.1", (), False, "sni-other"),
    ("HostSNI(`a.example`)", None, "192.0.2.1", (), False, "sni-absent"),
    ("HostSNI(`a.example`)", "", "192.0.2.1", (), False, "sni-empty"),
    ("HostSNI(`*.example.com`)", "db.example.com", "192.0.2.1", (), True, "wildcard-one-label"),
    ("HostSNI(`*.example.com`)", "a.db.example.com", "192.0.2.1", (), False, "wildcard-two"),
    ("HostSNI(`*.example.com`)", "example.com", "192.0.2.1", (), False, "wildcard-apex"),
    ("HostSNIRegexp(`^.+\\.example\\.com$`)", "x.example.com", "192.0.2.1", (), True, "re"),
    ("HostSNIRegexp(`^.+\\.example\\.com$`)", "example.com", "192.0.2.1", (), False, "re-miss"),
    ("HostSNIRegexp(`example`)", "x.example.org", "192.0.2.1", (), True, "re-unanchored"),
    ("HostSNIRegexp(`^.*$`)", None, "192.0.2.1", (), True, "re-matches-no-sni"),
    ("HostSNIRegexp(`^a\\.example$`)", "A.EXAMPLE", "192.0.2.1", (), True, "re-lower-cased"),
    # 19.6 s on 4 KB for a backtracking engine; RE2 answers at once.
    ("HostSNIRegexp(`^(.*)\\.(.*)\\.(.*)x$`)", "a." * 4096, "192.0.2.1", (), False, "re-linear"),
    ("ClientIP(`192.0.2.0/24`)", None, "192.0.2.77", (), True, "cidr-in"),
    ("ClientIP(`192.0.2.0/24`)", None, "198.51.100.1", (), False, "cidr-out"),
    ("ClientIP(`192.0.2.7`)", None, "192.0.2.7", (), True, "address-equal"),
    ("ClientIP(`192.0.2.0/24`)", None, "::ffff:192.0.2.9", (), True, "v4-mapped-peer"),
    ("ClientIP(`::1`)", None, "::1", (), True, "v6-equal"),
    ("ClientIP(`fe80::/10`)", None, "fe80::1%lo", (), True, "v6-peer-with-zone"),
    ("ClientIP(`192.0.2.0/24`)", None, "::1", (), False, "family-mismatch"),
    ("ClientIP(`192.0.2.0/24`)", None, "not-an-ip", (), False, "unreadable-peer"),
    ("ALPN(`h2`)", "a.example", "192.0.2.1", ("h2", "http/1.1"), True, "alpn-offered"),
    ("ALPN(`h2`)", "a.example", "192.0.2.1", ("http/1.1",), False, "alpn-not-offered"),
    ("ALPN(`h2`)", None, "192.0.2.1", (), False, "alpn-plain-tcp"),
    ("!ALPN(`h2`)", "a.example", "192.0.2.1", (), True, "not-alpn"),
    (
        "HostSNI(`a.example`) || (HostSNI(`b.example`) && !ALPN(`h2`))",
        "b.example",
        "192.0.2.1",
        ("h2",),
        False,
        "doc-example-b-h2",
    ),
    (
        "HostSNI(`a.example`) || (HostSNI(`b.example`) && !ALPN(`h2`))",
        "b.example",
        "192.0.2.1",
        ("http/1.1",),
        True,
        "doc-example-b-http1",
    ),
    (
        "HostSNI(`a.example`) || HostSNI(`b.example`) && ALPN(`h2`)",
        "a.example",
        "192.0.2.1",
        (),
        True,
        "precedence-or-of-and",
    ),
    (
        "(HostSNI(`a.example`) || HostSNI(`b.example`)) && ALPN(`h2`)",
        "a.example",
        "192.0.2.1",
        (),
        False,
        "precedence-parentheses",
    ),
    (
        "ClientIP(`192.0.2.0/24`) && HostSNI(`*`)",
        None,
        "192.0.2.5",
        (),
        True,
        "client-ip-and-catch-all",
    ),
]


@pytest.mark.parametrize(
    ("rule", "sni", "client_ip", "alpn", "expected"),
    [v[:5] for v in MATCHES],
    ids=[v[5] for v in MATCHES],
)
def test_compiled_tcp_rule_matches(
    rule: str, sni: str | None, client_ip: str, alpn: tuple[str, ...], expected: bool
) -> None:
    """The compiled matcher decides as Traefik's TCP muxer does."""
    assert tcp_rule(rule).match(sni, client_ip, alpn) is expected


@pytest.mark.parametrize(
    ("rule", "client_ip", "expected"),
    [
        ("", "192.0.2.1", True),
        ("ClientIP(`127.0.0.0/8`)", "127.0.0.5", True),
        ("ClientIP(`127.0.0.0/8`)", "::ffff:127.0.0.5", True),
        ("ClientIP(`127.0.0.0/8`)", "192.0.2.1", False),
        ("!ClientIP(`127.0.0.1`)", "127.0.0.2", True),
    ],
    ids=["no-rule", "in-range", "mapped-peer", "out-of-range", "negated"],
)
def test_compiled_udp_rule_matches(rule: str, client_ip: str, expected: bool) -> None:
    """A UDP rule matches the client address; no rule matches every client."""
    assert udp_rule(rule).match(client_ip) is expected


# --- What the runtime needs of a rule ----------------------------------------------


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("HostSNI(`*`)", False),
        ("ClientIP(`192.0.2.0/24`)", False),
        ("HostSNI(`*`) && ClientIP(`192.0.2.0/24`)", False),
        ("HostSNI(`a.example`)", True),
        ("HostSNIRegexp(`^a`)", True),
        ("ALPN(`h2`)", True),
        ("!ALPN(`h2`)", True),
        ("ClientIP(`192.0.2.0/24`) || HostSNI(`a.example`)", True),
    ],
    ids=[
        "catch-all",
        "client-ip",
        "catch-all-and-ip",
        "sni-name",
        "sni-regexp",
        "alpn",
        "negated-alpn",
        "sni-inside-or",
    ],
)
def test_needs_client_hello(rule: str, expected: bool) -> None:
    """Only rules that read the server name or ALPN make the runtime peek at the ClientHello."""
    assert needs_client_hello(parse_tcp(rule)) is expected
    assert tcp_rule(rule).needs_client_hello is expected


@pytest.mark.parametrize(
    ("rule", "priority"),
    [
        ("HostSNI(`*`)", CATCH_ALL_PRIORITY),
        ("hostsni(`*`)", CATCH_ALL_PRIORITY),
        ("HostSNI(`*`) && ClientIP(`192.0.2.0/24`)", 40),
        ("HostSNI(`a.example`)", 20),
        ("ClientIP(`192.168.0.12`)", 24),
        ("HostSNI(`bücher.example`)", 26),
    ],
    ids=["catch-all", "catch-all-any-spelling", "catch-all-combined", "sni", "ip", "utf8-bytes"],
)
def test_default_priority_is_rule_length_except_the_catch_all(rule: str, priority: int) -> None:
    """Default priority is the rule's byte length; HostSNI(`*`) alone gets -1 (tried last)."""
    assert default_priority(rule, parse_tcp(rule)) == priority
    assert tcp_rule(rule).priority == priority


def test_catch_all_is_only_host_sni_star_alone() -> None:
    """is_catch_all holds for HostSNI(`*`) alone, not for rules that contain it."""
    assert is_catch_all(parse_tcp("HostSNI(`*`)"))
    assert tcp_rule("HostSNI(`*`)").catch_all
    assert not is_catch_all(parse_tcp("!HostSNI(`*`)"))
    assert not is_catch_all(parse_tcp("HostSNI(`*`) || ALPN(`h2`)"))


def test_udp_priority_without_a_rule_is_the_lowest() -> None:
    """A UDP router without a rule defaults to -1, below any ClientIP rule."""
    assert udp_rule("").priority == CATCH_ALL_PRIORITY
    assert udp_rule("ClientIP(`::1`)").priority == len("ClientIP(`::1`)")
