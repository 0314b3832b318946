"""Tool request counts, their fee lines and usage assumptions are stored, reported and survive a re-price."""

from __future__ import annotations

from decimal import Decimal

from warehouse import DIMENSIONS
from warehouse.reprice import stored_row_to_event


def test_tool_requests_fee_lines_and_assumptions_are_stored_and_reported(wh, org, make_event):
    searched = make_event(f"{org}-1", org, cost="0.010300000000", model="claude-sonnet-4-5", provider="anthropic")
    searched["usage"]["tool_requests"] = {"web_search": 1}
    searched["cost_breakdown"] = {"input": "0.000300000000", "web_search": "0.010000000000"}
    assumed = make_event(f"{org}-2", org, cost="0.000200000000")
    assumed["usage_assumption"] = "litellm-cache-writes-assumed-in-prompt-tokens"
    plain = make_event(f"{org}-3", org)
    assert wh.insert_priced([searched, assumed, plain]) == 3

    rows = {r["event_id"]: r for r in wh.query(
        "SELECT event_id, tool_requests, usage_assumption, cost_breakdown FROM priced_events WHERE org = {org:String}",
        {"org": org}).to_dicts()}
    assert rows[f"{org}-1"]["tool_requests"] == {"web_search": 1}
    assert rows[f"{org}-2"]["usage_assumption"] == "litellm-cache-writes-assumed-in-prompt-tokens"
    assert rows[f"{org}-3"]["usage_assumption"] == "" and not rows[f"{org}-3"]["tool_requests"]

    assert "usage_assumption" in DIMENSIONS
    by_assumption = wh.spend(["usage_assumption"], filters={"org": [org]})
    assert dict(zip(by_assumption["usage_assumption"], by_assumption["events"])) == {
        "": 2, "litellm-cache-writes-assumed-in-prompt-tokens": 1}

    lines = wh.cost_lines(["provider"], filters={"org": [org]})
    fee = lines.filter((lines["provider"] == "anthropic") & (lines["cost_line"] == "web_search")).to_dicts()
    assert fee == [{"provider": "anthropic", "cost_line": "web_search", "events": 1, "requests": 1,
                    "cost_usd": Decimal("0.010000000000")}]

    stored = wh.query("SELECT * FROM priced_events WHERE event_id = {id:String}", {"id": f"{org}-1"}).to_dicts()[0]
    event = stored_row_to_event(stored)
    assert event.usage.tool_requests == {"web_search": 1}  # a re-price bills the search again
