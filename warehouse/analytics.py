"""Finance and operations queries for the dashboard and the lead: every function takes a `Warehouse` (chDB,
ClickHouse server or the owner's endpoint: single parameterized SELECTs only) and returns a Polars DataFrame
(or an exact Decimal/int for `budget_spend`). Money stays Decimal; percentages are Decimal(…, 2).
Signatures and columns are documented in docs/warehouse.md.
"""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import polars as pl

from warehouse.backends import WarehouseError
from warehouse.queries import to_utc
from warehouse.showback import TAG_PREFIX, check_dims, is_tag, showback

MONEY = pl.Decimal(38, 12)
PERCENT = pl.Decimal(18, 2)
CENT = Decimal("0.01")


def _scope_label(column: str = "scope") -> str:
    """`team=search,user=bob` (sorted), as tokenmeter.records.scope_label writes it ('' for all traffic)."""
    return (f"arrayStringConcat(arraySort(arrayMap((k, v) -> concat(k, '=', v), mapKeys({column}),"
            f" mapValues({column}))), ',') AS scope_label")


def _percent(part: Decimal, whole: Decimal) -> Decimal | None:
    return None if not whole else (part * 100 / whole).quantize(CENT)


def _window(since: Any, until: Any, column: str, clauses: list[str], params: dict[str, Any]) -> None:
    start, end = to_utc(since, "since"), to_utc(until, "until")
    if start is not None:
        clauses.append(f"{column} >= {{since:DateTime64(3, 'UTC')}}")
        params["since"] = start
    if end is not None:
        clauses.append(f"{column} < {{until:DateTime64(3, 'UTC')}}")
        params["until"] = end


def _where(clauses: list[str]) -> str:
    return ("WHERE " + " AND ".join(clauses)) if clauses else ""


# Spend -------------------------------------------------------------------------------------------------


def top_movers(wh, dim: str, *, current_start: Any, current_end: Any, previous_start: Any = None,
               previous_end: Any = None, filters: dict[str, Any] | None = None, team: str | None = None,
               limit: int = 10) -> pl.DataFrame:
    """Cost per value of `dim` in [current_start, current_end) vs the previous period (default: the same
    length just before). Columns: <dim>, current_cost_usd, previous_cost_usd, change_usd, change_pct (None
    when the previous cost is 0), sorted by |change_usd| descending, at most `limit` rows."""
    check_dims([dim], "dim")
    cur_start, cur_end = to_utc(current_start, "current_start"), to_utc(current_end, "current_end")
    if cur_start is None or cur_end is None or cur_end <= cur_start:
        raise WarehouseError("current_start and current_end are required, with current_end after current_start")
    prev_end = to_utc(previous_end, "previous_end") or cur_start
    prev_start = to_utc(previous_start, "previous_start") or prev_end - (cur_end - cur_start)
    now = showback(wh, [dim], since=cur_start, until=cur_end, filters=filters, team=team)
    before = showback(wh, [dim], since=prev_start, until=prev_end, filters=filters, team=team)
    costs: dict[str, list[Decimal]] = {}
    for index, frame in enumerate((now, before)):
        for value, cost in zip(frame[dim].to_list(), frame["cost_usd"].to_list()):
            costs.setdefault(value, [Decimal(0), Decimal(0)])[index] += cost
    rows = sorted(((v, c, p, c - p) for v, (c, p) in costs.items()), key=lambda r: (-abs(r[3]), r[0]))[:limit]
    return pl.DataFrame(
        {dim: [r[0] for r in rows], "current_cost_usd": [r[1] for r in rows],
         "previous_cost_usd": [r[2] for r in rows], "change_usd": [r[3] for r in rows],
         "change_pct": [_percent(r[3], r[2]) for r in rows]},
        schema={dim: pl.String, "current_cost_usd": MONEY, "previous_cost_usd": MONEY, "change_usd": MONEY,
                "change_pct": PERCENT},
    )


