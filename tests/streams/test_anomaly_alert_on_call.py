"""An anomaly alert as on-call reads it in Slack, PagerDuty or a webhook (anom24): it says since when the anomaly
runs (its trigger used to show a "Window" ending at the first bucket's end, as if it were over) and what to do
besides opening the dashboard: the command that silences it, with the kind and scope the detector mutes by."""

from __future__ import annotations

from click.testing import CliRunner

from streams.alerts.payloads import pagerduty_event, slack_message
from streams.anomalies.cli import anomalies
from streams.anomalies.engine import AnomalyUpdate
from streams.anomalies.publish import alert_for

OPEN = {"id": "anomaly-4555afe33e2b88199261567db58a4d53", "kind": "spend_rate", "scope_dim": "api_key",
        "scope_value": "search-k1", "severity": "error", "observed": "37.8997476", "expected": "0.0511516",
        "expected_low": "0", "expected_high": "0.5511516", "unit": "usd_per_hour", "start": "2026-12-06T13:20:00Z",
        "end": "2026-12-06T13:25:00Z", "status": "open", "detected_at": "2026-12-06T13:27:00Z",
        "explanation": "api_key search-k1 is spending $37.90/hour, 740.9x the $0.0512/hour usual for this hour of "
                       "the week (normal up to $0.5512/hour)."}
MUTE = ("tokenmeter anomalies mute anomaly-4555afe33e2b88199261567db58a4d53 --kind spend_rate "
        "--scope api_key=search-k1")


def _fields(alert: dict) -> dict[str, str]:
    return {f["text"].split("\n")[0].strip("*"): f["text"].split("\n", 1)[1]
            for b in slack_message(alert)["blocks"] if "fields" in b for f in b["fields"]}


def test_a_trigger_says_since_when_and_how_to_silence_it():
    alert = alert_for(AnomalyUpdate("open", OPEN), "http://127.0.0.1:8050")
    assert alert["summary"].startswith(OPEN["explanation"] + " Since 2026-12-06 13:20 UTC."), alert["summary"]
    assert alert["details"]["mute_command"] == MUTE and MUTE in alert["summary"]
    fields = _fields(alert)
    assert fields["Since"] == "2026-12-06 13:20 UTC (ongoing)" and "Window" not in fields, fields
    assert pagerduty_event(alert, "R" * 32)["payload"]["custom_details"]["mute_command"] == MUTE
    assert alert["dashboard_url"].endswith(f"/anomalies?id={OPEN['id']}&start=2026-12-06&end=2026-12-06")


def test_the_command_in_the_alert_runs_as_written():
    args = MUTE.split()[2:] + ["--help"]  # the parsing, not the publish (that is test_anomalies_ack_cli.py)
    assert CliRunner().invoke(anomalies, args).exit_code == 0


def test_a_resolve_keeps_its_window_and_no_command():
    closed = {**OPEN, "status": "closed", "end": "2026-12-06T13:50:00Z"}
    alert = alert_for(AnomalyUpdate("close", closed))
    assert alert["summary"].startswith("Back to normal since 2026-12-06 13:50 UTC. It was: api_key search-k1")
    assert "mute" not in alert["summary"] and "mute_command" not in alert["details"]
    assert _fields(alert)["Window"] == "2026-12-06 13:20 UTC → 2026-12-06 13:50 UTC"


def test_the_command_quotes_a_scope_a_shell_would_split():
    alert = alert_for(AnomalyUpdate("open", {**OPEN, "scope_dim": "team", "scope_value": "R&D ops"}))
    assert alert["details"]["mute_command"].endswith("--kind spend_rate --scope 'team=R&D ops'")
