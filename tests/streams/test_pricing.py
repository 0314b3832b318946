"""Pricing with the real bundled catalog: every usage part, tiers, dates, name resolution, overrides."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from streams.pricing import BUNDLED_CATALOG_DIR, CatalogError, PriceBook, load_price_book
from tokenmeter.events import Attribution, Usage, UsageEvent

pytestmark = pytest.mark.slow(seconds=16)  # rough seconds: longest files first (tests/suite_order.py)

D = Decimal
M = D(1_000_000)
TS = datetime(2025, 11, 1, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def book() -> PriceBook:
    return load_price_book()


def event(provider: str, model: str, ts: datetime = TS, **fields) -> UsageEvent:
    return UsageEvent(event_id="e", ts=ts, source="test", provider=provider, model=model, **fields)


def price(book: PriceBook, provider: str, model: str, usage: Usage, **fields):
    ev = event(provider, model, **fields)
    return book.price(ev, usage)


def test_every_usage_part_of_an_openai_reasoning_call(book):
    usage = Usage(input_tokens=10_000, cached_input_tokens=4_000, output_tokens=3_000, reasoning_tokens=1_000)
    result = price(book, "openai", "gpt-5", usage)
    assert result.status == "priced"
    assert result.breakdown == {
        "input": 6_000 * D("1.25") / M,  # uncached input only
        "cached_input": 4_000 * D("0.125") / M,
        "output": 2_000 * D("10") / M,  # visible output; reasoning is billed once, on its own line
        "reasoning": 1_000 * D("10") / M,
    }
    assert result.cost_usd == D("0.0380") == sum(result.breakdown.values())
    assert (result.ref.entry, result.ref.effective_from) == ("openai/gpt-5", "2025-08-07")
    assert result.ref.catalog_version == book.catalog_version


def test_anthropic_cache_reads_and_writes_are_never_double_counted(book):
    # formats.md's Anthropic example converted to canonical usage: Anthropic's input_tokens (2095) excludes
    # the 2051 cache reads and 2051 cache writes, so canonical input_tokens is their sum.
    usage = Usage(input_tokens=2095 + 2051 + 2051, cached_input_tokens=2051, cache_write_tokens=2051,
                  output_tokens=503)
    result = price(book, "anthropic", "claude-sonnet-4-5-20250929", usage)
    expected = {"input": 2095 * D("3") / M, "cached_input": 2051 * D("0.30") / M,
                "cache_write_5m": 2051 * D("3.75") / M, "output": 503 * D("15") / M}
    assert result.breakdown == expected
    assert result.cost_usd == D("0.02213655")


def test_one_hour_cache_writes_have_their_own_price(book):
    usage = Usage(input_tokens=10_000, cached_input_tokens=2_000, cache_write_tokens=3_000, cache_write_1h_tokens=1_000,
                  output_tokens=500)
    result = price(book, "anthropic", "claude-haiku-4-5", usage)
    assert result.breakdown == {"input": 5_000 * D("1") / M, "cached_input": 2_000 * D("0.10") / M,
                                "cache_write_5m": 2_000 * D("1.25") / M, "cache_write_1h": 1_000 * D("2") / M,
                                "output": 500 * D("5") / M}
    assert result.cost_usd == D("0.0122")


def test_long_context_tier_is_chosen_by_the_calls_input(book):
    at_threshold = price(book, "anthropic", "claude-sonnet-4-5", Usage(input_tokens=200_000, output_tokens=1_000))
    assert at_threshold.cost_usd == 200_000 * D("3") / M + 1_000 * D("15") / M
    above = price(book, "anthropic", "claude-sonnet-4-5",
                  Usage(input_tokens=250_000, cached_input_tokens=50_000, output_tokens=1_000))
    assert above.breakdown == {"input": 200_000 * D("6") / M, "cached_input": 50_000 * D("0.60") / M,
                               "output": 1_000 * D("22.50") / M}
    gemini = price(book, "gemini", "gemini-2.5-pro", Usage(input_tokens=300_000, output_tokens=2_000))
    assert gemini.cost_usd == 300_000 * D("2.50") / M + 2_000 * D("15") / M


def test_batch_prices(book):
    usage = Usage(input_tokens=1_000_000, cached_input_tokens=200_000, output_tokens=100_000)
    standard = price(book, "openai", "gpt-4o-mini", usage)
    batch = price(book, "openai", "gpt-4o-mini", usage, batch=True)
    assert standard.cost_usd == D("0.12") + D("0.015") + D("0.06")
    assert batch.cost_usd == standard.cost_usd / 2
    # Gemini batch: explicit prices, with their own long-context rates.
    long_batch = price(book, "gemini", "gemini-2.5-pro", Usage(input_tokens=400_000, output_tokens=10_000), batch=True)
    assert long_batch.cost_usd == 400_000 * D("1.25") / M + 10_000 * D("7.50") / M


def test_flex_and_priority_service_tiers(book):
    usage = Usage(input_tokens=100_000, cached_input_tokens=20_000, output_tokens=10_000)
    flex = price(book, "openai", "o3", usage, service_tier="flex")
    assert flex.cost_usd == 80_000 * D("1") / M + 20_000 * D("0.25") / M + 10_000 * D("4") / M
    priority = price(book, "openai", "gpt-5", usage, service_tier="priority")
    assert priority.cost_usd == 80_000 * D("2.50") / M + 20_000 * D("0.25") / M + 10_000 * D("20") / M
    for ordinary in ("default", "auto", "standard", None):
        assert price(book, "openai", "gpt-5", usage, service_tier=ordinary).cost_usd == D("0.2025")
    no_flex = price(book, "openai", "gpt-4.1", usage, service_tier="flex")
    assert no_flex.status == "unpriced" and "no flex price" in no_flex.reason
    scale = price(book, "openai", "gpt-4o", usage, service_tier="scale")
    assert scale.status == "unpriced" and "scale" in scale.reason


def test_price_versions_apply_by_event_time(book):
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    before_cut = price(book, "openai", "o3", usage, ts=datetime(2025, 5, 1, tzinfo=timezone.utc))
    after_cut = price(book, "openai", "o3-2025-04-16", usage, ts=datetime(2025, 7, 1, tzinfo=timezone.utc))
    assert (before_cut.cost_usd, before_cut.ref.effective_from) == (D("50"), "2025-04-16")
    assert (after_cut.cost_usd, after_cut.ref.effective_from) == (D("10"), "2025-06-10")
    # gpt-4o, the moving alias, vs its pinned snapshots
    summer_2024 = datetime(2024, 9, 1, tzinfo=timezone.utc)
    assert price(book, "openai", "gpt-4o", usage, ts=summer_2024).cost_usd == D("20")
    assert price(book, "openai", "gpt-4o-2024-08-06", usage, ts=summer_2024).cost_usd == D("12.5")
    assert price(book, "openai", "gpt-4o-2024-05-13", usage).cost_usd == D("20")
    # DeepSeek changed prices at 16:00 UTC
    cut = datetime(2025, 9, 5, 16, 0, tzinfo=timezone.utc)
    assert price(book, "deepseek", "deepseek-chat", usage, ts=cut.replace(minute=0, hour=15)).cost_usd == D("1.37")
    assert price(book, "deepseek", "deepseek-chat", usage, ts=cut).cost_usd == D("2.24")
    too_early = price(book, "openai", "gpt-4o", usage, ts=datetime(2023, 1, 1, tzinfo=timezone.utc))
    assert too_early.status == "unpriced" and "first price from 2024-05-13" in too_early.reason


@pytest.mark.parametrize("provider, model, entry", [
    ("openai", "gpt-4o-mini-2024-07-18", "openai/gpt-4o-mini"),
    ("openai", "gpt-5-2025-08-07", "openai/gpt-5"),
    ("anthropic", "claude-3-5-haiku-20241022", "anthropic/claude-3-5-haiku"),
    ("litellm", "openai/gpt-4o", "openai/gpt-4o"),
    ("openrouter", "anthropic/claude-sonnet-4.5", "anthropic/claude-sonnet-4-5"),
    ("kong", "gpt-4.1-nano", "openai/gpt-4.1-nano"),  # an unpriced gateway name: the model maker's price
    ("aws.bedrock", "anthropic.claude-sonnet-4-5-20250929-v1:0", "bedrock/claude-sonnet-4-5"),
    ("bedrock", "global.anthropic.claude-sonnet-4-5-20250929-v1:0", "bedrock/claude-sonnet-4-5"),
    ("bedrock", "us.anthropic.claude-sonnet-4-5-20250929-v1:0", "bedrock/claude-sonnet-4-5-regional"),
    ("bedrock", "eu.anthropic.claude-haiku-4-5-20251001-v1:0", "bedrock/claude-haiku-4-5-regional"),
    ("bedrock", "us.anthropic.claude-3-5-haiku-20241022-v1:0", "bedrock/claude-3-5-haiku"),
    ("bedrock", "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.amazon.nova-pro-v1:0", "bedrock/nova-pro"),
    ("bedrock", "meta.llama3-3-70b-instruct-v1:0", "bedrock/llama3-3-70b-instruct"),
    ("gcp.vertex_ai", "projects/p1/locations/us-central1/publishers/google/models/gemini-2.5-flash",
     "vertex_ai/gemini-2.5-flash"),
    ("vertex_ai", "publishers/anthropic/models/claude-sonnet-4-5@20250929", "vertex_ai/claude-sonnet-4-5"),
    ("gcp.gemini", "models/gemini-2.5-pro-preview-06-05", "gemini/gemini-2.5-pro"),
    ("mistral_ai", "mistral-large-2411", "mistral/mistral-large-2411"),
    ("x_ai", "grok-4-0709", "xai/grok-4"),
    ("together_ai", "meta-llama/Llama-3.3-70B-Instruct-Turbo", "together/meta-llama/llama-3.3-70b-instruct-turbo"),
    ("azure", "gpt-4o-2024-11-20", "azure/gpt-4o"),
])
def test_model_name_resolution(book, provider, model, entry):
    resolution = book.resolve(provider, model)
    assert resolution.entry is not None, resolution.reason
    assert resolution.entry.key == entry


def test_bedrock_regional_profiles_cost_ten_percent_more(book):
    usage = Usage(input_tokens=100_000, output_tokens=10_000)
    global_cost = price(book, "bedrock", "global.anthropic.claude-sonnet-4-5-20250929-v1:0", usage).cost_usd
    regional = price(book, "bedrock", "us.anthropic.claude-sonnet-4-5-20250929-v1:0", usage).cost_usd
    assert global_cost == D("0.45") and regional == D("0.495")
    long_regional = price(book, "bedrock", "eu.anthropic.claude-sonnet-4-5-20250929-v1:0",
                          Usage(input_tokens=1_000_000, output_tokens=100_000)).cost_usd
    assert long_regional == (D("6") + D("2.25")) * D("1.1")


def test_azure_deployments_are_mapped_by_configuration():
    mapped = load_price_book(azure_deployments={"prod-chat": "gpt-4o-2024-08-06", "cheap": "gpt-4.1-mini"})
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    result = mapped.price(event("azure.ai.openai", "prod-chat"), usage)
    assert (result.ref.entry, result.cost_usd) == ("azure/gpt-4o", D("12.5"))
    assert mapped.resolve("azure", "azure/cheap").entry.key == "azure/gpt-4.1-mini"
    unknown = mapped.price(event("azure", "team-x-deployment"), usage)
    assert unknown.status == "unpriced" and "azure_deployments" in unknown.reason


def test_unknown_models_are_unpriced_with_a_reason_never_zero(book):
    usage = Usage(input_tokens=1_000, output_tokens=1_000)
    for provider, model in [("openai", "gpt-9-ultra"), ("cerebras", "llama-3.3-70b"), ("anthropic", "gpt-4o")]:
        result = price(book, provider, model, usage)
        assert result.status == "unpriced"
        assert model in result.reason
        assert result.breakdown == {} and result.ref is None


def test_ambiguous_names_are_unpriced(tmp_path):
    (tmp_path / "other.yaml").write_text(
        "provider: rival\nfirst_party: true\nsource: https://example.com/pricing\nmodels:\n"
        "  gpt-4o:\n    versions:\n      - {effective_from: 2024-01-01, input: '1', output: '2'}\n")
    result = load_price_book(extra_paths=[tmp_path]).price(event("openrouter", "gpt-4o"), Usage(input_tokens=10))
    assert result.status == "unpriced" and "ambiguous" in result.reason and "rival/gpt-4o" in result.reason


def test_failed_calls_with_zero_usage_cost_nothing(book):
    result = price(book, "openai", "gpt-4o", Usage(), status="error")
    assert (result.status, result.cost_usd, result.breakdown) == ("priced", D(0), {})


OVERRIDES = """
custom_models:
  self-hosted:
    source: internal GPU cost model 2025
    models:
      llama-3.1-8b-internal:
        aliases: [llama-8b]
        versions:
          - {effective_from: 2025-01-01, input: "0.05", output: "0.10", request: "0.0001"}
