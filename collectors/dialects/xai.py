"""xAI's API answers: what their usage says beyond OpenAI's shape, for the dialects that read them (`openai`).

xAI answers Chat Completions and the Responses API in OpenAI's shape, with extras in `usage`
(docs.x.ai "Models and Pricing" / tools pricing; LiteLLM's xAI provider, litellm/llms/xai/, 1.110.2):
- `cost_in_usd_ticks`: what xAI billed for the call, in 1e-10 USD (an integer, so exact: LiteLLM's
  `USD_TICKS_PER_DOLLAR = 10_000_000_000`), tokens and server-side tool calls (web / X search, code execution,
  attachment and collections search: $2.50-$10 per 1,000 calls) together;
- `num_sources_used` (Live Search, $25 per 1,000 sources, retired 2025-12-15), `num_server_side_tools_used`,
  `server_side_tool_usage_details` {web_search_calls, x_search_calls, ...};
- Chat Completions count reasoning outside `completion_tokens` (collectors.usage folds it in).
An answer carrying these is an event of provider `xai` (unless the sender names another), and a reported cost is
the cost of record checked against the catalog, as OpenRouter's (streams/pricing/reported.py). Without
`cost_in_usd_ticks` (older answers) the tool calls and Live Search sources are not priced: no fee of xAI's is in
the catalog.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from collectors.errors import DialectError, join_path

PROVIDER = "xai"
USD_TICKS_PER_DOLLAR_EXPONENT = 10  # 1 tick = 1e-10 USD
XAI_USAGE_KEYS = ("cost_in_usd_ticks", "num_sources_used", "num_server_side_tools_used",
                  "server_side_tool_usage_details")


def is_xai_usage(usage: Any) -> bool:
    """A usage object with a field only xAI sends."""
    return isinstance(usage, dict) and any(key in usage for key in XAI_USAGE_KEYS)


def reported_cost(usage: Any, path: str = "usage") -> Decimal | None:
    """The USD xAI billed for the call (`cost_in_usd_ticks` / 1e10, exact); None when the usage reports none."""
    if not isinstance(usage, dict) or usage.get("cost_in_usd_ticks") is None:
        return None
    ticks = usage["cost_in_usd_ticks"]
    if type(ticks) is not int or ticks < 0:
        raise DialectError(f"expected a whole number of ticks >= 0 (1e-10 USD), got {ticks!r}",
                           join_path(path, "cost_in_usd_ticks"))
    return Decimal(ticks).scaleb(-USD_TICKS_PER_DOLLAR_EXPONENT)


__all__ = ["PROVIDER", "is_xai_usage", "reported_cost"]
