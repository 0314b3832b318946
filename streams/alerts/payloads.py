"""What each sink receives for an alert record: a Slack Block Kit message, a PagerDuty Events API v2 event, or
the record itself (generic webhooks, signed with HMAC-SHA256). Pure functions: no I/O, easy to test.

Amounts are shown rounded for people (Slack; anomaly measures through `tokenmeter.measures`, as the dashboard shows
them); the exact decimal strings travel unchanged in PagerDuty `custom_details` and in the webhook body."""

from __future__ import annotations

import hashlib
import hmac
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

import orjson

from tokenmeter.measures import format_band, format_measure, format_observed
from tokenmeter.records import scope_label
from tokenmeter.timefmt import people_utc

from .routes import mask_notify

SLACK_HEADER_MAX = 150  # Block Kit limits, exceeding them gets 400 invalid_blocks
SLACK_FIELD_MAX = 2000
SLACK_TEXT_MAX = 3000
PAGERDUTY_SUMMARY_MAX = 1024
PAGERDUTY_DEDUP_KEY_MAX = 255  # Events API v2: a longer dedup_key makes the event invalid
SEVERITY_EMOJI = {"info": ":information_source:", "warning": ":warning:", "error": ":red_circle:",
                  "critical": ":rotating_light:"}


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _header(text: str) -> str:
    """A Slack header within its limit. An anomaly incident's title ends with where it happened (`<kinds>: api_key=k1
    (team search)`) and a page or resolve of four kinds runs past 150 characters: cut the kinds, not the scope (anom32:
    the header read "… api_key=k1 (team searc…")."""
    if len(text) <= SLACK_HEADER_MAX:
        return text
    head, sep, scope = text.rpartition(": ")
    if sep and len(scope) <= SLACK_HEADER_MAX // 2:
        return _cut(head, SLACK_HEADER_MAX - len(sep) - len(scope)) + sep + scope
    return _cut(text, SLACK_HEADER_MAX)


def _mrkdwn(text: str) -> str:
    """Text shown as itself in Slack mrkdwn: Slack parses &, < and > there (`<!channel>` pings a channel,
    `<url|label>` is a link) and its formatting reference says to send them as entities. Names in alerts come
    from traffic (a user or key name a gateway logged), so every value is escaped; our own *bold* stays."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def pagerduty_dedup_key(key: str) -> str:
    """The record's dedup_key, or for one longer than PagerDuty takes, its start plus a SHA-256 of all of it:
    stable, so a trigger and its resolve still name the same incident, and distinct per condition."""
    if len(key) <= PAGERDUTY_DEDUP_KEY_MAX:
        return key
    digest = hashlib.sha256(key.encode()).hexdigest()
    return f"{key[:PAGERDUTY_DEDUP_KEY_MAX - len(digest) - 8]}:sha256:{digest}"


def _decimal(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def show_amount(value: Any, metric: str = "cost_usd") -> str:
    """`$1,234.57` (cents; 4 decimals below $1 so small spends do not read as $0.00), `12,345 tokens`."""
    number = _decimal(value)
    if number is None:
        return "n/a" if value in (None, "") else str(value)
    if metric == "tokens":
        return f"{number.quantize(Decimal(1), ROUND_HALF_UP):,f} tokens"
    step = Decimal("0.01") if abs(number) >= 1 or number == 0 else Decimal("0.0001")
    return f"${number.quantize(step, ROUND_HALF_UP):,f}"


def _percent(value: Any) -> str:
    """Two decimals, as the alert's summary ("104.40% of the limit") and the Budgets page write the same figure."""
    number = _decimal(value)
    return f"{number.quantize(Decimal('0.01'), ROUND_HALF_UP)}%" if number is not None else "n/a"


def _span(start: Any, end: Any) -> str:
    return f"{people_utc(start) or '?'} → {people_utc(end) or '?'}"


