"""A priced event's warehouse row without pydantic, for the events that provably validate (issue 14).

`schema.event_to_row` validates with `PricedEvent.model_validate` (~25 µs per event, most of the loader's and
the re-price's time). Nearly every event the loader sees is one the worker wrote, in one regular shape. This
module takes exactly those: known keys of the right JSON types, values in range, timestamps of the form
`YYYY-MM-DDTHH:MM:SS[.f{1,6}](Z|±HH:MM)`, money as plain decimal text that fits Decimal(18,12). It returns
the same row `event_to_row` builds, or None, and then `event_to_row` runs pydantic, whose error text stays the
dead letter's reason. Conservative on purpose: a row taken here that pydantic would refuse or read differently
breaks equivalence; None only costs time. tests/warehouse/test_fast_rows.py holds both paths together.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from tokenmeter.call_keys import call_keys
from tokenmeter.events import (ATTRIBUTION_DIMENSIONS, EARLIEST_EVENT_TS, MAX_EVENT_FUTURE, MAX_TOKENS,
                               MAX_TOOL_REQUESTS, TOOL_REQUEST_KINDS, USAGE_PARTS, Correlation, PricedEvent)
from tokenmeter.stored_money import COST_PRECISION, COST_SCALE

PRICED_KEYS = frozenset(PricedEvent.model_fields) - {"content"}
# A provider-reported cost taken here (the row has no column of its own: the cost and lines carry it): decimal
# text below MAX_REPORTED_COST_USD with at most 12 decimals, as the worker writes it; any other form, pydantic.
_REPORTED_COST = re.compile(r"(0|[1-9]\d{0,5})(\.\d{1,12})?")
ATTRIBUTION_KEYS = frozenset((*ATTRIBUTION_DIMENSIONS, "tags"))
USAGE_KEYS = frozenset((*USAGE_PARTS, "tool_requests"))
PRICE_KEYS = frozenset(("entry", "effective_from", "catalog_version", "override"))
TOOL_KINDS = frozenset(TOOL_REQUEST_KINDS)
MAX_EXACT_FLOAT_INT = 2**53
_AWARE_TS = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})")
_NAIVE_OR_AWARE_TS = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})?")
# Decimal(18,12) without rounding: at most 6 integer digits and 12 decimals (schema._cost's limits, named once in
# tokenmeter/stored_money.py).
_DIGITS, _DECIMALS = COST_PRECISION - COST_SCALE, COST_SCALE
_MONEY = re.compile(rf"\d{{1,{_DIGITS}}}(\.\d{{1,{_DECIMALS}}})?")
# a breakdown line: reported_difference has either sign
_SIGNED_MONEY = re.compile(rf"-?\d{{1,{_DIGITS}}}(\.\d{{1,{_DECIMALS}}})?")
_UTC = timezone.utc


def _time(value: Any, pattern: re.Pattern) -> datetime | None:
    if type(value) is not str or pattern.fullmatch(value) is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=_UTC)
    return moment.astimezone(_UTC)


def _money(value: Any, pattern: re.Pattern = _MONEY) -> Decimal | None:
    if type(value) is not str or pattern.fullmatch(value) is None:
        return None
    return Decimal(value)


def _float(value: Any) -> tuple[bool, float | None]:
    kind = type(value)
    if value is None:
        return True, None
    if kind is float:
        return (value >= 0 and math.isfinite(value)), value
    if kind is int:
        return 0 <= value <= MAX_EXACT_FLOAT_INT, float(value)
    return False, None


def _usage(value: Any) -> tuple[tuple[int, ...], list[tuple[str, int]]] | None:
    if type(value) is not dict or not USAGE_KEYS.issuperset(value):
        return None
    get = value.get
    parts = tuple(get(name, 0) for name in USAGE_PARTS)
    for v in parts:
        if type(v) is not int or not 0 <= v <= MAX_TOKENS:
            return None
    inp, cached, write, write_1h, out, reasoning = parts
    if cached + write > inp or write_1h > write or reasoning > out:
        return None
    tools = get("tool_requests")
    if tools is None:
        return parts, []
    if type(tools) is not dict:
        return None
    for kind, count in tools.items():
        if kind not in TOOL_KINDS or type(count) is not int or not 0 <= count <= MAX_TOOL_REQUESTS:
            return None
    return parts, [(kind, count) for kind, count in tools.items() if count]


def _attribution(value: Any) -> tuple[list[str], list[tuple[str, str]]] | None:
    if type(value) is not dict or not ATTRIBUTION_KEYS.issuperset(value):
        return None
    dims = []
    for dim in ATTRIBUTION_DIMENSIONS:
        v = value.get(dim)
        if v is not None and type(v) is not str:
            return None
        dims.append(v or "")
    tags = value.get("tags")
    if tags is None:
        if "tags" in value:
            return None
        return dims, []
    if type(tags) is not dict:
        return None
    for k, v in tags.items():
        if type(k) is not str or type(v) is not str:
            return None
    return dims, list(tags.items())


def _correlation_bounds() -> tuple[tuple[str, int, int], ...] | None:
    """Correlation's ids in model order with their length bounds, from the model; None (pydantic decides every
    correlation) if one is not an optional string."""
    bounds = []
    for name, info in Correlation.model_fields.items():
        if info.annotation != (str | None):
            return None
        low = max((getattr(m, "min_length", 0) or 0 for m in info.metadata), default=0)
        high = min((m.max_length for m in info.metadata if getattr(m, "max_length", None) is not None), default=2**62)
        bounds.append((name, low, high))
    return tuple(bounds)


CORRELATION_IDS = _correlation_bounds()
CORRELATION_KEYS = frozenset(name for name, _, _ in CORRELATION_IDS or ())


def _correlation(value: Any) -> list[tuple[str, str]] | None:
    """The correlation column (ids present, model order) of a correlation object or null; None for pydantic."""
    if value is None:
        return []
    if type(value) is not dict or CORRELATION_IDS is None or not CORRELATION_KEYS.issuperset(value):
        return None
    ids = []
    for name, low, high in CORRELATION_IDS:
        v = value.get(name)
        if v is not None:
            if type(v) is not str or not low <= len(v) <= high:
                return None
            ids.append((name, v))
    return ids


def fast_row(item: Any, now: datetime | None = None) -> dict[str, Any] | None:
    """The `priced_events` row of a PricedEvent JSON dict, or None when pydantic must decide."""
    if type(item) is not dict or not PRICED_KEYS.issuperset(item):
        return None
    get = item.get
    event_id, source, provider, model = get("event_id"), get("source"), get("provider"), get("model")
    operation, status = get("operation", "chat"), get("status", "ok")
    if not (type(event_id) is str and 0 < len(event_id) <= 512 and type(source) is str and source
            and type(provider) is str and provider and type(model) is str and model and type(operation) is str
            and (status == "ok" or status == "error") and type(status) is str):
        return None
    ts = _time(get("ts"), _AWARE_TS)
    if ts is None or ts < EARLIEST_EVENT_TS or ts > (now or datetime.now(_UTC)) + MAX_EVENT_FUTURE:
        return None
    attribution = _attribution(get("attribution", {}))
    usage = _usage(get("usage"))
    if attribution is None or usage is None:
        return None
    latency_ok, latency = _float(get("latency_ms"))
    ttft_ok, ttft = _float(get("ttft_ms"))
    batch, service_tier, assumption = get("batch", False), get("service_tier"), get("usage_assumption")
    if not (latency_ok and ttft_ok and type(batch) is bool and (service_tier is None or type(service_tier) is str)
            and (assumption is None or (type(assumption) is str and 0 < len(assumption) <= 200))):
        return None
    tokens_source, status_priced, reason = get("tokens_source"), get("pricing_status"), get("unpriced_reason")
    if not ((tokens_source == "provider" or tokens_source == "estimated") and type(tokens_source) is str
            and (status_priced == "priced" or status_priced == "unpriced") and type(status_priced) is str
            and (reason is None or type(reason) is str)):
        return None
    cost = _money(get("cost_usd"))
    breakdown_in = get("cost_breakdown", {})
    if cost is None or type(breakdown_in) is not dict:
        return None
    breakdown = []
    for part, text in breakdown_in.items():
        amount = _money(text, _SIGNED_MONEY)
        if amount is None or type(part) is not str:
            return None
        breakdown.append((part, amount))
    price = get("price")
    if price is None:
        price_values = ("", "", "", "")
    else:
        if type(price) is not dict or not PRICE_KEYS.issuperset(price) or type(price.get("entry")) is not str:
            return None
        values = (price.get("entry"), price.get("effective_from"), price.get("catalog_version"), price.get("override"))
        if any(v is not None and type(v) is not str for v in values):
            return None
        price_values = tuple(v or "" for v in values)
    priced_at_text = get("priced_at")
    priced_at = None
    if priced_at_text is not None:
        priced_at = _time(priced_at_text, _NAIVE_OR_AWARE_TS)
        if priced_at is None:
            return None
    correlation = _correlation(get("correlation"))
    if correlation is None:
        return None
    reported, check = get("reported_cost_usd"), get("reported_cost_check")
    if not ((reported is None or (type(reported) is str and _REPORTED_COST.fullmatch(reported) is not None))
            and (check is None or type(check) is str)):
        return None
    dims, tags = attribution
    parts, tools = usage
    return {
        "event_id": event_id, "ts": ts, "source": source, "provider": provider, "model": model,
        "operation": operation, "status": status,
        "org": dims[0], "team": dims[1], "project": dims[2], "user": dims[3], "api_key": dims[4], "feature": dims[5],
        "route": dims[6], "tags": tags,
        "input_tokens": parts[0], "cached_input_tokens": parts[1], "cache_write_tokens": parts[2],
        "cache_write_1h_tokens": parts[3], "output_tokens": parts[4], "reasoning_tokens": parts[5],
        "latency_ms": latency, "ttft_ms": ttft, "batch": batch, "service_tier": service_tier or "",
        "tokens_source": tokens_source, "cost_usd": cost, "cost_breakdown": breakdown,
        "pricing_status": status_priced, "unpriced_reason": reason or "",
        "price_entry": price_values[0], "price_effective_from": price_values[1],
        "catalog_version": price_values[2], "price_override": price_values[3],
        "priced_at": priced_at, "tool_requests": tools, "usage_assumption": assumption or "",
        "correlation": correlation, "call_keys": call_keys(provider, dict(correlation)) if correlation else [],
    }


__all__ = ["fast_row"]
