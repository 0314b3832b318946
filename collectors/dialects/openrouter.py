"""OpenRouter pass-through: what its OpenAI-compatible responses say about cost, for every dialect that carries them.

OpenRouter answers in the OpenAI Chat Completions shape (and streams it as chunks) with extras
(openrouter.ai/docs "Usage Accounting"; recorded responses in pydantic-ai's test_openrouter cassettes):
- `id` `gen-...`, `model` as OpenRouter's slug with the maker's prefix (`openai/gpt-4.1-mini`,
  `anthropic/claude-4.5-sonnet-20250929`), `provider` naming the upstream that served it (`OpenAI`,
  `Amazon Bedrock`, `Google AI Studio`);
- `usage` in OpenAI's convention (prompt_tokens includes `prompt_tokens_details.cached_tokens` and
  `cache_write_tokens`; completion_tokens includes `completion_tokens_details.reasoning_tokens`), plus
  `cost` (credits, 1 credit = 1 USD, what OpenRouter charged), `is_byok`, and `cost_details`
  {upstream_inference_cost, upstream_inference_prompt_cost, upstream_inference_completions_cost}.
With bring-your-own-key (`is_byok: true`) `cost` is only OpenRouter's fee and the upstream bills the user's own key
`upstream_inference_cost`, so the call cost the sum; otherwise `cost` is the whole charge (upstream_inference_cost
is then the same money or null, never added).

The event's provider is `openrouter` (who billed), its model OpenRouter's slug (the catalog resolves the maker
from the prefix for the price check), and `reported_cost_usd` the cost above: the worker takes it as the cost of
record (streams/pricing/reported.py).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from collectors.errors import DialectError, join_path

PROVIDER = "openrouter"


def _amount(value: Any, path: str) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise DialectError(f"expected a cost in USD (a number), got {type(value).__name__}", path)
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise DialectError(f"expected a cost in USD (a number), got {value!r}", path) from None
    if not amount.is_finite() or amount < 0:
        raise DialectError(f"expected a cost >= 0 in USD, got {value!r}", path)
    return amount


def reported_cost(usage: Any, path: str = "usage") -> Decimal | None:
    """The USD an OpenRouter call cost, from its usage object; None when the usage reports no cost."""
    if not is_openrouter_usage(usage) or usage.get("cost") is None:
        return None
    cost = _amount(usage["cost"], join_path(path, "cost"))
    if usage.get("is_byok") is True:
        details = usage.get("cost_details")
        if details is not None and not isinstance(details, dict):
            raise DialectError(f"expected an object, got {type(details).__name__}", join_path(path, "cost_details"))
        upstream = _amount((details or {}).get("upstream_inference_cost"),
                           join_path(path, "cost_details.upstream_inference_cost"))
        cost += upstream or 0
    return cost


# OpenTelemetry spans of OpenRouter calls (its Broadcast feature exports OTLP/JSON "using the GenAI conventions for
# model, token usage and cost"; the cost attribute's name is not documented, these are the spellings in use).
OTEL_COST_ATTRIBUTES = ("gen_ai.usage.cost", "gen_ai.usage.total_cost")


def reported_cost_attribute(attributes: dict[str, Any], path: str) -> Decimal | None:
    """The cost an OpenRouter span reports (only read for provider openrouter: other emitters put their own
    catalog's estimate in the same attribute, which is not a bill)."""
    for key in OTEL_COST_ATTRIBUTES:
        if attributes.get(key) is not None:
            return _amount(attributes[key], f"{path}[{key}]")
    return None


def is_openrouter_usage(usage: Any) -> bool:
    """OpenRouter's usage: `cost` with `is_byok` or `cost_details` (LiteLLM adds a bare `cost` of its own
    computation to streamed usage, which is not a provider's bill)."""
    return isinstance(usage, dict) and "cost" in usage and ("is_byok" in usage or "cost_details" in usage)


def is_openrouter_response(response: Any) -> bool:
    """An OpenRouter response or stream chunk: a `gen-` id with an upstream `provider`, or OpenRouter's usage."""
    if not isinstance(response, dict):
        return False
    if is_openrouter_usage(response.get("usage")):
        return True
    response_id = response.get("id")
    return isinstance(response_id, str) and response_id.startswith("gen-") and isinstance(response.get("provider"), str)


__all__ = ["OTEL_COST_ATTRIBUTES", "PROVIDER", "is_openrouter_response", "is_openrouter_usage", "reported_cost",
           "reported_cost_attribute"]
