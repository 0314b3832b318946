"""Cross-source dedup: one LLM call seen by several sources (a gateway log, an OTel span, an SDK event) is
stored and counted once, and the copy counted is the preferred source's, whatever the arrival order.

Events name the call through `correlation` (tokenmeter.events.Correlation); each id becomes a call key
(tokenmeter.call_keys, which the anomaly detector counts a call once by too):
- `response:<provider>:<response id>`: the provider's id of the response (`chatcmpl-...`, `msg_...`), the
  strongest: unique per call and known to the gateway log, the OTel span (`gen_ai.response.id`) and the SDK;
- `request:<request id>`: a request id the gateway logs and the client sent or received (`x-request-id`);
- `span:<trace id>:<span id>`: the W3C trace context of the client span that made the call (a gateway sees it
  in `traceparent`). A trace id alone names many calls, so it is never a key by itself.

Copies sharing a key (directly, or through a copy holding two keys) are one call. Of a call's copies, the one of
the most preferred source wins (`SourcePreference`, setting `dedup_source_preference`, default: gateway logs,
then OTel spans, then SDK events; unlisted sources after all listed ones; ties: source name, then event_id), so
the winner does not depend on arrival order. The loader (warehouse.store.Warehouse.insert_rows), under its insert
lock, plans each batch (`plan_batch`) against the stored call keys (table `call_keys`, key -> the stored event
that owns it) and the recorded losers (`cross_source_duplicates`):
- a copy that loses is recorded in `cross_source_duplicates` with its winner and not stored;
- a copy that beats a stored event (a better source arriving later, or a copy linking two stored events) is
  stored and the stored loser is *replaced*: recorded with `replaced` = 1, its row deleted and subtracted from every
  rollup by signed deltas (`capture_demoted`, `remove_demoted`; an intent log, `cross_source_demotions_pending`,
  and the re-price's pending-hours marker make that crash-safe; migration 0016). A closed
  month's snapshot does not move: the difference is a correction in the first open month (month close rule).
Every copy not counted keeps its full row in `cross_source_copies` (migration 0018), so a changed preference can
still count it: a recorded loser delivered again that now ranks above its call's winner is *revived* (stored, its
loser record deleted, the winner replaced as above), and `tokenmeter dedup reapply --from <date>` (`reapply`)
re-decides the stored calls by delivering again the kept copies that now outrank their winner. Under an unchanged
preference a recorded loser never outranks its winner, so it stays a loser. Limit: run one loader per warehouse
(two loaders could both store a call's copies).
"""

from __future__ import annotations

import logging
from datetime import datetime
from decimal import Decimal
from typing import Any

import polars as pl

log = logging.getLogger(__name__)


Identity = tuple[str, str]  # (event_id, source): two sources may both use the response id as event_id

# Groups a preference may name instead of listing sources (the collectors' dialect names, tokenmeter.events
# `source`). `demo` is the demo's simulated gateway.
SOURCE_GROUPS = {
    "gateway": ("litellm", "kong", "apisix", "demo"),
    "otel": ("otel",),
    "sdk": ("openai", "anthropic", "gemini"),
}
DEFAULT_PREFERENCE = ("gateway", "otel", "sdk")


class SourcePreference:
    """Which copy of a call is counted: sources (or groups of SOURCE_GROUPS) best first. A gateway log carries
    the provider-reported usage of what was actually billed and the attribution the gateway enforced, an OTel span
    usually the same usage but less attribution, an SDK event what one client saw. Unlisted sources rank after
    every listed one; ties are broken by source name, then event_id, so the winner never depends on arrival."""

    def __init__(self, order: Any = DEFAULT_PREFERENCE):
        ranks: dict[str, int] = {}
        for index, entry in enumerate(order):
            name = str(entry).strip().lower() if entry is not None else ""
            if not name:
                raise ValueError(f"dedup source preference: entry {index} is empty")
            for source in (name, *SOURCE_GROUPS.get(name, ())):  # a source may also be named like a group
                ranks.setdefault(source, index)
        self.order = [str(entry).strip().lower() for entry in order]
        self._ranks = ranks

    def rank(self, identity: Identity) -> tuple[int, str, str]:
        event_id, source = identity
        return self._ranks.get(source.lower(), len(self._ranks) + 1), source, event_id


