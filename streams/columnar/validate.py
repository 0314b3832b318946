"""Validate and normalise event items as columns, without pydantic.

The columnar path takes only rows it can prove `UsageEvent.model_validate` accepts and whose normalised form
(defaults filled, `exclude_none`, the timestamp as pydantic writes it) it reproduces exactly. Every other row
(wrong type, unknown field, bad or out-of-range timestamp, token counts over MAX_TOKENS, parts exceeding
totals, text to count ...) goes to the
per-row fallback, which is today's code: its dead-letter reason is pydantic's own text, byte for byte.

Conservative on purpose: a row taken here that pydantic would reject or normalise differently breaks
equivalence, while a row sent to the fallback only costs time. The equivalence test holds both paths together.
"""

from __future__ import annotations

import math
import re
from decimal import ROUND_HALF_EVEN, Decimal
from datetime import datetime, timedelta, timezone
from dataclasses import dataclass
from itertools import repeat
from operator import add, gt, itemgetter
from typing import Any

import orjson
import polars as pl

from tokenmeter.events import (ATTRIBUTION_DIMENSIONS, EARLIEST_EVENT_TS, MAX_ATTRIBUTION_CHARS, MAX_EVENT_FUTURE,
                               MAX_MODEL_CHARS, MAX_NAME_CHARS,
                               MAX_TOKENS, MAX_TOOL_REQUESTS, TOOL_REQUEST_KINDS, USAGE_PARTS, Correlation,
                               UsageEvent, tags_problem)

TOP_KEYS = frozenset(UsageEvent.model_fields)
# A provider-reported cost taken here: plain decimal text below MAX_REPORTED_COST_USD (10^6) with at most 12
# decimals and no leading zeros, which Decimal reads exactly and the field validator's quantize only pads. Other
# values (JSON numbers, exponents, more decimals, signs, spaces) take the per-row path.
REPORTED_COST = re.compile(r"(0|[1-9]\d{0,5})(\.\d{1,12})?")
_PICO = Decimal("1e-12")
ATTRIBUTION_KEYS = frozenset((*ATTRIBUTION_DIMENSIONS, "tags"))
USAGE_KEYS = frozenset((*USAGE_PARTS, "tool_requests"))
TOOL_KINDS = frozenset(TOOL_REQUEST_KINDS)


def _string_bounds() -> tuple[tuple[str, int, int], ...] | None:
    """Correlation's ids in model order with their length bounds, read from the model so a change of the contract
    changes them here; None (every row with a correlation takes the per-row path) if one is not an optional str."""
    bounds = []
    for name, info in Correlation.model_fields.items():
        if info.annotation != (str | None):
            return None
        low = max((getattr(m, "min_length", 0) or 0 for m in info.metadata), default=0)
        high = min((m.max_length for m in info.metadata if getattr(m, "max_length", None) is not None),
                   default=None)
        bounds.append((name, low, high if high is not None else 2**62))
    return tuple(bounds)


CORRELATION_IDS = _string_bounds()
CORRELATION_KEYS = frozenset(name for name, _, _ in CORRELATION_IDS or ())
MAX_EXACT_FLOAT_INT = 2**53
# The form pydantic writes back unchanged: seconds, 6 or no fraction digits (not .000000), Z or a non-zero
# offset < 24 h (pydantic writes +00:00 as Z), a
# four-digit year from 1000.
CANONICAL_TS = r"^[1-9]\d{3}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{6})?(Z|[+-]([01]\d|2[0-3]):[0-5]\d)$"
# Also taken, and rewritten the way pydantic writes them: 1-6 fraction digits, +00:00 / -00:00 offsets.
# seconds 00-59: chrono's parser takes a second 60 (as the next minute's first), pydantic refuses it (fast20)
PARSEABLE_TS = r"^[1-9]\d{3}-\d{2}-\d{2}T\d{2}:\d{2}:[0-5]\d(\.\d{1,6})?(Z|[+-]([01]\d|2[0-3]):[0-5]\d)$"
TS_FORMAT = "%Y-%m-%dT%H:%M:%S%.f%#z"
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_US = timedelta(microseconds=1)
# The accepted event times (tokenmeter.events.check_event_time): from EARLIEST_EVENT_TS on, and at most
# MAX_EVENT_FUTURE after the validator's clock. The validator reads the clock itself, at or after the batch's
# `now`, so a row no later than now + MAX_EVENT_FUTURE is valid there too; a later row takes the per-row path,
# whose reason (and clock) is today's.
EARLIEST_TS_US = (EARLIEST_EVENT_TS - _EPOCH) // _US


