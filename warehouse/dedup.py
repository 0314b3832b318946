"""Cross-source dedup: one LLM call seen by several sources (a gateway log, an OTel span, an SDK event) is
stored and counted once, and the copy counted is the preferred source's, whatever the arrival order.

Events name the call through `correlation` (tokenmeter.events.Correlation); each id becomes a call key:
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
  stored and the stored loser is *replaced*: recorded with `replaced` = 1 and its row deleted, the rollups of its
  hours rebuilt (an intent log, `cross_source_demotions_pending`, makes that crash-safe; migration 0016). A closed
  month's snapshot does not move: the difference is a correction in the first open month (month close rule).
A recorded loser stays a loser when it is delivered again (a preference changed later applies to new copies
only). Limit: run one loader per warehouse (two loaders could both store a call's copies).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import polars as pl


def call_keys(provider: str, correlation: dict[str, str] | None) -> list[str]:
    """The call keys of an event (sorted, no duplicates); [] when it carries no usable correlation id."""
    if not correlation:
        return []
    keys = set()
    response_id = (correlation.get("response_id") or "").strip()
    if response_id:
        keys.add(f"response:{provider.strip().lower()}:{response_id}")
    request_id = (correlation.get("request_id") or "").strip()
    if request_id:
        keys.add(f"request:{request_id.lower()}")
    trace_id, span_id = (correlation.get("trace_id") or "").strip(), (correlation.get("span_id") or "").strip()
    if trace_id and span_id and trace_id.strip("0") and span_id.strip("0"):  # all-zero ids are invalid in W3C
        keys.add(f"span:{trace_id.lower()}:{span_id.lower()}")
    return sorted(keys)


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


def plan_batch(rows: list[dict[str, Any]], stored: dict[str, Identity], redirects: dict[Identity, Identity],
               preference: SourcePreference) -> BatchPlan:
    """Plan a batch against the warehouse. `stored`: key -> the event that owns it in `call_keys`;
    `redirects`: recorded loser -> its recorded winner (cross_source_duplicates), for every identity involved.
    Rows are taken in order; each joins the calls of the owners of its keys; the best copy of the call wins."""
    plan = BatchPlan()
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
        if top(me) != me:  # a recorded loser delivered again stays one
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


def remove_demoted(backend: Any) -> int:
    """Take the losers in `cross_source_demotions_pending` out of the raw table and rebuild the rollups of their
    hours, then clear the log; idempotent (the caller holds the insert lock, or is opening the warehouse).
    Returns the losers handled."""
    from warehouse.reprice import heal_pending_hours

    pending = backend.query_arrow("SELECT count() AS n FROM cross_source_demotions_pending").column("n")[0].as_py()
    if not pending:
        return 0
    hours = "SELECT DISTINCT toDateTime(toStartOfHour(ts), 'UTC') FROM cross_source_demotions_pending"
    backend.command(f"INSERT INTO rollup_rebuild_pending (hour) {hours}")
    backend.command(
        f"DELETE FROM priced_events WHERE toDateTime(toStartOfHour(ts), 'UTC') IN ({hours})"
        " AND (event_id, source) IN (SELECT event_id, source FROM cross_source_demotions_pending)")
    heal_pending_hours(backend)
    backend.command("TRUNCATE TABLE cross_source_demotions_pending")
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


