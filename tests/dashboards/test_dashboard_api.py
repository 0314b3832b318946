"""Login, roles and the JSON API over a real chDB warehouse, through Flask's test client (no browser).

A team user must never see another team's numbers: every query is scoped in the data layer, and the API
refuses to name another team."""

from __future__ import annotations

import base64
import csv
import io
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from dashboards import create_app
from dashboards.access import AccessDenied, ScopedWarehouse
from dashboards.users import Principal, add_user, ensure_users_file, read_users, users_file_path
from dash_seed import COSTS, TOTAL, priced_events, seed_other_tables
from tokenmeter.events import PricedEvent
from tokenmeter.settings import load_settings
from warehouse_template import empty_warehouse_in

pytestmark = pytest.mark.slow(seconds=8)  # rough seconds: longest files first (tests/suite_order.py)


@pytest.fixture(scope="module")
def app_and_warehouse(tmp_path_factory):
    from warehouse import open_warehouse

    data_dir = empty_warehouse_in(tmp_path_factory.mktemp("dash-api"), tmp_path_factory)
    users_file = data_dir / "users.yaml"
    add_user(users_file, "fin", "fin-pass", "finance")
    add_user(users_file, "al", "al-pass", "team:alpha")
    settings = load_settings(data_dir=data_dir, dashboard_users_file=users_file, dashboard_secret_key="k" * 32)
    warehouse = open_warehouse(settings, writer=True, serve=False)
    try:
        now = datetime.now(timezone.utc)
        warehouse.insert_priced(priced_events(now))
        seed_other_tables(warehouse, now)
        app = create_app(settings, warehouse=warehouse)
        yield app, warehouse
    finally:
        warehouse.close()


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


FIN = basic("fin", "fin-pass")
ALPHA = basic("al", "al-pass")


def test_everything_requires_a_login(app_and_warehouse):
    app, _ = app_and_warehouse
    client = app.server.test_client()
    page = client.get("/showback?team=alpha")
    assert page.status_code == 302 and page.headers["Location"].startswith("/login?next=/showback")
    assert client.get("/api/v1/spend").status_code == 401
    assert client.get("/api/v1/spend").headers["WWW-Authenticate"].startswith("Basic")
    assert client.post("/_dash-update-component", json={}).status_code == 401
    assert client.get("/api/v1/spend", headers=basic("fin", "wrong")).status_code == 401
    assert client.get("/login").status_code == 200
    # A crafted next= never leaves the site.
    response = client.post("/login?next=//evil.example/x", data={"username": "fin", "password": "fin-pass"})
    assert response.status_code == 302 and response.headers["Location"] == "/"


def test_session_login_and_logout(app_and_warehouse, caplog):
    app, _ = app_and_warehouse
    client = app.server.test_client()
    bad = client.post("/login", data={"username": "fin", "password": "nope"})
    assert bad.status_code == 401 and b"Wrong user name or password" in bad.data
    ok = client.post("/login?next=/budgets", data={"username": "fin", "password": "fin-pass"})
    assert ok.status_code == 302 and ok.headers["Location"] == "/budgets"
    assert client.get("/api/v1/me").get_json() == {"user": "fin", "role": "finance", "team": None}
    assert client.get("/").status_code == 200
    from test_dashboard_login_security import csrf_of

    client.post("/logout", data={"csrf": csrf_of(client)})  # POST with the session's token (issue 11 item 10)
    assert client.get("/api/v1/me").status_code == 401
    logged = caplog.text
    assert "fin-pass" not in logged and "nope" not in logged and "scrypt:" not in logged


