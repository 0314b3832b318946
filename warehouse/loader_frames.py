"""Priced micro-batches read straight into one polars frame and built into `priced_events` Arrow columns, without a
Python dict per event (issue 14, loader7), for the messages whose reading is provably what the dict path reads.

The loader's dict path (`orjson.loads`, then `arrow_rows.build_batch`) spends ~2.5 µs per row decoding and ~10-13
building; nearly every message it reads is a JSON array the worker wrote in one fixed shape. Here each message is
read by polars' JSON reader with the explicit priced schema and taken ("certified") only when that reading is
provably orjson's, by the byte-level counting argument of `streams/columnar/frames.py` (read it first):

- the message is a JSON array (`[` first), valid UTF-8, without a backslash (a `"` always delimits a string), without
  whitespace before a colon (`":` follows every key once and occurs nowhere else), without a token count written
  with a fraction or exponent, and without a latency written with a minus sign (refused anyway; this keeps the
  signs of `-0` and `-0.0` out of the question);
- per kind of value after a key, the keys in its bytes equal the non-null values read: strings (`":"`), objects
  (`":{`), booleans (`":t`, `":f`), all other keys (numbers; and nulls, arrays, ...). So every key was read into
  its own field with its own kind: no unknown key (`content`, `tool_requests`, ...), no duplicate, no null, no
  coercion; an absent field reads as null, which is what "absent" means to the dict path's defaults.
- Maps (which polars cannot read): the tags of an attribution are read as an empty struct (their keys ignored)
  and taken from the bytes: each `"tags":{...}` written as a compact map of strings to strings (a brace inside a
  string is text) is extracted in order (then its `":"`s are exactly its pairs, counted as strings read); any other
  tags object is not found, so its message takes the dict path. Each found object becomes orjson's
  dict of that text (one decode per distinct text: a batch has few). The cost lines are read as a struct of the
  worker's line names; a row keeps them only when `"cost_breakdown":{...}` in its bytes is exactly those lines
  re-written in that order (so the map's order is the bytes'); else the row takes the dict path.

A certified row is then checked as columns with the very tests `arrow_rows` applies (lengths, enums, ranges,
timestamps, money text); a row that fails, a correlated row (the dedupe reads its ids from dict rows), and every
row of a message not certified take the dict path with the item orjson decodes, whose table rows and dead letters
are today's. tests/warehouse/test_loader_frames.py holds both paths equal on randomised hostile batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cache
from typing import Any, Sequence

import numpy as np
import orjson
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from tokenmeter.events import (ATTRIBUTION_DIMENSIONS, EARLIEST_EVENT_TS, MAX_EVENT_FUTURE,
                               MAX_TOOL_REQUESTS, TOOL_REQUEST_KINDS)
from tokenmeter.exprs import all_of, usage_checks
from tokenmeter.iso_times import epoch_us
from tokenmeter.microbatch import FRACTIONAL_TOKENS, TAGS_OBJECT, TAGS_PREFIX, WHITESPACE_BEFORE_COLON
from warehouse.arrow_rows import _MONEY, _PRICED_AT, _REPORTED_COST, _SIGNED_MONEY, _epoch_us, _micros
from warehouse.fast_rows import CORRELATION_IDS, MAX_EXACT_FLOAT_INT, USAGE_PARTS
from warehouse.schema import ARROW_SCHEMA, ATTRIBUTION_COLUMNS, COST_TYPE

S = pl.String
# The worker's cost lines in the order it writes them (token parts, fees, a provider-reported cost and difference);
# another name leaves its message to the dict path (by the counts), another order its row (by the re-written text).
LINE_NAMES = ("input", "cached_input", "cache_write_5m", "cache_write_1h", "output", "reasoning", "request",
              *TOOL_REQUEST_KINDS, "reported", "reported_difference")
PRICE_NAMES = ("entry", "effective_from", "catalog_version", "override")
CORRELATION_NAMES = tuple(name for name, _, _ in CORRELATION_IDS or ())
TOP_STRINGS = ("event_id", "ts", "source", "provider", "model", "operation", "status", "service_tier",
               "usage_assumption", "tokens_source", "cost_usd", "pricing_status", "unpriced_reason", "priced_at",
               "reported_cost_usd", "reported_cost_check")
SCHEMA = {
    **{name: S for name in TOP_STRINGS[:7]},
    "attribution": pl.Struct({**{dim: S for dim in ATTRIBUTION_DIMENSIONS}, "tags": pl.Struct({})}),
    "usage": pl.Struct({**{part: pl.Int64 for part in USAGE_PARTS},
                        "tool_requests": pl.Struct({kind: pl.Int64 for kind in TOOL_REQUEST_KINDS})}),
    "latency_ms": pl.Float64, "ttft_ms": pl.Float64, "batch": pl.Boolean,
    **{name: S for name in TOP_STRINGS[7:]},
    "cost_breakdown": pl.Struct({name: S for name in LINE_NAMES}),
    "price": pl.Struct({name: S for name in PRICE_NAMES}),
    **({"correlation": pl.Struct({name: S for name in CORRELATION_NAMES})} if CORRELATION_IDS else {}),
}
# arrow_rows' money patterns are RE2's, whose \d is ASCII; polars' (Rust) \d is any Unicode digit
_ASCII_MONEY, _ASCII_SIGNED_MONEY, _ASCII_REPORTED_COST = (p.replace(r"\d", "[0-9]") for p in (
    _MONEY, _SIGNED_MONEY, _REPORTED_COST))
_LINE = '"[a-z_0-9]+":"' + _ASCII_SIGNED_MONEY.strip("^$") + '"'
_LINES_TEXT = r'^"cost_breakdown":\{(' + _LINE + "(," + _LINE + r')*)?\}$'
MAX_ROWS_PER_MESSAGE = 1 << 20  # row keys pack (message, position) into an int64

SIGNED_LATENCY = '_ms":-'
BREAKDOWN = r'"cost_breakdown":\{[^{}]*\}'
TOOLS = r'"tool_requests":\{[^{}]*\}'


def read_message(value: Any) -> pl.DataFrame | None:
    """polars' reading of one priced message with the explicit schema, or None when polars refuses it (the dict
    path then decodes it, and words its dead letter). Not yet certified: `FrameBatch` decides."""
    if type(value) is not bytes or value[:1] != b"[":
        return None
    try:
        frame = pl.read_json(value, schema=SCHEMA)
    except Exception:  # noqa: BLE001 - not JSON, not an array of objects, wrong kinds: the dict path decides
        return None
    return frame if 0 < frame.height <= MAX_ROWS_PER_MESSAGE else None


@cache
def _kind_counts() -> tuple[pl.Expr, pl.Expr, pl.Expr, pl.Expr]:
    """Per row, the non-null values polars read by kind: strings, objects, booleans, numbers."""
    attribution, usage = pl.col("attribution").struct, pl.col("usage").struct
    strings = [pl.col(name).is_not_null() for name in TOP_STRINGS]
    strings += [attribution.field(dim).is_not_null() for dim in ATTRIBUTION_DIMENSIONS]
    strings += [pl.col("cost_breakdown").struct.field(name).is_not_null() for name in LINE_NAMES]
    strings += [pl.col("price").struct.field(name).is_not_null() for name in PRICE_NAMES]
    objects = [pl.col(name).is_not_null() for name in ("attribution", "usage", "cost_breakdown", "price")]
    objects.append(attribution.field("tags").is_not_null())
    objects.append(usage.field("tool_requests").is_not_null())
    if "correlation" in SCHEMA:
        strings += [pl.col("correlation").struct.field(name).is_not_null() for name in CORRELATION_NAMES]
        objects.append(pl.col("correlation").is_not_null())
    numbers = [pl.col("latency_ms").is_not_null(), pl.col("ttft_ms").is_not_null()]
    numbers += [usage.field(part).is_not_null() for part in USAGE_PARTS]
    numbers += [usage.field("tool_requests").struct.field(kind).is_not_null() for kind in TOOL_REQUEST_KINDS]
    return (pl.sum_horizontal(strings), pl.sum_horizontal(objects), pl.col("batch").is_not_null().cast(pl.UInt32),
            pl.sum_horizontal(numbers))


def _text(values: Sequence[bytes]) -> pl.Series:
    """The messages as a String series, null where one is not UTF-8."""
    binary = pl.Series("text", values, dtype=pl.Binary)
    try:
        return binary.cast(pl.String)
    except pl.exceptions.PolarsError:
        return pl.Series("text", [v if _utf8(v) else None for v in values], dtype=pl.Binary).cast(pl.String)


def _utf8(value: bytes) -> bool:
    try:
        value.decode()
    except UnicodeDecodeError:
        return False
    return True


def _extracted(lists: pl.Series, messages: np.ndarray) -> tuple[pl.Series, np.ndarray]:
    """The extracted texts of the `messages` marked, flat in order, and each one's message."""
    lengths = lists.list.len().fill_null(0).to_numpy() * messages
    chosen = lists.filter(pl.Series(lengths > 0))
    return (chosen.explode() if len(chosen) else pl.Series("t", [], dtype=pl.String)), np.repeat(
        np.arange(len(lists)), lengths)


