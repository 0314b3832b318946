"""Price history of the models real 2024-2025 logs name on the clouds and behind gateways (issue 12, item 5, gaps
1-3): Bedrock's non-Anthropic models, Gemini 2.x preview names (Gemini API and Vertex), Alibaba's Qwen. Each case is
priced at the price of its day, and names whose price could not be sourced stay unpriced with a reason, never $0."""

from __future__ import annotations

from decimal import Decimal

import pytest

from price_support import THOUSAND_EACH, book, price_on  # noqa: F401 - book: the module's fixture
from streams.pricing import PriceBook
from tokenmeter.events import Usage

D = Decimal
K = THOUSAND_EACH



def cost(book: PriceBook, provider: str, model: str, day: str, usage: Usage = K):
    return price_on(book, provider, model, day, usage)


# (provider as logged, model as logged, event day, expected USD for 1,000 input + 1,000 output tokens)
CLOUD_HISTORY = [
    # Bedrock Llama 3 70B in mid-2024: $2.65 / $3.50
    ("bedrock", "meta.llama3-70b-instruct-v1:0", "2024-06-15", "0.00615"),
    ("bedrock", "meta.llama3-8b-instruct-v1:0", "2024-06-15", "0.0009"),
    # Llama 3.1 70B: $0.99 from its launch, $0.72 after the December 2024 cut; profiles and ARNs price the same
    ("bedrock", "meta.llama3-1-70b-instruct-v1:0", "2024-08-01", "0.00198"),
    ("bedrock_converse", "us.meta.llama3-1-70b-instruct-v1:0", "2025-03-01", "0.00144"),
    ("aws.bedrock", "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.meta.llama3-2-90b-instruct-v1:0",
     "2024-11-01", "0.004"),
    ("aws.bedrock", "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.meta.llama3-2-90b-instruct-v1:0",
     "2025-01-15", "0.00144"),
    ("bedrock", "meta.llama3-1-405b-instruct-v1:0", "2024-09-01", "0.02132"),  # $5.32 / $16.00
    ("bedrock", "meta.llama2-70b-chat-v1", "2024-05-01", "0.00451"),  # $1.95 / $2.56
    ("bedrock", "mistral.mixtral-8x7b-instruct-v0:1", "2024-06-01", "0.00115"),  # $0.45 / $0.70
    ("bedrock", "mistral.mistral-7b-instruct-v0:2", "2024-06-01", "0.00035"),
    ("bedrock", "mistral.mistral-large-2402-v1:0", "2024-12-15", "0.032"),  # $8 / $24
    ("bedrock", "amazon.titan-text-express-v1", "2024-09-01", "0.0008"),  # $0.20 / $0.60
    ("bedrock", "amazon.titan-text-premier-v1:0", "2025-01-10", "0.002"),  # $0.50 / $1.50
    ("bedrock", "cohere.command-r-plus-v1:0", "2024-09-01", "0.018"),  # $3 / $15
    ("bedrock", "ai21.jamba-1-5-mini-v1:0", "2025-03-01", "0.0006"),
    # models added to Bedrock in 2025 (from the first dated source)
    ("bedrock", "openai.gpt-oss-120b-1:0", "2025-12-01", "0.00075"),  # $0.15 / $0.60
    ("bedrock", "us.deepseek.r1-v1:0", "2025-12-01", "0.00675"),  # $1.35 / $5.40
    ("bedrock", "qwen.qwen3-235b-a22b-2507-v1:0", "2025-12-01", "0.0011"),  # $0.22 / $0.88
    # Vertex Model Garden partner models billed per token
    ("vertex_ai", "vertex_ai/meta/llama-4-scout-17b-16e-instruct-maas", "2025-07-01", "0.00095"),  # $0.25 / $0.70
    ("vertex_ai", "projects/p/locations/us-east5/publishers/meta/models/llama-4-maverick-17b-128e-instruct-maas",
     "2025-07-01", "0.0015"),
    ("vertex_ai", "mistral-large@2407", "2024-12-01", "0.012"),  # $3 / $9, then $2 / $6
    ("vertex_ai", "mistral-large@2407", "2025-03-01", "0.008"),
    ("vertex_ai", "jamba-1.5-large@001", "2025-01-01", "0.01"),
    # Gemini 2.x previews: 2.0 Flash-Lite preview, 2.5 Flash-Lite preview (API and Vertex ids)
    ("gemini", "gemini-2.0-flash-lite-preview-02-05", "2025-02-20", "0.000375"),
    ("vertex_ai", "gemini-2.0-flash-lite-preview-02-05", "2025-02-20", "0.000375"),
    ("gemini", "models/gemini-2.5-flash-lite-preview-06-17", "2025-06-20", "0.0005"),
    # Qwen (Model Studio international): qwen-max $10 / $30 in 2024, $1.60 / $6.40 after the Qwen2.5-Max cut
    ("dashscope", "qwen-max", "2024-12-10", "0.04"),
    ("dashscope", "qwen-max", "2025-03-01", "0.008"),
    ("alibaba", "qwen-plus", "2024-12-10", "0.012"),
    ("qwen", "qwen-turbo", "2025-02-15", "0.00025"),
    ("dashscope", "qwen-max-2024-09-19", "2025-03-01", "0.04"),  # pinned snapshot keeps its own price
    ("dashscope", "qwq-plus", "2025-11-01", "0.0032"),
]


