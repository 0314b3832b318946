"""Period windows by event time, in the budget's zone, across DST; rolling windows."""

from datetime import datetime, timedelta, timezone

from streams.budgets import parse_budget, period_window

UTC = timezone.utc


def budget(period, tz="UTC"):
    return parse_budget({"name": "p", "scope": {}, "limit": "1", "period": period, "tz": tz})


def test_month_boundary_in_berlin():
    b = budget("month", "Europe/Berlin")
    # 23:30 UTC on 31 Oct is already November in Berlin (CET, UTC+1)
    start, end, key = period_window(b, datetime(2026, 10, 31, 23, 30, tzinfo=UTC))
    assert key == "month:2026-11@Europe/Berlin"
    assert start == datetime(2026, 10, 31, 23, tzinfo=UTC) and end == datetime(2026, 11, 30, 23, tzinfo=UTC)
    _, _, before = period_window(b, datetime(2026, 10, 31, 22, 59, tzinfo=UTC))
    assert before == "month:2026-10@Europe/Berlin"
    # October starts in summer time (UTC+2) and ends in winter time: 31 days + 1 hour
    oct_start, oct_end, _ = period_window(b, datetime(2026, 10, 15, tzinfo=UTC))
    assert oct_start == datetime(2026, 9, 30, 22, tzinfo=UTC) and oct_end - oct_start == timedelta(days=31, hours=1)


def test_dst_week_is_167_hours_and_starts_monday():
    b = budget("week", "America/New_York")
    start, end, key = period_window(b, datetime(2026, 3, 5, 12, tzinfo=UTC))  # DST starts Sun 8 Mar 2026
    assert key == "week:2026-W10@America/New_York"
    assert start == datetime(2026, 3, 2, 5, tzinfo=UTC)  # Monday 00:00 EST
    assert end == datetime(2026, 3, 9, 4, tzinfo=UTC)  # next Monday 00:00 EDT
    start2, end2, key2 = period_window(b, datetime(2026, 3, 9, 4, 0, tzinfo=UTC))
    assert key2 == "week:2026-W11@America/New_York" and start2 == end
    dst_start, dst_end, _ = period_window(b, datetime(2026, 3, 8, 12, tzinfo=UTC))
    assert dst_end - dst_start == timedelta(hours=167)


def test_day_with_missing_midnight():
    # Chile moves clocks 00:00 -> 01:00 on 6 Sep 2026: that day starts at 01:00 local (04:00 UTC)
    b = budget("day", "America/Santiago")
    start, end, key = period_window(b, datetime(2026, 9, 6, 12, tzinfo=UTC))
    assert key == "day:2026-09-06@America/Santiago"
    assert start == datetime(2026, 9, 6, 4, tzinfo=UTC) and end == datetime(2026, 9, 7, 3, tzinfo=UTC)


def test_rolling_window_hour_buckets():
    b = budget("rolling:24h")
    start, end, key = period_window(b, datetime(2026, 11, 1, 10, 17, tzinfo=UTC))
    assert end == datetime(2026, 11, 1, 11, tzinfo=UTC) and end - start == timedelta(hours=24)
    assert key == "rolling:24h@2026-11-01T11Z"
    start7, end7, _ = period_window(budget("rolling:7d"), datetime(2026, 11, 1, 10, tzinfo=UTC))
    assert end7 - start7 == timedelta(days=7)