class BatchPlan:
    """What to do with a batch's correlated rows (see `plan_batch`)."""

    def __init__(self) -> None:
        self.keep: list[dict[str, Any]] = []  # rows to store
        self.losers: dict[Identity, tuple[Identity, str]] = {}  # loser -> (final winner, key it matched by)
        self.demoted: list[Identity] = []  # stored events that lost: to be recorded, deleted and rebuilt
        self.key_owners: dict[str, tuple[Identity, Any]] = {}  # call_keys rows to write: key -> (owner, ts)
        self.rows: dict[Identity, dict[str, Any]] = {}  # the batch's rows by identity
        self.top: Any = None  # identity -> the final winner of its call
        self.stored_rows: dict[Identity, dict[str, Any]] = {}  # the demoted events' stored rows
        self.revived: set[Identity] = set()  # recorded losers counted now: their loser records go


def plan_batch(rows: list[dict[str, Any]], stored: dict[str, Identity], redirects: dict[Identity, Identity],
               preference: SourcePreference, pinned: frozenset[Identity] | set[Identity] = frozenset()) -> BatchPlan:
    """Plan a batch against the warehouse. `stored`: key -> the event that owns it in `call_keys`;
    `redirects`: recorded loser -> its recorded winner (cross_source_duplicates), for every identity involved;
    `pinned`: recorded losers that shared only an event_id with their winner (never revived: no key joins them).
    Rows are taken in order; each joins the calls of the owners of its keys; the best copy of the call wins. A
    recorded loser delivered again that outranks its call's winner under `preference` (the preference changed since
    it lost) is judged like a new copy: it wins, and the winner it beats is replaced."""
    plan = BatchPlan()
    redirects = dict(redirects)  # revived losers are taken out of this copy
    beaten: dict[Identity, Identity] = {}
    matched: dict[Identity, str] = {}

    def recorded_winner(identity: Identity) -> Identity:
        seen = {identity}
        while identity in redirects and redirects[identity] not in seen:
            identity = redirects[identity]
            seen.add(identity)
        return identity

    def top(identity: Identity) -> Identity:
        identity = recorded_winner(identity)
        while identity in beaten:
            identity = recorded_winner(beaten[identity])
        return identity

    owners = dict(stored)
    stored_events = {recorded_winner(owner) for owner in stored.values()}
    key_ts: dict[str, Any] = {}
    for row in rows:
        keys = row.get("call_keys") or []
        me: Identity = (row["event_id"], row["source"])
        plan.rows.setdefault(me, row)
        for key in keys:
            key_ts.setdefault(key, row["ts"])
        if (me in redirects and me not in pinned and top(me) != me
                and preference.rank(me) < preference.rank(top(me))):
            del redirects[me]  # the preference changed since it lost: judged again, as a new copy
            plan.revived.add(me)
        if top(me) != me:  # a recorded loser delivered again stays one (under the preference it lost by)
            winner = top(me)
            beaten.setdefault(me, winner)
            matched.setdefault(me, next((k for k in keys if k in owners and top(owners[k]) == winner),
                                        keys[0] if keys else "event_id"))
            for key in keys:
                owners.setdefault(key, winner)
            continue
        group: dict[Identity, str] = {}
        for key in keys:
            if key in owners and top(owners[key]) != me:
                group.setdefault(top(owners[key]), key)
        best = min([me, *group], key=preference.rank)
        for other, key in group.items():
            if other != best:
                beaten[other], matched[other] = best, key
        if best != me:
            beaten[me], matched[me] = best, group[best]
        for key in keys:
            owners[key] = best
    plan.top = top
    for identity, row in plan.rows.items():
        if identity not in beaten:
            plan.keep.append(row)
    plan.revived -= set(beaten)  # revived, then beaten by a better copy of the batch: recorded again as a loser
    for loser in beaten:
        plan.losers[loser] = (top(loser), matched[loser])
        if loser in stored_events and loser not in redirects:
            plan.demoted.append(loser)
    kept_keys = {(row["event_id"], row["source"]): set(row.get("call_keys") or ()) for row in plan.keep}
    for key in key_ts:
        owner = top(owners[key])
        if key in kept_keys.get(owner, ()):  # written with the row by the view on priced_events
            continue
        if key in stored and stored[key] == owner:
            continue
        plan.key_owners[key] = (owner, key_ts[key])
    return plan


