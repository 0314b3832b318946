"""Payload shapes, route parsing and masking, Retry-After parsing and backoff bounds (pure functions)."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import orjson
import pytest
from test_alerts_support import make_alert

from streams.alerts.delivery import backoff_delay, parse_retry_after
from streams.alerts.dispatcher import AlertInputError, parse_alert, routes_for
from streams.alerts.payloads import pagerduty_event, show_amount, sign, slack_message, verify, webhook_body
from streams.alerts.routes import mask_target, parse_routes
from tokenmeter.settings import load_settings

SLACK = "https://hooks.slack.com/services/T0AAA/B0BBB/XyZsecretTokenValue"
PD_KEY = "0123456789abcdef0123456789abcdef"


def test_slack_budget_message_has_blocks_fields_button_and_fallback():
    msg = slack_message(make_alert([f"slack={SLACK}"]))
    assert msg["text"].startswith("[ERROR] Budget search reached 80%")
    types = [b["type"] for b in msg["blocks"]]
    assert types[0] == "header" and "context" in types and types[-1] == "actions"
    fields = {f["text"].split("\n")[0]: f["text"].split("\n")[1] for b in msg["blocks"] if "fields" in b
              for f in b["fields"]}
    assert fields["*Budget*"] == "search" and fields["*Scope*"] == "team=search"
    assert fields["*Spend*"] == "$80.00" and fields["*Limit*"] == "$100.00"
    assert fields["*Percent of limit*"] == "80.00%" and fields["*Threshold*"] == "80%"
    assert fields["*Forecast for the period*"] == "$131.50"
    assert fields["*Expected breach*"] == "2026-11-26 04:00 UTC"
    button = msg["blocks"][-1]["elements"][0]
    assert button["type"] == "button" and button["url"] == "http://127.0.0.1:8050/"
    assert all(len(f["text"]) <= 2000 for b in msg["blocks"] if "fields" in b for f in b["fields"])
    assert all(len(b["fields"]) <= 10 for b in msg["blocks"] if "fields" in b)


def test_slack_anomaly_message_shows_observed_vs_expected_and_explanation():
    alert = make_alert([], source="anomaly", kind="spend_spike", severity="warning",
                       details={"kind": "spend_spike", "observed": "12.4", "expected": "3", "expected_low": "2.1",
                                "expected_high": "3.9", "unit": "usd_per_hour",
                                "explanation": "gpt-4o calls by user ana tripled"})
    text = orjson.dumps(slack_message(alert)).decode()
    assert "$12.40/hour" in text and "$3.00/hour (normal $2.10 – $3.90/hour)" in text
    assert "gpt-4o calls by user ana tripled" in text and "spend_spike" in text


@pytest.mark.parametrize("unit, numbers, observed, expected", [
    # The dashboard's Anomalies page shows the same figures the same way (tokenmeter.measures).
    ("error_ratio", ("1.000000", "0.044833", "0.000000", "0.194833"), "100%", "4.5% (normal 0% – 19.5%)"),
    ("requests_per_hour", ("852.000000", "19.847158", "0.000000", "619.847158"), "852 requests/hour",
     "20 requests/hour (normal 0 – 620 requests/hour)"),
    ("tokens_per_hour", ("751680.000000", "18700.856664", "0.000000", "431779.794785"), "751,680 tokens/hour",
     "18,701 tokens/hour (normal 0 – 431,780 tokens/hour)"),
    ("tokens_per_request", ("1165.400000", "198.200000", "0.000000", "594.600000"), "1,165 tokens/request",
     "198 tokens/request (normal 0 – 595 tokens/request)"),
    ("usd_per_1k_tokens", ("0.005412000000", "0.000241000000", "0.000000000000", "0.000723000000"),
     "$0.0054 per 1k tokens", "$0.00024 per 1k tokens (normal $0.00 – $0.00072 per 1k tokens)"),
])
def test_slack_anomaly_fields_read_as_rates_and_percentages_while_details_stay_exact(unit, numbers, observed,
                                                                                      expected):
    details = dict(zip(("observed", "expected", "expected_low", "expected_high"), numbers), kind="x", unit=unit)
    alert = make_alert([], source="anomaly", kind="x", severity="error", details=details)
    fields = {f["text"].split("\n")[0]: f["text"].split("\n")[1] for b in slack_message(alert)["blocks"]
              if "fields" in b for f in b["fields"]}
    assert fields["*Observed (peak)*"] == observed and fields["*Expected*"] == expected
    custom = pagerduty_event(alert, PD_KEY)["payload"]["custom_details"]  # machine-readable: unchanged
    assert (custom["observed"], custom["expected_high"], custom["unit"]) == (numbers[0], numbers[3], unit)
    assert orjson.loads(webhook_body(alert))["details"]["observed"] == numbers[0]


def test_slack_header_is_cut_to_block_kit_limit_and_no_button_without_dashboard():
    msg = slack_message(make_alert([], title="x" * 400, dashboard_url=""))
    assert len(msg["blocks"][0]["text"]["text"]) <= 150
    assert all(b["type"] != "actions" for b in msg["blocks"])


def test_pagerduty_trigger_and_resolve_share_the_dedup_key():
    trigger = make_alert([f"pagerduty={PD_KEY}"], severity="critical", title="t" * 2000)
    event = pagerduty_event(trigger, PD_KEY)
    assert event["routing_key"] == PD_KEY and event["event_action"] == "trigger"
    assert event["dedup_key"] == trigger["dedup_key"]
    payload = event["payload"]
    assert len(payload["summary"]) <= 1024 and payload["severity"] == "critical"
    assert payload["timestamp"] == "2026-11-20T10:00:00Z" and payload["source"] == "tokenmeter"
    assert payload["component"] == "team=search" and payload["group"] == "search"
    assert payload["class"] == "budget.threshold"
    assert payload["custom_details"]["spend"] == "80.000123000000"  # exact decimal string
    assert event["links"] == [{"href": "http://127.0.0.1:8050/", "text": "tokenmeter dashboard"}]
    resolve = pagerduty_event(make_alert([], action="resolve", dedup_key=trigger["dedup_key"]), PD_KEY)
    assert resolve == {"routing_key": PD_KEY, "event_action": "resolve", "dedup_key": trigger["dedup_key"]}


def test_webhook_body_masks_other_sinks_credentials_and_signature_verifies():
    body = webhook_body(make_alert([f"slack={SLACK}", f"pagerduty={PD_KEY}", "webhook=https://x.example/h?token=abc"]))
    assert b"XyZsecret" not in body and PD_KEY.encode() not in body and b"token=abc" not in body
    signature = sign("k", "1700000000", body)
    assert signature.startswith("sha256=") and verify("k", "1700000000", body, signature)
    assert not verify("k", "1700000001", body, signature) and not verify("other", "1700000000", body, signature)


def test_routes_parse_dedupe_and_reject_with_reasons():
    routes, bad = parse_routes([f"slack={SLACK}", f"slack={SLACK}", "slack=https://hooks.slack.com/services/2",
                                f"pagerduty={PD_KEY}", "webhook=ftp://x", "sms=123", "webhook="])
    assert [r.kind for r in routes] == ["slack", "slack", "pagerduty"]
    assert routes[0].route_id.startswith("slack:") and routes[0].route_id != routes[1].route_id
    assert routes[2].route_id == "pagerduty"
    assert len(bad) == 3 and any("unknown route 'sms'" in reason for _, reason in bad)


def test_masking_hides_slack_path_routing_key_and_query_values():
    assert mask_target("slack", SLACK) == "https://hooks.slack.com/services/***"
    assert mask_target("pagerduty", PD_KEY) == "****cdef"
    masked = mask_target("webhook", "https://u:p@x.example:8443/in/abc?token=abc")
    assert masked == "https://x.example:8443/in/***?token=***"


@pytest.mark.parametrize("target, secret", [
    ("https://webhook.site/6f1c9e2a-1b2c-4d5e-8f90-123456789abc", "6f1c9e2a"),  # the token is the whole path
    ("https://ntfy.sh/ops-alerts-x7Kq2", "x7Kq2"),  # a topic: whoever knows it can read and post
    ("https://x.example/abc123SECRET?token=t", "SECRET"),
    ("notaurl SECRETX", "SECRETX"),  # not a URL at all: its path is all of it
])
def test_a_one_segment_path_is_masked_whole(target, secret):
    """walk31: webhooks keep "the first path segment" (`/hook/***`), which for a one-segment path is all of it: a
    webhook.site or ntfy.sh URL went out whole in `budget list`, the dashboard, alert records and webhook bodies,
    and `budget set` with a mistyped target echoed it ("webhook target 'notaurl SECRETX' is not ...")."""
    for kind in ("webhook", "slack"):
        masked = mask_target(kind, target)
        assert secret not in masked and "***" in masked, (kind, masked)


def test_anomaly_without_routes_uses_settings_anomaly_notify():
    settings = load_settings(anomaly_notify=[f"slack={SLACK}"])
    routes, _ = routes_for(make_alert([], source="anomaly", kind="spend_spike"), settings)
    assert [r.kind for r in routes] == ["slack"]
    routes, _ = routes_for(make_alert([]), settings)  # a budget alert without routes goes nowhere
    assert routes == []


def test_parse_alert_rejects_with_clear_reasons():
    for raw, words in ((b"{nope", "not JSON"), (b"[1]", "JSON object"), (None, "tombstone"),
                       (orjson.dumps({"id": "a"}), "missing source")):
        try:
            parse_alert(raw)
        except AlertInputError as exc:
            assert words in str(exc)
        else:
            raise AssertionError(f"{raw!r} accepted")


def test_retry_after_seconds_and_http_date():
    now = datetime(2026, 11, 20, 10, 0, tzinfo=timezone.utc)
    assert parse_retry_after("3") == 3.0 and parse_retry_after(" 0 ") == 0.0
    assert parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now=now) == 30.0
    assert parse_retry_after(format_datetime(now - timedelta(seconds=30), usegmt=True), now=now) == 0.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None and parse_retry_after("nan") is None
    assert parse_retry_after("999999") == 3600.0


def test_backoff_doubles_with_jitter_up_to_the_cap():
    rng = random.Random(7)
    for failures, ceiling in ((1, 1.0), (2, 2.0), (3, 4.0), (10, 30.0)):
        delays = [backoff_delay(failures, 1.0, 30.0, rng) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert max(delays) - min(delays) > ceiling / 10  # jittered, not constant


def test_amounts_are_rounded_for_people_only():
    assert show_amount("1234.5678") == "$1,234.57" and show_amount("0.00421") == "$0.0042"
    assert show_amount(1500000, "tokens") == "1,500,000 tokens" and show_amount(None) == "n/a"


def test_an_alert_record_too_deep_to_re_encode_is_refused_not_shown_or_sent():
    """Seen in the suite: a hostile alert with details nested 300 deep crashed `tokenmeter alerts list --format
    json` (orjson writes at most 254 levels); it is now an unreadable record (dead-lettered by the dispatcher)."""
    import orjson
    import pytest

    from streams.alerts.dispatcher import AlertInputError, parse_alert

    record = {"id": "deep-1", "source": "budget", "kind": "threshold", "severity": "warning", "action": "trigger",
              "title": "t", "summary": "s", "at": "2026-12-01T00:00:00Z", "dedup_key": "deep-1", "notify": [],
              "details": {"x": "DEEP"}}
    value = orjson.dumps(record).replace(b'"DEEP"', b"[" * 300 + b"]" * 300)  # orjson reads it, cannot write it
    with pytest.raises(AlertInputError, match="re-encoded"):
        parse_alert(value)


def _mrkdwn_texts(msg: dict) -> list[str]:
    """Every string Slack parses as mrkdwn: the top-level text, mrkdwn text objects, fields, context elements."""
    texts = [msg["text"]]
    for block in msg["blocks"]:
        objects = [block.get("text")] + block.get("fields", []) + block.get("elements", [])
        texts += [o["text"] for o in objects if isinstance(o, dict) and o.get("type") == "mrkdwn"]
    return texts


def test_slack_mrkdwn_escapes_control_characters_of_names_from_traffic():
    """walk23: Slack parses &, < and > in mrkdwn (its formatting reference: they "must be escaped"); a user or
    key name from gateway traffic, `<!channel>` or `<https://evil.example|Open dashboard>`, pinged the whole
    channel or showed a link of the sender's choosing in an anomaly message."""
    user = "<!channel> & <https://evil.example|Open dashboard>"
    alert = make_alert([], source="anomaly", kind="spend_spike", severity="warning", scope={"user": user},
                       title=f"Spend rate anomaly: user={user}", summary=f"Spend of user {user} tripled",
                       details={"kind": "spend_spike", "observed": "12.4", "expected": "3", "unit": "usd_per_hour",
                                "explanation": f"calls by user {user} tripled"})
    texts = _mrkdwn_texts(slack_message(alert))
    joined = "\n".join(texts)
    assert "<!channel>" not in joined and "<https://evil" not in joined
    assert "&lt;!channel&gt; &amp; &lt;https://evil.example|Open dashboard&gt;" in joined
    assert any("Spend of user &lt;!channel&gt;" in t for t in texts)  # the summary section
    assert any(t.startswith("*Scope*\nuser=&lt;!channel&gt;") for t in texts)  # a field
    assert "&amp;lt;" not in joined  # escaped once


def test_pagerduty_dedup_key_longer_than_255_is_shortened_the_same_for_trigger_and_resolve():
    """walk23: PagerDuty's Events API v2 takes a dedup_key of at most 255 characters; a completeness alert's key
    carries the source name (no length limit on events), a drift alert's the model name, so a long one made
    every event of that condition invalid."""
    key = "tokenmeter:completeness:" + "s" * 300 + ":stale:2026-12-06T12:00:00"
    trigger = pagerduty_event(make_alert([], dedup_key=key), PD_KEY)
    resolve = pagerduty_event(make_alert([], action="resolve", dedup_key=key), PD_KEY)
    assert len(trigger["dedup_key"]) <= 255 and trigger["dedup_key"] == resolve["dedup_key"]
    other = pagerduty_event(make_alert([], dedup_key=key.replace("stale", "dropping")), PD_KEY)
    assert other["dedup_key"] != trigger["dedup_key"]  # another condition stays another incident
    assert trigger["payload"]["custom_details"]["dedup_key"] == key  # the full key is still there to read
    short = "tokenmeter:budget:search:month:2026-12@UTC"
    assert pagerduty_event(make_alert([], dedup_key=short), PD_KEY)["dedup_key"] == short  # unchanged
