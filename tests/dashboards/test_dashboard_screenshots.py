"""Screenshots of every page for docs/, over a demo-like week of data (5 teams, 10 users, 6 models, budgets,
alerts, anomalies, provider bills). Opt-in: TOKENMETER_SCREENSHOT_DIR=docs/screenshots pytest this file."""

from __future__ import annotations

import os
import random
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from dash_seed import EXTRA_TABLES, _t, browser_login
from dashboards import create_app
from dashboards.users import add_user
from tokenmeter.events import PricedEvent
from tokenmeter.settings import load_settings
from dashboards.anomalies_data import ANOMALY_COLUMNS  # named columns: the table may have more
from dashboards.budgets_data import STATUS_COLUMNS  # named columns: the table may have more

SCREENSHOT_DIR = os.environ.get("TOKENMETER_SCREENSHOT_DIR")
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not SCREENSHOT_DIR, reason="set TOKENMETER_SCREENSHOT_DIR to write screenshots")]

TEAMS = {"search": ["ana", "ben"], "support-bot": ["cho", "dev"], "data-science": ["eli", "fay"],
         "growth": ["gus", "hal"], "platform": ["ivy", "jon"]}
MODELS = {  # model -> (provider, USD per 1M input, per 1M output)
    "gpt-4o-2024-08-06": ("openai", "2.5", "10"), "gpt-4o-mini": ("openai", "0.15", "0.6"),
    "claude-sonnet-4": ("anthropic", "3", "15"), "claude-haiku-3.5": ("anthropic", "0.8", "4"),
    "gemini-2.0-flash": ("google", "0.1", "0.4"), "acme-internal-llm-v2": ("acme", None, None),
}
FEATURES = ["chat", "summarize", "classify", "rag-answer", "agent"]
Q = Decimal("0.000000000001")


def demo_events(now: datetime) -> list[dict]:
    rng = random.Random(7)
    events = []
    start = now.replace(minute=0, second=0, microsecond=0) - timedelta(days=6)
    for hour in range(24 * 6 + now.hour + 1):
        ts_hour = start + timedelta(hours=hour)
        busy = 3 if 8 <= ts_hour.hour <= 18 else 1
        for n in range(rng.randint(2, 4) * busy):
            team = rng.choice(list(TEAMS))
            model = rng.choice(list(MODELS))
            if team == "search" and hour > 24 * 6 - 4:
                model = "claude-sonnet-4"  # the spike the anomaly page shows
            provider, p_in, p_out = MODELS[model]
            inp, out = rng.randint(300, 6000), rng.randint(50, 1500)
            cached = inp // 3 if rng.random() < 0.4 else 0
            if p_in is None:
                cost, status, breakdown = Decimal(0), "unpriced", {}
            else:
                c_in = (Decimal(inp - cached) * Decimal(p_in) / 1_000_000).quantize(Q)
                c_cache = (Decimal(cached) * Decimal(p_in) / 10 / 1_000_000).quantize(Q)
                c_out = (Decimal(out) * Decimal(p_out) / 1_000_000).quantize(Q)
                cost, status = c_in + c_cache + c_out, "priced"
                breakdown = {"input": c_in, "cached_input": c_cache, "output": c_out}
            ts = ts_hour + timedelta(seconds=rng.randint(0, 3599))
            if ts > now:
                continue
            events.append(PricedEvent(
                event_id=f"shot-{hour}-{n}", ts=ts, source="demo", provider=provider, model=model,
                attribution={"org": "acme", "team": team, "user": rng.choice(TEAMS[team]),
                             "feature": rng.choice(FEATURES), "tags": {"env": rng.choice(["prod", "prod", "staging"])}},
                usage={"input_tokens": inp, "cached_input_tokens": cached, "output_tokens": out},
                tokens_source="provider", cost_usd=cost, pricing_status=status, cost_breakdown=breakdown,
                unpriced_reason="no price for acme-internal-llm-v2" if status == "unpriced" else None,
                latency_ms=rng.randint(300, 4000), ttft_ms=rng.randint(80, 900),
            ).to_json())
    return events