def spend_today_mtd(wh, *, now: datetime | None = None, filters: dict[str, Any] | None = None,
                    team: str | None = None) -> pl.DataFrame:
    """One row: today_cost_usd, today_events, month_cost_usd, month_events, today_start, month_start (UTC)."""
    now = to_utc(now, "now") or datetime.now(timezone.utc)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    month = day.replace(day=1)
    totals = []
    for start in (day, month):
        frame = showback(wh, since=start, filters=filters, team=team)
        totals.append((frame["cost_usd"][0], int(frame["events"][0])) if frame.height else (Decimal(0), 0))
    return pl.DataFrame(
        {"today_cost_usd": [totals[0][0]], "today_events": [totals[0][1]], "month_cost_usd": [totals[1][0]],
         "month_events": [totals[1][1]], "today_start": [day], "month_start": [month]},
        schema={"today_cost_usd": MONEY, "today_events": pl.UInt64, "month_cost_usd": MONEY,
                "month_events": pl.UInt64, "today_start": pl.Datetime("ms", "UTC"),
                "month_start": pl.Datetime("ms", "UTC")},
    )


def unpriced_by_model(wh, *, since: Any = None, until: Any = None, filters: dict[str, Any] | None = None,
                      team: str | None = None) -> pl.DataFrame:
    """Unpriced usage per provider and model: provider, model, events, input_tokens, output_tokens, ... (from
    the rollup). The reasons are in `unpriced_reasons`."""
    wanted = dict(filters or {})
    wanted["pricing_status"] = ["unpriced"]
    frame = showback(wh, ["provider", "model"], since=since, until=until, filters=wanted, team=team)
    return frame.drop("cost_usd", "unpriced_events").sort(["events", "provider", "model"], descending=[True, False, False])


def unpriced_reasons(wh, *, since: Any = None, until: Any = None, team: str | None = None) -> pl.DataFrame:
    """provider, model, unpriced_reason, events, first_seen, last_seen (raw table: use a short window)."""
    clauses, params = ["pricing_status = 'unpriced'"], {}
    _window(since, until, "ts", clauses, params)
    if team is not None:
        clauses.append("team = {team:String}")
        params["team"] = team
    return wh.query(
        "SELECT provider, model, unpriced_reason, count() AS events, min(ts) AS first_seen, max(ts) AS last_seen"
        f" FROM priced_events {_where(clauses)} GROUP BY provider, model, unpriced_reason"
        " ORDER BY events DESC, provider, model", params)


# Budgets -----------------------------------------------------------------------------------------------


def _scope_clauses(scope: dict[str, str], clauses: list[str], params: dict[str, Any]) -> None:
    """Budget scope matching as the ledger does it: every entry equal; a `tag:<k>` must be present."""
    check_dims(list(scope), "scope")
    for index, (key, value) in enumerate(sorted(scope.items())):
        params[f"s{index}"] = str(value)
        if is_tag(key):
            params[f"k{index}"] = key[len(TAG_PREFIX):]
            clauses.append(f"mapContains(tags, {{k{index}:String}}) AND tags[{{k{index}:String}}] = {{s{index}:String}}")
        else:
            clauses.append(f"{key} = {{s{index}:String}}")


def budget_spend(wh, scope: dict[str, str], metric: str, start: Any, end: Any) -> Decimal | int:
    """Exact spend of a budget scope over [start, end): Decimal USD (metric "cost_usd") or int tokens (input +
    output, metric "tokens"), every event counted once even if two copies are stored (newest copy wins)."""
    if metric not in ("cost_usd", "tokens"):
        raise WarehouseError(f"metric: {metric!r} is not cost_usd or tokens")
    clauses, params = [], {}
    _window(start, end, "ts", clauses, params)
    _scope_clauses(scope, clauses, params)
    # FINAL collapses copies of an event (same sorting key, which ends in event_id) to the newest loaded_at,
    # exactly as a merge will: a duplicate from a loader race or a re-price in progress never counts twice.
    row = wh.query(
        "SELECT toDecimal128(sum(cost_usd), 12) AS cost_usd, accurateCast(sum(toInt128(input_tokens) + output_tokens), 'UInt64') AS tokens"
        f" FROM priced_events FINAL {_where(clauses)}", params).row(0, named=True)
    if metric == "tokens":
        return int(row["tokens"] or 0)
    return row["cost_usd"] if row["cost_usd"] is not None else Decimal(0)


ID_CHUNK = 500  # event ids per lookup (one String parameter each)


