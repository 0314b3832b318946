"""Known data for dashboard tests: priced events of three teams, plus budget status, alerts, anomalies and
provider-reported usage. The tables of other stages are created here with their documented columns when the
warehouse's migrations do not have them yet (IF NOT EXISTS: the real migration wins when it exists)."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Iterator

from tokenmeter.events import PricedEvent
from dashboards.anomalies_data import ANOMALY_COLUMNS  # named columns: the table may have more
from dashboards.budgets_data import STATUS_COLUMNS  # named columns: the table may have more

# The pages' refresh period of the browser tests that never wait for a refresh (TOKENMETER_DASHBOARD_REFRESH_SECONDS):
# their data is written before the page opens, and a page reads it when it opens or a filter changes. At the default
# 5 s an open page re-ran every callback of the page every 5 s, ~0.13 CPU-s a second of server and Chromium while a
# test waited or read (docs/rounds/testing.md, suite24). A test that waits for new data to appear keeps the default.
QUIET_REFRESH = {"dashboard_refresh_seconds": 3600.0}

# team -> costs of its priced events; 12 decimals so the exact total is not a 2-decimal number
COSTS = {
    "alpha": [Decimal("1.234567890123"), Decimal("0.000000000001")],
    "beta": [Decimal("2.500000000000")],
    "gamma": [Decimal("0.333333333333"), Decimal("0.333333333333"), Decimal("0.333333333334")],
}
TOTAL = sum((c for costs in COSTS.values() for c in costs), Decimal(0))
USERS = {"alpha": ["ann", "al"], "beta": ["bea"], "gamma": ["gus", "gil", "gus"]}

EXTRA_TABLES = {
    "alerts": """CREATE TABLE IF NOT EXISTS alerts (id String, source LowCardinality(String),
        kind LowCardinality(String), action LowCardinality(String), severity LowCardinality(String),
        dedup_key String, title String, summary String, at DateTime64(3,'UTC'), scope Map(String,String),
        budget String, details String, dashboard_url String, inserted_at DateTime64(3,'UTC'))
        ENGINE = ReplacingMergeTree(inserted_at) ORDER BY id""",
    "alert_deliveries": """CREATE TABLE IF NOT EXISTS alert_deliveries (alert_id String,
        route LowCardinality(String), target String, status LowCardinality(String), attempts UInt32,
        last_error String, http_status UInt16, at DateTime64(3,'UTC'))
        ENGINE = ReplacingMergeTree(at) ORDER BY (alert_id, route)""",
    "budget_status": """CREATE TABLE IF NOT EXISTS budget_status (budget String, scope Map(String,String),
        action LowCardinality(String), reason String, until Nullable(DateTime64(3,'UTC')),
        metric LowCardinality(String), spend Decimal(38,12), limit_amount Decimal(38,12), percent Decimal(18,2),
        period_key String, period_start DateTime64(3,'UTC'), period_end DateTime64(3,'UTC'),
        projected Nullable(Decimal(38,12)), expected_breach_at Nullable(DateTime64(3,'UTC')),
        updated_at DateTime64(3,'UTC')) ENGINE = MergeTree ORDER BY (budget, updated_at)""",
    "anomalies": """CREATE TABLE IF NOT EXISTS anomalies (id String, kind LowCardinality(String),
        scope_dim LowCardinality(String), scope_value String, severity LowCardinality(String),
        observed Decimal(38,12), expected Decimal(38,12), expected_low Decimal(38,12),
        expected_high Decimal(38,12), unit String, start_at DateTime64(3,'UTC'), end_at DateTime64(3,'UTC'),
        status LowCardinality(String), explanation String, detected_at DateTime64(3,'UTC'))
        ENGINE = ReplacingMergeTree(detected_at) ORDER BY id""",
    "anomaly_acks": """CREATE TABLE IF NOT EXISTS anomaly_acks (anomaly_id String, kind String, scope_dim String,
        scope_value String, action LowCardinality(String), by String, note String,
        mute_until Nullable(DateTime64(3,'UTC')), at DateTime64(3,'UTC'))
        ENGINE = ReplacingMergeTree(at) ORDER BY anomaly_id""",
    "provider_usage": """CREATE TABLE IF NOT EXISTS provider_usage (id String, provider LowCardinality(String),
        kind LowCardinality(String), bucket_start DateTime64(3,'UTC'), bucket_end DateTime64(3,'UTC'),
        model String, project_id String, input_tokens UInt64, output_tokens UInt64, cost_usd Decimal(38,12),
        fetched_at DateTime64(3,'UTC'))
        ENGINE = ReplacingMergeTree(fetched_at) ORDER BY id""",
}


def _breakdown(cost: Decimal) -> dict[str, Decimal]:
    q = Decimal("0.000000000001")
    uncached, cached = (cost / 2).quantize(q), (cost / 20).quantize(q)
    return {"input": uncached, "cached_input": cached, "output": cost - uncached - cached}


def event_moment(now: datetime, minutes_ago: int) -> datetime:
    """`minutes_ago` before `now`, but never before the start of `now`'s UTC day: a test run just after midnight
    would otherwise put some events on yesterday (or last month) while provider usage, budgets and "today" are
    seeded for today, and the reconciliation would compare different days (a CI run at 00:02 UTC failed so)."""
    return max(now - timedelta(minutes=minutes_ago), now.replace(hour=0, minute=0, second=0, microsecond=0))


def priced_events(now: datetime) -> list[dict]:
    events = []
    for team, costs in COSTS.items():
        for i, cost in enumerate(costs):
            events.append(PricedEvent(
                event_id=f"dash-test-{team}-{i}", ts=event_moment(now, 5 + i), source="test",
                provider="openai", model="gpt-4o-mini" if i % 2 == 0 else "gpt-4o",
                attribution={"team": team, "user": USERS[team][i], "feature": f"{team}-chat",
                             "tags": {"env": "prod" if i % 2 == 0 else "dev"}},
                usage={"input_tokens": 1000 + i, "cached_input_tokens": 200, "output_tokens": 100},
                tokens_source="provider", cost_usd=cost, pricing_status="priced", latency_ms=800 + i, ttft_ms=120,
                cost_breakdown=_breakdown(cost),
                price={"entry": "openai/gpt-4o-mini"},
            ).to_json())
    # Usage with no price: must show up as its own bucket, never as $0 of priced spend.
    events.append(PricedEvent(
        event_id="dash-test-gamma-unpriced", ts=event_moment(now, 3), source="test", provider="acme",
        model="mystery-1", attribution={"team": "gamma", "user": "gus"}, usage={"input_tokens": 500, "output_tokens": 50},
        tokens_source="provider", cost_usd=Decimal(0), pricing_status="unpriced", unpriced_reason="no price",
    ).to_json())
    return events


def _t(moment: datetime) -> str:
    return "toDateTime64('" + moment.strftime("%Y-%m-%d %H:%M:%S") + "', 3, 'UTC')"


def seed_other_tables(warehouse, now: datetime) -> None:
    """Two budgets (alpha over 80 %, beta fine), their alerts, two anomalies, provider usage for today."""
    backend = warehouse.backend
    for ddl in EXTRA_TABLES.values():
        backend.command(ddl)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (start + timedelta(days=32)).replace(day=1)
    key = start.strftime("%Y-%m")
    rows = []
    for budget, team, limit, spends in (("alpha-monthly", "alpha", "1.5", ("0.3", "0.9", "1.234567890124")),
                                        ("beta-monthly", "beta", "100", ("1.0", "2.5"))):
        for i, spend in enumerate(spends):
            at = now - timedelta(hours=3 * (len(spends) - i))
            projected = Decimal(spend) * 2
            pct = (Decimal(spend) * 100 / Decimal(limit)).quantize(Decimal("0.01"))
            rows.append(f"('{budget}', map('team','{team}'), 'allow', '', NULL, 'cost_usd', {spend}, {limit}, {pct}, "
                        f"'{key}', {_t(start)}, {_t(end)}, {projected}, NULL, {_t(at)})")
    backend.command(f"INSERT INTO budget_status ({STATUS_COLUMNS}) VALUES " + ", ".join(rows))
    alerts = []
    for i, (budget, team, pct) in enumerate((("alpha-monthly", "alpha", 50), ("alpha-monthly", "alpha", 80),
                                             ("beta-monthly", "beta", 50))):
        alerts.append(f"('alert-{i}', 'budget', 'threshold', 'trigger', 'warning', 'dk-{budget}', "
                      f"'{budget} reached {pct}% of its limit', 'summary', {_t(now - timedelta(hours=2 - i * 0.5))}, "
                      f"map('team','{team}'), '{budget}', '{{}}', '', {_t(now)})")
    backend.command("INSERT INTO alerts VALUES " + ", ".join(alerts))
    backend.command(f"INSERT INTO alert_deliveries VALUES ('alert-0', 'slack', 'https://hooks.slack.com/***', "
                    f"'delivered', 1, '', 200, {_t(now)})")
    anomalies = []
    for anomaly_id, team, observed in (("anom-alpha", "alpha", "1.2"), ("anom-beta", "beta", "2.5")):
        anomalies.append(f"('{anomaly_id}', 'spend_spike', 'team', '{team}', 'warning', {observed}, 0.2, 0.1, 0.3, "
                         f"'usd_per_hour', {_t(now - timedelta(hours=1))}, {_t(now)}, 'open', "
                         f"'{team} spent {observed} USD in an hour, 6x the usual', {_t(now)})")
    backend.command(f"INSERT INTO anomalies ({ANOMALY_COLUMNS}) VALUES " + ", ".join(anomalies))
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    backend.command(
        "INSERT INTO provider_usage (id, provider, kind, bucket_start, bucket_end, model, cost_usd, fetched_at) VALUES "
        f"('pu-1', 'openai', 'cost', {_t(today)}, {_t(today + timedelta(days=1))}, 'gpt-4o-mini', 3.000000000000, "
        f"{_t(now)}), ('pu-2', 'openai', 'cost', {_t(today)}, {_t(today + timedelta(days=1))}, 'gpt-4o', "
        f"0.333333333333, {_t(now)})")


def browser_login(dash_duo, app, user: str, password: str, page: str = "/") -> None:
    """Start `app` in dash_duo's server thread, sign in through the real login form and land on `page` (the form's
    `?next=`), with Dash's renderer loaded there: one load of the Dash app per sign-in."""
    from urllib.parse import quote

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    if not dash_duo.server.started:
        dash_duo.server.start(app, start_timeout=10)
    driver = dash_duo.driver
    driver.get(dash_duo.server.url + "/login?next=" + quote(page, safe="/"))
    driver.find_element(By.ID, "username").send_keys(user)
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.ID, "login-submit").click()
    WebDriverWait(driver, 10).until(lambda d: "/login" not in d.current_url)
    # Signed in, and the redirect has opened `page`. dash's `server_url` setter would load "/" again (its
    # wait_for_page): each sign-in loaded the overview twice, and a test that then opened its own page a third
    # time (~2 CPU-s of Chromium renderer and the page's callbacks each). Set the URL without reloading and wait
    # for the renderer on the page that is open.
    dash_duo._url = dash_duo.server.url  # noqa: SLF001 - the setter's attribute, without its reload
    dash_duo.wait_for_element_by_css_selector(dash_duo.dash_entry_locator, timeout=10)


