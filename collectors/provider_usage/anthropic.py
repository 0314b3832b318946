"""Anthropic Admin API usage and cost reports (`x-api-key` admin key + `anthropic-version: 2023-06-01`).

`GET /v1/organizations/usage_report/messages?starting_at=&bucket_width=1d|1h&group_by[]=...&limit=&page=`
-> kind "usage". Anthropic's token fields exclude cache tokens from `uncached_input_tokens`, so
input_tokens = uncached_input_tokens + cache_read_input_tokens + cache_creation.ephemeral_{5m,1h}_input_tokens.
`GET /v1/organizations/cost_report?starting_at=&group_by[]=description[&group_by[]=workspace_id]` -> kind "cost";
`amount` is a decimal STRING in cents: dollars = amount / 100, exactly (no context rounding).
Buckets carry RFC 3339 `starting_at`/`ending_at`; pages chain by `has_more`/`next_page`.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from collectors.provider_usage.common import (
    BUCKET_WIDTHS,
    AdminClient,
    ProviderFormatError,
    ProviderSpec,
    count,
    floor_to,
    group_values,
    make_record,
    parse_rfc3339,
    rfc3339,
)

DEFAULT_BASE_URL = "https://api.anthropic.com"
KEY_ENV = "ANTHROPIC_ADMIN_KEY"
API_VERSION = "2023-06-01"
USAGE_GROUP_BY = ("api_key_id", "workspace_id", "model", "service_tier", "context_window", "inference_geo",
                  "account_id", "service_account_id")
USAGE_METRICS = {"uncached_input_tokens", "cache_read_input_tokens", "cache_creation", "output_tokens",
                 "server_tool_use"}
COST_METRICS = {"amount", "currency"}
USAGE_LIMITS = {"1d": 31, "1h": 168}  # documented maximum buckets per page
COST_LIMIT = 31


def client(base_url: str, key: str, key_source: str, **options: Any) -> AdminClient:
    headers = {"x-api-key": key, "anthropic-version": API_VERSION}
    return AdminClient("anthropic", base_url, headers, key_source, **options)


def cents_to_dollars(amount: Any, where: str) -> Decimal:
    """'123.78912' (cents) -> Decimal('1.2378912') dollars; a bad amount is an error, never $0."""
    if isinstance(amount, bool) or not isinstance(amount, (str, Decimal, int)):
        raise ProviderFormatError(f"{where}: expected a decimal string of cents, got {amount!r}")
    try:
        cents = Decimal(amount.strip() if isinstance(amount, str) else amount)
    except InvalidOperation:
        raise ProviderFormatError(f"{where}: expected a decimal string of cents, got {amount!r}") from None
    if not cents.is_finite():
        raise ProviderFormatError(f"{where}: expected a finite amount, got {amount!r}")
    # Exact: move the decimal point in the tuple (division and even scaleb round to the 28-digit context).
    sign, digits, exponent = cents.as_tuple()
    return Decimal((sign, digits, int(exponent) - 2))


class AnthropicUsage(ProviderSpec):
    name = "anthropic"

    def __init__(self, bucket_width: str = "1d", group_by: tuple[str, ...] = ("model", "workspace_id")):
        unknown = [g for g in group_by if g not in USAGE_GROUP_BY]
        if unknown:
            raise ValueError(f"--group-by {','.join(unknown)}: Anthropic usage groups by "
                             f"{', '.join(USAGE_GROUP_BY)}")
        if bucket_width not in USAGE_LIMITS:
            raise ValueError(f"--bucket {bucket_width!r}: use one of {', '.join(USAGE_LIMITS)}")
        self.bucket_width = bucket_width
        self.group_by = tuple(group_by)

    def path(self, kind: str) -> str:
        return "/v1/organizations/usage_report/messages" if kind == "usage" else "/v1/organizations/cost_report"

    def params(self, kind: str, start: datetime) -> list[tuple[str, str]]:
        # No ending_at: paging runs up to now, the current (incomplete) bucket included.
        if kind == "usage":
            params = [("starting_at", rfc3339(start)), ("bucket_width", self.bucket_width),
                      ("limit", str(USAGE_LIMITS[self.bucket_width]))]
            return params + [("group_by[]", g) for g in self.group_by]
        # Cost reports are daily; grouping by description splits them by model, token type and tier.
        params = [("starting_at", rfc3339(floor_to(start, BUCKET_WIDTHS["1d"]))), ("bucket_width", "1d"),
                  ("limit", str(COST_LIMIT)), ("group_by[]", "description")]
        return params + [("group_by[]", "workspace_id")] * ("workspace_id" in self.group_by)

    def bucket_bounds(self, bucket: dict[str, Any], where: str) -> tuple[datetime, datetime]:
        return parse_rfc3339(bucket.get("starting_at"), f"{where}.starting_at"), \
            parse_rfc3339(bucket.get("ending_at"), f"{where}.ending_at")

    def _usage(self, result: dict[str, Any], at: str, start: datetime, end: datetime,
               fetched_at: str) -> dict[str, Any]:
        creation = result.get("cache_creation") or {}
        if not isinstance(creation, dict):
            raise ProviderFormatError(f"{at}.cache_creation: expected an object, got {creation!r}")
        write_1h = count(creation, "ephemeral_1h_input_tokens", f"{at}.cache_creation")
        write_5m = count(creation, "ephemeral_5m_input_tokens", f"{at}.cache_creation")
        cache_read = count(result, "cache_read_input_tokens", at)
        group = group_values(result, USAGE_METRICS)
        tier = group.get("service_tier")
        return make_record(
            "anthropic", "usage", start, end, group, fetched_at, bucket_width=self.bucket_width,
            model=group.get("model"), workspace_id=group.get("workspace_id"), api_key_id=group.get("api_key_id"),
            service_tier=tier, batch=None if tier is None else tier == "batch",
            context_window=group.get("context_window"),
            input_tokens=count(result, "uncached_input_tokens", at) + cache_read + write_1h + write_5m,
            cached_input_tokens=cache_read, cache_write_tokens=write_1h + write_5m, cache_write_1h_tokens=write_1h,
            output_tokens=count(result, "output_tokens", at))

    def _cost(self, result: dict[str, Any], at: str, start: datetime, end: datetime,
              fetched_at: str) -> dict[str, Any]:
        currency = result.get("currency")
        if not isinstance(currency, str) or currency.upper() != "USD":
            raise ProviderFormatError(f"{at}.currency: only USD is supported, got {currency!r}")
        group = group_values(result, COST_METRICS)
        tier = group.get("service_tier")
        return make_record(
            "anthropic", "cost", start, end, group, fetched_at, bucket_width="1d",
            model=group.get("model"), workspace_id=group.get("workspace_id"), service_tier=tier,
            batch=None if tier is None else tier == "batch", context_window=group.get("context_window"),
            token_type=group.get("token_type"), cost_type=group.get("cost_type"),
            description=group.get("description"), cost_usd=cents_to_dollars(result.get("amount"), f"{at}.amount"))
