"""`tokenmeter demo-history` (issue 16: a demo with a past): 30 days with weekday and hour seasonality, one
injection of each anomaly kind, provider reports with a small drift whose causes the drift check names, calls
seen twice counted once, the previous month closed, and nothing written twice."""

from __future__ import annotations

import functools
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from tokenmeter.settings import Settings

pytestmark = pytest.mark.slow(seconds=42)  # rough seconds: longest files first (tests/suite_order.py)

NOW = datetime(2026, 12, 4, 21, 30, tzinfo=timezone.utc)


@functools.cache
def _priced_month(now: datetime) -> list[dict]:
    """The month up to `now`, priced (1.2-1.5 CPU-s): `write_history(now=NOW)` and the detector test at NOW read
    the same one, built once. Neither changes it (the loader builds its rows column by column, the detector
    reads)."""
    from warehouse.demo_history import history_events, priced_history

    return priced_history(history_events(now))


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    from warehouse import demo_history, open_warehouse
    from warehouse.demo_history import write_history

    data_dir = tmp_path_factory.mktemp("demo-history")
    # as `up --demo` runs it: the demo's finance file set (the close of the previous month keeps it)
    settings = Settings(data_dir=data_dir, cost_centers_file=demo_history.demo_finance_file(data_dir))
    month = _priced_month(NOW)
    with pytest.MonkeyPatch.context() as patch:  # write_history prices `history_events(now)`: the module's month
        patch.setattr(demo_history, "history_events", lambda now: now)
        patch.setattr(demo_history, "priced_history", lambda now: month if now == NOW else None)
        result = write_history(settings, now=NOW)
    again = write_history(settings, now=NOW)
    wh = open_warehouse(settings, serve=False)
    yield result, again, wh, settings
    wh.close()


def test_a_month_with_seasonality(written):
    result, again, wh, _ = written
    assert result["events"] > 5000 and again["events"] == 0  # a second start writes nothing
    days = wh.query("SELECT toDate(ts) AS d, toDayOfWeek(ts) AS w, count() AS n FROM priced_events GROUP BY d, w")
    assert days.height == 31  # 30 x 24 hours up to this hour: two partial days at the ends
    weekday = days.filter(days["w"] <= 5)["n"].median()
    weekend = days.filter(days["w"] >= 6)["n"].median()
    assert weekend < weekday * 0.6
    hours = wh.query("SELECT toHour(ts) AS h, count() AS n FROM priced_events WHERE toDayOfWeek(ts) <= 5"
                     " AND source = 'demo' GROUP BY h ORDER BY h")
    by_hour = dict(zip(hours["h"].to_list(), hours["n"].to_list()))
    assert by_hour[15] > 3 * by_hour[4]  # afternoon peak, quiet night
    unpriced = wh.query("SELECT count() AS n FROM priced_events WHERE pricing_status = 'unpriced'")["n"][0]
    assert unpriced > 0  # the unpriced_usage injection
    shift = wh.query("SELECT count() AS n FROM priced_events WHERE team = 'support-bot' AND model = 'gpt-5'")
    assert shift["n"][0] > 20  # model_shift


def test_provider_reports_drift_with_the_right_causes(written):
    from warehouse.drift import Thresholds, drift

    _, _, wh, _ = written
    from warehouse.demo_history import DEMO_DRIFT_MIN_USD

    limits = Thresholds(Decimal(5), Decimal(DEMO_DRIFT_MIN_USD))  # as `up --demo` runs it
    rows, totals = drift(wh, (NOW - timedelta(days=31)).date(), NOW.date(), limits)
    causes = sorted((r.day.isoformat(), r.model, r.cause) for r in rows if r.cause)
    assert [c[1:] for c in causes] == [("claude-sonnet-4-5-20250929", "price_change")] * 3 + [
        ("claude-sonnet-4-5-20250929", "missing_source")]  # the rest: within 0.8 %
    default = drift(wh, (NOW - timedelta(days=31)).date(), NOW.date())[0]
    assert [r.cause for r in default if r.cause] == ["missing_source"]  # 1.50 USD passes the default 1 USD too
    low = sorted((t.day.isoformat(), t.provider) for t in totals if t.coverage_pct < 99)
    assert low == [(c[0], "anthropic") for c in causes]  # coverage of every other bill: 99 % or more


