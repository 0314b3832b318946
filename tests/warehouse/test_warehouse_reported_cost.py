"""A provider-reported cost (OpenRouter) stored in the warehouse: the cost of record is the reported one, the
difference from the catalog is a cost line of its own in the reports, and the stored row reads back as reported
(so a re-price keeps it)."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

from streams.enrich import price_event
from streams.pricing import load_price_book
from tokenmeter.events import Attribution, Usage, UsageEvent
from warehouse.reprice import stored_row_to_event


def test_reported_cost_and_its_difference_are_stored_and_reported(wh, org):
    book = load_price_book()

    def priced(event_id: str, reported: str | None) -> dict:
        event = UsageEvent(event_id=event_id, ts=datetime(2025, 8, 11, 10, tzinfo=timezone.utc), source="openai",
                           provider="openrouter", model="openai/gpt-4.1-mini", attribution=Attribution(org=org),
                           usage=Usage(input_tokens=8174, output_tokens=30), reported_cost_usd=reported)
        return price_event(event, book).to_json()

    searched = priced(f"{org}-search", "0.0133176")  # OpenRouter charged 0.01 for a web search on top
    catalog_only = priced(f"{org}-plain", None)
    assert wh.insert_priced([searched, catalog_only]) == 2

    total = wh.spend(["provider"], filters={"org": [org]}).to_dicts()
    assert total[0]["cost_usd"] == Decimal("0.0133176") + Decimal("0.0033176")

    lines = {r["cost_line"]: (r["events"], r["cost_usd"]) for r in wh.cost_lines([], filters={"org": [org]}).to_dicts()}
    assert lines["reported_difference"] == (1, Decimal("0.01"))
    assert lines["input"] == (2, Decimal("0.0032696") * 2)

    stored = {r["event_id"]: r for r in wh.query(
        "SELECT * FROM priced_events WHERE org = {org:String}", {"org": org}).to_dicts()}
    assert stored_row_to_event(stored[f"{org}-search"]).reported_cost_usd == Decimal("0.0133176")
    assert stored_row_to_event(stored[f"{org}-plain"]).reported_cost_usd is None
