"""tokenmeter/measures.py with values no detector writes: the Anomalies page and the alert texts format figures read
from records on topics anyone can write to, so every value gives a text and never an exception."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tokenmeter.measures import format_band, format_measure

UNITS = ["usd_per_hour", "usd_per_1k_tokens", "error_ratio", "requests_per_hour", "tokens_per_request", "odd_unit", ""]
HOSTILE = [Decimal("1e400"), 10**30, -(10**30), Decimal("9e999999"), Decimal("1e-999999"), 10**5000,
           float("nan"), float("inf"), "x" * 1000, None, True, [1], {"a": 1}, Decimal("-0")]


@pytest.mark.parametrize("unit", UNITS)
@pytest.mark.parametrize("value", HOSTILE, ids=lambda v: type(v).__name__)
def test_any_value_gives_a_text(value, unit):
    assert isinstance(format_measure(value, unit), str)
    assert isinstance(format_band(value, value, unit), str)


def test_figures_beyond_any_real_rate_read_in_scientific_notation():
    # quantizing them exceeded the decimal context's 28 digits: InvalidOperation before
    assert format_measure(10**30, "requests_per_hour") == "1.000e+30 requests/hour"
    assert format_measure(Decimal("1e400"), "usd_per_hour") == "$1.000e+400/hour"


def test_a_value_that_is_no_figure_is_shown_cut_not_whole():
    assert format_measure("x" * 1000, "requests_per_hour") == "x" * 200 + " requests/hour"
    assert format_measure(10**5000, "usd_per_hour") == "n/a"  # str() of it raised ValueError


def test_real_figures_are_unchanged():
    assert format_measure(852, "requests_per_hour") == "852 requests/hour"
    assert format_measure(Decimal("0.0448"), "error_ratio") == "4.5%"
    assert format_band(0, Decimal("1.005"), "usd_per_hour") == "normal $0.00 – $1.01/hour"
