"""Per provider and model: reconciliation of our metered cost with what the providers report, and the models
page's statistics. Parameterized single SELECTs through a `Warehouse`; money exact (Decimal(38,12))."""

from __future__ import annotations

from typing import Any

import polars as pl

from warehouse.backends import WarehouseError
from warehouse.queries import to_utc
from warehouse.showback import on_the_day, on_the_hour, scoped_filters, showback

_MODEL_FILTERS = frozenset({"org", "team", "provider", "model"})


def _day_window(since: Any, until: Any, column: str, params: dict[str, Any]) -> list[str]:
    clauses = []
    start, end = to_utc(since, "since"), to_utc(until, "until")
    if start is not None:
        clauses.append(f"{column} >= {{since:DateTime64(3, 'UTC')}}")
        params["since"] = start
    if end is not None:
        clauses.append(f"{column} < {{until:DateTime64(3, 'UTC')}}")
        params["until"] = end
    return clauses


def reconciliation(wh, *, since: Any = None, until: Any = None, provider: str | None = None) -> pl.DataFrame:
    """Per UTC day, provider and model: metered_cost_usd (our priced events) vs provider_cost_usd (the latest
    fetch of each provider cost bucket), difference_usd = metered - provider, difference_pct (of the provider's
    cost; NULL when it is 0), and tokens on both sides (metered_input_tokens, metered_output_tokens,
    provider_input_tokens, provider_output_tokens from provider usage buckets). Days with data on either side.
    provider_cost_usd, difference_usd and difference_pct are NULL when the provider sent no cost bucket for the
    day and model (its cost report lags its usage report): not reported, never a $0 bill, as the dashboard's
    Reconciliation page shows it (walk25); the provider token columns are NULL without a usage bucket.
    Model names are compared as stored: ours as the gateway logged them, the provider's as it reports them."""
    params: dict[str, Any] = {}
    start, end = to_utc(since, "since"), to_utc(until, "until")
    daily = on_the_day(start) and on_the_day(end)
    table, column = ("spend_daily", "day") if daily else ("spend_hourly", "hour")
    metered = _day_window(since, until, column, params)
    reported = _day_window(since, until, "bucket_start", params)
    if provider is not None:
        metered.append("provider = {provider:String}")
        reported.append("provider = {provider:String}")
        params["provider"] = provider
    m_where = ("WHERE " + " AND ".join(metered)) if metered else ""
    p_where = ("WHERE " + " AND ".join(reported)) if reported else ""
    zero = "toDecimal128(0, 12)"
    # Whether the provider reported a cost / usage at all is counted apart from the sums: a sum of 0 could be a
    # real $0 bill, but no cost bucket is "not reported yet", and a total over the rows must not count it as $0.
    billed, counted = "sum(p_costs) > 0", "sum(p_usages) > 0"
    sql = (
        "SELECT day, provider, model, toDecimal128(sum(m_cost), 12) AS metered_cost_usd,"
        f" if({billed}, toDecimal128(sum(p_cost), 12), NULL) AS provider_cost_usd,"
        f" if({billed}, toDecimal128(sum(m_cost) - sum(p_cost), 12), NULL) AS difference_usd,"
        " if(sum(p_cost) = 0, NULL, toDecimal128(round(toDecimal128(sum(m_cost) - sum(p_cost), 12) * 100"
        " / nullIf(toDecimal128(sum(p_cost), 12), 0), 2), 2)) AS difference_pct,"
        " accurateCast(sum(m_in), 'UInt64') AS metered_input_tokens,"
        " accurateCast(sum(m_out), 'UInt64') AS metered_output_tokens,"
        f" if({counted}, accurateCast(sum(p_in), 'UInt64'), NULL) AS provider_input_tokens,"
        f" if({counted}, accurateCast(sum(p_out), 'UInt64'), NULL) AS provider_output_tokens"
        " FROM ("
        f"SELECT toDate({column}) AS day, toString(provider) AS provider, toString(model) AS model,"
        f" toDecimal128(cost_usd, 12) AS m_cost, {zero} AS p_cost,"
        " toInt128(input_tokens) AS m_in, toInt128(output_tokens) AS m_out, toInt128(0) AS p_in, toInt128(0) AS p_out,"
        " toUInt64(0) AS p_costs, toUInt64(0) AS p_usages"
        f" FROM {table} {m_where}"
        " UNION ALL "
        "SELECT toDate(bucket_start) AS day, toString(provider) AS provider, model,"
        f" {zero} AS m_cost, if(kind = 'cost', toDecimal128(cost_usd, 12), {zero}) AS p_cost,"
        " toInt128(0), toInt128(0), toInt128(if(kind = 'usage', input_tokens, 0)),"
        " toInt128(if(kind = 'usage', output_tokens, 0)), toUInt64(kind = 'cost'), toUInt64(kind = 'usage')"
        f" FROM provider_usage FINAL {p_where}"
        ") GROUP BY day, provider, model ORDER BY day, provider, model"
    )
    return wh.query(sql, params)


