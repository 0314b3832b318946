"""OpenRouter model ids resolve to the model maker's catalog entry, so the catalog can check OpenRouter's reported cost.

OpenRouter names a model `<author>/<slug>` with its own spelling: dotted versions (`anthropic/claude-3.7-sonnet`,
`anthropic/claude-sonnet-4.5`), a dated "canonical slug" with the version before the family in responses
(`anthropic/claude-4.5-sonnet-20250929`), and variant suffixes after a colon
(https://openrouter.ai/docs/guides/routing/model-variants/overview.md): routing variants (`:nitro`, `:floor`,
`:exacto`, `:online`) change only how a request is routed, so the base model's list price is the check; `:free`
is billed $0 by OpenRouter, so no list price is a check for it.
"""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import pytest

from streams.pricing import load_price_book
from tokenmeter.events import Usage, UsageEvent


@pytest.fixture(scope="module")
def book():
    return load_price_book()


@pytest.mark.parametrize("model, entry", [
    # the canonical slug OpenRouter answers with (real response: tests/conformance/payloads/openrouter/)
    ("anthropic/claude-4.5-sonnet-20250929", "anthropic/claude-sonnet-4-5"),
    ("anthropic/claude-4-sonnet-20250522", "anthropic/claude-sonnet-4"),
    ("anthropic/claude-4-opus-20250522", "anthropic/claude-opus-4"),
    ("anthropic/claude-4.1-opus-20250805", "anthropic/claude-opus-4-1"),
    ("anthropic/claude-4.5-haiku-20251001", "anthropic/claude-haiku-4-5"),
    # dotted versions of Claude 3.x (Anthropic's own ids put the version first there too)
    ("anthropic/claude-3.7-sonnet", "anthropic/claude-3-7-sonnet"),
    ("anthropic/claude-3.7-sonnet-20250219", "anthropic/claude-3-7-sonnet"),
    ("anthropic/claude-3.5-sonnet", "anthropic/claude-3-5-sonnet"),
    ("anthropic/claude-3.5-haiku-20241022", "anthropic/claude-3-5-haiku"),
    ("anthropic/claude-sonnet-4.5", "anthropic/claude-sonnet-4-5"),
    # routing variants and same-price catalog variants: the base model
    ("openai/gpt-4o:nitro", "openai/gpt-4o"),
    ("google/gemini-2.5-flash:floor", "gemini/gemini-2.5-flash"),
    ("openai/gpt-4.1-mini:online", "openai/gpt-4.1-mini"),
    ("anthropic/claude-sonnet-4:exacto", "anthropic/claude-sonnet-4"),
    ("anthropic/claude-3.7-sonnet:thinking", "anthropic/claude-3-7-sonnet"),
    ("anthropic/claude-3-haiku:beta", "anthropic/claude-3-haiku"),
    # slugs that already matched keep matching
    ("openai/gpt-4o", "openai/gpt-4o"),
    ("google/gemini-2.5-flash", "gemini/gemini-2.5-flash"),
    ("deepseek/deepseek-chat", "deepseek/deepseek-chat"),
    ("x-ai/grok-4", "xai/grok-4"),
    ("mistralai/mistral-large-2411", "mistral/mistral-large-2411"),
])
def test_openrouter_slugs_resolve_to_the_model_makers_entry(book, model, entry):
    for provider, name in (("openrouter", model), ("litellm", f"openrouter/{model}")):
        resolution = book.resolve(provider, name)
        assert resolution.entry is not None, resolution.reason
        assert resolution.entry.key == entry


def test_claude_2_1_keeps_its_dotted_id(book):
    assert book.resolve("anthropic", "claude-2.1").entry.key == "anthropic/claude-2.1"


def test_bedrock_version_suffix_is_not_a_variant(book):
    # `:0` in a Bedrock id is its version, not an OpenRouter variant
    assert book.resolve("bedrock", "anthropic.claude-3-haiku-20240307-v1:0").entry is not None


@pytest.mark.parametrize("model", ["meta-llama/llama-3.3-70b-instruct:free", "openai/gpt-4o:free"])
def test_free_variant_is_not_checked_against_a_list_price(book, model):
    resolution = book.resolve("openrouter", model)
    assert resolution.entry is None
    assert ":free" in resolution.reason and "$0" in resolution.reason


def test_extended_variant_is_not_priced_as_the_base_model(book):
    # `:extended` entries have their own prices on OpenRouter (a longer context); not the base model's price
    assert book.resolve("openrouter", "openai/gpt-4o:extended").entry is None


def test_open_weight_model_without_its_host_says_why(book):
    resolution = book.resolve("openrouter", "meta-llama/llama-3.1-70b-instruct")
    assert resolution.entry is None
    assert "open-weight" in resolution.reason


def test_canonical_slug_prices_the_recorded_call(book):
    # the recorded Bedrock-served call (conformance openrouter/chat_claude_sonnet45_bedrock_reasoning)
    event = UsageEvent(event_id="e", ts=datetime.fromtimestamp(1779474928, timezone.utc), source="test",
                       provider="openrouter", model="anthropic/claude-4.5-sonnet-20250929")
    result = book.price(event, Usage(input_tokens=43, output_tokens=53, reasoning_tokens=48))
    assert result.status == "priced", result.reason
    assert result.cost_usd == Decimal("0.000924")
