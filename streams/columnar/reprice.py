"""Price stored warehouse rows again as columns (`tokenmeter reprice`): the worker's as-of join (`price.py`) on the
stored usage columns, no event object, no JSON. Gives, per row, exactly the pricing columns the per-event path
(`warehouse.reprice.reprice_row` -> `price_event` -> `warehouse.schema.event_to_row`) stores, or leaves the row to
that path (column `columnar` false).

Rows left to the per-event path: usage the contract refuses (parts above their totals, counts over MAX_TOKENS: the
per-event path raises the error that names the event), ts outside the accepted range, tool requests (fee lines),
a provider-reported cost (`reported` breakdown lines), a negotiated rule that may apply, a line too large for
int64 arithmetic or a cost over the warehouse's Decimal(18,12), and unpriced rows whose reason names the row (an
entry without a price in force, a tier without prices). Unknown models are priced here: their reason is the
resolver's, one per (provider, model).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from streams.pricing import PriceBook
from tokenmeter.events import EARLIEST_EVENT_TS, MAX_EVENT_FUTURE, MAX_TOKENS
from tokenmeter.stored_money import COST_PRECISION, COST_SCALE, MAX_STORED_COST_PICO

from .meter import TOKEN_PARTS
from .price import EPOCH, PRICED, UNPRICED, price_frame, price_table, unpriced_reason

LINE_PARTS = (*TOKEN_PARTS, "request")
USAGE_COLUMNS = ("input_tokens", "cached_input_tokens", "cache_write_tokens", "cache_write_1h_tokens",
                 "output_tokens", "reasoning_tokens")
# What this module reads of a stored row (warehouse.schema names and Arrow types).
READS = ("event_id", "ts", "source", "provider", "model", "status", "org", *USAGE_COLUMNS, "batch", "service_tier",
         "cost_breakdown", "tool_requests")
MONEY = pa.decimal128(COST_PRECISION, COST_SCALE)  # the warehouse's cost type: its unscaled integer is pico-dollars
MONEY_LIMIT = MAX_STORED_COST_PICO  # pico-dollars of 1,000,000 USD, the first amount Decimal(18,12) cannot hold
REPORTED_LINES = ("reported", "reported_difference")  # streams.pricing.reported: the cost is the provider's
# The pricing columns returned, in this order, with the warehouse's types.
PRICED_SCHEMA = pa.schema([
    ("columnar", pa.bool_()),
    ("cost_usd", MONEY),
    ("cost_breakdown", pa.map_(pa.string(), MONEY)),
    ("pricing_status", pa.string()),
    ("unpriced_reason", pa.string()),
    ("price_entry", pa.string()),
    ("price_effective_from", pa.string()),
    ("catalog_version", pa.string()),
    ("price_override", pa.string()),
    ("priced_at", pa.timestamp("ms", tz="UTC")),
])


def _epoch_ms(moment: datetime) -> int:
    aware = moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)  # the contract reads naive as UTC
    return (aware - EPOCH) // timedelta(milliseconds=1)


def _money(pico: np.ndarray) -> pa.Array:
    """Decimal(18,12) values whose unscaled integers are `pico` (int64): the 128-bit little-endian words built
    directly, so no amount passes through a float or a Python Decimal."""
    words = np.empty((len(pico), 2), dtype=np.int64)
    words[:, 0] = pico
    words[:, 1] = pico >> 63  # sign extension of the high word
    return pa.Array.from_buffers(MONEY, len(pico), [None, pa.py_buffer(words.tobytes())])


def _breakdown(lines: np.ndarray, present: np.ndarray) -> pa.MapArray:
    """Map column of each row's present lines in LINE_PARTS order (the order `cost_lines` writes them)."""
    counts = present.sum(axis=1)
    offsets = np.zeros(len(lines) + 1, dtype=np.int32)
    np.cumsum(counts, out=offsets[1:])
    keys = np.broadcast_to(np.arange(len(LINE_PARTS), dtype=np.int32), lines.shape)[present]
    names = pa.DictionaryArray.from_arrays(pa.array(keys, pa.int32()), pa.array(LINE_PARTS)).cast(pa.string())
    return pa.MapArray.from_arrays(pa.array(offsets, pa.int32()), names, _money(lines[present]))


def _has_key(column: pa.ChunkedArray, keys: tuple[str, ...]) -> np.ndarray:
    """Per row: its map holds one of `keys`."""
    maps = column.combine_chunks()
    offsets = maps.offsets.to_numpy()  # into the whole child array (a slice's may not start at 0)
    found = np.zeros(len(maps), dtype=bool)
    hits = np.flatnonzero(pc.fill_null(pc.is_in(maps.keys, value_set=pa.array(keys)), False)
                          .to_numpy(zero_copy_only=False))
    hits = hits[(hits >= offsets[0]) & (hits < offsets[-1])]
    if len(hits):
        found[np.searchsorted(offsets, hits, side="right") - 1] = True
    return found


def _usage_ok() -> pl.Expr:
    """Usage the contract accepts (tokenmeter.events.Usage): counts within MAX_TOKENS, parts within totals."""
    c = pl.col
    within = pl.all_horizontal([c(name) <= MAX_TOKENS for name in USAGE_COLUMNS])
    return (within & (c("cached_input_tokens") + c("cache_write_tokens") <= c("input_tokens"))
            & (c("cache_write_1h_tokens") <= c("cache_write_tokens"))
            & (c("reasoning_tokens") <= c("output_tokens")))