def test_finance_sees_every_team_with_exact_decimal_strings(app_and_warehouse):
    app, _ = app_and_warehouse
    client = app.server.test_client()
    body = client.get("/api/v1/spend?group_by=team", headers=FIN).get_json()
    costs = {row["team"]: Decimal(row["cost_usd"]) for row in body["rows"]}
    assert costs == {team: sum(c, Decimal(0)) for team, c in COSTS.items()}
    overview = client.get("/api/v1/overview", headers=FIN).get_json()
    assert Decimal(overview["kpis"]["cost_usd"]) == TOTAL and overview["kpis"]["unpriced_events"] == 1
    assert isinstance(overview["kpis"]["cost_usd"], str)
    assert Decimal(overview["today_usd"]) == TOTAL


def test_team_user_sees_only_their_team(app_and_warehouse):
    app, _ = app_and_warehouse
    client = app.server.test_client()
    alpha_total = sum(COSTS["alpha"], Decimal(0))
    rows = client.get("/api/v1/spend?group_by=team,user", headers=ALPHA).get_json()["rows"]
    assert {r["team"] for r in rows} == {"alpha"}
    assert sum(Decimal(r["cost_usd"]) for r in rows) == alpha_total
    # Grouping by something else still only sums alpha's events.
    rows = client.get("/api/v1/spend?group_by=model", headers=ALPHA).get_json()["rows"]
    assert sum(Decimal(r["cost_usd"]) for r in rows) == alpha_total
    assert client.get("/api/v1/spend?group_by=team&team=beta", headers=ALPHA).status_code == 403
    overview = client.get("/api/v1/overview", headers=ALPHA).get_json()
    assert Decimal(overview["kpis"]["cost_usd"]) == alpha_total
    assert {t["team"] for t in overview["by_team"]} == {"alpha"}
    assert {m["team"] for m in overview["top_movers"]} <= {"alpha"}
    models = client.get("/api/v1/models", headers=ALPHA).get_json()
    assert sum(Decimal(m["cost_usd"]) for m in models["models"]) == alpha_total
    assert {b["budget"] for b in client.get("/api/v1/budgets", headers=ALPHA).get_json()["budgets"]} == {"alpha-monthly"}
    assert client.get("/api/v1/budgets/beta-monthly", headers=ALPHA).status_code == 404
    anomalies = client.get("/api/v1/anomalies", headers=ALPHA).get_json()["anomalies"]
    assert [a["id"] for a in anomalies] == ["anom-alpha"]
    assert (anomalies[0]["ack_action"], anomalies[0]["ack_at"]) == ("", None)  # not acknowledged: no time (not 1970)
    assert client.get("/api/v1/reconciliation", headers=ALPHA).status_code == 403
    month = datetime.now(timezone.utc).strftime("%Y-%m")
    focus = client.get(f"/api/v1/export?month={month}&format=focus&group_by=team,user", headers=ALPHA)
    if focus.status_code != 501:  # 501: warehouse.export not in this build
        rows = list(csv.DictReader(io.StringIO(focus.get_data(as_text=True))))
        assert sum(Decimal(r["BilledCost"]) for r in rows) == alpha_total
        assert "beta" not in focus.get_data(as_text=True) and "gamma" not in focus.get_data(as_text=True)


def test_scoped_warehouse_refuses_unscoped_sql(app_and_warehouse):
    _, warehouse = app_and_warehouse
    scoped = ScopedWarehouse(warehouse, Principal("al", "team:alpha"))
    with pytest.raises(AccessDenied):
        scoped.query("SELECT sum(cost_usd) FROM priced_events")
    frame = scoped.query("SELECT count() AS n FROM priced_events WHERE " + scoped.team_condition())
    assert frame["n"][0] == len(COSTS["alpha"])
    assert scoped.distinct_values("team") == ["alpha"]


