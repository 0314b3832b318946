"""The most money one priced event may carry: what the warehouse's cost columns hold, named once.

`priced_events.cost_usd` and every `cost_breakdown` line are Decimal(COST_PRECISION, COST_SCALE) (warehouse
migration 0001; tests/warehouse/test_stored_money_limit.py checks the two agree). A priced event whose total or any
line is at or above MAX_STORED_COST_USD cannot be stored: the worker letters it (streams/batch.py) instead of sending
it, so the budget owner never counts money the warehouse then refuses (cap33: before, the budget counted it and the
loader lettered it, and the two totals disagreed).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Mapping

COST_PRECISION = 18  # digits of the warehouse's Decimal money columns
COST_SCALE = 12  # decimal places: pico-dollars, the pricing stage's quantum
MAX_STORED_COST_PICO = 10**COST_PRECISION  # the first amount in pico-dollars Decimal(18,12) cannot hold
MAX_STORED_COST_USD = Decimal(10) ** (COST_PRECISION - COST_SCALE)  # 1,000,000 USD, excluded


def unstorable_money(cost_usd: Decimal, breakdown: Mapping[str, Decimal]) -> tuple[str, Decimal] | None:
    """(field, amount) of the first money field the warehouse cannot hold (the total first, then the lines in their
    order), or None when all fit. Lines may be negative (`reported_difference`): their size counts."""
    if abs(cost_usd) >= MAX_STORED_COST_USD:
        return "cost_usd", cost_usd
    for name, amount in breakdown.items():
        if abs(amount) >= MAX_STORED_COST_USD:
            return f"cost_breakdown.{name}", amount
    return None


def too_much_money_reason(event: Any, field: str, amount: Decimal) -> str:
    """The dead letter's reason for a priced event (`event`: its id, provider and model are read) whose `field`
    holds `amount`, at or above what the warehouse stores."""
    return (f"cost too large: event {event.event_id!r} ({event.provider}/{event.model}) has {field} "
            f"{format(amount, 'f')} USD, at or above {MAX_STORED_COST_USD} USD, the most the warehouse stores per "
            f"event and per cost line (Decimal({COST_PRECISION},{COST_SCALE})); not sent, not counted by any budget")


__all__ = ["COST_PRECISION", "COST_SCALE", "MAX_STORED_COST_PICO", "MAX_STORED_COST_USD", "too_much_money_reason",
           "unstorable_money"]
