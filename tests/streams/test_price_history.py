"""Price history in the bundled catalog: models real 2024-2025 logs name are priced at the price of their day
(launch prices, cuts, moving aliases, retired models), and `tokenmeter prices coverage` reports it."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest
from click.testing import CliRunner

from price_support import THOUSAND_EACH, book, price_on  # noqa: F401 - book: the module's fixture
from streams.pricing import PriceBook, load_price_book
from streams.pricing.coverage import coverage, version_is_first_party
from app.cli import main
from tokenmeter.events import Usage

D = Decimal
K = THOUSAND_EACH



def cost(book: PriceBook, provider: str, model: str, day: str, usage: Usage = K):
    return price_on(book, provider, model, day, usage)


# (provider as the gateway logs it, model as logged, event day, expected USD for 1,000 input + 1,000 output tokens)
NAMED_IN_THE_ISSUE = [
    ("openai", "gpt-4", "2024-03-01", "0.09"),  # $30 / $60
    ("openai", "gpt-4-0613", "2024-03-01", "0.09"),
    ("openai", "gpt-4-turbo", "2024-05-01", "0.04"),  # $10 / $30
    ("openai", "gpt-4-turbo-2024-04-09", "2024-05-01", "0.04"),
    ("openai", "gpt-4-0125-preview", "2024-02-01", "0.04"),
    ("openai", "gpt-3.5-turbo", "2024-01-15", "0.0035"),  # alias on 0613: $1.50 / $2.00
    ("openai", "gpt-3.5-turbo", "2024-06-01", "0.002"),  # alias on 0125: $0.50 / $1.50
    ("openai", "gpt-3.5-turbo-0613", "2024-06-01", "0.0035"),  # pinned snapshot keeps its own price
    ("openai", "gpt-3.5-turbo-0125", "2024-06-01", "0.002"),
    ("anthropic", "claude-3-5-sonnet-20240620", "2024-07-01", "0.018"),  # $3 / $15
    ("anthropic", "claude-3-5-sonnet-20241022", "2024-11-01", "0.018"),
    ("anthropic", "claude-3-opus-20240229", "2024-04-01", "0.09"),  # $15 / $75
    ("anthropic", "claude-3-haiku-20240307", "2024-04-01", "0.0015"),  # $0.25 / $1.25
    ("gemini", "gemini-1.5-flash", "2024-07-01", "0.0014"),  # $0.35 / $1.05 before the August cut
    ("gemini", "gemini-1.5-flash-002", "2024-10-01", "0.000375"),  # $0.075 / $0.30 after it
    ("gemini", "gemini-1.5-pro", "2024-06-15", "0.014"),  # $3.50 / $10.50
    ("gemini", "gemini-1.5-pro", "2024-10-15", "0.00625"),  # $1.25 / $5.00 from 2024-10-01
    ("cohere", "command-r-08-2024", "2024-09-15", "0.00075"),  # $0.15 / $0.60
    ("cohere_chat", "command-r-plus", "2024-06-01", "0.018"),  # alias of 04-2024: $3 / $15
    ("groq", "llama-3.1-8b-instant", "2024-08-01", "0.00013"),  # $0.05 / $0.08
    ("fireworks_ai", "accounts/fireworks/models/llama-v3p1-70b-instruct", "2024-08-01", "0.0018"),  # $0.90
    ("dashscope", "qwen-max", "2025-03-01", "0.008"),  # $1.60 / $6.40
    ("openrouter", "anthropic/claude-3-opus", "2024-05-01", "0.09"),  # router: the maker's price
    ("bedrock", "us.anthropic.claude-3-5-sonnet-20241022-v2:0", "2024-11-15", "0.018"),
    ("vertex_ai", "claude-3-5-sonnet-v2@20241022", "2024-11-15", "0.018"),
]


@pytest.mark.parametrize("provider, model, day, expected", NAMED_IN_THE_ISSUE)
def test_models_named_in_real_logs_price_their_day(book, provider, model, day, expected):
    result = cost(book, provider, model, day)
    assert result.status == "priced", result.reason
    assert result.cost_usd == D(expected)
    assert result.ref is not None and result.ref.effective_from <= day


def test_retired_models_keep_their_prices_on_their_dates(book):
    # gpt-3.5-turbo-0613 was shut down in 2024-09; Claude 3 Sonnet on 2025-07-21; Claude Instant 1.2 in 2024-11.
    assert cost(book, "openai", "gpt-3.5-turbo-0613", "2024-09-01").cost_usd == D("0.0035")
    assert cost(book, "anthropic", "claude-3-sonnet-20240229", "2025-01-10").cost_usd == D("0.018")
    assert cost(book, "anthropic", "claude-instant-1.2", "2024-02-01").cost_usd == D("0.0032")
    # before a model existed there is no price: unpriced with a reason, never $0
    early = cost(book, "anthropic", "claude-3-5-sonnet-20240620", "2024-05-01")
    assert early.status == "unpriced" and "no price" in early.reason and early.cost_usd == 0


def test_price_cuts_are_new_versions_not_overwrites(book):
    flash = book.entries["gemini/gemini-1.5-flash"]
    assert [v.effective_from.date().isoformat() for v in flash.versions] == ["2024-05-30", "2024-08-12"]
    assert cost(book, "gemini", "gemini-1.5-flash", "2024-08-11").cost_usd == D("0.0014")
    assert cost(book, "gemini", "gemini-1.5-flash", "2024-08-12").cost_usd == D("0.000375")
    # gpt-4o (already in the catalog): $5 / $15 until the alias moved to the 2024-08-06 snapshot on 2024-10-02
    assert cost(book, "openai", "gpt-4o", "2024-09-01").cost_usd == D("0.02")
    assert cost(book, "openai", "gpt-4o", "2024-11-01").cost_usd == D("0.0125")


def test_long_prompts_of_the_1_5_generation_pay_the_above_128k_rate(book):
    usage = Usage(input_tokens=200_000, output_tokens=1_000)
    # gemini-1.5-pro after the October 2024 cut: $2.50 / $10.00 above 128k tokens, whole call
    assert cost(book, "gemini", "gemini-1.5-pro", "2024-11-01", usage).cost_usd == D("0.51")


def test_cache_reads_of_2024_priced_at_the_cache_rate(book):
    usage = Usage(input_tokens=10_000, cached_input_tokens=8_000, output_tokens=0)
    # DeepSeek from 2024-08-02: $0.014 per 1M cache hits, $0.14 misses
    assert cost(book, "deepseek", "deepseek-chat", "2024-09-01", usage).cost_usd == D("0.000392")
    # Claude 3 Haiku: cache hits $0.03 per 1M
    assert cost(book, "anthropic", "claude-3-haiku-20240307", "2024-09-01", usage).cost_usd == D("0.00074")


def test_coverage_counts_first_party_versions(tmp_path):
    (tmp_path / "lab.yaml").write_text(
        "provider: lab\nsource: https://lab.example/pricing\nmodels:\n"
        "  m1:\n    versions:\n"
        "      - {effective_from: 2024-01-01, input: '1', output: '2'}\n"
        "      - {effective_from: 2024-06-01, input: '0.5', output: '1', notes: 'unverified first-party (LiteLLM)'}\n"
        "  m2:\n    versions:\n      - {effective_from: 2025-02-01, input: '1', output: '2'}\n")
    book = load_price_book(extra_paths=[tmp_path])
    (lab,) = [row for row in coverage(book.entries.values()) if row.provider == "lab"]
    # files outside the bundled catalog never count as first-party, whatever their notes say
    assert (lab.models, lab.versions, lab.first_from, lab.last_change) == (2, 3, "2024-01-01", "2025-02-01")
    assert lab.first_party_models == 0 and lab.first_party_versions == 0


def test_coverage_of_the_bundled_catalog_marks_unverified_versions(book):
    rows = {row.provider: row for row in coverage(book.entries.values())}
    assert {"openai", "anthropic", "gemini", "cohere", "groq", "fireworks", "dashscope", "deepseek"} <= set(rows)
    openai = rows["openai"]
    assert openai.first_from <= "2023-03-14" and 0 < openai.first_party_models < openai.models
    # Together's prices come only from third parties here: none of them count as first-party
    assert rows["together"].first_party_versions == 0 and rows["together"].models >= 15
    # Groq's only first-party versions are the two prices its own changelog states (groq/groq-changelog)
    groq = [e for e in book.entries.values() if e.provider == "groq"]
    first_party = [e.key for e in groq for v in e.versions if version_is_first_party(e, v)]
    assert sorted(first_party) == ["groq/moonshotai/kimi-k2-instruct-0905", "groq/qwen/qwen3-32b"]
    assert rows["groq"].first_party_versions == 2 and rows["groq"].models >= 15


@pytest.fixture()
def cli_env(tmp_path, monkeypatch):
    for name in ("TOKENMETER_CONFIG", "TOKENMETER_PRICE_OVERRIDES", "TOKENMETER_AZURE_DEPLOYMENTS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TOKENMETER_DATA_DIR", str(tmp_path / "data"))


def test_prices_coverage_command_text_and_json(cli_env):
    text = CliRunner().invoke(main, ["prices", "coverage"], catch_exceptions=False)
    assert text.exit_code == 0, text.output
    header, *lines = text.output.splitlines()
    assert header.split()[:3] == ["provider", "models", "versions"] and "first-party" in header
    by_provider = {line.split()[0]: line.split() for line in lines}
    assert {"anthropic", "cohere", "dashscope", "fireworks", "groq", "openai", "all"} <= set(by_provider)
    assert by_provider["together"][5:7] == ["0", "(0%)"]

    as_json = CliRunner().invoke(main, ["prices", "coverage", "--json"], catch_exceptions=False)
    assert as_json.exit_code == 0
    data = orjson.loads(as_json.output)
    providers = data["providers"]
    assert sum(p["models"] for p in providers) == data["total"]["models"]
    assert sum(p["first_party_models"] for p in providers) == data["total"]["first_party_models"]
    cohere = next(p for p in providers if p["provider"] == "cohere")
    assert cohere["first_from"] <= "2024-03-11" and D(cohere["first_party_share"]) <= 1
