"""`tokenmeter alerts dispatch|test|list`: run the dispatcher, check a route with a sample alert, show recent
alerts with their delivery state."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from datetime import datetime, timezone
from typing import Any

import click
import orjson

from tokenmeter.cli_support import cli_settings, configure_logging, run_service
from tokenmeter.settings import Settings, ensure_port_free
from tokenmeter.timefmt import iso_utc, people_utc


def _settings(**overrides: Any) -> Settings:
    return cli_settings(**overrides)


@click.group()
def alerts() -> None:
    """Deliver budget and anomaly alerts to Slack, PagerDuty and signed webhooks."""


@alerts.command()
def dispatch() -> None:
    """Run the alert dispatcher until SIGINT/SIGTERM (its own process; never slows metering)."""
    from .dispatcher import run_dispatcher

    s = _settings()
    if s.alerts_port is not None:  # a clear error naming the variable, not a bind traceback
        ensure_port_free(s.host, s.alerts_port, "alerts_port")
    configure_logging(s)
    run_service(lambda stop: run_dispatcher(s, stop))


def sample_alert(anomaly: bool, resolve: bool, notify: list[str], dashboard_url: str) -> dict[str, Any]:
    """A realistic alert with a fresh id (a test is never deduplicated against an earlier one)."""
    from tokenmeter.records import alert_record, iso

    now = iso(datetime.now(timezone.utc))
    common = {"id": f"test-{uuid.uuid4().hex[:12]}", "action": "resolve" if resolve else "trigger",
              "at": now, "notify": notify, "dashboard_url": dashboard_url}
    if anomaly:
        return _sample_anomaly_alert(common, now)
    return alert_record(
        **common, source="budget", kind="threshold", severity="critical", dedup_key="test-budget:search:2026-11",
        title="TEST: budget search reached 100% ($1,000.00 of $1,000.00)", scope={"team": "search"},
        summary="TEST alert from `tokenmeter alerts test`: team search spent its monthly budget.",
        details={"budget": "search", "period_key": "2026-11", "threshold": 100, "metric": "cost_usd",
                 "spend": "1000.004200000000", "limit": "1000", "percent": "100.00", "period_start": now,
                 "period_end": now, "projected": "1800.000000000000", "expected_breach_at": None,
                 "budget_action": "block"})


def _sample_anomaly_alert(common: dict[str, Any], now: str) -> dict[str, Any]:
    """The detector's own alert (streams/anomalies/publish.py) of a spend rate anomaly, marked TEST: a receiver
    tested with it sees the kinds, fields and mute command production sends."""
    from streams.anomalies.gating import AnomalyUpdate
    from streams.anomalies.publish import alert_for

    resolve = common["action"] == "resolve"
    anomaly = {"id": "test", "kind": "spend_rate", "scope_dim": "team", "scope_value": "search",
               "severity": "warning", "status": "closed" if resolve else "open", "start": now, "end": now,
               "detected_at": now, "observed": "12.400000000000", "expected": "3.000000000000",
               "expected_low": "0.000000000000", "expected_high": "3.900000000000", "unit": "usd_per_hour",
               "explanation": "TEST alert from `tokenmeter alerts test`: team search is spending $12.40/hour, 4.1x "
                              "the $3.00/hour usual for this hour of the week (normal up to $3.90/hour)."}
    alert = alert_for(AnomalyUpdate("close" if resolve else "open", anomaly), common["dashboard_url"])
    assert alert is not None  # an alerted open or close always gives one
    return {**alert, "id": common["id"], "dedup_key": "test-anomaly:team=search", "notify": common["notify"],
            "title": f"TEST: {alert['title']}"}


def _check_notify(settings: Settings, notify: tuple[str, ...]) -> None:
    """A usage error naming each entry that cannot be a route (its target never shown)."""
    from .route_secrets import RouteSecrets
    from .routes import parse_routes

    _, bad = parse_routes(list(notify), RouteSecrets(settings.data_dir).resolve)
    if bad:
        raise click.BadParameter("; ".join(reason for _, reason in bad), param_hint="--notify")


async def _send_test(settings: Settings, alert: dict[str, Any]) -> list[tuple[Any, Any, float]]:
    import aiohttp

    from .delivery import Sender
    from .route_secrets import RouteSecrets
    from .routes import parse_routes

    # A stored route can be tested by its reference (`budget list --format json` shows them): the real
    # target is read from the route secret store of the data dir, as the dispatcher does.
    routes, bad = parse_routes(alert["notify"], RouteSecrets(settings.data_dir).resolve)
    if bad:
        raise click.BadParameter("; ".join(reason for _, reason in bad), param_hint="--notify")
    async with aiohttp.ClientSession() as session:
        sender = Sender(settings, session)

        async def one(route: Any) -> tuple[Any, Any, float]:
            started = time.monotonic()
            state = await sender.deliver(alert, route)
            return route, state, time.monotonic() - started

        return list(await asyncio.gather(*(one(r) for r in routes)))


@alerts.command("test")
@click.option("--notify", "notify", multiple=True, required=True,
              help="slack=URL, pagerduty=ROUTING_KEY or webhook=URL (repeatable).")
@click.option("--anomaly", is_flag=True, help="Send a sample anomaly alert instead of a budget alert.")
@click.option("--resolve", is_flag=True, help="Send the resolve of the sample (PagerDuty closes the incident).")
@click.option("--attempts", default=1, show_default=True, type=click.IntRange(1, 20),
              help="Attempts per route, with the configured backoff between them.")
def test_alert(notify: tuple[str, ...], anomaly: bool, resolve: bool, attempts: int) -> None:
    """Send a sample alert directly to each route and print the outcome (exit 1 if any failed)."""
    s = _settings()
    s = s.model_copy(update={"alert_max_attempts": attempts})
    _check_notify(s, notify)  # before the sample alert, whose record refuses an entry without `=` (a traceback)
    alert = sample_alert(anomaly, resolve, list(notify), s.dashboard_url)
    if s.webhook_secret is None and any(n.strip().lower().startswith("webhook=") for n in notify):
        click.echo("note: TOKENMETER_WEBHOOK_SECRET is not set, webhooks are sent unsigned", err=True)
    results = asyncio.run(_send_test(s, alert))
    failed = False
    for route, state, seconds in results:
        status = f"HTTP {state.http_status}" if state.http_status else "no HTTP response"
        line = f"{route.kind:<9} {route.masked}: {state.status} ({status}, {state.attempts} attempt(s), {seconds:.2f} s)"
        if state.status != "delivered":
            failed = True
            line += f"\n          {state.last_error}"
        click.echo(line)
    if failed:
        sys.exit(1)


def _parse_deliveries(text: str | None) -> list[dict[str, Any]]:
    """The warehouse's "route:status(attempts), ..." summary as delivery dicts."""
    out = []
    for part in filter(None, (text or "").split(", ")):
        route, _, rest = part.partition(":")
        status, _, attempts = rest.partition("(")
        out.append({"route_id": route, "route": route, "status": status,
                    "attempts": int(attempts.rstrip(")") or 0)})
    return out