def _latest_ts_us(now: datetime) -> int:
    return (now + MAX_EVENT_FUTURE - _EPOCH) // _US


@dataclass
class Columns:
    """The rows taken by the columnar path: `rows` are their item indices; one list per field."""

    rows: list[int]
    event_id: list[str]
    ts: list[str]
    source: list[str]
    provider: list[str]
    model: list[str]
    operation: list[str]
    status: list[str]
    attribution: list[tuple]  # `_attribution`'s results: shared dims dict (without None, model order), ...
    attribution_json: list[str]  # the same, as orjson writes it
    scope: list[str]  # partition key text (tokenmeter.events.partition_key)
    usage: list[tuple]  # input, cached, cache write, 1h cache write, output, reasoning, tool requests (or None)
    latency_ms: list[float | None]
    ttft_ms: list[float | None]
    batch: list[bool]
    service_tier: list[str | None]
    usage_assumption: list[str | None]
    correlation: list[tuple | None]  # the ids in model order (None where absent), or None: no correlation
    reported_cost: list[Decimal | None]  # reported_cost_usd as the field validator leaves it (quantized to 1e-12)
    ts_us: pl.Series  # epoch microseconds, UTC


_keys_ok_cache: dict[tuple, bool] = {}


def _keys_ok(item: dict) -> bool:
    shape = tuple(item)
    ok = _keys_ok_cache.get(shape)
    if ok is None:
        if len(_keys_ok_cache) > 10_000:
            _keys_ok_cache.clear()
        ok = _keys_ok_cache[shape] = TOP_KEYS.issuperset(shape)
    return ok


def _name(value: Any) -> bool:
    return type(value) is str and len(value) > 0


def _optional_str(value: Any) -> bool:
    return value is None or type(value) is str


def _float_ok(value: Any) -> bool:
    kind = type(value)
    if kind is float:
        return value >= 0 and math.isfinite(value)
    if kind is int:
        return 0 <= value <= MAX_EXACT_FLOAT_INT
    return value is None


KEY_DIMENSIONS = ("team", "org", "project", "api_key", "user")  # tokenmeter.events.partition_key's order


def _normalise_attribution(value: dict) -> tuple[dict[str, Any], str] | None:
    """(the attribution as pydantic dumps it with exclude_none, tags excluded; the partition key's text), or None
    when the row must take the fallback."""
    if not ATTRIBUTION_KEYS.issuperset(value):
        return None
    out = {}
    for dim in ATTRIBUTION_DIMENSIONS:
        v = value.get(dim)
        if v is not None:
            if type(v) is not str or len(v) > MAX_ATTRIBUTION_CHARS:  # past its bound: the model words the letter
                return None
            out[dim] = v
    scope = next((f"{dim}:{out[dim]}" for dim in KEY_DIMENSIONS if out.get(dim)), "unattributed")
    return out, scope


_attribution_cache: dict[tuple, tuple[dict[str, Any], str, str] | None] = {}


def _attribution(value: Any) -> tuple | None:
    """(normalised dimensions, partition key text, the attribution's JSON text[, tags]) or None for the fallback.
    Attributions repeat (one per team, user, key), so tag-less ones are cached by their items and shared: the
    dimensions dict is never changed (`attribution_of` builds an event's own attribution)."""
    if type(value) is not dict:
        return None
    tags = value.get("tags")
    if tags is None and "tags" not in value:
        try:
            shape = tuple(value.items())
            found = _attribution_cache.get(shape)
        except TypeError:  # an unhashable value (list, dict): not a valid dimension anyway
            return None
        if found is None:
            found = _normalise_attribution(value)
            if found is not None:
                found = (found[0], found[1], orjson.dumps({**found[0], "tags": {}}).decode())
            if len(_attribution_cache) > 50_000:
                _attribution_cache.clear()
            _attribution_cache[shape] = found
        return found
    if type(tags) is not dict:
        return None
    rest = value.copy()
    del rest["tags"]
    try:  # tagged attributions repeat too (one per team and environment): cached by dims and tags
        shape = (tuple(rest.items()), tuple(tags.items()))
        found = _attribution_cache.get(shape)
    except TypeError:  # an unhashable value: not a valid dimension or tag anyway
        return None
    if found is None and shape not in _attribution_cache:
        found = _tagged_attribution(value, tags)
        if len(_attribution_cache) > 50_000:
            _attribution_cache.clear()
        _attribution_cache[shape] = found
    return found


