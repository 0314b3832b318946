"""`warehouse.demo_history.priced_history` prices the demo's calls with the worker's columnar batch step: the same
priced events, keys in the same order, as `streams.enrich.price_event` per event (what it ran before), the OTel
copies after their gateway log, and a call that cannot be priced is refused, not dropped."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest

NOW = datetime(2026, 11, 20, 15, 30, tzinfo=timezone.utc)


def _per_event(events: list[dict]) -> list[dict]:
    """The old way: the dict step, one event at a time."""
    from streams.enrich import price_event
    from streams.pricing import load_price_book
    from tokenmeter.events import UsageEvent

    book, out = load_price_book(), []
    for item in events:
        priced = price_event(UsageEvent.model_validate(item), book).to_json()
        out.append(priced)
        if item.get("correlation"):
            out.append({**priced, "event_id": f"{item['event_id']}-span", "source": "otel"})
    return out


def _without_priced_at(events: list[dict]) -> list[tuple]:
    return [tuple((k, v) for k, v in e.items() if k != "priced_at") for e in events]


def test_the_history_is_priced_as_the_per_event_step_prices_it(monkeypatch):
    from collectors.demo import callers, make_event
    from warehouse import demo_history
    from warehouse.demo_history import history_events, priced_history

    month = history_events(NOW)
    # every eighth call of the month (the injections, an unpriced model among them, the OTel pilot's copies), in
    # batches of 1,000 so that several batch boundaries fall inside
    sample = month[::8]
    monkeypatch.setattr(demo_history, "HISTORY_BATCH", 1000)
    rng = random.Random(3)  # and the flat demo's calls (collectors/demo.py), as the live-demo tests price them
    sample += [make_event(rng, caller, NOW + timedelta(seconds=i)) for i, caller in enumerate(callers() * 3)]
    expected = _per_event(sample)
    assert {e["pricing_status"] for e in expected} == {"priced", "unpriced"}
    assert any(e.get("correlation") for e in sample)
    assert _without_priced_at(priced_history(sample)) == _without_priced_at(expected)


def test_a_call_that_cannot_be_priced_is_refused():
    from warehouse.demo_history import priced_history

    bad = {"event_id": "x", "ts": "2026-11-20T10:00:00Z", "source": "demo", "provider": "openai", "model": "gpt-4o",
           "attribution": {"team": "t"}, "usage": {"input_tokens": -1, "output_tokens": 1}}
    with pytest.raises(ValueError, match="not priced"):
        priced_history([bad])
