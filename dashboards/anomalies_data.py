"""Anomalies (latest record per id) with their acknowledgement state, and the observed series of one scope.

A team user sees anomalies whose scope is their team only (scope_dim = 'team').
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import polars as pl

from dashboards.tables import TableMissing, dec, run, utc
from tokenmeter.measures import ANOMALY_BUCKET_SECONDS

ANOMALY_COLUMNS = ("id, kind, scope_dim, scope_value, severity, observed, expected, expected_low, expected_high, "
                   "unit, start_at, end_at, status, explanation, detected_at")  # named columns: the table may have more
# Reads take every column: those above and, from migration 0019, `unpriced` (a table from before it has no such
# column: its rows read as priced, as before).
# Scope dimensions whose spend series the rollup or raw table can draw.
SERIES_DIMS = ("org", "team", "project", "user", "api_key", "feature", "provider", "model")


def anomaly_condition(wh: Any) -> str:
    if wh.team is None:
        return "1"
    return f"(scope_dim = 'team' AND {wh.team_condition('scope_value')})"


def _row(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    for name in ("observed", "expected", "expected_low", "expected_high"):
        out[name] = dec(row[name])
    for name in ("start_at", "end_at", "detected_at", "mute_until", "ack_at", "acknowledged_at"):
        if name in out:
            out[name] = utc(out[name])
    if "ack_at" in out and not out.get("ack_action"):
        out["ack_at"] = None  # no ack: the LEFT JOIN's default (1970-01-01), which the API showed as a time
    return out


def list_anomalies(wh: Any, since: datetime, until: datetime, limit: int = 500) -> list[dict[str, Any]]:
    """Anomalies overlapping [since, until), newest first, with `ack_action`, `ack_by`, `ack_at` (the anomaly's own
    newest ack record) and `mute_until`, `muted_by`: the mute in force on its kind and scope, as the detector applies
    it (the newest mute or unmute of that kind and scope, whichever anomaly it was given on; migration 0023). Until
    walk31 the mute was read from the anomaly's own newest record: an ack after a mute hid it, a later anomaly of the
    muted kind and scope showed none, and an ended mute still read "muted until" a past time."""
    base = (f"SELECT * FROM anomalies FINAL WHERE {anomaly_condition(wh)} "
            "AND start_at < {until:DateTime64(3, 'UTC')} AND end_at >= {since:DateTime64(3, 'UTC')}")
    params = {"since": since, "until": until, "limit": limit}
    # The mutes' columns renamed: with two joins, names the anomalies share with them came back qualified ('a.kind').
    muted = "(m.m_action = 'mute' AND m.m_until > now64(3))"
    # The newest acknowledgement on its own (migration 0024): the acks table's newest record may be a later mute or
    # unmute of the anomaly, which hid who had acknowledged it (anom32).
    sql = (f"SELECT a.*, ifNull(k.action, '') AS ack_action, ifNull(k.by, '') AS ack_by, k.at AS ack_at, "
           f"if({muted}, m.m_until, NULL) AS mute_until, if({muted}, m.m_by, '') AS muted_by, "
           "ifNull(c.c_by, '') AS acknowledged_by, if(c.c_by = '', NULL, c.c_at) AS acknowledged_at "
           f"FROM ({base}) AS a LEFT JOIN (SELECT anomaly_id, action, by, at "
           "FROM anomaly_acks FINAL) AS k ON k.anomaly_id = a.id "
           "LEFT JOIN (SELECT anomaly_id AS c_id, by AS c_by, at AS c_at FROM anomaly_acknowledgements FINAL) AS c "
           "ON c.c_id = a.id "
           "LEFT JOIN (SELECT kind AS m_kind, scope_dim AS m_dim, scope_value AS m_value, action AS m_action, "
           "by AS m_by, mute_until AS m_until FROM anomaly_mutes FINAL) AS m "
           "ON m.m_kind = a.kind AND m.m_dim = a.scope_dim AND m.m_value = a.scope_value "
           "ORDER BY a.start_at DESC, a.id LIMIT {limit:UInt32}")
    try:
        frame = run(wh.query, sql, params)
    except TableMissing:
        if "anomaly_acks" not in str(_missing_name(wh)):
            raise
        frame = run(wh.query, base + " ORDER BY start_at DESC, id LIMIT {limit:UInt32}", params).with_columns(
            pl.lit("").alias("ack_action"), pl.lit("").alias("ack_by"), pl.lit(None).alias("mute_until"),
            pl.lit(None).alias("ack_at"), pl.lit("").alias("muted_by"), pl.lit("").alias("acknowledged_by"),
            pl.lit(None).alias("acknowledged_at"))
    return [_row(r) for r in frame.iter_rows(named=True)]


def _missing_name(wh: Any) -> str:
    """Which of the two tables is missing (the acks table may come later than anomalies)."""
    try:
        run(wh.query, f"SELECT count() FROM anomalies WHERE {anomaly_condition(wh)}")
    except TableMissing:
        return "anomalies"
    return "anomaly_acks"


def get_anomaly(wh: Any, anomaly_id: str) -> dict[str, Any] | None:
    sql = (f"SELECT * FROM anomalies FINAL WHERE id = {{id:String}} AND {anomaly_condition(wh)} "
           "LIMIT 1")
    rows = run(wh.query, sql, {"id": anomaly_id}).iter_rows(named=True)
    row = next(iter(rows), None)
    return _row(row) if row else None


# Per detector bucket of one scope (raw events: the rollups are hourly). Token sums in Int128 as elsewhere (issue 11).
BUCKET_SQL = (
    "SELECT toDateTime64(toStartOfInterval(ts, INTERVAL {bucket_s:UInt32} SECOND), 0, 'UTC') AS bucket, "
    "count() AS requests, countIf(status = 'error') AS errors, countIf(status = 'ok') AS ok, "
    "toDecimal128(sum(cost_usd), 12) AS cost_usd, "
    "accurateCast(sum(toInt128(input_tokens) + output_tokens), 'UInt64') AS tokens, "
    "accurateCast(sumIf(toInt128(input_tokens), status = 'ok'), 'UInt64') AS ok_input_tokens, "
    "accurateCast(sumIf(toInt128(output_tokens), status = 'ok'), 'UInt64') AS ok_output_tokens, "
    "accurateCast(sumIf(toInt128(input_tokens) + output_tokens, pricing_status = 'unpriced'), 'UInt64') "
    "AS unpriced_tokens "
    "FROM priced_events WHERE ts >= {since:DateTime64(3, 'UTC')} AND ts < {until:DateTime64(3, 'UTC')} "
    "AND {dim} = {value:String} AND {team} GROUP BY bucket ORDER BY bucket"
)
# Measures that are a rate per hour: a bucket's amount x (3600 / bucket). A bucket without calls is 0.
RATE_COLUMNS = {"usd_per_hour": "cost_usd", "tokens_per_hour": "tokens", "requests_per_hour": "requests",
                "unpriced_tokens_per_hour": "unpriced_tokens"}


def scope_buckets(wh: Any, anomaly: dict[str, Any], bucket_s: int = ANOMALY_BUCKET_SECONDS) -> pl.DataFrame:
    """The anomaly's scope per detector bucket, from a day before it to a few hours after (an empty frame for a
    scope dimension the events do not carry)."""
    dim = anomaly["scope_dim"]
    if dim not in SERIES_DIMS:
        return pl.DataFrame()
    since = anomaly["start_at"].replace(minute=0, second=0, microsecond=0) - timedelta(hours=24)
    until = anomaly["end_at"].replace(minute=0, second=0, microsecond=0) + timedelta(hours=6)
    sql = BUCKET_SQL.replace("{dim}", dim).replace("{team}", wh.team_condition())
    return run(wh.query, sql, {"since": since, "until": until, "value": anomaly["scope_value"], "bucket_s": bucket_s})


def scope_measure(frame: pl.DataFrame, unit: str, bucket_s: int = ANOMALY_BUCKET_SECONDS,
                  ) -> dict[str, list[tuple[datetime, Decimal | None]]]:
    """The scope's series in the anomaly's own unit, bucket by bucket, as the detector measured it: rates per hour
    (bucket x 3600 / bucket_s; buckets without calls are 0), the share of failed requests, tokens per successful
    request (output and input, two series), cost per 1k tokens. name -> [(bucket start, value or None)]."""
    if not frame.height:
        return {}
    rows = list(frame.iter_rows(named=True))
    per_hour = Decimal(3600) / bucket_s
    if unit in RATE_COLUMNS:
        column = RATE_COLUMNS[unit]
        start, end = rows[0]["bucket"], rows[-1]["bucket"]
        by_bucket = {utc(r["bucket"]): dec(r[column]) for r in rows}
        step, moment, out = timedelta(seconds=bucket_s), utc(start), []
        while moment <= utc(end):
            out.append((moment, by_bucket.get(moment, Decimal(0)) * per_hour))
            moment += step
        return {"observed": out}

    def ratio(num: str, den: str) -> list[tuple[datetime, Decimal | None]]:
        return [(utc(r["bucket"]), Decimal(int(r[num])) / int(r[den]) if r[den] else None) for r in rows]

    if unit == "error_ratio":
        return {"observed": ratio("errors", "requests")}
    if unit == "tokens_per_request":
        return {"output tokens per request": ratio("ok_output_tokens", "ok"),
                "input tokens per request": ratio("ok_input_tokens", "ok")}
    if unit == "usd_per_1k_tokens":
        return {"observed": [(utc(r["bucket"]), dec(r["cost_usd"]) * 1000 / int(r["tokens"]) if r["tokens"] else None)
                             for r in rows]}
    return {}
