"""Input-length tiers (several thresholds, the whole call at the highest one its input exceeds) and thinking-mode
output prices (every output token of a call with reasoning tokens at the thinking rate), in the price book and,
byte-identical, in the columnar price path.

Prices: Alibaba Model Studio international (qwen3-max 0<Token<=32K $1.20 / $6.00, 32K<Token<=128K $2.40 / $12.00,
128K<Token<=252K $3.00 / $15.00; 32K = 32,768 tokens, see streams/pricing/catalog/dashscope.yaml), Gemini 2.5 Flash
preview ($0.60 output, $3.50 with thinking on, Google's announcement).
"""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import orjson
import pytest

from streams.batch import RawRecord
from streams.columnar.equivalence import compare_batch
from streams.pricing import CatalogError, load_price_book
from tokenmeter.events import Usage, UsageEvent

pytestmark = pytest.mark.slow(seconds=20)  # rough seconds: longest files first (tests/suite_order.py)

D = Decimal
LATE_2025 = datetime(2025, 10, 15, tzinfo=timezone.utc)
MAY_2025 = datetime(2025, 5, 15, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def book():
    return load_price_book()


def price(book, provider, model, usage, ts=LATE_2025, **fields):
    event = UsageEvent(event_id="e", ts=ts, source="test", provider=provider, model=model, **fields)
    return book.price(event, usage)


def test_qwen3_max_100k_input_call_is_priced_whole_at_its_tier(book):
    result = price(book, "dashscope", "qwen3-max", Usage(input_tokens=100_000, output_tokens=1_000))
    assert result.status == "priced", result.reason
    assert result.breakdown == {"input": D("0.24"), "output": D("0.012")}  # 32K-128K: $2.40 / $12.00
    assert result.cost_usd == D("0.252")


@pytest.mark.parametrize("input_tokens, expected", [
    (32_000, D("0.0384")),       # 32,000 x $1.20: "32K" is not 32,000
    (32_768, D("0.0393216")),    # 32K = 32,768 belongs to the first tier (0 < Token <= 32K)
    (32_769, D("0.0786456")),    # one more token: the whole call at $2.40
    (131_072, D("0.3145728")),   # 128K, still $2.40
    (131_073, D("0.393219")),    # above 128K: $3.00
    (250_000, D("0.75")),
])
def test_qwen3_max_thresholds_are_alibabas_binary_k(book, input_tokens, expected):
    result = price(book, "dashscope", "qwen3-max-preview", Usage(input_tokens=input_tokens))
    assert result.cost_usd == expected


def test_qwen3_coder_plus_fourth_tier_prices_cache_reads_and_output_at_that_tier(book):
    usage = Usage(input_tokens=300_000, cached_input_tokens=100_000, output_tokens=1_000)
    result = price(book, "alibaba", "qwen3-coder-plus", usage)
    assert result.breakdown == {"input": D("1.2"), "cached_input": D("0.06"), "output": D("0.06")}


def test_qwen3_coder_flash_snapshot_name_has_the_tiers(book):
    result = price(book, "dashscope", "qwen3-coder-flash-2025-07-28", Usage(input_tokens=40_000, output_tokens=2_000))
    assert result.cost_usd == D("0.02") + D("0.005")  # 32K-128K: $0.50 / $2.50


@pytest.mark.parametrize("provider", ["gemini", "vertex_ai"])
def test_gemini_25_flash_preview_thinking_call_prices_all_output_at_350(book, provider):
    usage = Usage(input_tokens=1_000, output_tokens=1_000, reasoning_tokens=600)
    result = price(book, provider, "gemini-2.5-flash-preview-04-17", usage, ts=MAY_2025)
    assert result.breakdown == {"input": D("0.00015"), "output": D("0.0014"), "reasoning": D("0.0021")}
    assert result.cost_usd == D("0.00365")


def test_a_call_without_reasoning_tokens_is_priced_as_non_thinking(book):
    """The documented limit: usage logs do not say whether thinking was on; no reasoning tokens = non-thinking."""
    result = price(book, "gemini", "gemini-2.5-flash-preview-05-20", Usage(input_tokens=1_000, output_tokens=1_000),
                   ts=MAY_2025)
    assert result.breakdown == {"input": D("0.00015"), "output": D("0.0006")}


@pytest.mark.parametrize("model, reasoning, expected", [
    ("qwen-plus", 500, D("0.0004") + D("0.004")),     # thinking: all 1,000 output tokens at $4.00
    ("qwen-plus", 0, D("0.0004") + D("0.0012")),      # non-thinking: $1.20
    ("qwen-turbo", 1, D("0.00005") + D("0.0005")),    # one reasoning token is enough: all at $0.50
    ("qwen-turbo", 0, D("0.00005") + D("0.0002")),
])
def test_qwen3_era_plus_and_turbo_bill_thinking_calls_per_mode(book, model, reasoning, expected):
    usage = Usage(input_tokens=1_000, output_tokens=1_000, reasoning_tokens=reasoning)
    assert price(book, "dashscope", model, usage, ts=MAY_2025).cost_usd == expected


def test_qwen_plus_before_qwen3_has_no_thinking_price(book):
    usage = Usage(input_tokens=1_000, output_tokens=1_000, reasoning_tokens=500)
    assert price(book, "dashscope", "qwen-plus", usage, ts=datetime(2025, 3, 1, tzinfo=timezone.utc)).cost_usd == (
        D("0.0004") + D("0.0012"))


def test_batch_multiplier_applies_to_the_thinking_rate(book):
    usage = Usage(input_tokens=1_000, output_tokens=1_000, reasoning_tokens=10)
    result = price(book, "dashscope", "qwen-plus", usage, ts=MAY_2025, batch=True)
    assert result.cost_usd == D("0.0002") + D("0.002")


def test_tiers_and_thinking_combine(book):
    """qwen-plus-2025-07-28 above 256K input: the thinking rate of that tier ($12.00) on all output."""
    usage = Usage(input_tokens=300_000, output_tokens=1_000, reasoning_tokens=100)
    result = price(book, "dashscope", "qwen-plus-2025-09-11", usage)
    assert result.breakdown == {"input": D("0.36"), "output": D("0.0108"), "reasoning": D("0.0012")}
    plain = price(book, "dashscope", "qwen-plus-2025-07-28", Usage(input_tokens=262_144, output_tokens=1_000))
    assert plain.cost_usd == D("0.1048576") + D("0.0012")  # exactly 256K: the first tier, non-thinking


# Catalog format ------------------------------------------------------------------------------------------

TIERED = """provider: lab
source: https://example.com
models:
  m:
    versions:
      - effective_from: 2025-01-01
        input: "1"
        output: "2"
        thinking_output: "5"
        input_tiers:
          - {above_input_tokens: 1000, input: "10", output: "20", thinking_output: "50"}
          - {above_input_tokens: 2000, input: "100", output: "200", thinking_output: "500"}
        batch:
          input: "0.5"
          output: "1"
          thinking_output: "2.5"
          input_tiers:
            - {above_input_tokens: 1000, input: "5", output: "10", thinking_output: "25"}
            - {above_input_tokens: 2000, input: "50", output: "100", thinking_output: "250"}
        priority: {multiplier: "2"}
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """One book for the module (9 tests read it, none changes it): each fresh book reads the whole bundled
    catalog."""
    path = tmp_path_factory.mktemp("lab") / "lab.yaml"
    path.write_text(TIERED)
    return load_price_book(extra_paths=[path])


@pytest.mark.parametrize("input_tokens, reasoning, fields, expected", [
    (1_000, 0, {}, D("0.001") + D("0.002")),
    (1_000, 1, {}, D("0.001") + D("0.005")),
    (1_001, 0, {}, D("0.01001") + D("0.02")),
    (2_001, 1, {}, D("0.2001") + D("0.5")),
    (2_001, 1, {"batch": True}, D("0.10005") + D("0.25")),
    (1_500, 1, {"service_tier": "priority"}, D("0.03") + D("0.1")),
])
def test_custom_catalog_tiers_service_tiers_and_thinking(lab, input_tokens, reasoning, fields, expected):
    usage = Usage(input_tokens=input_tokens, output_tokens=1_000, reasoning_tokens=reasoning)
    result = price(lab, "lab", "m", usage, **fields)
    assert result.status == "priced", result.reason
    assert result.cost_usd == expected


def test_flatten_lists_every_tier_and_thinking_price(lab):
    flat = lab.entries["lab/m"].versions[0].flatten()
    assert flat["thinking_output"] == D("5") and flat["above_2000.thinking_output"] == D("500")
    assert flat["batch.above_1000.input"] == D("5") and flat["priority.above_2000.output"] == D("400")


@pytest.mark.parametrize("version_yaml, message", [
    ("input: '1', output: '2', input_tiers: [{above_input_tokens: 2000, input: '2', output: '3'},"
     " {above_input_tokens: 1000, input: '3', output: '4'}]", "thresholds must rise strictly"),
    ("input: '1', output: '2', input_tiers: []", "input_tiers is empty"),
    ("input: '1', cached_input: '0.1', output: '2', input_tiers: [{above_input_tokens: 10, input: '2', output: '3'}]",
     "input_tiers\\[0\\] \\(above 10\\) lacks \\['cached_input'\\]"),
    ("input: '1', output: '2', reasoning: '3', thinking_output: '4'", "not both"),
    ("input: '1', output: '2', input_tiers: [{above_input_tokens: 10, input: '2', output: '3', thinking_output: '9'}]",
     "gives thinking_output but the base version does not"),
    ("input: '1', output: '2', thinking_output: '5', input_tiers: [{above_input_tokens: 10, input: '2', output: '3'}]",
     "lacks \\['thinking_output'\\]"),
    ("input: '1', output: '2', long_context: {above_input_tokens: 10, input: '2', output: '3'},"
     " input_tiers: [{above_input_tokens: 20, input: '2', output: '3'}]", "not both"),
    ("input: '1', output: '2', input_tiers: [{above_input_tokens: 10, input: '2', output: '3'}],"
     " batch: {input: '1', output: '1'}", "batch needs its own input_tiers prices"),
    ("input: '1', output: '2', input_tiers: [{above_input_tokens: 10, input: '2', output: '3'}],"
     " batch: {input: '1', output: '1', input_tiers: [{above_input_tokens: 11, input: '2', output: '3'}]}",
     "threshold 11 differs from the version's 10"),
    ("input: '1', output: '2', input_tiers: [{above_input_tokens: 10, input: '2', output: '3'},"
     " {above_input_tokens: 20, input: '2', output: '3'}],"
     " batch: {input: '1', output: '1', input_tiers: [{above_input_tokens: 10, input: '2', output: '3'}]}",
     "needs 2 tiers"),
])
def test_bad_tier_entries_name_the_problem(tmp_path, version_yaml, message):
    (tmp_path / "x.yaml").write_text(
        "provider: x\nsource: https://example.com\nmodels:\n"
        f"  m: {{versions: [{{effective_from: 2025-01-01, {version_yaml}}}]}}\n")
    with pytest.raises(CatalogError, match=message):
        load_price_book(extra_paths=[tmp_path / "x.yaml"])


# Columnar path ----------------------------------------------------------------------------------------------

def _event(i, provider, model, ts, usage, **extra):
    return {"event_id": f"t{i}", "ts": ts, "source": "t", "provider": provider, "model": model,
            "attribution": {"team": "x"}, "usage": usage, **extra}


def test_columnar_path_prices_tiers_and_thinking_byte_identically(book, lab):
    """Every threshold edge of every tiered version, thinking and not, every service tier: same bytes."""
    for b in (book, lab):
        events, i = [], 0
        for entry in b.entries.values():
            for version in entry.versions:
                if not version.input_tiers and not version.prices_thinking:
                    continue
                ts = max(version.effective_from, datetime(2020, 1, 1, tzinfo=timezone.utc)).isoformat()
                edges = [1_000] + [t + d for t in version.thresholds for d in (-1, 0, 1)]
                for tokens in edges:
                    for reasoning in (0, 1, 7):
                        for extra in ({}, {"batch": True}, {"service_tier": "priority"}, {"service_tier": "flex"}):
                            i += 1
                            usage = {"input_tokens": tokens, "cached_input_tokens": tokens // 3,
                                     "output_tokens": 999, "reasoning_tokens": reasoning}
                            events.append(_event(i, entry.provider, entry.model, ts, usage, **extra))
        assert len(events) > 100
        records = [RawRecord(orjson.dumps(events[k:k + 500]), "tokenmeter.usage", 0, k)
                   for k in range(0, len(events), 500)]
        assert compare_batch(records, b) == []


@pytest.mark.parametrize("input_tokens, expected", [
    (260_000, D("0.013")),      # 256K = 262,144 tokens: 260,000 is still the first tier ($0.05)
    (262_144, D("0.0131072")),
    (262_145, D("0.06553625")),  # above 256K: the whole call at $0.25
])
def test_qwen_flash_256k_is_262144_tokens(book, input_tokens, expected):
    assert price(book, "dashscope", "qwen-flash", Usage(input_tokens=input_tokens)).cost_usd == expected


# LiteLLM import ------------------------------------------------------------------------------------------

def test_litellm_import_neither_undoes_thinking_prices_nor_drops_input_tiers(tmp_path):
    """LiteLLM's flat keys state a thinking price per reasoning token and at most one threshold: an import must not
    replace a thinking_output or several input tiers by what the map can state (that re-opens the under-pricing)."""
    from streams.pricing import import_litellm_cost_map

    cost_map = tmp_path / "map.json"
    cost_map.write_text("""{
      "dashscope/qwen-plus": {"input_cost_per_token": 4e-07, "output_cost_per_token": 1.2e-06,
                              "output_cost_per_reasoning_token": 4e-06, "litellm_provider": "dashscope",
                              "mode": "chat"},
      "dashscope/qwen-turbo": {"input_cost_per_token": 5e-08, "output_cost_per_token": 2e-07,
                               "output_cost_per_reasoning_token": 6e-07, "litellm_provider": "dashscope",
                               "mode": "chat"},
      "dashscope/qwen3-max": {"input_cost_per_token": 1.1e-06, "output_cost_per_token": 6e-06,
                              "litellm_provider": "dashscope", "mode": "chat"}
    }""")
    data_dir = tmp_path / "data"
    _, report = import_litellm_cost_map(cost_map, data_dir, effective_from=datetime(2026, 6, 1).date())
    assert "dashscope/qwen-plus" in report.unchanged  # its per-reasoning-token $4.00 is our thinking_output
    assert "dashscope/qwen-turbo" not in report.changed and "dashscope/qwen3-max" not in report.changed
    assert any("dashscope/qwen-turbo" in c and "thinking" in c for c in report.conflicts)
    assert any("dashscope/qwen3-max" in c and "input tiers" in c for c in report.conflicts)
    book = load_price_book(data_dir=data_dir)
    late = datetime(2026, 7, 1, tzinfo=timezone.utc)
    usage = Usage(input_tokens=100_000, output_tokens=1_000, reasoning_tokens=10)
    assert price(book, "dashscope", "qwen3-max", usage, ts=late).cost_usd == D("0.252")
    assert price(book, "dashscope", "qwen-turbo", usage, ts=late).cost_usd == D("0.005") + D("0.0005")
