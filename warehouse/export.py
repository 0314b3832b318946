"""Chargeback export of one month: CSV, Parquet or a FOCUS 1.x cost-and-usage file (CSV).

CSV and Parquet: one row per group (the `group_by` dimensions, any of the report dimensions or `tag:<key>`)
with events, tokens and cost for the month; money as exact decimal strings in CSV and decimal128(38,12) in
Parquet. FOCUS: one row per UTC day, group, provider and model (a charge period is a day), with the FOCUS
columns a usage-based AI charge needs; BilledCost = EffectiveCost = ListCost = ContractedCost = our metered
cost (negotiated overrides are already in it; list prices are not split out). The totals equal
`tokenmeter report` for the same month to the last decimal (both read the same rollup).
"""

from __future__ import annotations

import csv
import io
import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import orjson
import polars as pl
import pyarrow.parquet as pq

from warehouse.backends import WarehouseError
from warehouse.showback import TAG_PREFIX, check_dims, is_tag, showback

FORMATS = ("focus", "csv", "parquet")
FOCUS_VERSION = "1.2"
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
MEASURES = ("events", "unpriced_events", "input_tokens", "output_tokens", "cached_input_tokens",
            "cache_write_tokens", "reasoning_tokens", "cost_usd")
FOCUS_COLUMNS = (
    "BilledCost", "BillingAccountId", "BillingAccountName", "BillingAccountType", "BillingCurrency",
    "BillingPeriodStart", "BillingPeriodEnd", "ChargeCategory", "ChargeClass", "ChargeDescription",
    "ChargeFrequency", "ChargePeriodStart", "ChargePeriodEnd", "ConsumedQuantity", "ConsumedUnit",
    "ContractedCost", "ContractedUnitPrice", "EffectiveCost", "HostProviderName", "InvoiceIssuerName", "ListCost",
    "ListUnitPrice", "PricingCategory", "PricingCurrency", "PricingQuantity", "PricingUnit", "ProviderName",
    "PublisherName", "RegionId", "RegionName", "ResourceId", "ResourceName", "ResourceType", "ServiceCategory",
    "ServiceName", "ServiceProviderName", "ServiceSubcategory", "SkuId", "SkuPriceId", "SubAccountId",
    "SubAccountName", "SubAccountType", "Tags",
    "x_Events", "x_UnpricedEvents", "x_InputTokens", "x_OutputTokens", "x_CachedInputTokens",
    "x_CacheWriteTokens", "x_ReasoningTokens",
)