@pytest.mark.parametrize("provider, model, day, expected", CLOUD_HISTORY)
def test_cloud_and_gateway_models_price_their_day(book, provider, model, day, expected):
    result = cost(book, provider, model, day)
    assert result.status == "priced", result.reason
    assert result.cost_usd == D(expected)


def test_titan_embeddings_v1_and_v2_are_told_apart(book):
    # the resolver strips `-v1` / `-v2:0` alike; v2 costs a fifth of v1
    usage = Usage(input_tokens=1_000_000, output_tokens=0)
    assert cost(book, "bedrock", "amazon.titan-embed-text-v1", "2025-01-10", usage).cost_usd == D("0.10")
    assert cost(book, "bedrock", "amazon.titan-embed-text-v2:0", "2025-01-10", usage).cost_usd == D("0.02")


def test_gemini_2_5_pro_preview_long_prompts_pay_the_above_200k_rate(book):
    usage = Usage(input_tokens=250_000, output_tokens=1_000)
    # $2.50 input / $15.00 output for the whole call above 200k prompt tokens
    for provider, model in (("gemini", "gemini-2.5-pro-preview-03-25"), ("gemini", "gemini-2.5-pro-preview-05-06"),
                            ("vertex_ai", "gemini-2.5-pro-preview-05-06")):
        result = cost(book, provider, model, "2025-05-10", usage)
        assert result.status == "priced", result.reason
        assert result.cost_usd == D("0.64"), model
    short = cost(book, "gemini", "gemini-2.5-pro-preview-03-25", "2025-04-10", Usage(input_tokens=100_000,
                                                                                        output_tokens=1_000))
    assert short.cost_usd == D("0.135")  # $1.25 / $10.00


def test_gemini_2_5_flash_preview_prices_thinking_apart(book):
    # $0.15 input; a thinking call (reasoning tokens > 0) pays $3.50 on ALL its output, visible and thinking
    usage = Usage(input_tokens=1_000, output_tokens=1_000, reasoning_tokens=500)
    for provider, model in (("gemini", "gemini-2.5-flash-preview-04-17"), ("gemini", "gemini-2.5-flash-preview-05-20"),
                            ("vertex_ai", "gemini-2.5-flash-preview-05-20")):
        result = cost(book, provider, model, "2025-06-01", usage)
        assert result.status == "priced", result.reason
        assert result.cost_usd == D("0.00365"), model


