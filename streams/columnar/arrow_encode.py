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


def _empty_maps(n: int, value_type: pa.DataType) -> pa.MapArray:
    return pa.MapArray.from_arrays(pa.array(np.zeros(n + 1, np.int32)), pa.array([], S), pa.array([], value_type))


def _decoded_once(texts: pl.Series, value_type: pa.DataType) -> pa.Array:
    """JSON texts (a handful distinct per batch: reasons, refs, tags) decoded once each, as `value_type`."""
    distinct = texts.unique(maintain_order=True)
    values = [None if t is None else orjson.loads(t) for t in distinct.to_list()]
    if isinstance(value_type, pa.MapType):
        values = [None if v is None else list(v.items()) for v in values]
    index = texts.fill_null("\x00").replace_strict(distinct.fill_null("\x00"), pl.Series(range(len(distinct))),
                                                   return_dtype=pl.UInt32)
    return pa.array(values, value_type).take(index.to_arrow())


def _lines(frame: pl.DataFrame) -> pa.MapArray:
    """The cost lines (LINE_PARTS order, each where its text is not null), as `_breakdown` writes them."""
    n = frame.height
    columns = [(part, frame.get_column(part)) for part in LINE_PARTS if frame.get_column(part).null_count() < n]
    if not columns:
        return _empty_maps(n, S)
    present = np.stack([c.is_not_null().to_numpy() for _, c in columns], axis=1)
    rows, which = np.nonzero(present)  # row-major: each row's lines in LINE_PARTS order
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(present.sum(axis=1), out=offsets[1:])
    values = pa.concat_arrays([c.to_arrow().cast(S) for _, c in columns]).take(pa.array(which * n + rows))
    keys = pa.array([part for part, _ in columns], S).take(pa.array(which))
    return pa.MapArray.from_arrays(pa.array(offsets), keys, values)


def written_table(frame: pl.DataFrame, refs: list[dict[str, Any]], priced_at: str, tags: pa.Array | None = None
                  ) -> pa.Table:
    """SCHEMA rows of the written frame's rows (frame_price.ARROW_COLUMNS, those of them the batch has); `tags`:
    the rows' tags as a map array, for rows without a `_tags` text column (the dict-fed path's: mixed_arrow.py)."""
    n = frame.height

    def column(name: str) -> pa.Array:
        return frame.get_column(name).to_arrow().cast(S)

    attribution = frame.get_column("attribution")
    if tags is None:
        tags = (_decoded_once(frame.get_column("_tags").fill_null("{}"), pa.map_(S, S)) if "_tags" in frame.columns
                else _empty_maps(n, S))
    attribution = pa.StructArray.from_arrays(
        [*(attribution.struct.field(dim).to_arrow().cast(S) for dim in ATTRIBUTION_DIMENSIONS), tags],
        fields=list(SCHEMA.field("attribution").type))
    usage = pa.StructArray.from_arrays(
        [*(frame.get_column(part).to_arrow().cast(pa.int64()) for part in USAGE_FIELDS),
         pa.nulls(n, SCHEMA.field("usage").type.field("tool_requests").type)],
        fields=list(SCHEMA.field("usage").type))
    ref_type = SCHEMA.field("price").type
    price = pa.array(refs, ref_type).take(frame.get_column("vid").to_arrow())
    reason_json = frame.get_column("reason_json")
    if reason_json.null_count() < n:  # unpriced rows: the reason and its PriceRef (if any) from their JSON texts
        unpriced = reason_json.is_not_null().to_arrow()
        price = pc.if_else(unpriced, _decoded_once(frame.get_column("unpriced_ref"), ref_type), price)
        reason = _decoded_once(reason_json, S)
        status = pc.if_else(unpriced, "unpriced", "priced")
    else:
        reason = pa.nulls(n, S)
        status = pa.array(np.full(n, "priced", object), S) if n else pa.array([], S)
    correlation_type = SCHEMA.field("correlation").type
    if "has_correlation" in frame.columns:
        correlation = pa.StructArray.from_arrays(
            [frame.get_column(f"correlation_{name}").to_arrow().cast(S) for name in CORRELATION_FIELDS],
            fields=list(correlation_type), mask=pc.invert(frame.get_column("has_correlation").to_arrow()))
    else:
        correlation = pa.nulls(n, correlation_type)

    def constant(text: str) -> pa.Array:
        return pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array([text], S)).cast(S)

    arrays = {
        **{name: column(name) for name in ("event_id", "ts", "source", "provider", "model", "operation", "status")},
        "attribution": attribution, "usage": usage,
        "latency_ms": frame.get_column("latency_ms").to_arrow(), "ttft_ms": frame.get_column("ttft_ms").to_arrow(),
        "batch": frame.get_column("batch").to_arrow(),
        "service_tier": column("service_tier"), "usage_assumption": column("usage_assumption"),
        "reported_cost_usd": pa.nulls(n, S), "correlation": correlation,
        "tokens_source": constant("provider"), "cost_usd": column("cost"), "cost_breakdown": _lines(frame),
        "pricing_status": status, "unpriced_reason": reason, "price": price,
        "priced_at": constant(priced_at), "reported_cost_check": pa.nulls(n, S),
    }
    return pa.Table.from_arrays([arrays[f.name].cast(f.type) for f in SCHEMA], schema=SCHEMA)


