"""OpenAI fine-tuned models (`ft:<base snapshot>:<org>:<suffix>:<id>`) are billed at their base snapshot's fine-tuning
rate, above the base model's; before streams/pricing/catalog/openai_finetuned.yaml every such name in a log came out
unpriced ("unknown model"), although openai_2024.yaml claimed they resolved to the base price. Sources: the entries'
notes (GPT-4o / GPT-4o mini fine-tuning from OpenAI's Prompt Caching announcement of 2024-10-01)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from price_support import MILLION_EACH, book, price_on  # noqa: F401 - book: the module's fixture
from streams.pricing import PriceBook
from streams.pricing.coverage import version_is_first_party
from tokenmeter.events import Usage

# (model as logged, day, USD for 1M input + 1M output tokens)
PRICED = [
    ("ft:gpt-4o-mini-2024-07-18:acme:support-bot:9xY1AbCd", "2024-09-01", "1.50"),  # $0.30 + $1.20
    ("ft:gpt-4o-2024-08-06:acme::A1b2C3d4", "2024-11-01", "18.75"),  # $3.75 + $15.00
    ("openai/ft:gpt-4o-mini-2024-07-18:acme::x", "2025-02-01", "1.50"),  # a LiteLLM-style provider prefix
    ("ft:gpt-3.5-turbo-0613:acme::8aBcDeF", "2024-03-01", "9.00"),  # $3 + $6
    ("ft:gpt-3.5-turbo-0125:acme:triage:9zZ", "2024-06-01", "9.00"),
    ("ft:gpt-3.5-turbo-1106:acme::abc", "2024-06-01", "9.00"),
    ("ft:gpt-4.1-mini-2025-04-14:acme:extract:Bq1", "2025-06-01", "4.00"),  # $0.80 + $3.20
    ("ft:gpt-4.1-2025-04-14:acme::Bq2", "2025-06-01", "15.00"),  # $3 + $12
    ("ft:gpt-4.1-nano-2025-04-14:acme::Bq3", "2025-06-01", "1.00"),  # $0.20 + $0.80
    ("ft:o4-mini-2025-04-16:acme:grader:C1", "2025-06-01", "20.00"),  # $4 + $16
    ("ft:davinci-002:acme::7zZ", "2024-02-01", "24.00"),  # $12 + $12
    ("ft:babbage-002:acme::7zY", "2024-02-01", "3.20"),  # $1.60 + $1.60
]


@pytest.mark.parametrize(("model", "day", "usd"), PRICED)
def test_a_fine_tune_is_priced_at_its_fine_tuning_rate(book: PriceBook, model, day, usd):
    priced = price_on(book, "openai", model, day, MILLION_EACH)
    assert priced.status == "priced", priced.reason
    assert priced.cost_usd == Decimal(usd)


def test_cached_reads_of_a_gpt4o_mini_fine_tune_are_half_price(book: PriceBook):
    usage = Usage(input_tokens=1_000_000, cached_input_tokens=400_000, output_tokens=0)
    priced = price_on(book, "openai", "ft:gpt-4o-mini-2024-07-18:acme::x", "2024-10-15", usage)
    assert priced.cost_usd == Decimal("0.60") * Decimal("0.30") + Decimal("0.40") * Decimal("0.15")


@pytest.mark.parametrize(("model", "day"), [
    ("ft:gpt-4o-mini-2024-07-18:acme::x", "2024-07-01"),  # before fine-tuning of GPT-4o mini opened
    ("ft:gpt-4-0613:acme::x", "2024-06-01"),  # experimental access, no public price
    ("ft:gpt-4o-2024-05-13:acme::x", "2024-09-01"),  # not a fine-tunable base
])
def test_fine_tunes_without_a_price_stay_unpriced_never_at_the_base_rate(book: PriceBook, model, day):
    priced = price_on(book, "openai", model, day, MILLION_EACH)
    assert priced.status == "unpriced" and priced.reason


def test_the_gpt4o_fine_tuning_prices_count_as_first_party(book: PriceBook):
    for key in ("openai/ft:gpt-4o-2024-08-06", "openai/ft:gpt-4o-mini-2024-07-18"):
        entry = book.entries[key]
        assert all(version_is_first_party(entry, v) for v in entry.versions)
    gpt35 = book.entries["openai/ft:gpt-3.5-turbo-0125"]
    assert not any(version_is_first_party(gpt35, v) for v in gpt35.versions)