def _budget_amount(metric: str) -> str:
    if metric == "cost_usd":
        return "toDecimal128(sum(cost_usd), 12)"
    if metric == "tokens":
        return "accurateCast(sum(toInt128(input_tokens) + output_tokens), 'UInt64')"
    raise WarehouseError(f"metric: {metric!r} is not cost_usd or tokens")


def budget_loaded_until(wh, scope: dict[str, str], start: Any, end: Any) -> int | None:
    """When the newest stored event of a budget scope over [start, end) was loaded (epoch milliseconds of
    `loaded_at`; None: no event). The writer inserts one batch at a time, so every row loaded until then is visible
    once this one is: the seed's queries below, cut at it, read one consistent set of rows however many they are."""
    clauses, params = [], {}
    _window(start, end, "ts", clauses, params)
    _scope_clauses(scope, clauses, params)
    row = wh.query(f"SELECT toUnixTimestamp64Milli(max(loaded_at)) AS until, count() AS n FROM priced_events "
                   f"{_where(clauses)}", params).row(0, named=True)
    return int(row["until"]) if row["n"] else None


def _loaded_until(until_ms: int | None, clauses: list[str], params: dict[str, Any]) -> None:
    if until_ms is not None:
        clauses.append("toUnixTimestamp64Milli(loaded_at) <= {loaded_until:Int64}")
        params["loaded_until"] = int(until_ms)


def budget_spend_by_hour(wh, scope: dict[str, str], metric: str, start: Any, end: Any,
                         event_ids: list[str] | None = None,
                         loaded_until: int | None = None) -> dict[datetime, Decimal | int]:
    """`budget_spend` per UTC hour of ts (the hour's start -> amount; hours without spend are absent), of every
    event in [start, end), or only of those of `event_ids` (looked up ID_CHUNK at a time), loaded until
    `loaded_until` (epoch ms, `budget_loaded_until`) if given. A budget defined mid-period takes its spend from
    before it existed from here, less what its owner counted live (streams/budgets/seed.py)."""
    chunks = [None] if event_ids is None else [event_ids[i:i + ID_CHUNK] for i in range(0, len(event_ids), ID_CHUNK)]
    out: dict[datetime, Decimal | int] = {}
    for chunk in chunks:
        clauses, params = [], {}
        _window(start, end, "ts", clauses, params)
        _scope_clauses(scope, clauses, params)
        _loaded_until(loaded_until, clauses, params)
        if chunk is not None:
            names = [f"e{i}" for i in range(len(chunk))]
            params.update(zip(names, chunk))
            clauses.append("event_id IN (" + ", ".join(f"{{{n}:String}}" for n in names) + ")")
        # the hour as epoch seconds: a DateTime column arrives as a datetime from chDB but not through every backend
        frame = wh.query(f"SELECT toUnixTimestamp(toStartOfHour(ts)) AS hour, {_budget_amount(metric)} AS amount "
                         f"FROM priced_events FINAL {_where(clauses)} GROUP BY hour", params)
        for row in frame.to_dicts() if frame.height else []:
            hour = datetime.fromtimestamp(int(row["hour"]), timezone.utc)
            amount = int(row["amount"] or 0) if metric == "tokens" else Decimal(row["amount"] or 0)
            out[hour] = out.get(hour, 0) + amount
    return out


def budget_spend_and_minutes(wh, scope: dict[str, str], metric: str, start: Any, end: Any,
                             minutes_from: Any) -> tuple[Decimal | int, dict[datetime, Decimal | int]]:
    """`budget_spend` over [start, end), and the part of it from `minutes_from` on per UTC minute of ts (minute start
    -> amount; minutes without spend are absent): a rebuilt budget's spend and the burn its forecast measures the
    rate on (streams/budgets/rebuild.py). One scan: the rows before `minutes_from` form one group of their own."""
    clauses, params = [], {}
    _window(start, end, "ts", clauses, params)
    _scope_clauses(scope, clauses, params)
    params["minutes_from"] = to_utc(minutes_from, "minutes_from")
    frame = wh.query("SELECT if(ts >= {minutes_from:DateTime64(3, 'UTC')}, toUnixTimestamp(toStartOfMinute(ts)), 0) "
                     f"AS minute, {_budget_amount(metric)} AS amount FROM priced_events FINAL {_where(clauses)} "
                     "GROUP BY minute", params)
    total: Decimal | int = 0 if metric == "tokens" else Decimal(0)
    minutes: dict[datetime, Decimal | int] = {}
    for row in frame.to_dicts() if frame.height else []:
        amount = int(row["amount"] or 0) if metric == "tokens" else Decimal(row["amount"] or 0)
        total += amount
        if row["minute"]:
            minutes[datetime.fromtimestamp(int(row["minute"]), timezone.utc)] = amount
    return total, minutes