def _certified_messages(texts: pl.Series, frame: pl.DataFrame
                        ) -> tuple[np.ndarray, pl.Series, pl.Series, pl.Series]:
    """(per message: certified; the `"tags":{...}`, `"cost_breakdown":{...}` and `"tool_requests":{...}` texts of
    the certified messages, flat, in row order)."""
    m = len(texts)
    tags = texts.str.extract_all(TAGS_OBJECT)
    lines = texts.str.extract_all(BREAKDOWN)
    # most windows carry no tool request: then no extraction pass (an empty list per message)
    tools = (texts.str.extract_all(TOOLS) if texts.str.contains('"tool_requests":', literal=True).any()
             else pl.Series("tools", [[]] * len(texts), dtype=pl.List(pl.String)))
    flat_tags, tag_owner = _extracted(tags, np.ones(m, np.int64))
    # every tags object found is a map of strings (TAGS_OBJECT): its `":"`s are exactly its pairs
    pairs = flat_tags.str.count_matches('":"', literal=True).fill_null(0).to_numpy()
    pairs_per_message = np.bincount(tag_owner, weights=pairs, minlength=m).astype(np.int64)
    counts = pl.select(
        plain=(texts.str.starts_with("[") & ~texts.str.contains("\\", literal=True)
               & ~texts.str.contains(WHITESPACE_BEFORE_COLON) & ~texts.str.contains(FRACTIONAL_TOKENS)
               & ~texts.str.contains(SIGNED_LATENCY, literal=True)).fill_null(False),
        keys=texts.str.count_matches('":', literal=True),
        s=texts.str.count_matches('":"', literal=True),
        o=texts.str.count_matches('":{', literal=True),
        b=texts.str.count_matches('":t', literal=True) + texts.str.count_matches('":f', literal=True),
        tags=tags.list.len(), lines=lines.list.len(), tools=tools.list.len())
    strings, objects, booleans, numbers = _kind_counts()
    read = (frame.select("_msg", s=strings, o=objects, b=booleans, n=numbers,
                         tags=pl.col("attribution").struct.field("tags").is_not_null().cast(pl.UInt32),
                         lines=pl.col("cost_breakdown").is_not_null().cast(pl.UInt32),
                         tools=pl.col("usage").struct.field("tool_requests").is_not_null().cast(pl.UInt32))
            .group_by("_msg").sum())

    def per_message(name: str) -> np.ndarray:
        out = np.zeros(m, np.int64)
        out[read.get_column("_msg").to_numpy()] = read.get_column(name).to_numpy()
        return out

    def column(name: str) -> np.ndarray:
        return counts.get_column(name).fill_null(-1).cast(pl.Int64).to_numpy()

    s_bytes, o_bytes, b_bytes = column("s"), column("o"), column("b")
    n_bytes = column("keys") - s_bytes - o_bytes - b_bytes
    certified = (counts.get_column("plain").to_numpy()
                 & (per_message("s") + pairs_per_message == s_bytes) & (per_message("o") == o_bytes)
                 & (per_message("b") == b_bytes) & (per_message("n") == n_bytes)
                 & (per_message("tags") == column("tags")) & (per_message("lines") == column("lines"))
                 & (per_message("tools") == column("tools")))
    return certified, *(_extracted(found, certified)[0] for found in (tags, lines, tools))


