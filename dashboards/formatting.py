"""Text formatting for the dashboard: money from Decimal (never float), counts, and data freshness."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Decimal

from tokenmeter.measures import format_money, format_signed_money

# Freshness thresholds: the loader flushes every second or so, so a minute without events already means
# the pipeline (or the traffic) stopped; a quarter of an hour is an incident.
AMBER_AFTER_SECONDS = 60
RED_AFTER_SECONDS = 15 * 60


def to_decimal(value: object) -> Decimal:
    """Money from the warehouse as Decimal; strings and ints are exact, a float would already be lossy."""
    if value is None:
        return Decimal(0)
    if isinstance(value, Decimal):
        return value
    if isinstance(value, (int, str)):
        return Decimal(value)
    raise TypeError(f"cost_usd: expected Decimal, int or decimal string, got {type(value).__name__}")


def format_usd(amount: Decimal) -> str:
    """`$1,234.57` for a dollar or more, `$0.0042` below: small LLM costs must not all read `$0.00` (the alert texts
    use the same rule: `tokenmeter.measures.format_money`)."""
    return format_money(amount)


def format_usd_change(amount: Decimal) -> str:
    """A difference with its sign, "+$1.23" / "-$0.0042"; "$0.00" when it rounds to nothing."""
    return format_signed_money(amount)


def format_usd_exact(amount: Decimal) -> str:
    """Full precision for tooltips, so finance can reconcile to the last nano-dollar."""
    text = format(amount.normalize(), "f") if amount != 0 else "0"
    return f"${text}"


def format_count(value: int) -> str:
    """`1,234` up to a million, then `1.23M` / `4.50B` with two decimals always: a column of counts keeps one
    precision, so `5.00M` stands beside `4.70M` (3 significant digits wrote `5M` beside `4.7M`)."""
    value = int(value)
    if abs(value) < 10**6:
        return f"{value:,}"
    for limit, suffix in ((10**6, "M"), (10**9, "B")):
        scaled = (Decimal(value) / limit).quantize(Decimal("0.01"), ROUND_HALF_UP)
        if abs(scaled) < 1000:  # 999,995,000 reads 1.00B, not 1,000.00M
            break
    return f"{scaled:,f}{suffix}"


def format_age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} d"


@dataclass(frozen=True)
class Freshness:
    text: str
    level: str  # "fresh" | "amber" | "red" | "empty"


def describe_freshness(last_event_ts: datetime | None, now: datetime | None = None) -> Freshness:
    """"last event 12 s ago", coloured by how stale the newest event is."""
    if last_event_ts is None:
        return Freshness("no events yet, waiting for data", "empty")
    now = now or datetime.now(timezone.utc)
    if last_event_ts.tzinfo is None:  # the warehouse stores UTC without a zone
        last_event_ts = last_event_ts.replace(tzinfo=timezone.utc)
    age = (now - last_event_ts).total_seconds()
    if age >= RED_AFTER_SECONDS:
        level = "red"
    elif age >= AMBER_AFTER_SECONDS:
        level = "amber"
    else:
        level = "fresh"
    return Freshness(f"last event {format_age(age)} ago", level)