def budget_newest_ids(wh, scope: dict[str, str], start: Any, end: Any, limit: int,
                      loaded_until: int | None = None) -> list[str]:
    """The event ids in a budget scope over [start, end) (loaded until `loaded_until`, epoch ms, if given), the
    `limit` most recently loaded first."""
    clauses, params = [], {"limit": int(limit)}
    _window(start, end, "ts", clauses, params)
    _scope_clauses(scope, clauses, params)
    _loaded_until(loaded_until, clauses, params)
    frame = wh.query(f"SELECT event_id FROM priced_events FINAL {_where(clauses)} "
                     "ORDER BY loaded_at DESC LIMIT {limit:UInt64}", params)
    return frame["event_id"].to_list() if frame.height else []


def budget_status(wh, *, budgets: list[str] | None = None, team: str | None = None) -> pl.DataFrame:
    """The latest enforcement record per budget: every budget_status column plus scope_label."""
    clauses, params = [], {}
    if budgets:
        names = [f"b{i}" for i in range(len(budgets))]
        clauses.append("budget IN (" + ", ".join(f"{{{n}:String}}" for n in names) + ")")
        params.update(zip(names, budgets))
    if team is not None:
        clauses.append("scope['team'] = {team:String}")
        params["team"] = team
    return wh.query(
        f"SELECT *, {_scope_label()} FROM budget_status {_where(clauses)}"
        " ORDER BY budget, updated_at DESC LIMIT 1 BY budget", params)


def budget_burndown(wh, budget: str, *, period_key: str | None = None, now: datetime | None = None) -> pl.DataFrame:
    """Hourly and cumulative spend of a budget's period (the latest period, or `period_key`), from the budget's
    scope and metric as last recorded. Columns: hour, amount, cumulative, limit_amount, percent; empty when
    the budget has no record. Token budgets: amounts are token counts (as Decimal)."""
    params: dict[str, Any] = {"budget": budget}
    where = "budget = {budget:String}"
    if period_key is not None:
        where += " AND period_key = {period_key:String}"
        params["period_key"] = period_key
    status = wh.query(f"SELECT * FROM budget_status WHERE {where} ORDER BY updated_at DESC LIMIT 1", params)
    schema = {"hour": pl.Datetime("ms", "UTC"), "amount": MONEY, "cumulative": MONEY, "limit_amount": MONEY,
              "percent": PERCENT}
    if status.height == 0:
        return pl.DataFrame(schema=schema)
    record = status.row(0, named=True)
    scope = dict(record["scope"]) if not isinstance(record["scope"], list) else {
        item["key"]: item["value"] for item in record["scope"]}
    start = to_utc(record["period_start"], "period_start")
    end = min(to_utc(record["period_end"], "period_end"), to_utc(now, "now") or datetime.now(timezone.utc))
    filters = {key: [value] for key, value in scope.items()}
    frame = showback(wh, bucket="hour", since=start, until=end, filters=filters)
    limit = Decimal(record["limit_amount"])
    hours, amounts, cumulative, percents, total = [], [], [], [], Decimal(0)
    for row in frame.iter_rows(named=True):
        amount = (Decimal(row["input_tokens"] + row["output_tokens"]) if record["metric"] == "tokens"
                  else row["cost_usd"])
        total += amount
        hours.append(row["bucket"])
        amounts.append(amount)
        cumulative.append(total)
        percents.append(_percent(total, limit))
    return pl.DataFrame({"hour": hours, "amount": amounts, "cumulative": cumulative,
                         "limit_amount": [limit] * len(hours), "percent": percents}, schema=schema)


# Alerts and anomalies --------------------------------------------------------------------------------