def _scatter(present: np.ndarray, values: pl.Series) -> pl.Series:
    """A String column with `values` (in order) where `present`, null elsewhere."""
    out = pl.Series("v", [None] * len(present), dtype=pl.String)
    if present.any():
        out = out.scatter(np.flatnonzero(present), values)
    return out


@cache
def scalar_checks() -> pl.Expr:
    """`arrow_rows`' checks of a row's scalar fields and usage counts, on values of known kinds: one definition for
    the JSON frame path (`_row_checks`) and the Arrow message path (loader_arrow)."""
    checks = [pl.col("event_id").str.len_chars().is_between(1, 512),
              pl.col("source").str.len_bytes() > 0, pl.col("provider").str.len_bytes() > 0,
              pl.col("model").str.len_bytes() > 0,
              pl.col("status").fill_null("ok").is_in(["ok", "error"]),
              pl.col("ts").is_not_null(), pl.col("usage").is_not_null(),
              pl.col("usage_assumption").is_null() | pl.col("usage_assumption").str.len_chars().is_between(1, 200),
              pl.col("tokens_source").is_in(["provider", "estimated"]),
              pl.col("pricing_status").is_in(["priced", "unpriced"]),
              pl.col("cost_usd").str.contains(_ASCII_MONEY),
              pl.col("price").is_null() | pl.col("price").struct.field("entry").is_not_null(),
              pl.col("reported_cost_usd").is_null() | pl.col("reported_cost_usd").str.contains(_ASCII_REPORTED_COST)]
    for name in ("latency_ms", "ttft_ms"):  # an int from 2**53 up is the dict path's (2**53 + 1 reads as 2**53)
        value = pl.col(name)
        checks.append(value.is_null() | ((value >= 0) & value.is_finite() & (value < MAX_EXACT_FLOAT_INT)))
    checks += usage_checks(pl.col("usage"))
    return all_of(*checks)  # a balanced tree: polars plans a left-deep chain in O(n^2) (tokenmeter.exprs)


