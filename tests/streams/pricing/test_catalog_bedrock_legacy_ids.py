"""Bedrock's Claude 2.x / Instant model ids (`anthropic.claude-v2`, `anthropic.claude-v2:1`,
`anthropic.claude-instant-v1`) carry no version the resolver can reduce to a catalog name (the Bedrock id pattern
strips `-v2:1` and leaves "claude"): 2024 Bedrock logs of them came out unpriced as unknown models although the
catalog has Claude 2.x. Priced now at Bedrock's rows (bedrock_2024.yaml), never at another Claude's."""

from __future__ import annotations

from decimal import Decimal

import pytest

from price_support import MILLION_EACH, book, price_on  # noqa: F401 - book: the module's fixture
from streams.pricing import PriceBook


@pytest.mark.parametrize(("model", "day", "usd"), [
    ("anthropic.claude-v2:1", "2024-03-01", "32.00"),  # $8 + $24
    ("anthropic.claude-v2", "2024-03-01", "32.00"),
    ("anthropic.claude-instant-v1", "2024-03-01", "3.20"),  # $0.80 + $2.40
    ("bedrock/anthropic.claude-v2:1", "2024-06-01", "32.00"),  # LiteLLM's spelling
    ("arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-v2:1", "2024-06-01", "32.00"),
])
def test_bedrock_claude_2_ids_are_priced(book: PriceBook, model, day, usd):
    priced = price_on(book, "bedrock", model, day, MILLION_EACH)
    assert priced.status == "priced", priced.reason
    assert priced.cost_usd == Decimal(usd)
