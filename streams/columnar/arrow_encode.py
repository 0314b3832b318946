"""Priced micro-batches as Arrow IPC straight from the frame path's columns (`TOKENMETER_PRICED_FORMAT=arrow`;
issue 14, loader11): the rows `frame_price.write_frame` wrote as JSON, as `tokenmeter.priced_arrow.SCHEMA` columns,
cut into messages exactly where `framed.frame_messages` cuts the JSON (per segment and key, 500 events).

Every value is the one the row's JSON text carries: the same strings (ts as pydantic writes it, money as the
`_money_text` decimal text), tags decoded once per distinct `"tags"` text, the unpriced reason and price reference
decoded once per distinct JSON text, the catalog's PriceRef per version. A null is a field the JSON leaves out.
`to_events` of the table gives the dicts orjson gives for the JSON (tests/streams/test_priced_arrow_worker.py).
Imported only by a worker configured for Arrow (pyarrow stays out of a JSON worker).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import orjson
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from streams.batch import PRICED_SEGMENT_EVENTS
from tokenmeter import priced_arrow
from tokenmeter.events import ATTRIBUTION_DIMENSIONS
from tokenmeter.microbatch import MAX_EVENTS_PER_MESSAGE, MAX_MESSAGE_BYTES

from .encode import CORRELATION_FIELDS, USAGE_FIELDS
from .frame_price import ARROW_COLUMNS
from .meter import TOKEN_PARTS

S = pa.string()
SCHEMA = priced_arrow.SCHEMA
LINE_PARTS = (*TOKEN_PARTS, "request")


# polars' strings exported as they are held (Arrow string views, no copy), then one cast to SCHEMA's strings; the
# default export (large strings) copied every value once in polars and the cast narrowed the offsets again
# (inproc29: ~0.004 against ~0.0054 us per value, 4 string columns of 28,000 gathered rows, same arrays)
_VIEWS = pl.CompatLevel.newest()


def _strings(series: pl.Series) -> pa.Array:
    """A polars String (or all-null) column as an Arrow `string` array."""
    return series.to_arrow(compat_level=_VIEWS).cast(S)


def _empty_maps(n: int, value_type: pa.DataType, null: bool = False) -> pa.MapArray:
    """`n` empty maps (`null`: `n` null maps) with no entries behind them. Not `pa.nulls(n, map)`: that array's
    entries child is `n` long, and `serialize` wrote it whole into every message sliced from the table (inproc32:
    ~253 of ~764 bytes a row in the bench's messages; tests/streams/test_priced_arrow_worker.py)."""
    return pa.MapArray.from_arrays(pa.array(np.zeros(n + 1, np.int32)), pa.array([], S), pa.array([], value_type),
                                   mask=pa.array(np.ones(n, bool)) if null else None)


def _decoded_once(texts: pl.Series, value_type: pa.DataType) -> pa.Array:
    """JSON texts (a handful distinct per batch: reasons, refs, tags) decoded once each, as `value_type`. The
    distinct texts (in order of appearance, null kept as one) from Arrow's dictionary_encode: ~0.1 ms per call
    against ~0.4 for polars' unique and replace_strict, whose fixed cost a small part's written_table paid 3x
    (arrow18: the dict-fed rows of a `--mixed` batch, ~0.2 us per event of the batch)."""
    encoded = pc.dictionary_encode(texts.to_arrow(), null_encoding="encode")
    values = [None if t is None else orjson.loads(t) for t in encoded.dictionary.to_pylist()]
    if isinstance(value_type, pa.MapType):
        values = [None if v is None else list(v.items()) for v in values]
    return pa.array(values, value_type).take(encoded.indices)


_REFS: dict[int, tuple[list, int, pa.Array]] = {}  # id of a price table's refs -> (the refs, their count, as Arrow)


def _refs_array(refs: list[dict[str, Any]]) -> pa.Array:
    """The price table's PriceRefs (one per catalog version, ~1,200) as Arrow, made once per table: ~0.3 ms a call
    that every `written_table` paid (arrow19). A table's refs are made when it is compiled, never changed after."""
    found = _REFS.get(id(refs))
    if found is None or found[0] is not refs or found[1] != len(refs):
        if len(_REFS) > 8:  # a reloaded catalog is a new table
            _REFS.clear()
        found = _REFS[id(refs)] = (refs, len(refs), pa.array(refs, SCHEMA.field("price").type))
    return found[2]


def _constant(text: str, n: int) -> pa.Array:
    """`text` in each of `n` rows, made from one value (a numpy array of n Python strings cost ~0.05 us per row)."""
    return pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array([text], S)).cast(S)


