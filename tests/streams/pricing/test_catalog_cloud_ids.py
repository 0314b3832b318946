"""Model ids of a cloud that the resolver cannot reduce to a catalog name on its own, priced by exact aliases.

Bedrock's Claude 2.x / Instant ids (`anthropic.claude-v2`, `anthropic.claude-v2:1`, `anthropic.claude-instant-v1`)
carry no version the resolver can strip to a catalog name (the Bedrock id pattern strips `-v2:1` and leaves "claude"):
2024 Bedrock logs of them came out unpriced as unknown models although the catalog has Claude 2.x. Priced now at
Bedrock's rows (bedrock_2024.yaml), never at another Claude's. Vertex's Gemini 2.5 Flash / Flash-Lite 09-2025 previews
likewise (vertex_ai.yaml), and Azure names of 2024-2025 models (azure_2024.yaml)."""

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


@pytest.mark.parametrize(("model", "usd"), [
    ("gemini-2.5-flash-preview-09-2025", "2.80"),  # $0.30 + $2.50, as GA 2.5 Flash
    ("projects/p/locations/us-central1/publishers/google/models/gemini-2.5-flash-lite-preview-09-2025", "0.50"),
])
def test_vertex_gemini_09_2025_previews_are_priced_as_their_ga_models(book: PriceBook, model, usd):
    """The Gemini API entries had these preview names as aliases; Vertex's entries (based on them) did not."""
    priced = price_on(book, "vertex_ai", model, "2025-10-01", MILLION_EACH)
    assert priced.status == "priced", priced.reason
    assert priced.cost_usd == Decimal(usd)


@pytest.mark.parametrize(("model", "day", "usd"), [
    ("gpt-4.5-preview", "2025-03-15", "225.00"),  # $75 + $150
    ("azure/gpt-4.5-preview-2025-02-27", "2025-03-15", "225.00"),
    ("codex-mini", "2025-07-01", "7.50"),  # $1.50 + $6
    ("gpt-4-turbo-vision-preview", "2024-03-01", "40.00"),  # $10 + $30
    ("gpt-3.5-turbo-0125", "2024-06-01", "2.00"),  # $0.50 + $1.50
])
def test_azure_names_of_2024_2025_models_are_priced(book: PriceBook, model, day, usd):
    priced = price_on(book, "azure", model, day, MILLION_EACH)
    assert priced.status == "priced", priced.reason
    assert priced.cost_usd == Decimal(usd)
