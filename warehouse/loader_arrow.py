"""Priced messages in the Arrow format (`tokenmeter.priced_arrow`) built into `priced_events` columns (issue 14,
loader11): no JSON to read and nothing to certify (the IPC stream carries its types; `read_table` proved the schema
and validated every buffer), so what is left of the loader's build is the checks a topic anyone can write to needs
and the casts into the warehouse's types.

A row is taken when the checks prove that the dict path (`arrow_rows.build_batch`, i.e. `event_to_row` on the dict
`priced_arrow.to_events` gives, which is the dict the same event's JSON decodes to) would store it and build the
same row: the very tests of `loader_frames._row_checks` and `build_table` (lengths, enums, token ranges and parts
within totals, money text, times), plus what only Arrow can say: a struct child set under a null struct, a null map
value, a duplicate map key (a JSON object keeps the last; the dict path decides). Every other row, and every
correlated row (the dedupe reads its ids from dict rows), takes the dict path with its dict, whose table rows and
dead letters are the JSON path's. tests/warehouse/test_loader_arrow.py holds the two equal on hostile tables.
"""

from __future__ import annotations

from datetime import datetime, timezone
from functools import cache
from typing import Sequence

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from tokenmeter.events import EARLIEST_EVENT_TS, MAX_EVENT_FUTURE, MAX_TOOL_REQUESTS, TOOL_REQUEST_KINDS
from tokenmeter.priced_arrow import PRICE_FIELDS
from warehouse.arrow_rows import _micros
from warehouse.fast_rows import USAGE_PARTS
from warehouse.loader_frames import _ASCII_SIGNED_MONEY, _priced_at_micros, _ts_micros, field_columns, scalar_checks
from warehouse.schema import ARROW_SCHEMA, ATTRIBUTION_COLUMNS, COST_TYPE


def _entries(array: pa.Array) -> tuple[np.ndarray, pa.StructArray]:
    """(entries per row, 0 for a null map; the entries of the valid rows, flat, as key/value structs)."""
    as_list = array.cast(pa.list_(pa.struct([("key", array.type.key_type), ("value", array.type.item_type)])))
    return (pc.list_value_length(as_list).fill_null(0).to_numpy(zero_copy_only=False),
            pc.list_flatten(as_list))


def _owners(lengths: np.ndarray) -> np.ndarray:
    return np.repeat(np.arange(len(lengths)), lengths)


def _maps_ok(lengths: np.ndarray, flat: pa.StructArray) -> np.ndarray:
    """Per row: no null value and no key twice (a JSON object can carry neither)."""
    ok = np.ones(len(lengths), bool)
    if not len(flat):
        return ok
    owner = _owners(lengths)
    values = flat.field("value")
    if values.null_count:
        ok[owner[pc.is_null(values).to_numpy(zero_copy_only=False)]] = False
    if (lengths > 1).any():
        twice = (pl.DataFrame({"row": owner, "key": pl.from_arrow(flat.field("key"))})
                 .select(pl.struct("row", "key").is_duplicated()).to_series().to_numpy())
        if twice.any():
            ok[owner[twice]] = False
    return ok


def _rows_failing(lengths: np.ndarray, good_entries: np.ndarray) -> np.ndarray:
    """Per row: every entry good."""
    ok = np.ones(len(lengths), bool)
    if not good_entries.all():
        ok[_owners(lengths)[~good_entries]] = False
    return ok