def budget_fields(alert: dict[str, Any]) -> list[tuple[str, str]]:
    d = alert.get("details") or {}
    metric = d.get("metric", "cost_usd")
    threshold = d.get("threshold")
    fields = [
        ("Budget", str(d.get("budget", "n/a"))),
        ("Scope", scope_label(alert.get("scope") or {})),
        ("Spend", show_amount(d.get("spend"), metric)),
        ("Limit", show_amount(d.get("limit"), metric)),
        ("Percent of limit", _percent(d.get("percent"))),
        ("Threshold", f"{threshold}%" if threshold is not None else "forecast" if alert.get("kind") == "forecast" else "n/a"),
    ]
    if d.get("reason"):
        fields.append(("Reason", str(d["reason"])))
    if d.get("projected") is not None:
        fields.append(("Forecast for the period", show_amount(d.get("projected"), metric)))
    if d.get("expected_breach_at"):
        fields.append(("Expected breach", people_utc(d["expected_breach_at"])))
    if d.get("period_start") or d.get("period_end"):
        fields.append(("Period", _span(d.get("period_start"), d.get("period_end"))))
    if d.get("budget_action"):
        fields.append(("Action at 100%", str(d["budget_action"])))
    return [(name, value) for name, value in fields if value != "n/a"]  # e.g. a resolve has no spend


def anomaly_fields(alert: dict[str, Any]) -> list[tuple[str, str]]:
    d = alert.get("details") or {}
    unit = str(d.get("unit", ""))
    expected = format_measure(d.get("expected"), unit)
    if d.get("expected_low") is not None and d.get("expected_high") is not None:
        expected += f" ({format_band(d['expected_low'], d['expected_high'], unit)})"
    fields = [
        # an incident's page or resolve lists every kind of it (streams/anomalies/kinds.py)
        ("Kinds" if len(d.get("kinds") or ()) > 1 else "Kind",
         ", ".join(d["kinds"]) if len(d.get("kinds") or ()) > 1 else str(d.get("kind") or alert.get("kind", "n/a"))),
        ("Scope", scope_label(alert.get("scope") or {})),
        ("Observed (peak)", format_observed(d.get("observed"), unit, d.get("unpriced") is True)),
        ("Expected", expected),
    ]
    if alert.get("action") == "trigger" and d.get("status") == "open" and d.get("start"):
        # a trigger's `end` is the end of the bucket that opened it, not of the anomaly: "Window 13:20 → 13:25"
        # read as over when it had just begun
        fields.append(("Since", f"{people_utc(d['start'])} (ongoing)"))
    elif d.get("start") or d.get("end"):
        fields.append(("Window", _span(d.get("start"), d.get("end"))))
    return fields


def drift_fields(alert: dict[str, Any]) -> list[tuple[str, str]]:
    d = alert.get("details") or {}
    pct = f" ({d['gap_pct']}%)" if d.get("gap_pct") is not None else ""  # "33.33%", as the summary and the page
    fields = [
        ("Day", str(d.get("day", "n/a"))),
        ("Scope", scope_label(alert.get("scope") or {})),
        ("Provider-reported", show_amount(d.get("reported_cost"), "cost_usd")),
        ("Metered", show_amount(d.get("metered_cost"), "cost_usd")),
        ("Gap", show_amount(d.get("gap"), "cost_usd") + pct),
        ("Coverage of the bill", f"{d['coverage_pct']}%" if d.get("coverage_pct") is not None else "n/a"),
        ("Likely cause", str(d.get("cause_detail") or d.get("cause") or "n/a")),
    ]
    return [(name, value) for name, value in fields if value != "n/a"]


def completeness_fields(alert: dict[str, Any]) -> list[tuple[str, str]]:
    d = alert.get("details") or {}
    fields = [
        ("Source", str(d.get("source", "n/a"))),
        ("Problem", str(d.get("problem", "n/a"))),
        ("Last event", people_utc(d.get("last_event_at")) or "never"),
        ("Events in the last hour", str(d.get("events_last_hour", "n/a"))),
        ("Usual events per hour", str(d.get("usual_per_hour", "n/a"))),
        ("Dead letters in the last hour", str(d.get("deadletters_last_hour", "n/a"))),
    ]
    return [(name, value) for name, value in fields if value != "n/a"]


def alert_fields(alert: dict[str, Any]) -> list[tuple[str, str]]:
    by_source = {"anomaly": anomaly_fields, "drift": drift_fields, "completeness": completeness_fields}
    return by_source.get(str(alert.get("source")), budget_fields)(alert)


def fallback_text(alert: dict[str, Any]) -> str:
    """One line for notifications and clients that cannot render blocks."""
    state = "RESOLVED" if alert.get("action") == "resolve" else str(alert.get("severity", "")).upper()
    return f"[{state}] {alert.get('title', '')}: {alert.get('summary', '')}".strip()


