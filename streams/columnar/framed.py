"""The BatchResult of a batch whose every event the frame path wrote (frame_price.py), kept as polars columns: its
priced messages are framed by one polars query, with no Python bytes object per event.

Before, the ~14,000 priced events of a 4 MB chunk became Python bytes (`to_list`), were appended to per-key lists,
counted per segment and joined 500 at a time (`BatchResult.priced_messages`): ~0.5 us per event, with the events
copied twice. Here the messages are grouped and joined in polars and only the ~30 messages of a chunk reach Python.
The order and the cut are `BatchResult.priced_messages`'s exactly: per segment of PRICED_SEGMENT_EVENTS events in
input order, the keys in the order they first appear in it, each key's events in order, MAX_EVENTS_PER_MESSAGE per
message; a message that would reach MAX_MESSAGE_BYTES (which `_frame` would cut by size) sends the whole result
the Python way instead, as does a result whose `priced` was read (a caller may change it).

`priced`, `keys_in_order` and `origins` are built from the columns when first read (tests, re-price, budgets when a
budget exists), so the result reads exactly as the one `_assemble` builds. A batch priced for Arrow messages holds
no JSON text until one of them, or `priced_messages`, reads it (frame_price.Written.texts; issue 14, arrow14).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable

import polars as pl

from streams.batch import PRICED_SEGMENT_EVENTS, BatchResult
from tokenmeter.microbatch import MAX_EVENTS_PER_MESSAGE, MAX_MESSAGE_BYTES

from .encode import LazyOrigins


def frame_messages(keys: pl.Series, texts: pl.Series) -> list[tuple[bytes, bytes]] | None:
    """(key, JSON array) messages of the priced events `texts` (String) with partition keys `keys` (Binary), in
    input order, as `BatchResult.priced_messages` frames them; None when a message reaches the byte cut."""
    if texts.len() == 0:
        return []
    frame = pl.DataFrame([keys.alias("key"), texts.alias("text")])
    # The common case (inproc17): no key has more than MAX_EVENTS_PER_MESSAGE events in a segment, so each (segment,
    # key) is one message, and a group_by keeping the order of first appearance lists them in the order wanted (the
    # segment grows with the row): no window functions, no sort; the events joined as a list (~2x cheaper than
    # str.join as an aggregation, measured on 12,500 events of 600 bytes: 2.96 against 5.07 ms for the whole).
    groups = frame.group_by((pl.int_range(pl.len(), dtype=pl.UInt32) // PRICED_SEGMENT_EVENTS).alias("_segment"),
                            "key", maintain_order=True).agg(pl.len().alias("_n"), pl.col("text"))
    if groups.get_column("_n").max() <= MAX_EVENTS_PER_MESSAGE:
        messages = groups.select("key", message=pl.concat_str(pl.lit("["), pl.col("text").list.join(","), pl.lit("]")))
    else:
        messages = _cut_messages(frame)
    # `_frame` joins a run of events at once only when 2 + their bytes + their count <= MAX_MESSAGE_BYTES
    if messages.get_column("message").str.len_bytes().max() + 1 > MAX_MESSAGE_BYTES:
        return None
    return list(zip(messages.get_column("key").to_list(), messages.get_column("message").cast(pl.Binary).to_list()))


def _cut_messages(frame: pl.DataFrame) -> pl.DataFrame:
    """`frame_messages`' (key, message) rows when a key has more than MAX_EVENTS_PER_MESSAGE events in a segment."""
    return (frame.with_row_index("_row")
            .with_columns(_segment=pl.col("_row") // PRICED_SEGMENT_EVENTS)
            .with_columns(_first=pl.col("_row").min().over("_segment", "key"),  # keys as they first appear
                          _message=pl.int_range(pl.len(), dtype=pl.UInt32).over("_segment", "key")
                          // MAX_EVENTS_PER_MESSAGE)  # 0, 1, ... per key and segment
            .group_by("_segment", "_first", "_message")
            .agg(pl.col("key").first(), pl.col("text").str.join(","))
            .sort("_segment", "_first", "_message")
            .select("key", message=pl.concat_str(pl.lit("["), "text", pl.lit("]"))))


class ColumnsResult(BatchResult):
    """A BatchResult whose `priced` and `keys_in_order` are built by `_materialise` when first read (the rows are
    held as columns until then: FramedResult here, mixed_arrow.ArrowResult)."""

    # dataclass fields the base __init__ assigns: kept aside, filled from the columns when first read
    @property
    def priced(self) -> dict[bytes, list[bytes]]:
        self._materialise()
        return self.__dict__["priced"]

    @priced.setter
    def priced(self, value: dict[bytes, list[bytes]]) -> None:
        self.__dict__["priced"] = value

    @property
    def keys_in_order(self) -> list[bytes]:
        self._materialise()
        return self.__dict__["keys_in_order"]

    @keys_in_order.setter
    def keys_in_order(self, value: list[bytes]) -> None:
        self.__dict__["keys_in_order"] = value

    def _materialise(self) -> None:
        raise NotImplementedError


class FramedResult(ColumnsResult):
    """A BatchResult held as the frame path's written rows (frame_price.Written: `key`, `_unpriced`, `_assumed`,
    `_size_bound` and the Arrow columns, in input order; the JSON text written when first read) until `priced`,
    `keys_in_order` or `origins` is read."""

    def __init__(self, decoded: Any, written: Any) -> None:
        rows = written.rows
        self._rows: pl.DataFrame | None = rows
        self._arrow = (written.refs, written.priced_at)  # with `rows`' ARROW_COLUMNS, the Arrow messages
        self._texts = written.texts  # the JSON text, written on first call (JSON messages, origins, priced)
        super().__init__()
        self.events_in = self.priced_count = rows.height
        self.unpriced_count = int(rows.get_column("_unpriced").sum())
        self.assumed_count = int(rows.get_column("_assumed").sum())
        records, record_of = decoded.records, decoded.record_of
        # the events as bytes, taken once when first needed; closures over the written rows, not over self: a
        # reference cycle would keep the batch's columns alive until the cyclic GC ran
        texts, taken = written.texts, []

        def encoded() -> list[bytes]:
            if not taken:
                taken.append(texts().cast(pl.Binary).to_list())
            return taken[0]

        self._encoded = encoded
        self.origins = LazyOrigins.deferred(lambda: _origins(records, record_of, encoded()))

    def priced_messages(self) -> Iterable[tuple[bytes, bytes]]:
        if self._rows is not None:
            messages = frame_messages(self._rows.get_column("key"), self._texts())
            if messages is not None:
                return messages
        return super().priced_messages()

    def priced_arrow_messages(self) -> list[tuple[bytes, bytes]]:
        """The Arrow messages from the columns (arrow_encode.py), cut as `priced_messages` cuts the JSON."""
        if self._rows is not None and self._arrow is not None:
            from .arrow_encode import arrow_messages  # pyarrow only in a worker that writes Arrow

            messages = arrow_messages(self._rows, *self._arrow, exact_bytes=lambda: self._texts().str.len_bytes())
            if messages is not None:
                return messages
        return super().priced_arrow_messages()

    def _materialise(self) -> None:
        if self._rows is None:
            return
        keys = self._rows.get_column("key").to_list()
        encoded = self._encoded()
        self._rows = None  # from here on the dicts are the result (a caller may change them)
        priced: dict[bytes, list[bytes]] = defaultdict(list)
        for key, event in zip(keys, encoded):
            priced[key].append(event)
        self.__dict__["priced"] = priced
        self.__dict__["keys_in_order"] = keys


def _origins(records: list, record_of: list[int], encoded: list[bytes]) -> Iterable[tuple[int, int, bytes]]:
    partitions = [r.partition for r in records]
    offsets = [r.offset for r in records]
    return zip(map(partitions.__getitem__, record_of), map(offsets.__getitem__, record_of), encoded)


__all__ = ["ColumnsResult", "FramedResult", "frame_messages"]