def duplicate_record(row: dict[str, Any], winner_id: str, winner_source: str, key: str,
                     replaced: bool = False) -> dict[str, Any]:
    """A `cross_source_duplicates` row: `row` is not counted because `winner_id` (from `winner_source`) is;
    `replaced`: it had been counted and was taken back when its winner arrived."""
    return {"ts": row["ts"], "duplicate_event_id": row["event_id"], "duplicate_source": row["source"],
            "winner_event_id": winner_id, "winner_source": winner_source, "matched_key": key,
            "provider": row["provider"], "model": row["model"], "duplicate_cost_usd": row["cost_usd"],
            "replaced": int(replaced)}


DUPLICATE_COLUMNS = ("ts", "duplicate_event_id", "duplicate_source", "winner_event_id", "winner_source",
                     "matched_key", "provider", "model", "duplicate_cost_usd", "replaced")


DELTA_TABLE = "cross_source_demotions_delta"  # the loader passes its own (`<staging>_demoted`)


def capture_demoted(backend: Any, delta: str = DELTA_TABLE) -> int:
    """First half of taking back the losers in `cross_source_demotions_pending` (the loader runs it right after
    writing that intent, before storing the winners): hours left pending by an earlier crash are rebuilt (the
    rollups equal the raw table again), the losers' hours are marked in `rollup_rebuild_pending` (from here on a
    crash leaves them to be rebuilt from raw), and the losers' stored rows are copied into the Memory table
    `delta` (sign -1: `warehouse.rollups.signed_rows`, as a re-price's old copies) and kept in
    `cross_source_copies` (a later preference may count them). Captured before the winners are stored, the rows are
    exactly what the rollups counted, even if a merge then folds a loser into its winner (LiteLLM and an SDK both
    use the response id as event_id, so both rows share the raw table's sorting key). Returns the losers listed."""
    from warehouse.reprice import heal_pending_hours
    from warehouse.rollups import signed_rows
    from warehouse.schema import COLUMNS  # here: schema imports this module

    pending = backend.query_arrow("SELECT count() AS n FROM cross_source_demotions_pending").column("n")[0].as_py()
    if not pending:
        return 0
    heal_pending_hours(backend)
    backend.command(f"INSERT INTO rollup_rebuild_pending (hour) {_DEMOTED_HOURS}")
    backend.command(f"DROP TABLE IF EXISTS {delta}")
    losers = (f"{_IN_DEMOTED_HOURS}"
              " AND (event_id, source) IN (SELECT event_id, source FROM cross_source_demotions_pending)")
    backend.command(f"CREATE TABLE {delta} ENGINE = Memory AS {signed_rows('priced_events', losers, -1)}")
    columns = ", ".join(f"`{name}`" for name in COLUMNS)
    backend.command(f"INSERT INTO cross_source_copies ({columns}) SELECT {columns} FROM priced_events"
                    f" WHERE {_IN_DEMOTED_HOURS} AND (event_id, source, ts, loaded_at) IN"
                    f" (SELECT event_id, source, ts, loaded_at FROM {delta})")
    return int(pending)


_DEMOTED_HOURS = "SELECT DISTINCT toDateTime(toStartOfHour(ts), 'UTC') FROM cross_source_demotions_pending"
_IN_DEMOTED_HOURS = f"toDateTime(toStartOfHour(ts), 'UTC') IN ({_DEMOTED_HOURS})"


