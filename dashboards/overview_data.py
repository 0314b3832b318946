"""Data for the overview page, built from the warehouse query layer. No Dash here, so it is unit-testable.

Cost stays Decimal from the warehouse to the KPI text; floats appear only in figures (see figures.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import polars as pl

from dashboards.filters import NO_TEAM_LABEL, Filters
from dashboards.formatting import to_decimal


@dataclass(frozen=True)
class Kpis:
    cost_usd: Decimal
    events: int
    input_tokens: int
    output_tokens: int
    unpriced_events: int
    unpriced_tokens: int  # input + output of events no price covered: usage without a cost, never "$0"


@dataclass(frozen=True)
class OverviewData:
    kpis: Kpis
    by_team: list[TeamSpend]
    by_model: list[ModelSpend]
    over_time: pl.DataFrame  # bucket, team, cost_usd
    bucket: str

    @property
    def has_data(self) -> bool:
        return self.kpis.events > 0


def label_missing(frame: pl.DataFrame, dim: str, label: str = NO_TEAM_LABEL) -> pl.DataFrame:
    """Events without an owner are a bucket of their own, not dropped from charts."""
    if dim not in frame.columns:
        return frame
    return frame.with_columns(
        pl.when(pl.col(dim).is_null() | (pl.col(dim).cast(pl.Utf8) == ""))
        .then(pl.lit(label))
        .otherwise(pl.col(dim).cast(pl.Utf8))
        .alias(dim)
    )


def _int_sum(frame: pl.DataFrame, column: str) -> int:
    return int(frame[column].cast(pl.Int128).sum() or 0) if frame.height else 0  # Int64 sums wrap silently


def _decimal_sum(frame: pl.DataFrame, column: str = "cost_usd") -> Decimal:
    # Python-side Decimal sum: exact whatever scale the warehouse returns.
    return sum((to_decimal(v) for v in frame[column].to_list()), Decimal(0)) if frame.height else Decimal(0)


@dataclass(frozen=True)
class TeamSpend:
    team: str
    cost_usd: Decimal
    events: int
    input_tokens: int  # priced events only; unpriced usage is in unpriced_tokens
    output_tokens: int
    unpriced_events: int
    unpriced_tokens: int


@dataclass(frozen=True)
class ModelSpend:
    model: str
    provider: str
    cost_usd: Decimal
    events: int
    input_tokens: int
    output_tokens: int
    unpriced_events: int
    cost_per_1k_tokens: Decimal | None  # None (not $0) when nothing was priced: there is no rate to show

    @property
    def all_unpriced(self) -> bool:
        return self.events > 0 and self.unpriced_events == self.events


def summarize_by_team(team_status: pl.DataFrame) -> tuple[Kpis, list[TeamSpend]]:
    """From spend(["team", "pricing_status"]): KPI totals and one row per team with unpriced usage split out.
    Rows are plain dataclasses, not a DataFrame: Decimal totals of any scale stay exact."""
    frame = label_missing(team_status, "team")
    unpriced_rows = frame.filter(pl.col("pricing_status") == "unpriced") if frame.height else frame
    kpis = Kpis(
        cost_usd=_decimal_sum(frame),
        events=_int_sum(frame, "events"),
        input_tokens=_int_sum(frame, "input_tokens"),
        output_tokens=_int_sum(frame, "output_tokens"),
        unpriced_events=_int_sum(frame, "unpriced_events"),
        unpriced_tokens=_int_sum(unpriced_rows, "input_tokens") + _int_sum(unpriced_rows, "output_tokens"),
    )
    rows = []
    for team in sorted(set(frame["team"].to_list())) if frame.height else []:
        team_rows = frame.filter(pl.col("team") == team)
        priced = team_rows.filter(pl.col("pricing_status") != "unpriced")
        unpriced = team_rows.filter(pl.col("pricing_status") == "unpriced")
        rows.append(TeamSpend(
            team=team,
            cost_usd=_decimal_sum(team_rows),
            events=_int_sum(team_rows, "events"),
            input_tokens=_int_sum(priced, "input_tokens"),
            output_tokens=_int_sum(priced, "output_tokens"),
            unpriced_events=_int_sum(team_rows, "unpriced_events"),
            unpriced_tokens=_int_sum(unpriced, "input_tokens") + _int_sum(unpriced, "output_tokens"),
        ))
    rows.sort(key=lambda r: (r.cost_usd, r.events), reverse=True)  # most expensive first
    return kpis, rows


def per_model(model_frame: pl.DataFrame) -> list[ModelSpend]:
    """Cost per model with cost per 1k tokens (Decimal), unpriced events kept visible."""
    frame = label_missing(model_frame, "model", "(unknown model)")
    rows = []
    for row in frame.iter_rows(named=True):
        cost = to_decimal(row["cost_usd"])
        tokens = int(row["input_tokens"]) + int(row["output_tokens"])
        priced_events = int(row["events"]) - int(row["unpriced_events"])
        rows.append(ModelSpend(
            model=row["model"],
            provider=row.get("provider") or "",
            cost_usd=cost,
            events=int(row["events"]),
            input_tokens=int(row["input_tokens"]),
            output_tokens=int(row["output_tokens"]),
            unpriced_events=int(row["unpriced_events"]),
            cost_per_1k_tokens=(cost * 1000 / tokens) if tokens and priced_events > 0 else None,
        ))
    rows.sort(key=lambda r: (r.cost_usd, r.events), reverse=True)
    return rows


def build_overview(warehouse: Any, filters: Filters) -> OverviewData:
    where = filters.warehouse_filters()
    team_status = warehouse.spend(["team", "pricing_status"], since=filters.since, until=filters.until, filters=where)
    kpis, by_team = summarize_by_team(team_status)
    # By provider and model: one model name served by two providers (openai/gpt-4o, azure/gpt-4o) is two bills.
    by_model = per_model(warehouse.spend(["provider", "model"], since=filters.since, until=filters.until,
                                         filters=where))
    over_time = label_missing(
        warehouse.spend_over_time(filters.bucket, "team", since=filters.since, until=filters.until, filters=where),
        "team",
    )
    return OverviewData(kpis=kpis, by_team=by_team, by_model=by_model, over_time=over_time, bucket=filters.bucket)


def build_models_table(warehouse: Any, filters: Filters) -> list[ModelSpend]:
    frame = warehouse.spend(["provider", "model"], since=filters.since, until=filters.until,
                            filters=filters.warehouse_filters())
    return per_model(frame)
