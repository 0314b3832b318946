"""An incident's alerts say each thing once (anom32). The demo-style loop on key k1 pages spend_rate, request_burst
and token_rate together: the page's spend sentence already gives the money, and each other kind's line repeated it
("Spend meanwhile: $15.12/hour (usually $0.0407/hour)." twice more). A kind joining the incident said "Same incident
as the spend_rate, … alerted on this scope at 03:06 UTC (one page)." and then "in the incident paged on this scope at
2026-09-10 03:06 UTC" in the same summary."""

from __future__ import annotations

from tests.streams.test_anomalies_alert_team import HISTORY_END, LOOP_AT, _alerts, _k1, _loop_batches
from tests.streams.test_anomalies_detectors import feed, warm_engine
from tests.streams.anomaly_traffic import event, traffic


def _loop_alerts() -> list[dict]:
    engine = warm_engine()
    updates = feed(engine, traffic(HISTORY_END, LOOP_AT, seed=5)) + feed(engine, _loop_batches(LOOP_AT, LOOP_AT + 1800))
    longer = [[event(b + i * 2, "k1", model="gpt-4o", tin=3000, tout=300, n=i) for i in range(120)]
              for b in range(LOOP_AT + 1800, LOOP_AT + 3600, 300)]
    updates += feed(engine, longer) + feed(engine, traffic(LOOP_AT + 3600, LOOP_AT + 4 * 3600, seed=6))  # and after
    return _k1(_alerts(updates))


def test_a_page_of_several_kinds_says_its_money_once():
    page = next(a for a in _loop_alerts() if a["action"] == "trigger" and len(a["details"].get("kinds", [])) > 1)
    assert "spend_rate" in page["details"]["kinds"]
    assert page["summary"].count("/hour (usually") == 0 and page["summary"].count("Spend meanwhile") == 0, \
        page["summary"]  # the spend sentence is the money ("is spending $15.12/hour, 371.4x the $0.0407/hour usual")
    assert "is spending $" in page["summary"]


def test_a_joining_kind_says_once_which_incident_it_joins():
    joins = [a for a in _loop_alerts() if a["action"] == "trigger" and "(same incident as" in a["title"]]
    assert joins, [a["title"] for a in _loop_alerts()]
    for join in joins:
        text = join["summary"]
        assert text.count("incident") == 1 or "Same incident as" not in text, text


def test_a_long_incident_title_keeps_its_scope_in_the_slack_header():
    """The resolve of the loop's four kinds is titled "Resolved: Spend rate anomaly, Request burst from an API key,
    Token rate anomaly, Tokens per request jumped: api_key=k1 (team search)": with its emoji past Slack's 150-character
    header, which
    was cut at its end, so the header lost where it happened ("… (team searc…"). The kinds are shortened instead."""
    from streams.alerts.payloads import SLACK_HEADER_MAX, slack_message

    resolve = next(a for a in _loop_alerts() if a["action"] == "resolve")
    assert len(":white_check_mark: " + resolve["title"]) > SLACK_HEADER_MAX, resolve["title"]  # the case
    header = slack_message(resolve)["blocks"][0]["text"]["text"]
    assert len(header) <= SLACK_HEADER_MAX and header.endswith(": api_key=k1 (team search)"), header
    assert header.startswith(":white_check_mark: Resolved: Spend rate anomaly"), header
