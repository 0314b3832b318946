"""Models of the covered providers that LiteLLM's cost map (litellm 1.110.2) prices and the catalog lacked (issue 12,
item 5, audit of 2026-12): each is priced at the price of its day from its first dated source, and unpriced with a
reason before it, never $0."""

from __future__ import annotations

from decimal import Decimal

import pytest

from price_support import THOUSAND_EACH, book, price_on  # noqa: F401 - book: the module's fixture
from tokenmeter.events import Usage

D = Decimal


# (provider as logged, model as logged, event day, expected USD for 1,000 input + 1,000 output tokens)
PRICED = [
    # Gemini 3.8 Flash: $0.75 / $3.75 "through December 31, 2026", $1.50 / $7.50 "starting January 1, 2027"
    ("gemini", "gemini-3.8-flash", "2026-10-01", "0.0045"),
    ("gemini", "models/gemini-3.8-flash", "2026-12-01", "0.0045"),
    # Gemini Embedding 2: $0.20 per 1M input tokens (text)
    ("gemini", "gemini-embedding-2", "2026-10-01", "0.0002"),
    # Gemini 3.1 Flash-Lite's GA name: the preview's $0.25 / $1.50
    ("gemini", "gemini-3.1-flash-lite", "2026-10-01", "0.00175"),
    # on Vertex AI, at the Gemini API's prices (vertex_ai.yaml's rule; LiteLLM 1.110.2 lists the same figures)
    ("vertex_ai", "gemini-3.8-flash", "2026-10-01", "0.0045"),
    ("vertex_ai", "publishers/google/models/gemini-3.1-flash-lite", "2026-10-01", "0.00175"),
    # Grok 4.20's beta names are the GA models' API names of the beta: $2 / $6 at GA, $1.25 / $2.50 after the cut
    ("xai", "grok-4.20-beta-reasoning", "2026-04-01", "0.008"),
    ("xai", "grok-4.20-beta-non-reasoning", "2026-07-01", "0.00375"),
    ("xai", "grok-4.20-beta-latest-non-reasoning", "2026-07-01", "0.00375"),
    ("xai", "grok-4.20-experimental-beta-0304-reasoning", "2026-07-01", "0.00375"),
    ("xai", "grok-4.20-multi-agent-experimental-beta-0304", "2026-04-01", "0.008"),
    # `mistral-medium-3` is an API name of Mistral Medium 3.5 ($1.50 / $7.50) in Mistral's docs source since 2026-04-29
    ("mistral", "mistral-medium-3", "2026-06-01", "0.009"),
    # Claude Mythos 5 / 5.1 on Bedrock: Anthropic's $10 / $50 on global and bare ids, 1.1x on geographic profiles
    ("bedrock", "anthropic.claude-mythos-5", "2026-07-01", "0.06"),
    ("bedrock", "global.anthropic.claude-mythos-5-1", "2026-10-01", "0.06"),
    ("bedrock", "us.anthropic.claude-mythos-5-1", "2026-10-01", "0.066"),
    ("aws.bedrock", "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-mythos-5",
     "2026-07-01", "0.066"),
]


@pytest.mark.parametrize("provider, model, day, expected", PRICED)
def test_added_models_price_their_day(book, provider, model, day, expected):
    result = price_on(book, provider, model, day, THOUSAND_EACH)
    assert result.status == "priced", result.reason
    assert result.cost_usd == D(expected)


def test_gemini_3_8_flash_announced_2027_price_is_in_force_from_new_year(book):
    # Events more than a day ahead are refused, so the 2027 version is read from the catalog entry itself.
    from price_support import at

    entry = book.resolve("gemini", "gemini-3.8-flash").entry
    assert entry.version_at(at("2026-12-31T23:59:59")).prices["input"] == D("0.75")
    version = entry.version_at(at("2027-01-01"))
    assert (version.prices["input"], version.prices["output"]) == (D("1.50"), D("7.50"))


def test_gemini_3_8_flash_cache_reads_at_a_tenth_of_input(book):
    usage = Usage(input_tokens=1_000_000, cached_input_tokens=1_000_000, output_tokens=0)
    assert price_on(book, "gemini", "gemini-3.8-flash", "2026-10-01", usage).cost_usd == D("0.075")


@pytest.mark.parametrize("provider, model, day", [
    ("gemini", "gemini-3.8-flash", "2026-09-01"),  # before its first dated source (2026-09-20)
    ("xai", "grok-4.20-experimental-beta-0304-reasoning", "2026-03-05"),  # beta before the first price (2026-03-10)
    ("mistral", "mistral-medium-3", "2026-01-15"),  # not an API name before Medium 3.5
])
def test_before_the_first_dated_source_is_unpriced_with_a_reason(book, provider, model, day):
    result = price_on(book, provider, model, day, THOUSAND_EACH)
    assert result.status == "unpriced" and result.cost_usd == 0 and "no price" in result.reason
