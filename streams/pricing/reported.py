"""A cost the provider reported for a call (OpenRouter's `usage.cost`) as the cost of record, checked against
the catalog.

OpenRouter bills in credits per call and says how much in the response; its price for a model can differ from
the model maker's list price (its own routing, a provider's discount, a web search or advisor fee it adds).
What was billed is what finance must see, so the event costs the reported amount. The catalog still prices
the same usage where it knows the model, and the two are kept side by side instead of one silently replacing
the other:
- the breakdown keeps the catalog's lines and adds one line `reported_difference` (reported minus the catalog
  total, either sign, 0 when they agree), so the lines still add up to the total and every cost-line report shows
  the difference as a line of its own;
- where the catalog cannot price the usage (unknown model, no price at that date), the breakdown is one line
  `reported`: the cost is still the reported one, and the reason stays on the event;
- `reported_cost_check` says which of these happened, in words.
Either line marks a stored row as priced from a reported cost: the warehouse's re-price reads the cost back as
the reported one (warehouse/reprice.py), so a catalog change re-checks it and never replaces it.
"""

from __future__ import annotations

from decimal import Decimal

from .book import ZERO, PriceResult

REPORTED_LINE = "reported"
DIFFERENCE_LINE = "reported_difference"


def _usd(amount: Decimal) -> str:
    return format(amount.normalize(), "f")


def with_reported_cost(catalog: PriceResult, reported: Decimal) -> tuple[PriceResult, str]:
    """(the result that costs the call at `reported`, the check note)."""
    if catalog.status != "priced":
        note = f"not checked against the catalog: {catalog.reason or 'no price'}"
        return PriceResult(reported, {REPORTED_LINE: reported}, "priced", None, catalog.ref), note
    entry = catalog.ref.entry if catalog.ref else "catalog"
    difference = reported - catalog.cost_usd
    # The line is there even at 0: it marks the stored row as reported-cost, so a re-price keeps the cost.
    lines = dict(catalog.breakdown) | {DIFFERENCE_LINE: difference}
    if difference:
        note = (f"differs from the catalog ({entry}: {_usd(catalog.cost_usd)} USD) by "
                f"{'+' if difference > ZERO else ''}{_usd(difference)} USD")
    else:
        note = f"matches the catalog ({entry})"
    return PriceResult(reported, lines, "priced", None, catalog.ref), note


__all__ = ["DIFFERENCE_LINE", "REPORTED_LINE", "with_reported_cost"]