def _lines(frame: pl.DataFrame) -> pa.MapArray:
    """The cost lines (LINE_PARTS order, each where its text is not null), as `_breakdown` writes them."""
    n = frame.height
    columns = [(part, _strings(frame.get_column(part))) for part in LINE_PARTS
               if frame.get_column(part).null_count() < n]
    if not columns:
        return _empty_maps(n, S)
    count = len(columns)
    if all(c.null_count == 0 for _, c in columns):  # every row has each of these lines (the common case): row i's
        # are entries i*count .. i*count+count-1; no search for which a row has (~0.035 us per row less, inproc28)
        offsets = np.arange(0, (n + 1) * count, count, dtype=np.int32)
        row_major = np.arange(count * n).reshape(count, n).T.ravel()  # line j of row i: entry j*n + i of the concat
        values = pa.concat_arrays([c for _, c in columns]).take(pa.array(row_major))
        keys = pa.DictionaryArray.from_arrays(pa.array(np.tile(np.arange(count, dtype=np.int32), n)),
                                              pa.array([part for part, _ in columns], S)).cast(S)
        return pa.MapArray.from_arrays(pa.array(offsets), keys, values)
    # which lines a row has, read from the Arrow arrays: a polars Series' is_not_null runs a query (~60 us each,
    # a fixed cost of every call that a small part's call paid for a few hundred rows; arrow19)
    present = np.stack([c.is_valid().to_numpy(zero_copy_only=False) for _, c in columns], axis=1)
    rows, which = np.nonzero(present)  # row-major: each row's lines in LINE_PARTS order
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(present.sum(axis=1), out=offsets[1:])
    values = pa.concat_arrays([c for _, c in columns]).take(pa.array(which * n + rows))
    keys = pa.array([part for part, _ in columns], S).take(pa.array(which))
    return pa.MapArray.from_arrays(pa.array(offsets), keys, values)


def written_table(frame: pl.DataFrame, refs: list[dict[str, Any]], priced_at: str) -> pa.Table:
    """SCHEMA rows of the written frame's rows (frame_price.ARROW_COLUMNS, those of them the batch has); the
    attribution from the `attribution` struct and the `_tags` texts (the frame path's rows), or from each row's
    `attribution_json` text (the dict-fed path's, pipeline._price_columns), decoded once per distinct text."""
    n = frame.height

    def column(name: str) -> pa.Array:
        return _strings(frame.get_column(name))

    if "attribution_json" in frame.columns:
        attribution = _decoded_once(frame.get_column("attribution_json"), SCHEMA.field("attribution").type)
    else:
        # the dimensions from the Arrow struct (flatten: a null struct's fields are null too), not polars'
        # `struct.field`, which runs a query per dimension (~40 us each, a fixed cost of every call; arrow19)
        struct = frame.get_column("attribution").to_arrow(compat_level=_VIEWS)
        dims = dict(zip((field.name for field in struct.type), struct.flatten()))
        tags = (_decoded_once(frame.get_column("_tags").fill_null("{}"), pa.map_(S, S)) if "_tags" in frame.columns
                else _empty_maps(n, S))
        attribution = pa.StructArray.from_arrays([*(dims[dim].cast(S) for dim in ATTRIBUTION_DIMENSIONS), tags],
                                                 fields=list(SCHEMA.field("attribution").type))
    usage = pa.StructArray.from_arrays(
        [*(frame.get_column(part).to_arrow().cast(pa.int64()) for part in USAGE_FIELDS),
         _empty_maps(n, SCHEMA.field("usage").type.field("tool_requests").type.item_type, null=True)],
        fields=list(SCHEMA.field("usage").type))
    ref_type = SCHEMA.field("price").type
    price = _refs_array(refs).take(frame.get_column("vid").to_arrow())
    reason_json = frame.get_column("reason_json")
    if reason_json.null_count() < n:  # unpriced rows: the reason and its PriceRef (if any) from their JSON texts
        unpriced = reason_json.is_not_null().to_arrow()
        price = pc.if_else(unpriced, _decoded_once(frame.get_column("unpriced_ref"), ref_type), price)
        reason = _decoded_once(reason_json, S)
        status = pc.if_else(unpriced, "unpriced", "priced")
    else:
        reason = pa.nulls(n, S)
        status = _constant("priced", n)
    correlation_type = SCHEMA.field("correlation").type
    if "has_correlation" in frame.columns:
        correlation = pa.StructArray.from_arrays(
            [_strings(frame.get_column(f"correlation_{name}")) for name in CORRELATION_FIELDS],
            fields=list(correlation_type), mask=pc.invert(frame.get_column("has_correlation").to_arrow()))
    else:
        correlation = pa.nulls(n, correlation_type)

    arrays = {
        **{name: column(name) for name in ("event_id", "ts", "source", "provider", "model", "operation", "status")},
        "attribution": attribution, "usage": usage,
        "latency_ms": frame.get_column("latency_ms").to_arrow(), "ttft_ms": frame.get_column("ttft_ms").to_arrow(),
        "batch": frame.get_column("batch").to_arrow(),
        "service_tier": column("service_tier"), "usage_assumption": column("usage_assumption"),
        "reported_cost_usd": pa.nulls(n, S), "correlation": correlation,
        "tokens_source": _constant("provider", n), "cost_usd": column("cost"), "cost_breakdown": _lines(frame),
        "pricing_status": status, "unpriced_reason": reason, "price": price,
        "priced_at": _constant(priced_at, n), "reported_cost_check": pa.nulls(n, S),
    }
    return pa.Table.from_arrays([arrays[f.name].cast(f.type) for f in SCHEMA], schema=SCHEMA)


