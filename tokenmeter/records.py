"""Wire contracts of the records stages exchange besides usage events: alerts (the outbox), enforcement
decisions and anomalies. Plain JSON objects (orjson); money and amounts are decimal strings, times RFC 3339 UTC.
Each builder validates the shape it is given so a producer bug fails at the producer, not in a dispatcher.

Alert record, topic `tokenmeter.alerts`, Kafka key = `dedup_key` (a condition's trigger, escalations and resolve
share a partition, so they stay in order; the dispatcher also delivers them in that order):
    id            stable idempotency key (a redelivered or re-fired alert has the same id; deliver once per id)
    source        "budget" | "anomaly" | "drift" (provider bill vs metered) | "completeness" (a source stale/dropping)
    kind          budget: "threshold" | "forecast" | "resolve"; anomaly: the detector's kind
    action        "trigger" | "resolve"   (PagerDuty event_action; Slack/webhook show it)
    severity      "info" | "warning" | "error" | "critical"   (PagerDuty severities)
    dedup_key     stable key of the ongoing condition (PagerDuty dedup_key; a resolve carries the trigger's)
    title         one line, plain words
    summary       a few sentences, plain words
    at            when the condition was observed (event time)
    scope         {dimension: value} the alert is about (team, user, model, `tag:<k>`, ...)
    notify        ["slack=URL", "pagerduty=ROUTING_KEY", "webhook=URL", ...]; budget alerts carry references
                  `<kind>=<masked target>#secret=r-<hex>` whose secret only the dispatcher reads (docs/security.md)
    details       source-specific JSON (budget: budget, period_key, threshold, metric, spend, limit, percent,
                  period_start, period_end, projected, expected_breach_at, budget_action; anomaly: anomaly_id,
                  observed, expected, start, end, ...)
    dashboard_url link for people, may be ""

Alert delivery record, topic `tokenmeter.alert-deliveries` (compacted), key = `<alert id>|<route_id>`:
    alert_id, route ("slack" | "pagerduty" | "webhook"), route_id (the kind, or `<kind>:<target hash>` when an
    alert has several routes of one kind; older records lack it), target (URL or key with secrets masked),
    status ("delivered" | "failed" | "retrying"), attempts, last_error, http_status, at

Enforcement record, topic `tokenmeter.enforcement` (compacted), key = `budget:<name>`:
    budget, scope, action ("allow" | "throttle" | "block"), reason, until (RFC 3339 or null),
    metric, spend, limit, percent, period_key, period_start, period_end, projected, expected_breach_at,
    updated_at. A tombstone (null value) = budget deleted. `projected` (spend at the period end at the recent
    burn rate) is null for rolling budgets and until the ledger observed 10 minutes of the period's burn; before
    2026-12-06 it was also null while the projection stayed below the limit. `expected_breach_at` is set only when
    the projection reaches the limit. Both are the forecast alert's own (streams/budgets/ledger.forecast, at the
    owner's clock `updated_at`): the record published with a forecast alert carries the alert's `projected`.

Anomaly ack record, topic `tokenmeter.anomaly-acks` (compacted), key = `<anomaly id>`:
    anomaly_id, kind, scope_dim, scope_value, action ("ack" | "mute" | "unmute"), by (user name), note,
    mute_until (RFC 3339 or null; a mute silences notifications of that kind for that scope until then), at

Anomaly record, topic `tokenmeter.anomalies`, key = `id` (latest record per id wins: an ongoing anomaly is
re-published with a later `end` and `status`):
    id, kind, scope_dim, scope_value, severity, observed, expected, expected_low, expected_high (decimal
    strings), unit ("usd_per_hour", "tokens_per_request", ...), start, end, status ("open" | "closed"),
    explanation (plain words), detected_at; optional unpriced (true: a model with no price, so its observed
    "usd_per_hour" of 0 is unknown, not free; absent in records before it and in all others)
"""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

SEVERITIES = ("info", "warning", "error", "critical")
ALERT_SOURCES = ("budget", "anomaly", "drift", "completeness")
ALERT_ACTIONS = ("trigger", "resolve")
ENFORCEMENT_ACTIONS = ("allow", "throttle", "block")
ALERT_FIELDS = ("id", "source", "kind", "action", "severity", "dedup_key", "title", "summary", "at", "scope",
                "notify", "details", "dashboard_url")


class RecordError(ValueError):
    """A record does not follow its contract; the message lists every problem."""


def iso(ts: datetime | None) -> str | None:
    if ts is None:
        return None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    return ts.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def money(value: Decimal | int | str | None) -> str | int | None:
    """Decimal as a plain string (never float, never exponent); ints (token counts) stay ints."""
    if value is None or isinstance(value, int):
        return value
    return format(Decimal(str(value)), "f")


def alert_record(**fields: Any) -> dict[str, Any]:
    """Build an alert record, checking the contract above; raises RecordError listing every problem."""
    fields.setdefault("details", {})
    fields.setdefault("dashboard_url", "")
    fields.setdefault("notify", [])
    fields.setdefault("scope", {})
    problems = [f"missing {name}" for name in ALERT_FIELDS if name not in fields]
    extra = set(fields) - set(ALERT_FIELDS)
    if extra:
        problems.append(f"unknown fields {sorted(extra)}")
    if fields.get("source") not in ALERT_SOURCES:
        problems.append(f"source must be one of {ALERT_SOURCES}, got {fields.get('source')!r}")
    if fields.get("action") not in ALERT_ACTIONS:
        problems.append(f"action must be one of {ALERT_ACTIONS}, got {fields.get('action')!r}")
    if fields.get("severity") not in SEVERITIES:
        problems.append(f"severity must be one of {SEVERITIES}, got {fields.get('severity')!r}")
    for name in ("id", "dedup_key", "title"):
        if name in fields and (not isinstance(fields[name], str) or not fields[name]):
            problems.append(f"{name} must be a non-empty string")
    if isinstance(fields.get("at"), datetime):
        fields["at"] = iso(fields["at"])
    if not isinstance(fields.get("notify"), list) or any("=" not in str(n) for n in fields.get("notify", [])):
        problems.append("notify must be a list of 'route=target' strings")
    if problems:
        raise RecordError("alert record: " + "; ".join(problems))
    return {name: fields[name] for name in ALERT_FIELDS}


def scope_label(scope: dict[str, str]) -> str:
    """`team=search,user=bob` (sorted), or `all traffic` for an empty scope."""
    return ",".join(f"{k}={v}" for k, v in sorted(scope.items())) or "all traffic"
