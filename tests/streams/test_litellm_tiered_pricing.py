"""LiteLLM entries priced only by `tiered_pricing` (issue 12, price13): DashScope's qwen3.5-plus and qwen3.7-plus have
no flat `input_cost_per_token`, only input-length tiers. The converter reads them into the catalog's `long_context` /
`input_tiers` (Alibaba's thresholds in K = 1,024 tokens), so `tokenmeter prices import` and the history tool price
them; the expected costs below are worked out by hand from the map's figures (LiteLLM 1.110.2)."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal

import pytest

from price_support import price_on
from streams.pricing import import_litellm_cost_map, load_price_book
from streams.pricing.catalog import BUNDLED_CATALOG_DIR
from tokenmeter.events import Usage

MAP = {
    # LiteLLM 1.110.2's entries, figures verbatim
    "dashscope/qwen3.5-plus": {"litellm_provider": "dashscope", "mode": "chat", "tiered_pricing": [
        {"input_cost_per_token": 4e-07, "output_cost_per_token": 2.4e-06, "range": [0, 256000.0]},
        {"input_cost_per_token": 5e-07, "output_cost_per_token": 3e-06, "range": [256000.0, 1000000.0]}]},
    "dashscope/qwen3.7-plus": {"litellm_provider": "dashscope", "mode": "chat", "tiered_pricing": [
        {"cache_read_input_token_cost": 8e-08, "input_cost_per_token": 4e-07, "output_cost_per_token": 1.6e-06,
         "range": [0, 256000.0]},
        {"cache_read_input_token_cost": 2.4e-07, "input_cost_per_token": 1.2e-06, "output_cost_per_token": 4.8e-06,
         "range": [256000.0, 1000000.0]}]},
    # another provider's tiers keep LiteLLM's numbers (only Alibaba writes K = 1,024)
    "acme/tiered-1": {"litellm_provider": "acme", "mode": "chat", "tiered_pricing": [
        {"input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06, "range": [0, 200000]},
        {"input_cost_per_token": 2e-06, "output_cost_per_token": 4e-06, "range": [200000, 500000]},
        {"input_cost_per_token": 3e-06, "range": [500000, 1000000]}]},  # output missing: derived from input ratio
    # not input-length tiers: left out as before
    "exa_ai/search": {"litellm_provider": "exa_ai", "mode": "search", "tiered_pricing": [
        {"input_cost_per_query": 0.005, "max_results_range": [0, 25]}]},
    "acme/no-base-tier": {"litellm_provider": "acme", "mode": "chat", "tiered_pricing": [
        {"input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06, "range": [1000, 200000]}]},
}
DAY = "2026-12-01"


@pytest.fixture()
def imported(tmp_path):
    """The map imported over the bundled catalog without its generated history files (which carry qwen3.5-plus
    and qwen3.7-plus since price13): the prices below are the converter's, not the bundled files'."""
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    for file in BUNDLED_CATALOG_DIR.glob("*.yaml"):
        if not file.name.endswith("_litellm_history.yaml"):
            (catalog / file.name).write_bytes(file.read_bytes())
    path = tmp_path / "map.json"
    path.write_text(json.dumps(MAP))
    data_dir = tmp_path / "data"
    entries, report = import_litellm_cost_map(path, data_dir, book=load_price_book(catalog_dir=catalog),
                                              effective_from=date(2026, 12, 1), new_models_from=date(2026, 12, 1))
    return {e.key: e for e in entries}, report, load_price_book(data_dir=data_dir, catalog_dir=catalog)


def test_tiered_only_entries_convert_to_the_catalogs_tiers(imported):
    entries, report, _ = imported
    assert {"dashscope/qwen3.5-plus", "dashscope/qwen3.7-plus", "acme/tiered-1"} <= set(report.added)
    assert "acme/no-base-tier" not in report.added  # no tier from 0 tokens: no base price
    plus = entries["dashscope/qwen3.7-plus"].spec["versions"][0]
    assert (plus["input"], plus["cached_input"], plus["output"]) == ("0.4", "0.08", "1.6")
    assert plus["long_context"] == {"above_input_tokens": 262_144, "input": "1.2", "cached_input": "0.24",
                                    "output": "4.8"}  # 256,000 is LiteLLM's rounding of Alibaba's 256K
    assert "read as 262,144" in plus["notes"]
    acme = entries["acme/tiered-1"].spec["versions"][0]
    assert [t["above_input_tokens"] for t in acme["input_tiers"]] == [200_000, 500_000]
    assert acme["input_tiers"][1]["output"] == "6"  # 3x the base input, so 3x the base output
    assert "above_500000 output derived from the input ratio" in acme["notes"]


def test_qwen3_5_plus_priced_by_hand(imported):
    _, _, book = imported
    # 256,001 input tokens: above LiteLLM's 256,000 but not above Alibaba's 256K (262,144): the lower tier.
    # 256,001 x $0.40 + 1,000 x $2.40 per 1M = 0.1024004 + 0.0024
    call = Usage(input_tokens=256_001, output_tokens=1_000)
    assert price_on(book, "dashscope", "qwen3.5-plus", DAY, call).cost_usd == Decimal("0.1048004")
    # 300,000 input: the whole call at $0.50 / $3.00 -> 0.15 + 0.003
    call = Usage(input_tokens=300_000, output_tokens=1_000)
    assert price_on(book, "dashscope", "qwen3.5-plus", DAY, call).cost_usd == Decimal("0.153")


def test_qwen3_7_plus_priced_by_hand_with_cache_reads(imported):
    _, _, book = imported
    # exactly 262,144 input (100,000 of them cache reads), 2,000 output: the lower tier (the bound belongs to it):
    # 162,144 x $0.40 + 100,000 x $0.08 + 2,000 x $1.60 per 1M = 0.0648576 + 0.008 + 0.0032
    call = Usage(input_tokens=262_144, cached_input_tokens=100_000, output_tokens=2_000)
    result = price_on(book, "dashscope", "qwen3.7-plus", DAY, call)
    assert result.cost_usd == Decimal("0.0760576")
    # one token more: the whole call at $1.20 / $0.24 / $4.80: 162,145 x 1.2 + 100,000 x 0.24 + 2,000 x 4.8
    call = Usage(input_tokens=262_145, cached_input_tokens=100_000, output_tokens=2_000)
    result = price_on(book, "dashscope", "qwen3.7-plus", DAY, call)
    assert result.breakdown == {"input": Decimal("0.194574"), "cached_input": Decimal("0.024"),
                                "output": Decimal("0.0096")}
    assert result.cost_usd == Decimal("0.228174")


def test_a_tiered_entry_differing_from_a_catalog_version_keeps_the_catalog(tmp_path):
    """The import merges flat prices and one long_context over the catalog's version; input tiers from the map are
    not merged: the catalog is kept and the disagreement reported (never silently half-merged)."""
    qwen_flash = {"litellm_provider": "dashscope", "mode": "chat", "tiered_pricing": [
        {"input_cost_per_token": 6e-08, "output_cost_per_token": 5e-07, "range": [0, 32000.0]},
        {"input_cost_per_token": 1e-07, "output_cost_per_token": 1e-06, "range": [32000.0, 256000.0]},
        {"input_cost_per_token": 3e-07, "output_cost_per_token": 3e-06, "range": [256000.0, 1000000.0]}]}
    path = tmp_path / "map.json"
    path.write_text(json.dumps({"dashscope/qwen-flash": qwen_flash}))
    entries, report = import_litellm_cost_map(path, None, effective_from=date(2026, 12, 1))
    assert entries == [] and report.unchanged == ["dashscope/qwen-flash"]
    assert any("input tiers are not merged" in conflict for conflict in report.conflicts), report.conflicts