def _tagged_attribution(value: dict, tags: dict) -> tuple | None:
    for v in tags.values():
        if type(v) is not str:  # keys of a JSON object are always strings
            return None
    if tags_problem(tags) is not None:  # past the tags' bounds: the model words the letter
        return None
    found = _normalise_attribution(value)
    if found is None:
        return None
    tags = dict(tags)
    return found[0], found[1], orjson.dumps({**found[0], "tags": tags}).decode(), tags


def attribution_of(found: tuple) -> dict[str, Any]:
    """An event's own attribution dict (as pydantic dumps it) from `_attribution`'s result."""
    return {**found[0], "tags": dict(found[3]) if len(found) > 3 else {}}


_NO_ATTRIBUTION: dict = {}


def _pydantic_text(ts: str) -> str:
    """How pydantic writes back a parseable but non-canonical timestamp (e.g. `.5` -> `.500000`, +00:00 -> Z)."""
    return datetime.fromisoformat(ts).isoformat().replace("+00:00", "Z")


def _pydantic_column(ts: pl.Series, canonical: pl.Series) -> pl.Series:
    """`_pydantic_text` of each parseable timestamp, as one polars expression: the fraction padded to 6 digits
    and dropped when it is zero, a zero offset (+00:00 or -00:00) written Z; canonical rows (and rows not taken)
    keep their text. Only for rows matching PARSEABLE_TS (whose fixed 19-character head pydantic keeps)."""
    fraction = ts.str.extract(r"^.{19}\.(\d{1,6})", 1).str.pad_end(6, "0")
    offset = ts.str.extract(r"(Z|[+-]\d\d:\d\d)$", 1)
    rewritten = pl.concat_str(
        ts.str.slice(0, 19),
        pl.select(pl.when(fraction.is_null() | (fraction == "000000")).then(pl.lit(""))
                  .otherwise(pl.lit(".") + fraction)).to_series(),
        pl.select(pl.when((offset == "+00:00") | (offset == "-00:00")).then(pl.lit("Z"))
                  .otherwise(offset)).to_series())
    return pl.select(pl.when(canonical).then(ts).otherwise(rewritten)).to_series()


def _tool_requests(value: Any) -> dict[str, int] | None | bool:
    """Tool request counts as the Usage validator leaves them (zero counts dropped; none left: None), or False
    for the fallback (unknown kind, not an int, out of range)."""
    if value is None:
        return None
    if type(value) is not dict:
        return False
    for kind, count in value.items():
        if kind not in TOOL_KINDS or type(count) is not int or not 0 <= count <= MAX_TOOL_REQUESTS:
            return False
    return {kind: count for kind, count in value.items() if count} or None


def _usage(value: Any) -> tuple | None:
    """(the six parts, then the tool requests or None), or None for the fallback."""
    if type(value) is not dict or not USAGE_KEYS.issuperset(value):
        return None
    get = value.get
    tools = _tool_requests(get("tool_requests"))
    if tools is False:
        return None
    parts = (get("input_tokens", 0), get("cached_input_tokens", 0), get("cache_write_tokens", 0),
             get("cache_write_1h_tokens", 0), get("output_tokens", 0), get("reasoning_tokens", 0))
    for v in parts:
        if type(v) is not int or not 0 <= v <= MAX_TOKENS:
            return None
    inp, cached, write, write_1h, out, reasoning = parts
    if cached + write > inp or write_1h > write or reasoning > out:
        return None  # pydantic's model validator words this error; the fallback gives its exact text
    return (*parts, tools)