negotiated:
  - name: acme-all
    org: acme
    discount_percent: "10"
  - name: acme-sonnet
    org: acme
    models: [anthropic/claude-sonnet-4-*]
    prices: {input: "2.00", cached_input: "0.20", cache_write_5m: "2.50", output: "10.00"}
  - name: everyone-openai-2025
    providers: [openai]
    effective_from: 2025-01-01
    effective_until: 2026-01-01
    discount_percent: "12.5"
"""


def test_overrides_custom_models_discounts_and_negotiated_prices(tmp_path):
    path = tmp_path / "overrides.yaml"
    path.write_text(OVERRIDES)
    book = load_price_book(overrides_path=path)
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    acme = Attribution(org="acme")

    custom = book.price(event("self-hosted", "llama-8b"), usage)
    assert (custom.ref.entry, custom.cost_usd) == ("self-hosted/llama-3.1-8b-internal", D("0.1501"))

    discounted = book.price(event("openai", "gpt-4o", attribution=acme), usage)
    assert (discounted.cost_usd, discounted.ref.override) == (D("11.25"), "acme-all")  # 12.50 less 10%

    sonnet = book.price(event("anthropic", "claude-sonnet-4-5", attribution=acme), usage)
    assert (sonnet.cost_usd, sonnet.ref.override) == (D("12.00"), "acme-sonnet")  # the more specific rule

    others = book.price(event("openai", "gpt-4o", attribution=Attribution(org="globex")), usage)
    assert (others.cost_usd, others.ref.override) == (D("10.9375"), "everyone-openai-2025")
    later = book.price(event("openai", "gpt-4o", ts=datetime(2026, 2, 1, tzinfo=timezone.utc)), usage)
    assert (later.cost_usd, later.ref.override) == (D("12.5"), None)
    assert book.catalog_version != load_price_book().catalog_version


@pytest.mark.parametrize("text, message", [
    ("negotiated: [{org: a, discount_percent: 10.5}]", "quoted decimal strings"),
    ("negotiated: [{org: a, discount_percent: '10', prices: {input: '1', output: '1'}}]", "exactly one of"),
    ("negotiated: [{org: a, discount_percent: '110'}]", "cannot exceed 100"),
    ("negotiated: [{org: a, prices: {input: '1'}}]", "input and output prices are required"),
    ("negotiate: []", "negotiate"),
])
def test_bad_overrides_name_the_problem(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(CatalogError, match=message):
        load_price_book(overrides_path=path)


@pytest.mark.parametrize("model_yaml, message", [
    ("versions: [{effective_from: 2025-01-01, input: 1.5, output: '2'}]", "quoted decimal strings"),
    ("versions: [{effective_from: 2025-01-01, input: '1', cached_input: '0.1', output: '2',"
     " priority: {input: '2', output: '4'}}]", "priority lacks \\['cached_input'\\]"),
    ("versions: [{effective_from: 2025-01-01, input: '1', output: '2',"
     " long_context: {above_input_tokens: 1000, input: '2'}}]", "long_context lacks \\['output'\\]"),
    ("versions: [{input: '1', output: '2'}]", "effective_from is required"),
    ("based_on: nobody/nothing", "no catalog file defines"),
])
def test_bad_catalog_entries_name_the_problem(tmp_path, model_yaml, message):
    (tmp_path / "x.yaml").write_text(f"provider: x\nsource: https://example.com\nmodels:\n  m: {{{model_yaml}}}\n")
    with pytest.raises(CatalogError, match=message):
        load_price_book(extra_paths=[tmp_path / "x.yaml"])


def test_price_book_is_cached_until_a_file_changes(tmp_path):
    extra = tmp_path / "extra.yaml"
    extra.write_text("provider: lab\nsource: https://example.com\nmodels:\n"
                     "  m1: {versions: [{effective_from: 2024-01-01, input: '1', output: '1'}]}\n")
    first = load_price_book(extra_paths=[extra])
    assert load_price_book(extra_paths=[extra]) is first
    extra.write_text(extra.read_text().replace("input: '1'", "input: '2'") + "\n")
    second = load_price_book(extra_paths=[extra])
    assert second is not first and second.catalog_version != first.catalog_version
    assert second.price(event("lab", "m1"), Usage(input_tokens=1_000_000)).cost_usd == D("2")


def test_every_bundled_entry_prices_a_call(book):
    usage = Usage(input_tokens=1_000, output_tokens=1_000)
    files = {p.name for p in BUNDLED_CATALOG_DIR.glob("*.yaml")}
    assert {"openai.yaml", "anthropic.yaml", "gemini.yaml", "vertex_ai.yaml", "bedrock.yaml", "azure.yaml",
            "mistral.yaml", "deepseek.yaml", "xai.yaml", "together.yaml"} <= files
    now = datetime.now(timezone.utc)
    for entry in book.entries.values():
        latest = entry.versions[-1]
        assert latest.source and latest.source.startswith("https://"), entry.key
        # A price announced for a later day (gemini-3.8-flash's of 2027-01-01) cannot be asked for by an event yet
        # (events far in the future are refused): the call is priced now, by the version before it.
        result = book.price(event(entry.provider, entry.model, ts=min(latest.effective_from, now)), usage)
        assert result.status == "priced" and result.cost_usd > 0, (entry.key, result.reason)


def test_catalog_version_ignores_where_the_catalog_lives(tmp_path):
    copy = tmp_path / "catalog"
    copy.mkdir()
    for path in Path(BUNDLED_CATALOG_DIR).glob("*.yaml"):
        (copy / path.name).write_bytes(path.read_bytes())
    assert load_price_book(catalog_dir=copy).catalog_version == load_price_book().catalog_version


# Per-request tool fees (issue 12 item 4) -------------------------------------------------------------------

FEES = """
provider: x
source: https://example.com/pricing
models:
  fast: {versions: [{effective_from: 2025-01-01, input: "1", output: "2"}]}
  fast-mini: {versions: [{effective_from: 2025-01-01, input: "1", output: "2"}]}
