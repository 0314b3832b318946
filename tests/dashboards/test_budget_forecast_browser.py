"""The Budgets page's "Forecast at period end" in headless Chromium, from records the real budget owner wrote
(streams.budgets.owner -> the loader's row builder -> chDB -> the page).

The ledger published a projection only while it reached the limit, so a budget comfortably within its limit
showed "-", the same as a budget with no spend at all: it read as "no forecast". Each state now says what it is.
And the burn-down's title, on a narrow window, is not under plotly's mode bar any more."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from selenium.webdriver.support.ui import WebDriverWait

from dash_seed import browser_login, table_rows
from dashboards import create_app
from dashboards.users import add_user
from tests.streams.test_budgets_owner import budgets, messages, owner_with, priced
from tokenmeter import topics
from tokenmeter.settings import load_settings

pytestmark = [pytest.mark.browser, pytest.mark.slow(seconds=12)]

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)
FORECAST = 9  # column "Forecast at period end" of dashboards/pages/budgets.STATUS_HEADERS
STATE = 2


def _enforcement_records() -> list[dict]:
    """Five budgets as the owner reports them at NOW: one far within its limit, one heading over it, one with no
    spend, one whose spend started a minute ago, one rolling."""
    from streams.budgets.routing import BudgetRouter

    defs = (budgets(name="search-steady", limit="100") | budgets(name="ads-hot", scope={"team": "ads"}, limit="10")
            | budgets(name="idle", scope={"team": "nobody"}, limit="10")
            | budgets(name="fresh", scope={"team": "fresh"}, limit="10")
            | budgets(name="search-rolling", period="rolling:24h", limit="100"))
    router, owner = BudgetRouter(defs.values()), owner_with(defs)
    events = [priced(f"s{i}", "0.01", ts=NOW - timedelta(minutes=30 - 5 * i)) for i in range(7)]
    events += [priced(f"a{i}", "0.5", team="ads", ts=NOW - timedelta(minutes=30 - 5 * i)) for i in range(7)]
    events.append(priced("f0", "0.2", team="fresh", ts=NOW - timedelta(minutes=1)))
    out = owner.process(messages(router, [(0, i, e) for i, e in enumerate(events)]), now=NOW)
    latest = {name: record for name, record in out.enforcement + owner.tick(NOW).enforcement if record}
    assert set(latest) == set(defs)
    return list(latest.values())


@pytest.fixture(scope="module")
def app_settings(tmp_path_factory):
    from warehouse import open_warehouse
    from warehouse.records_load import record_to_row

    data_dir = tmp_path_factory.mktemp("budget-forecast")
    users = data_dir / "users.yaml"
    add_user(users, "fin", "fin-pass", "finance")
    settings = load_settings(data_dir=data_dir, dashboard_users_file=users, dashboard_secret_key="f" * 32)
    warehouse = open_warehouse(settings, writer=True, serve=False)
    try:
        rows = [record_to_row(topics.ENFORCEMENT, record, NOW)[1] for record in _enforcement_records()]
        warehouse.insert_records(topics.ENFORCEMENT, rows)
        yield settings, warehouse
    finally:
        warehouse.close()


def test_the_forecast_column_says_within_limit_no_spend_or_not_enough_data(dash_duo, app_settings):
    settings, warehouse = app_settings
    browser_login(dash_duo, create_app(settings, warehouse=warehouse), "fin", "fin-pass")
    dash_duo.wait_for_page(url=f"{dash_duo.server.url}/budgets")
    dash_duo.wait_for_contains_text("#budgets-table", "search-rolling", timeout=20)
    rows = {row[0]: row for row in table_rows(dash_duo, "#budgets-table tbody tr")}
    forecasts = {name: row[FORECAST] for name, row in rows.items()}
    # $0.07 in 30 minutes: $0.14/hour for the 10.5 days left of November -> $35.35, well within $100
    assert forecasts["search-steady"] == "$35.35 (within limit)"
    assert rows["search-steady"][STATE] == "ok"
    assert forecasts["ads-hot"] == "$1,767.50" and rows["ads-hot"][STATE] == "at risk"  # breach date beside it
    assert forecasts["idle"] == "no spend yet"
    assert forecasts["fresh"] == "not enough data yet"  # a minute of spend: too little to project
    assert forecasts["search-rolling"] == "none (rolling window)"


# The title's and the mode bar's boxes, and the titles' text, of every chart on the page, in one script call.
_TITLES_AND_MODE_BARS = """
return Array.from(document.querySelectorAll('.js-plotly-plot')).map(plot => {
    const title = plot.querySelector('.gtitle'), bar = plot.querySelector('.modebar');
    const box = el => { if (!el) return null; const r = el.getBoundingClientRect();
                        return {left: r.left, right: r.right, top: r.top, bottom: r.bottom}; };
    return {text: title ? title.textContent : '', title: box(title), bar: box(bar)};
});"""


def _overlap(a: dict, b: dict) -> bool:
    return a["left"] < b["right"] and b["left"] < a["right"] and a["top"] < b["bottom"] and b["top"] < a["bottom"]


def test_the_mode_bar_leaves_a_long_chart_title_readable(dash_duo, app_settings):
    """Plotly's mode bar (zoom, pan, download) sat at the top right over the chart title's row: on a laptop-wide
    window the burn-down's title ("search-steady: $0.0700 of $100.00 used (0.07%), last month (November 2026, UTC)")
    ran under its icons (title from x=37 to x=600 px, mode bar from x=449, on one row). The title now has its own
    row below the mode bar."""
    settings, warehouse = app_settings
    browser_login(dash_duo, create_app(settings, warehouse=warehouse), "fin", "fin-pass")
    dash_duo.driver.set_window_size(760, 1000)
    dash_duo.wait_for_page(url=f"{dash_duo.server.url}/budgets?budget=search-steady")

    def burn_down_drawn(driver) -> dict | None:
        charts = driver.execute_script(_TITLES_AND_MODE_BARS)
        return next((c for c in charts if c["text"].startswith("search-steady: $0.0700 of $100.00")), None)

    burn_down = WebDriverWait(dash_duo.driver, 20).until(burn_down_drawn)
    assert burn_down["title"] and burn_down["bar"], burn_down
    assert burn_down["title"]["right"] > burn_down["bar"]["left"], "the title is long enough to reach the mode bar"
    assert not _overlap(burn_down["title"], burn_down["bar"]), burn_down