def month_bounds(month: str) -> tuple[datetime, datetime]:
    """"YYYY-MM" -> [first instant, first instant of the next month) in UTC."""
    match = _MONTH.match(month.strip()) if isinstance(month, str) else None
    if not match or not 1 <= int(match[2]) <= 12:
        raise WarehouseError(f"month: {month!r} is not YYYY-MM")
    start = datetime(int(match[1]), int(match[2]), 1, tzinfo=timezone.utc)
    end = (start + timedelta(days=32)).replace(day=1)
    return start, end


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_text(text: str) -> str:
    """A text cell a spreadsheet will not run: a leading = + - @ tab or CR gets a ' in front (OWASP CSV
    injection advice), so `=HYPERLINK(...)` in a team or tag name shows as text. Only for text values: numbers
    (int, Decimal) are written as they are and stay numbers."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, Decimal):
        return format(value, "f")  # exact, never through float
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, datetime):
        return _iso(value)
    return safe_text(str(value))


def _csv(columns: list[str], rows: list[list[Any]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([[_cell(v) for v in row] for row in rows])
    return out.getvalue().encode()


def month_frame(wh, month: str, group_by: list[str], team: str | None = None) -> pl.DataFrame:
    """One row per group for the month: billing_period, the group dims, the measures."""
    start, end = month_bounds(month)
    frame = showback(wh, check_dims(list(group_by), "group_by"), since=start, until=end, team=team)
    return frame.select(pl.lit(month.strip()).alias("billing_period"), *group_by, *MEASURES)


def focus_rows(wh, month: str, group_by: list[str], team: str | None = None) -> list[dict[str, Any]]:
    """FOCUS rows (dicts keyed by FOCUS_COLUMNS) for the month: per day, group, provider and model."""
    start, end = month_bounds(month)
    dims = check_dims(list(group_by), "group_by")
    keys = dims + [d for d in ("provider", "model") if d not in dims]
    frame = showback(wh, keys, bucket="day", since=start, until=end, team=team)
    rows = []
    for row in frame.iter_rows(named=True):
        group = {(d[len(TAG_PREFIX):] if is_tag(d) else d): row[d] for d in dims}
        label = ",".join(f"{k}={v}" for k, v in group.items())
        provider, model = row["provider"], row["model"]
        tokens = int(row["input_tokens"]) + int(row["output_tokens"])
        cost = row["cost_usd"]
        day = row["bucket"].astimezone(timezone.utc) if row["bucket"].tzinfo else row["bucket"].replace(tzinfo=timezone.utc)
        rows.append({
            "BilledCost": cost, "BillingAccountId": "tokenmeter", "BillingAccountName": "tokenmeter showback",
            "BillingAccountType": "Showback", "BillingCurrency": "USD",
            "BillingPeriodStart": start, "BillingPeriodEnd": end, "ChargeCategory": "Usage", "ChargeClass": None,
            "ChargeDescription": f"{model} tokens ({provider})" + (f" for {label}" if label else ""),
            "ChargeFrequency": "Usage-Based", "ChargePeriodStart": day, "ChargePeriodEnd": day + timedelta(days=1),
            "ConsumedQuantity": tokens, "ConsumedUnit": "Tokens", "ContractedCost": cost, "ContractedUnitPrice": None,
            "EffectiveCost": cost, "HostProviderName": provider, "InvoiceIssuerName": provider, "ListCost": cost,
            "ListUnitPrice": None, "PricingCategory": "Standard", "PricingCurrency": "USD",
            "PricingQuantity": tokens, "PricingUnit": "Tokens", "ProviderName": provider, "PublisherName": provider,
            "RegionId": None, "RegionName": None, "ResourceId": f"{provider}/{model}", "ResourceName": model,
            "ResourceType": "Model", "ServiceCategory": "AI and Machine Learning", "ServiceName": provider,
            "ServiceProviderName": provider, "ServiceSubcategory": "Generative AI", "SkuId": f"{provider}/{model}",
            "SkuPriceId": None, "SubAccountId": label or None, "SubAccountName": label or None,
            "SubAccountType": "+".join(dims) or None,
            "Tags": orjson.dumps(group).decode() if group else None,
            "x_Events": row["events"], "x_UnpricedEvents": row["unpriced_events"],
            "x_InputTokens": row["input_tokens"], "x_OutputTokens": row["output_tokens"],
            "x_CachedInputTokens": row["cached_input_tokens"], "x_CacheWriteTokens": row["cache_write_tokens"],
            "x_ReasoningTokens": row["reasoning_tokens"],
        })
    return rows


def export_month(warehouse, month: str, fmt: str, group_by: list[str], team: str | None = None) -> bytes:
    """The month's chargeback as bytes: fmt "focus" (FOCUS 1.x CSV), "csv" or "parquet"; `team` limits it to
    one team (team-scoped users)."""
    if fmt not in FORMATS:
        raise WarehouseError(f"format: {fmt!r} is not one of {', '.join(FORMATS)}")
    group_by = [g.strip() for g in group_by if g and g.strip()]
    if fmt == "focus":
        rows = focus_rows(warehouse, month, group_by, team)
        return _csv(list(FOCUS_COLUMNS), [[row[c] for c in FOCUS_COLUMNS] for row in rows])
    frame = month_frame(warehouse, month, group_by, team)
    if fmt == "csv":
        return _csv(frame.columns, [list(r) for r in frame.iter_rows()])
    out = io.BytesIO()
    pq.write_table(frame.to_arrow(), out)  # cost_usd stays decimal128(38, 12)
    return out.getvalue()