def _reported_cost(value: Any) -> Decimal | None | bool:
    """reported_cost_usd as UsageEvent leaves it, None when absent or null, False for the per-row path."""
    if value is None:
        return None
    if type(value) is not str or REPORTED_COST.fullmatch(value) is None:
        return False
    return Decimal(value).quantize(_PICO, ROUND_HALF_EVEN)


def _correlation(value: Any) -> tuple | None | bool:
    """The ids of one correlation in model order (None where absent or null), None for no correlation, or False
    for the fallback (not an object, an unknown key, an id not a string or of a length out of bounds)."""
    if value is None:
        return None
    if type(value) is not dict or CORRELATION_IDS is None or not CORRELATION_KEYS.issuperset(value):
        return False
    ids = []
    for name, low, high in CORRELATION_IDS:
        v = value.get(name)
        if v is not None and (type(v) is not str or not low <= len(v) <= high):
            return False
        ids.append(v)
    return tuple(ids)


def _correlation_column(column: list) -> list[tuple | None | bool]:
    """`_correlation` of every row; rows of one key shape are checked per column in C (collectors write one or two
    shapes: OTel's response, trace and span ids, LiteLLM's response id)."""
    n = len(column)
    if column.count(None) == n:
        return [None] * n
    if CORRELATION_IDS is None:
        return [None if v is None else False for v in column]
    out: list[tuple | None | bool] = [None] * n
    shapes: dict[tuple, list[int]] = {}
    for j, value in enumerate(column):
        if value is not None:
            if type(value) is dict:
                shapes.setdefault(tuple(value), []).append(j)
            else:
                out[j] = False
    for shape, rows in shapes.items():
        ids = _correlation_ids(shape, [column[j] for j in rows])
        if ids is None:
            for j in rows:
                out[j] = _correlation(column[j])
        else:
            for j, row_ids in zip(rows, ids):
                out[j] = row_ids
    return out


def _correlation_ids(shape: tuple, dicts: list[dict]) -> Any:
    """The id tuples (model order) of correlations that all have the keys `shape`, when every one is valid; else
    None (then each row is checked on its own)."""
    if not shape:
        return repeat((None,) * len(CORRELATION_IDS), len(dicts))
    if not CORRELATION_KEYS.issuperset(shape):
        return None
    got = dict(zip(shape, zip(*map(itemgetter(*shape), dicts)))) if len(shape) > 1 else {
        shape[0]: tuple(map(itemgetter(shape[0]), dicts))}
    for name, low, high in CORRELATION_IDS:
        values = got.get(name)
        if values is not None and (_types(values) != {str} or min(map(len, values)) < low
                                   or max(map(len, values)) > high):
            return None
    absent = (None,) * len(dicts)  # a tuple, not an iterator: several ids may be absent
    return zip(*(got.get(name, absent) for name, _, _ in CORRELATION_IDS))


FIELDS = ("event_id", "ts", "source", "provider", "model", "operation", "status", "attribution", "usage",
          "latency_ms", "ttft_ms", "batch", "service_tier", "usage_assumption", "content", "correlation",
          "reported_cost_usd")
_NONE = type(None)


def _by_key(dicts: list[dict], shape: tuple) -> dict[str, tuple]:
    """One tuple per key of `shape` over dicts that all have those keys, read in C (itemgetter, zip)."""
    if len(shape) > 1:
        return dict(zip(shape, zip(*map(itemgetter(*shape), dicts))))
    if shape:
        return {shape[0]: tuple(map(itemgetter(shape[0]), dicts))}
    return {}


def _columns_of(dicts: list[dict], shape: tuple) -> dict[str, Any]:
    """One tuple per field of dicts that all have the keys `shape` (in that order), read in C (itemgetter, zip);
    a field the shape lacks gets its default."""
    n = len(dicts)
    got = _by_key(dicts, shape)
    defaults = {"operation": "chat", "status": "ok", "attribution": _NO_ATTRIBUTION, "batch": False}
    return {name: got[name] if name in got else (defaults.get(name),) * n for name in FIELDS}


def _types(column: tuple) -> set:
    return set(map(type, column))


