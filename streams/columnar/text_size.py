"""An upper bound of each written row's priced JSON text in bytes, from the frame path's columns, without writing the
text (issue 14, arrow14).

The size cuts need the JSON's length: a priced event over MAX_PRICED_EVENT_BYTES is a dead letter, and a JSON
message reaching MAX_MESSAGE_BYTES is cut by size (the Arrow messages are cut where the JSON is). A worker writing
Arrow sends no JSON, so it decides both from this bound instead, and writes the text only for the rows (or the
result) where the bound is not enough to decide (frame_price.write_frame, arrow_encode.arrow_messages).

The bound follows `encode.encode_priced` piece by piece: every key and every string value counts its exact bytes
(the frame path writes strings that need no escaping, so a value's JSON is its bytes and two quotes), an absent
optional field counts nothing; only numbers count their widest text (a token count at most MAX_TOKENS: 13 digits, a
latency FLOAT_TEXT_MAX) and each comma list one comma more than it may have. So the bound is at most ~120 bytes over
the text (tests/streams/test_text_size.py checks bound >= text on the corpus, widest values included).
"""

from __future__ import annotations

from functools import lru_cache

import polars as pl

from tokenmeter.events import ATTRIBUTION_DIMENSIONS, MAX_TOKENS

from .encode import CORRELATION_FIELDS, LINE_PARTS, USAGE_FIELDS

INT_TEXT_MAX = len(str(MAX_TOKENS))  # a usage count the frame path writes is 0..MAX_TOKENS
# encode._float_text: an integral float below 1e15 is at most 15 digits + ".0"; a plain one in [1e-4, 1e15) at most 17
# significant digits, a point and "0.000" before them (22); 24 leaves room.
FLOAT_TEXT_MAX = 24


def _keys(*names: str) -> int:
    return sum(map(len, names))


def text_bound(frame: pl.DataFrame, ref_bytes: list[int], priced_at: str) -> pl.Series:
    """Per row of `frame` (frame_price's written rows: ARROW_COLUMNS with `cost` and the line texts; or the dict-fed
    path's written rows, with `attribution_json`), an upper bound
    (Int64) of the bytes `encode_priced` writes for it; `ref_bytes`: the bytes of each catalog version's PriceRef
    JSON (frame_price._ref_json)."""
    # a column null in every row adds nothing to any row's sum (sum_horizontal skips nulls): its pieces are left
    # out, ~10 of ~45 for most batches (no latencies, tiers, assumptions, unpriced rows, 4 of 7 lines; inproc28)
    nulls = frame.null_count().row(0, named=True)
    absent = frozenset(name for name, count in nulls.items() if count == frame.height)
    pieces = _pieces(absent, "attribution_json" in frame.columns, "_tags" in frame.columns,
                     "has_correlation" in frame.columns, len(priced_at), tuple(ref_bytes))
    return frame.select(pl.sum_horizontal(pieces).cast(pl.Int64).alias("bound")).to_series()


@lru_cache(maxsize=64)  # expressions are immutable: built once per shape of batch (~0.5-1 ms of Python a chunk)
def _pieces(absent: frozenset[str], attribution_json: bool, tagged: bool, correlated: bool, priced_at_bytes: int,
            ref_bytes: tuple[int, ...]) -> list[pl.Expr]:
    """`text_bound`'s summands for a batch whose columns null in every row are `absent`, with or without the
    dict-fed path's `attribution_json`, the frame path's `_tags` and the correlation columns; `priced_at_bytes`:
    its priced_at text's length."""
    c = pl.col
    fixed = (_keys('{"', *(f'"{name}":"",' for name in ("event_id", "ts", "source", "provider", "model", "operation",
                                                          "status")), '"attribution":')
             + _keys(',"usage":{', *(f'"{name}":,' for name in USAGE_FIELDS), "}") + len(USAGE_FIELDS) * INT_TEXT_MAX
             + _keys(',"batch":false', ',"tokens_source":"provider","cost_usd":""', ',"cost_breakdown":{}',
                     ',"pricing_status":', ',"priced_at":""}') + priced_at_bytes)
    pieces = [pl.lit(fixed, dtype=pl.Int64),
              *(c(name).str.len_bytes() for name in ("event_id", "ts", "source", "provider", "model", "operation",
                                                     "status", "cost")),
              *_attribution_bytes(attribution_json, tagged),
              *(pl.when(c(name).is_not_null()).then(len(f',"{name}":') + FLOAT_TEXT_MAX)
                for name in ("latency_ms", "ttft_ms") if name not in absent),
              *(c(name).str.len_bytes() + len(f',"{name}":""') for name in ("service_tier", "usage_assumption")
                if name not in absent),
              *(c(part).str.len_bytes() + len(f'"{part}":"",') for part in LINE_PARTS if part not in absent),
              # priced: the version's PriceRef; unpriced: the reason and, where there is one, its PriceRef
              pl.when(c("reason_json").is_null()).then(
                  pl.lit(pl.Series(ref_bytes, dtype=pl.Int64)).gather(c("vid")) + len('"priced","price":')),
              *(c(name).str.len_bytes() + len(extra) for name, extra in (
                  ("reason_json", '"unpriced","unpriced_reason":'), ("unpriced_ref", ',"price":')) if name not in absent)]
    if correlated:
        pieces += [pl.when(c("has_correlation")).then(len(',"correlation":{}')),
                   *(c(f"correlation_{name}").str.len_bytes() + len(f'"{name}":"",') for name in CORRELATION_FIELDS)]
    return pieces


def _attribution_bytes(attribution_json: bool, tagged: bool) -> list[pl.Expr]:
    """The attribution object's bytes: exact where the rows hold it as JSON text (`attribution_json`: the dict-fed
    path's, pipeline._price_columns), else bounded from the frame path's struct and `_tags` text."""
    if attribution_json:
        return [pl.col("attribution_json").str.len_bytes()]
    field = pl.col("attribution").struct.field
    return [pl.lit(_keys("{", '"tags":', "}"), dtype=pl.Int64),  # the object around its dimensions and tags
            *(field(dim).str.len_bytes() + len(f'"{dim}":"",') for dim in ATTRIBUTION_DIMENSIONS),
            pl.col("_tags").str.len_bytes() if tagged else pl.lit(0, dtype=pl.Int64),
            pl.lit(2, dtype=pl.Int64)]  # "{}" where a row has no tags (a row with tags counts both)


__all__ = ["FLOAT_TEXT_MAX", "INT_TEXT_MAX", "text_bound"]
