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
from datetime import datetime, timezone
from typing import Any

import click
import orjson

log = logging.getLogger("tokenmeter.budgets")


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
    return out


def rebuild_states(wh: Any, budgets: list[Any], now: datetime | None = None) -> tuple[list[tuple[str, dict]], list[dict]]:
    """(budget name, state record) per budget, and alert records for thresholds reached but never alerted. The
    warehouse supplies the totals; the budget owner (`BudgetOwner.rebuild`) turns them into state."""
    from streams.budgets.owner import BudgetOwner
    from streams.budgets.periods import HOUR, hour_floor, hour_key, period_window
    from warehouse.analytics import budget_spend

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
            total = budget_spend(wh, dict(budget.scope), budget.metric, start, end)
            state, new_alerts = owner.rebuild(budget.name, now, fired, period_total=total)
        states.append((budget.name, state))
        alerts += new_alerts
    return states, alerts


async def _publish(bootstrap: str, states: list[tuple[str, dict]], alerts: list[dict]) -> None:
    from aiokafka import AIOKafkaProducer

    from tokenmeter import topics

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for name, state in states:
            await producer.send_and_wait(topics.BUDGET_STATE, orjson.dumps(state), key=name.encode())
        for alert in alerts:
            await producer.send_and_wait(topics.ALERTS, orjson.dumps(alert), key=alert["dedup_key"].encode())
    finally:
        await producer.stop()


def rebuild(settings: Any, only_missing: bool = True) -> list[str]:
    """Rebuild and publish; returns one line per budget for people. Budgets with state on the topic are left
    alone unless only_missing=False (their live state is newer than the warehouse)."""
    from streams.budgets import load_budgets
    from streams.topic_reader import read_compacted
    from tokenmeter import topics
    from warehouse.store import open_warehouse

    budgets = list(load_budgets(settings.bootstrap_servers).values())
    if only_missing:
        existing = asyncio.run(read_compacted(settings.bootstrap_servers, topics.BUDGET_STATE))
        budgets = [b for b in budgets if not existing.get(b.name)]
    if not budgets:
        return []
    with open_warehouse(settings, serve=False) as wh:
        states, alerts = rebuild_states(wh, budgets)
    asyncio.run(_publish(settings.bootstrap_servers, states, alerts))
    lines = []
    for name, state in states:
        spend = state["ledger"]["spend"].get(name, {})
        lines.append(f"{name}: " + (", ".join(f"{k} = {v}" for k, v in sorted(spend.items())[-3:]) or "no spend"))
    return lines


@click.command("rebuild")
@click.option("--all", "rebuild_all", is_flag=True, help="Also budgets that have live state (replaces it).")
def rebuild_command(rebuild_all: bool) -> None:
    """Rebuild budget spend for the current periods from the warehouse (after the embedded broker lost it)."""
    from tokenmeter.cli_support import cli_settings

    settings = cli_settings()
    lines = rebuild(settings, only_missing=not rebuild_all)
    click.echo("\n".join(lines) if lines else "every budget already has state; nothing rebuilt (use --all)")
