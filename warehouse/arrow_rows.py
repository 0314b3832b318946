"""A batch of priced event dicts -> the `priced_events` Arrow table, column by column (issue 14, loader).

`fast_rows.fast_row` builds one dict per event (~10-20 µs) and `schema.rows_to_arrow` turns the dicts into Arrow
(~5 µs more). Here the same checks run per column (type sets, min/max, RE2 regexes and casts in Arrow's C++), and
the Arrow arrays are built straight from the columns: money goes from its decimal text to Decimal128 by Arrow's
string -> decimal cast (exact; the text is first proven to have at most 6 integer and 12 fractional digits), never
through a float or a Python Decimal.

Conservative like fast_row: a row is taken only when every check proves that `fast_row` would take it and build
the same row; every other row is left to the caller (`rows_to_table` returns its index), which runs
`schema.event_to_row` on it (fast_row, then pydantic for the dead letter's reason). Rows with a correlation
(cross-source dedup ids) are always left to the per-row path: their dedupe works on dict rows.
tests/warehouse/test_arrow_rows.py holds this and `rows_to_arrow(event_to_row(...))` equal on hostile batches.
"""

from __future__ import annotations

import gc
from datetime import datetime, timezone
from itertools import accumulate, chain, compress
from operator import itemgetter
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tokenmeter.events import EARLIEST_EVENT_TS, MAX_EVENT_FUTURE, MAX_TOKENS, MAX_TOOL_REQUESTS
from warehouse.fast_rows import (ATTRIBUTION_KEYS, PRICE_KEYS, PRICED_KEYS, TOOL_KINDS, USAGE_KEYS, USAGE_PARTS,
                                 MAX_EXACT_FLOAT_INT)
from warehouse.schema import (ARROW_SCHEMA, ATTRIBUTION_COLUMNS, COST_TYPE, event_to_row,
                              rows_to_arrow)

_UTC = timezone.utc
_EPOCH = datetime(1970, 1, 1, tzinfo=_UTC)
# RE2's \d is ASCII only (stricter than Python's); the seconds part is proven a real calendar time by a
# strptime/strftime round trip, the offset must be below 24 h with minutes below 60 (else fast_row decides).
_OFFSET = r"(?P<tz>Z|(?P<sign>[+-])(?P<oh>[01]\d|2[0-3]):(?P<om>[0-5]\d))"
_TS = r"^(?P<sec>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(?P<frac>\d{1,6}))?" + _OFFSET + "$"
_PRICED_AT = r"^(?P<sec>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(?P<frac>\d{1,6}))?" + _OFFSET + "?$"
_MONEY = r"^\d{1,6}(\.\d{1,12})?$"
_SIGNED_MONEY = r"^-?\d{1,6}(\.\d{1,12})?$"
_REPORTED_COST = r"^(0|[1-9]\d{0,5})(\.\d{1,12})?$"
_ABSENT = object()
_EMPTY: dict[str, Any] = {}  # shared, never changed: a missing map
_NO_PRICE = {"entry": ""}  # "price": null: every price column ""


def _all_types(column: list[Any], allowed: frozenset[type]) -> np.ndarray | None:
    """None when every value's exact type is allowed, else the per-row mask."""
    if set(map(type, column)) <= allowed:
        return None
    return np.fromiter((type(v) in allowed for v in column), bool, len(column))


def _and(ok: np.ndarray, mask: np.ndarray | None) -> None:
    if mask is not None:
        ok &= mask


def _strings(column: list[Any], ok: np.ndarray, *, nonempty: bool = False, max_len: int | None = None,
             optional: bool = False) -> list[Any]:
    """Values must be str (or None when optional), non-empty / at most max_len characters when asked. Returns the
    column with None in place of the values of other types (rows that fail), ready for `pa.array`."""
    allowed = frozenset((str, type(None))) if optional else frozenset((str,))
    mask = _all_types(column, allowed)
    if mask is not None:
        ok &= mask
        column = [v if type(v) is str else None for v in column]
    if nonempty or max_len is not None:
        if mask is None and not optional:
            lengths = np.fromiter(map(len, column), np.int64, len(column))
        else:
            lengths = np.fromiter((len(v) if v is not None else -1 for v in column), np.int64, len(column))
        if not optional:
            ok &= lengths >= 0
        if nonempty:
            ok &= (lengths != 0)
        if max_len is not None:
            ok &= lengths <= max_len
    return column