@cache
def _row_checks() -> pl.Expr:
    """True for the rows `arrow_rows` would take as they are (its checks, on values of certified kinds)."""
    usage = pl.col("usage").struct
    checks = [scalar_checks()]
    if "correlation" in SCHEMA:
        checks.append(pl.col("correlation").is_null())
    checks += [pl.col("event_id").is_not_null(), pl.col("cost_usd").is_not_null()]
    lines = pl.col("cost_breakdown").struct
    # every line's amount is arrow_rows' signed money text: one pass over the row's lines text (which the
    # comparison below proves is exactly the lines read)
    checks.append(pl.col("cost_breakdown").is_null() | pl.col("_lines_text").str.contains(_LINES_TEXT))
    rewritten = pl.concat_str(pl.lit('"cost_breakdown":{'), pl.concat_str(
        [pl.concat_str(pl.lit(f'"{name}":"'), lines.field(name), pl.lit('"')) for name in LINE_NAMES],
        separator=",", ignore_nulls=True), pl.lit("}"))
    checks.append(pl.col("cost_breakdown").is_null() | (rewritten == pl.col("_lines_text")))
    tools = usage.field("tool_requests")
    checks += [tools.struct.field(kind).is_null() | tools.struct.field(kind).is_between(0, MAX_TOOL_REQUESTS)
               for kind in TOOL_REQUEST_KINDS]
    rewritten = pl.concat_str(pl.lit('"tool_requests":{'), pl.concat_str(
        [pl.concat_str(pl.lit(f'"{kind}":'), tools.struct.field(kind).cast(pl.String)) for kind in TOOL_REQUEST_KINDS],
        separator=",", ignore_nulls=True), pl.lit("}"))
    checks.append(tools.is_null() | (rewritten == pl.col("_tools_text")))
    ok = all_of(*checks)
    return ok.fill_null(False)


@dataclass
class FrameBatch:
    """A window's priced messages read by polars: `frame` (every row, with `_msg` and `_pos`), `ok` (per row: the
    message is certified and the row passes the checks), `heights` (rows per message)."""

    frame: pl.DataFrame
    ok: np.ndarray
    heights: list[int]


def certify(values: Sequence[bytes], frames: Sequence[pl.DataFrame]) -> FrameBatch:
    """Certify the messages `values` (as read by `read_message` into `frames`) and check their rows."""
    heights = [f.height for f in frames]
    lengths = pl.Series(heights, dtype=pl.UInt32)
    ids = pl.select(_msg=pl.lit(pl.Series(range(len(frames)), dtype=pl.UInt32)).repeat_by(pl.lit(lengths)).explode(),
                    _pos=pl.int_ranges(0, pl.lit(lengths), dtype=pl.UInt32).explode())
    frame = pl.concat(frames, how="vertical").with_columns(ids.get_column("_msg"), ids.get_column("_pos"))
    texts = _text(values)
    certified, tags, lines, tools = _certified_messages(texts, frame)
    row_certified = np.repeat(certified, heights)
    has_tags = (frame.get_column("attribution").struct.field("tags").is_not_null().to_numpy() & row_certified)
    has_lines = frame.get_column("cost_breakdown").is_not_null().to_numpy() & row_certified
    has_tools = frame.get_column("usage").struct.field("tool_requests").is_not_null().to_numpy() & row_certified
    frame = frame.with_columns(_tags_text=_scatter(has_tags, tags),
                               _lines_text=_scatter(has_lines, lines), _tools_text=_scatter(has_tools, tools))
    ok = frame.select(_row_checks()).to_series().to_numpy() & row_certified
    return FrameBatch(frame, ok, heights)


