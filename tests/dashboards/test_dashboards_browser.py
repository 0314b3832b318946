"""The dashboard in headless Chromium over a real chDB warehouse holding known priced events of 3 teams."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from selenium.webdriver.support.ui import WebDriverWait

from dash_seed import QUIET_REFRESH, browser_login, element_attribute, open_page
from dashboards import create_app
from dashboards.formatting import format_usd, format_usd_exact
from dashboards.users import add_user
from tokenmeter.events import PricedEvent
from tokenmeter.settings import load_settings
from warehouse_template import empty_warehouse_in

pytestmark = [pytest.mark.browser, pytest.mark.slow(seconds=28)]  # rough seconds: longest files first (tests/suite_order.py)

# team -> costs of its priced events; 12 decimals so the exact total is not a 2-decimal number
COSTS = {
    "alpha": [Decimal("1.234567890123"), Decimal("0.000000000001")],
    "beta": [Decimal("2.500000000000")],
    "gamma": [Decimal("0.333333333333"), Decimal("0.333333333333"), Decimal("0.333333333334")],
}
TOTAL = sum((c for costs in COSTS.values() for c in costs), Decimal(0))
# Set to write docs screenshots: TOKENMETER_SCREENSHOT_DIR=docs/screenshots
SCREENSHOT_DIR = os.environ.get("TOKENMETER_SCREENSHOT_DIR")


def priced_events(now: datetime) -> list[dict]:
    events = []
    for team, costs in COSTS.items():
        for i, cost in enumerate(costs):
            events.append(PricedEvent(
                event_id=f"dash-test-{team}-{i}", ts=now - timedelta(minutes=5 + i), source="test",
                provider="openai", model="gpt-4o-mini" if i % 2 == 0 else "gpt-4o",
                attribution={"team": team}, usage={"input_tokens": 1000 + i, "output_tokens": 100},
                tokens_source="provider", cost_usd=cost, pricing_status="priced",
                price={"entry": "openai/gpt-4o-mini"},
            ).to_json())
    # Usage with no price: must show up as its own bucket, never as $0 of priced spend.
    events.append(PricedEvent(
        event_id="dash-test-gamma-unpriced", ts=now - timedelta(minutes=3), source="test", provider="acme",
        model="mystery-1", attribution={"team": "gamma"}, usage={"input_tokens": 500, "output_tokens": 50},
        tokens_source="provider", cost_usd=Decimal(0), pricing_status="unpriced", unpriced_reason="no price",
    ).to_json())
    return events


@pytest.fixture(scope="module")
def populated_warehouse(tmp_path_factory):
    """chDB allows one data path per process: one module-scoped warehouse, written here, read by the app."""
    from warehouse import open_warehouse

    data_dir = empty_warehouse_in(tmp_path_factory.mktemp("dash-warehouse"), tmp_path_factory)
    add_user(data_dir / "users.yaml", "fin", "fin-pass", "finance")
    settings = load_settings(data_dir=data_dir, dashboard_users_file=data_dir / "users.yaml", **QUIET_REFRESH)
    warehouse = open_warehouse(settings, writer=True)
    try:
        warehouse.insert_priced(priced_events(datetime.now(timezone.utc)))
        yield settings, warehouse
    finally:
        warehouse.close()


def _id_selector(**component_id: str) -> str:
    """CSS selector of a pattern-matching id: Dash renders dict ids as sorted, compact JSON."""
    return "[id='" + json.dumps(component_id, sort_keys=True, separators=(",", ":")) + "']"


def _kpi(name: str) -> str:
    return _id_selector(name=name, type="kpi")


def _graph_x(dash_duo, panel: str) -> list:
    script = ("const el = document.querySelector(arguments[0] + ' .js-plotly-plot');"
              "return el && el.data && el.data.length ? el.data[0].x : null;")
    return dash_duo.driver.execute_script(script, _id_selector(panel=panel, type="overview-graph"))


def _wait_for_graph_x(dash_duo, panel: str, expected: set[str]) -> None:
    WebDriverWait(dash_duo.driver, 15).until(lambda _: set(_graph_x(dash_duo, panel) or []) == expected)


def _screenshot(dash_duo, name: str) -> None:
    if SCREENSHOT_DIR:
        Path(SCREENSHOT_DIR).mkdir(parents=True, exist_ok=True)
        dash_duo.driver.set_window_size(1400, 1150)
        dash_duo.driver.save_screenshot(str(Path(SCREENSHOT_DIR) / f"{name}.png"))


def test_overview_shows_exact_totals_and_follows_the_team_filter(dash_duo, populated_warehouse):
    settings, warehouse = populated_warehouse
    browser_login(dash_duo, create_app(settings, warehouse=warehouse), "fin", "fin-pass")

    dash_duo.wait_for_text_to_equal(_kpi("cost"), format_usd(TOTAL), timeout=20)
    assert element_attribute(dash_duo, _kpi("cost"), "title") == format_usd_exact(TOTAL)
    _wait_for_graph_x(dash_duo, "cost_by_team", {"alpha", "beta", "gamma"})
    dash_duo.wait_for_text_to_equal(_kpi("events"), "7")
    dash_duo.wait_for_text_to_equal(_kpi("unpriced"), "1")
    dash_duo.wait_for_contains_text("#freshness-text", "last event")
    _screenshot(dash_duo, "overview")

    dash_duo.select_dcc_dropdown("#overview-teams", value="alpha")
    alpha_total = sum(COSTS["alpha"], Decimal(0))
    dash_duo.wait_for_text_to_equal(_kpi("cost"), format_usd(alpha_total))
    assert element_attribute(dash_duo, _kpi("cost"), "title") == format_usd_exact(alpha_total)
    _wait_for_graph_x(dash_duo, "cost_by_team", {"alpha"})
    dash_duo.wait_for_text_to_equal(_kpi("unpriced"), "0")
    assert "team=alpha" in dash_duo.driver.current_url  # the view is shareable

    # A shared link opens the same filtered view.
    dash_duo.wait_for_page(url=dash_duo.server_url + "/?team=beta")
    dash_duo.wait_for_text_to_equal(_kpi("cost"), format_usd(sum(COSTS["beta"], Decimal(0))), timeout=20)
    _wait_for_graph_x(dash_duo, "cost_by_team", {"beta"})

    # A range without events shows the waiting state, not an error.
    open_page(dash_duo, "/?start=2001-01-01&end=2001-01-02")
    dash_duo.wait_for_contains_text("#overview-status", "waiting for events", timeout=20)

    open_page(dash_duo, "/models")
    dash_duo.wait_for_contains_text("#models-table", "gpt-4o-mini", timeout=20)
    dash_duo.wait_for_contains_text("#models-table", "mystery-1")
    _screenshot(dash_duo, "models")
    assert dash_duo.get_logs() == []


def test_sign_out_button_posts_with_its_token_and_ends_the_session(dash_duo, populated_warehouse):
    """Issue 11 item 10: logout is a POST form with the session's CSRF token (GET /logout is refused); the real
    button in Chromium signs out, and the app then asks for a login again."""
    settings, warehouse = populated_warehouse
    browser_login(dash_duo, create_app(settings, warehouse=warehouse), "fin", "fin-pass")
    driver = dash_duo.driver
    dash_duo.wait_for_element("#logout-link").click()
    WebDriverWait(driver, 10).until(lambda d: "/login" in d.current_url)
    driver.get(dash_duo.server.url + "/budgets")
    WebDriverWait(driver, 10).until(lambda d: "/login?next=/budgets" in d.current_url)
