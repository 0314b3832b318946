"""Catalog versions whose price was read in the provider's own material (issue 12, item 5): each counts as
first-party in `tokenmeter prices coverage`, prices its day exactly, and models whose maker published no price stay
unpriced with a reason (sources: the versions' notes)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from price_support import MILLION_EACH, book, price_on  # noqa: F401 - book: the module's fixture
from streams.pricing import PriceBook
from streams.pricing.coverage import version_is_first_party
from tokenmeter.events import Usage

D = Decimal
M = MILLION_EACH



def cost(book: PriceBook, provider: str, model: str, day: str, usage: Usage = M):
    return price_on(book, provider, model, day, usage)


# (provider, model as logged, event day, expected USD for 1M input + 1M output tokens)
PRICED = [
    ("cohere", "command-r7b-12-2024", "2025-01-15", "0.1875"),  # $0.0375 / $0.15 (Cohere's model page)
    ("cohere", "command-r7b", "2025-06-01", "0.1875"),
    ("cohere", "command-a-03-2025", "2025-04-01", "12.50"),  # $2.50 / $10.00
    ("cohere", "command-a", "2025-04-01", "12.50"),
    # Cohere's API names the Aya Expanse models c4ai-aya-expanse-* (its model page aya-expanse.mdx)
    ("cohere", "c4ai-aya-expanse-32b", "2025-01-15", "2.00"),
    ("cohere", "c4ai-aya-expanse-8b", "2025-01-15", "2.00"),
    ("cohere", "embed-english-v2.0", "2024-03-01", "0.10"),  # input-only embedding: 1M x $0.10
    # Fireworks' first-party 2024 size tiers: firefunction-v2 is a Llama 3 70B fine-tune ($0.90), gemma2-9b-it $0.20
    ("fireworks", "accounts/fireworks/models/firefunction-v2", "2024-08-01", "1.80"),
    ("fireworks", "accounts/fireworks/models/gemma2-9b-it", "2024-08-01", "0.40"),
    ("fireworks", "accounts/fireworks/models/deepseek-coder-v2-lite-instruct", "2024-08-01", "1.00"),
    # 2024 Fireworks serverless models priced by the same table's tier for their published size (fifth pass)
    ("fireworks", "accounts/fireworks/models/mythomax-l2-13b", "2024-06-01", "0.40"),  # up to 16B: $0.20
    ("fireworks", "accounts/fireworks/models/phi-3-mini-128k-instruct", "2024-06-01", "0.40"),
    ("fireworks", "accounts/fireworks/models/llama-v2-70b-chat", "2024-06-01", "1.80"),  # 16.1B - 80B: $0.90
    ("fireworks", "accounts/fireworks/models/yi-34b-200k-capybara", "2024-06-01", "1.80"),
    ("fireworks", "accounts/fireworks/models/mixtral-8x7b-instruct-hf", "2024-06-01", "1.00"),  # MoE 0B - 56B: $0.50
    ("fireworks", "accounts/fireworks/models/firefunction-v1", "2024-06-01", "1.00"),
    ("fireworks", "accounts/fireworks/models/mixtral-8x22b-instruct-hf", "2024-06-01", "2.40"),  # MoE 56.1B - 176B
    # Alibaba Model Studio international open-weight prices, third-party copy (models.dev 0c53491b, 2025-10-14)
    ("dashscope", "qwen3-235b-a22b", "2025-11-01", "3.50"),  # $0.70 / $2.80 (non-thinking call)
    ("dashscope", "qwen3-8b", "2025-11-01", "0.88"),  # $0.18 / $0.70
    ("dashscope", "qwen2.5-72b-instruct", "2025-11-01", "7.00"),  # $1.40 / $5.60
    ("dashscope", "qwen2.5-7b-instruct", "2025-11-01", "0.875"),  # $0.175 / $0.70
    ("dashscope", "qwen3-next-80b-a3b-thinking", "2025-11-01", "6.50"),  # $0.50 / $6.00
    # Groq models of 2025 from models.dev's Groq table (a4047f40, 2025-06-12), third-party
    ("groq", "qwen-qwq-32b", "2025-07-01", "0.68"),  # $0.29 / $0.39
    ("groq", "mistral-saba-24b", "2025-07-01", "1.58"),  # $0.79 / $0.79
    ("groq", "meta-llama/llama-guard-4-12b", "2025-07-01", "0.40"),  # $0.20 / $0.20
    # Together models from models.dev's first Together table (7637e225, 2025-07-25), third-party
    ("together", "deepseek-ai/DeepSeek-R1", "2025-08-01", "10.00"),  # $3 / $7
    ("together", "deepseek-ai/DeepSeek-V3", "2025-08-01", "2.50"),  # $1.25 / $1.25
    ("together", "moonshotai/Kimi-K2-Instruct", "2025-08-01", "4.00"),  # $1 / $3
    # Fireworks models of 2025 from models.dev's Fireworks tables (third-party, each from the day it appears)
    ("fireworks", "accounts/fireworks/models/kimi-k2-instruct", "2025-08-01", "4.00"),  # $1 / $3
    ("fireworks", "accounts/fireworks/models/gpt-oss-120b", "2025-08-10", "0.75"),  # $0.15 / $0.60
    ("fireworks", "accounts/fireworks/models/glm-4p5", "2025-09-10", "2.74"),  # $0.55 / $2.19
    # Fireworks' Serverless Pricing page: 'DeepSeek V3 family' $0.56 / $1.68, 'GLM 4.7' $0.60 / $2.20
    ("fireworks", "accounts/fireworks/models/deepseek-v3p1", "2025-10-01", "2.24"),
    ("fireworks", "accounts/fireworks/models/deepseek-v3p2", "2026-01-10", "2.24"),
    ("fireworks", "accounts/fireworks/models/glm-4p7", "2026-01-10", "2.80"),
    # third-party dated copy of groq.com (2024-08-03): priced, and marked as not first-party
    ("groq", "llama3-groq-70b-8192-tool-use-preview", "2024-08-01", "1.78"),
    ("groq", "llama3-groq-8b-8192-tool-use-preview", "2024-08-01", "0.38"),
    # Groq's own changelog (groq/groq-changelog): Qwen 3 32B from its 2025-06-11 entry, Kimi K2 0905 from 2025-09-05
    ("groq", "qwen/qwen3-32b", "2025-06-20", "0.88"),  # $0.29 / $0.59
    ("groq", "moonshotai/kimi-k2-instruct-0905", "2025-10-01", "4.00"),  # $1.00 / $3.00
    # OpenAI's own model pages (developers.openai.com/api/docs/models/<model>)
    ("openai", "codex-mini-latest", "2025-06-01", "7.50"),  # $1.50 / $6.00
    ("openai", "davinci-002", "2024-06-01", "4.00"),  # $2 / $2
    ("openai", "gpt-3.5-turbo-instruct", "2024-06-01", "3.50"),  # $1.50 / $2.00
    ("openai", "o4-mini-deep-research", "2025-07-01", "10.00"),  # $2 / $8
    # Claude 2.0 / Instant 1.2 from Anthropic's pricing update of 2023-11-21 (its Claude 2.1 announcement), third-party
    # figures ($8 / $24, $0.80 / $2.40); before that day the price is unknown (catalog8)
    ("anthropic", "claude-2.0", "2023-12-01", "32.00"),
    ("anthropic", "claude-instant-1.2", "2023-12-01", "3.20"),
    ("bedrock", "anthropic.claude-v2", "2023-12-01", "32.00"),
]


@pytest.mark.parametrize("provider, model, day, expected", PRICED)
def test_catalog_versions_price_their_day(book, provider, model, day, expected):
    result = cost(book, provider, model, day)
    assert result.status == "priced", result.reason
    assert result.cost_usd == D(expected)


@pytest.mark.parametrize("key", [
    "cohere/command-r7b-12-2024", "cohere/command-a-03-2025",
    "cohere/command-r-08-2024", "cohere/command-r-plus-08-2024",
    "groq/qwen/qwen3-32b", "groq/moonshotai/kimi-k2-instruct-0905",
    "openai/codex-mini-latest", "openai/davinci-002", "openai/gpt-3.5-turbo-instruct", "openai/o4-mini-deep-research",
    # Fireworks' own Serverless Pricing page (docs.fireworks.ai/serverless/pricing) prints these prices (seventh pass)
    "fireworks/deepseek-v3p1", "fireworks/deepseek-v3p2", "fireworks/glm-4p7", "fireworks/gpt-oss-120b",
])
def test_versions_read_in_the_providers_own_material_count_as_first_party(book, key):
    entry = book.entries[key]
    assert entry.versions and all(version_is_first_party(entry, v) for v in entry.versions), key


@pytest.mark.parametrize("provider, model, day", [
    # Cohere showed $2.50 / $10 on these pages for one week, then removed the prices (d0ac1872): not used
    ("cohere", "command-a-vision-07-2025", "2025-09-01"),
    ("cohere", "command-a-reasoning-08-2025", "2025-09-01"),
    # Anthropic's Claude 2.1 announcement (2023-11-21) says it updated its pricing "across models" that day; the earlier
    # Claude 2.0 / Instant 1.2 prices are in no first-party text found, so traffic before that day is not priced
    ("anthropic", "claude-2.0", "2023-09-01"),
    ("anthropic", "claude-instant-1.2", "2023-09-01"),
    ("bedrock", "anthropic.claude-instant-v1", "2023-10-15"),
])
def test_models_without_a_standing_published_price_stay_unpriced(book, provider, model, day):
    result = cost(book, provider, model, day)
    assert result.status == "unpriced" and result.cost_usd == 0 and result.reason


@pytest.mark.parametrize("key", ["groq/llama3-groq-70b-8192-tool-use-preview", "groq/llama-3.3-70b-versatile",
                                 "fireworks/gpt-oss-20b",
                                 "dashscope/qwen3-235b-a22b", "dashscope/qwen2.5-72b-instruct",
                                 "anthropic/claude-2.0", "anthropic/claude-instant-1.2"])
def test_prices_known_only_from_third_party_copies_are_not_counted_first_party(book, key):
    entry = book.entries[key]
    assert entry.versions and not any(version_is_first_party(entry, v) for v in entry.versions), key


def test_a_qwen3_thinking_call_pays_the_thinking_rate_on_all_its_output(book):
    """Alibaba bills a hybrid Qwen3 call's output by its mode: with reasoning tokens, all output at the thinking rate."""
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000, reasoning_tokens=400_000)
    assert cost(book, "dashscope", "qwen3-235b-a22b", "2025-11-01", usage).cost_usd == D("9.10")  # 0.70 + 8.40


