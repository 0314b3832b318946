"""What on-call people read in an alert (titles, summaries, Slack fields): times in UTC to the minute as the
dashboard writes them ("2026-11-26 04:00 UTC"), not ISO text with microseconds; percentages as the summary and the
pages write them; counts with the noun in the right number. PagerDuty `custom_details` and webhook bodies keep the
exact machine fields."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import orjson
from test_alerts_support import make_alert

from streams.alerts.payloads import pagerduty_event, slack_message, webhook_body
from streams.anomalies.gating import AnomalyUpdate
from streams.anomalies.publish import alert_for
from tests.streams.test_budgets_owner import budgets, messages, owner_with, priced

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)
PD_KEY = "0123456789abcdef0123456789abcdef"


def _fields(alert: dict) -> dict[str, str]:
    return {f["text"].split("\n")[0].strip("*"): f["text"].split("\n", 1)[1]
            for b in slack_message(alert)["blocks"] if "fields" in b for f in b["fields"]}


def _context(alert: dict) -> str:
    [block] = [b for b in slack_message(alert)["blocks"] if b["type"] == "context"]
    return block["elements"][0]["text"]


def test_a_budget_alerts_slack_fields_write_times_and_the_percent_as_people_read_them():
    """Before: "Expected breach: 2026-11-26T04:00:07.512345Z", "Period: 2026-11-01T00:00:00Z → ...", and
    "Percent of limit: 80.0%" beside a summary and a Budgets page that write "80.00%"."""
    details = {"budget": "search", "period_key": "month:2026-11@UTC", "threshold": 80, "metric": "cost_usd",
               "spend": "80.004", "limit": "100", "percent": "80.00", "period_start": "2026-11-01T00:00:00Z",
               "period_end": "2026-12-01T00:00:00Z", "projected": "131.5",
               "expected_breach_at": "2026-11-26T04:00:07.512345Z", "budget_action": "block"}
    alert = make_alert([], details=details)
    fields = _fields(alert)
    assert fields["Expected breach"] == "2026-11-26 04:00 UTC"
    assert fields["Period"] == "2026-11-01 00:00 UTC → 2026-12-01 00:00 UTC"
    assert fields["Percent of limit"] == "80.00%"
    assert "at 2026-11-20 10:00 UTC" in _context(alert)
    custom = pagerduty_event(alert, PD_KEY)["payload"]["custom_details"]  # machine fields: unchanged
    assert custom["expected_breach_at"] == "2026-11-26T04:00:07.512345Z" and custom["percent"] == "80.00"
    assert orjson.loads(webhook_body(alert))["details"]["period_start"] == "2026-11-01T00:00:00Z"


def test_a_drift_alerts_slack_fields_write_percentages_as_its_summary_does():
    """The drift summary says "gap $4.00, 33.33%; coverage 66.67%" (polish14); its Slack fields said "33.33 %"."""
    alert = make_alert([], source="drift", kind="cost_drift", details={
        "day": "2026-12-02", "provider": "anthropic", "reported_cost": "12", "metered_cost": "8", "gap": "4",
        "gap_pct": "33.33", "coverage_pct": "66.67", "cause": "missing_source"})
    fields = _fields(alert)
    assert fields["Gap"] == "$4.00 (33.33%)" and fields["Coverage of the bill"] == "66.67%"


def _closed_anomaly() -> dict:
    return {"id": "anom-1", "kind": "request_burst", "scope_dim": "api_key", "scope_value": "sk-1",
            "severity": "error", "observed": "852", "expected": "20", "expected_low": "0", "expected_high": "620",
            "unit": "requests_per_hour", "start": "2026-11-30T15:20:00Z", "end": "2026-11-30T16:00:00Z",
            "status": "closed", "explanation": "api_key sk-1 is sending 852 requests/hour",
            "detected_at": "2026-11-30T16:17:00Z"}


def test_an_anomalys_resolve_says_since_when_in_words_and_its_window_in_utc():
    """Before: "Back to normal since 2026-11-30T16:00:00Z." and "Window: 2026-11-30T15:20:00Z → ..."."""
    alert = alert_for(AnomalyUpdate("close", _closed_anomaly()))
    assert alert["summary"].startswith("Back to normal since 2026-11-30 16:00 UTC. It was: api_key sk-1")
    assert _fields(alert)["Window"] == "2026-11-30 15:20 UTC → 2026-11-30 16:00 UTC"
    assert alert["details"]["end"] == "2026-11-30T16:00:00Z"  # the record's field as before


def test_a_budget_forecast_alert_names_the_breach_time_to_the_minute():
    """The forecast alert's summary read "around 2026-11-20T12:55:42.857143Z (projected ... by
    2026-12-01T00:00:00Z)": the breach time is computed from a rate, so it carried microseconds."""
    from streams.budgets.routing import BudgetRouter

    defs = budgets(limit="10")
    router, owner = BudgetRouter(defs.values()), owner_with(defs)
    events = [priced(f"e{i}", "0.5", ts=NOW - timedelta(minutes=30 - 5 * i)) for i in range(7)]
    out = owner.process(messages(router, [(0, i, e) for i, e in enumerate(events)]), now=NOW)
    [forecast] = [a for a in out.alerts if a["kind"] == "forecast"]
    assert re.search(r"around 2026-11-20 12:\d\d UTC \(projected [\d.,]+ USD by 2026-12-01 00:00 UTC\)\.",
                     forecast["summary"]), forecast["summary"]
    assert forecast["details"]["expected_breach_at"].startswith("2026-11-20T12:")  # the machine field stays ISO

