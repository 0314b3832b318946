"""Fast tests of the dashboard's data building and formatting: no browser, no warehouse."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import polars as pl

from dashboards import figures
from dashboards.filters import Filters
from dashboards.formatting import describe_freshness, format_count, format_usd, format_usd_exact
from dashboards.overview_data import per_model, summarize_by_team

COST = pl.Decimal(18, 12)


def team_status_frame() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "team": ["search", "search", "billing", None],
            "pricing_status": ["priced", "unpriced", "priced", "priced"],
            "events": [3, 2, 1, 1],
            "input_tokens": [300, 50, 100, 10],
            "output_tokens": [30, 5, 10, 1],
            "cost_usd": [Decimal("1.000000000001"), Decimal("0"), Decimal("0.25"), Decimal("0.000001")],
            "unpriced_events": [0, 2, 0, 0],
        },
        schema_overrides={"cost_usd": COST, "events": pl.UInt64, "input_tokens": pl.UInt64},
    )


def test_kpis_are_exact_and_keep_unpriced_usage_separate():
    kpis, by_team = summarize_by_team(team_status_frame())
    assert kpis.cost_usd == Decimal("1.250001000001")
    assert (kpis.events, kpis.input_tokens, kpis.output_tokens) == (7, 460, 46)
    assert (kpis.unpriced_events, kpis.unpriced_tokens) == (2, 55)
    rows = {row.team: row for row in by_team}
    assert set(rows) == {"search", "billing", "(no team)"}
    assert rows["search"].input_tokens == 300 and rows["search"].unpriced_tokens == 55
    assert by_team[0].team == "search"  # most expensive first


def test_empty_frames_give_zero_kpis_and_empty_figures():
    empty = team_status_frame().clear()
    kpis, by_team = summarize_by_team(empty)
    assert kpis.cost_usd == Decimal(0) and kpis.events == 0 and by_team == []
    fig = figures.cost_by_team(by_team)
    assert "waiting for events" in fig.layout.annotations[0].text


def test_per_model_rate_is_none_when_nothing_priced():
    frame = pl.DataFrame({
        "provider": ["openai", "acme"], "model": ["gpt-4o", "mystery-1"],
        "events": [2, 1], "input_tokens": [1000, 10], "output_tokens": [1000, 10],
        "cost_usd": [Decimal("0.03"), Decimal("0")], "unpriced_events": [0, 1],
    }, schema_overrides={"cost_usd": COST})
    rows = {r.model: r for r in per_model(frame)}
    assert rows["gpt-4o"].cost_per_1k_tokens == Decimal("0.015")
    assert rows["mystery-1"].cost_per_1k_tokens is None and rows["mystery-1"].all_unpriced


def test_money_and_count_formatting():
    assert format_usd(Decimal("1234.565")) == "$1,234.57"
    assert format_usd(Decimal("0.00123")) == "$0.0012"
    assert format_usd(Decimal("0")) == "$0.00"
    assert format_usd_exact(Decimal("1.250001000001")) == "$1.250001000001"
    assert format_count(1234) == "1,234" and format_count(2_500_000) == "2.50M"


def test_freshness_levels():
    now = datetime(2025, 1, 1, 12, 0, tzinfo=timezone.utc)
    assert describe_freshness(now - timedelta(seconds=12), now).text == "last event 12 s ago"
    assert describe_freshness(now - timedelta(seconds=12), now).level == "fresh"
    assert describe_freshness(now - timedelta(minutes=5), now).level == "amber"
    assert describe_freshness(now - timedelta(hours=2), now).level == "red"
    assert describe_freshness(None).level == "empty"


def test_filters_round_trip_through_the_query_string():
    today = date(2025, 3, 10)
    default = Filters.default(today)
    assert default.end == today and default.start == date(2025, 3, 4) and default.bucket == "day"
    chosen = Filters.from_inputs("2025-03-09", "2025-03-10", ["search", "billing"], today)
    assert chosen.bucket == "hour" and chosen.until == datetime(2025, 3, 11, tzinfo=timezone.utc)
    from urllib.parse import parse_qs
    query = {k: v[0] for k, v in parse_qs(chosen.query_string()[1:]).items()}
    assert Filters.from_query(query, today) == chosen
    assert Filters.from_inputs("garbage", None, None, today) == default