def arrow_messages(frame: pl.DataFrame, refs: list[dict[str, Any]], priced_at: str,
                   exact_bytes: Callable[[], pl.Series] | None = None) -> list[tuple[bytes, bytes]] | None:
    """(key, Arrow IPC stream) messages of the written rows `frame` (its `key` and `_size_bound` columns too), cut
    as `framed.frame_messages` cuts their JSON; None when a JSON message would reach MAX_MESSAGE_BYTES (the caller
    then converts the JSON messages, which `_frame` cuts by size). That test reads the bound of each row's JSON
    bytes (text_size.py), no JSON text; only when the bound reaches the cut are the exact bytes asked for
    (`exact_bytes`: the rows' text lengths; without it, None)."""
    if frame.height == 0:
        return []
    if not {"key", "_size_bound", *ARROW_COLUMNS[0]} <= set(frame.columns):
        return None
    groups = (frame.select("key", _bytes="_size_bound").with_row_index("_row")
              .with_columns(_segment=pl.col("_row") // PRICED_SEGMENT_EVENTS)
              .with_columns(_first=pl.col("_row").min().over("_segment", "key"),
                            _message=pl.int_range(pl.len(), dtype=pl.UInt32).over("_segment", "key")
                            // MAX_EVENTS_PER_MESSAGE)
              .sort("_segment", "_first", "_message", "_row"))

    def cut(groups: pl.DataFrame) -> pl.DataFrame | None:
        messages = groups.group_by("_segment", "_first", "_message", maintain_order=True).agg(
            pl.col("key").first(), pl.len(), pl.col("_bytes").sum())
        # frame_messages' test: the message "[" + texts joined by "," + "]" plus one byte reaches MAX_MESSAGE_BYTES
        return None if (messages.get_column("_bytes") + messages.get_column("len") + 2).max() > MAX_MESSAGE_BYTES \
            else messages

    messages = cut(groups)
    if messages is None and exact_bytes is not None:  # the bound reaches the cut: the exact bytes decide
        groups = groups.with_columns(_bytes=exact_bytes().cast(pl.Int64).gather(groups.get_column("_row")))
        messages = cut(groups)
    if messages is None:
        return None
    table = written_table(frame, refs, priced_at).take(pa.array(groups.get_column("_row").to_numpy()))
    out, start = [], 0
    for key, length in zip(messages.get_column("key").to_list(), messages.get_column("len").to_list()):
        out.append((key, priced_arrow.write_stream(table.slice(start, length))))
        start += length
    return out


__all__ = ["arrow_messages", "written_table"]
