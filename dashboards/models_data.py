"""Model economics from the raw table: cost per 1k tokens, tokens per request, output/input ratio,
cache-hit savings, latency and time to first token, and which features drive output tokens.

Cache savings are estimated per model as cached tokens x the model's own uncached input rate in the range,
minus what the cached tokens cost; a model without uncached input in the range has no rate, so no estimate.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from dashboards.filters import Filters
from dashboards.tables import dec

MODEL_SQL = (
    "SELECT provider, model, count() AS events, countIf(pricing_status = 'unpriced') AS unpriced_events, "
    # Token sums in Int128, returned through accurateCast: a UInt64 sum wraps silently (issue 11).
    "accurateCast(sum(toInt128(input_tokens)), 'UInt64') AS input_tokens, accurateCast(sum(toInt128(output_tokens)), 'UInt64') AS output_tokens, "
    "accurateCast(sum(toInt128(cached_input_tokens)), 'UInt64') AS cached_input_tokens, "
    "accurateCast(sum(toInt128(cache_write_tokens)), 'UInt64') AS cache_write_tokens, "
    "toDecimal128(sum(cost_usd), 12) AS cost_usd, "
    "toDecimal128(sum(cost_breakdown['input']), 12) AS input_cost, "
    "toDecimal128(sum(cost_breakdown['cached_input']), 12) AS cached_input_cost, "
    "accurateCast(sumIf(toInt128(priced_events.input_tokens) - priced_events.cached_input_tokens"
    " - priced_events.cache_write_tokens, cost_breakdown['input'] > 0), 'UInt64') AS uncached_input, "
    "avgOrNull(priced_events.latency_ms) AS avg_latency_ms, "
    "quantileOrNull(0.95)(priced_events.latency_ms) AS p95_latency_ms, avgOrNull(priced_events.ttft_ms) AS avg_ttft_ms "
    "FROM priced_events WHERE ts >= {since:DateTime64(3, 'UTC')} AND ts < {until:DateTime64(3, 'UTC')} "
    "AND status = 'ok' AND {where} GROUP BY provider, model ORDER BY cost_usd DESC, events DESC, model"
)


@dataclass(frozen=True)
class ModelEconomics:
    provider: str
    model: str
    events: int
    unpriced_events: int
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    cost_usd: Decimal
    cache_savings_usd: Decimal | None
    latency_ms: float | None
    latency_p95_ms: float | None
    ttft_ms: float | None

    @property
    def all_unpriced(self) -> bool:
        return self.events > 0 and self.unpriced_events == self.events

    @property
    def cost_per_1k_tokens(self) -> Decimal | None:
        tokens = self.input_tokens + self.output_tokens
        return None if not tokens or self.all_unpriced else self.cost_usd * 1000 / tokens

    @property
    def tokens_per_request(self) -> Decimal | None:
        return Decimal(self.input_tokens + self.output_tokens) / self.events if self.events else None

    @property
    def output_input_ratio(self) -> Decimal | None:
        return Decimal(self.output_tokens) / self.input_tokens if self.input_tokens else None

    @property
    def cache_hit_share(self) -> Decimal | None:
        return Decimal(self.cached_input_tokens) / self.input_tokens if self.input_tokens else None


def _savings(row: dict[str, Any]) -> Decimal | None:
    uncached, cached = int(row["uncached_input"] or 0), int(row["cached_input_tokens"] or 0)
    if not cached or uncached <= 0:
        return None
    rate = dec(row["input_cost"]) / uncached
    return (rate * cached - dec(row["cached_input_cost"])).quantize(Decimal("0.000000000001"))


def model_economics(wh: Any, filters: Filters) -> list[ModelEconomics]:
    where = wh.team_condition()
    params: dict[str, Any] = {"since": filters.since, "until": filters.until}
    if filters.teams:
        scoped = wh.scope_filters({"team": filters.teams})["team"]
        names = [f"t{i}" for i in range(len(scoped))]
        where += " AND team IN (" + ", ".join(f"{{{n}:String}}" for n in names) + ")"
        params.update(zip(names, scoped))
    frame = wh.query(MODEL_SQL.replace("{where}", where), params)
    rows = []
    for r in frame.iter_rows(named=True):
        rows.append(ModelEconomics(
            provider=r["provider"], model=r["model"] or "(unknown model)", events=int(r["events"]),
            unpriced_events=int(r["unpriced_events"]), input_tokens=int(r["input_tokens"]),
            output_tokens=int(r["output_tokens"]), cached_input_tokens=int(r["cached_input_tokens"]),
            cost_usd=dec(r["cost_usd"]), cache_savings_usd=_savings(r), latency_ms=r["avg_latency_ms"],
            latency_p95_ms=r["p95_latency_ms"], ttft_ms=r["avg_ttft_ms"],
        ))
    return rows


def output_drivers(wh: Any, filters: Filters, top: int = 10) -> list[dict[str, Any]]:
    """Features (and their models) with the most output tokens: what makes responses long and costly."""
    frame = wh.spend(["feature", "model"], since=filters.since, until=filters.until,
                     filters=filters.warehouse_filters())
    rows = sorted(frame.iter_rows(named=True), key=lambda r: (-int(r["output_tokens"]), r["feature"], r["model"]))
    return [{"feature": r["feature"] or "(no feature)", "model": r["model"], "output_tokens": int(r["output_tokens"]),
             "events": int(r["events"]), "cost_usd": dec(r["cost_usd"])} for r in rows[:top]]


def economics_json(row: ModelEconomics) -> dict[str, Any]:
    from dashboards.tables import json_value

    fields = {k: getattr(row, k) for k in ModelEconomics.__dataclass_fields__}
    for name in ("cost_per_1k_tokens", "tokens_per_request", "output_input_ratio", "cache_hit_share"):
        fields[name] = getattr(row, name)
    return {k: json_value(v) for k, v in fields.items()}