def alerts_history(wh, *, since: Any = None, until: Any = None, source: str | None = None,
                   severity: str | None = None, team: str | None = None, limit: int = 500) -> pl.DataFrame:
    """Alerts (latest copy per id), newest first, with their delivery state: every alerts column, scope_label,
    deliveries ("route:status(attempts)" joined by ", "), delivery_state ("failed" | "retrying" | "delivered"
    | "" when no delivery record) and last_error (of a failed or retrying route)."""
    clauses, params = [], {"limit": int(limit)}
    _window(since, until, "at", clauses, params)
    for name, value in (("source", source), ("severity", severity)):
        if value is not None:
            clauses.append(f"{name} = {{{name}:String}}")
            params[name] = value
    if team is not None:
        clauses.append("scope['team'] = {team:String}")
        params["team"] = team
    return wh.query(
        f"SELECT a.*, {_scope_label('a.scope')},"
        " d.deliveries AS deliveries, d.delivery_state AS delivery_state, d.last_error AS last_error"
        f" FROM (SELECT * FROM alerts FINAL {_where(clauses)}) AS a"
        " LEFT JOIN (SELECT alert_id,"
        " arrayStringConcat(arraySort(groupArray(concat(route, ':', status, '(', toString(attempts), ')'))), ', ')"
        " AS deliveries,"
        " multiIf(countIf(status = 'failed') > 0, 'failed', countIf(status = 'retrying') > 0, 'retrying',"
        " 'delivered') AS delivery_state,"
        " arrayStringConcat(groupArrayIf(last_error, status != 'delivered' AND last_error != ''), ' | ') AS last_error"
        " FROM alert_deliveries FINAL GROUP BY alert_id) AS d ON a.id = d.alert_id"
        " ORDER BY a.at DESC, a.id LIMIT {limit:UInt32}", params)


def anomalies(wh, *, since: Any = None, until: Any = None, status: str | None = None, kind: str | None = None,
              team: str | None = None, limit: int = 500) -> pl.DataFrame:
    """Anomalies overlapping [since, until) (latest version per id), newest first, with the latest ack:
    every anomalies column plus ack_action, ack_by, ack_note, ack_mute_until, ack_at (NULL when not acked)."""
    clauses, params = [], {"limit": int(limit)}
    start, end = to_utc(since, "since"), to_utc(until, "until")
    if start is not None:
        clauses.append("end_at >= {since:DateTime64(3, 'UTC')}")
        params["since"] = start
    if end is not None:
        clauses.append("start_at < {until:DateTime64(3, 'UTC')}")
        params["until"] = end
    for name, value in (("status", status), ("kind", kind)):
        if value is not None:
            clauses.append(f"{name} = {{{name}:String}}")
            params[name] = value
    if team is not None:
        clauses.append("scope_dim = 'team' AND scope_value = {team:String}")
        params["team"] = team
    acked = "k.anomaly_id != ''"
    return wh.query(
        "SELECT n.*, if(" + acked + ", k.action, NULL) AS ack_action, if(" + acked + ", k.by, NULL) AS ack_by,"
        " if(" + acked + ", k.note, NULL) AS ack_note, k.mute_until AS ack_mute_until,"
        " if(" + acked + ", k.at, NULL) AS ack_at"
        f" FROM (SELECT * FROM anomalies FINAL {_where(clauses)}) AS n"
        " LEFT JOIN (SELECT * FROM anomaly_acks FINAL) AS k ON n.id = k.anomaly_id"
        " ORDER BY n.detected_at DESC, n.id LIMIT {limit:UInt32}", params)


def anomaly_series(wh, scope_dim: str, scope_value: str, *, since: Any = None, until: Any = None,
                   bucket: str = "hour", team: str | None = None) -> pl.DataFrame:
    """Hourly (or `bucket`) series for an anomaly's scope: bucket, cost_usd, tokens (input + output),
    requests. scope_dim "" or "all" = all traffic."""
    filters = {} if scope_dim in ("", "all") else {scope_dim: [scope_value]}
    frame = showback(wh, bucket=bucket, since=since, until=until, filters=filters, team=team)
    return frame.select(
        "bucket", "cost_usd", (pl.col("input_tokens") + pl.col("output_tokens")).alias("tokens"),
        pl.col("events").alias("requests"))