def slack_message(alert: dict[str, Any]) -> dict[str, Any]:
    resolved = alert.get("action") == "resolve"
    emoji = ":white_check_mark:" if resolved else SEVERITY_EMOJI.get(alert.get("severity", ""), "")
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "emoji": True,
                                    "text": _header(f"{emoji} {alert['title']}".strip())}},
    ]
    if alert.get("summary"):
        blocks.append({"type": "section", "text": {"type": "mrkdwn",
                                                   "text": _cut(_mrkdwn(alert["summary"]), SLACK_TEXT_MAX)}})
    fields = [{"type": "mrkdwn", "text": _cut(f"*{name}*\n{_mrkdwn(value)}", SLACK_FIELD_MAX)}
              for name, value in alert_fields(alert)]
    for start in range(0, len(fields), 10):  # at most 10 fields per section
        blocks.append({"type": "section", "fields": fields[start : start + 10]})
    explanation = (alert.get("details") or {}).get("explanation")
    if alert.get("source") == "anomaly" and explanation and explanation != alert.get("summary"):
        blocks.append({"type": "section", "text": {"type": "mrkdwn",
                                                   "text": _cut(f"*Why*\n{_mrkdwn(explanation)}", SLACK_TEXT_MAX)}})
    context = (f"tokenmeter {alert.get('source')} · {alert.get('kind')} · {alert.get('severity')} · "
               f"{'resolved' if resolved else 'triggered'} · at {people_utc(alert.get('at'))} · alert ")
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _cut(
        f"{_mrkdwn(context)}`{_mrkdwn(str(alert.get('id')))}`", SLACK_TEXT_MAX)}]})
    if str(alert.get("dashboard_url", "")).startswith(("http://", "https://")):
        blocks.append({"type": "actions", "elements": [{
            "type": "button", "action_id": "tokenmeter_open_dashboard", "url": alert["dashboard_url"],
            "text": {"type": "plain_text", "text": "Open dashboard"}}]})
    return {"text": _cut(_mrkdwn(fallback_text(alert)), SLACK_TEXT_MAX), "blocks": blocks}  # mrkdwn too


def pagerduty_event(alert: dict[str, Any], routing_key: str) -> dict[str, Any]:
    """Events API v2. A resolve carries only what PagerDuty reads for it: key, action and the trigger's dedup_key."""
    event: dict[str, Any] = {"routing_key": routing_key, "event_action": alert["action"],
                             "dedup_key": pagerduty_dedup_key(alert["dedup_key"])}
    if alert["action"] == "resolve":
        return event
    details = _masked_details(alert)
    group = details.get("budget") or details.get("kind") or alert.get("kind")
    event["payload"] = {
        "summary": _cut(alert["title"], PAGERDUTY_SUMMARY_MAX),
        "source": "tokenmeter",
        "severity": alert["severity"],
        "timestamp": alert.get("at"),
        "component": scope_label(alert.get("scope") or {}),
        "group": str(group),
        "class": f"{alert.get('source')}.{alert.get('kind')}",
        "custom_details": {"summary": alert.get("summary", ""), "alert_id": alert["id"],
                           "dedup_key": alert["dedup_key"], "scope": alert.get("scope") or {}, **details},
    }
    event["client"] = "tokenmeter"
    if str(alert.get("dashboard_url", "")).startswith(("http://", "https://")):
        event["client_url"] = alert["dashboard_url"]
        event["links"] = [{"href": alert["dashboard_url"], "text": "tokenmeter dashboard"}]
    return event


def _masked_details(alert: dict[str, Any]) -> dict[str, Any]:
    """The alert's details with any notify list in them masked (budget details repeat the budget's routes)."""
    details = alert.get("details") or {}
    if isinstance(details, dict) and isinstance(details.get("notify"), list):
        return {**details, "notify": mask_notify([str(n) for n in details["notify"]])}
    return details


def webhook_body(alert: dict[str, Any]) -> bytes:
    """The alert record; its notify lists are masked, since they name other sinks' credentials."""
    return orjson.dumps({**alert, "notify": mask_notify(alert.get("notify") or []), "details": _masked_details(alert)})


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """`sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`: binding the timestamp lets receivers reject
    replays of an old, validly signed request."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify(secret: str, timestamp: str, body: bytes, signature: str) -> bool:
    """The receiver's check (also used by the tests): constant-time compare."""
    return hmac.compare_digest(sign(secret, timestamp, body), signature)
