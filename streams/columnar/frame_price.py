"""Price the rows `frames.scan` decoded straight into a polars frame and write their priced JSON, never building
a dict: the same checks, as-of join, money and JSON text as the dict-fed columnar path (pipeline.py), with every
input column already in polars. Rows it does not write (a failed row check, an unpriced reason other than a
missing catalog entry, a negotiated rule, a float orjson would write otherwise, a priced event over
MAX_PRICED_EVENT_BYTES) are handed back to the dict path by their item index.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from datetime import datetime
from decimal import Decimal
from typing import Iterator

import orjson
import polars as pl

from streams.batch import MAX_PRICED_EVENT_BYTES
from tokenmeter.events import ATTRIBUTION_DIMENSIONS
from tokenmeter.exprs import all_of
from tokenmeter.iso_times import epoch_us

from .encode import ALL, CORRELATION_FIELDS, _float_ok, _nulls, encode_priced
from .frames import SCHEMA, row_checks
from .meter import TOKEN_PARTS
from .price import PRICED, UNPRICED, PriceTable, price_frame, unpriced_reason
from .text_size import text_bound
from .uniform_ts import uniform_ts
from .validate import EARLIEST_TS_US, KEY_DIMENSIONS, TS_FORMAT, USAGE_PARTS, _latest_ts_us, _pydantic_column

LINE_PARTS = (*TOKEN_PARTS, "request")
# the usage counts each token part (the `t_<part>` inputs of price_frame, below) is computed from
TOKEN_SOURCES = {"input": frozenset({"input_tokens", "cached_input_tokens", "cache_write_tokens"}),
                 "cached_input": frozenset({"cached_input_tokens"}),
                 "cache_write_5m": frozenset({"cache_write_tokens", "cache_write_1h_tokens"}),
                 "cache_write_1h": frozenset({"cache_write_1h_tokens"}),
                 "output": frozenset({"output_tokens", "reasoning_tokens"}),
                 "reasoning": frozenset({"reasoning_tokens"})}
# validate.py's PARSEABLE_TS with byte classes ([0-9], not the Unicode \d: a non-ASCII digit fails the parse anyway)
_D = "[0-9]"
# seconds 00-59: chrono's parser takes a second 60 (as the next minute's first) that pydantic refuses (fast20)
_HEAD = f"^[1-9]{_D}{{3}}-{_D}{{2}}-{_D}{{2}}T{_D}{{2}}:{_D}{{2}}:[0-5]{_D}"
PARSEABLE_TS = _HEAD + rf"(\.{_D}{{1,6}})?(Z|[+-]([01]{_D}|2[0-3]):[0-5]{_D})$"


_WRITTEN_SCHEMA = {"_item": pl.Int64, "key": pl.Binary, "text": pl.String, "_unpriced": pl.Boolean,
                   "_assumed": pl.Boolean}  # what `outcomes` gives per row (`text` from `texts`)
# The written rows' columns an Arrow priced message is made of (arrow_encode.py, TOKENMETER_PRICED_FORMAT=arrow),
# kept beside the JSON text (a select: no copy): (always there, there when the batch has them).
ARROW_COLUMNS = (("event_id", "ts", "source", "provider", "model", "operation", "status", "attribution",
                  "input_tokens", "cached_input_tokens", "cache_write_tokens", "cache_write_1h_tokens",
                  "output_tokens", "reasoning_tokens", "latency_ms", "ttft_ms", "batch", "service_tier",
                  "usage_assumption", "cost", *LINE_PARTS, "vid", "reason_json", "unpriced_ref"),
                 ("_tags", "has_correlation", *(f"correlation_{name}" for name in CORRELATION_FIELDS)))


@dataclass
class Written:
    """The rows written from columns, in frame order (`rows`: `_item` their item indices, `key` partition keys
    (Binary), `_unpriced` and `_assumed` whether each is unpriced and carries a usage assumption, `_size_bound` its
    JSON text's bytes or, when the text was not written, an upper bound of them (text_size.py), and ARROW_COLUMNS); `rest`: item indices of the rows the
    dict path takes. The JSON text is written when first read (`texts`: JSON messages, budget origins, a mixed
    batch), not by a worker that sends Arrow; Python values are taken from the columns only when asked for
    (`outcomes`): a batch written whole is framed from the columns (framed.py)."""

    rows: pl.DataFrame
    rest: list[int]
    refs: list[dict] | None = None  # the price table's PriceRef per version and the batch's priced_at text: what
    priced_at: str | None = None  # the Arrow rows need beside `rows`' ARROW_COLUMNS
    ref_json: list[bytes] | None = None  # the PriceRefs as JSON: what the text needs beside them
    _text: pl.Series | None = None

    @classmethod
    def nothing(cls, rest: list[int]) -> "Written":
        return cls(pl.DataFrame(schema=_WRITTEN_SCHEMA), rest)

    @property
    def texts_written(self) -> bool:
        """Whether the rows' JSON text was written (a worker sending Arrow without budgets never writes it)."""
        return self._text is not None or self.rows.height == 0

    def texts(self) -> pl.Series:
        """The rows' priced JSON text (String, named `text`), written once."""
        if self._text is None:
            self._text = (_texts(self.rows, self.ref_json, self.priced_at) if self.rows.height
                          else pl.Series("text", [], dtype=pl.String)).alias("text")
        return self._text

    def outcomes(self) -> Iterator[tuple[int, bytes, bytes, bool, bool]]:
        """(item index, key, priced JSON as bytes, unpriced, assumed) of each written row, in frame order."""
        texts = self.texts().cast(pl.Binary).to_list()
        return zip(*(texts if name == "text" else self.rows.get_column(name).to_list() for name in _WRITTEN_SCHEMA))


def _money_text(pico: pl.Expr) -> pl.Expr:
    """format(Decimal(pico) * 1e-12, "f") for a quantized, non-negative amount: 12 decimal places. polars' Decimal
    (38, 12) writes exactly that text, in one cast, ~40 % cheaper than the integer and fraction digits cast and
    sliced separately (inproc14; the same text on 4,000,000 random amounts over [0, 2**63);
    tests/streams/test_columnar_speed.py keeps the edges and 30,000 of them). The Decimal is pico times 10**-12 at
    scale 12: a product's scale is the sum of its factors' (0 + 12), so its 128-bit value is pico itself, exact,
    with no division (inproc28: until then pico * 1.000000000000 / 10**12, whose i128 division per value made 8
    money columns of a 25,000-row chunk cost ~10 ms against ~7). Amounts are never negative (counts, prices,
    multipliers and request fees are validated non-negative)."""
    return (pico.cast(pl.Decimal(38, 0)) * pl.lit(_PICO, dtype=pl.Decimal(38, 12))).cast(pl.String)


_PICO = Decimal("0.000000000001")  # one pico-dollar in dollars, scale 12


def _line_texts(priced: pl.DataFrame) -> list[pl.Expr]:
    """The breakdown's line texts (`_money_text`, named by LINE_PARTS): a line null in every row of the batch (no
    cache writes, no reasoning, no request fee) is a null column, not a computation that ends null."""
    return [_line_text(part, _nulls(priced, f"line_{part}") == ALL) for part in LINE_PARTS]


@cache  # expressions are immutable: built once (a chunk built ~8 of them, ~0.1 ms each with the Decimal literal)
def _line_text(part: str, null: bool) -> pl.Expr:
    return pl.lit(None, dtype=pl.String).alias(part) if null else _money_text(pl.col(f"line_{part}")).alias(part)


@cache
def _cost_text() -> pl.Expr:
    """The event's cost text: its lines' sum as money text, "0" where it has no line."""
    return pl.when(pl.col("has_lines")).then(_money_text(pl.col("cost_pico"))).otherwise(pl.lit("0")).alias("cost")


@cache  # expressions are immutable: built once
def _attribution_exprs(tagged: bool = False, always: frozenset[str] = frozenset(), never: frozenset[str] = frozenset()
                       ) -> tuple[list[pl.Expr], pl.Expr]:
    """Pieces of the outer concat (ignore_nulls) writing the attribution as orjson writes `{**dimensions without None
    (model order), "tags": {...}}` (each present dimension with its comma: tags always close it; `tagged`: the
    tags object is the row's `_tags` text from frames.scan, `{}` where it has none), and the partition key text
    (tokenmeter.events.partition_key: the first non-empty of KEY_DIMENSIONS). Dimensions the batch has in every
    row (`always`) are flat pieces of the outer concat, those it has in none (`never`) are left out: a nested
    concat costs per row even where it is null."""
    field = pl.col("attribution").struct.field
    tags = [pl.lit('"tags":'), pl.col("_tags").fill_null("{}"), pl.lit("}")] if tagged else [pl.lit('"tags":{}}')]
    pieces = [pl.lit("{")]
    for dim in ATTRIBUTION_DIMENSIONS:
        if dim in always:
            pieces += [pl.lit(f'"{dim}":"'), field(dim), pl.lit('",')]
        elif dim not in never:
            pieces.append(pl.concat_str(pl.lit(f'"{dim}":"'), field(dim), pl.lit('",')))
    pieces += tags
    return pieces, _scope(field)


def _scope(field) -> pl.Expr:  # noqa: ANN001 - pl.col("attribution").struct.field
    """The partition key text: `dim:value` of the first non-empty of KEY_DIMENSIONS, else `unattributed`. The
    prefix (a literal) and the value (the row's own string) are picked by one when-chain each and joined once: a
    coalesce of one `concat_str` per dimension built every dimension's text for every row (polars evaluates each
    branch whole), 1.9 against 1.0 ms a 25,000-row chunk (inproc29; the same keys on every mix of null, empty and
    set dimensions, tests/streams/test_columnar_frames.py)."""
    nonempty = [(dim, field(dim).str.len_bytes() > 0) for dim in KEY_DIMENSIONS]
    prefix = value = pl  # pl.when, then the chain's own .when
    for dim, present in nonempty:
        prefix, value = prefix.when(present).then(pl.lit(f"{dim}:")), value.when(present).then(field(dim))
    return pl.coalesce(pl.concat_str(prefix, value), pl.lit("unattributed"))


def _dimensions_present(frame: pl.DataFrame) -> tuple[frozenset[str], frozenset[str]]:
    """(the attribution dimensions present in every row of `frame`, those present in none)."""
    nulls = frame.select(pl.col("attribution").struct.field(dim).null_count() for dim in ATTRIBUTION_DIMENSIONS).row(0)
    return (frozenset(d for d, n in zip(ATTRIBUTION_DIMENSIONS, nulls) if n == 0),
            frozenset(d for d, n in zip(ATTRIBUTION_DIMENSIONS, nulls) if n == frame.height))


def _canonical_ts(ts: pl.Expr) -> pl.Expr:
    """validate.py's canonical test (pydantic writes the text back unchanged) for text PARSEABLE_TS matched, by
    length instead of a second regex: Z with no or 6 fraction digits (20 or 27 bytes), an offset likewise (25 or 32),
    not .000000, not a zero offset."""
    length = ts.str.len_bytes()
    zulu = ts.str.ends_with("Z")
    return all_of((zulu & length.is_in([20, 27])) | (~zulu & length.is_in([25, 32])),
                  ~ts.str.contains(".000000", literal=True), ~ts.str.ends_with("+00:00"),
                  ~ts.str.ends_with("-00:00")).fill_null(False)


@cache  # expressions are immutable: built once
def _ts_text() -> pl.Expr:
    """pydantic's text of a PARSEABLE_TS timestamp, in the query that checks the rows (inproc17: it was three more
    queries per batch): the text itself where `_canonical_ts` holds, else the common rewrite done by a slice (a zero
    offset, +00:00 or -00:00, after no or 6 fraction digits, not .000000, becomes Z: Python's isoformat() writes
    +00:00); null where neither applies (then validate._pydantic_column writes the batch's text)."""
    ts = pl.col("ts")
    length = ts.str.len_bytes()
    zero_offset = ts.str.ends_with("+00:00") | ts.str.ends_with("-00:00")
    simple = zero_offset & length.is_in([25, 32]) & ~ts.str.contains(".000000", literal=True)
    return (pl.when(_canonical_ts(ts)).then(ts)
            .when(simple.fill_null(False)).then(pl.concat_str(ts.str.head(-6), pl.lit("Z"))))


def _ref_json(table: PriceTable) -> list[bytes]:
    found = getattr(table, "ref_json", None)
    if found is None or len(found) != len(table.refs):
        found = table.ref_json = [orjson.dumps(ref) for ref in table.refs]
    return found


def write_frame(frame: pl.DataFrame, base: pl.Series, table: PriceTable, now: datetime, priced_at: str,
                write_text: bool = True, sent: frozenset[tuple[str, ...]] | None = None) -> Written:
    """`frame`: `frames.scan`'s rows; `base`: per record index, the item index of its first item; `write_text`:
    whether the JSON text is written now (a JSON worker's; else when first read: `Written.texts`); `sent`:
    `Scanned.sent` (the fields read, the others null in every row; None: read with every field)."""
    ts = pl.col("ts")
    arrow = epoch_us(frame.get_column("ts"))  # chrono's values, ~12x cheaper; None: chrono parses (tokenmeter/iso_times.py)
    epoch = (pl.lit(arrow) if arrow is not None
             else ts.str.to_datetime(TS_FORMAT, time_unit="us", time_zone="UTC", strict=False).dt.epoch("us"))
    usage = pl.col("usage").struct
    tagged = "_tags" in frame.columns
    scope = _attribution_exprs(tagged)[1]
    # every text of one of the two shapes collectors write: checked and rewritten in numpy (uniform_ts.py), where
    # the regex and the text's expressions were ~0.3 us per event; else polars' expressions, as before
    uniform = uniform_ts(frame.get_column("ts")) if arrow is not None else None
    frame = frame.with_columns(ts_us=epoch).with_columns(  # parsed once (one with_columns evaluated it twice)
        _item=pl.lit(base).gather(pl.col("_rec")) + pl.col("_pos"),
        _good=all_of(row_checks(sent), *([pl.col("_tags_ok")] if tagged else []),
                     *([pl.col("_no_tools")] if "_no_tools" in frame.columns else []),  # frames.scan: tool fees
                     *([ts.str.contains(PARSEABLE_TS).fill_null(False)] if uniform is None else []),
                     pl.col("ts_us").is_between(EARLIEST_TS_US, _latest_ts_us(now)).fill_null(False)),
        _ts_text=_ts_text() if uniform is None else pl.lit(uniform),
    )
    # the rows not good: their items from their one column (filtering the whole frame for them cost ~2 ms of a
    # 25,000-row chunk even with no such row; inproc26). The good rows are filtered as before even when all are
    # good: without that query (`good = frame`), or with an eager filter by the Series, the chunk cost ~6 % more
    # (measured, not explained; the frame is ~54 chunks, one per message read)
    checked = frame.get_column("_good")
    good = frame.filter(pl.col("_good"))
    rest = [] if checked.all() else frame.get_column("_item").filter(~checked).to_list()
    if good.height == 0:
        return Written.nothing(rest)
    ts_text = good.get_column("_ts_text")
    if ts_text.null_count():  # a timestamp pydantic rewrites otherwise (a fraction padded or dropped, ...)
        ts_text = _pydantic_column(good.get_column("ts"), good.select(_canonical_ts(pl.col("ts"))).to_series())
    # usage counts the traffic does not send are null in every row of a frame read with the fields sent: 0 here
    # without reading them, and the token parts made of them alone are 0 (price_frame computes no line for them)
    absent = frozenset(name for name in USAGE_PARTS if sent is not None and ("usage", name) not in sent)
    parts = {name: pl.lit(0, dtype=pl.Int64) if name in absent else usage.field(name).fill_null(0)
             for name in USAGE_PARTS}
    inputs = good.select(
        "_item", "provider", "model", "source", "event_id", "ts_us", "usage_assumption", "latency_ms", "ttft_ms",
        "service_tier",
        ts=ts_text, operation=pl.col("operation").fill_null("chat"), status=pl.col("status").fill_null("ok"),
        batch=pl.col("batch").fill_null(False), org=pl.col("attribution").struct.field("org"),
        status_ok=pl.col("status").fill_null("ok") == "ok", attribution=pl.col("attribution"),
        **({"_tags": pl.col("_tags")} if tagged else {}),
        key=scope.cast(pl.Binary), has_tools=pl.lit(False),
        **parts,
        t_input=parts["input_tokens"] - parts["cached_input_tokens"] - parts["cache_write_tokens"],
        t_cached_input=parts["cached_input_tokens"],
        t_cache_write_5m=parts["cache_write_tokens"] - parts["cache_write_1h_tokens"],
        t_cache_write_1h=parts["cache_write_1h_tokens"],
        t_output=parts["output_tokens"] - parts["reasoning_tokens"],
        t_reasoning=parts["reasoning_tokens"],
        **({"has_correlation": pl.col("correlation").is_not_null(),
            **{f"correlation_{name}": pl.col("correlation").struct.field(name) for name in CORRELATION_FIELDS}}
           if "correlation" in SCHEMA and good.get_column("correlation").null_count() < good.height else {}),
    )
    priced = price_frame(table, inputs, frozenset(part for part, made_of in TOKEN_SOURCES.items() if made_of <= absent))
    no_entry = (pl.col("outcome") == UNPRICED) & (pl.col("entry_id") < 0)
    # the unpriced rows' reasons below are looked up per distinct pair or version; most batches have no unpriced
    # row, and then their six queries (~0.5 ms a batch) are not run, nor the filter (a Series comparison asks)
    unpriced = (priced.filter(pl.col("outcome") == UNPRICED) if (priced.get_column("outcome") == UNPRICED).any()
                else priced.clear())
    pairs = unpriced.filter(pl.col("entry_id") < 0).select("provider", "model").unique() if unpriced.height else None
    reasons = {(p, m): orjson.dumps(unpriced_reason(table, p, m, -1, None, "", False, "", None)[0]).decode()
               for p, m in (pairs.iter_rows() if pairs is not None else ())}
    reason_json = (pl.when(no_entry).then(pl.concat_str("provider", "model", separator="\x1f"))
                   .replace_strict([f"{p}\x1f{m}" for p, m in reasons], list(reasons.values()), default=None,
                                   return_dtype=pl.String) if reasons else pl.lit(None, dtype=pl.String))
    # Unpriced by the catalog entry's version (no price for the service tier or input length): the book's reason
    # and PriceRef per (entry, version, tier, input tier, service tier), a handful per batch. A row with no version
    # in force (before the first price: its reason quotes its own ts) is left to the dict path.
    by_version = (pl.col("outcome") == UNPRICED) & (pl.col("entry_id") >= 0) & pl.col("vid").is_not_null()
    combo = pl.concat_str(pl.col("entry_id"), pl.col("vid"), "tier", pl.col("long"),
                          pl.col("service_tier").fill_null("\x00"), separator="\x1f")
    combos = (unpriced.filter(by_version).select("entry_id", "vid", "tier", "long", "service_tier", key=combo).unique()
              if unpriced.height else None)
    version_reasons, version_refs, keys = [], [], []
    for entry_id, vid, tier, input_tier, service_tier, key in (combos.iter_rows() if combos is not None else ()):
        reason, ref = unpriced_reason(table, "", "", entry_id, vid, tier, input_tier, "", service_tier)
        keys.append(key)
        version_reasons.append(orjson.dumps(reason).decode())
        version_refs.append(None if ref is None else orjson.dumps(ref).decode())
    unpriced_ref = pl.lit(None, dtype=pl.String)
    if keys:
        reason_json = pl.when(by_version).then(combo.replace_strict(keys, version_reasons, default=None,
                                                                    return_dtype=pl.String)).otherwise(reason_json)
        unpriced_ref = pl.when(by_version).then(combo.replace_strict(keys, version_refs, default=None,
                                                                     return_dtype=pl.String))
    # strings need no escaping here: a certified message has no backslash, hence no `"`, and no control character.
    # `_fast` in the same query as the texts, from the reason's expression (one query a chunk fewer, inproc32)
    written_outcome = (pl.col("outcome") == PRICED) | (reason_json.is_not_null() & (pl.col("outcome") == UNPRICED))
    text_frame = priced.with_columns(
        _cost_text(), *_line_texts(priced),
        reason_json.alias("reason_json"), unpriced_ref.alias("unpriced_ref"), _unpriced=pl.col("outcome") == UNPRICED,
        _fast=written_outcome & _float_ok("latency_ms") & _float_ok("ttft_ms"),
    )
    written = text_frame.filter(pl.col("_fast"))
    fast_rows = text_frame.get_column("_fast")  # the others' items from their column, as for `_good` above
    rest += [] if fast_rows.all() else text_frame.get_column("_item").filter(~fast_rows).to_list()
    ref_json = _ref_json(table)
    text = None
    if write_text:  # a JSON worker sends the text: its bytes are the size cut's measure
        text = _texts(written, ref_json, priced_at)
        size = text.str.len_bytes().cast(pl.Int64)
        too_large = _over(written, size)
    else:  # an Arrow worker sends none: a bound of its bytes decides, the text only of rows the bound cannot clear
        size = text_bound(written, list(map(len, ref_json)), priced_at)
        too_large = _over(written, size)
        if too_large is not None:
            too_large = too_large.filter(_texts(too_large, ref_json, priced_at).str.len_bytes() > MAX_PRICED_EVENT_BYTES)
    if too_large is not None and too_large.height:
        rest += too_large.get_column("_item").to_list()
        keep = ~written.get_column("_item").is_in(too_large.get_column("_item"))
        written, size = written.filter(keep), size.filter(keep)
        text = text.filter(keep) if text is not None else None
    always, optional = ARROW_COLUMNS
    return Written(written.select("_item", "key", _unpriced="_unpriced",
                                  _assumed=pl.col("usage_assumption").is_not_null(), _size_bound=size,
                                  *(pl.col(name) for name in (*always, *(c for c in optional if c in written.columns)))),
                   rest, table.refs, priced_at, ref_json, text)


def _over(rows: pl.DataFrame, size: pl.Series) -> pl.DataFrame | None:
    """The rows whose `size` is over MAX_PRICED_EVENT_BYTES, None when none is (asked of the Series: no query)."""
    over = size > MAX_PRICED_EVENT_BYTES
    return rows.filter(over) if over.any() else None


def _texts(rows: pl.DataFrame, ref_json: list[bytes], priced_at: str) -> pl.Series:
    """The priced JSON text (String) of written rows (`encode_priced` with the attribution written from the
    struct, its dimensions present in every row or in none left flat)."""
    pieces = _attribution_exprs("_tags" in rows.columns, *_dimensions_present(rows))[0]
    return encode_priced(rows, ref_json, priced_at, pieces)


__all__ = ["Written", "write_frame"]