def model_stats(wh, *, since: Any = None, until: Any = None, filters: dict[str, Any] | None = None,
                team: str | None = None, top_features: int = 3) -> pl.DataFrame:
    """Per provider and model over [since, until): requests, errors, input/output/cached_input tokens,
    cost_usd, cost_per_1k_tokens (USD per 1000 input+output tokens), tokens_per_request, output_input_ratio,
    avg_latency_ms, avg_ttft_ms, cache_savings_usd (cached_input_tokens x (input - cached input price per
    token) at the list prices of `price_catalog_history` for each event's price entry and version; NULL when
    no price is known) and top_features ("feature (output tokens), ..." by output tokens).
    filters: org, team, provider, model."""
    clean, possible = scoped_filters(filters, team)
    unknown = set(clean) - _MODEL_FILTERS
    if unknown:
        raise WarehouseError(f"filters: model stats filter by {', '.join(sorted(_MODEL_FILTERS))}, not {sorted(unknown)}")
    params: dict[str, Any] = {}
    start, end = to_utc(since, "since"), to_utc(until, "until")
    rollup = on_the_hour(start) and on_the_hour(end)
    clauses = _day_window(start, end, "hour" if rollup else "ts", params)
    if not possible:
        clauses.append("0")
    for index, (dim, values) in enumerate(sorted(clean.items())):
        names = [f"f{index}_{i}" for i in range(len(values))]
        clauses.append(f"{dim} IN (" + ", ".join(f"{{{n}:String}}" for n in names) + ")")
        params.update(zip(names, values))
    where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
    if rollup:
        inner = ("SELECT provider, model, price_entry, price_effective_from, sum(requests) AS i_requests,"
                 " sum(errors) AS i_errors, sum(toInt128(input_tokens)) AS i_input,"
                 " sum(toInt128(output_tokens)) AS i_output,"
                 " sum(toInt128(cached_input_tokens)) AS i_cached, sum(cost_usd) AS i_cost,"
                 " sum(latency_ms_sum) AS i_latency_sum, sum(latency_count) AS i_latency_n,"
                 " sum(ttft_ms_sum) AS i_ttft_sum, sum(ttft_count) AS i_ttft_n"
                 f" FROM model_hourly {where} GROUP BY provider, model, price_entry, price_effective_from")
    else:
        inner = ("SELECT provider, model, price_entry, price_effective_from, toInt64(count()) AS i_requests,"
                 " toInt64(countIf(status = 'error')) AS i_errors, sum(toInt128(input_tokens)) AS i_input,"
                 " sum(toInt128(output_tokens)) AS i_output,"
                 " sum(toInt128(cached_input_tokens)) AS i_cached, sum(cost_usd) AS i_cost,"
                 " sum(ifNull(latency_ms, 0)) AS i_latency_sum, toInt64(count(latency_ms)) AS i_latency_n,"
                 " sum(ifNull(ttft_ms, 0)) AS i_ttft_sum, toInt64(count(ttft_ms)) AS i_ttft_n"
                 f" FROM priced_events {where} GROUP BY provider, model, price_entry, price_effective_from")
    prices = ("SELECT entry, effective_from, argMax(input, loaded_at) AS p_input,"
              " argMax(cached_input, loaded_at) AS p_cached, 1 AS known"
              " FROM price_catalog_history GROUP BY entry, effective_from")
    # Savings per (entry, version): tokens x price difference per 1M tokens; exact Decimal, scale 15 -> 12.
    saving = ("toDecimal128(i_cached, 0) * toDecimal128(ifNull(p_input, 0) - ifNull(p_cached,"
              " ifNull(p_input, 0)), 9) * toDecimal128('0.000001', 6)")
    tokens = "(sum(i_input) + sum(i_output))"
    sql = (
        "SELECT toString(provider) AS provider, toString(model) AS model, toUInt64(sum(i_requests)) AS requests,"
        " toUInt64(sum(i_errors)) AS errors, accurateCast(sum(i_input), 'UInt64') AS input_tokens,"
        " accurateCast(sum(i_output), 'UInt64') AS output_tokens,"
        " accurateCast(sum(i_cached), 'UInt64') AS cached_input_tokens,"
        " toDecimal128(sum(i_cost), 12) AS cost_usd,"
        f" toDecimal128(toDecimal128(sum(i_cost), 12) * 1000 / nullIf({tokens}, 0), 12) AS cost_per_1k_tokens,"
        f" {tokens} / nullIf(sum(i_requests), 0) AS tokens_per_request,"
        " sum(i_output) / nullIf(sum(i_input), 0) AS output_input_ratio,"
        " sum(i_latency_sum) / nullIf(sum(i_latency_n), 0) AS avg_latency_ms,"
        " sum(i_ttft_sum) / nullIf(sum(i_ttft_n), 0) AS avg_ttft_ms,"
        " if(countIf(known = 1 AND p_input IS NOT NULL) = 0, NULL,"
        f" toDecimal128(round(sumIf({saving}, known = 1), 12), 12)) AS cache_savings_usd"
        f" FROM ({inner}) AS m LEFT JOIN ({prices}) AS p"
        " ON m.price_entry = p.entry AND m.price_effective_from = p.effective_from"
        " GROUP BY provider, model ORDER BY cost_usd DESC, provider, model"
    )
    frame = wh.query(sql, params)
    features = showback(wh, ["provider", "model", "feature"], since=start, until=end,
                        filters={k: v for k, v in clean.items()}, team=None)
    ranked: dict[tuple[str, str], list[str]] = {}
    for row in features.sort("output_tokens", descending=True).iter_rows(named=True):
        picked = ranked.setdefault((row["provider"], row["model"]), [])
        if len(picked) < top_features and row["output_tokens"]:
            picked.append(f"{row['feature'] or '(none)'} ({row['output_tokens']})")
    tops = [", ".join(ranked.get((p, m), [])) for p, m in zip(frame["provider"], frame["model"])]
    return frame.with_columns(pl.Series("top_features", tops, dtype=pl.String))