def _gathered_map(struct: pl.Series, names: tuple[str, ...], value_type: pa.DataType,
                  drop_zero: bool = False) -> pa.Array:
    """A map column from a struct of named fields: each row's non-null fields (non-zero when `drop_zero`) in
    `names` order (which the checks proved the bytes' order), gathered row-major (one take, one cast)."""
    n = len(struct)
    columns = [(name, struct.struct.field(name)) for name in names]
    columns = [(name, column) for name, column in columns if column.null_count() < n]
    present = (np.stack([(column.is_not_null() & (column != 0) if drop_zero else column.is_not_null())
                         .fill_null(False).to_numpy() for _, column in columns], axis=1) if columns
               else np.zeros((n, 0), bool))
    rows, which = np.nonzero(present)  # row-major: each row's entries in `names` order
    offsets = pa.array(np.concatenate([[0], np.cumsum(present.sum(axis=1))]).astype(np.int32), pa.int32())
    if not columns:
        return pa.MapArray.from_arrays(offsets, pa.array([], pa.string()), pa.array([], value_type))
    values = pa.concat_arrays([column.to_arrow().cast(pa.string() if value_type == COST_TYPE else pa.int64())
                               for _, column in columns])
    values = pc.cast(values.take(pa.array(which * n + rows)), value_type)
    keys = pa.array([name for name, _ in columns], pa.string()).take(pa.array(which))
    return pa.MapArray.from_arrays(offsets, keys, values)


_TS_SHAPE = (r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?"
             r"(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$")


