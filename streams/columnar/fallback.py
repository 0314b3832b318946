"""Today's per-event path, for the rows the columnar path does not take (invalid rows, rows to count with
tiktoken, negotiated rules, out-of-range values, rows whose priced JSON is too large): it calls
`streams.batch._price_item` itself, so their dead letters and priced events are byte-identical by construction.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from streams.batch import BatchResult, RawRecord, _price_item
from streams.pricing import PriceBook


def process_row(item: Any, record: RawRecord, book: PriceBook, now: datetime) -> tuple:
    """("letter", letter) or ("encoded", key, priced JSON, encoded priced JSON, unpriced, assumed)."""
    one = BatchResult()
    letter = _price_item(item, record, book, now, one)
    if letter is not None:
        return ("letter", letter)
    ((key, (encoded,)),) = one.priced.items()
    return ("encoded", key, one.origins[0][2], encoded, bool(one.unpriced_count), bool(one.assumed_count))


__all__ = ["process_row"]