def test_budgets_anomalies_and_reconciliation_for_finance(app_and_warehouse):
    app, _ = app_and_warehouse
    client = app.server.test_client()
    budgets = client.get("/api/v1/budgets", headers=FIN).get_json()["budgets"]
    assert [b["budget"] for b in budgets] == ["alpha-monthly", "beta-monthly"]  # worst first
    assert budgets[0]["state"] == "at risk" and budgets[0]["spend"] == "1.234567890124"
    detail = client.get("/api/v1/budgets/alpha-monthly", headers=FIN).get_json()
    assert len(detail["history"]) == 3 and len(detail["alerts"]) == 2
    assert "slack: delivered" in {a["deliveries"] for a in detail["alerts"]}
    recon = client.get("/api/v1/reconciliation", headers=FIN).get_json()
    by_model = {r["model"]: r for r in recon["rows"]}
    mini = by_model["gpt-4o-mini"]
    assert Decimal(mini["ours_cost"]) == Decimal("4.401234556790") and mini["flagged"] is True
    assert Decimal(by_model["gpt-4o"]["difference"]) == Decimal("0.000000000001")
    assert by_model["gpt-4o"]["flagged"] is False


def test_seed_just_after_midnight_stays_on_one_day():
    """The seed's events, provider usage and "today" must share one UTC day even at 00:02 (CI failed there once:
    reconciliation compared yesterday's events with today's bill)."""
    just_after = datetime(2026, 12, 1, 0, 2, tzinfo=timezone.utc)
    days = {PricedEvent.model_validate(raw).ts.date() for raw in priced_events(just_after)}
    assert days == {just_after.date()}


def test_users_file_for_demo_and_first_start(tmp_path):
    demo = load_settings(data_dir=tmp_path / "demo")
    lines = ensure_users_file(demo, demo=True)
    assert "finance / demo" in lines[0]
    users = read_users(users_file_path(demo))
    assert users["finance"]["role"] == "finance" and users["search"]["role"] == "team:search"
    assert ensure_users_file(demo, demo=True) == lines  # re-printed on the next demo start, not rewritten

    plain = load_settings(data_dir=tmp_path / "plain")
    first = ensure_users_file(plain, demo=False)[0]
    password = first.split("admin / ")[1].split()[0]
    assert password not in users_file_path(plain).read_text()
    assert oct(users_file_path(plain).stat().st_mode & 0o777) == "0o600"
    assert "admin / " not in ensure_users_file(plain, demo=False)[0]  # printed once only


def test_users_cli_adds_hashes_and_lists_roles(tmp_path):
    from click.testing import CliRunner

    from dashboards.cli import users

    path = tmp_path / "users.yaml"
    runner = CliRunner()
    result = runner.invoke(users, ["add", "bob", "--role", "team:search", "--file", str(path)], input="pw1\npw1\n")
    assert result.exit_code == 0, result.output
    assert "pw1" not in path.read_text() and "scrypt:" in path.read_text()
    bad = runner.invoke(users, ["add", "eve", "--role", "boss", "--file", str(path), "--password", "x"])
    assert bad.exit_code != 0 and "finance" in bad.output
    listed = runner.invoke(users, ["list", "--file", str(path)])
    assert listed.output.strip() == "bob\tteam:search"


@pytest.mark.parametrize("query", ["start=yesterday", "end=2026-11-31", "start=2026-13-01&end=2026-12-01"])
def test_an_unreadable_date_is_refused_not_replaced_by_last_week(app_and_warehouse, query):
    """walk20: `/api/v1/spend?start=yesterday` answered 200 with the default week; a script or BI tool asking for a
    day that does not exist got another window's money without a word."""
    app, _ = app_and_warehouse
    response = app.server.test_client().get(f"/api/v1/spend?group_by=team&{query}", headers=FIN)
    assert response.status_code == 400, response.get_json()
    assert "YYYY-MM-DD" in response.get_json()["error"]


@pytest.mark.parametrize("path", ["spend?group_by=team&", "spend?bucket=day&", "overview?", "models?", "anomalies?",
                                  "reconciliation?"])