def warehouse_alerts(settings: Settings, limit: int) -> list[dict[str, Any]]:
    """The newest alerts the warehouse holds (it outlives the embedded broker's topics); [] when there is no
    warehouse yet. Read through the loader's endpoint when the loader owns it."""
    from pathlib import Path

    from warehouse.analytics import alerts_history
    from warehouse.store import open_warehouse, read_live_endpoint

    if not settings.clickhouse_url and not Path(settings.warehouse_path).exists() \
            and read_live_endpoint(Path(settings.data_dir).resolve()) is None:
        return []
    with open_warehouse(settings, serve=False) as wh:
        frame = alerts_history(wh, limit=limit)
    rows = []
    for row in frame.to_dicts():
        at = row.get("at")
        rows.append({
            "id": row["id"], "source": row["source"], "kind": row["kind"], "action": row["action"],
            "severity": row["severity"], "dedup_key": row["dedup_key"], "title": row["title"],
            "summary": row["summary"], "at": iso_utc(at) if isinstance(at, datetime) else str(at),  # as records say it
            "scope": dict(row.get("scope") or {}), "details": orjson.loads(row["details"] or "{}"),
            "dashboard_url": row.get("dashboard_url", ""), "notify": [],
            "deliveries": _parse_deliveries(row.get("deliveries")), "stored_in": "warehouse"})
    return rows


