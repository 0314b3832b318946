"""A cost the provider reported (OpenRouter's usage.cost) is the cost of record, checked against the catalog.

The event's `reported_cost_usd` becomes the PricedEvent's cost; the catalog's lines for the same usage stay in the
breakdown beside a `reported_difference` line (or one `reported` line when the catalog cannot price the model), so
the lines add up to the total and a difference is visible in every cost-line report. The worker's columnar path
and the warehouse's re-price keep it."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal as D

import orjson
import pytest
from pydantic import ValidationError

from streams.batch import RawRecord, process_batch
from streams.columnar import process_batch_columnar
from streams.enrich import price_event
from streams.pricing import load_price_book
from tokenmeter.events import UsageEvent
from warehouse.reprice import reprice_row, stored_row_to_event
from warehouse.schema import event_to_row

TS = "2026-01-13T19:09:08Z"


@pytest.fixture(scope="module")
def book():
    return load_price_book()


def event(model: str = "openai/gpt-4.1-mini", cost="0.000086", **extra) -> dict:
    return {"event_id": f"or-{model}-{cost}", "ts": TS, "source": "openai", "provider": "openrouter", "model": model,
            "usage": {"input_tokens": 23, "output_tokens": 48}, "reported_cost_usd": cost, **extra}


def priced(book, **kwargs):
    return price_event(UsageEvent.model_validate(event(**kwargs)), book)


def test_reported_cost_equal_to_the_catalog_keeps_the_catalog_lines(book):
    result = priced(book)  # 23 x 0.40 + 48 x 1.60 = 86 / 1e6
    assert result.cost_usd == D("0.000086") and result.pricing_status == "priced"
    assert result.cost_breakdown == {"input": D("0.0000092"), "output": D("0.0000768"), "reported_difference": 0}
    assert result.price.entry == "openai/gpt-4.1-mini"
    assert result.reported_cost_check == "matches the catalog (openai/gpt-4.1-mini)"


def test_a_difference_is_a_line_of_its_own_and_the_lines_add_up(book):
    higher, lower = priced(book, cost="0.000186"), priced(book, cost="0.00008")
    assert higher.cost_usd == D("0.000186") and higher.cost_breakdown["reported_difference"] == D("0.0001")
    assert lower.cost_usd == D("0.00008") and lower.cost_breakdown["reported_difference"] == D("-0.000006")
    for result in (higher, lower):
        assert sum(result.cost_breakdown.values()) == result.cost_usd
    assert "by +0.0001 USD" in higher.reported_cost_check and "by -0.000006 USD" in lower.reported_cost_check


def test_a_model_the_catalog_cannot_price_still_costs_what_was_reported(book):
    result = priced(book, model="z-ai/glm-4.6", cost="1.4e-05")
    assert (result.pricing_status, result.cost_usd, result.unpriced_reason) == ("priced", D("0.000014"), None)
    assert result.cost_breakdown == {"reported": D("0.000014")}
    assert result.reported_cost_check.startswith("not checked against the catalog: unknown model 'z-ai/glm-4.6'")


def test_an_event_without_a_reported_cost_is_priced_as_before(book):
    plain = {k: v for k, v in event().items() if k != "reported_cost_usd"}
    wire = price_event(UsageEvent.model_validate(plain), book).to_json()
    assert "reported_cost_usd" not in wire and "reported_cost_check" not in wire


@pytest.mark.parametrize("bad", ["-0.01", "NaN", "Infinity", "1000000", "a lot", True])
def test_a_reported_cost_that_is_not_money_is_refused(bad):
    with pytest.raises(ValidationError, match="reported_cost_usd"):
        UsageEvent.model_validate(event(cost=bad))


def test_reported_cost_kept_to_twelve_decimal_places():
    assert UsageEvent.model_validate(event(cost=4.1400000000000003e-05)).reported_cost_usd == D("0.0000414")
    assert UsageEvent.model_validate(event(cost="0.0000000000004")).reported_cost_usd == D(0)
    assert UsageEvent.model_validate(event(cost=0)).reported_cost_usd == D(0)


def test_columnar_worker_path_prices_it_like_the_per_event_path(book):
    items = [event(), event(cost="0.000186"), event(model="z-ai/glm-4.6"), {**event(), "event_id": "plain",
                                                                           "reported_cost_usd": None}]
    records = [RawRecord(orjson.dumps(items), "tokenmeter.usage", 0, 1)]
    per_event, columnar = process_batch(records, book), process_batch_columnar(records, book)
    assert per_event.priced_count == columnar.priced_count == 4
    wall_clock = ("priced_at",)  # the only field the two paths may differ in (docs/worker-columnar.md)
    assert ([{k: v for k, v in o[2].items() if k not in wall_clock} for o in columnar.origins]
            == [{k: v for k, v in o[2].items() if k not in wall_clock} for o in per_event.origins])
    costs = [o[2]["cost_usd"] for o in columnar.origins]
    assert costs == ["0.000086000000", "0.000186000000", "0.000086000000", "0.000086000000"]


def test_reprice_of_a_stored_row_keeps_the_reported_cost(book):
    for kwargs in ({"cost": "0.000186"}, {"model": "z-ai/glm-4.6"}, {}):
        row = event_to_row(priced(book, **kwargs).to_json())
        assert stored_row_to_event(row).reported_cost_usd == row["cost_usd"]
        again = reprice_row(row, lambda e: price_event(e, book))
        assert D(again["cost_usd"]) == row["cost_usd"]
    plain = event_to_row(price_event(UsageEvent.model_validate(
        {k: v for k, v in event().items() if k != "reported_cost_usd"}), book).to_json())
    assert stored_row_to_event(plain).reported_cost_usd is None