fees:
  web_search:
    - {effective_from: 2025-01-01, per_1000: "10.00"}
    - {effective_from: 2025-06-01, per_1000: "7.00"}
    - {effective_from: 2025-03-01, per_1000: "0.333", models: ["fast-mini"]}
"""


def test_tool_fees_per_1000_requests_dated_model_specific_rounded_once(tmp_path):
    (tmp_path / "x.yaml").write_text(FEES)
    book = load_price_book(extra_paths=[tmp_path / "x.yaml"])
    usage = Usage(input_tokens=1_000, output_tokens=100, tool_requests={"web_search": 3})
    early = book.price(event("x", "fast", ts=datetime(2025, 2, 1, tzinfo=timezone.utc)), usage)
    assert early.breakdown["web_search"] == D("0.03")
    assert early.cost_usd == D("0.001") + D("0.0002") + D("0.03") == sum(early.breakdown.values())
    later = book.price(event("x", "fast", ts=datetime(2025, 7, 1, tzinfo=timezone.utc)), usage)
    assert later.breakdown["web_search"] == D("0.021")
    mini = book.price(event("x", "fast-mini", ts=datetime(2025, 7, 1, tzinfo=timezone.utc)), usage)
    assert mini.breakdown["web_search"] == D("0.000999000000")  # the model's own fee wins over the newer generic
    before_specific = book.price(event("x", "fast-mini", ts=datetime(2025, 2, 1, tzinfo=timezone.utc)), usage)
    assert before_specific.breakdown["web_search"] == D("0.03")
    undated = book.price(event("x", "fast", ts=datetime(2024, 6, 1, tzinfo=timezone.utc)), usage)
    assert undated.status == "unpriced"  # the model has no price then either


def test_tool_fees_take_the_negotiated_factor_and_unknown_fees_are_unpriced(tmp_path):
    (tmp_path / "x.yaml").write_text(FEES)
    overrides = tmp_path / "overrides.yaml"
    overrides.write_text("negotiated: [{name: acme-x, org: acme, providers: [x], discount_percent: '50'}]\n")
    book = load_price_book(extra_paths=[tmp_path / "x.yaml"], overrides_path=overrides)
    usage = Usage(input_tokens=1_000, tool_requests={"web_search": 1, "file_search": 2})
    result = book.price(event("x", "fast", attribution=Attribution(org="acme")), usage)
    assert result.status == "unpriced" and "no file_search fee" in result.reason
    discounted = book.price(event("x", "fast", attribution=Attribution(org="acme")),
                            Usage(input_tokens=1_000, tool_requests={"web_search": 1}))
    assert discounted.breakdown["web_search"] == D("0.0035")  # $7 per 1,000, half off


@pytest.mark.parametrize("fees_yaml, message", [
    ("{web_search: [{effective_from: 2025-01-01, per_1000: 10.5}]}", "quoted decimal strings"),
    ("{web_searches: [{effective_from: 2025-01-01, per_1000: '1'}]}", "web_searches"),
    ("{web_search: [{per_1000: '1'}]}", "effective_from"),
    ("{web_search: [{effective_from: 2025-01-01, per_1000: '1', models: ['(']}]}", "bad models regex"),
])
def test_bad_fee_entries_name_the_problem(tmp_path, fees_yaml, message):
    (tmp_path / "x.yaml").write_text(f"provider: x\nsource: https://example.com\nfees: {fees_yaml}\n")
    with pytest.raises(CatalogError, match=message):
        load_price_book(extra_paths=[tmp_path / "x.yaml"])


def test_a_fee_needs_a_source(tmp_path):
    (tmp_path / "x.yaml").write_text("provider: x\nfees: {web_search: [{effective_from: 2025-01-01, per_1000: '1'}]}\n")
    with pytest.raises(CatalogError, match="give a source"):
        load_price_book(extra_paths=[tmp_path / "x.yaml"])


def test_bundled_fees_every_kind_priced_for_its_provider(book):
    now = datetime(2026, 11, 1, tzinfo=timezone.utc)
    expected = {("anthropic", "claude-sonnet-4-5", "web_search"): D("10.00"),
                ("anthropic", "claude-sonnet-4-5", "web_fetch"): D("0"),
                ("openai", "gpt-5", "web_search"): D("10.00"), ("openai", "gpt-4o", "web_search"): D("25.00"),
                ("openai", "gpt-5", "file_search"): D("2.50"), ("openai", "gpt-5", "code_interpreter"): D("30.00"),
                ("gemini", "gemini-2.5-flash", "grounding_prompts"): D("35.00"),
                ("gemini", "gemini-3-pro-preview", "grounding_queries"): D("14.00")}
    for (provider, model, kind), per_1000 in expected.items():
        entry = book.resolve(provider, model).entry
        fee = entry.fee_at(kind, now)
        assert fee is not None and fee.per_1000 == per_1000 and fee.source.startswith("https://"), (model, kind)
