"""The showback page's cost-center table in a real browser: cost center, GL account and owner per team with
direct, allocated and total cost; unmapped spend visible; a team user sees only their team's row; a broken
mapping file is shown on the page with all its errors."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from selenium.webdriver.support.ui import WebDriverWait

from dash_seed import TOTAL, browser_login, element_text, priced_events, table_rows
from dashboards import create_app
from dashboards.formatting import format_usd
from dashboards.users import add_user
from tokenmeter.settings import load_settings

pytestmark = [pytest.mark.browser, pytest.mark.slow(seconds=27)]  # rough seconds: longest files first (tests/suite_order.py)

NOW = datetime.now(timezone.utc)
RANGE = f"start={(NOW - timedelta(days=1)).date()}&end={NOW.date()}"
FINANCE = """
cost_centers:
  - match: {team: alpha}
    cost_center: CC-ALPHA
    gl_account: "6400"
    owner: alpha-lead@example.com
allocation:
  - name: gamma-platform
    scope: {team: gamma}
    basis: fixed
    shares: {alpha: 1, beta: 1}
    remainder_to: beta
"""


@pytest.fixture(scope="module")
def finance_app(tmp_path_factory, kafka_bootstrap):
    from warehouse import open_warehouse

    data_dir = tmp_path_factory.mktemp("dash-finance")
    users = data_dir / "users.yaml"
    add_user(users, "fin", "fin-pass", "finance")
    add_user(users, "al", "al-pass", "team:alpha")
    mapping = data_dir / "finance.yaml"
    mapping.write_text(FINANCE)
    settings = load_settings(data_dir=data_dir, dashboard_users_file=users, kafka_bootstrap=kafka_bootstrap,
                             dashboard_secret_key="s" * 32, cost_centers_file=mapping)
    warehouse = open_warehouse(settings, writer=True, serve=False)
    try:
        warehouse.insert_priced(priced_events(NOW))
        yield settings, warehouse, mapping
    finally:
        warehouse.close()


def _table_text(dash_duo) -> str:
    return element_text(dash_duo, "#showback-finance")


def test_showback_shows_cost_centers_and_allocation(dash_duo, finance_app):
    settings, warehouse, mapping = finance_app
    browser_login(dash_duo, create_app(settings, warehouse=warehouse), "fin", "fin-pass")
    dash_duo.wait_for_page(url=f"{dash_duo.server.url}/showback?{RANGE}&by=team")
    dash_duo.wait_for_contains_text("#showback-finance-table", "CC-ALPHA", timeout=40)
    text = _table_text(dash_duo)
    for needle in ("Direct", "Allocated", "Total", "unmapped", "alpha-lead@example.com", "gamma", "beta"):
        assert needle in text
    (total_row,) = table_rows(dash_duo, "#showback-finance-table tr.total")
    assert format_usd(TOTAL) in total_row  # direct = total: allocation only moves money
    (gamma,) = [row for row in table_rows(dash_duo, "#showback-finance-table tr") if row and row[0] == "gamma"]
    assert gamma[-1] == format_usd(0 * TOTAL)  # gamma's spend went to alpha and beta


def test_team_user_sees_only_their_row_and_bad_files_show_errors(dash_duo, finance_app):
    settings, warehouse, mapping = finance_app
    browser_login(dash_duo, create_app(settings, warehouse=warehouse), "al", "al-pass")
    dash_duo.wait_for_page(url=f"{dash_duo.server.url}/showback?{RANGE}&by=team")
    dash_duo.wait_for_contains_text("#showback-finance-table", "CC-ALPHA", timeout=40)
    text = _table_text(dash_duo)
    assert "beta" not in text and "gamma" not in text
    mapping.write_text("cost_centers:\n  - match: {colour: red}\n  - {}\n")
    try:
        dash_duo.wait_for_page(url=f"{dash_duo.server.url}/showback?{RANGE}&by=team")
        WebDriverWait(dash_duo.driver, 20, poll_frequency=0.2).until(
            lambda _: "error(s)" in _table_text(dash_duo))
        assert "match key 'colour'" in _table_text(dash_duo) and "cost_centers[1]" in _table_text(dash_duo)
    finally:
        mapping.write_text(FINANCE)


def test_dashboard_focus_export_carries_cost_centers_and_allocation(finance_app):
    import csv
    import io
    from decimal import Decimal

    import base64

    settings, warehouse, _ = finance_app
    client = create_app(settings, warehouse=warehouse).server.test_client()
    auth = {"Authorization": "Basic " + base64.b64encode(b"fin:fin-pass").decode()}
    month = NOW.strftime("%Y-%m")
    response = client.get(f"/api/v1/export?month={month}&format=focus&group_by=team", headers=auth)
    assert response.status_code == 200, response.data[:300]
    rows = list(csv.DictReader(io.StringIO(response.data.decode())))
    assert sum(Decimal(r["BilledCost"]) for r in rows) == TOTAL
    assert {r["AllocatedMethodId"] for r in rows} == {"", "gamma-platform"}
    assert {r["x_CostCenter"] for r in rows if r["AllocatedResourceName"] == "alpha"} == {"CC-ALPHA"}


def test_closed_months_are_marked(dash_duo, finance_app):
    from warehouse.month_close import close_month, closes_dir

    settings, warehouse, _ = finance_app
    first = NOW.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    previous_end = first - timedelta(days=1)
    previous = previous_end.strftime("%Y-%m")
    close_month(warehouse, closes_dir(settings), previous, closed_by="test")
    browser_login(dash_duo, create_app(settings, warehouse=warehouse), "fin", "fin-pass")
    dash_duo.wait_for_page(url=f"{dash_duo.server.url}/export")
    dash_duo.find_element("#export-month").click()
    dash_duo.wait_for_contains_text("body", f"{previous} (closed", timeout=20)  # the open options menu
    start = previous_end.replace(day=1).date()
    dash_duo.wait_for_page(url=f"{dash_duo.server.url}/showback?start={start}&end={previous_end.date()}&by=team")
    dash_duo.wait_for_contains_text("#closed-month-note", f"{previous} is closed", timeout=20)
