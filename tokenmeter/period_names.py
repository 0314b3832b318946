"""A budget's period key (`day:2026-12-05@UTC`, streams/budgets/periods.py) as people read it in a text: "today
(2026-12-05, UTC)", "this month (December 2026, UTC)". The key stays the machine field of records and payloads; only
the words around it change. "today"/"this" are relative to `now` in the budget's zone: an alert says them about the
moment it was raised, the dashboard about the moment it is looked at.

    period_name("day:2026-12-05@UTC", now=2026-12-05T10:00Z)        -> "today (2026-12-05, UTC)"
    period_name("month:2026-11@Europe/Berlin", now=2026-12-05T10:00Z) -> "last month (November 2026, Europe/Berlin)"
    period_name("rolling:24h@2026-12-05T14Z", now=...)               -> "the 24 hours to 2026-12-05 14:00 UTC"
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_CALENDAR = re.compile(r"^(day|week|month):([0-9W-]+)@(.+)$")
_ROLLING = re.compile(r"^rolling:(\d+)h@(\d{4}-\d{2}-\d{2})T(\d{2})Z$")


def _local_today(now: datetime, tz: str) -> date | None:
    try:
        return now.astimezone(timezone.utc if tz == "UTC" else ZoneInfo(tz)).date()
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _calendar_name(period: str, label: str, tz: str, now: datetime) -> str | None:
    today = _local_today(now, tz)
    if today is None:
        return None
    if period == "day":
        day = date.fromisoformat(label)
        words = {0: "today", 1: "yesterday", -1: "tomorrow"}.get((today - day).days)
        return f"{words} ({label}, {tz})" if words else f"{label} ({tz})"
    if period == "week":
        year, week = label.split("-W")
        monday = date.fromisocalendar(int(year), int(week), 1)
        this_monday = today - timedelta(days=today.weekday())
        words = {0: "this week", 7: "last week"}.get((this_monday - monday).days)
        return f"{words} (from {monday.isoformat()}, {tz})" if words else f"the week from {monday.isoformat()} ({tz})"
    first = date.fromisoformat(label + "-01")
    month = first.strftime("%B %Y")  # English month names: the C locale, as everywhere in the app
    months_back = (today.year - first.year) * 12 + today.month - first.month
    words = {0: "this month", 1: "last month"}.get(months_back)
    return f"{words} ({month}, {tz})" if words else f"{month} ({tz})"


def period_name(key: str, now: datetime) -> str:
    """The period in words; a key of another shape (or an unknown zone) is returned as it is, and a value that is not
    text at all (a record anyone could write to a topic) as its text."""
    if not isinstance(key, str):
        return "" if key is None else str(key)
    calendar = _CALENDAR.match(key)
    try:
        if calendar:
            return _calendar_name(*calendar.groups(), now) or key
        rolling = _ROLLING.match(key)
        if rolling:
            hours, day, hour = rolling.groups()
            end = datetime.fromisoformat(f"{day}T{hour}:00+00:00")  # ValueError for 2026-02-31 or hour 99
            return f"the {int(hours):,} hours to {end:%Y-%m-%d %H}:00 UTC"
    except ValueError:  # a malformed date in a well-shaped key
        return key
    return key