def price_stored(table: pa.Table, book: PriceBook, priced_at: datetime, now: datetime | None = None) -> pa.Table:
    """PRICED_SCHEMA columns for each row of `table` (stored `priced_events` columns, at least READS): the
    pricing `book` gives each row at its ts, as the per-event path stores it (`priced_at` as given, to the
    millisecond); `columnar` false where this module leaves the row to that path (its other columns are then
    meaningless). `now` bounds the accepted ts as the contract does (default: the clock)."""
    now = now or datetime.now(timezone.utc)
    n = table.num_rows
    if n == 0:
        return PRICED_SCHEMA.empty_table()
    plain = [name for name in READS if name not in ("cost_breakdown", "tool_requests")]
    source = pl.from_arrow(table.select(plain)).with_columns(
        pl.Series("tools", np.diff(table.column("tool_requests").combine_chunks().offsets.to_numpy())),
        pl.Series("reported", _has_key(table.column("cost_breakdown"), REPORTED_LINES)))
    assert isinstance(source, pl.DataFrame)
    c = pl.col
    latest_ms = int((now + MAX_EVENT_FUTURE).timestamp() * 1000)
    earliest_ms = int(EARLIEST_EVENT_TS.timestamp() * 1000)
    ts_ms = c("ts").dt.epoch("ms")
    takes = (_usage_ok() & (ts_ms >= earliest_ms) & (ts_ms <= latest_ms) & (c("tools") == 0) & ~c("reported")
             & (c("event_id").str.len_chars().is_between(1, 512)) & (c("source") != "") & (c("provider") != "")
             & (c("model") != "") & c("status").is_in(["ok", "error"]))
    frame = source.select(
        c("provider"), c("model"), pl.when(c("org") == "").then(None).otherwise(c("org")).alias("org"),
        (ts_ms * 1000).alias("ts_us"), c("batch"),
        pl.when(c("service_tier") == "").then(None).otherwise(c("service_tier")).alias("service_tier"),
        (c("status") == "ok").alias("status_ok"),
        *[pl.when(takes).then(c(name)).otherwise(0).cast(pl.Int64).alias(name) for name in USAGE_COLUMNS],
        takes.alias("takes"),
    ).with_columns(
        t_input=c("input_tokens") - c("cached_input_tokens") - c("cache_write_tokens"),
        t_cached_input=c("cached_input_tokens"),
        t_cache_write_5m=c("cache_write_tokens") - c("cache_write_1h_tokens"),
        t_cache_write_1h=c("cache_write_1h_tokens"),
        t_output=c("output_tokens") - c("reasoning_tokens"),
        t_reasoning=c("reasoning_tokens"),
    )
    compiled = price_table(book)
    priced = price_frame(compiled, frame)
    no_entry = (c("outcome") == UNPRICED) & (c("entry_id") < 0)
    line_names = [f"line_{part}" for part in LINE_PARTS]
    priced = priced.with_columns(
        columnar=c("takes") & ((c("outcome") == PRICED) & (c("cost_pico") < MONEY_LIMIT) | no_entry),
        is_priced=c("outcome") == PRICED,
        no_entry=no_entry,
    )
    reasons = {(p, m): unpriced_reason(compiled, p, m, -1, None, "", 0, "", None)[0]
               for p, m in priced.filter(c("no_entry") & c("columnar")).select("provider", "model").unique()
               .iter_rows()}
    refs = compiled.refs
    vids = list(range(len(refs)))
    strings = priced.select(
        pl.when(c("is_priced")).then(pl.lit("priced")).otherwise(pl.lit("unpriced")).alias("pricing_status"),
        (pl.when(c("no_entry")).then(pl.concat_str("provider", "model", separator="\x1f"))
         .replace_strict([f"{p}\x1f{m}" for p, m in reasons], list(reasons.values()), default="",
                         return_dtype=pl.String) if reasons else pl.lit("")).alias("unpriced_reason"),
        *[pl.when(c("is_priced")).then(c("vid").replace_strict(
            vids, [ref.get(key) or "" for ref in refs], default="", return_dtype=pl.String)).otherwise(pl.lit(""))
          .alias(name) for key, name in (("entry", "price_entry"), ("effective_from", "price_effective_from"),
                                         ("catalog_version", "catalog_version"))],
        pl.lit("").alias("price_override"),
    )
    numbers = priced.select(
        c("columnar"), pl.when(c("is_priced")).then(c("cost_pico")).otherwise(0).alias("cost_pico"),
        *[pl.when(c("is_priced")).then(c(name)) for name in line_names])
    present = ~numbers.select([c(name).is_null() for name in line_names]).to_numpy()
    lines = numbers.select([c(name).fill_null(0) for name in line_names]).to_numpy().astype(np.int64)
    columns: list[Any] = [
        numbers.get_column("columnar").to_arrow(),
        _money(numbers.get_column("cost_pico").to_numpy().astype(np.int64)),
        _breakdown(lines, present),
        *[strings.get_column(name).to_arrow().cast(pa.string()) for name in PRICED_SCHEMA.names[3:-1]],
        pa.array(np.full(n, _epoch_ms(priced_at), np.int64)).cast(PRICED_SCHEMA.field("priced_at").type),
    ]
    return pa.Table.from_arrays(columns, schema=PRICED_SCHEMA)


__all__ = ["PRICED_SCHEMA", "READS", "price_stored"]
