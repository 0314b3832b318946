"""Overview headline numbers: spend today and month to date (UTC) against budgets, and the top movers
(team and model pairs whose spend changed most against the previous period of the same length)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any

from dashboards.budgets_data import BudgetStatus, latest_statuses
from dashboards.filters import Filters
from dashboards.formatting import to_decimal
from dashboards.tables import TableMissing


@dataclass(frozen=True)
class Headline:
    today_usd: Decimal
    month_usd: Decimal
    budgets: list[BudgetStatus]  # cost budgets only, worst first; [] when none are defined yet

    @property
    def at_risk(self) -> list[BudgetStatus]:
        return [b for b in self.budgets if b.state in ("over budget", "at risk")]  # pending: not known to be at risk


def _cost(wh: Any, since: datetime, until: datetime, filters: dict | None) -> Decimal:
    frame = wh.spend([], since=since, until=until, filters=filters)
    return to_decimal(frame["cost_usd"][0]) if frame.height and frame["cost_usd"][0] is not None else Decimal(0)


def headline(wh: Any, filters: Filters, now: datetime | None = None) -> Headline:
    now = now or datetime.now(timezone.utc)
    today = datetime.combine(now.date(), time.min, tzinfo=timezone.utc)
    month = today.replace(day=1)
    tomorrow = today + timedelta(days=1)
    where = filters.warehouse_filters()
    try:
        budgets = latest_statuses(wh)
    except TableMissing:
        budgets = []
    if filters.teams:
        budgets = [b for b in budgets if b.scope.get("team") in filters.teams]
    return Headline(today_usd=_cost(wh, today, tomorrow, where), month_usd=_cost(wh, month, tomorrow, where),
                    budgets=budgets)


@dataclass(frozen=True)
class Mover:
    team: str
    model: str
    before: Decimal
    now: Decimal

    @property
    def change(self) -> Decimal:
        return self.now - self.before

    @property
    def change_percent(self) -> Decimal | None:
        return None if self.before == 0 else (self.change * 100 / self.before).quantize(Decimal("0.1"))


def top_movers(wh: Any, filters: Filters, top: int = 6) -> list[Mover]:
    return movers_and_previous_total(wh, filters, top)[0]


def movers_and_previous_total(wh: Any, filters: Filters, top: int = 6) -> tuple[list[Mover], Decimal]:
    """The top movers, and what was spent in the previous period (0: it has no usage, so every pair is "new")."""
    length = filters.until - filters.since
    where = filters.warehouse_filters()

    def by_pair(since: datetime, until: datetime) -> dict[tuple[str, str], Decimal]:
        frame = wh.spend(["team", "model"], since=since, until=until, filters=where)
        return {(r["team"] or "(no team)", r["model"]): to_decimal(r["cost_usd"]) for r in frame.iter_rows(named=True)}

    current = by_pair(filters.since, filters.until)
    previous = by_pair(filters.since - length, filters.since)
    movers = [Mover(team, model, previous.get((team, model), Decimal(0)), current.get((team, model), Decimal(0)))
              for team, model in set(current) | set(previous)]
    movers = [m for m in movers if m.change != 0]
    movers.sort(key=lambda m: (-abs(m.change), m.team, m.model))
    return movers[:top], sum(previous.values(), Decimal(0))
