"""The result of an Arrow worker's batch the frame path wrote only in part (issue 14, arrow14; arrow16).

A batch with rows the dict path prices (a provider-reported cost, tool requests, a message the frame path does not
take, invalid records beside valid ones) was assembled as a plain BatchResult of JSON texts, and its Arrow messages
gathered event by event from them: a worker writing Arrow wrote the JSON text of every row (the frame path's and
the dict-fed path's too) and then paid for the Arrow columns on top (1.16-1.17x a JSON worker's CPU on traffic
with 1 % web searches or a reported-cost message in 12).

Now no JSON text is written for such a batch unless something reads it. Its priced events are held in parts
(`ArrowParts`): the frame path's written rows and the dict-fed path's rows written from columns keep their columns
(an upper bound of each row's JSON bytes decides the size cuts, text_size.py), and the rows priced as dicts (the
per-row path's, tool fees, reported costs) are converted once (`priced_arrow.from_events`). Each part gives index
rows (item, key, bytes, unpriced, assumed, its row in the parts' table); the batch's events are those rows sorted
by item, and its messages cut as the JSON messages are (`arrow_encode.message_cuts`): each part's rows gathered in
message order in polars before they become Arrow; a message of one part's rows is a slice of that part's table,
and one Arrow take interleaves the rows of the messages mixing parts (arrow18), not gathered per event in Python.
Dead letters, counts and order are `_assemble`'s.

`priced`, `keys_in_order` and `origins` are made when first read (tests, re-price, budgets when a budget exists):
the texts from each part (the frame path's `Written.texts`, `encode_priced` of the dict-fed rows, the dicts' own
bytes), the origins' events from the dicts already made and from the texts, which orjson decodes faster than the
columns are turned into dicts (measured: arrow16 in docs/rounds/warehouse.md).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import numpy as np
import orjson
import polars as pl

from streams.batch import MAX_PRICED_EVENT_BYTES, dead_letter

from .encode import LazyOrigins
from .fallback import process_row
from .framed import ColumnsResult

IN_PARTS = ("in parts",)  # the outcome of a dict-fed row written from columns: its place is in an ArrowParts part
_INDEX_SCHEMA = {"_item": pl.Int64, "key": pl.Binary, "_bytes": pl.Int64, "_too_large": pl.Boolean,
                 "_unpriced": pl.Boolean, "_assumed": pl.Boolean}


class ArrowParts:
    """The priced events of an Arrow worker's batch in parts, in the order they are added: per part its index rows
    (`_INDEX_SCHEMA`, `_src` its rows' places in the concatenated table), and functions giving its Arrow table
    (pyarrow, SCHEMA), its JSON texts (bytes per row) and its events (dicts per row), called only when needed."""

    def __init__(self) -> None:
        self.index: list[pl.DataFrame] = []
        self.rows: list[Any] = []
        self.tables: list[Callable[[Any], Any]] = []
        self.texts: list[Callable[[], list[bytes]]] = []
        self.events: list[Callable[[], list[dict[str, Any]]]] = []
        self.height = 0
        self.converted = 0  # rows priced as dicts (the others were written from columns)

    def add(self, index: pl.DataFrame, rows: Any, table: Callable[[Any], Any], texts: Callable[[], list[bytes]],
            events: Callable[[], list[dict[str, Any]]] | None = None) -> None:
        """A part: `index` (_INDEX_SCHEMA) and `rows` (a polars frame or a list) of its events in the same order;
        `table(rows)` makes the Arrow table of rows of it, `texts()` the JSON text of each, `events()` each as a
        dict (default: decoded from the texts)."""
        if index.height == 0:
            return
        self.index.append(index.select(*_INDEX_SCHEMA).with_columns(
            _src=pl.int_range(self.height, self.height + index.height, dtype=pl.Int64)))
        self.rows.append(rows)
        self.tables.append(table)
        self.texts.append(texts)
        self.events.append(events or (lambda: [orjson.loads(text) for text in texts()]))
        self.height += index.height

    def add_written(self, written: Any) -> None:
        """The frame path's written rows (frame_price.Written), their text not written."""
        from .arrow_encode import written_table  # pyarrow only in a worker that writes Arrow

        rows = written.rows
        if rows.height == 0:  # nothing written (Written.nothing: the frame path failed, its rows take the dict path)
            return
        self.add(rows.select("_item", "key", "_unpriced", "_assumed", _bytes="_size_bound",
                             _too_large=pl.lit(False)),  # the frame path hands too large rows to the dict path
                 rows, lambda taken: written_table(taken, written.refs, written.priced_at),
                 lambda: written.texts().cast(pl.Binary).to_list())

    def add_dicts(self, items: list[int], keys: list[bytes], encoded: list[bytes], unpriced: list[bool],
                  assumed: list[bool], events: list[dict[str, Any]]) -> None:
        """Rows priced as dicts (`events`, encoded as `encoded`: their size is exact)."""
        from tokenmeter import priced_arrow  # pyarrow only in a worker that writes Arrow

        index = pl.DataFrame({"_item": items, "key": keys, "_bytes": list(map(len, encoded)),
                              "_too_large": [False] * len(items), "_unpriced": unpriced, "_assumed": assumed},
                             schema=_INDEX_SCHEMA)
        self.add(index, events, priced_arrow.from_events, lambda: encoded, lambda: events)
        self.converted += len(items)

    def messages(self, src: np.ndarray, cuts: list[tuple[bytes, int]]) -> list[tuple[bytes, bytes]]:
        """(key, Arrow IPC stream) of each message: the rows at `src` (places in the parts, in message order) cut
        by `cuts` (key, events). Each part's rows are gathered in polars before they become Arrow (cheaper than
        taking Arrow's nested columns): first its rows in messages mixing parts, then the others, each in message
        order. A message whose rows all come from one part is then a run of that part's table, sliced (arrow18:
        64-88 % of the rows of `--tools 0.01` and `--mixed` traffic); the rows of the messages mixing parts, each
        part's first rows, are copied into one table and interleaved by one Arrow take of it (arrow19: a take
        across the parts' tables, one chunk each, cost ~2x the take of one contiguous table plus that copy)."""
        import pyarrow as pa

        from tokenmeter.priced_arrow import write_stream

        starts = np.array([index.get_column("_src")[0] for index in self.index], dtype=np.int64)
        part_of = np.searchsorted(starts, src, side="right") - 1
        counts = np.array([count for _, count in cuts], dtype=np.int64)
        begins = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        one_part = (np.maximum.reduceat(part_of, begins) == np.minimum.reduceat(part_of, begins)) if len(cuts) else []
        mixing = np.zeros(len(src), dtype=bool)  # the rows of messages mixing parts
        for begin, count, one in zip(begins.tolist(), counts.tolist(), one_part):
            if not one:
                mixing[begin:begin + count] = True
        tables, heads = [], []  # each part's table, and its first rows: those of messages mixing parts
        within = np.empty(len(src), dtype=np.int64)  # each row's place in the parts' tables concatenated
        mixed_at = np.empty(len(src), dtype=np.int64)  # a mixing message's row: its place in the heads concatenated
        placed = mixed = 0
        for p, (rows, make) in enumerate(zip(self.rows, self.tables)):
            mine = part_of == p
            head, rest = np.flatnonzero(mine & mixing), np.flatnonzero(mine & ~mixing)
            order = np.concatenate([head, rest])
            if len(order):
                local = src[order] - starts[p]
                within[order] = placed + np.arange(len(order))
                mixed_at[head] = mixed + np.arange(len(head))
                table = make(rows[local] if isinstance(rows, pl.DataFrame) else list(map(rows.__getitem__, local)))
                tables.append(table)
                heads.append(table.slice(0, len(head)))
                placed += len(order)
                mixed += len(head)
        table = tables[0] if len(tables) == 1 else pa.concat_tables(tables)
        taken = (pa.concat_tables(heads).combine_chunks().take(pa.array(mixed_at[mixing])) if mixing.any()
                 else None)
        out, at = [], 0
        for (key, count), begin, one in zip(cuts, begins.tolist(), one_part):
            if one:  # a run of one part's table (in message order): sliced, not copied
                piece = table.slice(int(within[begin]), count)
            else:
                piece = taken.slice(at, count)
                at += count
            out.append((key, write_stream(piece)))
        return out


class ArrowResult(ColumnsResult):
    """The BatchResult of an Arrow worker's mixed batch: `_index` (every priced event in input order, with its row
    in `_parts`' concatenated table) until `priced` or `keys_in_order` is read."""

    def __init__(self, decoded: Any, parts: ArrowParts, index: pl.DataFrame, letters: list[dict[str, Any]]) -> None:
        self._index: pl.DataFrame | None = index
        self._parts = parts
        super().__init__()
        self.deadletters = letters
        self.events_in = len(decoded.items)
        self.priced_count = index.height
        self.unpriced_count = int(index.get_column("_unpriced").sum())
        self.assumed_count = int(index.get_column("_assumed").sum())
        records, record_of = decoded.records, decoded.record_of
        items, src = index.get_column("_item"), index.get_column("_src")
        # closures over the parts and columns, not over self (a cycle would keep the batch alive until the GC ran)
        self.origins = LazyOrigins.deferred(lambda: _origins(records, record_of, items, _by_src(parts.events, src)))

    def priced_arrow_messages(self) -> list[tuple[bytes, bytes]]:
        """The parts' rows in message order (`ArrowParts.messages`), cut as `priced_messages` cuts the JSON."""
        if self._index is not None and self._index.height == 0:  # only dead letters, or no record
            return []
        if self._index is not None:
            from .arrow_encode import message_cuts

            index, parts = self._index, self._parts
            src = index.get_column("_src")
            cuts = message_cuts(index.get_column("key"), index.get_column("_bytes"),
                                lambda: pl.Series(list(map(len, _by_src(parts.texts, src))), dtype=pl.Int64))
            if cuts is not None:
                return parts.messages(src.to_numpy()[cuts[0]], cuts[1])
        return super().priced_arrow_messages()

    def _materialise(self) -> None:
        if self._index is None:
            return
        keys = self._index.get_column("key").to_list()
        encoded = _by_src(self._parts.texts, self._index.get_column("_src"))
        self._index = None  # from here on the dicts are the result (a caller may change them)
        priced: dict[bytes, list[bytes]] = {}
        for key, event in zip(keys, encoded):
            found = priced.get(key)
            if found is None:
                priced[key] = [event]
            else:
                found.append(event)
        self.__dict__["priced"] = priced
        self.__dict__["keys_in_order"] = keys


def _by_src(made: list[Callable[[], list]], src: pl.Series) -> list:
    """Each part's values (texts or events) concatenated, taken at `src` (the events' rows in input order)."""
    values = [value for make in made for value in make()]
    return list(map(values.__getitem__, src.to_list()))


def _origins(records: list, record_of: list[int], items: pl.Series, events: list) -> Iterable[tuple[int, int, Any]]:
    partitions = [r.partition for r in records]
    offsets = [r.offset for r in records]
    of = list(map(record_of.__getitem__, items.to_list()))
    return zip(map(partitions.__getitem__, of), map(offsets.__getitem__, of), events)


def assemble(decoded: Any, outcomes: list, todo: list[int] | None, parts: ArrowParts, book: Any, now: Any
             ) -> ArrowResult:
    """`pipeline._assemble` for an Arrow worker: the outcomes of the items in `todo` (every item when None) that
    were not written from columns (IN_PARTS, or not priced by the dict path at all: the frame path's rows) are added
    as dicts; letters and the too large rows keep `_assemble`'s order and words."""
    items, records, record_of = decoded.items, decoded.records, decoded.record_of
    dumps = orjson.dumps
    letters: list[tuple[int, dict[str, Any]]] = []
    rows: tuple[list, ...] = ([], [], [], [], [], [])  # items, keys, encoded, unpriced, assumed, events
    for i in range(len(items)) if todo is None else todo:
        outcome = outcomes[i]
        if outcome is None or outcome is IN_PARTS:
            continue
        kind = outcome[0]
        if kind == "priced":  # a columnar row built as a dict: encoded as `_price_item` does
            try:
                encoded = dumps(outcome[2])
            except Exception:  # noqa: BLE001 - cannot happen for a validated row; today's path words whatever it is
                outcome = process_row(items[i], records[record_of[i]], book, now)
                kind = outcome[0]
            else:
                _, key, event, unpriced, assumed = outcome
                if len(encoded) > MAX_PRICED_EVENT_BYTES:
                    letters.append((i, _too_large(len(encoded), items[i], records[record_of[i]])))
                    continue
        if kind == "letter":
            letters.append((i, outcome[1]))
            continue
        if kind == "encoded":  # from the per-row path, which words its own too large letter
            _, key, event, encoded, unpriced, assumed = outcome
        for column, value in zip(rows, (i, key, encoded, unpriced, assumed, event)):
            column.append(value)
    if rows[0]:
        parts.add_dicts(*rows)
    index = (pl.concat(parts.index) if parts.index
             else pl.DataFrame(schema={**_INDEX_SCHEMA, "_src": pl.Int64})).sort("_item")
    too_large = index.get_column("_too_large")
    if too_large.any():  # a dict-fed row whose exact text is too large to send (its `_bytes` are exact then)
        for i, size in index.filter(too_large).select("_item", "_bytes").iter_rows():
            letters.append((i, _too_large(size, items[i], records[record_of[i]])))
        index = index.filter(~too_large)
    return ArrowResult(decoded, parts, index, _in_order(decoded.letters, letters))


def _too_large(size: int, item: Any, record: Any) -> dict[str, Any]:
    return dead_letter(f"event too large: {size} bytes priced, at most {MAX_PRICED_EVENT_BYTES}", item, record)


def _in_order(record_letters: list[tuple[int, dict]], row_letters: list[tuple[int, dict]]) -> list[dict]:
    """`_assemble`'s order: a record's letter (with the number of items before it) before the letters of those
    items on, each row's letter at its item."""
    merged = [(position, 0, letter) for position, letter in record_letters]
    merged += [(item, 1, letter) for item, letter in row_letters]
    merged.sort(key=lambda entry: entry[:2])
    return [letter for _, _, letter in merged]


__all__ = ["IN_PARTS", "ArrowParts", "ArrowResult", "assemble"]
