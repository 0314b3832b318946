"""The soak's reserving-gateway verdict (app/soak/checks.reservation_check): past the limit fails unless a broker
loss explains it, and a hold still open after the TTL fails (a leak)."""

from __future__ import annotations

from decimal import Decimal as D

from app.soak.checks import reservation_check

COUNTS = {"admitted": 40, "billed": 36, "released": 3, "abandoned": 1, "refused": 120, "unavailable": 4}
HOLDS = {"budget": "budget-soak-r", "open_reservations": 0, "expired": 1, "settled": 36}


def check(real, in_flight=D(0), lost=D(0), losses=0, holds=HOLDS, bad=(), committed=None):
    return reservation_check(D("1.00"), D(real), D(committed or real) - lost, COUNTS, in_flight, lost, losses, holds,
                             list(bad))


def test_within_the_limit_passes_and_says_how_close():
    result = check("0.991")
    assert result.ok and "99.1% of the $1.00 limit" in result.summary and "never past it" in result.summary


def test_past_the_limit_without_a_broker_loss_fails():
    result = check("1.000000000001")
    assert not result.ok and "PAST THE LIMIT by $0.000000000001" in result.summary


def test_past_the_limit_only_by_what_broker_losses_explain():
    assert check("1.05", in_flight=D("0.03"), lost=D("0.02"), losses=1).ok
    result = check("1.06", in_flight=D("0.03"), lost=D("0.02"), losses=1)
    assert not result.ok and "more than the $0.050000000000 broker losses explain" in result.summary


def test_a_hold_open_after_the_ttl_is_a_leak():
    result = check("0.5", holds={**HOLDS, "open_reservations": 2})
    assert not result.ok and "2 hold(s) still open after the TTL (leaked)" in result.summary
    assert not check("0.5", holds=None).ok


def test_an_unexpected_answer_to_a_reservation_fails():
    assert not check("0.5", bad=["400: {'error': 'max_output_tokens is required'}"]).ok


def test_committed_spend_past_the_limit_fails_even_when_the_bill_is_explained():
    # usage lost with the broker is not in the warehouse: what it holds may pass the limit only by calls in flight
    assert check("1.05", lost=D("0.05"), losses=1).ok  # committed 1.00
    result = check("1.05", lost=D("0.05"), losses=1, committed="1.10")  # committed 1.05
    assert not result.ok and "COMMITTED PAST THE LIMIT by $0.050000000000" in result.summary


def test_holds_carried_across_a_broker_loss_are_no_leak_but_are_shown():
    result = check("0.5", losses=1, holds={**HOLDS, "open_reservations": 3, "carried": 2})
    assert not result.ok and "1 hold(s) still open after the TTL (leaked)" in result.summary
    result = check("0.5", losses=1, holds={**HOLDS, "open_reservations": 2, "carried": 2})
    assert result.ok and "2 open holds (2 carried across a broker loss)" in result.summary