def seed_records(warehouse, now: datetime) -> None:
    backend = warehouse.backend
    for ddl in EXTRA_TABLES.values():
        backend.command(ddl)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (start + timedelta(days=32)).replace(day=1)
    spent = warehouse.spend(["team"], since=start, until=now + timedelta(hours=1))
    by_team = {r["team"]: Decimal(r["cost_usd"]) for r in spent.iter_rows(named=True)}
    rows, days = [], (now - start).days + 1
    for team, limit in (("search", "1.35"), ("support-bot", "5"), ("data-science", "10"), ("growth", "2.5")):
        total = by_team.get(team, Decimal(0))
        for step in range(1, 9):
            spend = (total * step / 8).quantize(Q)
            at = start + (now - start) * step / 8
            elapsed = max((at - start).total_seconds(), 3600)
            projected = (spend * Decimal((end - start).total_seconds()) / Decimal(elapsed)).quantize(Q)
            pct = (spend * 100 / Decimal(limit)).quantize(Decimal("0.01"))
            rows.append(f"('{team}-monthly', map('team','{team}'), 'allow', '', NULL, 'cost_usd', {spend}, {limit}, "
                        f"{pct}, '{start:%Y-%m}', {_t(start)}, {_t(end)}, {projected}, NULL, {_t(at)})")
    backend.command(f"INSERT INTO budget_status ({STATUS_COLUMNS}) VALUES " + ", ".join(rows))
    alerts = [f"('a{i}', 'budget', 'threshold', 'trigger', '{sev}', 'dk{i}', '{name} reached {pct}% of its limit', "
              f"'', {_t(now - timedelta(hours=30 - i * 6))}, map('team','{team}'), '{name}', '{{}}', '', {_t(now)})"
              for i, (name, team, pct, sev) in enumerate((("search-monthly", "search", 50, "info"),
                                                          ("search-monthly", "search", 80, "warning"),
                                                          ("growth-monthly", "growth", 50, "info")))]
    backend.command("INSERT INTO alerts VALUES " + ", ".join(alerts))
    backend.command("INSERT INTO alert_deliveries VALUES " + ", ".join(
        f"('a{i}', 'slack', 'https://hooks.slack.com/***', 'delivered', 1, '', 200, {_t(now)})" for i in range(3)))
    backend.command(
        f"INSERT INTO anomalies ({ANOMALY_COLUMNS}) VALUES "
        f"('an1', 'spend_spike', 'team', 'search', 'error', 0.42, 0.06, 0.02, 0.11, 'usd_per_hour', "
        f"{_t(now - timedelta(hours=3))}, {_t(now)}, 'open', 'search spent 7x its usual hourly cost, all on "
        f"claude-sonnet-4', {_t(now)}), "
        f"('an2', 'tokens_per_request', 'model', 'gpt-4o-mini', 'warning', 2900, 1800, 1500, 2200, "
        f"'tokens_per_request', {_t(now - timedelta(days=2, hours=5))}, {_t(now - timedelta(days=2, hours=3))}, "
        f"'closed', 'requests to gpt-4o-mini got 60% longer for two hours', {_t(now - timedelta(days=2))})")
    ours = warehouse.query("SELECT toDate(hour) AS day, provider, model, sum(cost_usd) AS c FROM spend_hourly "
                           "WHERE provider IN ('openai', 'anthropic') GROUP BY day, provider, model")
    values = []
    for i, r in enumerate(ours.iter_rows(named=True)):
        factor = Decimal("1.07") if r["model"] == "claude-sonnet-4" and i % 3 == 0 else Decimal(1)
        day = datetime.combine(r["day"], datetime.min.time(), tzinfo=timezone.utc)
        values.append(f"('pu{i}', '{r['provider']}', 'cost', {_t(day)}, {_t(day + timedelta(days=1))}, "
                      f"'{r['model']}', {(Decimal(r['c']) * factor).quantize(Q)}, {_t(now)})")
    backend.command("INSERT INTO provider_usage (id, provider, kind, bucket_start, bucket_end, model, cost_usd, "
                    "fetched_at) VALUES " + ", ".join(values))


def test_screenshots_of_every_page(dash_duo, tmp_path):
    from warehouse import open_warehouse

    now = datetime.now(timezone.utc)
    add_user(tmp_path / "users.yaml", "finance", "demo", "finance")
    settings = load_settings(data_dir=tmp_path, dashboard_users_file=tmp_path / "users.yaml")
    warehouse = open_warehouse(settings, writer=True, serve=False)
    try:
        warehouse.insert_priced(demo_events(now))
        seed_records(warehouse, now)
        browser_login(dash_duo, create_app(settings, warehouse=warehouse), "finance", "demo")
        base, out = dash_duo.server.url, Path(SCREENSHOT_DIR)
        out.mkdir(parents=True, exist_ok=True)
        dash_duo.driver.set_window_size(1400, 1200)
        month = now.strftime("%Y-%m")
        for name, path, ready in (
            ("overview", "/", "#overview-movers td"),
            ("showback", "/showback?by=team&metric=cost&mode=stack", "#showback-table td"),
            ("showback-drilldown", "/showback?by=user&team=search", "#showback-table td"),
            ("budgets", "/budgets", "#budgets-table td"),
            ("models", "/models", "#models-table td"),
            ("reconciliation", "/reconciliation", "#recon-table td"),
            ("anomalies", "/anomalies", "#anomalies-table td"),
            ("export", f"/export?month={month}", "#export-download-button"),
        ):
            dash_duo.wait_for_page(url=base + path)
            dash_duo.wait_for_element(ready, timeout=30)
            if name == "overview":  # its KPI cards come from callbacks of their own, after the movers table at times
                dash_duo.wait_for_contains_text("[id='{\"name\":\"cost\",\"type\":\"kpi\"}']", "$", timeout=30)
            time.sleep(1.5)  # plotly's transitions; pictures only, nothing is asserted on them
            dash_duo.driver.save_screenshot(str(out / f"{name}.png"))
    finally:
        warehouse.close()
