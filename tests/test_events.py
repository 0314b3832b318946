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


@pytest.mark.parametrize("change, field", [
    ({"ts": "1970-01-01T00:00:00Z"}, "ts"),  # far past: used to be skipped by the loader with a log line
    ({"ts": "2019-12-31T23:59:59Z"}, "ts"),
    ({"ts": "2035-05-01T00:00:00Z"}, "ts"),  # far future: made every warehouse insert of its batch fail
    ({"ts": "9999-12-31T00:00:00Z"}, "ts"),  # used to be dropped by the raw table's TTL but kept in the rollups
    ({"usage": {"input_tokens": 2**64 - 1}}, "usage.input_tokens"),  # used to wrap the warehouse's sums
    ({"usage": {"input_tokens": 10**12 + 1}}, "usage.input_tokens"),
    ({"usage": {"output_tokens": 10**13}}, "usage.output_tokens"),
    ({"usage": {"input_tokens": 10**12, "cached_input_tokens": 10**12 + 1}}, "usage.cached_input_tokens"),
])
def test_far_dated_events_and_absurd_token_counts_are_invalid(change, field):
    with pytest.raises(ValidationError) as err:
        UsageEvent.model_validate({**BASE, **change})
    assert describe_validation_error(err.value).startswith(field)


def test_accepted_range_edges():
    from datetime import timedelta

    from tokenmeter.events import EARLIEST_EVENT_TS, MAX_TOKENS

    now = datetime.now(timezone.utc)
    for ts in (EARLIEST_EVENT_TS, now, now + timedelta(hours=23)):
        assert UsageEvent.model_validate({**BASE, "ts": ts.isoformat()}).ts == ts
    usage = {"input_tokens": MAX_TOKENS, "output_tokens": MAX_TOKENS, "reasoning_tokens": MAX_TOKENS}
    assert UsageEvent.model_validate({**BASE, "usage": usage}).usage.total_tokens == 2 * 10**12
    with pytest.raises(ValidationError, match="future"):
        UsageEvent.model_validate({**BASE, "ts": (now + timedelta(hours=25)).isoformat()})
