"""Arrow messages of a batch the frame path wrote only in part (issue 14, arrow14).

A batch with rows the dict path priced (a provider-reported cost, tool requests, a row the frame path does not
take, invalid records beside valid ones) is assembled as a plain BatchResult of JSON texts. Its Arrow messages
were each JSON message decoded and converted (`orjson` -> `priced_arrow.from_events`, ~15 µs per event): a worker
writing Arrow paid about twice a JSON worker's CPU on such traffic (1 % of events with a reported cost was enough
to make every batch mixed). Now the rows the frame path wrote take their Arrow columns (arrow_encode.written_table)
and only the dict path's rows are converted from their JSON; the messages hold the JSON messages' events, cut
where they are (each message's event count read from its length against the events' texts).
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from itertools import accumulate
from typing import Any

import orjson

NOT_WRITTEN = -1  # an event the dict path priced: converted from its JSON text


class ArrowSource:
    """Where each priced event of a mixed batch is: `written` (frame_price.Written: the frame path's rows) and, per
    key in `BatchResult.priced`'s order, the row among them of each event (NOT_WRITTEN: none)."""

    def __init__(self) -> None:
        self.parts: list[tuple] = []  # (rows, PriceRefs, priced_at, tags or None): arrow_encode.written_table's
        self.height = 0
        self.rows: dict[bytes, list[int]] = defaultdict(list)

    def add(self, rows: Any, refs: Any, priced_at: Any, tags: Any = None) -> int:
        """Rows written from columns (the frame path's, or the dict-fed path's with their tags as a map array);
        returns the row number of the first."""
        first = self.height
        if rows.height:
            self.parts.append((rows, refs, priced_at, tags))
            self.height += rows.height
        return first

    def messages(self, result: Any) -> list[tuple[bytes, bytes]] | None:
        """The Arrow messages of `result` (whose events this source describes), cut as its JSON messages are;
        None when its events are no longer the ones described (a caller changed `priced`)."""
        import pyarrow as pa  # only a worker that writes Arrow gets here

        from tokenmeter import priced_arrow

        from .arrow_encode import written_table

        priced = result.priced
        if any(len(self.rows.get(key, ())) != len(texts) for key, texts in priced.items()):
            return None
        ends = {key: list(accumulate((len(text) + 1 for text in texts), initial=0)) for key, texts in priced.items()}
        taken = dict.fromkeys(priced, 0)
        written_rows = self.height
        order: list[int] = []
        converted: list[bytes] = []
        cuts: list[tuple[bytes, int]] = []
        for key, value in result.priced_messages():
            # "[" + texts joined by "," + "]" is 1 + the sum of (text + 1) over its events
            first, end_of = taken[key], ends[key]
            last = bisect_left(end_of, end_of[first] + len(value) - 1)
            if last >= len(end_of) or end_of[last] != end_of[first] + len(value) - 1:
                return None
            texts, rows = priced[key], self.rows[key]
            for position in range(first, last):
                row = rows[position]
                if row == NOT_WRITTEN:
                    order.append(written_rows + len(converted))
                    converted.append(texts[position])
                else:
                    order.append(row)
            cuts.append((key, last - first))
            taken[key] = last
        table = pa.concat_tables([written_table(*part) for part in self.parts] or [priced_arrow.SCHEMA.empty_table()])
        if converted:
            table = pa.concat_tables([table, priced_arrow.from_events([orjson.loads(text) for text in converted])])
        table = table.take(pa.array(order, pa.int64()))
        out, start = [], 0
        for key, count in cuts:
            out.append((key, priced_arrow.write_stream(table.slice(start, count))))
            start += count
        return out


def attribution_columns(attribution: list[tuple]) -> tuple[Any, Any]:
    """validate.py's attribution tuples as the frame path's columns: the dimensions as a polars struct named
    `attribution`, the tags as an Arrow map array (each row's tags in their order, `{}` where none)."""
    import polars as pl
    import pyarrow as pa

    from tokenmeter import priced_arrow
    from tokenmeter.events import ATTRIBUTION_DIMENSIONS

    struct = pl.DataFrame({dim: pl.Series([a[0].get(dim) for a in attribution], dtype=pl.String)
                           for dim in ATTRIBUTION_DIMENSIONS}).to_struct("attribution")
    tags_type = priced_arrow.SCHEMA.field("attribution").type.field("tags").type
    tags = pa.array([dict(a[3]) if len(a) > 3 else {} for a in attribution], tags_type)
    return struct, tags


__all__ = ["ArrowSource", "NOT_WRITTEN", "attribution_columns"]