def _one_of(column: list[Any], values: frozenset[str], ok: np.ndarray) -> list[Any]:
    """Values must be one of these strings (exact type str); returns the column ready for `pa.array`."""
    column = _strings(column, ok)
    if not set(column) <= values:
        ok &= np.fromiter((v in values for v in column), bool, len(column))
    return column


def _text_array(column: list[Any], ok: np.ndarray) -> pa.Array:
    return pa.array([v if type(v) is str else None for v in column] if not ok.all() else column, pa.string())


def _matches(array: pa.Array, pattern: str) -> np.ndarray:
    return pc.fill_null(pc.match_substring_regex(array, pattern), False).to_numpy(zero_copy_only=False)


def _digits(parts: pa.Array, name: str, valid: np.ndarray) -> np.ndarray:
    """A numeric group of the matched times as int64 (0 where absent or not valid)."""
    text = pc.fill_null(pc.struct_field(parts, name), "")
    text = pc.if_else(pa.array(valid) if len(valid) else pa.array([], pa.bool_()), text, "")
    return pc.cast(pc.if_else(pc.equal(text, ""), "0", text), pa.int64()).to_numpy(zero_copy_only=False)


def _days_from_civil(year: np.ndarray, month: np.ndarray, day: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 of proleptic Gregorian dates (H. Hinnant's algorithm), vectorised."""
    year = year - (month <= 2)
    era = np.floor_divide(year, 400)
    year_of_era = year - era * 400
    day_of_year = (153 * (month + np.where(month > 2, -3, 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146097 + day_of_era - 719468


_MONTH_DAYS = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], np.int64)


def _epoch_us(array: pa.Array, pattern: str) -> tuple[np.ndarray, np.ndarray]:
    """(valid mask, µs since the epoch) of ISO times matching `pattern` that name a real calendar time (no
    offset: UTC); what `datetime.fromisoformat` accepts among the matching texts (seconds 0-59, real days).
    A column of few distinct texts (priced_at: one per worker batch) is parsed once per text."""
    distinct = pc.unique(array)
    if len(distinct) * 4 < len(array):
        valid, micros = _parse_times(distinct, pattern)
        positions = pc.fill_null(pc.index_in(array, value_set=distinct), 0).to_numpy(zero_copy_only=False)
        present = pc.is_valid(array).to_numpy(zero_copy_only=False)
        return valid[positions] & present, micros[positions]
    return _parse_times(array, pattern)


def _parse_times(array: pa.Array, pattern: str) -> tuple[np.ndarray, np.ndarray]:
    parts = pc.extract_regex(array, pattern)
    valid = pc.is_valid(parts).to_numpy(zero_copy_only=False)
    seconds_text = pc.if_else(pa.array(valid), pc.struct_field(parts, "sec"), "1970-01-01T00:00:00")

    def field(start: int, stop: int) -> np.ndarray:
        return pc.cast(pc.utf8_slice_codeunits(seconds_text, start, stop), pa.int64()).to_numpy(zero_copy_only=False)

    year, month, day, hour, minute, second = (field(0, 4), field(5, 7), field(8, 10), field(11, 13), field(14, 16),
                                              field(17, 19))
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    good_month = (month >= 1) & (month <= 12)
    month_days = _MONTH_DAYS[np.where(good_month, month, 1)] + ((month == 2) & leap)
    valid &= (year >= 1) & good_month & (day >= 1) & (day <= month_days) & (hour <= 23) & (minute <= 59) & (
        second <= 59)
    frac = pc.utf8_rpad(pc.fill_null(pc.struct_field(parts, "frac"), ""), 6, "0")
    micros = pc.cast(pc.if_else(pa.array(valid), frac, "0"), pa.int64()).to_numpy(zero_copy_only=False)
    whole = _days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second
    sign = np.where(pc.fill_null(pc.struct_field(parts, "sign"), "").to_numpy(zero_copy_only=False) == "-", -1, 1)
    offset = sign * (_digits(parts, "oh", valid) * 3600 + _digits(parts, "om", valid) * 60)
    return valid, np.where(valid, (whole - offset) * 1_000_000 + micros, 0)


def _micros(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def _latency(column: list[Any], ok: np.ndarray) -> pa.Array:
    """fast_rows._float per column: None, a finite float >= 0, or an int in [0, 2**53] (as float)."""
    kinds = set(map(type, column))
    if not kinds <= {float, int, type(None)}:
        _and(ok, np.fromiter((type(v) in (float, int, type(None)) for v in column), bool, len(column)))
    values = np.array([float(v) if (type(v) is float or (type(v) is int and 0 <= v <= MAX_EXACT_FLOAT_INT))
                       else (np.nan if v is None else -1.0) for v in column], np.float64)
    present = np.array([v is not None for v in column], bool)
    ok &= ~present | (np.isfinite(values) & (values >= 0))
    return pa.array(np.where(present, values, 0.0), pa.float64(), mask=~present)


def _map_array(maps: list[dict[str, Any]], value_type: pa.DataType, values: list[Any] | None = None) -> pa.Array:
    offsets = pa.array(list(accumulate(map(len, maps), initial=0)), pa.int32())
    keys = pa.array(list(chain.from_iterable(maps)), pa.string())
    if values is None:
        values = list(chain.from_iterable(map(dict.values, maps)))
    return pa.MapArray.from_arrays(offsets, keys, pa.array(values, value_type) if not isinstance(values, pa.Array)
                                   else values)


def _dicts(column: list[Any], ok: np.ndarray, keys: frozenset[str] | None) -> list[dict[str, Any]]:
    """Rows whose value is not a dict (with keys among `keys`) fail; returns the column with {} in their place."""
    mask = _all_types(column, frozenset((dict,)))
    _and(ok, mask)
    if mask is not None:
        column = [v if type(v) is dict else _EMPTY for v in column]
    if keys is not None and not all(map(keys.issuperset, column)):
        ok &= np.fromiter(map(keys.issuperset, column), bool, len(column))
    return column


def _str_maps(column: list[dict[str, Any]], ok: np.ndarray) -> None:
    """Every key and value of each map must be a str."""
    keys = set(map(type, chain.from_iterable(column)))
    values = set(map(type, chain.from_iterable(map(dict.values, column))))
    if not (keys <= {str} and values <= {str}):
        ok &= np.fromiter((all(type(k) is str and type(v) is str for k, v in m.items()) for m in column), bool,
                          len(column))


MAX_SHAPES = 16  # key orders read by transposition; a batch with more is read key by key


def _columns(dicts: list[dict[str, Any]], defaults: dict[str, Any]) -> dict[str, list[Any]]:
    """{name: [d.get(name, default) for d in dicts]} for each name of `defaults`, read in C: the dicts are grouped
    by key order (writers use one or a few), each group's values taken by one itemgetter call per dict and
    transposed by zip, and the groups' columns put back in input order by one more itemgetter call."""
    n = len(dicts)
    shapes = list(map(tuple, dicts))
    distinct = set(shapes)
    if len(distinct) > MAX_SHAPES:
        return {name: [d.get(name, default) for d in dicts] for name, default in defaults.items()}
    if len(distinct) == 1:
        groups = [(shapes[0] if n else (), dicts)]
        order = None
    else:
        positions = {shape: [] for shape in distinct}
        for position, shape in enumerate(shapes):
            positions[shape].append(position)
        groups = [(shape, [dicts[i] for i in members]) for shape, members in positions.items()]
        order = list(chain.from_iterable(positions.values()))
    parts: dict[str, list[Any]] = {name: [] for name in defaults}
    for shape, members in groups:
        if not shape:
            transposed = {}
        elif len(shape) == 1:
            transposed = {shape[0]: list(map(itemgetter(shape[0]), members))}
        else:
            transposed = dict(zip(shape, zip(*map(itemgetter(*shape), members))))
        for name, default in defaults.items():
            values = transposed.get(name)
            parts[name].extend(values if values is not None else [default] * len(members))
    if order is None or n < 2:
        return parts
    inverse = np.empty(n, np.int64)
    inverse[np.array(order, np.int64)] = np.arange(n)
    back = itemgetter(*inverse.tolist())
    return {name: list(back(column)) for name, column in parts.items()}


def rows_to_table(items: list[Any], now: datetime | None = None) -> tuple[pa.Table, list[int], list[int]]:
    """(table of the rows taken, in input order; their indices in `items`; the indices left to `event_to_row`).
    The cyclic GC is paused meanwhile: the columns are acyclic lists and tuples that live until the table is
    built, and the GC would rescan them (and the decoded batch) again and again (as in streams/columnar)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _rows_to_table(items, now)
    finally:
        if enabled:
            gc.enable()


def _rows_to_table(items: list[Any], now: datetime | None) -> tuple[pa.Table, list[int], list[int]]:
    candidates = [i for i, item in enumerate(items)
                  if type(item) is dict and PRICED_KEYS.issuperset(item) and item.get("correlation") is None]
    rows = [items[i] for i in candidates]
    n = len(rows)
    ok = np.ones(n, bool)

    top = _columns(rows, {**dict.fromkeys(PRICED_KEYS), "operation": "chat", "status": "ok", "attribution": {},
                          "batch": False, "cost_breakdown": {}})

    def value(key: str, default: Any = None) -> list[Any]:
        return top[key]

    event_id = _strings(value("event_id"), ok, nonempty=True, max_len=512)
    source, provider, model = (_strings(value(key), ok, nonempty=True) for key in ("source", "provider", "model"))
    operation = _strings(value("operation"), ok)
    status = _one_of(value("status"), frozenset(("ok", "error")), ok)
    ts_text = value("ts")
    _and(ok, _all_types(ts_text, frozenset((str,))))
    ts_valid, ts_us = _epoch_us(_text_array(ts_text, ok), _TS)
    ok &= ts_valid
    latest = (now or datetime.now(_UTC)) + MAX_EVENT_FUTURE
    ok &= (ts_us >= _micros(EARLIEST_EVENT_TS)) & (ts_us <= _micros(latest))

    attribution = _dicts(value("attribution", {}), ok, ATTRIBUTION_KEYS)
    nested = _columns(attribution, {**dict.fromkeys(ATTRIBUTION_COLUMNS), "tags": _ABSENT})
    dims = {dim: _strings(nested[dim], ok, optional=True) for dim in ATTRIBUTION_COLUMNS}  # None -> "" on build
    tags_in = nested["tags"]
    if any(v is None for v in tags_in):  # "tags": null is pydantic's to judge
        ok &= np.fromiter((v is not None for v in tags_in), bool, n)
    tags = _dicts([_EMPTY if v is _ABSENT else v for v in tags_in], ok, None)
    _str_maps(tags, ok)

    usage = _dicts(value("usage"), ok, USAGE_KEYS)
    nested = _columns(usage, {**dict.fromkeys(USAGE_PARTS, 0), "tool_requests": None})
    parts = {}
    for name in USAGE_PARTS:
        column = nested[name]
        mask = _all_types(column, frozenset((int,)))
        _and(ok, mask)
        if mask is not None:
            column = [v if type(v) is int else 0 for v in column]
        if column and (min(column) < 0 or max(column) > MAX_TOKENS):
            ok &= np.fromiter((0 <= v <= MAX_TOKENS for v in column), bool, n)
            column = [v if 0 <= v <= MAX_TOKENS else 0 for v in column]
        parts[name] = np.array(column, np.int64)
    ok &= parts["cached_input_tokens"] + parts["cache_write_tokens"] <= parts["input_tokens"]
    ok &= parts["cache_write_1h_tokens"] <= parts["cache_write_tokens"]
    ok &= parts["reasoning_tokens"] <= parts["output_tokens"]
    tools_in = nested["tool_requests"]
    tools = _dicts([_EMPTY if v is None else v for v in tools_in], ok, TOOL_KINDS)
    tool_counts = list(chain.from_iterable(map(dict.values, tools)))
    if tool_counts and not (set(map(type, tool_counts)) <= {int} and min(tool_counts) >= 0
                            and max(tool_counts) <= MAX_TOOL_REQUESTS):
        ok &= np.fromiter((all(type(c) is int and 0 <= c <= MAX_TOOL_REQUESTS for c in t.values()) for t in tools),
                          bool, n)
    if tool_counts:
        tools = [{k: c for k, c in t.items() if c} if ok[i] else _EMPTY for i, t in enumerate(tools)]

    latency = _latency(value("latency_ms"), ok)
    ttft = _latency(value("ttft_ms"), ok)
    batch = value("batch", False)
    _and(ok, _all_types(batch, frozenset((bool,))))
    service_tier = _strings(value("service_tier"), ok, optional=True)
    assumption = _strings(value("usage_assumption"), ok, nonempty=True, max_len=200, optional=True)
    tokens_source = _one_of(value("tokens_source"), frozenset(("provider", "estimated")), ok)
    pricing_status = _one_of(value("pricing_status"), frozenset(("priced", "unpriced")), ok)
    reason = _strings(value("unpriced_reason"), ok, optional=True)

    cost_text = value("cost_usd")
    _and(ok, _all_types(cost_text, frozenset((str,))))
    cost_array = _text_array(cost_text, ok)
    ok &= _matches(cost_array, _MONEY)
    breakdown = _dicts(value("cost_breakdown", {}), ok, None)
    line_keys = set(map(type, chain.from_iterable(breakdown)))
    line_values = list(chain.from_iterable(map(dict.values, breakdown)))
    if not (line_keys <= {str} and set(map(type, line_values)) <= {str}):
        ok &= np.fromiter((all(type(k) is str and type(v) is str for k, v in m.items()) for m in breakdown), bool, n)
    if line_values:
        line_text = pa.array([v if type(v) is str else "0" for v in line_values], pa.string())
        line_ok = _matches(line_text, _SIGNED_MONEY)
        if not line_ok.all():
            owner = np.repeat(np.arange(n), [len(m) for m in breakdown])
            bad_rows = np.unique(owner[~line_ok])
            ok[bad_rows] = False
            line_text = pc.if_else(pa.array(line_ok), line_text, "0")
    else:
        line_text = pa.array([], pa.string())

    price = value("price")
    price_kinds = set(map(type, price))
    if not price_kinds <= {dict, type(None)}:
        ok &= np.fromiter((type(p) in (dict, type(None)) for p in price), bool, n)
    price = [p if type(p) is dict else _NO_PRICE for p in price]
    if not all(map(PRICE_KEYS.issuperset, price)):
        ok &= np.fromiter(map(PRICE_KEYS.issuperset, price), bool, n)
    nested = _columns(price, dict.fromkeys(PRICE_KEYS))
    entry = _strings(nested["entry"], ok)
    price_columns = {name: _strings(nested[key], ok, optional=True)
                     for name, key in (("price_effective_from", "effective_from"),
                                       ("catalog_version", "catalog_version"), ("price_override", "override"))}

    priced_at_text = value("priced_at")
    _strings(priced_at_text, ok, optional=True)
    priced_present = np.array([type(v) is str for v in priced_at_text], bool)
    if priced_present.any():
        at_valid, at_us = _epoch_us(pa.array([v if type(v) is str else None for v in priced_at_text], pa.string()),
                                    _PRICED_AT)
        ok &= ~priced_present | at_valid
    else:
        at_us = np.zeros(n, np.int64)

    reported = value("reported_cost_usd")
    _strings(reported, ok, optional=True)
    if any(type(v) is str for v in reported):
        ok &= ~np.array([type(v) is str for v in reported], bool) | _matches(
            pa.array([v if type(v) is str else None for v in reported], pa.string()), _REPORTED_COST)
    _strings(value("reported_cost_check"), ok, optional=True)

    taken = [candidates[i] for i in np.flatnonzero(ok)]
    keep = ok.tolist()
    left = sorted(set(range(len(items))) - set(taken))
    if not taken:
        return ARROW_SCHEMA.empty_table(), [], left
    take = pa.array(np.flatnonzero(ok))

    keep_mask = pa.array(ok)

    def strings(column: list[Any]) -> pa.Array:  # None (fast_row: `v or ""`) -> ""
        return pc.fill_null(pa.array(column, pa.string()).filter(keep_mask), "")

    def maps(column: list[dict[str, Any]], value_type: pa.DataType) -> pa.Array:
        return _map_array(list(compress(column, keep)), value_type)

    kept_breakdown = list(compress(breakdown, keep))
    line_owner_ok = np.repeat(ok, [len(m) for m in breakdown]) if line_values else np.zeros(0, bool)
    lines = pc.cast(pc.filter(line_text, pa.array(line_owner_ok)), COST_TYPE)
    arrays = {
        "event_id": strings(event_id),
        "ts": pa.array(ts_us[ok] // 1000, pa.int64()).cast(ARROW_SCHEMA.field("ts").type),
        "source": strings(source), "provider": strings(provider), "model": strings(model),
        "operation": strings(operation), "status": strings(status),
        **{dim: strings(dims[dim]) for dim in ATTRIBUTION_COLUMNS},
        "tags": maps(tags, pa.string()),
        **{name: pa.array(parts[name][ok].astype(np.uint64), pa.uint64()) for name in USAGE_PARTS},
        "latency_ms": latency.take(take), "ttft_ms": ttft.take(take),
        "batch": pa.array(list(compress(batch, keep)), pa.bool_()),
        "service_tier": strings(service_tier),
        "tokens_source": strings(tokens_source),
        "cost_usd": pc.cast(pc.filter(cost_array, pa.array(ok)), COST_TYPE),
        "cost_breakdown": _map_array(kept_breakdown, COST_TYPE, lines),
        "pricing_status": strings(pricing_status),
        "unpriced_reason": strings(reason),
        "price_entry": strings(entry),
        **{name: strings(price_columns[name]) for name in ("price_effective_from", "catalog_version",
                                                           "price_override")},
        "priced_at": pa.array(at_us[ok] // 1000, pa.int64(), mask=~priced_present[ok]).cast(
            ARROW_SCHEMA.field("priced_at").type),
        "tool_requests": maps(tools, pa.uint64()),
        "usage_assumption": strings(assumption),
        "correlation": pa.array([[]] * len(taken), ARROW_SCHEMA.field("correlation").type),
        "call_keys": pa.array([[]] * len(taken), ARROW_SCHEMA.field("call_keys").type),
    }
    table = pa.Table.from_arrays([arrays[name].cast(ARROW_SCHEMA.field(name).type) for name in ARROW_SCHEMA.names],
                                 schema=ARROW_SCHEMA)
    return table, taken, left




def build_batch(items: list[Any], now: datetime | None = None
                ) -> tuple[pa.Table, list[int], list[tuple[int, Exception]]]:
    """Every item of a batch as `priced_events` rows, in input order: (table, the item index of each table row,
    (item index, the exception: RowError or another) for the items that cannot be stored). The table equals
    `rows_to_arrow([event_to_row(item) ...])` over the storable items; rows `rows_to_table` leaves go through
    `event_to_row` one by one (fast_row, then pydantic for the error text)."""
    table, taken, left = rows_to_table(items, now)
    rows, indices, errors = [], [], []
    for index in left:
        try:
            rows.append(event_to_row(items[index]))
        except Exception as exc:  # RowError, or whatever the per-row path raises: the caller's dead letter
            errors.append((index, exc))
        else:
            indices.append(index)
    if not rows:
        return table, taken, errors
    if not taken:
        return rows_to_arrow(rows), indices, errors
    order = np.argsort(np.array(taken + indices, np.int64), kind="stable")
    combined = pa.concat_tables([table, rows_to_arrow(rows)]).take(pa.array(order))
    return combined, [(taken + indices)[i] for i in order], errors


__all__ = ["build_batch", "rows_to_table"]
