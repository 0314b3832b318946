"""Issue 11 item 8: alert records written before routes had their secret store carry plain notify targets in
`details`; the loader masks them before they reach the warehouse's `alerts.details`."""

from __future__ import annotations

from datetime import datetime, timezone

from warehouse.records_load import alert_row

PD_KEY = "S3cr3tPagerDutyRoutingKey0123456"


def test_plain_notify_targets_in_alert_details_are_masked_before_storing():
    record = {"id": "a1", "source": "budget", "kind": "threshold", "action": "trigger", "severity": "error",
              "dedup_key": "budget:x", "title": "t", "summary": "s", "at": "2026-11-20T10:00:00Z",
              "scope": {"team": "x"}, "dashboard_url": "",
              "details": {"budget": "x", "notify": ["slack=https://hooks.slack.com/services/T0/B0/slacksecret",
                                                    f"pagerduty={PD_KEY}", "webhook=https://h.example/in/tok?k=v",
                                                    "webhook=https://h.example/hook/***#secret=r-0123456789abcdef"]}}
    stored = alert_row(record, datetime.now(timezone.utc))["details"]
    assert "slacksecret" not in stored and PD_KEY not in stored and "tok" not in stored
    assert "****3456" in stored and "#secret=r-0123456789abcdef" in stored
