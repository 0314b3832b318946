"""The most a call can cost before it is made: what a reservation holds against a budget.

The rule (pure, Decimal, from the same catalog and overrides the worker prices with, streams/pricing/book.py):
- input: every prompt token at the dearest input price the call could be billed at: plain input, cache read,
  5-minute or 1-hour cache write (a cache write costs more than plain input at Anthropic: 1.25x / 2x);
- output: every output token at the dearest of output and reasoning;
- long context: the prices of the input tier the prompt falls in (above the model's long-context threshold, or
  the highest of several thresholds it exceeds, as the worker prices the whole call); when the prompt was *counted*
  here (an estimate, not the provider's number) and is within 10 % of the next threshold, the dearer of both;
- thinking: when the model has a thinking-mode output price (`thinking_output`, which bills every output token of a
  call with reasoning), the dearer of that and the plain output price;
- service tier: the tier the request names (`batch`, `flex`, `priority`); none named means the dearest tier
  the call could be served at (standard, flex, priority: OpenAI's `auto` may serve priority), never batch;
- the flat per-request price, and a negotiated override rule (`factor` or own prices) as the worker applies it;
- tool fees (web search, ...) are unknown before the call and are not held: document the gap (docs/budgets.md).
A token budget holds prompt + max output tokens.

Output tokens: `max_output_tokens` from the request; when absent, the model's output limit from the catalog
(`max_output_tokens` of an entry, when the catalog has it) or a clear error: a reservation never guesses low.
A request asking for more than that limit is held AT the limit (and says so): the provider never bills more output
than its model's limit (OpenAI and Anthropic refuse a larger max_tokens with a 400, gateways that clamp send the
limit), so holding the asked amount only refused calls the budget could afford (walk36: gpt-4o with 100,000, ~6x
its 16,384). Not refused here either: whether the provider accepts the request is the provider's to say, and a
catalog that lags a raised limit would refuse calls the provider serves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import ROUND_CEILING, Decimal
from typing import Any

from streams.pricing.book import COST_QUANTUM, STANDARD_TIERS
from streams.pricing.schema import SERVICE_TIERS

INPUT_PARTS = ("input", "cached_input", "cache_write_5m", "cache_write_1h")
OUTPUT_PARTS = ("output", "reasoning")
ESTIMATE_MARGIN = Decimal("0.10")  # a counted prompt near the long-context threshold may be above it


class WorstCaseError(ValueError):
    """The request cannot be priced in advance; `reason` says why (answered as 400 / 422)."""

    def __init__(self, reason: str, status: int = 422):
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class WorstCase:
    cost_usd: Decimal  # rounded up to the book's quantum: a hold is never below the worst case
    tokens: int  # prompt + max output tokens (token budgets)
    prompt_tokens: int
    max_output_tokens: int  # the output tokens held: the request's, at most the model's output limit
    entry: str  # catalog entry priced, e.g. openai/gpt-4o
    rule: str  # which prices were taken, for people: "priority, long context"
    max_output_tokens_asked: int | None = None  # the request's own bound (None: not given, the limit was held)
    output_limit: int | None = None  # the model's output limit from the catalog, when it has one


def _tiers_for(service_tier: str | None, version: Any) -> list[str]:
    tier = (service_tier or "").strip().lower()
    if tier in ("", "auto"):  # not named, or the provider chooses: the dearest tier it could choose
        return ["standard", *[t for t in SERVICE_TIERS if t != "batch" and t in version.tiers]]
    return ["standard"] if tier in STANDARD_TIERS else [tier]


def output_limit(entry: Any) -> int | None:
    """The model's documented output limit when the catalog entry carries one (`max_output_tokens`), else None."""
    value = getattr(entry, "max_output_tokens", None)
    return int(value) if isinstance(value, int) and value > 0 else None


def worst_case(book: Any, provider: str, model: str, prompt_tokens: int, max_output_tokens: int | None, *,
               org: str | None = None, service_tier: str | None = None, prompt_estimated: bool = False,
               at: datetime | None = None) -> WorstCase:
    """The worst-case cost of one call (see the module's rule); `WorstCaseError` when it cannot be known."""
    at = at or datetime.now(timezone.utc)
    if prompt_tokens < 0:
        raise WorstCaseError("prompt_tokens must be >= 0", 400)
    resolution = book.resolve(provider, model)
    entry = resolution.entry
    if entry is None:
        raise WorstCaseError(f"cannot price {provider}/{model} in advance: {resolution.reason or 'unknown model'}")
    asked, limit = max_output_tokens, output_limit(entry)
    if max_output_tokens is None:
        max_output_tokens = limit
        if max_output_tokens is None:
            raise WorstCaseError(f"max_output_tokens is required: the catalog has no output limit for {entry.key}",
                                 400)
    if max_output_tokens < 0:
        raise WorstCaseError("max_output_tokens must be >= 0", 400)
    if limit is not None and max_output_tokens > limit:  # never billed: the provider refuses or clamps it
        max_output_tokens = limit
    rule = book.overrides.rule_for(org, entry, at) if book.overrides else None
    version = rule.prices if rule is not None and rule.prices is not None else entry.version_at(at)
    if version is None:
        raise WorstCaseError(f"no price for {entry.key} in force at {at.isoformat()}")
    # the input tier the prompt is priced at (the whole call, as book.py prices it: the highest threshold exceeded);
    # a counted prompt within the margin of the next threshold may be above it
    input_tiers = sorted({version.input_tier_for(prompt_tokens), version.input_tier_for(
        math.ceil(prompt_tokens * (1 + ESTIMATE_MARGIN)) if prompt_estimated else prompt_tokens)})
    # a call with reasoning tokens is billed all its output at the thinking rate when the version has one
    thinking_modes = (False, True) if version.prices_thinking else (False,)
    best: tuple[Decimal, str] | None = None
    for tier in _tiers_for(service_tier, version):
        for input_tier in input_tiers:
            for thinking in thinking_modes:
                prices = version.price_set(tier, input_tier, thinking)
                if isinstance(prices, str):
                    continue
                per_token = prices.per_token
                cost = prompt_tokens * max(per_token[p] for p in INPUT_PARTS) + \
                    max_output_tokens * max(per_token[p] for p in OUTPUT_PARTS) + prices.request
                if best is None or cost > best[0]:
                    best = (cost, tier + (", long context" if input_tier else "") + (", thinking" if thinking else ""))
    if best is None:
        raise WorstCaseError(f"{entry.key}: no price for service tier {service_tier!r}")
    cost, label = best
    if rule is not None and rule.factor is not None:
        cost *= rule.factor
        label += f", override {rule.name}"
    if asked is not None and asked > max_output_tokens:
        label += f", max_output_tokens {asked} capped at the model's output limit {max_output_tokens}"
    return WorstCase(cost.quantize(COST_QUANTUM, ROUND_CEILING), prompt_tokens + max_output_tokens, prompt_tokens,
                     max_output_tokens, entry.key, label, asked, limit)


def count_prompt_tokens(prompt: Any, model: str) -> int:
    """Prompt tokens of a request's text with the metering code's counting (chat messages or a plain string)."""
    from streams.metering.counting import count_message_tokens, count_text_tokens

    if isinstance(prompt, str):
        return count_text_tokens(prompt, model)
    if isinstance(prompt, list) and all(isinstance(m, dict) for m in prompt):
        return count_message_tokens(prompt, model)
    raise WorstCaseError("prompt must be a string or a list of chat messages", 400)


__all__ = ["WorstCase", "WorstCaseError", "count_prompt_tokens", "output_limit", "worst_case"]
