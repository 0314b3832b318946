"""Today's per-event path, for the rows the columnar path does not take (invalid rows, rows to count with
tiktoken, tool fees, negotiated rules, out-of-range values): the same calls and the same exception handling as
`streams.batch.process_batch`, so their dead-letter reasons and priced events are byte-identical by construction.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import ValidationError

from streams.batch import RawRecord, aggregate_key, dead_letter
from streams.enrich import price_event
from streams.metering import MeteringError
from streams.pricing import PriceBook
from tokenmeter.events import UsageEvent, describe_validation_error, partition_key


def process_row(item: Any, record: RawRecord, book: PriceBook, now: datetime) -> tuple:
    """("letter", letter) or ("priced", key, priced_json, aggregate key, input, output, cost, unpriced, assumed)."""
    try:
        event = UsageEvent.model_validate(item)
        priced = price_event(event, book, priced_at=now)
    except ValidationError as exc:
        return ("letter", dead_letter(f"invalid event: {describe_validation_error(exc)}", item, record))
    except MeteringError as exc:
        return ("letter", dead_letter(f"cannot meter: {exc}", item, record))
    except Exception as exc:  # a bug must not stop the stream: keep the record and the reason
        return ("letter", dead_letter(f"internal error: {type(exc).__name__}: {exc}", item, record))
    key = partition_key(event)
    cost: Decimal = priced.cost_usd
    return ("priced", key, priced.to_json(), aggregate_key(event, key), priced.usage.input_tokens,
            priced.usage.output_tokens, cost, priced.pricing_status == "unpriced", event.usage_assumption is not None)


__all__ = ["process_row"]