def _map_of(lengths: np.ndarray, keys: pa.Array, values: pa.Array) -> pa.MapArray:
    offsets = np.zeros(len(lengths) + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.MapArray.from_arrays(pa.array(offsets), keys, values)


@cache
def _row_checks() -> pl.Expr:
    """`loader_frames.scalar_checks` (the schema fixed the kinds), plus: no correlation (the dict path's rows with one
    take that path) and no struct child set under a null struct (the dict has no such object)."""
    ok = scalar_checks() & pl.col("correlation").is_null()
    for struct, fields in (("attribution", ATTRIBUTION_COLUMNS), ("price", PRICE_FIELDS),
                           ("usage", USAGE_PARTS)):
        ok = ok & (pl.col(struct).is_not_null()
                   | pl.all_horizontal([pl.col(struct).struct.field(f).is_null() for f in fields]))
    return ok.fill_null(False)


def build_arrow(tables: Sequence[pa.Table], now: datetime | None = None) -> tuple[pa.Table, np.ndarray]:
    """(the `priced_events` table of the rows the checks take, in order; per row of the tables concatenated, whether
    it was taken). The others are the dict path's."""
    table = pa.concat_tables(tables).combine_chunks()  # polars pays per chunk: ~3 µs per row at 500-row messages
    frame = pl.from_arrow(table)
    ok = frame.select(_row_checks()).to_series().to_numpy()
    attribution = table.column("attribution").chunk(0) if table.num_rows else None
    usage = table.column("usage").chunk(0) if table.num_rows else None
    if attribution is None:
        return ARROW_SCHEMA.empty_table(), ok
    tags = _entries(attribution.field("tags"))
    tools = _entries(usage.field("tool_requests"))
    lines = _entries(table.column("cost_breakdown").chunk(0))
    ok &= _maps_ok(*tags) & _maps_ok(*tools) & _maps_ok(*lines)
    # a struct's map under a null struct: the dict has no such map
    for struct, (lengths, _) in ((attribution, tags), (usage, tools)):
        if struct.null_count:
            ok &= ~(pc.is_null(struct).to_numpy(zero_copy_only=False) & (lengths > 0))
    ok &= _rows_failing(lines[0], pc.fill_null(pc.match_substring_regex(lines[1].field("value"), _ASCII_SIGNED_MONEY),
                                                False).to_numpy(zero_copy_only=False))
    tool_counts = tools[1].field("value")
    ok &= _rows_failing(tools[0], pc.is_in(tools[1].field("key"), pa.array(TOOL_REQUEST_KINDS)).to_numpy(
        zero_copy_only=False) & pc.fill_null(pc.and_(pc.greater_equal(tool_counts, 0), pc.less_equal(
            tool_counts, MAX_TOOL_REQUESTS)), False).to_numpy(zero_copy_only=False))
    ts_valid, ts_us = _ts_micros(frame.get_column("ts"))
    latest = _micros((now or datetime.now(timezone.utc)) + MAX_EVENT_FUTURE)
    ok &= ts_valid & (ts_us >= _micros(EARLIEST_EVENT_TS)) & (ts_us <= latest)
    at_present, at_valid, at_us = _priced_at_micros(frame.get_column("priced_at"))
    ok &= ~at_present | at_valid
    if not ok.any():
        return ARROW_SCHEMA.empty_table(), ok
    taken = ok.all()
    if not taken:
        frame = frame.filter(pl.Series(ok))
        ts_us, at_us, at_present = ts_us[ok], at_us[ok], at_present[ok]
    arrays = field_columns(frame)
    n = frame.height

    def kept_map(entries: tuple[np.ndarray, pa.StructArray], value_type: pa.DataType, keep_entry: np.ndarray | None
                 = None) -> pa.MapArray:
        lengths, flat = entries
        entry_rows = np.repeat(ok, lengths)
        if keep_entry is not None:
            entry_rows &= keep_entry
        kept_lengths = np.bincount(_owners(lengths)[entry_rows], minlength=len(lengths))[ok] if len(flat) else \
            np.zeros(n, np.int64)
        if not len(flat) or entry_rows.all():
            keys, values = flat.field("key"), flat.field("value")
        else:
            mask = pa.array(entry_rows)
            keys, values = flat.field("key").filter(mask), flat.field("value").filter(mask)
        return _map_of(kept_lengths, keys, pc.cast(values, value_type))

    cost_text = table.column("cost_usd").chunk(0)
    counts = tool_counts.to_numpy(zero_copy_only=False) if len(tool_counts) else np.zeros(0, np.int64)
    arrays.update({
        "ts": pa.array(ts_us // 1000, pa.int64()).cast(ARROW_SCHEMA.field("ts").type),
        "tags": kept_map(tags, pa.string()),
        "cost_usd": pc.cast(cost_text if taken else cost_text.filter(pa.array(ok)), COST_TYPE),
        "cost_breakdown": kept_map(lines, COST_TYPE),
        "priced_at": pa.array(at_us // 1000, pa.int64(), mask=~at_present).cast(ARROW_SCHEMA.field("priced_at").type),
        "tool_requests": kept_map(tools, pa.uint64(), counts != 0),  # zero counts are left out, as fast_row does
        "correlation": _map_of(np.zeros(n, np.int64), pa.array([], pa.string()), pa.array([], pa.string())),
        "call_keys": pa.ListArray.from_arrays(pa.array(np.zeros(n + 1, np.int32)), pa.array([], pa.string())),
    })
    built = pa.Table.from_arrays([arrays[name].cast(ARROW_SCHEMA.field(name).type) for name in ARROW_SCHEMA.names],
                                 schema=ARROW_SCHEMA)
    return built, ok


__all__ = ["build_arrow"]