def recent_alerts(settings: Settings, limit: int) -> list[dict[str, Any]]:
    """The newest `limit` alerts (latest record per id) with their delivery states; notify lists masked. Read from
    the warehouse (history across restarts of the embedded broker, which forgets its topics) and the alerts topic
    (alerts not loaded yet, and the freshest delivery states), the topic's copy winning."""
    from aiokafka.errors import KafkaConnectionError, KafkaError

    from tokenmeter.kafka_topics import broker_problem

    from .state import TopicReadError

    rows = {a["id"]: a for a in warehouse_alerts(settings, limit)}
    try:
        rows.update({a["id"]: a for a in topic_alerts(settings)})
    except (TopicReadError, KafkaError, OSError) as exc:
        if not rows:
            why = broker_problem(exc, settings.bootstrap_servers) if isinstance(exc, KafkaConnectionError) else exc
            raise TopicReadError(f"cannot read the alerts topic on {settings.bootstrap_servers}: {why}") from None
        click.echo(f"note: the broker is unreachable ({exc}); showing the warehouse's alerts only", err=True)
    return sorted(rows.values(), key=_alert_time, reverse=True)[:limit]


def _alert_time(alert: dict[str, Any]) -> datetime:
    """When an alert happened, for ordering: its `at` read as a moment. The topic's copies carry the record's text
    (a live budget alert's event time with microseconds, others in whole seconds, "Z"), the warehouse's an
    isoformat with "+00:00": ordered as those strings, alerts within one second came in the strings' order (walk36).
    An `at` that is not a moment sorts last."""
    at = alert.get("at")
    try:
        moment = at if isinstance(at, datetime) else datetime.fromisoformat(str(at))
    except ValueError:
        return datetime.min.replace(tzinfo=timezone.utc)
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment


def topic_alerts(settings: Settings) -> list[dict[str, Any]]:
    """Alerts on the alerts topic (latest record per id) with their delivery states."""
    from tokenmeter.topics import ALERT_DELIVERIES, ALERTS

    from .dispatcher import AlertInputError, parse_alert
    from .routes import mask_notify
    from .state import latest_deliveries, read_topic

    async def read() -> tuple[list[Any], list[Any]]:
        return (await read_topic(settings.bootstrap_servers, ALERTS, fetch_wait=settings.fetch_wait),
                await read_topic(settings.bootstrap_servers, ALERT_DELIVERIES, fetch_wait=settings.fetch_wait))

    alert_records, delivery_records = asyncio.run(read())
    by_alert: dict[str, list[dict[str, Any]]] = {}
    for key, value in latest_deliveries(delivery_records).items():
        by_alert.setdefault(key.split("|", 1)[0], []).append({"route_id": key.split("|", 1)[-1], **value})
    latest: dict[str, dict[str, Any]] = {}
    for record in alert_records:
        try:
            alert = parse_alert(record.value)
        except AlertInputError:
            continue
        latest[alert["id"]] = {**alert, "notify": mask_notify(alert["notify"]),
                               "deliveries": sorted(by_alert.get(alert["id"], []), key=lambda d: d["route_id"])}
    return list(latest.values())


def _delivery_summary(deliveries: list[dict[str, Any]]) -> str:
    if not deliveries:
        return "-"
    parts = []
    for d in deliveries:
        extra = f" HTTP {d['http_status']}" if d.get("http_status") and d.get("status") != "delivered" else ""
        parts.append(f"{d.get('route')}:{d.get('status')}x{d.get('attempts')}{extra}")
    return ", ".join(parts)


@alerts.command("list")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def list_alerts(limit: int, fmt: str) -> None:
    """Recent alerts (newest first) and the delivery state of each route, from the warehouse and the outbox."""
    from warehouse.store import WarehouseError

    from .state import TopicReadError

    try:
        rows = recent_alerts(_settings(), limit)
    except (TopicReadError, WarehouseError) as exc:
        raise click.ClickException(str(exc)) from None
    if fmt == "json":
        click.echo(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return
    if not rows:
        click.echo("no alerts")
        return
    header = ("AT", "SOURCE", "KIND", "SEVERITY", "ACTION", "TITLE", "DELIVERIES")
    # one precision for every row, as on-call texts write times (to the second, UTC); --format json keeps `at` as
    # the record has it (the warehouse's copies in the records' form: `warehouse_alerts`)
    table = [header] + [(people_utc(a["at"], seconds=True) or "-", a["source"], a["kind"], a["severity"],
                         a["action"], a["title"] if len(a["title"]) <= 60 else a["title"][:59] + "…",
                         _delivery_summary(a["deliveries"])) for a in rows]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header) - 1)]
    for row in table:
        click.echo("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)) + "  " + str(row[-1]))
