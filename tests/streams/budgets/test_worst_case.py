"""The worst-case price a reservation holds: the dearest rule that could apply, from the real catalog."""

from datetime import datetime, timezone
from decimal import Decimal as D

import pytest

from streams.budgets.worst_case import WorstCaseError, count_prompt_tokens, worst_case
from streams.pricing import load_price_book

AT = datetime(2026, 6, 1, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def book():
    return load_price_book()


def test_no_tier_named_takes_the_dearest_non_batch_tier(book):
    # gpt-4o: standard 2.50/10.00, priority 4.25/17.00 per 1M; `auto` may serve priority
    case = worst_case(book, "openai", "gpt-4o", 1_000_000, 10_000, at=AT)
    assert (case.cost_usd, case.rule, case.tokens) == (D("4.42"), "priority", 1_010_000)
    assert worst_case(book, "openai", "gpt-4o", 1_000_000, 10_000, at=AT, service_tier="auto").cost_usd == D("4.42")
    assert worst_case(book, "openai", "gpt-4o", 1_000_000, 10_000, at=AT, service_tier="default").cost_usd == \
        D("2.6")
    assert worst_case(book, "openai", "gpt-4o", 1_000_000, 10_000, at=AT, service_tier="batch").cost_usd == \
        D("1.3")


def test_prompt_tokens_take_the_dearest_input_price_cache_writes_included(book):
    # claude-sonnet-4-5: input 3.00, 1h cache write 6.00, output 15.00
    case = worst_case(book, "anthropic", "claude-sonnet-4-5", 100_000, 10_000, at=AT)
    assert case.cost_usd == D("0.75")  # 100k x 6.00 + 10k x 15.00 per 1M
    assert case.entry == "anthropic/claude-sonnet-4-5"


def test_long_context_prices_above_the_threshold_and_near_it_when_estimated(book):
    above = worst_case(book, "anthropic", "claude-sonnet-4-5", 200_001, 0, at=AT)
    assert above.cost_usd == D("2.400012")  # 200,001 x 12.00 (1h write, long context) / 1M
    assert "long context" in above.rule
    counted = worst_case(book, "anthropic", "claude-sonnet-4-5", 190_000, 0, at=AT, prompt_estimated=True)
    given = worst_case(book, "anthropic", "claude-sonnet-4-5", 190_000, 0, at=AT)
    assert (counted.cost_usd, given.cost_usd) == (D("2.28"), D("1.14"))


def test_a_negotiated_discount_applies_like_the_worker_applies_it(tmp_path):
    path = tmp_path / "overrides.yaml"
    path.write_text("negotiated: [{name: acme-all, org: acme, discount_percent: '10'}]\n")
    discounted = load_price_book(overrides_path=path)
    plain = worst_case(discounted, "openai", "gpt-4o", 1_000_000, 0, at=AT, org="globex", service_tier="default")
    acme = worst_case(discounted, "openai", "gpt-4o", 1_000_000, 0, at=AT, org="acme", service_tier="default")
    assert (plain.cost_usd, acme.cost_usd) == (D("2.5"), D("2.25"))


def test_never_below_the_real_bill_and_rounded_up(book):
    case = worst_case(book, "openai", "gpt-4o-mini", 1, 1, at=AT)
    assert case.cost_usd > 0 and case.cost_usd == case.cost_usd.quantize(D("1e-12"))


@pytest.mark.parametrize("args, message, status", [
    (("openai", "no-such-model-xyz", 10, 10), "cannot price openai/no-such-model-xyz", 422),
    (("openai", "gpt-6-sol", 10, None), "max_output_tokens is required", 400),
    (("openai", "gpt-4o", -1, 10), "prompt_tokens must be >= 0", 400),
    (("openai", "gpt-4o", 10, -5), "max_output_tokens must be >= 0", 400),
])
def test_what_cannot_be_priced_in_advance_is_refused_with_a_reason(book, args, message, status):
    with pytest.raises(WorstCaseError, match=message) as info:
        worst_case(book, *args, at=AT)
    assert info.value.status == status


def test_prompt_text_is_counted_with_the_metering_code():
    from streams.metering.counting import count_message_tokens

    messages = [{"role": "user", "content": "Say hello to the budget owner, please."}]
    assert count_prompt_tokens(messages, "gpt-4o") == count_message_tokens(messages, "gpt-4o") > 5
    assert count_prompt_tokens("hello world", "gpt-4o") == 2
    with pytest.raises(WorstCaseError):
        count_prompt_tokens({"bad": 1}, "gpt-4o")


@pytest.mark.parametrize("provider, model, limit", [
    ("openai", "gpt-4o", 16_384), ("openai", "gpt-5", 128_000), ("openai", "gpt-4.1-mini", 32_768),
    ("openai", "o3", 100_000), ("anthropic", "claude-sonnet-4-5-20250929", 64_000),
    ("anthropic", "claude-3-7-sonnet", 128_000), ("gemini", "gemini-2.5-pro", 65_536),
    ("azure", "gpt-5", 128_000),  # based_on openai/gpt-5: the limit carries over
])
def test_without_max_output_tokens_the_catalogs_output_limit_is_held(book, provider, model, limit):
    case = worst_case(book, provider, model, 1_000, None, at=AT)
    assert (case.max_output_tokens, case.tokens) == (limit, 1_000 + limit)
    assert case.cost_usd == worst_case(book, provider, model, 1_000, limit, at=AT).cost_usd


@pytest.mark.parametrize("provider, model, asked, limit, held", [
    # output at 10.00 per 1M (default tier): 100,000 asked was $1.00 held, $0.16384 at the limit (walk36)
    ("openai", "gpt-4o", 100_000, 16_384, D("0.16384")),
    ("anthropic", "claude-sonnet-4-5-20250929", 200_000, 64_000, D("0.96")),  # 15.00 per 1M
    ("azure", "gpt-5", 1_000_000, 128_000, D("1.28")),  # based_on openai/gpt-5: 10.00 per 1M
])
def test_a_max_output_above_the_models_limit_is_held_at_the_limit(book, provider, model, asked, limit, held):
    """walk36: gpt-4o with max_output_tokens 100,000 (its limit 16,384) was held at 100,000 output tokens, ~6x
    what the provider can bill: OpenAI answers such a request 400 "max_tokens is too large ... supports at most
    16384 completion tokens", Anthropic 400 "max_tokens: N > 64000, which is the maximum allowed"; a gateway that
    clamps sends the limit. The worst case is the limit's, and says it was capped."""
    case = worst_case(book, provider, model, 0, asked, at=AT, service_tier="default")
    assert (case.cost_usd, case.max_output_tokens, case.tokens) == (held, limit, limit)
    assert (case.max_output_tokens_asked, case.output_limit) == (asked, limit)
    assert case.rule.endswith(f"max_output_tokens {asked} capped at the model's output limit {limit}"), case.rule
    at_limit = worst_case(book, provider, model, 0, limit, at=AT, service_tier="default")
    assert (at_limit.cost_usd, at_limit.max_output_tokens_asked) == (held, limit) and "capped" not in at_limit.rule
    unknown = worst_case(book, "openai", "gpt-6-sol", 0, 1_000_000)  # no limit known: held as asked
    assert (unknown.max_output_tokens, unknown.output_limit) == (1_000_000, None) and "capped" not in unknown.rule


def test_a_model_without_a_known_output_limit_is_refused_not_guessed(book):
    with pytest.raises(WorstCaseError, match="max_output_tokens is required: the catalog has no output limit for "
                                            "openai/gpt-6-sol") as info:
        worst_case(book, "openai", "gpt-6-sol", 1_000, None, at=AT)
    assert info.value.status == 400


@pytest.mark.parametrize("value", ["0", "-5", "'65536'", "1.5", "true"])
def test_the_catalog_refuses_an_output_limit_that_is_not_a_positive_integer(tmp_path, value):
    from streams.pricing.schema import CatalogError

    (tmp_path / "x.yaml").write_text(f"provider: x\nmodels:\n  m:\n    max_output_tokens: {value}\n"
                                     "    versions: [{effective_from: 2025-01-01, input: '1', output: '2'}]\n")
    with pytest.raises(CatalogError, match="max_output_tokens"):
        load_price_book(extra_paths=[tmp_path / "x.yaml"])


def test_a_reservation_checks_the_scopes_of_its_candidate_budgets_only(book, tmp_path, monkeypatch):
    """Per-request waste found profiling issue 15's latency: every reservation checked the scope of every defined
    budget (~4 ms per reservation with 1,000 budgets, ten times the rest of its work). Budgets are found through the
    router's scope index now; the result is the same, alias rule and tag-only budgets included."""
    from types import SimpleNamespace

    from streams.budgets import parse_budget
    from streams.budgets.model import Budget
    from streams.budgets.reservations import ReservationService
    from streams.budgets.routing import BudgetRouter
    from tokenmeter.settings import Settings

    wanted = [parse_budget(data) for data in (
        {"name": "team", "scope": {"team": "search"}, "limit": "1"},
        {"name": "alias", "scope": {"model": "claude-sonnet-4-5", "team": "search"}, "limit": "1"},  # same entry
        {"name": "tag-only", "scope": {"tag:env": "prod"}, "limit": "1"},
        {"name": "everyone", "scope": {}, "limit": "1"})]
    others = [parse_budget({"name": f"other-{i}", "scope": {"team": f"t{i}"}, "limit": "1"}) for i in range(1000)]
    others.append(parse_budget({"name": "other-tag", "scope": {"tag:env": "dev"}, "limit": "1"}))
    others.append(parse_budget({"name": "other-model", "scope": {"model": "gpt-4o"}, "limit": "1"}))
    budgets = {b.name: b for b in [*others[:500], *wanted, *others[500:]]}
    service = SimpleNamespace(settings=Settings(data_dir=tmp_path), budgets=budgets, router=BudgetRouter(budgets))
    reservations = ReservationService(service, book)
    attributes = {"team": "search", "tag:env": "prod", "model": "claude-sonnet-4-5-20250929",
                  "provider": "anthropic"}
    entry = worst_case(book, "anthropic", "claude-sonnet-4-5-20250929", 10, 10).entry
    checks = []
    original = Budget.matches
    monkeypatch.setattr(Budget, "matches", lambda self, event: checks.append(self.name) or original(self, event))
    assert [b.name for b in reservations._matching(attributes, entry)] == ["team", "alias", "tag-only", "everyone"]
    assert len(checks) < 20, len(checks)  # not one per defined budget
    checks.clear()
    assert [b.name for b in reservations._matching(attributes, entry)] == ["team", "alias", "tag-only", "everyone"]
    assert len(checks) < 20


def test_a_prompt_above_a_later_input_threshold_is_held_at_that_tier(book):
    """qwen3-max prices the whole call by input length: base, above 32,768 and above 131,072 tokens (the dearest
    input part, the 5-minute cache write: 1.50 / 3.00 / 3.75 per 1M). The worst case took the first threshold's
    prices for every long prompt, holding less than the worker then billed."""
    above_second = worst_case(book, "dashscope", "qwen3-max", 200_000, 0, at=AT)
    assert above_second.cost_usd == D("0.75")  # 200k x 3.75 / 1M (was 0.60: 3.00, the first tier)
    between = worst_case(book, "dashscope", "qwen3-max", 100_000, 0, at=AT)
    assert between.cost_usd == D("0.3")  # 100k x 3.00 / 1M
    # a counted prompt within 10 % of the second threshold may be above it
    near = worst_case(book, "dashscope", "qwen3-max", 125_000, 0, at=AT, prompt_estimated=True)
    assert near.cost_usd == D("0.46875")  # 125k x 3.75 / 1M


def test_output_is_held_at_the_thinking_rate_when_the_model_has_one(book):
    """qwen-plus bills every output token of a call with reasoning at thinking_output (4.00 per 1M, against 1.20
    without): the worst case held 1.20."""
    case = worst_case(book, "dashscope", "qwen-plus", 0, 1_000_000, at=AT)
    assert case.cost_usd == D("4") and "thinking" in case.rule
    assert worst_case(book, "openai", "gpt-4o", 0, 10_000, at=AT, service_tier="default").rule == "standard"
