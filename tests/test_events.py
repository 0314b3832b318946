from datetime import datetime, timezone
from decimal import Decimal

import pytest
from pydantic import ValidationError

from tokenmeter.events import (
    PricedEvent,
    UsageEvent,
    derive_event_id,
    describe_validation_error,
    partition_key,
)

BASE = {"event_id": "e1", "ts": "2026-11-01T10:00:00Z", "source": "sdk", "provider": "openai", "model": "gpt-4o"}


def test_minimal_event_and_defaults():
    event = UsageEvent.model_validate(BASE)
    assert event.operation == "chat" and event.status == "ok" and event.usage is None
    assert event.ts == datetime(2026, 11, 1, 10, tzinfo=timezone.utc)


@pytest.mark.parametrize("change, field", [
    ({"ts": "2026-11-01T10:00:00"}, "ts"),  # no offset: ambiguous event time
    ({"event_id": ""}, "event_id"),
    ({"status": "fine"}, "status"),
    ({"usage": {"input_tokens": -1}}, "usage.input_tokens"),
    ({"usage": {"input_token": 5}}, "usage.input_token"),  # typo: rejected, never priced as 0
    ({"usage": {"input_tokens": 10, "cached_input_tokens": 20}}, "usage"),  # cache is part of input
    ({"usage": {"output_tokens": 5, "reasoning_tokens": 6}}, "usage"),  # reasoning is part of output
])
def test_invalid_events_name_the_field(change, field):
    with pytest.raises(ValidationError) as err:
        UsageEvent.model_validate({**BASE, **change})
    assert describe_validation_error(err.value).startswith(field)


def test_priced_event_carries_money_as_decimal_strings_and_drops_content():
    priced = PricedEvent.model_validate({
        **BASE, "usage": {"input_tokens": 3}, "content": {"prompt": "secret"}, "tokens_source": "provider",
        "cost_usd": "0.000000000001", "cost_breakdown": {"input": "0.000000000001"}, "pricing_status": "priced"})
    data = priced.to_json()
    assert data["cost_usd"] == "0.000000000001" and "content" not in data
    assert Decimal(data["cost_breakdown"]["input"]) == Decimal("1E-12")


def test_partition_key_prefers_team_and_ids_are_deterministic():
    assert partition_key({**BASE, "attribution": {"org": "acme", "team": "search"}}) == b"team:search"
    assert partition_key(UsageEvent.model_validate({**BASE, "attribution": {"org": "acme"}})) == b"org:acme"
    assert partition_key(BASE) == b"unattributed"
    assert derive_event_id("kong", {"a": 1, "b": 2}) == derive_event_id("kong", {"b": 2, "a": 1})
    assert derive_event_id("kong", 1) != derive_event_id("apisix", 1)
