"""Gemini 2.5+ Flex and Priority service tiers, on the Gemini API (`service_tier`) and on Vertex AI (Flex PayGo /
Priority PayGo, read from usageMetadata.trafficType).

Google: Flex is "a 50% discount" on both (ai.google.dev/gemini-api/docs/optimization, Vertex flex-paygo page);
Priority is "75% to 100% more than standard" (same optimization page), per model. The per-model figures (Priority
1.8x standard, Flex at the batch figures) are LiteLLM's cost map (litellm 1.110.2), within Google's statements.
"""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import pytest

from streams.pricing import load_price_book
from tokenmeter.events import Usage, UsageEvent

D = Decimal
K = Usage(input_tokens=1_000, output_tokens=1_000)
DAY = datetime(2026, 6, 1, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def book():
    return load_price_book()


def cost(book, provider, model, tier, usage=K):
    event = UsageEvent(event_id="e", ts=DAY, source="test", provider=provider, model=model, service_tier=tier)
    return book.price(event, usage)


@pytest.mark.parametrize("provider", ["gemini", "vertex_ai"])
@pytest.mark.parametrize("model, tier, expected", [
    ("gemini-2.5-pro", "flex", "0.005625"),          # 0.625 + 5.00
    ("gemini-2.5-pro", "priority", "0.02025"),       # 2.25 + 18.00
    ("gemini-2.5-flash", "flex", "0.0014"),          # 0.15 + 1.25
    ("gemini-2.5-flash", "priority", "0.00504"),     # 0.54 + 4.50
    ("gemini-2.5-flash-lite", "flex", "0.00025"),    # 0.05 + 0.20
    ("gemini-2.5-flash-lite", "priority", "0.0009"),  # 0.18 + 0.72
    ("gemini-3-flash-preview", "flex", "0.00175"),   # 0.25 + 1.50
    ("gemini-3-flash-preview", "priority", "0.0063"),  # 0.90 + 5.40
    ("gemini-3.1-pro-preview", "flex", "0.007"),     # 1.00 + 6.00
    ("gemini-3.1-pro-preview", "priority", "0.0252"),  # 3.60 + 21.60
    ("gemini-3.5-flash", "flex", "0.00525"),         # 0.75 + 4.50
    ("gemini-3.5-flash", "priority", "0.0189"),      # 2.70 + 16.20
])
def test_flex_and_priority_tiers_are_priced(book, provider, model, tier, expected):
    result = cost(book, provider, model, tier)
    assert result.status == "priced", result.reason
    assert result.cost_usd == D(expected)


def test_priority_long_context_and_cache_reads(book):
    # 2.5 Pro priority above 200k input tokens: 4.50 input, 0.45 cache reads, 27.00 output
    usage = Usage(input_tokens=300_000, cached_input_tokens=100_000, output_tokens=1_000)
    result = cost(book, "vertex_ai", "gemini-2.5-pro", "priority", usage)
    assert result.cost_usd == D("0.9") + D("0.045") + D("0.027")


def test_models_without_a_sourced_tier_stay_unpriced(book):
    result = cost(book, "vertex_ai", "gemini-2.0-flash", "flex")
    assert result.status == "unpriced" and "flex" in result.reason
