"""OpenAI organization usage and costs (admin key, `Authorization: Bearer`).

`GET /v1/organization/usage/completions?start_time=&bucket_width=1d|1h&group_by=...&limit=&page=` -> kind "usage";
`input_tokens` already includes `input_cached_tokens`; `num_model_requests` -> requests.
`GET /v1/organization/costs?start_time=&bucket_width=1d&group_by=line_item[&group_by=project_id]` -> kind "cost";
`amount.value` is dollars as a JSON number, read from the raw text as Decimal (never float).
Buckets carry Unix-second `start_time`/`end_time`; pages chain by `has_more`/`next_page`.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from collectors.provider_usage.common import (
    BUCKET_WIDTHS,
    AdminClient,
    ProviderFormatError,
    ProviderSpec,
    count,
    floor_to,
    from_unix,
    group_values,
    make_record,
)

DEFAULT_BASE_URL = "https://api.openai.com"
KEY_ENV = "OPENAI_ADMIN_KEY"
USAGE_GROUP_BY = ("project_id", "user_id", "api_key_id", "model", "batch", "service_tier")
COST_GROUP_BY = ("project_id", "line_item")
USAGE_METRICS = {"input_tokens", "output_tokens", "input_cached_tokens", "input_audio_tokens",
                 "output_audio_tokens", "num_model_requests"}
COST_METRICS = {"amount"}
USAGE_LIMITS = {"1d": 31, "1h": 168}  # documented maximum buckets per page
COST_LIMIT = 180


def client(base_url: str, key: str, key_source: str, **options: Any) -> AdminClient:
    return AdminClient("openai", base_url, {"Authorization": f"Bearer {key}"}, key_source, **options)


class OpenAIUsage(ProviderSpec):
    name = "openai"

    def __init__(self, bucket_width: str = "1d", group_by: tuple[str, ...] = ("model", "project_id")):
        unknown = [g for g in group_by if g not in USAGE_GROUP_BY]
        if unknown:
            raise ValueError(f"--group-by {','.join(unknown)}: OpenAI usage groups by {', '.join(USAGE_GROUP_BY)}")
        if bucket_width not in USAGE_LIMITS:
            raise ValueError(f"--bucket {bucket_width!r}: use one of {', '.join(USAGE_LIMITS)}")
        self.bucket_width = bucket_width
        self.group_by = tuple(group_by)

    def path(self, kind: str) -> str:
        return "/v1/organization/usage/completions" if kind == "usage" else "/v1/organization/costs"

    def params(self, kind: str, start: datetime) -> list[tuple[str, str]]:
        # No end_time: paging runs up to now, the current (incomplete) bucket included.
        if kind == "usage":
            params = [("start_time", str(int(start.timestamp()))), ("bucket_width", self.bucket_width),
                      ("limit", str(USAGE_LIMITS[self.bucket_width]))]
            return params + [("group_by", g) for g in self.group_by]
        # Costs come in daily buckets only; always split by line item (model + input/output) to be useful.
        day_start = floor_to(start, BUCKET_WIDTHS["1d"])
        params = [("start_time", str(int(day_start.timestamp()))), ("bucket_width", "1d"),
                  ("limit", str(COST_LIMIT)), ("group_by", "line_item")]
        return params + [("group_by", "project_id")] * ("project_id" in self.group_by)

    def bucket_bounds(self, bucket: dict[str, Any], where: str) -> tuple[datetime, datetime]:
        return from_unix(bucket.get("start_time"), f"{where}.start_time"), \
            from_unix(bucket.get("end_time"), f"{where}.end_time")

    def results(self, bucket: dict[str, Any]) -> Any:
        return bucket.get("results", bucket.get("result"))  # the docs show both spellings

    def _usage(self, result: dict[str, Any], at: str, start: datetime, end: datetime,
               fetched_at: str) -> dict[str, Any]:
        input_tokens = count(result, "input_tokens", at)
        cached = count(result, "input_cached_tokens", at)
        if cached > input_tokens:
            raise ProviderFormatError(f"{at}.input_cached_tokens ({cached}) exceeds input_tokens ({input_tokens})")
        group = group_values(result, USAGE_METRICS)
        return make_record(
            "openai", "usage", start, end, group, fetched_at, bucket_width=self.bucket_width,
            model=group.get("model"), project_id=group.get("project_id"), api_key_id=group.get("api_key_id"),
            user_id=group.get("user_id"), service_tier=group.get("service_tier"), batch=group.get("batch"),
            input_tokens=input_tokens, cached_input_tokens=cached, cache_write_tokens=0,
            output_tokens=count(result, "output_tokens", at), requests=count(result, "num_model_requests", at))

    def _cost(self, result: dict[str, Any], at: str, start: datetime, end: datetime,
              fetched_at: str) -> dict[str, Any]:
        amount = result.get("amount")
        if not isinstance(amount, dict):
            raise ProviderFormatError(f"{at}.amount: expected an object with value and currency, got {amount!r}")
        value = amount.get("value")
        # The client parsed JSON numbers with parse_float=Decimal; ints are exact too. Anything else is refused,
        # never read as $0.
        if isinstance(value, bool) or not isinstance(value, (Decimal, int)):
            raise ProviderFormatError(f"{at}.amount.value: expected a number of dollars, got {value!r}")
        currency = amount.get("currency")
        if not isinstance(currency, str) or currency.lower() != "usd":
            raise ProviderFormatError(f"{at}.amount.currency: only usd is supported, got {currency!r}")
        group = group_values(result, COST_METRICS)
        return make_record(
            "openai", "cost", start, end, group, fetched_at, bucket_width="1d",
            project_id=group.get("project_id"), line_item=group.get("line_item"), cost_usd=Decimal(value))
