"""`tokenmeter budget rebuild`: rebuild budget state from the warehouse.

The embedded broker keeps nothing across a restart, so the budgets' spend (`tokenmeter.budget-state`) is gone
while the warehouse, deduplicated on `event_id`, still holds every loaded event. This computes each budget's
exact spend for its current period (hour buckets for rolling windows) from the warehouse, marks the thresholds
whose alerts the warehouse already recorded as fired (so nothing alerts twice), and publishes the state for the
budget owners. `tokenmeter up` runs it on every start of an embedded stack, before the worker and the loader.
It lives here, not in a stage, because it joins two stages: the warehouse's totals go in through the budget
owner's public `BudgetOwner.rebuild`, which alone knows the ledger's state.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Callable

import click
import orjson

log = logging.getLogger("tokenmeter.budgets")

REPLAY_DAYS = 7  # budget alerts younger than this with a route not finally delivered go back to the outbox


def _fired(wh: Any, name: str) -> dict[str, set[str]]:
    """period_key -> thresholds ("50", ..., "forecast") already alerted, as recorded in the warehouse."""
    frame = wh.query(
        "SELECT details FROM alerts WHERE source = 'budget' AND budget = {name:String} AND action = 'trigger'",
        {"name": name})
    out: dict[str, set[str]] = {}
    for details in frame["details"].to_list() if frame.height else []:
        data = json.loads(details or "{}")
        key = data.get("period_key")
        if key:
            out.setdefault(key, set()).add("forecast" if data.get("kind") == "forecast" else str(data.get("threshold")))
            # a budget defined past some thresholds alerted them in one alert (owner._seeded_alert)
            out[key].update(str(t) for t in data.get("passed_thresholds") or ())
    return out


def rebuild_states(wh: Any, budgets: list[Any], now: datetime | None = None) -> tuple[list[tuple[str, dict]], list[dict]]:
    """(budget name, state record) per budget, and alert records for thresholds reached but never alerted. The
    warehouse supplies the totals; the budget owner (`BudgetOwner.rebuild`) turns them into state."""
    from streams.budgets.owner import BudgetOwner
    from streams.budgets.periods import HOUR, hour_floor, hour_key, period_window
    from warehouse.analytics import budget_spend, budget_spend_and_minutes

    now = now or datetime.now(timezone.utc)
    owner = BudgetOwner({b.name: b for b in budgets})
    states, alerts = [], []
    for budget in budgets:
        fired = _fired(wh, budget.name)
        if budget.rolling_hours is not None:
            end = hour_floor(now) + HOUR
            hours = [end - back * HOUR for back in range(budget.rolling_hours + 1, 0, -1)]
            totals = {hour_key(start): budget_spend(wh, dict(budget.scope), budget.metric, start, start + HOUR)
                      for start in hours}
            state, new_alerts = owner.rebuild(budget.name, now, fired, hour_totals=totals)
        else:
            start, end, _ = period_window(budget, now)
            # with the minutes of the hour before `now`: the burn the ledger measures the forecast's rate on (without
            # them every start read "not enough data yet" for 10 minutes, beside a forecast alert that still stood)
            total, burn = budget_spend_and_minutes(wh, dict(budget.scope), budget.metric, start, end,
                                                   now - HOUR - timedelta(minutes=1))
            burn = {minute: amount for minute, amount in burn.items() if minute <= now}
            state, new_alerts = owner.rebuild(budget.name, now, fired, period_total=total, burn=burn)
        states.append((budget.name, state))
        alerts += new_alerts
    return states, alerts


def counted_ids(wh: Any, budgets: list[Any], now: datetime | None = None) -> dict[str, list[str]]:
    """Per budget, the newest SEED_IDS event ids its rebuilt spend counts (newest first), as a seed remembers
    them (seed.py): published on budget-spend, where a restored owner reads its duplicate window, so a source
    re-sending an event the warehouse already holds counts it once. Without them a rebuilt budget counted every
    re-send again (walk33: `up` restarted within an hour, the demo re-sent the hour's calendar calls; the loader
    skipped 107 duplicates, search-monthly read 0.0197 USD above the warehouse's 3.2224)."""
    from streams.budgets.periods import HOUR, hour_floor, period_window
    from streams.budgets.seed import SEED_IDS
    from warehouse.analytics import budget_newest_ids

    now = now or datetime.now(timezone.utc)
    out = {}
    for budget in budgets:
        if budget.rolling_hours is not None:  # the hours of the window and the one before it, as the seed takes
            end = hour_floor(now) + HOUR
            start = end - (budget.rolling_hours + 1) * HOUR
        else:
            start, end, _ = period_window(budget, now)
        out[budget.name] = budget_newest_ids(wh, dict(budget.scope), start, end, SEED_IDS)
    return out


ID_CHUNK = 500  # request ids per warehouse lookup (one String parameter each)


def _in_list(prefix: str, values: list[str], params: dict[str, Any]) -> str:
    names = [f"{prefix}{i}" for i in range(len(values))]
    params.update(zip(names, values))
    return "(" + ", ".join(f"{{{n}:String}}" for n in names) + ")"


def _usage_stored(wh: Any, request_ids: list[str], since: datetime) -> set[str]:
    """The request ids that a priced event in the warehouse carries (as its event_id or its request_id tag)."""
    found: set[str] = set()
    for at in range(0, len(request_ids), ID_CHUNK):
        chunk = request_ids[at:at + ID_CHUNK]
        params: dict[str, Any] = {"since": since}
        ids = _in_list("r", chunk, params)
        frame = wh.query("SELECT event_id, tags['request_id'] AS tagged FROM priced_events "
                         "WHERE ts >= {since:DateTime64(3, 'UTC')} "
                         f"AND (event_id IN {ids} OR tags['request_id'] IN {ids})", params)
        for row in frame.to_dicts() if frame.height else []:
            found.update(v for v in (row["event_id"], row["tagged"]) if v)
    return found & set(request_ids)


def _fold(into: dict[str, dict[str, Any]], reservation_id: str, request_id: str, statuses: Any, held: Any,
          settled: Any, admitted: datetime, expires: datetime) -> None:
    seen = into.setdefault(reservation_id, {"rid": request_id, "statuses": set(), "held": held, "settled": None,
                                            "admitted": admitted, "expires": expires})
    seen["statuses"].update(statuses)
    seen["held"] = max(seen["held"], held)
    seen["expires"] = max(seen["expires"], expires)
    if settled is not None:
        seen["settled"] = settled if seen["settled"] is None else max(seen["settled"], settled)


def _journal_steps(journal: list[dict[str, Any]], name: str, start: datetime, end: datetime) -> list[tuple]:
    out = []
    for record in journal:
        if record.get("budget") != name:
            continue
        try:
            admitted = datetime.fromisoformat(record["created_at"])
            expires = datetime.fromisoformat(record["expires_at"])
            held = Decimal(str(record["amount"]))
            settled = Decimal(str(record["settled_amount"])) if record.get("settled_amount") is not None else None
            step = (str(record["reservation_id"]), str(record["request_id"]), [str(record["status"])], held,
                    settled, admitted, expires)
        except (KeyError, TypeError, ValueError, ArithmeticError):
            continue  # a torn or foreign line
        if start <= admitted < end:
            out.append(step)
    return out


EXPIRED_GRACE = timedelta(seconds=900)  # the default TTL; `rebuild` passes the configured one (expiry_grace)


def expiry_grace(settings: Any) -> timedelta:
    """How long after its expiry a hold that expired unsettled is held again by a rebuild
    (TOKENMETER_RESERVATION_EXPIRY_GRACE_SECONDS; unset: one TTL)."""
    seconds = settings.reservation_expiry_grace_seconds
    return timedelta(seconds=seconds if seconds is not None else settings.reservation_ttl_seconds)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment


def carried_holds(wh: Any, budgets: list[Any], now: datetime | None = None,
                  journal: list[dict[str, Any]] = (), expired_grace: timedelta = EXPIRED_GRACE) -> list[Any]:
    """Holds to hold again after a broker loss (the holds topic went with the broker): every hold admitted in a
    budget's current period (`budget_holds`, loaded from tokenmeter.budget-hold-log, and the `journal` of the
    last hours, which has what the loader had not stored yet) that was not released and did not expire unsettled,
    and whose usage never reached `priced_events`. Such usage was acknowledged and then lost with the broker (the
    rebuilt spend does not know it), or is still on its way (the call was in flight). A settled one holds the real
    amount its usage committed, an open one its worst case; both until the period ends (a rolling budget: its
    window's length after the admission), or until their usage arrives and settles them (then the real cost
    counts, not both).

    A hold that expired unsettled (its TTL passed before its usage came) may still have had its usage waiting on
    the lost broker (a worker down longer than the TTL): it is held again at its worst case until `expired_grace`
    after its expiry, if that is still ahead. Not longer: most expired holds are abandoned calls, or calls whose
    usage log lacks the request id (counted in spend all the same). One whose usage came after the expiry has a
    `settled` step (owner.process logs it) and counts its real amount, as any settled hold."""
    from streams.budgets.holds import Hold
    from streams.budgets.periods import period_window

    now = now or datetime.now(timezone.utc)
    out: list[Hold] = []
    for budget in budgets:
        start, end, _ = period_window(budget, now)
        params = {"name": budget.name, "start": start, "end": end}
        frame = wh.query(
            "SELECT reservation_id, any(request_id) AS rid, groupUniqArray(status) AS statuses, "
            "max(amount) AS held, max(settled_amount) AS settled, min(created_at) AS admitted, "
            "max(expires_at) AS expires "
            "FROM budget_holds WHERE budget = {name:String} AND created_at >= {start:DateTime64(3, 'UTC')} "
            "AND created_at < {end:DateTime64(3, 'UTC')} GROUP BY reservation_id", params)
        steps: dict[str, dict[str, Any]] = {}
        for row in frame.to_dicts() if frame.height else []:
            _fold(steps, row["reservation_id"], row["rid"], row["statuses"], row["held"], row["settled"],
                  _utc(row["admitted"]), _utc(row["expires"]))
        for step in _journal_steps(list(journal), budget.name, start, end):
            _fold(steps, *step)
        rows = {rsv: s for rsv, s in steps.items() if "released" not in s["statuses"]
                and ("settled" in s["statuses"] or "expired" not in s["statuses"]
                     or s["expires"] + expired_grace > now)}
        if not rows:
            continue
        stored = _usage_stored(wh, sorted({s["rid"] for s in rows.values()}), start - timedelta(days=1))
        for reservation_id, seen in sorted(rows.items(), key=lambda item: item[1]["admitted"]):
            if seen["rid"] in stored:
                continue
            amount = seen["settled"] if "settled" in seen["statuses"] and seen["settled"] is not None else seen["held"]
            amount = int(amount) if budget.metric == "tokens" else amount
            # a rolling window counts the lost usage for its length after the call, a calendar period to its end
            until = end if budget.rolling_hours is None else seen["admitted"] + timedelta(hours=budget.rolling_hours)
            if "settled" not in seen["statuses"] and "expired" in seen["statuses"]:
                until = min(until, seen["expires"] + expired_grace)  # expired while its usage may have waited
            out.append(Hold(reservation_id, budget.name, seen["rid"], amount, seen["admitted"], until, carried=True))
    return out


def _alert_record(row: dict[str, Any], notify: list[str]) -> dict[str, Any]:
    from tokenmeter.records import alert_record

    at = row["at"]
    return alert_record(
        id=row["id"], source=row["source"], kind=row["kind"], action=row["action"], severity=row["severity"],
        dedup_key=row["dedup_key"], title=row["title"], summary=row["summary"],
        at=at if isinstance(at, datetime) else str(at), scope=dict(row.get("scope") or {}), notify=notify,
        details=json.loads(row.get("details") or "{}"), dashboard_url=row.get("dashboard_url") or "")


def replay_alerts(wh: Any, budgets: list[Any], resolve: Callable[[str], str] | None = None,
                  now: datetime | None = None) -> tuple[list[dict], list[tuple[str, dict]]]:
    """After a broker loss the outbox (`tokenmeter.alerts`) and the delivery states (`tokenmeter.alert-deliveries`)
    are gone, while the warehouse has both as loaded. Returns the budget alerts (of the last REPLAY_DAYS) that have
    a route without a final delivery in the warehouse, to go back to the outbox with the budget's current routes,
    and the known final delivery states of those alerts as (`<alert id>|<route_id>`, record), so the dispatcher
    delivers each (alert, route) once. Delivery states are read per route id (`alert_route_deliveries`), so two
    routes of one kind (two webhooks) are told apart."""
    from streams.alerts.routes import parse_routes

    now = now or datetime.now(timezone.utc)
    by_name = {b.name: b for b in budgets}
    if not by_name:
        return [], []
    rows: list[dict] = []
    known: dict[tuple[str, str], dict] = {}
    for name in sorted(by_name):
        params = {"name": name, "since": now - timedelta(days=REPLAY_DAYS)}
        where = ("source = 'budget' AND action = 'trigger' AND budget = {name:String} "
                 "AND at >= {since:DateTime64(3, 'UTC')}")
        rows += wh.query("SELECT id, source, kind, action, severity, dedup_key, title, summary, at, scope, budget, "
                         f"details, dashboard_url FROM alerts FINAL WHERE {where} ORDER BY at", params).to_dicts()
        for d in wh.query(
                "SELECT alert_id, route_id, argMax(route, at) AS route, argMax(target, at) AS target, "
                "argMax(status, at) AS status, argMax(attempts, at) AS attempts, "
                "argMax(last_error, at) AS last_error, argMax(http_status, at) AS http_status, max(at) AS last_at "
                f"FROM alert_route_deliveries WHERE alert_id IN (SELECT id FROM alerts WHERE {where}) "
                "GROUP BY alert_id, route_id", params).to_dicts():
            known[(d["alert_id"], d["route_id"])] = d
    alerts, states = [], []
    for row in rows:
        notify = list(by_name[row["budget"]].notify)
        routes, _ = parse_routes(notify, resolve)
        final: list[tuple[str, dict]] = []
        for route in routes:
            state = known.get((row["id"], route.route_id))
            if state and state["status"] in ("delivered", "failed") and state["route"] == route.kind:
                at = state["last_at"]
                final.append((f"{row['id']}|{route.route_id}", {
                    "alert_id": row["id"], "route": route.kind, "route_id": route.route_id, "target": route.masked,
                    "status": state["status"], "attempts": int(state["attempts"]),
                    "last_error": state["last_error"] or "", "http_status": int(state["http_status"] or 0),
                    "at": at.isoformat() if isinstance(at, datetime) else str(at)}))
        if len(final) < len(routes):
            alerts.append(_alert_record(row, notify))
            states += final
    return alerts, states


async def _publish(bootstrap: str, states: list[tuple[str, dict]], alerts: list[dict],
                   deliveries: list[tuple[str, dict]] = (), holds: list[Any] = (),
                   ids: dict[str, list[str]] | None = None) -> None:
    from aiokafka import AIOKafkaProducer

    from streams.budgets.seed import seeded_messages
    from tokenmeter import topics

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        rebuilt = {name: state.get("rebuilt_at") for name, state in states}
        for name, event_ids in (ids or {}).items():  # keyed by budget as the routers' entries (the same partition)
            for value in seeded_messages(name, event_ids, rebuilt.get(name)):
                await producer.send_and_wait(topics.BUDGET_SPEND, value, key=name.encode())
        for hold in holds:  # before the states: an owner restoring a state reads the holds with it
            await producer.send_and_wait(topics.BUDGET_HOLDS, orjson.dumps(hold.to_json()), key=hold.key)
        for name, state in states:
            await producer.send_and_wait(topics.BUDGET_STATE, orjson.dumps(state), key=name.encode())
        for key, delivery in deliveries:  # before the alerts: the dispatcher must know what went out already
            await producer.send_and_wait(topics.ALERT_DELIVERIES, orjson.dumps(delivery), key=key.encode())
        for alert in alerts:
            await producer.send_and_wait(topics.ALERTS, orjson.dumps(alert), key=alert["dedup_key"].encode())
    finally:
        await producer.stop()


def rebuild(settings: Any, only_missing: bool = True) -> list[str]:
    """Rebuild and publish; returns one line per budget for people. Budgets with state on the topic are left
    alone unless only_missing=False (their live state is newer than the warehouse)."""
    from streams.budgets import load_budgets
    from streams.budgets.journal import read_journal
    from streams.topic_reader import read_compacted
    from tokenmeter import topics
    from warehouse.store import open_warehouse

    budgets = list(load_budgets(settings.bootstrap_servers, fetch_wait=settings.fetch_wait).values())
    if only_missing:
        existing = asyncio.run(read_compacted(settings.bootstrap_servers, topics.BUDGET_STATE,
                                              fetch_wait=settings.fetch_wait))
        budgets = [b for b in budgets if not existing.get(b.name)]
    if not budgets:
        return []
    from streams.alerts.route_secrets import RouteSecrets

    with open_warehouse(settings, serve=False) as wh:
        now = datetime.now(timezone.utc)
        states, alerts = rebuild_states(wh, budgets, now)
        ids = counted_ids(wh, budgets, now)
        replayed, deliveries = replay_alerts(wh, budgets, RouteSecrets(settings.data_dir).resolve)
        holds = carried_holds(wh, budgets, journal=read_journal(settings.data_dir),
                              expired_grace=expiry_grace(settings))
    asyncio.run(_publish(settings.bootstrap_servers, states, replayed + alerts, deliveries, holds, ids))
    lines = []
    for name, state in states:
        spend = state["ledger"]["spend"].get(name, {})
        lines.append(f"{name}: " + (", ".join(f"{k} = {v}" for k, v in sorted(spend.items())[-3:]) or "no spend"))
    for name in sorted({h.budget for h in holds}):
        mine = [h for h in holds if h.budget == name]
        lines.append(f"{name}: {len(mine)} hold(s) admitted before and not in the warehouse's usage held again "
                     f"({sum(h.amount for h in mine)})")
    if replayed:
        lines.append(f"{len(replayed)} alert(s) not yet delivered on every route back in the outbox "
                     f"({len(deliveries)} delivery state(s) restored)")
    return lines


def running_owners(settings: Any) -> list[str]:
    """The budget owners' URLs (as they announced them on `tokenmeter.budget-owners`) that answer now."""
    import httpx

    from streams.topic_reader import read_compacted
    from tokenmeter import topics

    urls = set()
    for value in asyncio.run(read_compacted(settings.bootstrap_servers, topics.BUDGET_OWNERS,
                                            fetch_wait=settings.fetch_wait)).values():
        try:
            url = orjson.loads(value).get("url") if value else None
        except (orjson.JSONDecodeError, AttributeError):
            continue
        if isinstance(url, str) and url.startswith(("http://", "https://")):
            urls.add(url.rstrip("/"))
    alive = []
    for url in sorted(urls):
        try:
            httpx.get(f"{url}/ready", timeout=2.0)  # any answer (503 while loading too): a worker is there
        except httpx.HTTPError:
            continue  # an announcement of a worker gone
        alive.append(url)
    return alive


@click.command("rebuild")
@click.option("--all", "rebuild_all", is_flag=True, help="Also budgets that have live state (replaces it; "
              "with the workers stopped).")
def rebuild_command(rebuild_all: bool) -> None:
    """Rebuild budget spend for the current periods from the warehouse (after the embedded broker lost it)."""
    from streams.budgets.store import BudgetStoreError
    from tokenmeter.cli_support import cli_settings
    from warehouse.backends import WarehouseError

    settings = cli_settings()
    if rebuild_all:
        # walk33: a running owner keeps the state it holds and writes it over the rebuilt one at its next batch, so
        # `--all` while workers ran printed the rebuilt spend and changed nothing
        try:
            alive = running_owners(settings)
        except Exception as exc:  # noqa: BLE001 - no broker: the rebuild below says so
            log.debug("budget owners not read: %s", exc)
            alive = []
        if alive:
            raise click.ClickException(
                f"budget owners are running ({', '.join(alive)}): a running worker keeps the budget state it holds "
                "and writes it over a rebuild. Stop the workers first, then run `tokenmeter budget rebuild --all` and "
                "start them (`tokenmeter up` rebuilds every budget itself at each start: restarting it is enough)")
    try:
        lines = rebuild(settings, only_missing=not rebuild_all)
    except (BudgetStoreError, WarehouseError) as exc:  # no broker, no warehouse: say which and what to do
        raise click.ClickException(str(exc)) from None
    click.echo("\n".join(lines) if lines else "every budget already has state; nothing rebuilt (use --all)")
