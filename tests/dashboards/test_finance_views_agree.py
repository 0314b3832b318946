"""left31: finance numbers that disagreed between views, over a real chDB warehouse and the real dashboard app
(Flask's test client and the pages' own callbacks, no browser).

One day of four provider/model pairs: openai/gpt-4o and azure/gpt-4o (one model name, two providers and two bills),
openai/gpt-4o-mini (the provider reported its usage, not yet its cost) and gemini (no provider report at all). OpenAI
billed gpt-4o 0.9 against 1.0 metered."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from dash_seed import EXTRA_TABLES, _t, finance_warehouse
from dashboards import create_app
from dashboards.access import ScopedWarehouse
from dashboards.filters import Filters
from dashboards.overview_data import build_overview
from dashboards.users import Principal
from tokenmeter.events import PricedEvent

pytestmark = pytest.mark.slow(seconds=3)

DAY = (datetime.now(timezone.utc) - timedelta(days=3)).replace(hour=0, minute=0, second=0, microsecond=0)
CALLS = {  # (provider, model) -> metered cost of the day
    ("openai", "gpt-4o"): Decimal("1.000000000001"),
    ("azure", "gpt-4o"): Decimal("0.5"),
    ("openai", "gpt-4o-mini"): Decimal("0.3"),
    ("gemini", "gemini-2.0-flash"): Decimal("0.2"),
}
FIN = {"username": "fin", "password": "fin-pass"}


def _event(i: int, provider: str, model: str, cost: Decimal) -> dict:
    return PricedEvent(
        event_id=f"left31-{i}", ts=DAY + timedelta(hours=10, minutes=i), source="test", provider=provider, model=model,
        attribution={"team": "search"}, usage={"input_tokens": 100, "output_tokens": 10}, tokens_source="provider",
        cost_usd=cost, pricing_status="priced", price={"entry": f"{provider}/{model}"},
    ).to_json()


@pytest.fixture(scope="module")
def app_and_warehouse(tmp_path_factory):
    with finance_warehouse(tmp_path_factory, "left31-views") as (settings, warehouse):
        warehouse.insert_priced([_event(i, p, m, c) for i, ((p, m), c) in enumerate(CALLS.items())])
        warehouse.backend.command(EXTRA_TABLES["provider_usage"])
        day = f"{_t(DAY)}, {_t(DAY + timedelta(days=1))}"
        warehouse.backend.command(
            "INSERT INTO provider_usage (id, provider, kind, bucket_start, bucket_end, model, cost_usd, input_tokens,"
            f" output_tokens, fetched_at) VALUES ('l31-cost', 'openai', 'cost', {day}, 'gpt-4o', 0.9, 0, 0, {_t(DAY)}),"
            f" ('l31-usage', 'openai', 'usage', {day}, 'gpt-4o-mini', 0, 100, 10, {_t(DAY)})")
        yield create_app(settings, warehouse=warehouse), warehouse


def _client(app):
    client = app.server.test_client()
    assert client.post("/login", data=FIN).status_code == 302
    return client


def test_overview_api_names_each_models_provider_and_the_chart_tells_them_apart(app_and_warehouse):
    """`/api/v1/overview`'s by_model rows were grouped by model alone, with `provider: ""`: openai's and azure's
    gpt-4o were one row of 1.5 USD that a finance user could not split between the two bills."""
    app, warehouse = app_and_warehouse
    response = _client(app).get(f"/api/v1/overview?start={DAY:%Y-%m-%d}&end={DAY:%Y-%m-%d}")
    assert response.status_code == 200, response.data[:300]
    rows = {(r["provider"], r["model"]): Decimal(r["cost_usd"]) for r in response.get_json()["by_model"]}
    assert rows == CALLS

    # The Overview page's "Cost by model" chart reads the same rows: one bar per provider and model, the model name
    # alone where it is one provider's, "provider/model" where two providers serve the name.
    data = build_overview(ScopedWarehouse(warehouse, Principal("fin", "finance")),
                          Filters.from_inputs(f"{DAY:%Y-%m-%d}", f"{DAY:%Y-%m-%d}", None))
    figure = sys.modules["pages.overview"].panel_figures(data)["cost_by_model"]
    bars = dict(zip(figure.data[0].y, figure.data[0].x))
    assert bars == {"openai/gpt-4o": pytest.approx(1.0), "azure/gpt-4o": pytest.approx(0.5),
                    "gpt-4o-mini": pytest.approx(0.3), "gemini-2.0-flash": pytest.approx(0.2)}


def _reconciliation(client) -> tuple[dict, str]:
    """The Reconciliation page's chart and headline as its callback answers them."""
    outputs = [("dedup-table", "children"), ("drift-table", "children"), ("drift-summary", "children"),
               ("recon-table", "children"), ("recon-chart", "figure"), ("recon-summary", "children"),
               ("recon-status", "children"), ("recon-status", "style"), ("recon-status", "className")]
    payload = {"output": ".." + "...".join(f"{i}.{p}" for i, p in outputs) + "..",
               "outputs": [{"id": i, "property": p} for i, p in outputs],
               "inputs": [{"id": "recon-dates", "property": "start_date", "value": f"{DAY:%Y-%m-%d}"},
                          {"id": "recon-dates", "property": "end_date", "value": f"{DAY:%Y-%m-%d}"},
                          {"id": "refresh", "property": "n_intervals", "value": 0}],
               "changedPropIds": ["recon-dates.start_date"], "state": []}
    response = client.post("/_dash-update-component", json=payload)
    assert response.status_code == 200, response.data[:500]
    answer = json.loads(response.data)["response"]
    return answer["recon-chart"]["figure"], answer["recon-summary"]["children"]


def test_the_reconciliation_chart_compares_what_the_headline_compares_and_says_what_it_leaves_out(app_and_warehouse):
    """walk31: the per-day chart set every metered provider (gemini, which sends no report, included) against the
    reported ones, 2.0 metered against 0.9 billed here, while the headline compared the reported days and models
    only (1.0 against 0.9). The chart's metered bar is now the headline's, and the chart says what it leaves out."""
    app, _ = app_and_warehouse
    figure, summary = _reconciliation(_client(app))
    assert summary.startswith("On days and models the providers reported: metered $1.00, provider-reported $0.9000")
    metered, reported = (next(t for t in figure["data"] if t["name"].startswith(name))
                         for name in ("metered", "reported"))
    assert metered["y"] == [pytest.approx(1.000000000001)] and reported["y"] == [pytest.approx(0.9)]
    notes = " ".join(a["text"] for a in figure["layout"].get("annotations", []))
    # azure and gemini send no report, openai reported gpt-4o-mini's usage but not its cost yet
    assert ("Not compared: $1.00 metered without a provider cost report (azure $0.5000, gemini $0.2000, "
            "openai $0.3000)") in notes, notes
