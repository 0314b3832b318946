"""OpenAI's Chat Completions search models bill a web search per call on top of their tokens, and the response does
not show the search: pricing the tokens alone would under-bill every call. The catalog leaves them unpriced on purpose;
the reason says why (it said "unknown model ... import the LiteLLM cost map", and LiteLLM's map prices the tokens only).
Found by Envoy AI Gateway's recorded span of a gpt-4o-mini-search-preview call (conformance envoy/chat_web_search_preview)."""

from __future__ import annotations

import pytest

from price_support import MILLION_EACH, book, price_on  # noqa: F401 - book: the module's fixture
from streams.pricing import PriceBook


@pytest.mark.parametrize(("provider", "model"), [
    ("openai", "gpt-4o-mini-search-preview-2025-03-11"),
    ("openai", "gpt-4o-search-preview"),
    ("openai", "openai/gpt-4o-mini-search-preview"),
])
def test_search_preview_models_are_unpriced_naming_the_per_call_search_fee(book: PriceBook, provider, model):
    priced = price_on(book, provider, model, "2025-08-14", MILLION_EACH)
    assert priced.status == "unpriced" and priced.cost_usd == 0
    assert "search per call" in priced.reason and "custom_models" in priced.reason


def test_a_model_that_only_resembles_them_keeps_the_unknown_model_reason(book: PriceBook):
    priced = price_on(book, "openai", "gpt-4o-search-helper", "2025-08-14", MILLION_EACH)
    assert priced.status == "unpriced" and "unknown model" in priced.reason
