"""The circuit breaker's expression language: parsing, evaluation and error positions."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from middleware.http.breaker_expression import ExpressionError, parse


@dataclass
class Numbers:
    """Fixed metric values for an expression to read."""

    network: float = 0.0
    codes: dict[int, int] = field(default_factory=dict)
    latency_ms: dict[float, float] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)

    def network_error_ratio(self) -> float:
        self.asked.append("network")
        return self.network

    def response_code_ratio(self, start_a: int, end_a: int, start_b: int, end_b: int) -> float:
        self.asked.append("codes")
        a = sum(n for c, n in self.codes.items() if start_a <= c < end_a)
        b = sum(n for c, n in self.codes.items() if start_b <= c < end_b)
        return a / b if b else 0.0

    def latency_at_quantile_ms(self, quantile: float) -> float:
        self.asked.append("latency")
        return self.latency_ms.get(quantile, 0.0)


HALF_ERRORS = Numbers(network=0.5, codes={200: 6, 500: 3, 503: 1}, latency_ms={50.0: 120})

VALID = {
    "network-over": ("NetworkErrorRatio() > 0.3", True),
    "network-not-over": ("NetworkErrorRatio() > 0.5", False),
    "greater-or-equal": ("NetworkErrorRatio() >= 0.5", True),
    "less": ("NetworkErrorRatio() < 0.5", False),
    "less-or-equal": ("NetworkErrorRatio() <= 0.5", True),
    "equal": ("NetworkErrorRatio() == 0.5", True),
    "not-equal": ("NetworkErrorRatio() != 0.5", False),
    "integer-compares-with-ratio": ("NetworkErrorRatio() > 0", True),
    "code-ratio": ("ResponseCodeRatio(500, 600, 0, 600) > 0.35", True),
    "code-ratio-half-open": ("ResponseCodeRatio(500, 503, 0, 600) == 0.3", True),
    "latency": ("LatencyAtQuantileMS(50.0) > 100", True),
    "latency-decimal-bound": ("LatencyAtQuantileMS(50) > 119.5", True),
    "and": ("NetworkErrorRatio() > 0.3 && LatencyAtQuantileMS(50.0) > 200", False),
    "or": ("NetworkErrorRatio() > 0.9 || LatencyAtQuantileMS(50.0) > 100", True),
    "and-binds-tighter": (
        "NetworkErrorRatio() > 0.3 || NetworkErrorRatio() > 0.9 && NetworkErrorRatio() > 0.9",
        True,
    ),
    "parentheses-group": (
        "(NetworkErrorRatio() > 0.3 || NetworkErrorRatio() > 0.9) && NetworkErrorRatio() > 0.9",
        False,
    ),
    "no-spaces": ("NetworkErrorRatio()>0.3&&ResponseCodeRatio(500,600,0,600)>.3", True),
    "nested-parentheses": ("((NetworkErrorRatio() > 0.3))", True),
}


@pytest.mark.parametrize(("text", "expected"), list(VALID.values()), ids=list(VALID))
def test_valid_expressions_evaluate(text, expected):
    """Comparisons, && / || precedence and parentheses evaluate as oxy's predicates do."""
    condition = parse(text)
    assert condition.test(HALF_ERRORS) is expected
    assert condition.text == text


def test_functions_used_are_reported():
    """The parsed condition names the functions it calls (latency is only kept when asked)."""
    condition = parse("NetworkErrorRatio() > 0.5 || ResponseCodeRatio(500, 600, 0, 600) > 0.5")
    assert condition.functions == {"NetworkErrorRatio", "ResponseCodeRatio"}


def test_or_and_and_short_circuit():
    """``||`` stops at the first true side, ``&&`` at the first false one."""
    numbers = Numbers(network=1.0)
    parse("NetworkErrorRatio() > 0.5 || LatencyAtQuantileMS(50) > 1").test(numbers)
    parse("NetworkErrorRatio() < 0.5 && LatencyAtQuantileMS(50) > 1").test(numbers)
    assert numbers.asked == ["network", "network"]


INVALID = {
    "empty": ("", 1, "empty expression"),
    "blank": ("   ", 1, "empty expression"),
    "unknown-function": ("NetworkErrorRate() > 0.5", 1, "unknown function 'NetworkErrorRate'"),
    "missing-operator": ("NetworkErrorRatio() 0.5", 21, "expected a comparison"),
    "doubled-operator": ("NetworkErrorRatio() >> 0.5", 22, "expected a number after '>'"),
    "missing-value": ("NetworkErrorRatio() >", 22, "found the end of the expression"),
    "single-ampersand": ("NetworkErrorRatio() > 0.5 & LatencyAtQuantileMS(50) > 1", 27, "'&&'"),
    "single-equals": ("NetworkErrorRatio() = 0.5", 21, "did you mean '=='"),
    "number-on-left": ("0.5 < NetworkErrorRatio()", 1, "expected a function"),
    "missing-parenthesis": ("(NetworkErrorRatio() > 0.5", 27, "expected ')'"),
    "extra-parenthesis": ("NetworkErrorRatio() > 0.5)", 26, "found ')'"),
    "call-without-parens": ("NetworkErrorRatio > 0.5", 19, "expected '(' after NetworkErrorRatio"),
    "too-many-arguments": ("NetworkErrorRatio(1) > 0.5", 19, "takes no arguments, got more"),
    "too-few-arguments": ("ResponseCodeRatio(500, 600) > 0.5", 27, "takes 4 arguments, got 2"),
    "decimal-status-code": ("ResponseCodeRatio(500.5, 600, 0, 600) > 0.5", 19, "integer"),
    "quantile-out-of-range": ("LatencyAtQuantileMS(150) > 10", 1, "percentage"),
    "stray-character": ("NetworkErrorRatio() > 0.5 $", 27, "unexpected character '$'"),
    "trailing-comparison": ("NetworkErrorRatio() > 0.5 > 1", 27, "expected '&&', '||'"),
    "dangling-or": ("NetworkErrorRatio() > 0.5 ||", 29, "expected a function"),
    "missing-comma": ("ResponseCodeRatio(500 600, 0, 600) > 0.5", 23, "expected ',' or ')'"),
}


@pytest.mark.parametrize(("text", "column", "message"), list(INVALID.values()), ids=list(INVALID))
def test_invalid_expressions_name_the_column(text, column, message):
    """A parse error names the 1-based column of the first mistake and what was expected."""
    with pytest.raises(ExpressionError) as caught:
        parse(text)
    assert caught.value.column == column, str(caught.value)
    assert message in str(caught.value)
    assert str(caught.value).startswith(f"column {column}: ")


def test_unknown_function_suggests_the_closest():
    """A misspelt function name gets a suggestion."""
    with pytest.raises(ExpressionError, match='did you mean "LatencyAtQuantileMS"'):
        parse("LatencyAtQuantileMs(50) > 10")