def test_calls_seen_twice_count_once_and_the_previous_month_is_closed(written):
    from warehouse.dedup import duplicates_by_source_pair
    from warehouse.month_close import closed_months, closes_dir

    result, _, wh, settings = written
    pairs = duplicates_by_source_pair(wh)
    assert pairs.rows()[0][:3] == ("demo", "otel", result["sent"] - result["events"])
    assert result["closed"] == "2026-11" and "2026-11" in closed_months(closes_dir(settings))


def test_the_detector_finds_one_anomaly_of_each_kind_in_the_history_and_little_else():
    """The anomaly detector reads the history (as `up --demo` publishes it) and alerts once per injected kind.
    Before: 17 alerts here (31 in a live demo), 9 of them tokens_per_request on fay's key: the nightly embeddings
    batch ran under her key, so her usual output per call was ~10 tokens and each daytime chat a "jump"; and only
    4 of the 8 injected kinds were found. The one extra allowed: the unpriced model is also a new model."""
    from collections import Counter

    from streams.anomalies.detectors import KINDS

    alerts = _alerts(NOW)
    by_kind = Counter(a["kind"] for a in alerts)
    assert set(by_kind) == set(KINDS), by_kind
    assert by_kind["tokens_per_request"] == 1 and by_kind["new_model"] <= 2, by_kind
    assert len(alerts) <= len(KINDS) + 1, [(a["kind"], a["scope_value"], a["start"]) for a in alerts]
    scopes = {(a["kind"], a["scope_value"]) for a in alerts}
    assert ("tokens_per_request", "sk-acm-supp-bot") in scopes and ("spend_rate", "sk-glo-grow-hal") in scopes
    assert not [a for a in alerts if a["scope_value"] == "sk-acm-data-fay" and a["kind"] != "token_rate"]


# Start times of every kind: hours of the day, days of the week, first and last days of a month. On the old
# calendar (the month drawn from its first hour with one random stream) 6 of 7 start times raised 10 or 11 alerts: a
# second model_shift, spend_rate, tokens_per_request or error_rate on another scope of the same injection
# (the existing test above covers 2026-12-04T21:30).
# Each start costs 5-20 CPU-s (the detector over the month), so the suite keeps one that still fails on the old calendar
# with today's detector (suite10, docs/rounds/testing.md: of the seven, 11-01T12:00, 10-31T08:20, 11-29T14:00 and
# 11-14T19:30 still do, each with a second alert of one kind; 11-03T23:59 and 11-30T06:40, kept until then, no longer
# did), the cheapest of those that pass on today's code: the first of a month, a Sunday noon (spend_rate twice on the
# old calendar). The calendar itself (same weekday and hour, same calls) is the test after this one (0.6 s; it fails on
# the old calendar too). The sweep over 126 start times across a week and 12 others was run once by hand
# (docs/finance.md, "A demo with a past"). Two more that failed on 2026-12-06's detector (suite10 found them, demo17
# fixed them): 11-29T14:00 (a month from a Friday afternoon: 3 extra tokens_per_request alerts, a key's mean held at its
# first 30 calls' low draw, tests/streams/test_anomalies_key_mean_settles.py) and 11-08T09:00 (1 extra: a call and its
# OTel copy scored twice, tests/streams/test_anomalies_cross_source_copies.py).
START_TIMES = ["2026-11-01T12:00", "2026-11-29T14:00", "2026-11-08T09:00"]


