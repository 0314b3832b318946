"""Which LiteLLM convention a payload's Anthropic-style cache writes follow.

LiteLLM's OpenAI-shaped usage for Anthropic changed meaning over versions:
- 1.72.x: `prompt_tokens` = input_tokens + cache READS (writes outside it);
- 1.110.x: `prompt_tokens` = input_tokens + cache reads + cache WRITES (OpenAI semantics);
- Anthropic's own convention (cache excluded) appears in pass-through / `anthropic_messages` logging (litellm PR
  #23342); a chat completion call (`call_type` completion/acompletion) never logs it: LiteLLM's Anthropic
  transformation adds the cache reads to prompt_tokens in every version, so that reading is not tried for them.
The payload names no version, so each reading is tried: a reading whose uncached input would be negative is
impossible; among the possible ones, the payload's own `response_cost` (checked against the per-token prices
LiteLLM logged in `model_map_information`) picks the one LiteLLM billed. If readings that lead to different
usage remain, the current rule (writes inside) is used and the event is marked.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

ASSUMED_CACHE_WRITES_IN_PROMPT = "litellm-cache-writes-assumed-in-prompt-tokens"
# (name, are cache reads inside prompt_tokens, are cache writes inside prompt_tokens), best rule first.
_READINGS = (("writes-inside", True, True), ("reads-only", True, False), ("exclusive", False, False))
# Call types of LiteLLM's OpenAI-shaped chat path, whose prompt_tokens always include cache reads.
_CHAT_CALL_TYPES = frozenset({"completion", "acompletion"})
_PRICE_KEYS = ("input_cost_per_token", "cache_read_input_token_cost", "cache_creation_input_token_cost",
               "output_cost_per_token")


def _decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return None
    return number if number.is_finite() and number >= 0 else None


def _model_prices(payload: dict[str, Any]) -> dict[str, Decimal] | None:
    info = payload.get("model_map_information")
    value = info.get("model_map_value") if isinstance(info, dict) else None
    if not isinstance(value, dict):
        return None
    prices = {key: _decimal(value.get(key)) for key in _PRICE_KEYS}
    if prices["input_cost_per_token"] is None or prices["output_cost_per_token"] is None:
        return None
    prices["cache_read_input_token_cost"] = prices["cache_read_input_token_cost"] or prices["input_cost_per_token"]
    prices["cache_creation_input_token_cost"] = (prices["cache_creation_input_token_cost"]
                                                 or prices["input_cost_per_token"])
    return prices


def _cost(counts: dict[str, int], prices: dict[str, Decimal]) -> Decimal:
    uncached = counts["input_tokens"] - counts["cached_input_tokens"] - counts["cache_write_tokens"]
    return (uncached * prices["input_cost_per_token"]
            + counts["cached_input_tokens"] * prices["cache_read_input_token_cost"]
            + counts["cache_write_tokens"] * prices["cache_creation_input_token_cost"]
            + counts["output_tokens"] * prices["output_cost_per_token"])


def _matches(computed: Decimal, logged: Decimal) -> bool:
    # response_cost is a float sum: allow its rounding noise, nothing more.
    return abs(computed - logged) <= max(Decimal("1e-9"), logged * Decimal("1e-6"))


def resolve_cache_convention(counts: dict[str, int], payload: dict[str, Any]) -> tuple[dict[str, int], str | None]:
    """`counts` as read with OpenAI semantics (collectors.usage.openai_counts: input_tokens = prompt_tokens);
    returns the counts LiteLLM meant, and an assumption marker when the payload cannot settle it."""
    writes = counts["cache_write_tokens"]
    if writes == 0:
        return counts, None  # reads are inside prompt_tokens in every version: nothing to decide
    prompt, reads = counts["input_tokens"], counts["cached_input_tokens"]
    candidates: list[dict[str, int]] = []
    call_type = payload.get("call_type")  # anyone can write the payload: a list or object here is no call type
    chat = type(call_type) is str and call_type in _CHAT_CALL_TYPES
    for _name, reads_inside, writes_inside in _READINGS:
        if chat and not reads_inside:
            continue
        uncached = prompt - (reads if reads_inside else 0) - (writes if writes_inside else 0)
        if uncached < 0:
            continue
        candidate = counts | {"input_tokens": uncached + reads + writes}
        if candidate not in candidates:
            candidates.append(candidate)
    if not candidates:  # no reading fits (reads beyond prompt_tokens): the counts as read, which the contract refuses
        return counts, None
    prices, logged = _model_prices(payload), _decimal(payload.get("response_cost"))
    if len(candidates) > 1 and prices is not None and logged:
        billed = [c for c in candidates if _matches(_cost(c, prices), logged)]
        if billed:
            candidates = billed
    if len(candidates) == 1:
        return candidates[0], None
    return candidates[0], ASSUMED_CACHE_WRITES_IN_PROMPT
