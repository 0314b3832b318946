"""Write priced events as JSON straight from columns: the bytes `orjson.dumps(PricedEvent.to_json())` writes,
built with one polars string concatenation per batch instead of a dict and an orjson call per event.

It takes only the rows whose text it reproduces exactly and leaves every other row to the per-row dict path
(`pipeline.py`), which encodes with orjson as today:
- priced rows without tool requests (fee rows carry per-row fee lines), and unpriced rows whose model has no
  catalog entry (their reason is the resolver's, one per (provider, model): `reason_json`);
- strings that need no JSON escaping (orjson escapes only `"`, `\\` and control characters < 0x20 and writes
  everything else, non-ASCII too, as it is);
- latencies (floats) that are integral, non-negative and < 1e15, which orjson writes as `<integer>.0`, and
  not -0.0, or non-integral in [1e-4, 1e15) (OTel's (end - start) / 1e6), where polars' cast writes orjson's
  shortest round-trip text.
Attribution objects come pre-encoded with orjson (validate.py caches them per shape). The equivalence test
(`streams.columnar.equivalence`) compares these bytes with today's path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from functools import cache
from typing import Any

import orjson
import polars as pl

from tokenmeter.events import Correlation

from .meter import TOKEN_PARTS

LINE_PARTS = (*TOKEN_PARTS, "request")
MAX_INTEGRAL_FLOAT = 1e15  # orjson writes an integral float below this as "<digits>.0"; from 1e16 on as 1e+16
MIN_PLAIN_FLOAT = 1e-4  # below it orjson may write an exponent (1e-7)
NEEDS_ESCAPE = r'[\x00-\x1f"\\]'
USAGE_FIELDS = ("input_tokens", "cached_input_tokens", "cache_write_tokens", "cache_write_1h_tokens",
                "output_tokens", "reasoning_tokens")
# The correlation's ids in model order (tokenmeter.events.Correlation, validate.py's tuples), as string columns
# named "correlation_<id>".
CORRELATION_FIELDS = tuple(Correlation.model_fields)


def correlation_columns(correlation: list[tuple | None]) -> list[pl.Series]:
    """`has_correlation` and one string column per id from validate.py's correlation tuples (None: no correlation,
    written as no key; a tuple of nulls is an empty object, `"correlation":{}`, as pydantic dumps it); no columns
    when no row has a correlation (then `fast_mask` and `encode_priced` leave it out)."""
    names = [f"correlation_{name}" for name in CORRELATION_FIELDS]
    if correlation.count(None) == len(correlation):
        return []
    absent = (None,) * len(CORRELATION_FIELDS)
    ids = zip(*(absent if c is None else c for c in correlation))
    return ([pl.Series("has_correlation", [c is not None for c in correlation], dtype=pl.Boolean)]
            + [pl.Series(name, values, dtype=pl.String) for name, values in zip(names, ids)])


def _correlation_text() -> pl.Expr:
    """`{"response_id":"...",...}` with the present ids in model order where a row has a correlation, else null."""
    ids = pl.concat_str([pl.concat_str(pl.lit(f'"{name}":'), _quoted(f"correlation_{name}"))
                         for name in CORRELATION_FIELDS], separator=",", ignore_nulls=True)
    return pl.when(pl.col("has_correlation")).then(pl.concat_str(pl.lit("{"), ids, pl.lit("}")))


def _plain(column: str) -> pl.Expr:
    """True where a string (or null) is written by orjson as `"` + itself + `"`."""
    return pl.col(column).str.contains(NEEDS_ESCAPE).fill_null(False).not_()


@cache  # expressions are immutable: built once (~0.1 ms each, twice a chunk)
def _float_ok(column: str) -> pl.Expr:
    """Floats this module writes as orjson does: integral ones (via Int64) and non-integral ones in
    [MIN_PLAIN_FLOAT, MAX_INTEGRAL_FLOAT), where orjson writes the shortest round-trip digits in plain notation and
    polars' Float64 -> String cast writes the same text (checked on 4,000,000 random doubles over the whole range
    and the edges with polars 2.1; tests/streams/test_columnar.py keeps ~6,000 and the edges); never -0.0."""
    value = pl.col(column)
    integral = (value == value.floor()) & (value >= 0) & (value < MAX_INTEGRAL_FLOAT)
    negative_zero = (value == 0) & ((1.0 / value) < 0)
    plain = (value >= MIN_PLAIN_FLOAT) & (value < MAX_INTEGRAL_FLOAT)
    return value.is_null() | ((integral & ~negative_zero) | plain).fill_null(False)


def _float_text(column: str) -> pl.Expr:
    value = pl.col(column)
    return (pl.when(value == value.floor())
            .then(pl.concat_str(value.cast(pl.Int64).cast(pl.String), pl.lit(".0")))
            .otherwise(value.cast(pl.String)))


def _optional(name: str, value: pl.Expr) -> pl.Expr:
    """`,"name":value` or null (then left out)."""
    return pl.concat_str(pl.lit(f',"{name}":'), value)


def _quoted(column: str) -> pl.Expr:
    return pl.concat_str(pl.lit('"'), pl.col(column), pl.lit('"'))


def fast_mask(frame: pl.DataFrame, fast_outcome: pl.Expr) -> pl.Series:
    """Rows this module writes: `frame` holds the string columns event_id, ts, source, provider, model,
    operation, status, service_tier, usage_assumption, those of `correlation_columns`, the floats latency_ms,
    ttft_ms and `has_tools`."""
    fast = (fast_outcome & ~pl.col("has_tools")
            & _plain("event_id") & _plain("ts") & _plain("source") & _plain("provider") & _plain("model")
            & _plain("operation") & _plain("status") & _plain("service_tier") & _plain("usage_assumption")
            & _float_ok("latency_ms") & _float_ok("ttft_ms"))
    if "has_correlation" in frame.columns:
        fast = fast & pl.all_horizontal([_plain(f"correlation_{name}") for name in CORRELATION_FIELDS])
    return frame.select(fast.alias("fast")).to_series()


NONE, SOME, ALL = "none", "some", "all"


def _nulls(frame: pl.DataFrame, column: str) -> str:
    """Whether `column` is null in no row, some rows or every row of `frame` (polars keeps the count: O(1))."""
    count = frame.get_column(column).null_count()
    return NONE if count == 0 else ALL if count == frame.height else SOME


def _breakdown(frame: pl.DataFrame) -> list[pl.Expr]:
    """Pieces writing the cost breakdown's lines (`"input":"0.001",...`, each line only where it is not null):
    lines null in every row are left out; when the rest are present in the same rows (null in none, or all
    null together, as on unpriced rows), one piece writes them, else one nested piece per line joined by commas."""
    parts = [part for part in LINE_PARTS if _nulls(frame, part) != ALL]
    if not parts:
        return []
    flat: list[pl.Expr] = []
    for i, part in enumerate(parts):
        flat += [pl.lit(('"' if i == 0 else '","') + f'{part}":"'), pl.col(part)]
    flat.append(pl.lit('"'))
    if all(_nulls(frame, part) == NONE for part in parts):
        return flat
    masks = frame.select([pl.col(part).is_null() for part in parts])
    if all(masks.get_column(part).equals(masks.get_column(parts[0])) for part in parts[1:]):
        return [pl.concat_str(flat)]  # null where the first line is null: then all are
    return [pl.concat_str([pl.concat_str(pl.lit(f'"{part}":"'), pl.col(part), pl.lit('"')) for part in parts],
                          separator=",", ignore_nulls=True)]


def encode_priced(frame: pl.DataFrame, refs: list[bytes], priced_at: str,
                  attribution: list[pl.Expr] | None = None) -> pl.Series:
    """The encoded priced event (String: JSON text) of each row of `frame` (fast rows only), which holds the columns of
    `fast_mask` plus attribution_json, batch, vid, cost (text), the usage fields, line texts named by
    LINE_PARTS (null when the breakdown has no such line) and reason_json (the unpriced reason as JSON text,
    null for priced rows; with an optional column unpriced_ref, the PriceRef JSON written after the reason where it is
    not null). `attribution`: pieces that write the attribution object in place of the column
    attribution_json (frame_price.py; none of them null where the object has text)."""
    ref_text = pl.Series("ref", [r.decode() for r in refs], dtype=pl.String)
    # Required fields (never null on these rows) are pieces of the one outer concat, not nested concat_str
    # expressions: each nested one built a whole intermediate string column first (measured: ~40% of the encode).
    # Optional ones are too where the batch's own columns allow it (`_nulls`: a column null in no row is written
    # flat, one null in every row is left out): nested pieces cost per row even where they end up null.
    required: list[pl.Expr] = []
    for i, name in enumerate(("event_id", "ts", "source", "provider", "model", "operation", "status")):
        required += [pl.lit(('{"' if i == 0 else '","') + f'{name}":"'), pl.col(name)]
    required += [pl.lit('","attribution":'), *(attribution or [pl.col("attribution_json")])]
    for i, name in enumerate(USAGE_FIELDS):
        required += [pl.lit((',"usage":{"' if i == 0 else ',"') + f'{name}":'), pl.col(name).cast(pl.String)]
    optional: list[pl.Expr] = []
    for name in ("latency_ms", "ttft_ms"):
        if _nulls(frame, name) != ALL:
            optional.append(_optional(name, _float_text(name)))
    optional += [pl.lit(',"batch":'), pl.when(pl.col("batch")).then(pl.lit("true")).otherwise(pl.lit("false"))]
    for name in ("service_tier", "usage_assumption"):
        nulls = _nulls(frame, name)
        if nulls == NONE:
            optional += [pl.lit(f',"{name}":"'), pl.col(name), pl.lit('"')]
        elif nulls == SOME:
            optional.append(_optional(name, _quoted(name)))
    if "has_correlation" in frame.columns:
        optional.append(_optional("correlation", _correlation_text()))
    priced = _nulls(frame, "reason_json") == ALL
    text = pl.concat_str([
        *required, pl.lit("}"), *optional,
        pl.lit(',"tokens_source":"provider","cost_usd":"'), pl.col("cost"),
        pl.lit('","cost_breakdown":{'), *_breakdown(frame),
        pl.lit('},"pricing_status":'),
        *([pl.lit('"priced","price":'), pl.lit(ref_text).gather(pl.col("vid"))] if priced else [
            pl.when(pl.col("reason_json").is_null())
            .then(pl.concat_str(pl.lit('"priced","price":'), pl.lit(ref_text).gather(pl.col("vid"))))
            .otherwise(pl.concat_str(pl.lit('"unpriced","unpriced_reason":'), pl.col("reason_json"),
                                     *([pl.concat_str(pl.lit(',"price":'), pl.col("unpriced_ref"))]
                                       if "unpriced_ref" in frame.columns else []), ignore_nulls=True))]),
        pl.lit(f',"priced_at":"{priced_at}"}}'),
    ], ignore_nulls=True)
    return frame.select(text.alias("encoded")).to_series()


class LazyOrigins(Sequence):
    """BatchResult.origins whose events may be held as their encoded JSON: each is decoded (orjson, which gives
    back the very dict it was written from) only when read. Budgets read origins only when a budget exists."""

    __slots__ = ("_entries", "_pending")

    def __init__(self) -> None:
        self._entries: list[tuple[int, int, Any]] = []
        self._pending: Callable[[], Iterable[tuple[int, int, Any]]] | None = None

    @classmethod
    def deferred(cls, entries: Callable[[], Iterable[tuple[int, int, Any]]]) -> "LazyOrigins":
        """Origins whose entries are made by `entries()` when first read (budgets read them only when a budget
        exists: framed.py)."""
        origins = cls()
        origins._pending = entries
        return origins

    def _fill(self) -> list[tuple[int, int, Any]]:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self._entries[:0] = pending()
        return self._entries

    def append(self, entry: tuple[int, int, Any]) -> None:
        self._fill().append(entry)

    def extend(self, entries) -> None:  # noqa: ANN001 - any iterable of (partition, offset, event)
        self._fill().extend(entries)

    def __len__(self) -> int:
        return len(self._fill())

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        partition, offset, event = self._fill()[index]
        if type(event) is bytes:
            event = orjson.loads(event)
            self._entries[index] = (partition, offset, event)
        return partition, offset, event

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    def __repr__(self) -> str:
        return f"LazyOrigins({len(self)} events)"


__all__ = ["CORRELATION_FIELDS", "LazyOrigins", "correlation_columns", "encode_priced", "fast_mask"]