def message_cuts(keys: pl.Series, sizes: pl.Series, exact_bytes: Callable[[], pl.Series] | None = None
                 ) -> tuple[np.ndarray, list[tuple[bytes, int]]] | None:
    """(the rows in message order, (key, events) of each message) for priced events with partition keys `keys`
    (Binary) in input order, cut as `BatchResult.priced_messages` and `framed.frame_messages` cut their JSON: per
    segment of PRICED_SEGMENT_EVENTS rows, the keys in the order they first appear in it, each key's rows in order,
    MAX_EVENTS_PER_MESSAGE per message. `sizes`: each row's JSON bytes or an upper bound of them (text_size.py);
    None when a JSON message would reach MAX_MESSAGE_BYTES (`_frame` would cut it by size), by the bound and then
    by `exact_bytes` (the rows' exact JSON bytes, asked for only when the bound reaches the cut; without it, None).
    One stable sort on each row's (segment, key) group, named by the group's first row, which orders the segments
    too (arrow16; a polars group_by and a four-column sort before)."""
    n = len(keys)
    if n == 0:
        return np.zeros(0, np.int64), []
    first = (pl.DataFrame([keys.alias("key")]).with_row_index("_row")
             .select(pl.col("_row").min().over(pl.col("_row") // PRICED_SEGMENT_EVENTS, "key"))
             .to_series().to_numpy())
    order = np.argsort(first, kind="stable")
    groups = first[order]
    group_starts = np.flatnonzero(np.diff(groups, prepend=-1))
    group_ends = np.append(group_starts[1:], n)
    starts = np.concatenate([np.arange(a, b, MAX_EVENTS_PER_MESSAGE) for a, b in zip(group_starts, group_ends)])
    ends = np.append(starts[1:], n)
    counts = ends - starts

    def reaches_cut(sizes: pl.Series) -> bool:
        # frame_messages' test: the message "[" + texts joined by "," + "]" plus one byte reaches MAX_MESSAGE_BYTES
        total = np.concatenate([[0], np.cumsum(sizes.cast(pl.Int64).to_numpy()[order])])
        return bool(((total[ends] - total[starts]) + counts + 2).max() > MAX_MESSAGE_BYTES)

    if reaches_cut(sizes) and (exact_bytes is None or reaches_cut(exact_bytes())):
        return None
    return order, list(zip(keys.gather(order[starts]).to_list(), counts.tolist()))


def write_messages(table: pa.Table, cuts: list[tuple[bytes, int]]) -> list[tuple[bytes, bytes]]:
    """(key, Arrow IPC stream) of each message: `table`'s rows in message order, `cuts` (key, events) in turn."""
    out, start = [], 0
    for key, length in cuts:
        out.append((key, priced_arrow.write_stream(table.slice(start, length))))
        start += length
    return out


def arrow_messages(frame: pl.DataFrame, refs: list[dict[str, Any]], priced_at: str,
                   exact_bytes: Callable[[], pl.Series] | None = None) -> list[tuple[bytes, bytes]] | None:
    """(key, Arrow IPC stream) messages of the written rows `frame` (its `key` and `_size_bound` columns too), cut
    as `framed.frame_messages` cuts their JSON (`message_cuts`); None when a JSON message would reach
    MAX_MESSAGE_BYTES (the caller then converts the JSON messages, which `_frame` cuts by size). That test reads the
    bound of each row's JSON bytes (text_size.py), no JSON text; only when the bound reaches the cut are the exact
    bytes asked for (`exact_bytes`: the rows' text lengths; without it, None)."""
    if frame.height == 0:
        return []
    if not {"key", "_size_bound", *ARROW_COLUMNS[0]} <= set(frame.columns):
        return None
    cuts = message_cuts(frame.get_column("key"), frame.get_column("_size_bound"), exact_bytes)
    if cuts is None:
        return None
    order, messages = cuts
    # the rows gathered in message order before they become Arrow (a polars gather of flat columns: ~0.1 us per
    # row less than taking the Arrow table's nested ones)
    return write_messages(written_table(frame[order], refs, priced_at), messages)


__all__ = ["arrow_messages", "message_cuts", "write_messages", "written_table"]
