"""What an admitted reservation says it held, through the real HTTP API of a real worker on a broker of this file's
own (a reservation that matches no budget is only "unbudgeted" when the budgets defined are known: the session
broker holds other files' budgets, some of any team's gpt-4o calls).

walk36, as the platform engineer: `{"team": "growth"}` without the agent key was admitted with
`"held": {"cost_usd": "0.28..."}` and `"holds": []`: nothing was held anywhere, yet the answer said held. And gpt-4o
with `max_output_tokens` 100,000 was held at 100,000 output tokens, ~6x what the provider can ever bill (its output
limit is 16,384: OpenAI and Anthropic refuse a larger max_tokens with a 400), so a budget that could afford the call
refused it."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from reserve_support import call, ready, start_worker, stop, wait_for, worker_env, zone_at_noon
from streams.budgets import parse_budget, write_budgets
from tokenmeter.settings import free_port

pytestmark = pytest.mark.slow(seconds=12)  # rough seconds: longest files first (tests/suite_order.py)

HELD_TEAM = f"held-{uuid.uuid4().hex[:6]}"
HELD_BUDGET = f"{HELD_TEAM}-daily"
TOKENS_TEAM = f"tokens-{uuid.uuid4().hex[:6]}"
TOKENS_BUDGET = f"{TOKENS_TEAM}-daily"


@pytest.fixture(scope="module")
def kafka_bootstrap(own_broker):
    return own_broker


@pytest.fixture(scope="module")
def worker_url(kafka_bootstrap, tmp_path_factory):
    """One worker on a broker of its own, with exactly two budgets: $0.50 a day for HELD_TEAM, 100,000 tokens a
    day for TOKENS_TEAM."""
    write_budgets(kafka_bootstrap, [
        parse_budget({"name": HELD_BUDGET, "scope": {"team": HELD_TEAM}, "period": "day", "tz": zone_at_noon(),
                      "limit": "0.50", "action": "block"}),
        parse_budget({"name": TOKENS_BUDGET, "scope": {"team": TOKENS_TEAM}, "period": "day", "tz": zone_at_noon(),
                      "metric": "tokens", "limit": "100000", "action": "block"})])
    port = free_port()
    tmp = tmp_path_factory.mktemp("reservation-answer")
    proc = start_worker(worker_env(kafka_bootstrap, tmp / "data", port), tmp / "worker.log")
    try:
        wait_for(lambda: ready(port), what="worker ready")
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: {HELD_BUDGET, TOKENS_BUDGET} <= {b["budget"] for b in call(
            "GET", f"{url}/v1/reservations")[1].get("budgets", [])}, what="both budgets loaded")
        yield url
    finally:
        stop(proc)


def reservation(team: str, request_id: str, max_output: int, prompt_tokens: int = 1_000) -> dict:
    # gpt-4o at the default tier: $2.50 input, $10.00 output per 1M tokens
    return {"provider": "openai", "model": "gpt-4o", "service_tier": "default", "attribution": {"team": team},
            "prompt_tokens": prompt_tokens, "max_output_tokens": max_output, "request_id": request_id}


def admitted(url: str, body: dict) -> dict:
    status, answer = wait_for(lambda: (lambda r: r if r[0] in (201, 403, 429) else None)(
        call("POST", f"{url}/v1/reservations", body)), timeout=60, what="an answer")
    assert status == 201, answer
    return answer


def test_a_reservation_no_budget_matches_says_nothing_is_held_and_shows_its_worst_case(worker_url):
    answer = admitted(worker_url, reservation("growth", "walk36-unbudgeted", 15_000))
    assert answer["holds"] == []
    # the old answer: "held": {"cost_usd": "0.152500000000", "tokens": 16000} with nothing held anywhere
    assert answer["held"] == {"cost_usd": "0.000000000000", "tokens": 0}, answer
    assert "no budget matches" in answer["reason"] and "nothing is held" in answer["reason"], answer
    assert "team growth" in answer["reason"], answer
    assert (answer["worst_case"]["cost_usd"], answer["worst_case"]["tokens"]) == ("0.152500000000", 16_000)
    # nothing to look at or release later: the id names no hold
    assert call("GET", f"{worker_url}/v1/reservations/{answer['reservation_id']}")[0] == 404


def test_a_held_reservation_says_what_each_metric_holds(worker_url):
    usd = admitted(worker_url, reservation(HELD_TEAM, "held-usd", 1_000))
    assert usd["holds"] == [{"budget": HELD_BUDGET, "amount": "0.012500000000"}]
    assert usd["held"] == {"cost_usd": "0.012500000000", "tokens": 0} and "reason" not in usd, usd
    tokens = admitted(worker_url, reservation(TOKENS_TEAM, "held-tokens", 1_000))
    assert tokens["holds"] == [{"budget": TOKENS_BUDGET, "amount": 2_000}]
    assert tokens["held"] == {"cost_usd": "0.000000000000", "tokens": 2_000}, tokens
    assert tokens["worst_case"]["cost_usd"] == "0.012500000000"
    for answer in (usd, tokens):
        assert call("DELETE", f"{worker_url}/v1/reservations/{answer['reservation_id']}")[0] == 200


def test_a_max_output_above_the_models_limit_is_held_at_the_limit_and_says_so(worker_url):
    """gpt-4o writes at most 16,384 output tokens: 1,000 prompt tokens and 100,000 asked are $1.0025 as asked
    (refused by the $0.50 budget), $0.16634 at the limit."""
    answer = admitted(worker_url, reservation(HELD_TEAM, "walk36-capped", 100_000))
    case = answer["worst_case"]
    assert (case["max_output_tokens"], case["max_output_tokens_asked"], case["output_limit"]) == (
        16_384, 100_000, 16_384), case
    assert "capped at the model's output limit" in case["rule"], case
    assert answer["holds"] == [{"budget": HELD_BUDGET, "amount": "0.166340000000"}]
    assert Decimal(answer["held"]["cost_usd"]) == Decimal("0.16634")
    assert call("DELETE", f"{worker_url}/v1/reservations/{answer['reservation_id']}")[0] == 200
    within = admitted(worker_url, reservation(HELD_TEAM, "within-limit", 16_000))["worst_case"]
    assert (within["max_output_tokens"], within["max_output_tokens_asked"]) == (16_000, 16_000)
    assert "capped" not in within["rule"]