def _alerts(now: datetime) -> list[dict]:
    from streams.anomalies.engine import AnomalyEngine

    priced = _priced_month(now)
    engine, alerts = AnomalyEngine(), []
    for i in range(0, len(priced), 500):  # in time order, as on the priced topic
        alerts += [u.record for u in engine.observe(priced[i:i + 500], now=now.timestamp())
                   if u.action == "open" and u.notify]
    alerts += [u.record for u in engine.advance_to(now.timestamp() + 3600) if u.action == "open" and u.notify]
    return alerts


@pytest.mark.parametrize("start", START_TIMES)
def test_one_alert_per_injected_kind_whatever_the_start_time(start):
    """Exactly one alert per injected kind (and the unpriced model's new_model), for any wall-clock start: the
    generator draws the month on a calendar of whole weeks (the same weekday and hour get the same calls) and the
    injections sit on fixed weekday afternoons of it."""
    from collections import Counter

    from streams.anomalies.detectors import KINDS

    alerts = _alerts(datetime.fromisoformat(start).replace(tzinfo=timezone.utc))
    expected = Counter({kind: 1 for kind in KINDS}) + Counter({"new_model": 1})  # the unpriced model is new too
    assert Counter(a["kind"] for a in alerts) == expected, [(a["kind"], a["scope_value"], a["start"]) for a in alerts]
    new_models = sorted(a["scope_value"] for a in alerts if a["kind"] == "new_model")
    assert new_models == ["sk-acm-sear-chen", "sk-glo-plat-lu"]


def test_the_same_weekday_and_hour_get_the_same_calls_whatever_the_start_minute():
    from warehouse.demo_history import history_events

    early = history_events(datetime(2026, 11, 20, 9, 5, tzinfo=timezone.utc))
    late = history_events(datetime(2026, 11, 20, 9, 55, tzinfo=timezone.utc) + timedelta(days=1))
    hour = "2026-11-12T14"  # inside both months
    assert [e for e in early if e["ts"].startswith(hour)] == [e for e in late if e["ts"].startswith(hour)]
    assert len([e for e in early if e["ts"].startswith(hour)]) > 20


def test_the_demo_maps_cost_centers_and_allocates_the_platform_teams_spend(written, tmp_path, monkeypatch):
    """`up --demo` gives its children TOKENMETER_COST_CENTERS_FILE=<data_dir>/demo-finance.yaml (unless a finance
    file is set): the README's month-close walk-through (`showback --month <closed month> --by cost_center`) then
    shows cost centers and the platform team's spend allocated to the others. Before: one `unmapped` row, nothing
    allocated."""
    import json

    from click.testing import CliRunner

    from app.supervisor import Supervisor
    from warehouse.finance_cli import showback

    _, _, _, settings = written
    for name in ("TOKENMETER_COST_CENTERS_FILE", "TOKENMETER_ALLOCATION_FILE"):
        monkeypatch.delenv(name, raising=False)
    env = Supervisor(Settings(data_dir=settings.data_dir), demo=True).child_env()
    path = env["TOKENMETER_COST_CENTERS_FILE"]
    assert path == str(settings.data_dir.resolve() / "demo-finance.yaml")
    mine = Settings(data_dir=tmp_path, cost_centers_file=tmp_path / "mine.yaml")
    assert "TOKENMETER_COST_CENTERS_FILE" not in Supervisor(mine, demo=True).child_env()  # the user's file wins
    out = CliRunner().invoke(showback, ["--month", "2026-11", "--by", "cost_center", "--format", "json"],
                             env={"TOKENMETER_DATA_DIR": str(settings.data_dir), "TOKENMETER_COST_CENTERS_FILE": path})
    assert out.exit_code == 0, out.output
    rows = {r["cost_center"]: r for r in json.loads(out.output)}
    assert "unmapped" not in rows and {"CC-1100", "CC-9000"} <= set(rows)
    assert Decimal(rows["CC-9000"]["total_usd"]) == 0 and Decimal(rows["CC-1100"]["allocated_usd"]) > 0
    assert sum(Decimal(r["allocated_usd"]) for r in rows.values()) == 0  # moved, not made up