def test_qwen3_era_thinking_output_of_qwen_plus(book):
    usage = Usage(input_tokens=1_000, output_tokens=1_000, reasoning_tokens=600)
    # before Qwen3 (2025-04-28) qwen-plus had no thinking price: all output at $1.20
    assert cost(book, "dashscope", "qwen-plus", "2025-03-01", usage).cost_usd == D("0.0016")
    # from 2025-04-28: a thinking call pays $4.00 on all its output
    assert cost(book, "dashscope", "qwen-plus", "2025-06-01", usage).cost_usd == D("0.0044")


def test_qwen_flash_long_inputs_pay_the_above_256k_rate(book):
    usage = Usage(input_tokens=300_000, output_tokens=1_000)
    assert cost(book, "dashscope", "qwen-flash", "2025-09-01", usage).cost_usd == D("0.077")  # $0.25 / $2.00


@pytest.mark.parametrize("provider, model, day", [
    ("gemini", "gemini-2.0-flash-exp", "2025-01-10"),  # free experimental: no paid price, never $0 here
    ("gemini", "gemini-2.5-pro-exp-03-25", "2025-04-01"),
    ("dashscope", "qwen3-235b-a22b", "2025-10-01"),  # before its first dated international price (2025-10-14)
    ("bedrock", "amazon.titan-text-express-v1", "2024-05-01"),  # before the first dated price found
    ("bedrock", "meta.llama3-70b-instruct-v1:0", "2024-03-01"),  # before Llama 3 existed
    ("vertex_ai", "meta/llama-3.1-70b-instruct-maas", "2025-01-01"),  # free Preview on Vertex: not priced at $0
])
def test_names_without_a_sourced_price_stay_unpriced(book, provider, model, day):
    result = cost(book, provider, model, day)
    assert result.status == "unpriced" and result.cost_usd == 0 and result.reason


ADDED_FILES = ("bedrock_2024.yaml", "bedrock_2025.yaml", "gemini_previews.yaml", "vertex_ai_previews.yaml",
               "vertex_ai_model_garden.yaml", "dashscope.yaml")


def test_every_added_version_names_its_source(book):
    added = [e for e in book.entries.values() if any(o.endswith(ADDED_FILES) for o in e.origins)]
    assert len(added) >= 40
    for entry in added:
        for version in entry.versions:
            assert version.source, entry.key
            assert version.notes or entry.notes, f"{entry.key} {version.effective_from}: no note saying its source"


@pytest.mark.parametrize("provider, model, why", [
    ("gemini", "gemini-2.0-flash-thinking-exp-01-21", "free experimental"),
    ("vertex_ai", "gemini-2.0-flash-exp", "free experimental"),
    ("google", "models/gemini-exp-1206", "free experimental"),
    ("vertex_ai", "text-embedding-005", "per 1,000 input characters"),
    ("vertex_ai", "textembedding-gecko@003", "per 1,000 input characters"),
])
def test_unpriced_names_say_why(book, provider, model, why):
    result = cost(book, provider, model, "2025-03-01")
    assert result.status == "unpriced" and result.cost_usd == 0
    assert why in result.reason


def test_mistral_prices_of_february_2024_from_its_own_docs(book):
    # Mistral's docs table of 2024-02-26 (first USD prices): Large $8 / $24, open-mistral-7b $0.25, Medium $2.7 / $8.1
    assert cost(book, "mistral", "mistral-large-2402", "2024-03-01").cost_usd == D("0.032")
    assert cost(book, "mistral", "open-mistral-7b", "2024-03-01").cost_usd == D("0.0005")
    assert cost(book, "mistral", "mistral-medium", "2024-03-01").cost_usd == D("0.0108")
    # before it Mistral priced mistral-tiny in EUR (0.14 / 0.42): not priced in USD at the later rate
    early = cost(book, "mistral", "mistral-tiny", "2024-01-15")
    assert early.status == "unpriced" and early.cost_usd == 0
    rows = {e.key: e for e in book.entries.values()}
    assert "unverified" not in (rows["mistral/mistral-large-2402"].versions[0].notes or "")
