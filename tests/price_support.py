"""One call priced on a given day by the bundled catalog: the helper of the price-history and catalog tests (each
file used to define the same fixture and function)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from streams.pricing import PriceBook, load_price_book
from tokenmeter.events import Usage, UsageEvent

# Overrides of the columnar pricing tests: a custom model with an alias and a negotiated discount for one org (the
# columnar equivalence file adds a provider-wide rule to it)
SELF_HOSTED_AND_ACME = """
custom_models:
  self-hosted:
    source: internal GPU cost model
    models:
      llama-3.1-8b-internal:
        aliases: [llama-internal]
        versions:
          - {effective_from: 2025-01-01, input: "0.05", output: "0.10", request: "0.0001"}
negotiated:
  - name: acme-all
    org: acme
    discount_percent: "10"
"""

THOUSAND_EACH = Usage(input_tokens=1_000, output_tokens=1_000)
MILLION_EACH = Usage(input_tokens=1_000_000, output_tokens=1_000_000)


@pytest.fixture(scope="module")
def book() -> PriceBook:
    return load_price_book()


def at(day: str) -> datetime:
    """A date or ISO time as UTC."""
    return datetime.fromisoformat(day).replace(tzinfo=timezone.utc)


def price_on(book: PriceBook, provider: str, model: str, day: str, usage: Usage):
    return book.price(UsageEvent(event_id="e", ts=at(day), source="test", provider=provider, model=model), usage)