def _scalars_ok(col: dict[str, Any], n: int) -> bool:
    """Whether every row of a shape group passes the scalar checks, decided per column in C; when not, the
    caller checks row by row."""
    event_id = col["event_id"]
    return (_types(event_id) == {str} and min(map(len, event_id)) > 0 and max(map(len, event_id)) <= 512
            and _types(col["source"]) == {str} and "" not in col["source"]
            and _types(col["provider"]) == {str} and "" not in col["provider"]
            and _types(col["model"]) == {str} and "" not in col["model"]
            and _types(col["operation"]) == {str}
            # the names' bounds (tokenmeter.events.TEXT_BOUNDS, trust34): past one, the model words the letter
            and max(map(len, col["source"])) <= MAX_NAME_CHARS and max(map(len, col["provider"])) <= MAX_NAME_CHARS
            and max(map(len, col["model"])) <= MAX_MODEL_CHARS and max(map(len, col["operation"])) <= MAX_NAME_CHARS
            and _types(col["status"]) == {str} and set(col["status"]) <= {"ok", "error"}
            and col["content"].count(None) == n
            and _types(col["batch"]) == {bool}
            and _types(col["service_tier"]) <= {str, _NONE}
            and max(map(len, filter(None, col["service_tier"])), default=0) <= MAX_NAME_CHARS
            and (_types(col["latency_ms"]) == {_NONE} or all(map(_float_ok, col["latency_ms"])))
            and (_types(col["ttft_ms"]) == {_NONE} or all(map(_float_ok, col["ttft_ms"])))
            and (_types(col["usage_assumption"]) == {_NONE}
                 or all(ua is None or (type(ua) is str and 0 < len(ua) <= 200) for ua in col["usage_assumption"])))


def _scalar_ok(e, s, p, m, op, st, c, lat, tt, b, t, ua) -> bool:
    return (type(e) is str and 0 < len(e) <= 512 and type(s) is str and 0 < len(s) <= MAX_NAME_CHARS
            and type(p) is str and 0 < len(p) <= MAX_NAME_CHARS and type(m) is str and 0 < len(m) <= MAX_MODEL_CHARS
            and type(op) is str and len(op) <= MAX_NAME_CHARS and (st == "ok" or st == "error")
            and type(st) is str and c is None and _float_ok(lat) and _float_ok(tt) and type(b) is bool
            and _optional_str(t) and (t is None or len(t) <= MAX_NAME_CHARS)
            and (ua is None or (type(ua) is str and 0 < len(ua) <= 200)))


def _usage_column(column: tuple) -> list[tuple | None]:
    """`_usage` of every row; rows of one usage shape without tool requests are checked per column in C."""
    out: list[tuple | None] = [None] * len(column)
    shapes: dict[tuple, list[int]] = {}
    for j, u in enumerate(column):
        if type(u) is dict:
            shapes.setdefault(tuple(u), []).append(j)
    for shape, rows in shapes.items():
        if "tool_requests" in shape or not USAGE_KEYS.issuperset(shape):
            for j in rows:
                out[j] = _usage(column[j])
            continue
        cols = _usage_parts(shape, [column[j] for j in rows])
        if cols is None:
            for j in rows:
                out[j] = _usage(column[j])
            continue
        for j, parts in zip(rows, zip(*cols, repeat(None, len(rows)))):
            out[j] = parts
    return out


def _usage_parts(shape: tuple, dicts: list[dict]) -> list[tuple] | None:
    """The six parts as columns when every row is valid (ints within range, parts within totals), else None."""
    n = len(dicts)
    got = _by_key(dicts, shape)
    zeros = (0,) * n
    cols = [got.get(name, zeros) for name in USAGE_PARTS]
    for name in shape:
        values = got[name]
        if _types(values) != {int} or min(values) < 0 or max(values) > MAX_TOKENS:
            return None
    inp, cached, write, write_1h, out, reasoning = cols
    if (any(map(gt, map(add, cached, write), inp)) or any(map(gt, write_1h, write))
            or any(map(gt, reasoning, out))):
        return None
    return cols