def test_a_reversed_range_is_refused_not_swapped(app_and_warehouse, path):
    """left24: `/api/v1/spend?start=2026-11-05&end=2026-11-01` answered 200 for 1-5 November (swapped without a word)
    while `tokenmeter report --since 2026-11-05 --until 2026-11-01` refuses the range; a script that built its range
    wrong must hear so, as from the CLI. The same day twice is one day, not reversed."""
    app, _ = app_and_warehouse
    client = app.server.test_client()
    response = client.get(f"/api/v1/{path}start=2026-11-05&end=2026-11-01", headers=FIN)
    assert response.status_code == 400, response.data[:300]
    error = response.get_json()["error"]
    assert "end=2026-11-01 is before start=2026-11-05" in error and "swapped?" in error
    assert client.get(f"/api/v1/{path}start=2026-11-05&end=2026-11-05", headers=FIN).status_code == 200


def test_the_api_groups_and_filters_by_every_report_dimension(app_and_warehouse):
    """walk21: `/api/v1/spend?group_by=usage_assumption` was a 400 (`unknown dimension`) while `tokenmeter report
    --group-by usage_assumption` answered; the API's list was a copy of the report's that missed it."""
    from warehouse.queries import DIMENSIONS

    app, _ = app_and_warehouse
    client = app.server.test_client()
    response = client.get("/api/v1/spend?group_by=usage_assumption", headers=FIN)
    assert response.status_code == 200, response.get_json()
    rows = response.get_json()["rows"]
    assert sum(Decimal(row["cost_usd"]) for row in rows) == TOTAL and {row["usage_assumption"] for row in rows} == {""}
    daily = client.get("/api/v1/spend?group_by=usage_assumption&bucket=day&usage_assumption=", headers=FIN)
    assert daily.status_code == 200, daily.get_json()
    unknown = client.get("/api/v1/spend?group_by=nope", headers=FIN).get_json()["error"]
    assert all(dim in unknown for dim in DIMENSIONS), unknown


@pytest.mark.parametrize("query", ["start=0001-01-01&end=9999-12-31", "start=0001-01-01&end=9999-12-31&bucket=day",
                                   "start=2020-01-01&end=9999-12-31"])
def test_far_dated_ranges_answer_the_whole_spend(app_and_warehouse, query):
    """hostile24: a range reaching year 1 or 9999 was a 500 (the end day + 1 overflowed Python's dates; year 1 went
    to ClickHouse as "1-01-01 ...", which it refused). Nothing is stored outside the accepted event times, so the
    answer is the whole spend."""
    app, _ = app_and_warehouse
    client = app.server.test_client()
    response = client.get(f"/api/v1/spend?group_by=team&{query}", headers=FIN)
    assert response.status_code == 200, response.data[:300]
    assert sum(Decimal(row["cost_usd"]) for row in response.get_json()["rows"]) == TOTAL
    overview = client.get(f"/api/v1/overview?{query.replace('&bucket=day', '')}", headers=FIN)  # not an overview's
    assert overview.status_code == 200 and Decimal(overview.get_json()["kpis"]["cost_usd"]) == TOTAL


@pytest.mark.parametrize("month", ["9999-12", "0001-01", "0000-01"])
def test_an_export_of_a_far_month_is_a_clear_answer(app_and_warehouse, month):
    app, _ = app_and_warehouse
    response = app.server.test_client().get(f"/api/v1/export?month={month}&format=csv", headers=FIN)
    assert response.status_code in (200, 400, 501), (response.status_code, response.data[:300])
    if response.status_code == 400:
        assert month in response.get_json()["error"]


@pytest.mark.parametrize("path", ["spend?group_by=team&teams=alpha", "spend?group_by=team&modle=m1",
                                  "overview?teams=alpha", "models?user=ann", "anomalies?team=alpha",
                                  "reconciliation?team=alpha", "budgets?team=alpha", "export?month=2026-11&team=alpha"])