def test_open_weight_qwen_before_its_first_dated_price_stays_unpriced(book):
    result = cost(book, "dashscope", "qwen3-235b-a22b", "2025-10-01")
    assert result.status == "unpriced" and result.cost_usd == 0 and result.reason


GATEWAY_PROVIDER_FILES = ("cohere.yaml", "groq.yaml", "fireworks.yaml", "together.yaml", "together_2024.yaml",
                          "dashscope.yaml")
# How a note says its price was only copied (a first-party note may name copies that agree, e.g. "genai-prices agree")
THIRD_PARTY_SOURCES = ("models.dev", "aisudoapp", "third-party copy", "as listed by", "as quoted", "(pydantic/genai-prices)")


def test_every_version_of_the_gateway_providers_says_where_its_price_comes_from(book):
    """Each version names its source; one read only in a third-party copy (LiteLLM, pydantic/genai-prices, models.dev,
    a dated copy of a pricing page) is never counted first-party, whatever else its note says."""
    entries = [e for e in book.entries.values() if any(o.endswith(GATEWAY_PROVIDER_FILES) for o in e.origins)]
    assert len(entries) >= 90
    for entry in entries:
        for version in entry.versions:
            note = (version.notes or entry.notes or "").lower()
            assert version.source and note, f"{entry.key} {version.effective_from}: no source note"
            if any(marker in note for marker in THIRD_PARTY_SOURCES):
                assert not version_is_first_party(entry, version), f"{entry.key} {version.effective_from}"
