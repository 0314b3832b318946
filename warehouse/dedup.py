"""Cross-source dedup: one LLM call seen by several sources (a gateway log, an OTel span, an SDK event) is
stored and counted once.

Events name the call through `correlation` (tokenmeter.events.Correlation); each id becomes a call key:
- `response:<provider>:<response id>`: the provider's id of the response (`chatcmpl-...`, `msg_...`), the
  strongest: unique per call and known to the gateway log, the OTel span (`gen_ai.response.id`) and the SDK;
- `request:<request id>`: a request id the gateway logs and the client sent or received (`x-request-id`);
- `span:<trace id>:<span id>`: the W3C trace context of the client span that made the call (a gateway sees it
  in `traceparent`). A trace id alone names many calls, so it is never a key by itself.

The loader (warehouse.store.Warehouse.insert_rows), under its insert lock, stores an event only when none of its
keys belongs to another stored event (table `call_keys`, written by the same INSERT as the row) nor to an
earlier event of the same batch. The first event stored for a call wins; the others are recorded in
`cross_source_duplicates` with the winner. This keeps totals exact under at-least-once delivery: a redelivered
winner is a known event_id, a redelivered duplicate meets the same winner again and is recorded once (the table
is keyed by its event_id). Limit: run one loader per warehouse (two loaders could both store a call's events).
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


def split_duplicates(rows: list[dict[str, Any]], stored: dict[str, tuple[str, str]]
                     ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(rows to store, duplicate records, bridged keys). `stored`: key -> (event_id, source) of events already
    stored. A row whose key belongs to another event (stored, or kept earlier in this batch) is a duplicate of
    it; its other keys are bridged to that winner (a gateway log holding both the request id and the response id
    links an SDK event with the response id to the span with the request id), as `call_keys` rows."""
    owners = dict(stored)
    keep, duplicates, bridged = [], [], []
    for row in rows:
        keys = row.get("call_keys") or []
        mine = (row["event_id"], row["source"])  # a redelivery of a stored event owns its keys already
        winner = next(((key, owners[key]) for key in keys if key in owners and owners[key] != mine), None)
        if winner is None:
            keep.append(row)
            for key in keys:
                owners.setdefault(key, (row["event_id"], row["source"]))
            continue
        key, (winner_id, winner_source) = winner
        duplicates.append(duplicate_record(row, winner_id, winner_source, key))
        for other in keys:
            if other not in owners:
                owners[other] = (winner_id, winner_source)
                bridged.append({"key": other, "event_id": winner_id, "source": winner_source, "ts": row["ts"]})
    return keep, duplicates, bridged


def duplicate_record(row: dict[str, Any], winner_id: str, winner_source: str, key: str) -> dict[str, Any]:
    """A `cross_source_duplicates` row: `row` was not counted because `winner_id` (from `winner_source`) was."""
    return {"ts": row["ts"], "duplicate_event_id": row["event_id"], "duplicate_source": row["source"],
            "winner_event_id": winner_id, "winner_source": winner_source, "matched_key": key,
            "provider": row["provider"], "model": row["model"], "duplicate_cost_usd": row["cost_usd"]}


DUPLICATE_COLUMNS = ("ts", "duplicate_event_id", "duplicate_source", "winner_event_id", "winner_source",
                     "matched_key", "provider", "model", "duplicate_cost_usd")


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
        " countIf(startsWith(matched_key, 'span:')) AS by_trace"
        f" FROM cross_source_duplicates FINAL {where}"
        " GROUP BY winner_source, duplicate_source ORDER BY duplicates DESC, winner_source, duplicate_source",
        params)


