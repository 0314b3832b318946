"""`tokenmeter finance-watch`: the finance checks as a service (started by `tokenmeter up`). Every
`--interval` seconds it reads the warehouse, checks cost drift over the last complete days and every source's
completeness, and puts an alert per problem in the outbox; the alert dispatcher delivers them to its own
TOKENMETER_FINANCE_NOTIFY (the records carry no routes: they are secrets, and the topic is read by many).

Alert ids are stable (drift: provider, model and day; completeness: source and outage), so the dispatcher
delivers each once however often the check runs; this process also skips ids it already sent since it started.
With the embedded warehouse it only reads through the loader's query endpoint: it never opens chDB itself,
which would keep the loader (the owner) from starting while it holds it."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone
from typing import Any

import click

log = logging.getLogger("tokenmeter.finance")
DRIFT_DAYS = 7


def check_once(settings: Any, now: datetime | None = None) -> list[dict]:
    """The drift and completeness alerts of this moment (not published)."""
    from warehouse.completeness import Limits, completeness_alert, source_health
    from warehouse.drift import Thresholds, complete_days, drift, drift_alerts
    from warehouse.store import open_warehouse

    now = now or datetime.now(timezone.utc)
    url = f"{settings.dashboard_url}/reconciliation"
    limits = Thresholds.from_settings(settings)
    wh = open_warehouse(settings)
    try:
        rows, totals = drift(wh, *complete_days(DRIFT_DAYS, now.date()), limits)
        health = source_health(wh, now, Limits.from_settings(settings))
        alerts = drift_alerts(rows, totals, limits, dashboard_url=url)
        alerts += [completeness_alert(h, now, dashboard_url=settings.dashboard_url) for h in health if h.problem]
        done = settled(wh, [a["id"] for a in alerts], _route_ids(settings))
    finally:
        wh.close()
    return [a for a in alerts if a["id"] not in done]


def _route_ids(settings: Any) -> list[str]:
    """The route ids the dispatcher records for finance alerts, when this process has the same routes (`up` gives
    every process the same environment); without routes here, an alert recorded in the warehouse is settled."""
    from streams.alerts.route_secrets import RouteSecrets
    from streams.alerts.routes import parse_routes

    routes, _ = parse_routes(list(settings.finance_notify), RouteSecrets(settings.data_dir).resolve)
    return [r.route_id for r in routes]


def settled(wh: Any, alert_ids: list[str], route_ids: list[str]) -> set[str]:
    """Alerts the warehouse shows as handled: recorded, and (with routes) a final delivery state on every route.
    They are not published again after a restart: the embedded broker forgets delivery states, the warehouse
    does not, so a restarted stack would otherwise send each finance alert once more."""
    if not alert_ids:
        return set()
    params = {f"a{i}": alert_id for i, alert_id in enumerate(alert_ids)}
    among = "(" + ", ".join(f"{{{name}:String}}" for name in params) + ")"
    known = set(wh.query(f"SELECT DISTINCT id FROM alerts WHERE id IN {among}", params)["id"].to_list())
    if not route_ids or not known:
        return known
    final = wh.query("SELECT alert_id, groupUniqArray(route_id) AS routes FROM alert_route_deliveries FINAL"
                     f" WHERE alert_id IN {among} AND status IN ('delivered', 'failed') GROUP BY alert_id", params)
    return {a for a, routes in zip(final["alert_id"].to_list(), final["routes"].to_list())
            if a in known and set(route_ids) <= set(routes)}


def _served(settings: Any) -> bool:
    from warehouse.endpoint import read_live_endpoint

    return bool(settings.clickhouse_url) or read_live_endpoint(settings.data_dir) is not None


async def watch(settings: Any, stop: asyncio.Event, interval: float, first_check_after: float = 0.0) -> None:
    from streams.alerts.outbox import publish_alerts_async, routes_note

    note = routes_note("TOKENMETER_FINANCE_NOTIFY", settings.finance_notify)
    if note:
        log.info(note)
    sent: set[str] = set()
    if first_check_after > 0:
        try:
            await asyncio.wait_for(stop.wait(), timeout=first_check_after)
        except asyncio.TimeoutError:
            pass
    while not stop.is_set():
        if _served(settings):
            try:
                alerts = await asyncio.to_thread(check_once, settings)
                new = [a for a in alerts if a["id"] not in sent]
                await publish_alerts_async(settings.bootstrap_servers, new)
                sent.update(a["id"] for a in new)
                if new:
                    log.warning("finance checks: %d new alert(s): %s", len(new), "; ".join(a["title"] for a in new))
            except Exception as exc:  # noqa: BLE001 - a failed check is retried next round, never fatal
                log.error("finance checks failed (retrying in %.0f s): %s", interval, exc)
        else:
            # It reads only through a running loader's endpoint (opening chDB itself would lock the loader out)
            log.info("no loader serves the warehouse of %s yet: skipping this round (start `tokenmeter load`, or "
                     "`tokenmeter up`, or set TOKENMETER_CLICKHOUSE_URL)", settings.data_dir)
        try:
            await asyncio.wait_for(stop.wait(), timeout=interval)
        except asyncio.TimeoutError:
            pass


@click.command("finance-watch")
@click.option("--interval", default=300.0, show_default=True, type=click.FloatRange(1, 86400),
              help="Seconds between checks.")
@click.option("--first-check-after", default=0.0, show_default=True, type=click.FloatRange(0, 86400),
              help="Seconds before the first check (`up --demo`: until its live traffic has caught up with the "
                   "clock, or the first check judges an hour the demo has not sent yet as a dropping source).")
def finance_watch(interval: float, first_check_after: float) -> None:
    """Check cost drift and source completeness every INTERVAL seconds and alert (the alert dispatcher delivers
    them to its TOKENMETER_FINANCE_NOTIFY)."""
    from tokenmeter.cli_support import cli_settings, configure_logging, run_service

    settings = cli_settings()
    configure_logging(settings)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per warehouse query otherwise
    run_service(lambda stop: watch(settings, stop, interval, first_check_after))
