"""Warehouse test fixtures. chDB allows one open data path per process, so the tests of a module share ONE
warehouse (isolated by a unique `org` per test) and close it when the module ends, so that other test modules
(the dashboard's, for one) can open their own path; other paths live in subprocesses."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any, Callable

import pytest

from tokenmeter.settings import Settings
from warehouse_template import empty_warehouse_in


@pytest.fixture(scope="module")
def warehouse_settings(tmp_path_factory) -> Settings:
    """Settings of a new, empty warehouse (a copy of the run's freshly migrated one: tests/warehouse_template.py)."""
    data_dir = empty_warehouse_in(tmp_path_factory.mktemp("warehouse-data"), tmp_path_factory)
    return Settings(data_dir=data_dir, load_flush_seconds=0.2, raw_retention_days=3650)  # the fixtures use 2025 dates


@pytest.fixture(scope="module")
def wh(warehouse_settings):
    from warehouse import open_warehouse

    warehouse = open_warehouse(warehouse_settings, writer=True)
    yield warehouse
    warehouse.close()


@pytest.fixture
def org() -> str:
    return f"org-{uuid.uuid4().hex[:10]}"


EventFactory = Callable[..., dict[str, Any]]


@pytest.fixture(scope="session")
def make_event() -> EventFactory:
    """make_event(event_id, org, team=..., cost="0.000123", ...) -> a PricedEvent JSON dict (a pure function, so
    module-scoped fixtures may use it too)."""
    return make_priced_event


def make_priced_event(
    event_id: str,
    org: str,
    *,
    team: str = "search",
    cost: str | Decimal = "0.000123000000",
    ts: str = "2025-03-01T10:15:30.250Z",
    model: str = "gpt-4o",
    provider: str = "openai",
    input_tokens: int = 100,
    output_tokens: int = 20,
    priced: bool = True,
    route: str | None = None,
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": event_id,
        "ts": ts,
        "source": "test",
        "provider": provider,
        "model": model,
        "attribution": {"org": org, "team": team, "tags": {"env": "test"}},
        "usage": {"input_tokens": input_tokens, "cached_input_tokens": input_tokens // 2,
                  "output_tokens": output_tokens, "reasoning_tokens": output_tokens // 4},
        "latency_ms": 812.5,
        "tokens_source": "provider",
        "cost_usd": str(cost) if priced else "0",
        "pricing_status": "priced" if priced else "unpriced",
        "priced_at": "2025-03-01T10:15:31Z",
    }
    if route:
        event["attribution"]["route"] = route
    if priced:
        event["cost_breakdown"] = {"input": str(cost)}
        event["price"] = {"entry": f"{provider}/{model}", "effective_from": "2024-08-06", "catalog_version": "t1"}
    else:
        event["unpriced_reason"] = f"no price for {provider}/{model}"
    return event