def test_a_parameter_the_endpoint_does_not_read_is_refused_not_ignored(app_and_warehouse, path):
    """walk31: `/api/v1/spend?group_by=team&colour=red` (or a typo, `teams=alpha`) answered 200 with every team's
    money, `/api/v1/export?month=...&team=search` the whole organisation's file and `/api/v1/anomalies?team=search`
    every team's anomalies: a script or BI tool that named a filter the endpoint does not read got unfiltered
    numbers without a word. It is a 400 naming the parameter and what the endpoint reads."""
    app, _ = app_and_warehouse
    response = app.server.test_client().get(f"/api/v1/{path}", headers=FIN)
    assert response.status_code == 400, (response.status_code, response.data[:300])
    name = path.rsplit("&", 1)[-1].split("?")[-1].split("=")[0]
    error = response.get_json()["error"]
    assert f"unknown parameter(s) ['{name}']" in error and "this endpoint reads" in error, error


def test_every_documented_parameter_is_still_read(app_and_warehouse):
    app, _ = app_and_warehouse
    client = app.server.test_client()
    for path in ("spend?group_by=team&bucket=day&team=alpha&model=m1&start=2026-11-01&end=2026-11-02",
                 "overview?team=alpha&start=2026-11-01&end=2026-11-02", "models?team=alpha&start=2026-11-01",
                 "anomalies?start=2026-11-01&end=2026-11-02", "reconciliation?start=2026-11-01&end=2026-11-02",
                 "budgets", "budgets/alpha-monthly?period_key=x", "me"):
        response = client.get(f"/api/v1/{path}", headers=FIN)
        assert response.status_code in (200, 404), (path, response.data[:300])
        assert response.status_code == 200 or "visible to you" in response.get_json()["error"] \
            or "has no period 'x'" in response.get_json()["error"], path


def test_a_period_a_visible_budget_does_not_have_is_named_as_such(app_and_warehouse):
    """hostile32: `/api/v1/budgets/<name>?period_key=<unknown>` answered 404 "no budget '<name>' visible to you" for
    a budget the user sees: a false statement (and the same words another team's budget gets). It now says the
    period is unknown and which periods the budget has; another team's budget still gets the first answer."""
    app, _ = app_and_warehouse
    client = app.server.test_client()
    answer = client.get("/api/v1/budgets/alpha-monthly?period_key=%27%20OR%201%3D1", headers=ALPHA)
    assert answer.status_code == 404 and "visible" not in answer.get_json()["error"], answer.get_json()
    assert "has no period \"' OR 1=1\"" in answer.get_json()["error"], answer.get_json()
    assert datetime.now(timezone.utc).strftime("%Y-%m") in answer.get_json()["error"]  # the periods it has
    other = client.get("/api/v1/budgets/beta-monthly?period_key=x", headers=ALPHA)
    assert other.status_code == 404 and "no budget 'beta-monthly' visible to you" in other.get_json()["error"]


def test_the_export_api_groups_as_the_export_command_does(app_and_warehouse):
    """walk33: `/api/v1/export` took only the Export page's eight groupings, while `tokenmeter export --group-by`
    takes every report dimension and `tag:<key>` (a cost-center or env tag is what chargeback is often split by):
    `group_by=tag:env` and `group_by=route` were 400. Now the same choices; the file name stays a plain name."""
    app, _ = app_and_warehouse
    client = app.server.test_client()
    month = datetime.now(timezone.utc).strftime("%Y-%m")
    by_tag = client.get(f"/api/v1/export?month={month}&format=csv&group_by=team,tag:env", headers=FIN)
    assert by_tag.status_code == 200, by_tag.get_data(as_text=True)
    rows = list(csv.DictReader(io.StringIO(by_tag.get_data(as_text=True))))
    assert sum(Decimal(r["cost_usd"]) for r in rows) == TOTAL
    prod = sum((c for costs in COSTS.values() for c in costs[0::2]), Decimal(0))
    assert sum(Decimal(r["cost_usd"]) for r in rows if r["tag:env"] == "prod") == prod
    assert 'filename="tokenmeter-' + month + '-by-team-tag-env.csv"' in by_tag.headers["Content-Disposition"]
    assert client.get(f"/api/v1/export?month={month}&format=focus&group_by=route", headers=FIN).status_code == 200
    alpha = client.get(f"/api/v1/export?month={month}&format=csv&group_by=tag:env", headers=ALPHA)
    assert sum(Decimal(r["cost_usd"]) for r in csv.DictReader(io.StringIO(alpha.get_data(as_text=True)))) == \
        sum(COSTS["alpha"], Decimal(0))
    hostile = client.get(f'/api/v1/export?month={month}&format=csv&group_by=tag:a"b', headers=FIN)
    assert hostile.status_code == 200 and 'by-tag-a-b.csv"' in hostile.headers["Content-Disposition"]
    wrong = client.get(f"/api/v1/export?month={month}&format=csv&group_by=teem", headers=FIN)
    assert wrong.status_code == 400 and "did you mean 'team'" in wrong.get_json()["error"]
    assert "tag:<key>" in wrong.get_json()["error"]


