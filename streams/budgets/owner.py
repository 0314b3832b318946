"""Owner side of budget evaluation: the worker that owns a budget's partition of `tokenmeter.budget-spend`
keeps its ledger, turns crossings into alert records and publishes the budget's enforcement decision.

State per budget (a record on the compacted topic `tokenmeter.budget-state`, written after every batch that
touched the budget and acknowledged before the batch's input offsets are committed):
- the ledger snapshot (spend per period, thresholds fired, burn rate minutes), without event ids;
- `applied`: the highest usage offset applied per usage partition (exact dedupe of re-priced batches);
- `unpriced`: events in the budget's scope that could not be priced, per period (reported in alerts);
- `incident`: the period whose alerts are open (PagerDuty incident), resolved when a new period starts or
  the limit is raised above spend;
- `seed`: while the spend of the period from before the budget existed (or before its scope changed) is not taken
  from the warehouse yet, `{"since": ...}` (streams/budgets/seed.py); null once it is.
The state topic is read to its high watermark (not Faust's changelog recovery, which stops at the embedded
broker's under-reported end offsets), so a restarted worker continues exactly.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from tokenmeter.measures import count_of
from tokenmeter.period_names import period_name
from tokenmeter.records import alert_record, iso, money, scope_label
from tokenmeter.timefmt import people_utc

from .expiry import ExpiryIndex
from .holds import Hold, hold_from_json
from .ledger import BudgetLedger, Crossing, _ts, human_amount, window_for_key
from .model import Budget, BudgetError, parse_budget
from .periods import HOUR, hour_floor, hour_key, period_window

log = logging.getLogger("tokenmeter.budgets")
STATE_VERSION = 1
RESERVATION_COUNTS = ("admitted", "refused", "settled", "released", "expired", "superseded")
REPUBLISH_SECONDS = 60.0  # an unchanged decision is re-published this often (freshness for gateways, history)
# Holds that expired unsettled are remembered this long (and at most this many per budget), so usage arriving after
# the TTL logs the hold `settled` with its real amount: the rebuild after a broker loss then holds that amount again
# if the priced event went with the broker (rebuild.carried_holds). The same span as the rebuild's grace.
EXPIRED_MEMORY = timedelta(seconds=900)
EXPIRED_MEMORY_MAX = 100_000


def _now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class Outcome:
    alerts: list[dict[str, Any]] = field(default_factory=list)
    enforcement: list[tuple[str, dict[str, Any] | None]] = field(default_factory=list)  # (budget, record|None)
    states: list[tuple[str, dict[str, Any] | None]] = field(default_factory=list)  # (budget, state|None)
    # holds settled or expired: tombstones for tokenmeter.budget-holds, written AFTER the states (a settled hold's
    # spend must be stored before its hold disappears, or a crash between would under-count)
    holds: list[Hold] = field(default_factory=list)

    def extend(self, other: "Outcome") -> None:
        self.alerts += other.alerts
        self.enforcement += other.enforcement
        self.states += other.states
        self.holds += other.holds


@dataclass
class _BudgetRuntime:
    budget: Budget
    ledger: BudgetLedger
    applied: dict[str, int] = field(default_factory=dict)
    unpriced: dict[str, int] = field(default_factory=dict)
    incident: str | None = None  # period key of the open incident
    last_published: tuple[Any, ...] | None = None
    last_published_at: float = 0.0
    dirty: bool = False
    holds: dict[str, Hold] = field(default_factory=dict)  # reservation id -> open hold (reservations.py)
    expiry: ExpiryIndex = field(default_factory=ExpiryIndex)  # the open holds by expiry time (every hold put in holds)
    by_request: dict[str, str] = field(default_factory=dict)  # gateway request id -> reservation id
    reservations: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RESERVATION_COUNTS, 0))
    held_total: Decimal | int = 0  # sum of the open holds' amounts (kept, not summed per admission)
    # request id -> hold that expired unsettled lately (insertion order = expiry order), see EXPIRED_MEMORY. An
    # OrderedDict: forgetting takes the oldest first, and a plain dict finds its first entry by skipping every slot
    # deleted before it, so forgetting m holds in a tick cost O(m^2) (50,000: ~0.5 s of the admitting loop)
    expired_recently: OrderedDict[str, Hold] = field(default_factory=OrderedDict)
    # The seed (seed.py): pending since when (None: the period's spend from before the budget is counted), the event
    # ids applied live meanwhile (the warehouse's copies of them are not added again), whether that set is complete
    # (False after a restore: seed.py re-reads it from budget-spend), when this owner took the budget (the routers'
    # settle time runs from there) and the offsets the loader and this owner must have reached first.
    seed_since: datetime | None = None
    seed_live: set[str] = field(default_factory=set)
    seed_live_complete: bool = True
    seed_taken: float = field(default_factory=time.monotonic)
    seed_target: dict[str, Any] | None = None  # {"priced": {partition: end}, "spend": (partition, end)} (seed.py)
    # A state written before seed32 (no "seed" key): a budget defined mid-period then counted from its definition
    # on, and nothing says whether this one was. Until this moment (the end of the spend counted then: the period,
    # or the rolling window) its spend from before the definition is "unknown"; `budget rebuild` counts it (walk33).
    seed_unknown_until: datetime | None = None
    # The `budget rebuild` this state descends from (its time): the rebuild's counted_ids messages on budget-spend
    # are marked seen by an owner whose spend is that rebuild's total, and by no other (walk33)
    rebuilt_at: str | None = None


class BudgetOwner:
    """Pure (no Kafka): feed it `tokenmeter.budget-spend` messages, get alerts, decisions and state records."""

    def __init__(self, budgets: dict[str, Budget] | None = None, dashboard_url: str = ""):
        self.definitions: dict[str, Budget] = dict(budgets or {})
        self.dashboard_url = dashboard_url
        self.runtimes: dict[str, _BudgetRuntime] = {}
        self.stats = {"entries": 0, "skipped_redelivered": 0, "alerts": 0, "malformed": 0}
        self._superseded: list[Hold] = []  # holds replaced by a retried reservation of the same request

    # Definitions and state ------------------------------------------------------------------------------
    def set_definitions(self, budgets: dict[str, Budget], now: datetime | None = None) -> Outcome:
        """New definitions from the budgets topic. A deleted budget's state is tombstoned; a raised limit that
        puts spend back under it resolves the open incident."""
        out = Outcome()
        self.definitions = dict(budgets)
        for name in list(self.runtimes):
            rt = self.runtimes[name]
            new = budgets.get(name)
            if new is None:
                if rt.incident:  # its state goes: nothing else would ever close its incident
                    out.alerts.append(self._resolve(rt, "the budget was deleted", now))
                del self.runtimes[name]
                out.states.append((name, None))
                out.enforcement.append((name, None))
                continue
            if new == rt.budget:
                continue
            old, rt.budget = rt.budget, new
            rt.ledger.set_budgets([new])  # keeps spend if what is counted is unchanged; re-arms thresholds
            if any(getattr(old, f) != getattr(new, f) for f in ("scope", "metric", "period", "tz")):
                _start_seed(rt, now or _now())  # spend started again from nothing: the warehouse has the period's
            rt.dirty = True
            rt.last_published = None
            if rt.incident and new.limit > old.limit:
                spend, _, _, key = rt.ledger.current_spend(new, now or _now())
                if spend < new.limit:
                    out.alerts.append(self._resolve(rt, f"limit raised to {money(new.limit)}", now))
            out.extend(self._publish(rt, now or _now(), force=True))
        return out

    def restore(self, name: str, state: dict[str, Any] | None, holds: list[dict[str, Any]] | None = None) -> None:
        """Load a budget's state (from the state topic, or a warehouse rebuild) and its open holds (records of
        `tokenmeter.budget-holds`); None starts it empty."""
        budget = self.definitions.get(name)
        if budget is None:
            return
        rt = _BudgetRuntime(budget, BudgetLedger([budget], max_seen_ids=100_000))
        if state and state.get("version") == STATE_VERSION:
            # The state was written under the definition it stores; if that changed meanwhile, the ledger's own
            # rule applies (spend kept when scope, metric, period and zone are unchanged; thresholds re-armed).
            try:
                written_under = parse_budget(state["definition"])
            except (BudgetError, KeyError, TypeError):
                written_under = budget
            rt.ledger = BudgetLedger([written_under], max_seen_ids=100_000)
            rt.ledger.restore(state["ledger"])
            rt.ledger.set_budgets([budget])
            rt.applied = {str(k): int(v) for k, v in state.get("applied", {}).items()}
            rt.unpriced = {str(k): int(v) for k, v in state.get("unpriced", {}).items()}
            rt.incident = state.get("incident")
            rebuilt_at = state.get("rebuilt_at")
            rt.rebuilt_at = rebuilt_at if isinstance(rebuilt_at, str) else None
            seed = state.get("seed")
            if any(getattr(written_under, f) != getattr(budget, f) for f in ("scope", "metric", "period", "tz")):
                _start_seed(rt, _now())  # counted differently since: spend starts again from the warehouse's
            elif isinstance(seed, dict) and seed.get("since"):
                _start_seed(rt, _ts(seed["since"]))
                rt.seed_live_complete = False  # the live ids went with the process: seed.py reads them again
            elif "seed" not in state:
                rt.seed_unknown_until = _counted_until(budget, _now())
            elif isinstance(seed, dict) and seed.get("unknown_until"):
                rt.seed_unknown_until = _ts(seed["unknown_until"])
            counts = state.get("reservations") or {}
            rt.reservations.update({k: int(counts[k]) for k in RESERVATION_COUNTS if isinstance(counts.get(k), int)})
        else:  # no state: a budget new to the state topic counts its period's spend from before it (seed.py)
            _start_seed(rt, _now())
        for record in holds or ():
            hold = hold_from_json(record)
            if hold is not None and hold.budget == name:
                if hold.reservation_id not in rt.holds:
                    rt.held_total += hold.amount
                rt.holds[hold.reservation_id] = hold
                rt.expiry.add(hold, rt.holds)
                rt.by_request[hold.request_id] = hold.reservation_id
        self.runtimes[name] = rt

    def settle_counted(self, name: str, entries: list[list[Any]]) -> list[Hold]:
        """Restored holds whose usage the restored spend already counts (an entry at or below the applied mark that
        carries the hold's request id): settled now, returned for their tombstones. Such a hold is on the topic
        without its tombstone when the owner died between storing the settled spend and the tombstone, or when a
        hold record landed after the owner that committed its usage had read the topic; restored as open, it would
        hold its worst case again on top of the real cost until its TTL. Counted as settled here: the state stored
        with the spend was taken before its batch settled anything (process), so it does not count it yet."""
        rt = self.runtimes.get(name)
        dropped: list[Hold] = []
        if rt is None or not rt.by_request:
            return dropped
        amounts: dict[str, Any] = {}
        # not counted yet: such an entry's batch settles its hold when it is applied (process)
        _add_amounts(amounts, [e for e in entries if int(e[1]) <= rt.applied.get(str(e[0]), -1)])
        for request_id, amount in amounts.items():
            reservation_id = rt.by_request.get(request_id)
            if reservation_id is not None:
                dropped.append(self._drop_hold(rt, reservation_id, "settled", amount))
        return dropped

    def remember(self, name: str, entries: list[list[Any]]) -> int:
        """Mark entries' event ids as seen (they are already in the restored spend); returns how many."""
        rt = self.runtimes.get(name)
        if rt is None:
            return 0
        for entry in entries:
            rt.ledger.mark_seen(name, entry[2])
            if rt.seed_since is not None:
                rt.seed_live.add(entry[2])
        return len(entries)

    def remember_ids(self, name: str, event_ids: list[str]) -> int:
        """Mark event ids counted by a seed (seed.py) as seen, as `remember` does entries'."""
        rt = self.runtimes.get(name)
        for event_id in event_ids if rt is not None else ():
            rt.ledger.mark_seen(name, event_id)
        return len(event_ids) if rt is not None else 0

    def rebuild(self, name: str, now: datetime, fired: dict[str, set[str]], period_total: Any = 0,
                hour_totals: dict[str, Any] | None = None,
                burn: dict[datetime, Any] | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """A budget's state rebuilt from warehouse totals (`tokenmeter budget rebuild`): the current period's exact
        spend (`period_total`; a rolling budget: `hour_totals` by hour key) and its spend per minute of the hour
        before `now` (`burn`, the forecast's rate), `fired` thresholds per period key (alerts already recorded).
        Returns the state record and the alerts reached but never sent."""
        self.restore(name, None)
        rt = self.runtimes[name]
        rt.seed_since = None  # the warehouse totals are the whole period's spend
        rt.rebuilt_at = iso(now)
        if rt.budget.rolling_hours is not None:
            every = {t for keys in fired.values() for t in keys}
            crossings = rt.ledger.restore_rolling(name, hour_totals or {}, every, now)
        else:
            key = period_window(rt.budget, now)[2]
            crossings = rt.ledger.restore_calendar(name, key, period_total, fired.get(key, set()), at=now,
                                                   burn=burn)
            rt.incident = key if fired.get(key, set()) - {"forecast"} else None
        alerts = [self.alert_for(rt, crossing) for crossing in crossings]  # reached, never alerted: alert now
        return self.state_of(rt), alerts

    def republish(self, name: str, now: datetime | None = None) -> Outcome:
        """The budget's decision as its state says now, published whether or not it changed (after a restore)."""
        rt = self.runtimes.get(name)
        return self._publish(rt, now or _now(), force=True) if rt is not None else Outcome()

    def applied_offset(self, name: str, partition: Any) -> int:
        """Highest usage offset applied for `partition` (-1: none), for the budget's restored state."""
        rt = self.runtimes.get(name)
        return rt.applied.get(str(partition), -1) if rt is not None else -1

    def has(self, name: str) -> bool:
        return name in self.runtimes

    def forget_all(self) -> None:
        """After a rebalance: another worker may have advanced a budget we owned; reload it from the topic."""
        self.runtimes.clear()

    def state_of(self, rt: _BudgetRuntime) -> dict[str, Any]:
        return {
            "version": STATE_VERSION, "budget": rt.budget.name, "definition": rt.budget.to_json(),
            "ledger": rt.ledger.snapshot(include_seen=False), "applied": rt.applied, "unpriced": rt.unpriced,
            "incident": rt.incident, "reservations": dict(rt.reservations), "updated_at": iso(_now()),
            **({"rebuilt_at": rt.rebuilt_at} if rt.rebuilt_at else {}),
            "seed": {"since": iso(rt.seed_since)} if rt.seed_since is not None else
                    {"unknown_until": iso(rt.seed_unknown_until)} if rt.seed_unknown_until is not None else None,
        }

    # Seed: the period's spend from before the budget existed (seed.py) ------------------------------------------
    def seeds_pending(self) -> list[str]:
        return [name for name, rt in self.runtimes.items() if rt.seed_since is not None]

    def seed_window(self, name: str, now: datetime) -> tuple[datetime, datetime]:
        """[start, end) of the spend the seed takes from the warehouse: the current calendar period, or the hours
        of the rolling window (and the hour before it, as `budget rebuild` takes them)."""
        budget = self.runtimes[name].budget
        if budget.rolling_hours is not None:
            end = hour_floor(now) + HOUR
            return end - (budget.rolling_hours + 1) * HOUR, end
        start, end, _ = period_window(budget, now)
        return start, end

    def complete_seed(self, name: str, stored: dict[datetime, Any], stored_live: dict[datetime, Any],
                      newest_ids: list[str], now: datetime | None = None) -> Outcome:
        """Add the warehouse's spend of the seed window (`stored`, per UTC hour) less its copies of the events this
        owner counted live (`stored_live`, the same query restricted to `seed_live`), so each event counts once
        whether it reached the warehouse before or after; remember `newest_ids` (the window's most recently loaded
        ids) as counted, so a resend of them, or a routed entry applied after its row was loaded, is not counted
        again. Thresholds passed by then alert once, as "defined at N %" (ledger.add_seed)."""
        now = now or _now()
        out = Outcome()
        rt = self.runtimes[name]
        budget = rt.budget
        amounts: dict[str, Any] = {}
        for hour, amount in stored.items():
            key = hour_key(hour) if budget.rolling_hours is not None else period_window(budget, now)[2]
            amounts[key] = amounts.get(key, 0) + amount - stored_live.get(hour, 0)
        if budget.metric == "tokens":
            amounts = {k: int(v) for k, v in amounts.items()}
        for event_id in reversed(newest_ids):  # oldest first: the newest stay longest in the ledger's window
            rt.ledger.mark_seen(name, event_id)
        crossing, passed = rt.ledger.add_seed(name, amounts, now)
        rt.seed_since, rt.seed_live, rt.seed_target = None, set(), None
        rt.dirty = True
        if crossing is not None:
            out.alerts.append(self._seeded_alert(rt, crossing, passed))
        out.extend(self._publish(rt, now, force=True))
        self.stats["alerts"] += len(out.alerts)
        log.info("budget %r: %s of its period's spend from before it counted from the warehouse (%d event ids "
                 "remembered)", name, money(sum(amounts.values(), 0)), len(newest_ids))
        return out

    def _seeded_alert(self, rt: _BudgetRuntime, crossing: Crossing, passed: list[int]) -> dict[str, Any]:
        """The one alert for thresholds passed before the budget existed: the highest threshold's id (a restart's
        rebuild knows it fired), the others listed in `passed_thresholds` (rebuild marks them fired too)."""
        alert = self.alert_for(rt, crossing)
        budget = rt.budget
        unit = "USD" if budget.metric == "cost_usd" else "tokens"
        spend, limit = human_amount(crossing.spend), human_amount(crossing.limit)
        listed = ", ".join(f"{t} %" for t in passed)
        alert["title"] = (f"Budget {budget.name} ({scope_label(budget.scope)}) was defined at {crossing.percent}%: "
                          f"{spend} of {limit} {unit}")
        consequence = {"block": " Requests in this scope are blocked until the period ends.",
                       "throttle": " Requests in this scope are throttled until the period ends."}
        alert["summary"] = (f"When the budget was defined, spend in {period_name(crossing.period_key, crossing.at)} "
                            f"was already {spend} {unit}, {crossing.percent}% of the limit {limit} {unit}: the "
                            f"threshold{'s' if len(passed) > 1 else ''} {listed} passed before it existed (this one "
                            "alert stands for them)." + (consequence.get(crossing.action, "")
                                                         if (crossing.threshold or 0) >= 100 else ""))
        alert["details"] = {**alert["details"], "passed_thresholds": passed, "defined_at_percent":
                            format(crossing.percent, "f")}
        return alert

    # Feeding ----------------------------------------------------------------------------------------------
    def process(self, messages: list[dict[str, Any]], now: datetime | None = None) -> Outcome:
        """Apply a batch of budget-spend messages (decoded JSON) in order. Budgets must be restored first
        (`has`/`restore`); messages for budgets not (or no longer) defined are dropped."""
        now = now or _now()
        by_budget: dict[str, list[list[Any]]] = {}
        pending: dict[str, set[str]] = {}  # ids of fresh entries of this batch, applied after the loop
        settling: dict[str, dict[str, Any]] = {}  # budget -> request id -> real amount of this batch's usage
        for message in messages:
            name = message.get("budget")
            if not isinstance(name, str) or name not in self.runtimes:
                continue
            counted = message.get("counted_ids")
            if isinstance(counted, list) and _counted_by_its_rebuild(self.runtimes[name], message):
                # ids `budget rebuild` counted from the warehouse (rebuild.py): a re-send of one must not count
                # again. An owner restored from that rebuild meets them here, after its committed offset (a seed's
                # owner marked its own; a restored owner reads both back from history). Only the rebuild's own
                # state's owner: one that counted live meanwhile may not have applied an id's entry yet (walk33)
                for event_id in counted:
                    if isinstance(event_id, str):
                        self.runtimes[name].ledger.mark_seen(name, event_id)
            if not _well_formed(message.get("entries")):  # anyone can write to the topic: never crash on it
                self.stats["malformed"] += 1
                log.warning("malformed budget-spend message for budget %r skipped", name)
                continue
            rt = self.runtimes[name]
            fresh = by_budget.setdefault(name, [])
            ids = pending.setdefault(name, set())
            # Marks advance after each message, so a re-send later in this batch is skipped too. A usage record's
            # entries never span two messages (see routing.spend_messages), so equal offsets mean "already applied".
            marks: dict[str, int] = {}
            if rt.by_request or rt.expired_recently:
                _add_amounts(settling.setdefault(name, {}), message["entries"])
            for entry in message.get("entries", []):
                partition, offset = str(entry[0]), int(entry[1])
                if offset <= rt.applied.get(partition, -1):
                    self.stats["skipped_redelivered"] += 1
                    # Counted already: a replay of its id (a new usage record) must not count. Unless its first
                    # copy is in this very batch, not applied yet: marking it now would hide that copy too.
                    if entry[2] not in ids:
                        rt.ledger.mark_seen(name, entry[2])
                    continue
                fresh.append(entry)
                ids.add(entry[2])
                marks[partition] = max(offset, marks.get(partition, -1))
            rt.applied.update(marks)
        out = Outcome()
        for name, entries in by_budget.items():
            if entries:
                out.extend(self._apply(self.runtimes[name], entries, now))
        for name, request_ids in settling.items():  # the real cost is in spend now: the worst case is let go
            rt = self.runtimes[name]
            for request_id, amount in request_ids.items():
                reservation_id = rt.by_request.get(request_id)
                if reservation_id is not None:
                    out.holds.append(self._drop_hold(rt, reservation_id, "settled", amount))
                elif request_id in rt.expired_recently:  # came after the TTL: logged, spend counted as above
                    late = rt.expired_recently.pop(request_id)
                    out.holds.append(replace(late, ended="settled", settled_amount=amount))
        return out

    # Reservations (holds) ---------------------------------------------------------------------------------
    def _drop_hold(self, rt: _BudgetRuntime, reservation_id: str, why: str, settled_amount: Any = None,
                   counted_as: str | None = None) -> Hold:
        hold = rt.holds.pop(reservation_id)
        rt.held_total -= hold.amount
        if rt.by_request.get(hold.request_id) == reservation_id:
            del rt.by_request[hold.request_id]
        rt.reservations[counted_as or why] += 1
        return replace(hold, ended=why, settled_amount=settled_amount)

    def _earlier_hold(self, rt: _BudgetRuntime, request_id: str, reservation_id: str) -> Hold | None:
        """The open hold another reservation of the same gateway request placed on this budget (a retried reserve
        call whose first answer the gateway never saw): the request is one call, so it is held once."""
        earlier = rt.by_request.get(request_id)
        return rt.holds.get(earlier) if earlier is not None and earlier != reservation_id else None

    def superseded_holds(self) -> list[Hold]:
        """The holds the last admissions replaced (released: the caller logs and tombstones them), handed out once."""
        out, self._superseded = self._superseded, []
        return out

    def held(self, name: str) -> Decimal | int:
        rt = self.runtimes[name]
        return rt.held_total if rt.holds else (0 if rt.budget.metric == "tokens" else Decimal(0))

    def headroom(self, name: str, now: datetime | None = None) -> dict[str, Any]:
        """Committed spend, held by open reservations and what is left, for the API and the dashboard."""
        rt = self.runtimes[name]
        spend, _start, end, key = rt.ledger.current_spend(rt.budget, now or _now())
        held = self.held(name)
        return {"budget": name, "metric": rt.budget.metric, "limit": money(rt.budget.limit), "committed": money(spend),
                "held": money(held), "headroom": money(rt.budget.limit - spend - held), "period_key": key,
                "period_end": iso(end), "open_reservations": len(rt.holds),
                "carried": sum(1 for h in rt.holds.values() if h.carried), **rt.reservations}

    def admit(self, wanted: dict[str, Decimal | int], reservation_id: str, request_id: str, expires_at: datetime,
              now: datetime | None = None) -> tuple[list[Hold], dict[str, Any] | None]:
        """Hold `wanted[budget]` on every budget, all or none: committed spend + open holds + this amount must stay
        within the limit of each enforcing (block / throttle) budget; alert-only budgets hold but never refuse.
        Returns the holds placed, or ([], the refusal body shaped like /v1/decision's)."""
        now = now or _now()
        refusal: dict[str, Any] | None = None
        for name in sorted(wanted):
            rt = self.runtimes[name]
            budget = rt.budget
            if budget.action == "alert":
                continue
            spend, _start, end, key = rt.ledger.current_spend(budget, now)
            held = self.held(name)
            earlier = self._earlier_hold(rt, request_id, reservation_id)
            if earlier is not None:  # replaced by this admission, so not counted against it
                held -= earlier.amount
            if spend + held + wanted[name] <= budget.limit:
                continue
            headroom = budget.limit - spend - held
            unit = "USD" if budget.metric == "cost_usd" else "tokens"
            # Nothing that comes back before the period ends makes room: holds settle into committed spend, which
            # only grows within a calendar period, so a call that does not fit beside the committed spend alone
            # never will (walk36: it was told retry_after_s 1 for the rest of the day). A rolling window frees
            # spend as it slides: only a spent-out one is said so.
            spent_out = (spend >= budget.limit if budget.rolling_hours is not None
                         else spend + wanted[name] > budget.limit)
            reason = (f"budget {name!r}: committed {human_amount(spend)} + held {human_amount(held)} + this call's "
                      f"worst case {human_amount(wanted[name])} exceeds the limit {human_amount(budget.limit)} {unit} "
                      f"for {period_name(key, now)}")
            if wanted[name] > budget.limit:  # the way out is the request's bound, not waiting
                reason += ("; the worst case alone is above the limit: a smaller max_output_tokens (or prompt) "
                           "would fit")
            candidate = {"action": budget.action, "reason": reason, "budget": name,
                         "until": iso(end) if spent_out else None,
                         "retry_after_s": max(1, int((end - now).total_seconds())) if spent_out else 1,
                         "spend": money(spend), "limit": money(budget.limit), "metric": budget.metric,
                         "held": money(held), "headroom": money(headroom), "worst_case": money(wanted[name])}
            if refusal is None or (refusal["action"] == "throttle" and budget.action == "block"):
                refusal = candidate
        if refusal is not None:
            for name in wanted:
                self.runtimes[name].reservations["refused"] += 1
            return [], refusal
        placed = []
        for name, amount in wanted.items():
            rt = self.runtimes[name]
            hold = Hold(reservation_id, name, request_id, amount, now, expires_at)
            earlier = self._earlier_hold(rt, request_id, reservation_id)
            if earlier is not None:
                self._superseded.append(self._drop_hold(rt, earlier.reservation_id, "released", counted_as="superseded"))
            if reservation_id in rt.holds:  # the same reservation asked twice (a retried forward): held once
                rt.held_total -= rt.holds[reservation_id].amount
            rt.held_total += amount
            rt.holds[reservation_id] = hold
            rt.expiry.add(hold, rt.holds)
            rt.by_request[request_id] = reservation_id
            rt.reservations["admitted"] += 1
            placed.append(hold)
        return placed, None

    def release(self, reservation_id: str, why: str = "released") -> list[Hold]:
        """Drop a reservation's holds on the budgets of this owner (DELETE, or a refusal elsewhere)."""
        return [self._drop_hold(rt, reservation_id, why) for rt in self.runtimes.values()
                if reservation_id in rt.holds]

    def holds_of(self, reservation_id: str) -> list[Hold]:
        return [rt.holds[reservation_id] for rt in self.runtimes.values() if reservation_id in rt.holds]

    def expire(self, now: datetime | None = None) -> Outcome:
        """Holds past their expiry (no usage came to settle them): dropped, counted, persisted."""
        now = now or _now()
        out = Outcome()
        for rt in self.runtimes.values():
            for reservation_id in rt.expiry.due(rt.holds, now):  # not a scan of every open hold (expiry.py)
                hold = self._drop_hold(rt, reservation_id, "expired")
                out.holds.append(hold)
                rt.expired_recently.pop(hold.request_id, None)  # re-inserted: the dict stays in expiry order
                rt.expired_recently[hold.request_id] = hold
                rt.dirty = True
            _forget_expired(rt.expired_recently, now)
        return out

    def _apply(self, rt: _BudgetRuntime, entries: list[list[Any]], now: datetime) -> Outcome:
        out = Outcome()
        budget = rt.budget
        self.stats["entries"] += len(entries)
        items = []
        for _partition, _offset, event_id, ts, amount, unpriced, *_request_id in entries:
            items.append((event_id, ts, amount if isinstance(amount, int) else Decimal(amount)))
            if unpriced:
                key = _period_key(budget, ts)
                rt.unpriced[key] = rt.unpriced.get(key, 0) + 1
        # forecasts at the owner's clock, the `now` its enforcement record below is computed at: the alert and the
        # record give one projection (forecast36)
        crossings = rt.ledger.apply_amounts(budget.name, items, now=now)
        if rt.seed_since is not None:  # counted live: the seed leaves the warehouse's copies of these out
            rt.seed_live.update(item[0] for item in items if item[0] is not None)
        current_key = _period_key(budget, now)
        if rt.incident and rt.incident != current_key and budget.rolling_hours is None:
            out.alerts.append(self._resolve(rt, "a new budget period started", now))
        for crossing in crossings:
            out.alerts.append(self.alert_for(rt, crossing))
        rt.dirty = True
        out.extend(self._publish(rt, now, force=bool(crossings)))
        self.stats["alerts"] += len(out.alerts)
        return out

    def tick(self, now: datetime | None = None) -> Outcome:
        """Time passing without events: decisions whose `until` passed, new periods, periodic re-publish."""
        now = now or _now()
        out = Outcome()
        out.extend(self.expire(now))
        for rt in self.runtimes.values():
            if rt.incident and rt.budget.rolling_hours is None and rt.incident != _period_key(rt.budget, now):
                out.alerts.append(self._resolve(rt, "a new budget period started", now))
                rt.dirty = True
            elif rt.incident and rt.budget.rolling_hours is not None:
                out.alerts.extend(self._rolling_window_moved(rt, now))
            out.extend(self._publish(rt, now))
        return out

    # Records ----------------------------------------------------------------------------------------------
    def enforcement_record(self, rt: _BudgetRuntime, now: datetime) -> dict[str, Any]:
        budget = rt.budget
        decision = rt.ledger.decision(dict(budget.scope), at=now)
        spend, start, end, key = rt.ledger.current_spend(budget, now)
        limit = budget.limit
        held = self.held(budget.name)
        percent = (Decimal(spend) * 100 / Decimal(limit)).quantize(Decimal("0.01")) if limit else Decimal(0)
        # the projection whether or not it reaches the limit (the Budgets page shows it), a breach time only if so:
        # the forecast alert's own definition (ledger.forecast) at the same clock
        found = None if budget.rolling_hours is not None else rt.ledger.forecast(budget, key, spend, start, end, now)
        projected = None if found is None else found.projected
        expected = None if found is None else found.expected_breach_at
        action = decision.decision if decision.budget == budget.name else "allow"
        return {
            "budget": budget.name, "scope": dict(budget.scope), "action": action,
            "reason": decision.reason if action != "allow" else f"budget {budget.name!r} within its limit",
            "until": iso(decision.until) if action != "allow" else None,
            "metric": budget.metric, "spend": money(spend), "limit": money(limit), "percent": format(percent, "f"),
            "period_key": key, "period_start": iso(start), "period_end": iso(end),
            "projected": money(projected), "expected_breach_at": iso(expected),
            "unpriced_events": rt.unpriced.get(key, 0), "budget_action": budget.action, "updated_at": iso(now),
            # reservations (issue 15): held by open holds, what is left, holds that expired unsettled
            "held": money(held), "headroom": money(limit - spend - held), "open_reservations": len(rt.holds),
            "reservations_expired": rt.reservations["expired"],
            # the period's spend from before the budget existed: "pending" until taken from the warehouse (seed.py),
            # "unknown" for a state from before seed32 until its period ends or `budget rebuild --all` counts it
            "spend_before_definition": "pending" if rt.seed_since is not None else
                                       "unknown" if rt.seed_unknown_until is not None and now < rt.seed_unknown_until
                                       else "counted",
        }

    def _publish(self, rt: _BudgetRuntime, now: datetime, force: bool = False) -> Outcome:
        out = Outcome()
        record = self.enforcement_record(rt, now)
        held_percent = (Decimal(record["held"]) * 100 / Decimal(rt.budget.limit)).to_integral()  # limits are > 0
        signature = (record["action"], record["until"], record["period_key"], Decimal(record["percent"]).to_integral(),
                     held_percent, record["reservations_expired"], record["spend_before_definition"])
        stale = now.timestamp() - rt.last_published_at >= REPUBLISH_SECONDS
        if force or signature != rt.last_published or stale:
            out.enforcement.append((rt.budget.name, record))
            rt.last_published, rt.last_published_at = signature, now.timestamp()
        if rt.dirty:
            out.states.append((rt.budget.name, self.state_of(rt)))
            rt.dirty = False
        return out

    def _dedup_key(self, budget: Budget, period_key: str) -> str:
        return f"tokenmeter:budget:{budget.name}:{period_key}"

    def _link(self, budget: Budget) -> str:
        return f"{self.dashboard_url.rstrip('/')}/budgets?budget={budget.name}" if self.dashboard_url else ""

    def alert_for(self, rt: _BudgetRuntime, crossing: Crossing) -> dict[str, Any]:
        budget = rt.budget
        unit = "USD" if budget.metric == "cost_usd" else "tokens"
        scope = scope_label(budget.scope)
        spend, limit = human_amount(crossing.spend), human_amount(crossing.limit)
        unpriced = rt.unpriced.get(crossing.period_key, 0)
        if crossing.kind == "forecast":
            severity = "warning"
            title = f"Budget {budget.name} ({scope}) is forecast to exceed {limit} {unit}"
            summary = (f"At the current burn rate, spend reaches the limit of {limit} {unit} around "
                       f"{people_utc(crossing.expected_breach_at)} (projected {human_amount(crossing.projected)} {unit} "
                       f"by {people_utc(crossing.period_end)}). Spent so far: {spend} {unit} ({crossing.percent}%).")
        else:
            threshold = crossing.threshold or 0
            severity = "critical" if threshold >= 100 else "error" if threshold >= 80 else "warning"
            title = f"Budget {budget.name} ({scope}) reached {threshold}%: {spend} of {limit} {unit}"
            consequence = {"block": "Requests in this scope are now blocked until the period ends.",
                           "throttle": "Requests in this scope are now throttled until the period ends."}
            summary = (f"Spend in {period_name(crossing.period_key, crossing.at)} is {spend} {unit}, {crossing.percent}% of the limit "
                       f"{limit} {unit}. " + (consequence.get(crossing.action, "") if threshold >= 100 else ""))
        if unpriced:
            summary += (f" {count_of(unpriced, 'event')} in this scope could not be priced (unknown model) and "
                        f"{'is' if unpriced == 1 else 'are'} not in spend.")
        # A rolling budget's thresholds fire in different hours' windows: the first one's key names the incident
        # until it is resolved, so PagerDuty updates one incident (a calendar period is its own incident).
        rolling_open = budget.rolling_hours is not None and rt.incident
        rt.incident = rt.incident if rolling_open else crossing.period_key
        details = crossing.to_json() | {"budget_action": budget.action, "unpriced_events": unpriced}
        return alert_record(
            id=crossing.id, source="budget", kind=crossing.kind, action="trigger", severity=severity,
            dedup_key=self._dedup_key(budget, rt.incident), title=title, summary=summary.strip(),
            at=crossing.at, scope=dict(budget.scope), notify=list(budget.notify), details=details,
            dashboard_url=self._link(budget),
        )

    def _rolling_window_moved(self, rt: _BudgetRuntime, now: datetime) -> list[dict[str, Any]]:
        """A rolling budget's window at `now`: thresholds its spend left are re-armed (the ledger); once it is below
        every threshold, the open incident is resolved (with no traffic, only time moves the window)."""
        before = dict(rt.ledger.latched.get(rt.budget.name, {}))
        alerts = [self.alert_for(rt, c) for c in rt.ledger.evaluate_rolling_at(rt.budget.name, now)]
        if not rt.ledger.latched.get(rt.budget.name):
            alerts.append(self._resolve(rt, f"spend in the last {rt.budget.period.split(':')[1]} fell below every "
                                            "threshold", now))
        if alerts or before != rt.ledger.latched.get(rt.budget.name, {}):
            rt.dirty = True  # the re-armed thresholds are state too
        return alerts

    def _resolve(self, rt: _BudgetRuntime, why: str, now: datetime | None) -> dict[str, Any]:
        budget, period_key = rt.budget, rt.incident or ""
        rt.incident = None
        rt.dirty = True
        now = now or _now()
        alert_id = hashlib.sha256(f"{budget.name}|{period_key}|resolve|{money(budget.limit)}".encode()).hexdigest()
        return alert_record(
            id=alert_id, source="budget", kind="resolve", action="resolve", severity="info",
            dedup_key=self._dedup_key(budget, period_key),
            title=f"Budget {budget.name} ({scope_label(budget.scope)}): resolved, {why}",
            summary=f"The alerts of {period_name(period_key, now)} for budget {budget.name} are resolved: {why}.",
            at=now, scope=dict(budget.scope), notify=list(budget.notify),
            details={"budget": budget.name, "period_key": period_key, "reason": why, "limit": money(budget.limit)},
            dashboard_url=self._link(budget),
        )


def _start_seed(rt: _BudgetRuntime, since: datetime) -> None:
    rt.seed_since, rt.seed_live, rt.seed_live_complete, rt.seed_unknown_until = since, set(), True, None
    rt.seed_taken, rt.seed_target = time.monotonic(), None


def _counted_by_its_rebuild(rt: _BudgetRuntime, message: dict[str, Any]) -> bool:
    """Whether a budget-spend message's counted ids are those of the rebuild `rt`'s state descends from."""
    return rt.rebuilt_at is not None and message.get("rebuilt_at") == rt.rebuilt_at


def _counted_until(budget: Budget, now: datetime) -> datetime:
    """When the spend a budget counts at `now` holds nothing from before `now`: its period's end, or for a rolling
    budget the end of the window that starts after the current hour."""
    if budget.rolling_hours is not None:
        return hour_floor(now) + (budget.rolling_hours + 1) * HOUR
    return period_window(budget, now)[1]


def _well_formed(entries: Any) -> bool:
    """[[usage partition, usage offset, event_id, ts, amount, unpriced(, request id)], ...] as routing.py writes
    them."""
    if not isinstance(entries, list):
        return False
    for entry in entries:
        if not (isinstance(entry, list) and len(entry) in (6, 7) and isinstance(entry[1], int)
                and isinstance(entry[2], str) and isinstance(entry[3], str)
                and (len(entry) == 6 or entry[6] is None or isinstance(entry[6], str))):
            return False
        amount = entry[4]
        try:
            _ts(entry[3])
            if not isinstance(amount, int) and not (isinstance(amount, str) and Decimal(amount).is_finite()):
                return False
        except (ValueError, ArithmeticError):
            return False
    return True


def _add_amounts(into: dict[str, Any], entries: list[list[Any]]) -> None:
    """Request id (the entry's event id, and its request_id tag) -> the sum of the entries' amounts: what the
    call's usage committed, for the settled hold's log record. Amounts are tokens (int) or decimal USD text."""
    for entry in entries:
        amount = entry[4] if isinstance(entry[4], int) else Decimal(entry[4])
        for request_id in {entry[2], *entry[6:7]}:
            if request_id:
                into[request_id] = into.get(request_id, 0) + amount


def _forget_expired(expired: OrderedDict[str, Hold], now: datetime) -> None:
    """Drop the oldest remembered expired holds: past EXPIRED_MEMORY after their expiry, or beyond the cap."""
    while expired:
        request_id = next(iter(expired))  # O(1) in an OrderedDict (its linked list), not in a dict (see above)
        if len(expired) <= EXPIRED_MEMORY_MAX and expired[request_id].expires_at + EXPIRED_MEMORY > now:
            return
        del expired[request_id]


def _period_key(budget: Budget, ts: Any) -> str:
    moment = _ts(ts)
    return hour_key(moment) if budget.rolling_hours is not None else period_window(budget, moment)[2]


__all__ = ["BudgetOwner", "Outcome", "window_for_key"]