def _ts_micros(ts: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """(valid, µs since the epoch) of the event times: texts of `_TS_SHAPE` (every one `arrow_rows._TS` takes
    with a time of day that exists: hour <= 23, minute and second <= 59) on a real calendar day, by chrono's parser
    (which alone would take a leap second or 7 fractional digits: the shape rules them out first)."""
    arrow = epoch_us(ts)  # Arrow's parser: chrono's values, ~12x cheaper; None sends the column to chrono (fast20)
    frame = pl.select(shape=ts.str.contains(_TS_SHAPE).fill_null(False),
                      us=pl.lit(arrow) if arrow is not None else
                      ts.str.replace(r"Z$", "+00:00").str.strptime(pl.Datetime("us", "UTC"), "%Y-%m-%dT%H:%M:%S%.f%:z",
                                                                   strict=False).dt.epoch("us"))
    micros = frame.get_column("us")
    valid = frame.get_column("shape").to_numpy() & micros.is_not_null().to_numpy()
    return valid, micros.fill_null(0).to_numpy()


def _tags_map(texts: pl.Series) -> pa.Array:
    """Each row's tags map from its `"tags":{...}` text (null: no tags), orjson's dict of it, distinct texts once."""
    distinct = texts.unique(maintain_order=True)
    dicts = [orjson.loads(t[TAGS_PREFIX:]) if t is not None else {} for t in distinct.to_list()]
    maps = pa.array([list(d.items()) for d in dicts], ARROW_SCHEMA.field("tags").type)
    if not len(texts):  # replace_strict of an empty series returns it as text, whatever return_dtype says
        return maps
    index = pl.select(i=texts.fill_null("\x00").replace_strict(distinct.fill_null("\x00"),
                                                               pl.Series(range(len(distinct))),
                                                               return_dtype=pl.UInt32)).to_series()
    return maps.take(index.to_arrow())


def _priced_at_micros(priced_at: pl.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(present, valid, µs) of the pricing times, each distinct text parsed once by arrow_rows' parser (a worker
    batch shares one)."""
    present = priced_at.is_not_null().to_numpy()
    if not present.any():
        return present, present, np.zeros(len(priced_at), np.int64)
    distinct = priced_at.drop_nulls().unique()
    valid, micros = _epoch_us(pa.array(distinct.to_list(), pa.string()), _PRICED_AT)
    index = priced_at.replace_strict(distinct, pl.Series(range(len(distinct)), dtype=pl.Int64), default=0,
                                     return_dtype=pl.Int64).fill_null(0).to_numpy()
    return present, valid[index] & present, np.where(present, micros[index], 0)


def field_columns(frame: pl.DataFrame) -> dict[str, pa.Array]:
    """The warehouse columns read straight from a checked priced frame's fields, absent ones at their defaults, as
    Arrow arrays: one definition for the JSON frame path (`build_table`) and the Arrow message path
    (loader_arrow.build_arrow)."""
    attribution, price, usage = pl.col("attribution").struct, pl.col("price").struct, pl.col("usage").struct
    columns = frame.select(
        "event_id", "source", "provider", "model",
        operation=pl.col("operation").fill_null("chat"), status=pl.col("status").fill_null("ok"),
        **{dim: attribution.field(dim).fill_null("") for dim in ATTRIBUTION_COLUMNS},
        **{part: usage.field(part).fill_null(0).cast(pl.UInt64) for part in USAGE_PARTS},
        latency_ms="latency_ms", ttft_ms="ttft_ms", batch=pl.col("batch").fill_null(False),
        service_tier=pl.col("service_tier").fill_null(""), tokens_source="tokens_source",
        pricing_status="pricing_status", unpriced_reason=pl.col("unpriced_reason").fill_null(""),
        price_entry=price.field("entry").fill_null(""), price_effective_from=price.field("effective_from").fill_null(""),
        catalog_version=price.field("catalog_version").fill_null(""),
        price_override=price.field("override").fill_null(""),
        usage_assumption=pl.col("usage_assumption").fill_null("")).to_arrow()
    return {name: columns.column(name).combine_chunks() for name in columns.column_names}


def build_table(batch: FrameBatch, take: np.ndarray, now: datetime | None = None) -> tuple[pa.Table, np.ndarray]:
    """(the `priced_events` table of the rows `take` marks, (message << 20 | position) of each, in order). The ts
    and priced_at checks run here, on the taken rows' texts; a row they refuse is left out (`take` is updated in
    place to say so): the caller sends it down the dict path."""
    kept = batch.frame.filter(pl.Series(take))
    ts_valid, ts_us = _ts_micros(kept.get_column("ts"))
    latest = _micros((now or datetime.now(timezone.utc)) + MAX_EVENT_FUTURE)
    good = ts_valid & (ts_us >= _micros(EARLIEST_EVENT_TS)) & (ts_us <= latest)
    at_present, at_valid, at_us = _priced_at_micros(kept.get_column("priced_at"))
    good &= ~at_present | at_valid
    if not good.all():
        take[np.flatnonzero(take)[~good]] = False
        kept, ts_us, at_us, at_present = kept.filter(pl.Series(good)), ts_us[good], at_us[good], at_present[good]
    n = kept.height
    arrays = field_columns(kept)
    arrays.update({
        "ts": pa.array(ts_us // 1000, pa.int64()).cast(ARROW_SCHEMA.field("ts").type),
        "tags": _tags_map(kept.get_column("_tags_text")),
        "cost_usd": pc.cast(kept.get_column("cost_usd").to_arrow().cast(pa.string()), COST_TYPE),
        "cost_breakdown": _gathered_map(kept.get_column("cost_breakdown"), LINE_NAMES, COST_TYPE),
        "priced_at": pa.array(at_us // 1000, pa.int64(), mask=~at_present).cast(ARROW_SCHEMA.field("priced_at").type),
        "tool_requests": _gathered_map(kept.get_column("usage").struct.field("tool_requests"), TOOL_REQUEST_KINDS,
                                       pa.uint64(), drop_zero=True),
        "correlation": pa.array([[]] * n, ARROW_SCHEMA.field("correlation").type),
        "call_keys": pa.array([[]] * n, ARROW_SCHEMA.field("call_keys").type),
    })
    table = pa.Table.from_arrays([arrays[name].cast(ARROW_SCHEMA.field(name).type) for name in ARROW_SCHEMA.names],
                                 schema=ARROW_SCHEMA)
    keys = (kept.get_column("_msg").cast(pl.Int64).to_numpy() << 20) | kept.get_column("_pos").cast(pl.Int64).to_numpy()
    return table, keys


__all__ = ["FrameBatch", "SCHEMA", "build_table", "certify", "field_columns", "read_message", "scalar_checks"]
