"""Charges: spend split by priced part (one row per day, provider, model, dimensions and part), the grain of
the FOCUS export (one SKU per token kind) and of shared-cost allocation.

Parts are the pricing lines of `streams.pricing.book.cost_lines` / `fee_lines`: token kinds (input = uncached
input, cached_input, cache_write_5m, cache_write_1h, output = non-reasoning output, reasoning), the flat
`request` price and one line per server-side tool kind. Quantities are tokens (requests for request and tool
lines); costs are the event's `cost_breakdown` lines. Any difference between an event's cost_usd and the sum
of its lines (none for events priced by tokenmeter) is the part `unitemized`, so the charges of a window add
up to `tokenmeter report` exactly. Events and unpriced events are counted once, on the `input` row.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from warehouse.showback import check_dims, make_plan

TOKEN_PARTS = ("input", "cached_input", "cache_write_5m", "cache_write_1h", "output", "reasoning")
UNITEMIZED = "unitemized"
_COST = "toDecimal128({}, 12)"


def _parts_array() -> str:
    """ClickHouse array of (part, quantity, cost, events, unpriced) tuples for one priced_events row."""
    quantities = {
        "input": "toInt64(input_tokens) - toInt64(cached_input_tokens) - toInt64(cache_write_tokens)",
        "cached_input": "toInt64(cached_input_tokens)",
        "cache_write_5m": "toInt64(cache_write_tokens) - toInt64(cache_write_1h_tokens)",
        "cache_write_1h": "toInt64(cache_write_1h_tokens)",
        "output": "toInt64(output_tokens) - toInt64(reasoning_tokens)",
        "reasoning": "toInt64(reasoning_tokens)",
    }
    first = "toUInt64(1), toUInt64(pricing_status = 'unpriced')"
    none = "toUInt64(0), toUInt64(0)"
    tokens = ", ".join(
        f"('{part}', {quantities[part]}, {_COST.format(f'cost_breakdown[{chr(39)}{part}{chr(39)}]')}, "
        f"{first if part == 'input' else none})" for part in TOKEN_PARTS)
    token_list = ", ".join(f"'{p}'" for p in TOKEN_PARTS)
    others = (f"arrayMap(k -> (k, toInt64(if(k = 'request', 1, tool_requests[k])), "
              f"{_COST.format('cost_breakdown[k]')}, {none}), "
              f"arrayFilter(k -> k NOT IN ({token_list}), mapKeys(cost_breakdown)))")
    rest = (f"[('{UNITEMIZED}', toInt64(0), "
            f"{_COST.format('cost_usd - arraySum(mapValues(cost_breakdown))')}, {none})]")
    return f"arrayConcat([{tokens}], {others}, {rest})"


def charges(wh, dims: list[str], since: datetime, until: datetime, *, by_day: bool = True,
            filters: dict[str, list[str]] | None = None, with_tags: bool = False) -> list[dict[str, Any]]:
    """Rows {day?, provider, model, *dims, [tags_json], part, quantity, cost (Decimal), events,
    unpriced_events} over [since, until), ordered; rows with nothing in them are left out. with_tags adds the
    whole tag map as JSON (`tags_json`), for month-close snapshots that any later grouping can be cut from."""
    dims = check_dims([d for d in dims if d not in ("provider", "model")], "group_by")
    plan = make_plan("priced_events", dims, dict(filters or {}), since, until, True)
    keys = (["toDateTime64(toStartOfDay(ts), 0, 'UTC') AS day"] if by_day else []) + [
        "provider", "model"] + [f"{expr} AS d{i}" for i, expr in enumerate(plan.dims.values())]
    names = (["day"] if by_day else []) + ["provider", "model"] + [f"d{i}" for i in range(len(dims))]
    if with_tags:
        keys.append("toJSONString(tags) AS tags_json")
        names.append("tags_json")
    sql = (f"SELECT {', '.join(keys)}, p.1 AS part, sum(p.2) AS quantity, toDecimal128(sum(p.3), 12) AS cost, "
           f"sum(p.4) AS events, sum(p.5) AS unpriced_events "
           f"FROM priced_events ARRAY JOIN {_parts_array()} AS p {plan.where()} "
           f"GROUP BY {', '.join(names)}, part HAVING quantity != 0 OR cost != 0 OR events != 0 "
           f"ORDER BY {', '.join(names)}, part")
    frame = wh.query(sql, plan.params).rename({f"d{i}": name for i, name in enumerate(dims)})
    return list(frame.iter_rows(named=True))