# Another page of the app opened as its navigation bar opens it (a dcc.Link: history.pushState and Dash's own event),
# not by loading the URL: a load runs Dash's and plotly's bundles again, ~1.0-1.4 CPU-s of Chromium against ~0.5 for
# the page's own callbacks and drawing (docs/rounds/testing.md suiteB28). For tests about a page's content; a test about
# what a typed or shared URL opens loads it (dash_duo.wait_for_page).
_NAVIGATE = ("window.history.pushState({}, '', arguments[0]);"
             "window.dispatchEvent(new CustomEvent('_dashprivate_pushstate'));")


def open_page(dash_duo, path: str) -> None:
    """Open `path` (with its query) in the Dash app already loaded, as a click on a dcc.Link to it would."""
    from selenium.webdriver.support.ui import WebDriverWait

    dash_duo.driver.execute_script(_NAVIGATE, path)
    WebDriverWait(dash_duo.driver, 10, poll_frequency=0.1).until(
        lambda d: d.current_url.startswith(dash_duo.server.url.rstrip("/") + path.split("?")[0]))


# dcc.Loading hides its children (visibility: hidden) while their callback runs, and innerText of a hidden element
# is "": the scripts answer null then, and the helpers ask again until the callback in flight (the page opening, a
# filter, a periodic refresh) has ended and shown them again.
_HIDDEN = "const hidden = el => getComputedStyle(el).visibility !== 'visible';"
_ROWS_SCRIPT = (_HIDDEN + "const rows = Array.from(document.querySelectorAll(arguments[0]));"
                "if (rows.some(hidden)) return null;"
                "return rows.map(tr => Array.from(tr.querySelectorAll('td, th')).map(td => td.innerText.trim()));")


