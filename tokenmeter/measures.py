"""The measures of anomaly records (`unit` in tokenmeter/records.py) as people read them: money as money, rates with
their unit, ratios as percentages. One formatter, so the Anomalies page and the alert texts (Slack) show the same
figure the same way; the records themselves keep their exact decimal strings. Money (`format_money`, `usd_digits`)
is the dashboard's rule, shared with the budget and drift alert texts.

The detector judges 5-minute buckets (`ANOMALY_BUCKET_SECONDS`); a rate "per hour" is one bucket's amount times 12,
and an anomaly's `observed` is the rate of its busiest bucket (its peak), not a total over an hour.

    format_measure("852.000000000000", "requests_per_hour")   -> "852 requests/hour"
    format_measure("19.847158", "requests_per_hour")          -> "20 requests/hour"
    format_measure("0.044833", "error_ratio")                 -> "4.5%"
    format_measure("1.374", "usd_per_hour")                   -> "$1.37/hour"
    format_measure("0.000240", "usd_per_1k_tokens")           -> "$0.00024 per 1k tokens"
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

ANOMALY_BUCKET_SECONDS = 300  # the anomaly detector's bucket (streams/anomalies/detectors.Config.bucket_s)

# unit -> (what follows the number, what a chart's axis is called)
UNITS = {
    "usd_per_hour": ("/hour", "USD per hour"),
    "usd_per_1k_tokens": (" per 1k tokens", "USD per 1k tokens"),
    "tokens_per_hour": (" tokens/hour", "tokens per hour"),
    "unpriced_tokens_per_hour": (" unpriced tokens/hour", "unpriced tokens per hour"),
    "requests_per_hour": (" requests/hour", "requests per hour"),
    "tokens_per_request": (" tokens/request", "tokens per request"),
    "error_ratio": ("", "share of requests failing"),
}


def _decimal(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        number = value if isinstance(value, (Decimal, int)) and not isinstance(value, bool) else Decimal(str(value))
        number = Decimal(number)
    except (InvalidOperation, ValueError):  # ValueError: str() of an int above 4,300 digits
        return None
    # beyond 10^±1000 no figure is real (a hand-written record): shown as written, not computed with (x 100 overflowed)
    return number if number.is_finite() and abs(number.adjusted()) <= 1000 else None


def _plain(number: Decimal, places: int) -> str:
    """`number` rounded half up to `places` decimals, with thousands separators; "-0" reads "0". From 10^18 up (no
    real rate or amount: a record anyone could write) in scientific notation: quantizing there exceeded the decimal
    context's 28 digits (InvalidOperation in a dashboard callback)."""
    if number.adjusted() >= 18:
        return f"{number:.3e}"
    rounded = number.quantize(Decimal(1).scaleb(-places), ROUND_HALF_UP)
    return f"{abs(rounded) if rounded == 0 else rounded:,f}"


def format_count_rate(number: Decimal) -> str:
    """Whole numbers from 10 up ("852", "18,701"), one decimal below ("7.8"), two below 1 ("0.25")."""
    size = abs(number)
    return _plain(number, 0 if size >= 10 or number == number.to_integral_value() else 1 if size >= 1 else 2)


def usd_digits(number: Any) -> str:
    """A USD amount's digits: cents from a dollar up, else 4 decimals (as the dashboard's `format_usd`: a small cost
    or a $0.10 budget must not read 0.00, or 0.10 at 104 %): "1,234.57", "0.1044", "0.00"."""
    number = number if isinstance(number, Decimal) else Decimal(str(number))
    return _plain(number, 2 if abs(number) >= 1 or number == 0 else 4)


def format_money(number: Decimal) -> str:
    """`usd_digits` with the dollar sign: "$1,234.57", "-$0.0042". An amount that is not zero but rounds to it says
    so, "<$0.0001" (it read "$0.0000", which is neither the "$0.00" of nothing nor a figure)."""
    text = usd_digits(number)
    if number and text.lstrip("-") == "0.0000":
        return "<$0.0001" if number > 0 else ">-$0.0001"
    return f"-${text[1:]}" if text.startswith("-") else f"${text}"


def format_signed_money(number: Decimal) -> str:
    """A difference: "+$1.23", "-$0.0042"; one that rounds to nothing reads "$0.00" (it read "+$0.0000")."""
    if Decimal(usd_digits(number).replace(",", "")) == 0:
        return "$0.00"
    text = format_money(number)
    return "+" + text if number > 0 else text


def format_small_money(number: Decimal) -> str:
    """Prices per 1k tokens are fractions of a cent: 2 significant digits ($0.0054, $0.00024), cents from $1 up."""
    if abs(number) >= 1 or number == 0:
        return format_money(number)
    places = max(4, -number.adjusted() + 1)
    text = format(number.quantize(Decimal(1).scaleb(-places), ROUND_HALF_UP), "f")
    return f"-${text[1:]}" if text.startswith("-") else f"${text}"


def format_percent(ratio: Decimal) -> str:
    """A share (0..1) as a percentage with one decimal, without a trailing ".0": 1 -> "100%", 0.0448 -> "4.5%"."""
    text = _plain(ratio * 100, 1)
    return (text[:-2] if text.endswith(".0") else text) + "%"


def count_of(count: int, noun: str, plural: str | None = None) -> str:
    """"1 event", "4 rows", "1,250 events": the count with its noun in the right number (texts read "row(s)")."""
    return f"{count:,} {noun if count == 1 else plural or noun + 's'}"


def format_number(value: Any, unit: str) -> str:
    """The number alone, in the unit's presentation ("$1.37", "852", "4.5%"); "n/a" when there is none."""
    number = _decimal(value)
    if number is None:
        if value is None or value == "":
            return "n/a"
        return value[:200] if isinstance(value, str) else "n/a" if isinstance(value, int) else str(value)[:200]
    if unit == "error_ratio":
        return format_percent(number)
    if unit == "usd_per_1k_tokens":
        return format_small_money(number)
    if unit.startswith("usd"):
        return format_money(number)
    return format_count_rate(number)


def unit_suffix(unit: str) -> str:
    """What follows a number of this unit ("/hour", " requests/hour"); an unknown unit in words."""
    known = UNITS.get(unit)
    if known is not None:
        return known[0]
    return " " + unit.replace("_per_", "/").replace("_", " ") if unit else ""


def unit_title(unit: str) -> str:
    """An axis title for the unit ("requests per hour")."""
    known = UNITS.get(unit)
    return known[1] if known is not None else unit.replace("_", " ")


def format_measure(value: Any, unit: str) -> str:
    """The number with its unit: "$1.37/hour", "852 requests/hour", "4.5%", "1,165 tokens/request"."""
    text = format_number(value, unit)
    return text if text == "n/a" else text + unit_suffix(unit)


UNPRICED_OBSERVED = "unpriced (cost unknown)"


def format_observed(value: Any, unit: str, unpriced: bool = False) -> str:
    """An anomaly's observed peak; a model with no price (the record's optional `unpriced`) has a cost of 0 that is
    unknown, not free: "unpriced (cost unknown)", never "$0.00/hour"."""
    return UNPRICED_OBSERVED if unpriced else format_measure(value, unit)


def format_band(low: Any, high: Any, unit: str) -> str:
    """The detector's normal range: "normal $0.00 – $1.01/hour", "normal 0% – 19.5%"."""
    return f"normal {format_number(low, unit)} – {format_measure(high, unit)}"