def remove_demoted(backend: Any, delta: str = DELTA_TABLE, captured: bool = False) -> int:
    """Take the losers in `cross_source_demotions_pending` out of the raw table and out of every rollup, then clear
    the log; idempotent (the caller holds the insert lock, or is opening the warehouse). `captured`: the loader ran
    `capture_demoted` into `delta` before storing the winners; otherwise (a heal on open) it runs here. Returns the
    losers handled.

    The captured rows are deleted from the raw table (exactly those rows) and subtracted from each rollup by one
    `INSERT ... SELECT` of signed deltas for all of them (`warehouse.rollups.delta_statements`, the re-price's): the
    rest of their hours is neither read nor rewritten. Before, each removal rebuilt every rollup of the losers'
    hours from raw (DELETE and re-aggregate: ~1.9 s per call in the dedup tests, most of their time).

    Crash safety is the re-price's: the hours stay marked pending until the deltas are in, so a crash anywhere
    leaves them to be rebuilt from raw on the next open (or capture), whatever part of the DELETE or of the deltas
    was done. A listed loser that was not captured is gone from raw already: a crashed run deleted it (its hours
    were rebuilt since), or, when its winner was stored without a capture first, a merge may have folded it into its
    winner while the rollups count both; if another row of its hours holds its event_id, the hours are rebuilt from
    raw as before."""
    from warehouse.rollups import delete_subtracted, delta_statements, rebuild_statements

    if not captured:
        if not capture_demoted(backend, delta):
            return 0
    try:
        pending = backend.query_arrow("SELECT count() AS n FROM cross_source_demotions_pending").column("n")[0].as_py()
        folded = backend.query_arrow(  # listed losers not captured whose event_id another row of their hours holds
            f"SELECT count() AS n FROM priced_events WHERE {_IN_DEMOTED_HOURS} AND event_id IN"
            " (SELECT event_id FROM cross_source_demotions_pending"
            f"  WHERE (event_id, source) NOT IN (SELECT event_id, source FROM {delta}))").column("n")[0].as_py()
        backend.command(delete_subtracted(delta, _IN_DEMOTED_HOURS))
        for statement in rebuild_statements() if folded else delta_statements(delta):
            backend.command(statement)
        backend.command("TRUNCATE TABLE rollup_rebuild_pending")
        backend.command("TRUNCATE TABLE cross_source_demotions_pending")
    finally:
        backend.command(f"DROP TABLE IF EXISTS {delta}")
    return int(pending)


def duplicates_by_source_pair(wh: Any, since: datetime | None = None, until: datetime | None = None) -> pl.DataFrame:
    """Per (winner source, duplicate source): calls seen twice, and the cost that would have been counted twice."""
    clauses, params = [], {}
    if since is not None:
        clauses.append("ts >= {since:DateTime64(3, 'UTC')}")
        params["since"] = since
    if until is not None:
        clauses.append("ts < {until:DateTime64(3, 'UTC')}")
        params["until"] = until
    where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
    return wh.query(
        "SELECT toString(winner_source) AS winner_source, toString(duplicate_source) AS duplicate_source,"
        " count() AS duplicates, toDecimal128(sum(duplicate_cost_usd), 12) AS duplicate_cost_usd,"
        " countIf(startsWith(matched_key, 'response:')) AS by_response_id,"
        " countIf(startsWith(matched_key, 'request:')) AS by_request_id,"
        " countIf(startsWith(matched_key, 'span:')) AS by_trace,"
        " countIf(replaced = 1) AS replaced"
        f" FROM cross_source_duplicates FINAL {where}"
        " GROUP BY winner_source, duplicate_source ORDER BY duplicates DESC, winner_source, duplicate_source",
        params)


class ReapplyReport:
    """What `reapply` found and did over [since, until): copies that outrank their call's counted copy under the
    current preference (`outranking`), those counted now (`revived`: their winners taken out), those that could not
    be (no kept row: recorded before migration 0018), and the window's events and cost before and after."""

    def __init__(self, preference: list[str], dry_run: bool):
        self.preference, self.dry_run = preference, dry_run
        self.losers = self.outranking = self.revived = self.missing_rows = 0
        self.events_before = self.events_after = 0
        self.cost_before = self.cost_after = Decimal(0)

    def as_dict(self) -> dict[str, Any]:
        return {"preference": self.preference, "dry_run": self.dry_run, "recorded_losers": self.losers,
                "outranking": self.outranking, "revived": self.revived, "missing_rows": self.missing_rows,
                "events_before": self.events_before, "events_after": self.events_after,
                "cost_before_usd": str(self.cost_before), "cost_after_usd": str(self.cost_after)}