def _shown(dash_duo, script: str, *args, timeout: float = 20):
    """The script's answer once it is not null (the element is shown), within `timeout` seconds."""
    from selenium.webdriver.support.ui import WebDriverWait

    answers: list = []

    def answered(driver) -> bool:
        answers[:] = [driver.execute_script(script, *args)]
        return answers[0] is not None

    WebDriverWait(dash_duo.driver, timeout, poll_frequency=0.1).until(
        answered, f"{args[0]} still hidden by a refresh after {timeout} s")
    return answers[0]


def table_rows(dash_duo, selector: str) -> list[list[str]]:
    """The cell texts of every row matching `selector`, read in ONE script call. Dash re-renders a table while
    its callbacks settle; row elements fetched first and read one by one may be replaced in between (a
    StaleElementReferenceException, seen in CI), while one script reads a single consistent DOM. Rows hidden by a
    refresh in flight are read when it has shown them again."""
    return _shown(dash_duo, _ROWS_SCRIPT, selector)


_TEXT_SCRIPT = (_HIDDEN + "const el = document.querySelector(arguments[0]);"
                "return el ? (hidden(el) ? null : el.innerText) : '';")
_ATTRIBUTE_SCRIPT = "const el = document.querySelector(arguments[0]); return el ? el.getAttribute(arguments[1]) : null;"