def test_a_budgets_history_says_when_its_spend_from_before_it_was_pending(app_and_warehouse):
    """walk33: a budget set mid-month read `spend_before_definition: pending` in its first record and `counted` 7 s
    later; /api/v1/budgets showed the latest, but its history (`/api/v1/budgets/<name>`, the burn-down) read '' for
    both: it selected named columns without it."""
    app, warehouse = app_and_warehouse
    now = datetime.now(timezone.utc).replace(microsecond=0)
    start = now.replace(day=1, hour=0, minute=0, second=0)
    end = (start + timedelta(days=32)).replace(day=1)
    t = "toDateTime64('{}', 3, 'UTC')".format
    rows = [f"('gamma-new', map('team','gamma'), 'allow', '', NULL, 'cost_usd', {spend}, 10, {pct}, "
            f"'{start:%Y-%m}', {t(f'{start:%Y-%m-%d %H:%M:%S}')}, {t(f'{end:%Y-%m-%d %H:%M:%S}')}, NULL, NULL, "
            f"{t(f'{now + timedelta(seconds=at):%Y-%m-%d %H:%M:%S}')}, '{said}')"
            for spend, pct, at, said in (("0.1", "1.00", -7, "pending"), ("0.9", "9.00", 0, "counted"))]
    warehouse.backend.command("INSERT INTO budget_status (budget, scope, action, reason, until, metric, spend, "
                              "limit_amount, percent, period_key, period_start, period_end, projected, "
                              "expected_breach_at, updated_at, spend_before_definition) VALUES " + ", ".join(rows))
    detail = app.server.test_client().get("/api/v1/budgets/gamma-new", headers=FIN).get_json()
    assert [h["spend_before_definition"] for h in detail["history"]] == ["pending", "counted"]


@pytest.mark.parametrize("path", ["/api/v1/nope", "/api/v1/showback", "/api/v2/spend", "/api/", "/api/v1/spend/x"])
def test_an_unknown_api_path_is_a_json_404_not_the_dashboard_page(app_and_warehouse, path):
    """walk36: `/api/v1/showback` (a page's name) or a typo answered 200 with the dashboard's HTML, so a script
    parsing JSON failed far from the cause, and a monitoring probe of a wrong URL looked healthy. Now 404 JSON naming
    the endpoints; the login comes first (without it 401, as every API path: nothing is listed to a stranger)."""
    app, _ = app_and_warehouse
    client = app.server.test_client()
    assert client.get(path).status_code == 401
    answer = client.get(path, headers=FIN)
    assert answer.status_code == 404 and answer.is_json, (answer.status_code, answer.content_type)
    assert "/api/v1/spend" in answer.get_json()["error"] and path in answer.get_json()["error"]
    assert client.get("/api/v1/me", headers=FIN).get_json()["user"] == "fin"  # a known one still answers


def test_a_wrong_method_on_an_api_path_is_json(app_and_warehouse):
    app, _ = app_and_warehouse
    answer = app.server.test_client().post("/api/v1/spend", headers=FIN)
    assert answer.status_code == 405 and answer.is_json and "GET" in answer.get_json()["error"]
