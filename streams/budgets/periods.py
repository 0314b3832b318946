"""Which budget period an event falls in, by the event's own time (`ts`), never by processing time.

Calendar periods (day, week starting Monday, month) are computed in the budget's IANA zone: the local
calendar date is taken in that zone, and the period's local midnight boundaries are converted back to UTC
through zoneinfo, so a DST week is 167 or 169 hours long and a Berlin month starts at 23:00 or 22:00 UTC.
Rolling windows (`rolling:<N>h|d`) are sums of hourly buckets of event time: the window of an event is
the N hours ending at the end of its hour bucket (hour granularity, so a 24 h window may include up to one
hour more than a strict sliding window; stated and accepted to keep state to one number per hour).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo

from .model import Budget

HOUR = timedelta(hours=1)


def _local_midnight_utc(day: date, zone: ZoneInfo) -> datetime:
    """UTC instant of local midnight; if midnight does not exist (DST jump at 00:00), the first instant after."""
    naive = datetime(day.year, day.month, day.day)
    for fold in (0, 1):
        local = naive.replace(tzinfo=zone, fold=fold)
        as_utc = local.astimezone(timezone.utc)
        # A non-existent local time does not survive the round trip; fold=1 then maps past the gap.
        if as_utc.astimezone(zone).replace(tzinfo=None) == naive:
            return as_utc
    # In a gap, fold=0 applies the offset before the jump: that is exactly the instant of the transition.
    return naive.replace(tzinfo=zone, fold=0).astimezone(timezone.utc)


def hour_floor(ts: datetime) -> datetime:
    return ts.astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0)


def hour_key(ts: datetime) -> str:
    """Key of an hourly bucket (rolling budgets store spend per hour)."""
    return "hour:" + hour_floor(ts).strftime("%Y-%m-%dT%HZ")


def hour_from_key(key: str) -> datetime:
    return datetime.strptime(key, "hour:%Y-%m-%dT%HZ").replace(tzinfo=timezone.utc)


def calendar_window(period: str, tz: str, ts: datetime) -> tuple[datetime, datetime, str]:
    # astimezone(ZoneInfo) costs ~20 us; UTC, the default zone, needs no zone rules
    local = ts.astimezone(timezone.utc) if tz == "UTC" else ts.astimezone(ZoneInfo(tz))
    return _calendar_window_of(period, tz, local.date())


@lru_cache(maxsize=4096)  # pure; asked for on every admission, decision and spend entry of a calendar budget
def _calendar_window_of(period: str, tz: str, local_day: date) -> tuple[datetime, datetime, str]:
    zone = ZoneInfo(tz)
    if period == "day":
        first, following = local_day, local_day + timedelta(days=1)
        label = f"day:{local_day.isoformat()}"
    elif period == "week":
        first = local_day - timedelta(days=local_day.weekday())
        following = first + timedelta(days=7)
        iso = first.isocalendar()
        label = f"week:{iso.year}-W{iso.week:02d}"
    elif period == "month":
        first = local_day.replace(day=1)
        following = (first + timedelta(days=32)).replace(day=1)
        label = f"month:{first.strftime('%Y-%m')}"
    else:
        raise ValueError(f"period: {period!r} is not a calendar period")
    return _local_midnight_utc(first, zone), _local_midnight_utc(following, zone), f"{label}@{tz}"


def rolling_window(hours: int, ts: datetime) -> tuple[datetime, datetime, str]:
    end = hour_floor(ts) + HOUR
    return end - hours * HOUR, end, f"rolling:{hours}h@{end.strftime('%Y-%m-%dT%HZ')}"


def period_window(budget: Budget, ts: datetime) -> tuple[datetime, datetime, str]:
    """(start, end, period_key) in UTC of the period holding `ts`; end is exclusive.

    For calendar periods the key names the period and zone (`month:2026-11@Europe/Berlin`): a new key is a
    new, clean period. For rolling budgets the key names the window ending with ts's hour bucket.
    """
    if ts.tzinfo is None:
        raise ValueError("ts must be timezone-aware")
    hours = budget.rolling_hours
    if hours is not None:
        return rolling_window(hours, ts)
    return calendar_window(budget.period, budget.tz, ts)


__all__ = ["calendar_window", "hour_floor", "hour_from_key", "hour_key", "period_window", "rolling_window"]