def split(items: list[Any], now: datetime) -> tuple[Columns, list[int]]:
    """(columns of the rows the columnar path takes, item indices of the rows for the per-row fallback).
    Rows are grouped by their key order (collectors write one shape), and each group is read column by column."""
    groups: dict[tuple, list[int]] = {}
    for i, item in enumerate(items):
        if type(item) is dict:
            groups.setdefault(tuple(item), []).append(i)
    candidates: list[int] = []
    merged: dict[str, list] = {name: [] for name in FIELDS}
    scalar_ok: list[bool] = []
    for shape, rows in groups.items():
        if not TOP_KEYS.issuperset(shape):
            continue
        dicts = [items[i] for i in rows]
        col = _columns_of(dicts, shape)
        candidates.extend(rows)
        for name in FIELDS:
            merged[name].extend(col[name])
        if _scalars_ok(col, len(rows)):
            scalar_ok.extend(repeat(True, len(rows)))
        else:
            scalar_ok.extend(map(_scalar_ok, col["event_id"], col["source"], col["provider"], col["model"],
                                 col["operation"], col["status"], col["content"], col["latency_ms"], col["ttft_ms"],
                                 col["batch"], col["service_tier"], col["usage_assumption"]))
    event_id, ts, source, provider, model = (merged[n] for n in ("event_id", "ts", "source", "provider", "model"))
    operation, status, latency, ttft = merged["operation"], merged["status"], merged["latency_ms"], merged["ttft_ms"]
    batch, tier, assumption = merged["batch"], merged["service_tier"], merged["usage_assumption"]
    attribution = list(map(_attribution, merged["attribution"]))
    usage = _usage_column(merged["usage"])
    correlation = _correlation_column(merged["correlation"])
    reported = merged["reported_cost_usd"]
    reported = ([None] * len(reported) if reported.count(None) == len(reported)
                else list(map(_reported_cost, reported)))

    ts_ok = [type(v) is str for v in ts]
    ts_series = pl.Series("ts", [v if ok else None for v, ok in zip(ts, ts_ok)], dtype=pl.String)
    canonical = (ts_series.str.contains(CANONICAL_TS) & ~ts_series.str.contains(r"\.000000")
                 & ~ts_series.str.ends_with("+00:00") & ~ts_series.str.ends_with("-00:00")).fill_null(False)
    parseable = ts_series.str.contains(PARSEABLE_TS).fill_null(False)
    parsed = ts_series.str.to_datetime(TS_FORMAT, time_unit="us", time_zone="UTC", strict=False)
    epoch = parsed.dt.epoch("us")
    in_range = (epoch >= EARLIEST_TS_US) & (epoch <= _latest_ts_us(now))
    ts_good = (parseable & epoch.is_not_null() & in_range).fill_null(False).to_list()
    ts_canonical = canonical.to_list()

    good = [ts_g and ok and a is not None and u is not None and k is not False and r is not False
            for ts_g, ok, a, u, k, r in zip(ts_good, scalar_ok, attribution, usage, correlation, reported)]
    keep = [j for j, g in enumerate(good) if g]
    fallback_set = set(range(len(items))).difference(candidates[j] for j in keep)
    take = pl.Series(keep, dtype=pl.UInt32)

    everything = len(keep) == len(candidates)  # the common case: no copies

    def pick(column: list) -> list:
        return column if everything else [column[j] for j in keep]

    def as_float(column: list) -> list:
        return [None if v is None else float(v) for v in pick(column)]

    if all(ts_canonical):
        ts_text = pick(ts)
    else:  # rewritten as pydantic writes them, as a column (a per-row datetime round trip cost ~3.5 us each)
        ts_text = _pydantic_column(ts_series, canonical).to_list()
        ts_text = ts_text if everything else [ts_text[j] for j in keep]
    columns = Columns(
        rows=[candidates[j] for j in keep], event_id=pick(event_id),
        ts=ts_text, source=pick(source),
        provider=pick(provider), model=pick(model), operation=pick(operation), status=pick(status),
        attribution=[attribution[j] for j in keep], attribution_json=[attribution[j][2] for j in keep],
        scope=[attribution[j][1] for j in keep], usage=pick(usage), latency_ms=as_float(latency), ttft_ms=as_float(ttft),
        batch=pick(batch), service_tier=pick(tier), usage_assumption=pick(assumption),
        correlation=pick(correlation), reported_cost=pick(reported), ts_us=epoch if everything else epoch.gather(take),
    )
    return columns, sorted(fallback_set)


__all__ = ["Columns", "USAGE_PARTS", "attribution_of", "split"]
