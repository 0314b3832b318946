"""hostile32: a decision or reservation naming one dimension twice with different values (a repeated header, the
`x-tokenmeter-api_key` spelling beside `x-tokenmeter-api-key`, a repeated query parameter) was read as its last
value. A gateway that overwrites `x-tokenmeter-api-key` with the caller's identity, as docs/security.md asks, does
not know to strip the underscore spelling, so a blocked caller who sent `x-tokenmeter-api_key: anything` after it
was allowed. Now a decision is answered for every value given (the most severe budget any of them matches), and a
reservation, whose hold must be charged to one owner, is a 400 naming the dimension; a body's tags no longer
override the gateway's tag headers (the other dimensions already did not)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from multidict import CIMultiDict, MultiDict

from streams.budgets import decisions
from streams.budgets.decisions import EnforcementView
from streams.budgets.reservations import ReservationError, ReservationService
from tokenmeter.settings import Settings

PREFIX = "x-tokenmeter-"


def _view() -> EnforcementView:
    view = EnforcementView()
    view.update("agent-daily", {"budget": "agent-daily", "action": "block", "scope": {"team": "growth",
                                                                                   "api_key": "k-blocked"}})
    return view


@pytest.mark.parametrize("headers", [
    [("x-tokenmeter-team", "growth"), ("x-tokenmeter-api-key", "k-blocked"), ("x-tokenmeter-api_key", "other")],
    [("x-tokenmeter-team", "growth"), ("x-tokenmeter-api-key", "k-blocked"), ("x-tokenmeter-api-key", "other")],
    [("x-tokenmeter-team", "growth"), ("X-Tokenmeter-Api-Key", "k-blocked"), ("x-tokenmeter-api-key", "other")],
])
def test_a_second_value_for_a_header_does_not_unblock_a_caller(headers):
    decision = _view().decide(_values(MultiDict(), CIMultiDict(headers), PREFIX))
    assert decision["action"] == "block" and decision["budget"] == "agent-daily"


def test_a_second_value_for_a_query_parameter_does_not_unblock_a_caller():
    query = MultiDict([("team", "growth"), ("api_key", "k-blocked"), ("api_key", "other")])
    assert _view().decide(_values(query, CIMultiDict(), PREFIX))["action"] == "block"


def test_one_value_per_dimension_is_answered_as_before():
    headers = CIMultiDict([("x-tokenmeter-team", "growth"), ("x-tokenmeter-api-key", "other")])
    assert _view().decide(_values(MultiDict(), headers, PREFIX)) == {"action": "allow"}
    query = MultiDict([("team", "growth"), ("api_key", "k-blocked")])  # the query pins what headers say
    assert _view().decide(_values(query, headers, PREFIX))["action"] == "block"


def _reserve(tmp_path, headers, attribution=None):
    service = SimpleNamespace(settings=Settings(data_dir=tmp_path))
    body = {"provider": "openai", "model": "gpt-4o", "attribution": attribution or {}, "prompt_tokens": 10,
            "max_output_tokens": 10, "request_id": "req-1"}
    return ReservationService(service, book=None).parse(body, MultiDict(), CIMultiDict(headers))


def test_a_reservation_naming_two_owners_is_a_400_naming_the_dimension(tmp_path):
    with pytest.raises(ReservationError) as refused:
        _reserve(tmp_path, [("x-tokenmeter-team", "growth"), ("x-tokenmeter-api-key", "k-blocked"),
                            ("x-tokenmeter-api_key", "other")])
    assert refused.value.status == 400 and "api_key" in refused.value.message
    assert "k-blocked" not in refused.value.message  # an identity, possibly a key: named by dimension only


def test_the_gateways_tag_header_wins_over_the_bodys_tags(tmp_path):
    call = _reserve(tmp_path, [("x-tokenmeter-team", "growth"), ("x-tokenmeter-tag-env", "prod")],
                    {"tags": {"env": "dev"}, "team": "search"})
    assert call["attributes"]["tag:env"] == "prod" and call["attributes"]["team"] == "growth"


def _values(query, headers, prefix):
    """Every value each dimension is given (`attribute_values`; before it, the one `attributes_from_request` kept)."""
    read = getattr(decisions, "attribute_values", decisions.attributes_from_request)
    return read(query, headers, prefix)


def test_a_tag_header_finds_a_scope_whose_key_has_capitals_or_underscores():
    """hostile32: HTTP lower-cases header names and nginx drops those with `_`, so a gateway sends
    `x-tokenmeter-tag-cost-center` for the tag `cost_center` (and `...-tag-Env` arrives as `env`): a budget scoped
    `tag:cost_center` or `tag:Env` was never matched from headers, so /v1/decision answered allow at its block and a
    reservation held nothing for it. A tag header now also reads as every scope key of that header form."""
    from streams.budgets import parse_budget
    from streams.budgets.routing import BudgetRouter

    budgets = [parse_budget({"name": n, "scope": scope, "limit": "1", "period": "day", "action": "block"})
               for n, scope in (("cc", {"tag:cost_center": "cc1"}), ("env", {"tag:Env": "prod"}))]
    router = BudgetRouter(budgets)
    view = EnforcementView()
    for budget in budgets:
        view.update(budget.name, {"budget": budget.name, "action": "block", "scope": budget.scope})
    cases = (("x-tokenmeter-tag-cost-center", "cc1", "cc"), ("X-Tokenmeter-Tag-Env", "prod", "env"),
             ("x-tokenmeter-tag-cost_center", "cc1", "cc"))
    for header, value, blocked_by in cases:
        attrs = _tagged(CIMultiDict([(header, value)]), router)
        assert view.decide(attrs).get("budget") == blocked_by, (header, attrs)
    assert view.decide(_tagged(CIMultiDict([("x-tokenmeter-tag-env", "dev")]), router)) == {"action": "allow"}


def _tagged(headers, router):
    """attribute_values with the router's tag keys (before hostile32 it took none: then as it was)."""
    try:
        return decisions.attribute_values(MultiDict(), headers, PREFIX, router.header_tag_keys)
    except (TypeError, AttributeError):
        return decisions.attribute_values(MultiDict(), headers, PREFIX)


def test_a_reservations_tag_header_reads_as_the_scopes_key_too(tmp_path):
    from streams.budgets import parse_budget
    from streams.budgets.routing import BudgetRouter

    router = BudgetRouter([parse_budget({"name": "cc", "scope": {"tag:cost_center": "cc1"}, "limit": "1",
                                         "period": "day", "action": "block"})])
    service = SimpleNamespace(settings=Settings(data_dir=tmp_path), router=router)
    body = {"provider": "openai", "model": "gpt-4o", "prompt_tokens": 10, "max_output_tokens": 10, "request_id": "r"}
    call = ReservationService(service, book=None).parse(body, MultiDict(),
                                                        CIMultiDict([("x-tokenmeter-tag-cost-center", "cc1")]))
    assert call["attributes"]["tag:cost_center"] == "cc1" and router.budgets["cc"].matches(call["attributes"])
