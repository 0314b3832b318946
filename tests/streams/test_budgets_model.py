"""Budget definitions: every problem reported at once, scope matching (tags too), token and USD amounts."""

from decimal import Decimal

import pytest

from streams.budgets import BudgetError, parse_budget, validate_budget
from tokenmeter.events import PricedEvent

PD_KEY = "a" * 32


def priced(**overrides):
    event = {
        "event_id": "e1", "ts": "2026-11-01T10:00:00Z", "source": "sdk", "provider": "openai", "model": "gpt-4o",
        "attribution": {"org": "acme", "team": "search", "user": "ana", "tags": {"env": "prod"}},
        "usage": {"input_tokens": 1000, "output_tokens": 500}, "tokens_source": "provider",
        "cost_usd": "0.006500000000", "pricing_status": "priced",
    }
    event.update(overrides)
    return event


def test_valid_budget_normalises_limit_and_thresholds():
    b = parse_budget({"name": "search-monthly", "scope": {"team": "search"}, "limit": "100.50",
                      "thresholds": [100, 50, 80], "notify": ["slack=https://hooks.slack.com/services/T/B/x",
                                                             f"pagerduty={PD_KEY}", "webhook=http://127.0.0.1:9/x"]})
    assert b.limit == Decimal("100.50") and b.thresholds == (50, 80, 100)
    assert b.to_json()["limit"] == "100.50"
    assert parse_budget(b.to_json()) == b  # JSON round trip (the topic format)
    tokens = parse_budget({"name": "t", "scope": {}, "metric": "tokens", "limit": 5000})
    assert tokens.limit == 5000 and isinstance(tokens.limit, int)


def test_all_problems_reported_at_once():
    bad = {"name": "bad name", "scope": {"teem": "x", "team": ""}, "metric": "dollars", "period": "fortnight",
           "tz": "Mars/Olympus", "limit": 1.5, "thresholds": [0, 2000], "action": "nuke",
           "notify": ["slack=ftp://x", "pagerduty=short", "email=a@b"], "colour": "red"}
    problems = validate_budget(bad)
    fields = {p.split(":")[0].split(".")[0] for p in problems}
    assert {"name", "scope", "metric", "period", "tz", "limit", "thresholds", "action", "notify", "colour"} <= fields
    with pytest.raises(BudgetError) as info:
        parse_budget(bad)
    assert len(info.value.problems) == len(problems) >= 12
    assert "Mars/Olympus" in str(info.value)


@pytest.mark.parametrize("data, needle", [
    ({"name": "x", "scope": {}, "metric": "tokens", "limit": "12.5"}, "whole number"),
    ({"name": "x", "scope": {}, "limit": "-3"}, "positive"),
    ({"name": "x", "scope": {}}, "limit: required"),
    ({"name": "x", "scope": {}, "limit": "1", "period": "rolling:0h"}, "rolling window"),
    ({"name": "x", "scope": {}, "limit": "1", "period": "rolling:91d"}, "rolling window"),
])
def test_single_problems_name_the_field(data, needle):
    assert any(needle in p for p in validate_budget(data)), validate_budget(data)


def test_scope_matching_dimensions_model_provider_and_tags():
    b = parse_budget({"name": "m", "scope": {"team": "search", "model": "gpt-4o", "tag:env": "prod"}, "limit": "1"})
    assert b.matches(priced())
    assert b.matches(PricedEvent.model_validate(priced()))  # models as well as dicts
    assert not b.matches(priced(model="gpt-4o-mini"))
    assert not b.matches(priced(attribution={"team": "search", "tags": {"env": "dev"}}))
    assert not b.matches(priced(attribution={"team": "search"}))  # tag missing
    assert parse_budget({"name": "all", "scope": {}, "limit": "1"}).matches(priced())
    # scope mappings, as the decision endpoint receives them
    assert b.matches({"team": "search", "model": "gpt-4o", "tag:env": "prod"})
    assert b.matches({"team": "search", "model": "gpt-4o", "tags": {"env": "prod"}})
    assert not b.matches({"team": "search"})


def test_amounts_are_exact():
    usd = parse_budget({"name": "u", "scope": {}, "limit": "1"})
    tok = parse_budget({"name": "t", "scope": {}, "metric": "tokens", "limit": 10})
    assert usd.amount(priced()) == Decimal("0.0065") and isinstance(usd.amount(priced()), Decimal)
    assert tok.amount(priced()) == 1500


@pytest.mark.parametrize("limit,metric,problem", [
    ("1e400", "cost_usd", "limit: must be below 10^26"),
    ("100000000000000000000000000", "cost_usd", "limit: must be below 10^26"),
    ("0.0000000000001", "cost_usd", "at most 12 decimal places"),
    ("1" + "0" * 26, "tokens", "limit: must be below 10^26"),
])
def test_a_limit_the_warehouse_cannot_store_is_refused_when_set(limit, metric, problem):
    """walk30: `budget set x --limit-usd 1e400` was saved and enforced, and every enforcement record of the budget
    was then a dead letter at the loader (`budget_status.limit_amount` is Decimal(38, 12): "too long for a
    number"), so its history never reached the warehouse or the Budgets page. The definition is refused instead."""
    budget = {"name": "b", "scope": {"team": "search"}, "metric": metric, "limit": limit}
    assert any(problem in p for p in validate_budget(budget)), validate_budget(budget)
    assert validate_budget({**budget, "limit": "99999999999999.000000000001" if metric == "cost_usd"
                            else "9" * 25}) == []


def test_a_notify_entry_with_spaces_or_capitals_is_the_route_it_names():
    """walk32: `--notify "slack= https://hooks.slack.com/…"` (or `Slack=…` in YAML) was refused with "'slack=https://
    hooks.slack.com/services/***' is not slack=URL, …", a message naming what looked like a valid route, while the
    dispatcher reads the same entry fine (it strips and lower-cases the kind)."""
    budget = parse_budget({"name": "b", "scope": {}, "limit": "1", "notify": [" Slack = https://hooks.slack.com/services/T/B/x ",
                                                                  "pagerduty= 0123456789abcdef0123456789abcdef"]})
    assert budget.notify == ("slack=https://hooks.slack.com/services/T/B/x",
                             "pagerduty=0123456789abcdef0123456789abcdef")
