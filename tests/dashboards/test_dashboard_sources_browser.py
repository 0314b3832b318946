"""Finance checks in a real browser (issue 16). Overview's source health: a gateway that stopped sending shows
as stale and highlighted, a steady one as ok, with events in the last hour against their usual level; a team
user does not see the section (sources are nobody's team). Reconciliation: calls seen by two sources, counted
once, per source pair."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from dash_seed import QUIET_REFRESH, browser_login, table_rows
from dashboards import create_app
from dashboards.users import add_user
from tokenmeter.settings import load_settings
from warehouse_template import empty_warehouse_in

pytestmark = [pytest.mark.browser, pytest.mark.slow(seconds=30)]  # rough seconds: longest files first (tests/suite_order.py)
NOW = datetime.now(timezone.utc).replace(microsecond=0)


def steady(source: str, per_hour: int, days: int, silent_for: timedelta = timedelta(0)) -> list[dict]:
    step, out = timedelta(minutes=60 / per_hour), []
    ts = NOW - silent_for - step / 2
    while ts >= NOW - timedelta(days=days):
        out.append({"event_id": f"{source}-{len(out)}", "ts": ts.isoformat(), "source": source, "provider": "openai",
                    "model": "gpt-4o", "status": "ok", "attribution": {"team": "alpha", "tags": {}},
                    "usage": {"input_tokens": 10, "output_tokens": 1}, "tokens_source": "provider",
                    "cost_usd": "0.001", "cost_breakdown": {"input": "0.001"}, "pricing_status": "priced",
                    "price": {"entry": "openai/gpt-4o"}, "priced_at": ts.isoformat()})
        ts -= step
    return out


@pytest.fixture(scope="module")
def sources_app(tmp_path_factory, kafka_bootstrap):
    from warehouse import open_warehouse

    global NOW  # the time of seeding, not of collection: a loaded xdist run may start this file many minutes
    NOW = datetime.now(timezone.utc).replace(microsecond=0)  # later, and "the last hour" had lost kong's events

    data_dir = empty_warehouse_in(tmp_path_factory.mktemp("dash-sources"), tmp_path_factory)
    users = data_dir / "users.yaml"
    add_user(users, "fin", "fin-pass", "finance")
    add_user(users, "al", "al-pass", "team:alpha")
    settings = load_settings(data_dir=data_dir, dashboard_users_file=users, kafka_bootstrap=kafka_bootstrap,
                             dashboard_secret_key="s" * 32, **QUIET_REFRESH)
    warehouse = open_warehouse(settings, writer=True, serve=False)
    try:
        warehouse.insert_priced(steady("kong", 4, 8) + steady("litellm", 4, 8, silent_for=timedelta(hours=3)))
        call = {"ts": (NOW - timedelta(minutes=30)).isoformat(), "correlation": {"response_id": "chatcmpl-1"}}
        gateway, span = steady("gateway", 1, 1)[0] | call, steady("otel", 1, 1)[0] | call
        span["correlation"] = {**call["correlation"], "trace_id": "5b8efff798038103d269b633813fc60c",
                               "span_id": "eee19b7ec3c1b174"}
        assert warehouse.insert_priced([gateway, span]) == 1  # one call, two sources
        from tokenmeter import topics
        from warehouse.completeness import SourceHealth, completeness_alert
        from warehouse.records_load import record_to_row

        stale = completeness_alert(SourceHealth("litellm", "events", NOW - timedelta(hours=3), 0, Decimal(4), 0,
                                                "stale"), NOW - timedelta(minutes=5))
        warehouse.insert_records(topics.ALERTS, [record_to_row(topics.ALERTS, stale)[1]])
        delivered = {"alert_id": stale["id"], "route": "webhook", "route_id": "webhook", "target": "http://127.0.0.1:9/***",
                     "status": "delivered", "attempts": 1, "last_error": "", "http_status": 200, "at": NOW.isoformat()}
        warehouse.insert_records(topics.ALERT_DELIVERIES, [record_to_row(topics.ALERT_DELIVERIES, delivered)[1]])
        yield settings, warehouse
    finally:
        warehouse.close()


# Read in one script run: the table may be re-rendered by a callback between finding a row and reading it
# (a StaleElementReferenceException in a loaded CI run).
ROWS_SCRIPT = """return Array.from(document.querySelectorAll('#overview-sources tbody tr'))
    .map(tr => Array.from(tr.querySelectorAll('td')).map(td => td.innerText.trim()));"""


def _rows(dash_duo) -> dict[str, list[str]]:
    return {cells[0]: cells for cells in dash_duo.driver.execute_script(ROWS_SCRIPT) if cells}


def test_overview_shows_a_stale_source(dash_duo, sources_app):
    settings, warehouse = sources_app
    browser_login(dash_duo, create_app(settings, warehouse=warehouse), "fin", "fin-pass")
    dash_duo.wait_for_contains_text("#overview-sources", "litellm", timeout=40)
    rows = _rows(dash_duo)
    assert rows["litellm"][1] == "stale" and rows["litellm"][3:5] == ["0", "4"]
    assert rows["kong"][1] == "ok" and rows["kong"][3:5] == ["4", "4"]
    flagged = dash_duo.driver.execute_script(
        "return Array.from(document.querySelectorAll('#overview-sources tr.row-bad'))"
        ".map(tr => tr.querySelector('td').innerText.trim());")
    assert flagged == ["litellm"]  # problems first, highlighted


def test_team_user_does_not_see_sources(dash_duo, sources_app):
    settings, warehouse = sources_app
    browser_login(dash_duo, create_app(settings, warehouse=warehouse), "al", "al-pass")
    dash_duo.wait_for_contains_text("#overview-movers", "", timeout=40)
    dash_duo.wait_for_style_to_equal("#overview-sources-card", "display", "none", timeout=40)


def test_reconciliation_shows_calls_seen_by_two_sources(dash_duo, sources_app):
    settings, warehouse = sources_app
    start = (NOW - timedelta(days=1)).date()
    browser_login(dash_duo, create_app(settings, warehouse=warehouse), "fin", "fin-pass",
                  page=f"/reconciliation?start={start}&end={NOW.date()}")
    dash_duo.wait_for_contains_text("#dedup-table", "gateway", timeout=40)
    rows = dash_duo.driver.execute_script(
        "return Array.from(document.querySelectorAll('#dedup-table tbody tr'))"
        ".map(tr => Array.from(tr.querySelectorAll('td')).map(td => td.innerText.trim()));")
    assert rows == [["gateway", "otel", "1", "$0.0010", "1", "0", "0", "0"]]


def test_alert_inbox_lists_finance_alerts_with_their_delivery(dash_duo, sources_app):
    import flask

    settings, warehouse = sources_app
    app = create_app(settings, warehouse=warehouse)
    layouts = []  # Dash asks for its layout once per load of the app in the browser
    app.server.before_request(lambda: layouts.append(flask.request.referrer) if flask.request.path == "/_dash-layout"
                              else None)
    browser_login(dash_duo, app, "fin", "fin-pass", page="/alerts")
    dash_duo.wait_for_contains_text("#alerts-table", "Source litellm is stale", timeout=40)
    (cells,) = table_rows(dash_duo, "#alerts-table tbody tr[data-source='completeness']")
    assert cells[1:4] == ["completeness", "source_stale", "error"] and cells[5] == "webhook: delivered"  # as Budgets writes it (was "webhook:delivered(1)")
    assert "usually 4" in cells[4]
    # the sign-in opened the page it named, once: it loaded the overview twice first (dash's server_url setter)
    assert layouts == [f"{dash_duo.server.url}/alerts"], layouts
