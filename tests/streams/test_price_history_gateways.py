"""Price history of the 2024-2025 models of Mistral, xAI and Alibaba (Qwen) that real logs name, from the providers'
own pages (issue 12, item 5; sources in the catalog notes): Mistral's docs source for the 2025 snapshots, xAI's
archived model pages for Grok 2 / Grok 3 (fast) and the grok beta, Alibaba's context-cache billing rule."""

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
FIRST_PARTY_2025 = [
    ("mistral", "mistral-small-2501", "2025-02-15", "0.40"),  # $0.10 / $0.30
    ("mistral", "pixtral-large-2411", "2025-01-15", "8.00"),  # $2 / $6
    ("mistral", "pixtral-large-latest", "2025-01-15", "8.00"),
    ("mistral", "devstral-small-2505", "2025-06-01", "0.40"),  # $0.10 / $0.30
    ("mistral", "devstral-small-2507", "2025-08-01", "0.40"),
    ("mistral", "devstral-medium-2507", "2025-08-01", "2.40"),  # $0.40 / $2
    ("mistral", "ministral-3b-latest", "2025-06-01", "0.08"),  # alias of ministral-3b-2410: $0.04
    ("mistral", "ministral-3b-latest", "2025-12-15", "0.20"),  # moved to Ministral 3 3B on 2025-12-02: $0.10
    ("mistral", "devstral-small-latest", "2025-08-01", "0.40"),  # alias of devstral-small-2507 until 2025-12-09
    ("mistral", "devstral-small-latest", "2026-01-10", "0.40"),  # then Devstral Small 2, same price
    ("mistral", "devstral-medium-latest", "2025-08-01", "2.40"),  # alias of devstral-medium-2507: $0.40 / $2
    ("mistral", "devstral-medium-latest", "2026-01-10", "2.40"),  # then Devstral 2, same price
    ("mistral", "mistral-large-latest", "2025-06-01", "8.00"),  # alias of mistral-large-2411: $2 / $6
    ("mistral", "mistral-large-latest", "2025-11-01", "2.40"),  # served Medium 3.1 ($0.40 / $2) until 2025-12-02
    ("mistral", "mistral-large-latest", "2025-12-15", "2.00"),  # then Large 3: $0.50 / $1.50
    ("xai", "grok-3-fast", "2025-05-01", "30.00"),  # $5 / $25
    ("xai", "grok-3-fast-latest", "2025-05-01", "30.00"),
    ("xai", "grok-3-mini-fast", "2025-05-01", "4.60"),  # $0.60 / $4
    ("xai", "grok-beta", "2024-11-01", "20.00"),  # $5 / $15
    ("xai", "grok-2-vision-1212", "2025-01-15", "12.00"),  # $2 / $10
]


@pytest.mark.parametrize("provider, model, day, expected", FIRST_PARTY_2025)
def test_2025_models_price_their_day(book, provider, model, day, expected):
    result = cost(book, provider, model, day)
    assert result.status == "priced", result.reason
    assert result.cost_usd == D(expected)


def test_codestral_embed_is_an_embedding_price(book):
    usage = Usage(input_tokens=1_000_000, output_tokens=0)
    result = cost(book, "mistral", "codestral-embed", "2025-08-01", usage)
    assert result.status == "priced", result.reason
    assert result.cost_usd == D("0.15")


def test_grok_3_fast_cache_reads_at_the_cached_rate(book):
    usage = Usage(input_tokens=1_000_000, cached_input_tokens=800_000, output_tokens=0)
    # grok-3-fast: $5 uncached, $1.25 cached -> 0.2 * 5 + 0.8 * 1.25
    assert cost(book, "xai", "grok-3-fast", "2025-05-01", usage).cost_usd == D("2.00")
    # grok-3-mini-fast: $0.60 uncached, $0.15 cached
    assert cost(book, "xai", "grok-3-mini-fast", "2025-05-01", usage).cost_usd == D("0.24")


@pytest.mark.parametrize("provider, model, day", [
    ("mistral", "mistral-saba-latest", "2025-03-01"),  # no price on Mistral's pages: unpriced, never $0
    ("mistral", "open-codestral-mamba", "2024-09-01"),
])
def test_mistral_models_without_a_published_price_stay_unpriced(book, provider, model, day):
    result = cost(book, provider, model, day)
    assert result.status == "unpriced" and result.cost_usd == 0 and result.reason


@pytest.mark.parametrize("key", [
    "xai/grok-beta", "xai/grok-2-1212", "xai/grok-3-fast", "xai/grok-3-mini-fast",
    "mistral/mistral-small-2501", "mistral/pixtral-large-2411", "mistral/ministral-3b-2512",
    "mistral/ministral-3b-2410", "mistral/pixtral-12b-2409", "deepseek/deepseek-chat", "deepseek/deepseek-coder",
])
def test_versions_read_on_the_providers_own_pages_count_as_first_party(book, key):
    entry = book.entries[key]
    assert all(version_is_first_party(entry, version) for version in entry.versions), key


def test_qwen_cache_reads_of_2025_at_forty_percent_of_input(book):
    # Alibaba's billing page (Apr 22, 2025): cached_token at 40% of the input_token price for qwen-max/plus/turbo
    usage = Usage(input_tokens=1_000_000, cached_input_tokens=500_000, output_tokens=0)
    assert cost(book, "dashscope", "qwen-max", "2025-03-01", usage).cost_usd == D("1.12")  # 0.5*1.60 + 0.5*0.64
    assert cost(book, "dashscope", "qwen-plus", "2025-03-01", usage).cost_usd == D("0.28")  # 0.5*0.40 + 0.5*0.16
    assert cost(book, "dashscope", "qwen-turbo", "2025-03-01", usage).cost_usd == D("0.035")  # 0.5*0.05 + 0.5*0.02


def test_qwen3_max_cache_reads_and_writes_follow_alibabas_context_cache_rule(book):
    # implicit cache hits at 20% of the tier's input price, explicit cache creation at 125% (Alibaba's context-cache
    # page); before 2026-12 cached tokens were priced as uncached input
    reads = Usage(input_tokens=10_000, cached_input_tokens=8_000, output_tokens=0)
    assert cost(book, "dashscope", "qwen3-max", "2025-10-01", reads).cost_usd == D("0.00432")  # 2k*1.20 + 8k*0.24
    writes = Usage(input_tokens=10_000, cache_write_tokens=8_000, output_tokens=0)
    assert cost(book, "dashscope", "qwen3-max", "2025-10-01", writes).cost_usd == D("0.0144")  # 2k*1.20 + 8k*1.50
    long_reads = Usage(input_tokens=100_000, cached_input_tokens=50_000, output_tokens=0)
    # above 32K: $2.40 input, cached $0.48
    assert cost(book, "dashscope", "qwen3-max", "2025-10-01", long_reads).cost_usd == D("0.144")


def test_qwen_flash_cache_reads_at_twenty_percent_on_both_sides_of_256k(book):
    usage = Usage(input_tokens=10_000, cached_input_tokens=5_000, output_tokens=0)
    assert cost(book, "dashscope", "qwen-flash", "2025-09-01", usage).cost_usd == D("0.0003")  # 5k*0.05 + 5k*0.01
    long = Usage(input_tokens=300_000, cached_input_tokens=200_000, output_tokens=0)
    assert cost(book, "dashscope", "qwen-flash", "2025-09-01", long).cost_usd == D("0.035")  # 100k*0.25 + 200k*0.05
