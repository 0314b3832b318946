"""Showback: cost or tokens over time by any dimension (or a tag key), with filters and team -> user -> model
drill-down. The view state is a `ShowbackView`, round-tripped through the URL query string."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlencode

import polars as pl

from dashboards.filters import Filters
from dashboards.overview_data import label_missing

GROUP_DIMS = ("team", "user", "model", "provider", "project", "org", "api_key", "feature")
FILTER_DIMS = ("team", "user", "model", "provider", "project", "org", "api_key", "feature")
DRILL = {"team": "user", "user": "model", "org": "team", "project": "user", "feature": "model"}
METRICS = {"cost": "cost_usd", "tokens": "tokens"}
MODES = ("stack", "group")
TAG_PREFIX = "tag:"


@dataclass(frozen=True)
class ShowbackView:
    filters: Filters
    by: str = "team"
    metric: str = "cost"
    mode: str = "stack"
    where: dict[str, list[str]] = field(default_factory=dict)  # dimension -> values, besides the date range

    @classmethod
    def from_query(cls, query: dict[str, Any]) -> "ShowbackView":
        def one(name: str, allowed: tuple | dict, default: str) -> str:
            value = query.get(name)
            value = value[0] if isinstance(value, list) and value else value
            return value if value in allowed else default

        by = query.get("by")
        by = by[0] if isinstance(by, list) and by else by
        if not (by in GROUP_DIMS or (isinstance(by, str) and by.startswith(TAG_PREFIX) and len(by) > 4)):
            by = "team"
        where = {}
        for dim in FILTER_DIMS:
            raw = query.get(dim)
            items = raw if isinstance(raw, list) else [raw] if raw else []
            values = [v for item in items for v in str(item).split(",") if v]
            if values:
                where[dim] = values
        return cls(filters=Filters.from_inputs(query.get("start"), query.get("end"), None), by=by,
                   metric=one("metric", METRICS, "cost"), mode=one("mode", MODES, "stack"), where=where)

    def query_string(self) -> str:
        params = {"start": self.filters.start.isoformat(), "end": self.filters.end.isoformat(), "by": self.by,
                  "metric": self.metric, "mode": self.mode}
        params.update({dim: ",".join(values) for dim, values in self.where.items() if values})
        return "?" + urlencode(params)

    def drill(self, value: str) -> "ShowbackView":
        """Clicking a bar of `by`: keep that value as a filter and split by the next dimension."""
        if self.by not in DRILL:
            return self
        return replace(self, where={**self.where, self.by: [value]}, by=DRILL[self.by])

    def without(self, dim: str) -> "ShowbackView":
        return replace(self, where={k: v for k, v in self.where.items() if k != dim})


def _tag_series(wh: Any, view: ShowbackView) -> pl.DataFrame:
    """Tags are a Map on the raw table, not in the rollup: grouped there, with the same scoping rules."""
    key = view.by[len(TAG_PREFIX):]
    filters = wh.scope_filters(view.where) or {}
    params: dict[str, Any] = {"tag_key": key, "since": view.filters.since, "until": view.filters.until}
    clauses = ["ts >= {since:DateTime64(3, 'UTC')}", "ts < {until:DateTime64(3, 'UTC')}", wh.team_condition()]
    for dim, values in filters.items():
        if dim not in FILTER_DIMS:
            continue
        names = [f"w_{dim}_{i}" for i in range(len(values))]
        clauses.append(f"{dim} IN (" + ", ".join(f"{{{n}:String}}" for n in names) + ")")
        params.update(zip(names, values))
    bucket = "toStartOfHour" if view.filters.bucket == "hour" else "toStartOfDay"
    sql = (f"SELECT toDateTime64({bucket}(ts), 0, 'UTC') AS bucket, tags[{{tag_key:String}}] AS value, "
           "count() AS events, countIf(pricing_status = 'unpriced') AS unpriced_events, "
           "accurateCast(sum(toInt128(input_tokens)), 'UInt64') AS input_tokens, "
           "accurateCast(sum(toInt128(output_tokens)), 'UInt64') AS output_tokens, "
           "toDecimal128(sum(cost_usd), 12) AS cost_usd FROM priced_events WHERE " + " AND ".join(clauses)
           + " GROUP BY bucket, value ORDER BY bucket, value")
    return wh.query(sql, params)


def showback_series(wh: Any, view: ShowbackView) -> pl.DataFrame:
    """Columns: bucket, value (the group), events, unpriced_events, input_tokens, output_tokens, tokens, cost_usd."""
    if view.by.startswith(TAG_PREFIX):
        frame = _tag_series(wh, view)
    else:
        frame = wh.spend_over_time(view.filters.bucket, view.by, since=view.filters.since,
                                   until=view.filters.until, filters=view.where or None).rename({view.by: "value"})
    frame = label_missing(frame, "value", "(none)")
    return frame.with_columns((pl.col("input_tokens").cast(pl.Int64) + pl.col("output_tokens").cast(pl.Int64))
                              .alias("tokens"))


def showback_totals(wh: Any, view: ShowbackView) -> pl.DataFrame:
    """One row per group over the whole range (the table under the chart), largest first."""
    series = showback_series(wh, view)
    unpriced = ["unpriced_events"] if "unpriced_events" in series.columns else []
    if not series.height:
        return series.select("value", "events", "tokens", "cost_usd", *unpriced)
    return (series.group_by("value").agg(pl.col("events").sum(), pl.col("input_tokens").cast(pl.Int128).sum(),
                                         pl.col("output_tokens").cast(pl.Int128).sum(),
                                         pl.col("tokens").cast(pl.Int128).sum(),  # Int64 sums wrap silently
                                         pl.col("cost_usd").sum(), *[pl.col(c).sum() for c in unpriced])
            .sort(["cost_usd", "tokens", "value"], descending=[True, True, False]))
