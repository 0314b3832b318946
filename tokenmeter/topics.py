"""Kafka topic names and their layout: the wire contract between stages."""

from __future__ import annotations

from dataclasses import dataclass, field

USAGE = "tokenmeter.usage"  # canonical events in; gateways and SDKs may produce here directly
PRICED = "tokenmeter.priced"  # metered and priced events, read by the loader
ALERTS = "tokenmeter.alerts"  # alert outbox
ENFORCEMENT = "tokenmeter.enforcement"  # allow/throttle/block decisions keyed by scope (compacted)
DEADLETTER = "tokenmeter.deadletter"  # records that could not be handled, with the reason
PROVIDER_USAGE = "tokenmeter.provider-usage"  # provider-reported usage/cost for reconciliation
BUDGETS = "tokenmeter.budgets"  # budget definitions keyed by name (compacted)
ANOMALIES = "tokenmeter.anomalies"  # detected spend anomalies (latest record per id wins)
ALERT_DELIVERIES = "tokenmeter.alert-deliveries"  # delivery state per alert and route (compacted)
BUDGET_SPEND = "tokenmeter.budget-spend"  # internal: per-budget spend entries, keyed by budget name
BUDGET_STATE = "tokenmeter.budget-state"  # internal: each budget's evaluation state (compacted)
ANOMALY_ACKS = "tokenmeter.anomaly-acks"  # acknowledge/mute of anomalies from the dashboard (compacted)
BUDGET_HOLDS = "tokenmeter.budget-holds"  # internal: open reservation holds keyed by budget|reservation (compacted)
BUDGET_OWNERS = "tokenmeter.budget-owners"  # internal: URL of the worker owning each budget-spend partition (compacted)
BUDGET_HOLD_LOG = "tokenmeter.budget-hold-log"  # hold admitted / settled / released / expired, to the warehouse


@dataclass(frozen=True)
class TopicSpec:
    name: str
    compacted: bool = False
    config: dict[str, str] = field(default_factory=dict)


def topic_specs() -> list[TopicSpec]:
    return [
        TopicSpec(USAGE),
        TopicSpec(PRICED),
        TopicSpec(ALERTS),
        TopicSpec(ENFORCEMENT, compacted=True),
        TopicSpec(DEADLETTER),
        TopicSpec(PROVIDER_USAGE),
        TopicSpec(BUDGETS, compacted=True),
        TopicSpec(ANOMALIES),
        TopicSpec(ALERT_DELIVERIES, compacted=True),
        TopicSpec(BUDGET_SPEND),
        TopicSpec(BUDGET_STATE, compacted=True),
        TopicSpec(ANOMALY_ACKS, compacted=True),
        TopicSpec(BUDGET_HOLDS, compacted=True),
        TopicSpec(BUDGET_OWNERS, compacted=True),
        TopicSpec(BUDGET_HOLD_LOG),
    ]
