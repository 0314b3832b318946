"""price_event: meter + price into the PricedEvent the worker publishes."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import pytest

from streams.enrich import price_event
from streams.metering import MeteringError
from streams.pricing import load_price_book
from tokenmeter.events import Attribution, Content, PricedEvent, Usage, UsageEvent

TS = datetime(2025, 11, 1, 12, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def book():
    return load_price_book()


def test_provider_usage_priced_and_serialised(book):
    event = UsageEvent(event_id="a", ts=TS, source="kong", provider="openai", model="gpt-4o-2024-08-06",
                       attribution=Attribution(org="acme", team="search"), latency_ms=970.0,
                       usage=Usage(input_tokens=1117, cached_input_tokens=1024, output_tokens=46))
    priced = price_event(event, book, priced_at=TS)
    assert isinstance(priced, PricedEvent)
    assert (priced.tokens_source, priced.pricing_status, priced.price.entry) == ("provider", "priced",
                                                                                 "openai/gpt-4o-2024-08-06")
    assert priced.cost_usd == (93 * Decimal("2.50") + 1024 * Decimal("1.25") + 46 * Decimal("10")) / 1_000_000
    wire = priced.to_json()
    assert wire["cost_usd"] == "0.001972500000"
    assert wire["cost_breakdown"] == {"input": "0.000232500000", "cached_input": "0.001280000000",
                                      "output": "0.000460000000"}
    assert wire["attribution"]["team"] == "search" and wire["latency_ms"] == 970.0
    assert PricedEvent.model_validate(wire) == priced  # what the loader reads back is the same event


def test_content_is_counted_then_dropped(book):
    event = UsageEvent(event_id="b", ts=TS, source="apisix", provider="anthropic", model="claude-haiku-4-5",
                       content=Content(prompt=[{"role": "user", "content": "Hello there"}], completion="Hi!"))
    priced = price_event(event, book)
    assert priced.tokens_source == "estimated" and priced.usage.input_tokens > 0
    assert priced.content is None and "content" not in priced.to_json()
    assert priced.cost_usd > 0 and priced.priced_at is not None


def test_unpriced_events_keep_their_reason(book):
    event = UsageEvent(event_id="c", ts=TS, source="otel", provider="cerebras", model="llama-3.3-70b",
                       usage=Usage(input_tokens=10, output_tokens=5))
    wire = price_event(event, book).to_json()
    assert wire["pricing_status"] == "unpriced" and "llama-3.3-70b" in wire["unpriced_reason"]
    assert "price" not in wire


def test_metering_errors_reach_the_caller(book):
    event = UsageEvent(event_id="d", ts=TS, source="litellm", provider="openai", model="gpt-4o")
    with pytest.raises(MeteringError, match="neither usage nor content"):
        price_event(event, book)


def test_usage_assumption_is_carried_to_the_priced_event_and_counted(book):
    import orjson

    from streams.batch import RawRecord, process_batch

    event = UsageEvent(event_id="assumed-1", ts=TS, source="litellm", provider="anthropic", model="claude-sonnet-4",
                       usage=Usage(input_tokens=5000, cache_write_tokens=1163, output_tokens=235),
                       usage_assumption="litellm-cache-writes-assumed-in-prompt-tokens")
    priced = price_event(event, book, priced_at=TS)
    assert priced.to_json()["usage_assumption"] == "litellm-cache-writes-assumed-in-prompt-tokens"
    plain = event.model_copy(update={"event_id": "plain-1", "usage_assumption": None})
    records = [RawRecord(orjson.dumps([event.model_dump(mode="json"), plain.model_dump(mode="json")]))]
    result = process_batch(records, book)
    assert (result.priced_count, result.assumed_count) == (2, 1)