def element_text(dash_duo, selector: str) -> str:
    """The visible text of the first element matching `selector` ('' when there is none), found and read in ONE
    script call: an element fetched first and read afterwards may be re-rendered in between (stale), as
    `table_rows` explains; one hidden by a refresh in flight is read when it is shown again."""
    return _shown(dash_duo, _TEXT_SCRIPT, selector)


def element_attribute(dash_duo, selector: str, name: str) -> str | None:
    """An attribute of the first element matching `selector`, found and read in one script call (see element_text)."""
    return dash_duo.driver.execute_script(_ATTRIBUTE_SCRIPT, selector, name)


@contextmanager
def finance_warehouse(tmp_path_factory, name: str) -> Iterator[tuple[Any, Any]]:
    """(settings, warehouse) for one module's app: an empty warehouse (a copy of the migrated template) opened as
    writer in this process without an endpoint, a users file holding `fin` (finance, password fin-pass), a fixed
    session key. Closed afterwards."""
    from dashboards.users import add_user
    from tokenmeter.settings import load_settings
    from warehouse import open_warehouse
    from warehouse_template import empty_warehouse_in

    data_dir = empty_warehouse_in(tmp_path_factory.mktemp(name), tmp_path_factory)
    users_file = data_dir / "users.yaml"
    add_user(users_file, "fin", "fin-pass", "finance")
    settings = load_settings(data_dir=data_dir, dashboard_users_file=users_file, dashboard_secret_key="k" * 32)
    warehouse = open_warehouse(settings, writer=True, serve=False)
    try:
        yield settings, warehouse
    finally:
        warehouse.close()
