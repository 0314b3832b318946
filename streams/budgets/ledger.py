"""Budget evaluation, pure: no Kafka, no clock except the events' own `ts`. The worker feeds each batch of
priced events to `BudgetLedger.apply` and persists `snapshot()`; the decision endpoint calls `decision`.

Exactly-once alerting rests on three pieces of state, all in the snapshot:
- spend per (budget, period_key): Decimal USD or int tokens;
- the fired set per (budget, period_key): thresholds (and `forecast`) already reported; a crossing is only
  emitted when it enters this set, so redelivered batches and restarts from a snapshot never refire it;
- the last `max_seen_ids` event ids (FIFO). The worker acknowledges input offsets after each batch, so a
  crash redelivers at most the batches in flight; keeping a few batches' worth of ids (default 200,000,
  ~15 MB in memory, a few MB of JSON) makes that redelivery count once. Replays older than that window could
  count twice: exact spend comes from the warehouse (deduplicated on event_id) via `rebuild_from_totals`.

Forecast (one definition, `BudgetLedger.forecast`, for the alert and for the enforcement record the Budgets page
and /api read): evaluated at `now`, the evaluator's clock (the owner's wall clock; without one, the newest event
time the ledger has seen). The burn rate is the spend whose event time lies in the last `forecast_lookback` (default
1 h) before `now`, in minute buckets, divided by the time elapsed in that lookback (less at the start of a period,
or when the ledger has observed the period's burn for less than that). Nothing is forecast before the ledger has
observed `forecast_min_elapsed` (default 10 min) of the period's burn up to `now`, so one burst cannot project a
breach. Events of older times count in spend, never as the last hour's burn. Projected = spend + rate * time left
to the period end; a `forecast` crossing fires once per period when the projection reaches the limit while spend is
still below it, with the expected breach time (after `now`). Calendar periods only (a rolling window has no end to
project to).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Iterable, Literal
from zoneinfo import ZoneInfo

from tokenmeter.measures import usd_digits
from tokenmeter.period_names import period_name
from tokenmeter.timefmt import iso_utc

from .model import Budget
from .periods import HOUR, calendar_window, hour_from_key, hour_key, period_window, rolling_window

Amount = Decimal | int
KEEP_PERIODS = 3  # calendar periods kept per budget (current, previous, one more for late events)
SEVERITY = {"allow": 0, "throttle": 1, "block": 2}


def crossing_id(budget: str, period_key: str, threshold: int | str) -> str:
    return hashlib.sha256(f"{budget}|{period_key}|{threshold}".encode()).hexdigest()


def _ts(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc)
    return datetime.fromisoformat(str(value)).astimezone(timezone.utc)


def _fmt(amount: Amount) -> str | int:
    return amount if isinstance(amount, int) else format(amount, "f")


def human_amount(amount: Any) -> str:
    """Amounts for people: USD to the cent from a dollar up, to 4 decimals below (a $0.10 budget's 0.1044 is not
    "0.10 of 0.10 USD" at 104 %), tokens as integers with separators (records keep exact values)."""
    if amount is None:
        return "?"
    if isinstance(amount, int):
        return f"{amount:,}"
    return usd_digits(amount)


def _amount(value: Any) -> Amount:
    return value if isinstance(value, int) else Decimal(str(value))


@dataclass(frozen=True)
class Crossing:
    """A threshold (or forecast) reached by one budget in one period; `id` is stable across redeliveries."""

    id: str
    budget: str
    period_key: str
    kind: Literal["threshold", "forecast"]
    threshold: int | None
    metric: str
    spend: Amount
    limit: Amount
    period_start: datetime
    period_end: datetime
    at: datetime  # event time of the newest event in the batch that crossed (a forecast: when it was projected)
    action: str  # budget.action when threshold >= 100, else "alert"
    scope: dict[str, str] = field(default_factory=dict)
    notify: tuple[str, ...] = ()
    projected: Amount | None = None
    expected_breach_at: datetime | None = None

    @property
    def percent(self) -> Decimal:
        return (Decimal(self.spend) * 100 / Decimal(self.limit)).quantize(Decimal("0.01"))

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "budget": self.budget, "period_key": self.period_key, "kind": self.kind,
            "threshold": self.threshold, "metric": self.metric, "spend": _fmt(self.spend),
            "limit": _fmt(self.limit), "percent": format(self.percent, "f"),
            "period_start": iso_utc(self.period_start), "period_end": iso_utc(self.period_end), "at": iso_utc(self.at),
            "action": self.action, "scope": dict(self.scope), "notify": list(self.notify),
            "projected": None if self.projected is None else _fmt(self.projected),
            "expected_breach_at": iso_utc(self.expected_breach_at),
        }


@dataclass(frozen=True)
class Decision:
    decision: Literal["allow", "throttle", "block"]
    reason: str
    budget: str | None = None
    until: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {"decision": self.decision, "reason": self.reason, "budget": self.budget, "until": iso_utc(self.until)}


@dataclass(frozen=True)
class Forecast:
    """The period-end projection at `now` (rounded to the amount's precision) and when spend reaches the limit at the
    burn rate (None: the projection stays within the limit)."""

    projected: Amount
    expected_breach_at: datetime | None


@dataclass
class _Batch:
    deltas: dict[tuple[str, str], Amount] = field(default_factory=dict)
    touched: dict[tuple[str, str], datetime] = field(default_factory=dict)


def _zero(budget: Budget) -> Amount:
    """No spend yet, in the budget's unit: an int 0 for a USD budget reached the JSON answers as `0` beside the
    decimal strings of every other amount (`money()` keeps ints, the token counts, as ints)."""
    return 0 if budget.metric == "tokens" else Decimal(0)


class BudgetLedger:
    def __init__(self, budgets: Iterable[Budget] | dict[str, Budget] = (), *, max_seen_ids: int = 200_000,
                 forecast_lookback: timedelta = HOUR, forecast_min_elapsed: timedelta = timedelta(minutes=10)):
        self.budgets: dict[str, Budget] = {}
        self.max_seen_ids = max_seen_ids
        self.forecast_lookback = forecast_lookback
        self.forecast_min_elapsed = forecast_min_elapsed
        self.spend: dict[str, dict[str, Amount]] = defaultdict(dict)
        self.fired: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
        self.latched: dict[str, dict[str, str]] = defaultdict(dict)  # rolling: threshold -> window key
        self.burn: dict[str, dict[str, dict[str, Amount]]] = defaultdict(lambda: defaultdict(dict))
        self.newest: dict[str, datetime] = {}
        self.seen: OrderedDict[str, None] = OrderedDict()
        self.stats = {"events": 0, "duplicates": 0, "late_ignored": 0}
        self.set_budgets(budgets)

    # Definitions ----------------------------------------------------------------------------------
    def set_budgets(self, budgets: Iterable[Budget] | dict[str, Budget]) -> None:
        """Replace the definitions. State of deleted budgets is dropped; a changed definition keeps spend
        only if what is counted (scope, metric, period, zone) is unchanged, and re-arms its thresholds."""
        new = dict(budgets) if isinstance(budgets, dict) else {b.name: b for b in budgets}
        for name in set(self.spend) | set(self.fired) | set(self.latched) | set(self.burn):
            old, now = self.budgets.get(name), new.get(name)
            if now is None or (old is not None and old != now):
                counted_same = old is not None and now is not None and all(
                    getattr(old, f) == getattr(now, f) for f in ("scope", "metric", "period", "tz"))
                if not counted_same:
                    self.spend.pop(name, None)
                    self.burn.pop(name, None)
                    self.newest.pop(name, None)
                self.fired.pop(name, None)
                self.latched.pop(name, None)
        self.budgets = new

    # Feeding ----------------------------------------------------------------------------------------
    def _first_time(self, event_id: str | None) -> bool:
        if event_id is None:
            return True
        if event_id in self.seen:
            return False
        self.seen[event_id] = None
        while len(self.seen) > self.max_seen_ids:
            self.seen.popitem(last=False)
        return True

    def _too_late(self, budget: Budget, key: str, ts: datetime) -> bool:
        periods = self.spend.get(budget.name, {})
        if budget.rolling_hours is not None:
            newest = self.newest.get(budget.name)
            return newest is not None and ts < newest - (budget.rolling_hours + 1) * HOUR
        return key not in periods and len(periods) >= KEEP_PERIODS and key < min(periods)

    def apply(self, events: Iterable[Any], now: datetime | None = None) -> list[Crossing]:
        """Add a batch of priced events (dicts or models); return the crossings it caused, each once. `now`: the
        clock forecasts are evaluated at (None: the newest event time seen)."""
        batch = _Batch()
        for event in events:
            event_id = event.get("event_id") if isinstance(event, dict) else getattr(event, "event_id", None)
            if not self._first_time(event_id):
                self.stats["duplicates"] += 1
                continue
            self.stats["events"] += 1
            ts = _ts(event.get("ts") if isinstance(event, dict) else event.ts)
            for budget in self.budgets.values():
                if budget.matches(event):
                    self._add(batch, budget, ts, budget.amount(event))
        return self._finish(batch, now)

    def mark_seen(self, name: str, event_id: str) -> None:
        """Remember that `event_id` already counts toward budget `name` (restored or redelivered elsewhere)."""
        self._first_time(f"{name}|{event_id}")

    def apply_amounts(self, name: str, items: Iterable[tuple[str | None, Any, Amount]],
                      now: datetime | None = None) -> list[Crossing]:
        """Add `(event_id, ts, amount)` items already matched to budget `name` (the worker matches events to
        budgets where they are priced and routes the amounts to the budget's owner). Duplicate ids count once
        per budget; an unknown budget (deleted meanwhile) is ignored. `now` as for `apply`."""
        budget = self.budgets.get(name)
        if budget is None:
            return []
        batch = _Batch()
        for event_id, ts, amount in items:
            if not self._first_time(None if event_id is None else f"{name}|{event_id}"):
                self.stats["duplicates"] += 1
                continue
            self.stats["events"] += 1
            self._add(batch, budget, _ts(ts), amount)
        return self._finish(batch, now)

    def _add(self, batch: "_Batch", budget: Budget, ts: datetime, amount: Amount) -> None:
        key = hour_key(ts) if budget.rolling_hours is not None else period_window(budget, ts)[2]
        if self._too_late(budget, key, ts):
            self.stats["late_ignored"] += 1
            return
        batch.deltas[(budget.name, key)] = batch.deltas.get((budget.name, key), 0) + amount
        if budget.rolling_hours is None:
            minute = ts.strftime("%Y-%m-%dT%H:%M")
            burn = self.burn[budget.name][key]
            burn[minute] = burn.get(minute, 0) + amount
        prev = batch.touched.get((budget.name, key))
        batch.touched[(budget.name, key)] = ts if prev is None or ts > prev else prev
        if budget.name not in self.newest or ts > self.newest[budget.name]:
            self.newest[budget.name] = ts

    def _finish(self, batch: "_Batch", now: datetime | None) -> list[Crossing]:
        for (name, key), delta in batch.deltas.items():
            self.spend[name][key] = self.spend[name].get(key, 0) + delta
        crossings: list[Crossing] = []
        rolling_done: set[str] = set()
        for (name, key), at in sorted(batch.touched.items()):
            budget = self.budgets[name]
            if budget.rolling_hours is not None:
                if name not in rolling_done:  # one evaluation per rolling budget per batch
                    rolling_done.add(name)
                    crossings += self._evaluate_rolling(budget, self.newest[name])
            else:
                crossings += self._evaluate_calendar(budget, key, at, now or self.newest[name])
        self._prune(now)
        return crossings

    # Evaluation -------------------------------------------------------------------------------------
    def _crossing(self, budget: Budget, key: str, threshold: int | str, spend: Amount, start: datetime,
                  end: datetime, at: datetime, **extra: Any) -> Crossing:
        is_threshold = isinstance(threshold, int)
        action = budget.action if is_threshold and threshold >= 100 else "alert"
        return Crossing(crossing_id(budget.name, key, threshold), budget.name, key,
                        "threshold" if is_threshold else "forecast", threshold if is_threshold else None,
                        budget.metric, spend, budget.limit, start, end, at, action, dict(budget.scope),
                        tuple(budget.notify), **extra)

    def _evaluate_calendar(self, budget: Budget, key: str, at: datetime, now: datetime) -> list[Crossing]:
        start, end, _ = window_for_key(budget, key)
        spend = self.spend[budget.name].get(key, 0)
        fired = self.fired[budget.name][key]
        out = []
        for threshold in budget.thresholds:
            if str(threshold) not in fired and spend * 100 >= threshold * budget.limit:
                fired.add(str(threshold))
                out.append(self._crossing(budget, key, threshold, spend, start, end, at))
        if "forecast" not in fired and spend < budget.limit:
            forecast = self.forecast(budget, key, spend, start, end, now)
            if forecast is not None and forecast.expected_breach_at is not None:
                fired.add("forecast")
                # dated when projected (`now`), not at the batch's newest event time: a catch-up batch's events
                # are minutes old, older than a freshly started stack (walk36)
                out.append(self._crossing(budget, key, "forecast", spend, start, end, now,
                                          projected=forecast.projected,
                                          expected_breach_at=forecast.expected_breach_at))
        return out

    def forecast(self, budget: Budget, key: str, spend: Amount, start: datetime, end: datetime,
                 now: datetime) -> Forecast | None:
        """The projection at `now` of period `key` ([start, end)), whether or not it reaches the limit: the one
        definition the forecast alert and the enforcement record (Budgets page, /api) both use. None ("not enough
        data yet") while the ledger has not observed `forecast_min_elapsed` of the period's burn up to `now`, and for
        a period that `now` is not in."""
        burn = self.burn[budget.name].get(key)
        if not burn or not start <= now < end:
            return None
        # The rate is measured only over time this ledger observed: a budget created mid-period (or one burst)
        # must not be read as an hour of burn; and only over the lookback before `now`: spend of older event times
        # (a replay, a backfill) counts in spend, not as the current burn, nor do minutes after `now` (a skewed clock).
        observed_since = datetime.strptime(min(burn), "%Y-%m-%dT%H:%M").replace(tzinfo=timezone.utc)
        since = max(start, now - self.forecast_lookback, observed_since)
        elapsed = (now - since).total_seconds()
        if now - max(start, observed_since) < self.forecast_min_elapsed or elapsed <= 0:
            return None
        first_minute, last_minute = since.strftime("%Y-%m-%dT%H:%M"), now.strftime("%Y-%m-%dT%H:%M")
        recent = sum((v for m, v in burn.items() if first_minute <= m <= last_minute), Decimal(0))
        rate = Decimal(recent) / Decimal(str(elapsed))  # per second
        projected = Decimal(spend) + rate * Decimal(str((end - now).total_seconds()))
        breach = None
        if rate > 0 and projected >= budget.limit:
            breach = now + timedelta(seconds=float((Decimal(budget.limit) - Decimal(spend)) / rate))
        rounded = int(projected) if budget.metric == "tokens" else projected.quantize(Decimal("1e-12"))
        return Forecast(rounded, breach)

    def _window_total(self, budget: Budget, at: datetime) -> tuple[Amount, datetime, datetime, str]:
        start, end, key = rolling_window(budget.rolling_hours or 1, at)
        # Hour keys (`hour:YYYY-mm-ddTHHZ`, fixed width) sort as their hours do: compared as text, not parsed.
        # Parsing each bucket (strptime) cost ~0.5 ms per admission for a 24 h window, ~30 ms for 90 days.
        first, following = hour_key(start), hour_key(end)
        total: Amount = _zero(budget)
        for bucket, amount in self.spend.get(budget.name, {}).items():
            if first <= bucket < following:
                total += amount
        return total, start, end, key

    def evaluate_rolling_at(self, budget_name: str, at: datetime) -> list[Crossing]:
        """A rolling budget's thresholds for the window ending at `at` (time passing, no new event)."""
        budget = self.budgets.get(budget_name)
        return [] if budget is None or budget.rolling_hours is None else self._evaluate_rolling(budget, at)

    def _evaluate_rolling(self, budget: Budget, at: datetime) -> list[Crossing]:
        total, start, end, key = self._window_total(budget, at)
        latched = self.latched[budget.name]
        out = []
        for threshold in budget.thresholds:
            reached = total * 100 >= threshold * budget.limit
            if reached and str(threshold) not in latched:
                latched[str(threshold)] = key
                out.append(self._crossing(budget, key, threshold, total, start, end, at))
            elif not reached and str(threshold) in latched:
                del latched[str(threshold)]  # spend left the window: the threshold may fire again later
        return out

    def _prune(self, now: datetime | None = None) -> None:
        """Drop periods beyond KEEP_PERIODS and burn minutes past the forecast's hour before `now` (the evaluator's
        clock; None: each period's newest burn minute)."""
        for name, periods in self.spend.items():
            budget = self.budgets.get(name)
            if budget is None:
                continue
            if budget.rolling_hours is not None:
                horizon = self.newest[name] - (budget.rolling_hours + 1) * HOUR
                for key in [k for k in periods if hour_from_key(k) < horizon]:
                    del periods[key]
                continue
            for key in sorted(periods)[:-KEEP_PERIODS]:
                del periods[key]
                self.fired.get(name, {}).pop(key, None)
                self.burn.get(name, {}).pop(key, None)
            # Relative to the clock, at most the period's newest burn minute, not `newest`: a state rebuilt before
            # forecast36 stored the period END as `newest`, and every batch's burn was then dropped right after its
            # own evaluation; and one event of a gateway a day ahead (accepted: clock skew) dropped the last hour's.
            clock = None if now is None else now.strftime("%Y-%m-%dT%H:%M")
            for burn in self.burn.get(name, {}).values():
                if burn:
                    newest = datetime.strptime(min(max(burn), clock or max(burn)), "%Y-%m-%dT%H:%M").replace(
                        tzinfo=timezone.utc)
                    horizon = (newest - self.forecast_lookback - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M")
                    old = [m for m in burn if m < horizon]
                    for minute in old:
                        del burn[minute]
                    if old:  # the minutes since stay observed (quiet ones too): a zero at the horizon says so, or a
                        burn.setdefault(horizon, _zero(budget))  # quiet hour's first call restarted the 10-min guard

    # Exact rebuild and decisions --------------------------------------------------------------------
    def rebuild_from_totals(self, budget_name: str, period_key: str, total: Amount,
                            at: datetime | None = None) -> list[Crossing]:
        """Set the exact spend of one period (calendar key, or an `hour:` bucket of a rolling budget) from the
        warehouse; returns any crossing that the corrected spend now reaches (already fired ones stay quiet), at
        `at` (the rebuild's time; None: the newest event seen, at most the period end)."""
        budget = self.budgets[budget_name]
        self.spend[budget_name][period_key] = int(total) if budget.metric == "tokens" else Decimal(str(total))
        if budget.rolling_hours is not None:
            at = self.newest.get(budget_name) or hour_from_key(period_key)
            self.newest[budget_name] = at
            return self._evaluate_rolling(budget, at)
        start, end, _ = window_for_key(budget, period_key)
        # `newest` stays the newest EVENT time: a total from the warehouse is no event (before forecast36 the period
        # end was stored here, in the future, and the burn of every later batch was pruned as over an hour old)
        at = at or min(self.newest.get(budget_name) or end, end)
        return self._evaluate_calendar(budget, period_key, at, at)

    def restore_calendar(self, budget_name: str, period_key: str, total: Amount, fired: set[str],
                         at: datetime | None = None, burn: dict[datetime, Amount] | None = None) -> list[Crossing]:
        """A calendar budget's period rebuilt from the warehouse (at `at`): its exact spend, its spend per minute of
        the last hour (`burn`, the forecast's rate), and the thresholds whose alerts were already recorded (they stay
        quiet); returns the crossings reached but never alerted (a forecast too, on that burn)."""
        self.fired[budget_name][period_key] = set(fired)
        minutes = {minute.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M"): amount
                   for minute, amount in (burn or {}).items() if amount}
        if burn is not None and at is not None:
            # The warehouse saw the whole hour, quiet minutes too, as a ledger that ran through it would have (its
            # older minutes): a zero at the hour's start says burn was observed from there. Also for a period with no
            # spend yet: a quiet hour is an hour of burn (walk36: a quiet budget's runaway read "not enough data
            # yet" for its first 10 minutes, until past 80 %).
            since = max(window_for_key(self.budgets[budget_name], period_key)[0], at - self.forecast_lookback)
            minutes.setdefault(since.strftime("%Y-%m-%dT%H:%M"), _zero(self.budgets[budget_name]))
        self.burn[budget_name][period_key] = minutes
        return self.rebuild_from_totals(budget_name, period_key, total, at) if total else []

    def restore_rolling(self, budget_name: str, hour_totals: dict[str, Amount], fired: set[str],
                        now: datetime) -> list[Crossing]:
        """A rolling budget rebuilt from the warehouse: spend per `hour_key`, thresholds already alerted latched."""
        for key, total in hour_totals.items():
            if total:
                self.spend[budget_name][key] = total
        if not self.spend.get(budget_name):
            return []
        self.newest[budget_name] = now
        self.latched[budget_name] = {t: "rebuilt" for t in fired if t != "forecast"}
        return self.rebuild_from_totals(budget_name, hour_key(now), self.spend[budget_name].get(hour_key(now), 0))

    def add_seed(self, budget_name: str, amounts: dict[str, Amount], now: datetime) -> tuple[Crossing | None, list[int]]:
        """Spend from before the budget existed, taken from the warehouse (streams/budgets/seed.py), added per
        period key (a rolling budget: per `hour_key`). The thresholds it makes reached are marked fired (latched)
        at once, and ONE crossing stands for them all: the highest, with the list of those passed, so a budget
        defined at 96 % alerts once ("defined at 96 %"), not three times for crossings that happened before it
        existed. Returns (that crossing or None, the thresholds it stands for)."""
        budget = self.budgets[budget_name]
        for key, amount in amounts.items():
            if amount:
                self.spend[budget_name][key] = self.spend[budget_name].get(key, _zero(budget)) + amount
        if budget.rolling_hours is not None:
            self.newest[budget_name] = max(self.newest.get(budget_name, now), now)
            spend, start, end, key = self._window_total(budget, now)
            marks = self.latched[budget_name]
        else:
            start, end, key = period_window(budget, now)
            spend = self.spend[budget_name].get(key, _zero(budget))
            self.newest.setdefault(budget_name, now)
            marks = self.fired[budget_name][key]
        passed = [t for t in budget.thresholds if str(t) not in marks and spend * 100 >= t * budget.limit]
        if not passed:
            return None, []
        for threshold in passed:
            if isinstance(marks, dict):
                marks[str(threshold)] = key
            else:
                marks.add(str(threshold))
        return self._crossing(budget, key, max(passed), spend, start, end, now), passed

    def current_spend(self, budget: Budget, at: datetime) -> tuple[Amount, datetime, datetime, str]:
        if budget.rolling_hours is not None:
            return self._window_total(budget, at)
        start, end, key = period_window(budget, at)
        return self.spend.get(budget.name, {}).get(key, _zero(budget)), start, end, key

    def _rolling_until(self, budget: Budget, at: datetime, total: Amount) -> datetime:
        """When enough hourly buckets leave the window for spend to fall below the limit."""
        start, end, _ = rolling_window(budget.rolling_hours or 1, at)
        buckets = sorted((hour_from_key(k), v) for k, v in self.spend.get(budget.name, {}).items())
        for hour, amount in buckets:
            if start <= hour < end:
                total -= amount
                if total < budget.limit:
                    return hour + (budget.rolling_hours or 1) * HOUR
        return end

    def decision(self, scope: dict[str, Any], at: datetime | None = None) -> Decision:
        """allow / throttle / block for a caller with these attributes (team, user, model, tags, ...): the most
        severe action among matching budgets at or over 100% of their limit in the current period."""
        at = _ts(at) if at is not None else datetime.now(timezone.utc)
        best = Decision("allow", "within all matching budgets")
        for budget in self.budgets.values():
            if budget.action == "alert" or not budget.matches(scope):
                continue
            spend, start, end, key = self.current_spend(budget, at)
            if spend < budget.limit:
                continue
            until = self._rolling_until(budget, at, spend) if budget.rolling_hours is not None else end
            unit = "USD" if budget.metric == "cost_usd" else "tokens"
            reason = (f"budget {budget.name!r} at {human_amount(spend)} of {human_amount(budget.limit)} {unit} "
                      f"for {period_name(key, at)}: {budget.action} until {iso_utc(until)}")
            candidate = Decision(budget.action, reason, budget.name, until)  # type: ignore[arg-type]
            if SEVERITY[candidate.decision] > SEVERITY[best.decision] or (
                    candidate.decision == best.decision and best.until and until > best.until):
                best = candidate
        return best

    # Persistence ------------------------------------------------------------------------------------
    def snapshot(self, include_seen: bool = True) -> dict[str, Any]:
        """All state as a JSON-able dict (Decimal as strings, tokens as ints)."""
        return {
            "version": 1,
            "spend": {n: {k: _fmt(v) for k, v in p.items()} for n, p in self.spend.items() if p},
            "fired": {n: {k: sorted(s) for k, s in p.items() if s} for n, p in self.fired.items()},
            "latched": {n: dict(p) for n, p in self.latched.items() if p},
            "burn": {n: {k: {m: _fmt(v) for m, v in b.items()} for k, b in p.items()} for n, p in self.burn.items()},
            "newest": {n: iso_utc(ts) for n, ts in self.newest.items()},
            "seen_ids": list(self.seen) if include_seen else [],
        }

    def restore(self, data: dict[str, Any]) -> None:
        if data.get("version") != 1:
            raise ValueError(f"budget ledger snapshot: unsupported version {data.get('version')!r}")
        self.spend = defaultdict(dict, {n: {k: _amount(v) for k, v in p.items()} for n, p in data["spend"].items()})
        self.fired = defaultdict(lambda: defaultdict(set))
        for name, periods in data["fired"].items():
            for key, items in periods.items():
                self.fired[name][key] = set(items)
        self.latched = defaultdict(dict, {n: dict(p) for n, p in data["latched"].items()})
        self.burn = defaultdict(lambda: defaultdict(dict))
        for name, periods in data["burn"].items():
            for key, minutes in periods.items():
                self.burn[name][key] = {m: _amount(v) for m, v in minutes.items()}
        self.newest = {n: _ts(v) for n, v in data["newest"].items()}
        self.seen = OrderedDict((i, None) for i in data.get("seen_ids", [])[-self.max_seen_ids:])


def window_for_key(budget: Budget, key: str) -> tuple[datetime, datetime, str]:
    """(start, end, key) of a calendar period key such as `month:2026-11@Europe/Berlin`."""
    label, _, tz = key.partition("@")
    kind, _, value = label.partition(":")
    if kind == "month":
        day = datetime.strptime(value + "-15", "%Y-%m-%d")
    elif kind == "week":
        day = datetime.strptime(value + "-4", "%G-W%V-%u")
    elif kind == "day":
        day = datetime.strptime(value, "%Y-%m-%d").replace(hour=12)
    else:
        raise ValueError(f"{key!r} is not a calendar period key of budget {budget.name!r}")
    return calendar_window(kind, tz, day.replace(tzinfo=ZoneInfo(tz)))


__all__ = ["BudgetLedger", "Crossing", "Decision", "Forecast", "crossing_id", "window_for_key"]
