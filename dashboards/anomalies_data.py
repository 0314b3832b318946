"""Anomalies (latest record per id) with their acknowledgement state, and the observed series of one scope.

A team user sees anomalies whose scope is their team only (scope_dim = 'team').
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import polars as pl

from dashboards.tables import TableMissing, dec, run, utc

ANOMALY_COLUMNS = ("id, kind, scope_dim, scope_value, severity, observed, expected, expected_low, expected_high, "
                   "unit, start_at, end_at, status, explanation, detected_at")
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
    for name in ("start_at", "end_at", "detected_at", "mute_until", "ack_at"):
        if name in out:
            out[name] = utc(out[name])
    return out


def list_anomalies(wh: Any, since: datetime, until: datetime, limit: int = 500) -> list[dict[str, Any]]:
    """Anomalies overlapping [since, until), newest first, with `ack_action`, `ack_by`, `mute_until`."""
    base = (f"SELECT {ANOMALY_COLUMNS} FROM anomalies FINAL WHERE {anomaly_condition(wh)} "
            "AND start_at < {until:DateTime64(3, 'UTC')} AND end_at >= {since:DateTime64(3, 'UTC')}")
    params = {"since": since, "until": until, "limit": limit}
    sql = (f"SELECT a.*, ifNull(k.action, '') AS ack_action, ifNull(k.by, '') AS ack_by, k.mute_until AS mute_until, "
           f"k.at AS ack_at FROM ({base}) AS a LEFT JOIN (SELECT anomaly_id, action, by, mute_until, at "
           "FROM anomaly_acks FINAL) AS k ON k.anomaly_id = a.id "
           "ORDER BY a.start_at DESC, a.id LIMIT {limit:UInt32}")
    try:
        frame = run(wh.query, sql, params)
    except TableMissing:
        if "anomaly_acks" not in str(_missing_name(wh)):
            raise
        frame = run(wh.query, base + " ORDER BY start_at DESC, id LIMIT {limit:UInt32}", params).with_columns(
            pl.lit("").alias("ack_action"), pl.lit("").alias("ack_by"), pl.lit(None).alias("mute_until"),
            pl.lit(None).alias("ack_at"))
    return [_row(r) for r in frame.iter_rows(named=True)]


def _missing_name(wh: Any) -> str:
    """Which of the two tables is missing (the acks table may come later than anomalies)."""
    try:
        run(wh.query, f"SELECT count() FROM anomalies WHERE {anomaly_condition(wh)}")
    except TableMissing:
        return "anomalies"
    return "anomaly_acks"


def get_anomaly(wh: Any, anomaly_id: str) -> dict[str, Any] | None:
    sql = (f"SELECT {ANOMALY_COLUMNS} FROM anomalies FINAL WHERE id = {{id:String}} AND {anomaly_condition(wh)} "
           "LIMIT 1")
    rows = run(wh.query, sql, {"id": anomaly_id}).iter_rows(named=True)
    row = next(iter(rows), None)
    return _row(row) if row else None


def scope_series(wh: Any, anomaly: dict[str, Any]) -> pl.DataFrame:
    """Hourly cost and tokens of the anomaly's scope from a day before it to a few hours after."""
    dim = anomaly["scope_dim"]
    filters = {dim: [anomaly["scope_value"]]} if dim in SERIES_DIMS else None
    since = anomaly["start_at"].replace(minute=0, second=0, microsecond=0) - timedelta(hours=24)
    until = anomaly["end_at"].replace(minute=0, second=0, microsecond=0) + timedelta(hours=6)
    return wh.spend_over_time("hour", None, since=since, until=until, filters=filters)