def reapply(wh: Any, since: datetime, until: datetime | None = None, *, dry_run: bool = False,
            batch: int = 2000) -> ReapplyReport:
    """Re-decide the calls whose copies were recorded as losers in [since, until) under the warehouse's current
    preference (`Warehouse.source_preference`): each kept copy that now outranks its call's counted copy is
    delivered again (`Warehouse.insert_rows`), where it wins and the counted one is replaced (raw row out, rollups
    of its hours rebuilt; a closed month's difference becomes a correction in the first open month). Idempotent:
    a second run finds nothing to do. Owner only (the loader's warehouse handle, or the warehouse with the loader
    stopped); a dry run reads only, so it also works on a reader (through the loader's query endpoint)."""
    preference: SourcePreference = wh.source_preference
    report = ReapplyReport(preference.order, dry_run)
    window, params = "ts >= {since:DateTime64(3, 'UTC')}", {"since": since}
    if until is not None:
        window += " AND ts < {until:DateTime64(3, 'UTC')}"
        params["until"] = until
    records = wh.query("SELECT duplicate_event_id, duplicate_source, winner_event_id, winner_source, matched_key"
                       f" FROM cross_source_duplicates FINAL WHERE {window}", params).rows()
    report.losers = len(records)
    redirects = {(r[0], r[1]): (r[2], r[3]) for r in records}
    # Winners recorded as losers outside the window (replaced later) lead to the call's counted copy. (A replaced
    # winner's losers are recorded again with the new winner, so one step is enough but for crashed replacements.)
    for r in wh.query("SELECT duplicate_event_id, duplicate_source, winner_event_id, winner_source"
                      " FROM cross_source_duplicates FINAL WHERE (duplicate_event_id, duplicate_source) IN"
                      " (SELECT winner_event_id, winner_source FROM cross_source_duplicates FINAL"
                      f" WHERE {window})", params).rows():
        redirects.setdefault((r[0], r[1]), (r[2], r[3]))
    outside = {winner for winner in redirects.values() if winner not in redirects}
    if outside and wh.backend.writable:
        redirects.update(wh._redirects(outside))

    def top(identity: Identity) -> Identity:
        seen = {identity}
        while identity in redirects and redirects[identity] not in seen:
            identity = redirects[identity]
            seen.add(identity)
        return identity

    tops = {(r[0], r[1]): top((r[0], r[1])) for r in records if r[4] != "event_id"}
    candidates = [loser for loser, winner in tops.items() if preference.rank(loser) < preference.rank(winner)]
    report.outranking = len(candidates)

    def totals() -> tuple[int, Decimal]:
        row = wh.query(f"SELECT count() AS n, sum(cost_usd) AS c FROM priced_events WHERE {window}", params).row(0)
        return int(row[0]), Decimal(row[1] or 0)

    report.events_before, report.cost_before = totals()
    report.events_after, report.cost_after = report.events_before, report.cost_before
    if not candidates:
        return report
    kept = set(wh.query(f"SELECT event_id, source FROM cross_source_copies FINAL WHERE {window}", params).rows())
    report.missing_rows = len([c for c in candidates if c not in kept])
    if report.missing_rows:
        log.warning("dedup reapply: %d outranking copies have no kept row (recorded before migration 0018) and "
                    "stay losers", report.missing_rows)
    if dry_run or report.missing_rows == len(candidates):
        return report
    from warehouse.schema import COLUMNS

    columns = ", ".join(f"`{name}`" for name in COLUMNS)
    rows = wh._with_ids("ids", {"event_id": [c[0] for c in candidates], "source": [c[1] for c in candidates]},
                        f"SELECT {columns} FROM cross_source_copies FINAL"
                        " WHERE (event_id, source) IN (SELECT event_id, source FROM {ids})")
    rows.sort(key=lambda row: tops[(row["event_id"], row["source"])])  # a call's copies in one batch
    for i in range(0, len(rows), batch):
        report.revived += wh.insert_rows(rows[i:i + batch])
    report.events_after, report.cost_after = totals()
    return report
