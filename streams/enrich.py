"""Meter and price one event: the per-event step of the worker and of `tokenmeter price`.

Hot path: no file IO (the PriceBook is loaded once by the caller), model resolution is cached in the
book, tokenizers are loaded once per process, and the PricedEvent is built without re-validating fields
that the UsageEvent already validated. `MeteringError` propagates so the caller can dead-letter the record.
"""

from __future__ import annotations

from datetime import datetime, timezone

from streams.metering import meter
from streams.pricing import PriceBook
from streams.pricing.reported import with_reported_cost
from tokenmeter.events import PricedEvent, UsageEvent

_CARRIED_FIELDS = tuple(name for name in UsageEvent.model_fields if name not in ("usage", "content"))


def price_event(event: UsageEvent, book: PriceBook, priced_at: datetime | None = None) -> PricedEvent:
    usage, tokens_source = meter(event)
    result = book.price(event, usage)
    check = None
    if event.reported_cost_usd is not None:  # the provider said what it billed: that is the cost of record
        result, check = with_reported_cost(result, event.reported_cost_usd)
    fields = {name: getattr(event, name) for name in _CARRIED_FIELDS}
    return PricedEvent.model_construct(
        **fields,
        content=None,  # text is only for counting; it never leaves this step
        usage=usage,
        tokens_source=tokens_source,
        cost_usd=result.cost_usd,
        cost_breakdown=result.breakdown,
        pricing_status=result.status,
        unpriced_reason=result.reason,
        price=result.ref,
        priced_at=priced_at or datetime.now(timezone.utc),
        **({"reported_cost_check": check} if check else {}),
    )


__all__ = ["price_event"]
