"""Decode micro-batch messages straight into one polars frame (no Python dict per event), for the common shape.

A usage message is taken here ("certified") only when polars' reading of it is provably what orjson + pydantic
would read, so every row of it either is priced from columns or takes today's per-row path with the very item
orjson decodes. polars' JSON reader with an explicit schema is strict about JSON syntax (simd-json: no trailing
commas, NaN, leading zeros, raw control characters, invalid UTF-8) but lax about values: it ignores unknown keys,
keeps the first of duplicated keys, reads `null` and absent alike, and coerces between kinds (5 -> "5" for a
string field, true -> 1 and 5.5 -> 5 for an integer field). A message is certified only when:

- it is a JSON array (`[` first) without a backslash (so a `"` in it always delimits a string: no escapes, no
  surrogates) and without whitespace before a colon (so every key is followed by `":` exactly once, and `":`
  occurs nowhere else);
- per kind of value after a key, the number of keys in its bytes equals the number of values polars read:
  strings (`":"`) = non-null string fields, objects (`":{`) = non-null struct fields, booleans (`":t`, `":f`) =
  non-null `batch`, and all other keys (`":` not followed by `"`, `{`, `t` or `f`: numbers, but also arrays, nulls
  and whitespace) = non-null number fields. Each value polars reads comes from its own key, and polars can only
  move a value from boolean to number or string and from number (or whitespace and a number) to string, or
  drop it (unknown or duplicated key, null, array, a number out of range). Booleans can only be lost, so equal
  boolean counts mean none moved or was lost; then numbers and the other keys can only be lost, so equal counts
  there mean each was read as a number; then strings, then objects likewise. Equal counts in every kind mean
  every key was read into its own field with its own kind: no unknown key, duplicate, null, array or coercion;
- no token count is written with a fraction or exponent (`_tokens":5.0`), the one coercion inside a kind;
- tags (worker7): polars reads `attribution.tags` as an empty struct, dropping its keys, so the tags objects are
  found in the text instead (`TAGS_OBJECT`: `"tags":{` and a compact map of strings to strings, exactly what orjson
  writes for one), their inner keys are taken off the string counts, and per message the number of such objects
  must equal the rows whose tags polars read as an object; each is then handed to its row as its own text
  (`_tags`). Any other tags object (whitespace, a non-string value, nested) is not matched, so its message fails
  that equality and takes the dict path. Duplicate tag keys (pydantic keeps the last value) are left to the dict
  path row by row (`_tags_ok`).

- tool requests (arrow18): in a batch whose text holds `"tool_requests":`, `usage.tool_requests` is read as a
  struct of `TOOL_REQUEST_KINDS` (`TOOLS_SCHEMA`), counted with the objects and numbers like any other field, so a
  message holding one stays certified; the rows holding one (even an empty object) are marked (`_no_tools` false)
  and take the dict path, which prices the fees, while their neighbours are written from columns. Other batches
  read the schema without it (the 10 more fields cost every row ~3-5 % of the worker's CPU).

Rows of a certified message are then checked as columns (lengths, ranges, timestamps, parts within totals) by
`row_checks`; a row that fails, and every row of a message not certified, takes the dict path (validate.py and the
per-row fallback), whose dead letters are today's.
"""

from __future__ import annotations

import functools
import operator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from typing import Sequence

import numpy as np
import polars as pl

from streams.batch import MAX_EVENTS_PER_RECORD, RawRecord
from tokenmeter.events import (ATTRIBUTION_DIMENSIONS, MAX_ATTRIBUTION_CHARS, MAX_TAG_KEY_CHARS, MAX_TAGS,
                               MAX_TOKENS, TEXT_BOUNDS, TOOL_REQUEST_KINDS)
from tokenmeter.exprs import all_of, usage_checks
from tokenmeter.microbatch import FRACTIONAL_TOKENS, TAG_KEY, TAGS_OBJECT, TAGS_PREFIX, WHITESPACE_BEFORE_COLON

from .validate import CORRELATION_IDS, USAGE_PARTS

TAG_VALUE = '":"[^"]*"'  # a value in a matched tags object, with the `":"` before it and its closing quote

S = pl.String
TOP_STRINGS = ("event_id", "ts", "source", "provider", "model", "operation", "status", "service_tier",
               "usage_assumption")
NUMBERS = ("latency_ms", "ttft_ms")
CORRELATION_NAMES = tuple(name for name, _, _ in CORRELATION_IDS or ())
SCHEMA = {
    **{name: S for name in TOP_STRINGS[:7]},
    "attribution": pl.Struct({**{dim: S for dim in ATTRIBUTION_DIMENSIONS}, "tags": pl.Struct({})}),
    "usage": pl.Struct({part: pl.Int64 for part in USAGE_PARTS}),
    "latency_ms": pl.Float64, "ttft_ms": pl.Float64, "batch": pl.Boolean,
    "service_tier": S, "usage_assumption": S,
    **({"correlation": pl.Struct({name: S for name in CORRELATION_NAMES})} if CORRELATION_IDS else {}),
}
# a batch with tool requests: read so they are counted (a message holding one stays certified)
TOOLS_SCHEMA = {**SCHEMA, "usage": pl.Struct({**{part: pl.Int64 for part in USAGE_PARTS},
                                             "tool_requests": pl.Struct({kind: pl.Int64 for kind in TOOL_REQUEST_KINDS})})}


@cache  # expressions are immutable: built once (building them was a good part of a small batch's cost)
def _kind_fields(tools: bool = False) -> tuple[list[pl.Expr], list[pl.Expr], list[pl.Expr], list[pl.Expr]]:
    """The fields polars reads, by kind of value: strings, objects, booleans, numbers (`tools`: TOOLS_SCHEMA's)."""
    strings = [pl.col(name) for name in TOP_STRINGS]
    strings += [pl.col("attribution").struct.field(dim) for dim in ATTRIBUTION_DIMENSIONS]
    tools_field = pl.col("usage").struct.field("tool_requests")
    objects = [pl.col("attribution"), pl.col("attribution").struct.field("tags"), pl.col("usage"),
               *([tools_field] if tools else [])]
    if "correlation" in SCHEMA:
        strings += [pl.col("correlation").struct.field(name) for name in CORRELATION_NAMES]
        objects.append(pl.col("correlation"))
    booleans = [pl.col("batch")]
    numbers = [pl.col(name) for name in NUMBERS]
    numbers += [pl.col("usage").struct.field(part) for part in USAGE_PARTS]
    numbers += [tools_field.struct.field(kind) for kind in TOOL_REQUEST_KINDS] if tools else []
    return strings, objects, booleans, numbers


@cache
def _kind_counts(tools: bool = False) -> tuple[list[pl.Expr], list[pl.Expr], list[pl.Expr], list[pl.Expr]]:
    """Per row, the non-null values polars read by kind: strings, objects, booleans, numbers."""
    return tuple([field.is_not_null() for field in group]  # type: ignore[return-value]
                 for group in _kind_fields(tools))


def _kind_totals(frame: pl.DataFrame, tagged: bool, tools: bool = False,
                 sent: frozenset[tuple[str, ...]] | None = None) -> tuple[int, ...]:
    """The sums over `frame` of `scan`'s per-row kinds (s, o, b, n and, when `tagged`, t), from each field's null
    count: the same numbers without a sum across ~35 columns per row, in a query polars plans in ~0.2 ms instead of
    ~1.2 ms (one flat output per field; a sum_horizontal per kind was planned per batch). `sent`: the fields of a
    frame read with only the fields sent (`Scanned.sent`): every other field is null in every row and counts 0, so
    its null count is not asked for."""
    groups = [*_kind_fields(tools), *([[pl.col("attribution").struct.field("tags")]] if tagged else [])]
    paths = [*_kind_paths(tools), *([[("attribution", "tags")]] if tagged else [])]
    asked = [[field for field, path in zip(group, names) if sent is None or path in sent]
             for group, names in zip(groups, paths)]
    fields = [field for group in asked for field in group]
    nulls = iter(frame.select(field.null_count().alias(f"_{i}") for i, field in enumerate(fields)).row(0)
                 if fields else ())
    return tuple(sum(frame.height - next(nulls) for _ in group) for group in asked)


@cache
def _kind_paths(tools: bool = False) -> tuple[list[tuple[str, ...]], ...]:
    """The `_Fields` path of each of `_kind_fields`' fields, in the same groups and order."""
    strings = [(name,) for name in TOP_STRINGS] + [("attribution", dim) for dim in ATTRIBUTION_DIMENSIONS]
    objects = [("attribution",), ("attribution", "tags"), ("usage",), *([("usage", "tool_requests")] if tools else [])]
    if "correlation" in SCHEMA:
        strings += [("correlation", name) for name in CORRELATION_NAMES]
        objects.append(("correlation",))
    booleans = [("batch",)]
    numbers = [(name,) for name in NUMBERS] + [("usage", part) for part in USAGE_PARTS]
    # a tool request's counts are read with their struct (`_Fields` learns fields one level down)
    numbers += [("usage", "tool_requests") for _ in TOOL_REQUEST_KINDS] if tools else []
    return strings, objects, booleans, numbers


@dataclass
class Scanned:
    """The certified messages' rows (`frame`, with `_rec`: the record's index, `_pos`: the item's index in it) and
    the number of items of each certified record (`heights`: record index -> count)."""

    frame: pl.DataFrame
    heights: dict[int, int]
    # the fields read when the frame was read with only the fields sent (the rest null in every row: `row_checks`
    # leaves their checks out); None when it was read with every field
    sent: frozenset[tuple[str, ...]] | None = None


def _text(values: Sequence[bytes | None]) -> pl.Series:
    """The values as a String series, null where a value is not UTF-8 (polars' cast raises on one, even
    non-strict: then each value is checked on its own)."""
    binary = pl.Series("v", values, dtype=pl.Binary)
    try:
        return binary.cast(pl.String)
    except pl.exceptions.PolarsError:
        return pl.Series("v", [None if v is None or not _utf8(v) else v for v in values], dtype=pl.Binary).cast(pl.String)


def _utf8(value: bytes) -> bool:
    try:
        value.decode()
    except UnicodeDecodeError:
        return False
    return True


def _byte_counts(values: Sequence[bytes | None]) -> tuple[pl.DataFrame, pl.Series | None, bool]:
    """Per message: certifiable at all, and its keys by kind; with the tags objects (`TAGS_OBJECT` matches, a list
    per message) when any message has a non-empty one (None otherwise: no cost for untagged traffic); whether any
    message names tool requests."""
    text = pl.lit(_text(values))  # invalid UTF-8: null, not certified
    # one query (inproc32): each Series method is a query of its own, ~0.1-0.2 ms of fixed cost apiece
    counts = pl.select(
        plain=(text.str.starts_with("[") & ~text.str.contains("\\", literal=True)
               & ~text.str.contains(WHITESPACE_BEFORE_COLON) & ~text.str.contains(FRACTIONAL_TOKENS)).fill_null(False),
        **_key_kinds(values),
        _tools=text.str.contains('"tool_requests":', literal=True).any(),
        _tagged=text.str.contains('"tags":{"', literal=True).any(),
    )
    tools, tagged = counts.row(0)[-2:] if counts.height else (False, False)
    counts = counts.drop("_tools", "_tagged")
    if not tagged:
        return counts, None, bool(tools)
    tags = pl.select(text.str.extract_all(TAGS_OBJECT)).to_series()
    # the tags' inner keys are strings polars does not read (tags is an empty struct to it): off the counts
    inner = pl.select(tags.list.join("").str.count_matches(TAG_KEY).fill_null(0).cast(pl.UInt32)).to_series()
    counts = counts.with_columns(keys=pl.col("keys") - inner, strings=pl.col("strings") - inner,
                                 tags=tags.list.len().fill_null(0).cast(pl.UInt32))
    return counts, tags, bool(tools)


_KINDS = {"strings": b'"', "objects": b"{", "booleans": b"tf"}  # the byte after `":` that makes a key's kind


def _key_kinds(values: Sequence[bytes | None]) -> dict[str, pl.Series]:
    """Per message, its `":` (`keys`) and those followed by `"`, `{`, or `t`/`f` (`strings`, `objects`,
    `booleans`): one numpy pass per message finds every `":` and reads the byte after it. Polars counted each
    needle in a pass of its own (4-6 passes: ~0.40 us per event against ~0.15, one 8 MB chunk; inproc26).
    These are the counts polars' `count_matches` gave, except where an `":"` overlaps another (only inside a
    string value starting with `:`, e.g. `"k":":"`): the second now counts as a string, where it counted among the
    other keys (numbers) before. Either way it is a count above the values read, so the message is not certified
    (each count only has to be at least the true one: module docstring)."""
    counts: dict[str, list[int]] = {"keys": [], **{kind: [] for kind in _KINDS}}
    for value in values:
        data = np.frombuffer(value or b"", np.uint8)
        at = np.flatnonzero((data[:-1] == _QUOTE) & (data[1:] == _COLON))
        after = data[np.minimum(at + 2, len(data) - 1)]  # a `":` ending the value: its own `:` (no kind)
        counts["keys"].append(len(at))
        for kind, firsts in _KINDS.items():
            counts[kind].append(int(sum(np.count_nonzero(after == byte) for byte in firsts)))
    return {name: pl.Series(name, found, dtype=pl.UInt32) for name, found in counts.items()}


_QUOTE, _COLON = np.uint8(ord('"')), np.uint8(ord(":"))


# polars' JSON reader releases the GIL, and one chunk's messages are read one by one (~1.2 us per event, a quarter
# of the frame path): the second half of a chunk's messages is read on this thread while the caller reads the first
# (fast20). It buys wall time only where a second core is free; the CPU per event is the same.
_READER = ThreadPoolExecutor(1, thread_name_prefix="tokenmeter-json-reader")
_SPLIT_MIN = 8  # messages: below that the hand-off (~0.1 ms) is not worth it


def _read(value: bytes, schema: dict) -> pl.DataFrame | None:
    try:
        return pl.read_json(value, schema=schema)
    except Exception:  # noqa: BLE001 - not JSON, not an array of objects, ...: the dict path words it
        return None


def _read_all(values: list[bytes], schema: dict) -> list[pl.DataFrame | None]:
    """Each value read with `schema` (None where polars refuses it), in order."""
    half = len(values) // 2
    if half < _SPLIT_MIN // 2:
        return [_read(value, schema) for value in values]
    second = _READER.submit(lambda: [_read(value, schema) for value in values[half:]])
    first = [_read(value, schema) for value in values[:half]]
    return first + second.result()


def _frame_of(records: Sequence[RawRecord], candidates: list[int], schema: dict
              ) -> tuple[pl.DataFrame, list[int], list[int]] | None:
    """The candidate messages polars reads with `schema` as one frame (with `_rec`, `_pos`), the records taken and
    their heights; None when it takes none."""
    frames, taken = [], []
    for index, frame in zip(candidates, _read_all([records[i].value for i in candidates], schema)):
        if frame is not None and 0 < frame.height <= MAX_EVENTS_PER_RECORD:
            frames.append(frame)
            taken.append(index)
    if not frames:
        return None
    heights = [f.height for f in frames]
    # polars, not numpy: a worker's first pl.Series(<numpy array>) imported numpy.ma inside its first batch (~60 ms)
    lengths = pl.lit(pl.Series(heights, dtype=pl.UInt32))
    positions = pl.select(_rec=pl.lit(pl.Series(taken, dtype=pl.UInt32)).repeat_by(lengths).explode(),
                          _pos=pl.int_ranges(0, lengths, dtype=pl.UInt32).explode())
    # one chunk: the queries that check, price and write these rows run ~5 % faster on contiguous columns than on
    # one chunk per message read, more than the copy costs (inproc26: 1.045x and 1.056x, one process alternating)
    frame = pl.concat(frames, how="vertical", rechunk=True).with_columns(positions.get_column("_rec"),
                                                                         positions.get_column("_pos"))
    return frame, taken, heights


def _expected(counts: pl.DataFrame, taken: list[int], tagged: bool) -> pl.DataFrame:
    """Per message taken (`_rec`), its keys by kind in the bytes: s, o, b, n and, when `tagged`, t."""
    return counts.select(
        _rec=pl.int_range(pl.len(), dtype=pl.UInt32), s="strings", o="objects", b="booleans",
        n=pl.col("keys") - pl.col("strings") - pl.col("objects") - pl.col("booleans"),
        **({"t": "tags"} if tagged else {}))[taken]


def scan(records: Sequence[RawRecord]) -> Scanned | None:
    """Certified messages read into one frame, or None when no message is certified."""
    if not records:
        return None
    counts, tags, tools = _byte_counts([r.value for r in records])
    schema = TOOLS_SCHEMA if tools else SCHEMA
    plain = counts.get_column("plain").to_list()
    candidates = [index for index, ok in enumerate(plain) if ok]
    learnt = _LEARNT[tools]
    reduced = learnt.schema()  # the fields the traffic has sent (None: every field)
    sent = learnt.sent if reduced is not None else None  # what `reduced` reads
    got = _frame_of(records, candidates, reduced or schema)
    if got is None and reduced is not None:
        got, reduced, sent = _frame_of(records, candidates, schema), None, None
    if got is None:
        return None
    frame, taken, heights = got
    if reduced is not None:
        frame = frame.select(*learnt.padding(), "_rec", "_pos")
    expected = _expected(counts, taken, tags is not None)
    strings, objects, booleans, numbers = _kind_counts(tools)
    kinds = {"s": pl.sum_horizontal(strings), "o": pl.sum_horizontal(objects), "b": pl.sum_horizontal(booleans),
             "n": pl.sum_horizontal(numbers)}
    if tags is not None:  # tags objects found in the text against tags read as objects
        kinds["t"] = pl.col("attribution").struct.field("tags").is_not_null()
    names = list(kinds)
    # Each kind's inequality (values read <= keys in the bytes) holds key by key, so equal totals over the batch
    # mean equality in every message: the common case needs no per-message sums. (Tags: in a message certified by
    # the other four, each tags object found is some row's attribution.tags, so found <= read there too.)
    read = _kind_totals(frame, tags is not None, tools, sent)
    if reduced is not None and read != expected.select(pl.col(*names).sum()).row(0):
        # a key of a field left out, or a message not certified: read again with every field, certified as before
        got, sent = _frame_of(records, candidates, schema), None
        if got is None:
            return None
        frame, taken, heights = got
        expected = _expected(counts, taken, tags is not None)
        read = _kind_totals(frame, tags is not None, tools)
        learnt.learn(frame, again=True)
    elif not learnt.sent:
        learnt.learn(frame)
    if read == expected.select(pl.col(*names).sum()).row(0):
        agreed = None
    else:
        per_message = frame.select("_rec", **kinds).group_by("_rec", maintain_order=True).sum()
        agreed = per_message.join(expected, on="_rec", how="left", suffix="_bytes").filter(
            pl.all_horizontal([pl.col(k) == pl.col(f"{k}_bytes") for k in names])).get_column("_rec")
        frame = frame.filter(pl.col("_rec").is_in(agreed.implode()))
    if tools:  # a row with tool requests (even empty) takes the dict path, which prices their fees
        frame = frame.with_columns(_no_tools=pl.col("usage").struct.field("tool_requests").is_null())
    if tags is not None and frame.height:
        frame = _with_tags(frame, tags.gather(agreed if agreed is not None else taken))
    if agreed is None:
        return Scanned(frame, dict(zip(taken, heights)), sent)
    if frame.height == 0:
        return None
    kept = set(agreed.to_list())
    return Scanned(frame, {i: h for i, h in zip(taken, heights) if i in kept}, sent)


def _with_tags(frame: pl.DataFrame, tags: pl.Series) -> pl.DataFrame:
    """`_tags`: each row's tags object as text (null where it has none), from its message's tags objects in order
    (`tags`: their lists, message by message as in `frame`; as many as the rows whose tags polars read, checked by
    `scan`); `_tags_ok`: false where a tags object repeats a key (pydantic keeps the last value: the dict path)."""
    texts = tags.explode().drop_nulls().str.slice(TAGS_PREFIX)
    tagged = pl.col("attribution").struct.field("tags").is_not_null()
    frame = frame.with_columns(_tags=pl.when(tagged).then(
        pl.lit(texts).gather((tagged.cast(pl.Int64).cum_sum() - 1).clip(0)) if texts.len() else None).cast(pl.String))
    # tags repeat (per team, environment): keys counted once per distinct object
    distinct = texts.unique()
    keys = distinct.str.extract_all(TAG_KEY)
    # past the contract's bounds (tokenmeter/events.py, cap33): too many tags, a key or value too long in bytes (a
    # string of at most n bytes has at most n characters; a longer one the dict path measures in characters)
    values = distinct.str.extract_all(TAG_VALUE)
    longest_key = keys.list.eval(pl.element().str.len_bytes()).list.max().fill_null(0).cast(pl.Int64) - len('"":"')
    longest_value = values.list.eval(pl.element().str.len_bytes()).list.max().fill_null(0).cast(pl.Int64) - len('":""')
    refused = distinct.filter((keys.list.len() != keys.list.n_unique()) | (keys.list.len() > MAX_TAGS)
                              | (longest_key > MAX_TAG_KEY_CHARS) | (longest_value > MAX_ATTRIBUTION_CHARS))
    return frame.with_columns(_tags_ok=~pl.col("_tags").is_in(refused.implode()).fill_null(False))


class _Fields:
    """The fields of `schema` (a struct and each of its fields) that the traffic has sent, learnt from the first chunk
    read and from each chunk read again (never unlearnt). polars' reader pays for every field of its schema in every
    row, present or not (inproc32: the bench's events have 7 of 15 keys; read with only their fields, 1.21-1.27
    against 1.48-1.56 us per event, one 28,002-event chunk). Reading with only the fields sent is exact: a key of
    any other field in a message makes the byte counts of its kind exceed the values read, and the chunk is read
    again with every field (`scan`); when the counts agree, no message has a key of a field left out, which polars
    would have read as null in every row: `padding` writes those nulls. A chunk read again without a field to learn
    had messages that are not certified (escapes, unknown keys, ...): the next BACK_OFF chunks are read with every
    field at once, so such traffic pays the second read once in BACK_OFF + 1 chunks."""

    BACK_OFF = 64

    def __init__(self, schema: dict) -> None:
        self.full = schema
        self.sent: frozenset[tuple[str, ...]] = frozenset()
        self.paths = [(name,) for name in schema] + [(name, f.name) for name, dtype in schema.items()
                                                     if isinstance(dtype, pl.Struct) for f in dtype.fields]
        self.skip = 0  # chunks still to read with every field

    def learn(self, frame: pl.DataFrame, again: bool = False) -> None:
        """Add the fields with a value in some row of `frame` (read with every field; `again`: after a read with
        the fields sent, then the back-off when nothing was new)."""
        field = lambda path: pl.col(path[0]).struct.field(path[1]) if len(path) == 2 else pl.col(path[0])  # noqa: E731
        nulls = frame.select(field(path).null_count().alias(str(i)) for i, path in enumerate(self.paths)).row(0)
        sent = self.sent | {path for path, count in zip(self.paths, nulls) if count < frame.height}
        if again and sent == self.sent:
            self.skip = self.BACK_OFF
        self.sent = sent

    def schema(self) -> dict | None:
        """The schema to read the next chunk with: the fields sent; None for every field (nothing learnt yet, all
        sent, or backing off)."""
        if self.skip:
            self.skip -= 1
            return None
        return _reduced(self.full is TOOLS_SCHEMA, self.sent) if self.sent else None

    def padding(self) -> list[pl.Expr]:
        return _padding(self.full is TOOLS_SCHEMA, self.sent)


@cache
def _reduced(tools: bool, sent: frozenset[tuple[str, ...]]) -> dict | None:
    """The schema of the fields sent (a struct sent with those of its fields sent, maybe none); None when that is
    every field."""
    schema = TOOLS_SCHEMA if tools else SCHEMA
    reduced = {}
    for name, dtype in schema.items():
        if (name,) in sent:
            reduced[name] = (pl.Struct({f.name: f.dtype for f in dtype.fields if (name, f.name) in sent})
                             if isinstance(dtype, pl.Struct) else dtype)
    return None if reduced == schema else reduced


@cache
def _padding(tools: bool, sent: frozenset[tuple[str, ...]]) -> list[pl.Expr]:
    """Expressions giving a frame read with `_reduced`'s schema every field of the full one, in its order: the
    fields left out null (a struct left out null, a struct's fields left out null within it)."""
    schema, reduced = TOOLS_SCHEMA if tools else SCHEMA, _reduced(tools, sent) or {}
    exprs = []
    for name, dtype in schema.items():
        if name not in reduced:
            exprs.append(pl.lit(None, dtype=dtype).alias(name))
        elif reduced[name] != dtype:  # a struct with some of its fields
            have = {f.name for f in reduced[name].fields}
            fields = [pl.col(name).struct.field(f.name) if f.name in have else pl.lit(None, dtype=f.dtype).alias(f.name)
                      for f in dtype.fields]
            exprs.append(pl.when(pl.col(name).is_not_null()).then(pl.struct(fields)).alias(name))
        else:
            exprs.append(pl.col(name))
    return exprs


_LEARNT = {False: _Fields(SCHEMA), True: _Fields(TOOLS_SCHEMA)}


def learnt_state() -> dict[bool, tuple[frozenset, int]]:
    """What the traffic has taught `_LEARNT` so far (fields sent, chunks left to back off), for `restore_learnt`."""
    return {tools: (fields.sent, fields.skip) for tools, fields in _LEARNT.items()}


def restore_learnt(state: dict[bool, tuple[frozenset, int]]) -> None:
    """Put `_LEARNT` back as `learnt_state` saw it (streams/warm_up.py: generated traffic must not teach it)."""
    for tools, (sent, skip) in state.items():
        _LEARNT[tools].sent, _LEARNT[tools].skip = sent, skip


@cache
def row_checks(sent: frozenset[tuple[str, ...]] | None = None) -> pl.Expr:
    """True for rows the columnar path takes as they are (the rest take the dict path): what validate.py checks
    of a decoded dict, for values polars read into their own fields (so types are already right).

    `sent`: the fields of a frame `scan` read with only the fields the traffic sends (`Scanned.sent`; None: read with
    every field). Every other field is null in every row of such a frame (its padding), and a check that holds for a
    null field (`is_null() | ...`, an absent count's range, a null status) is left out for it: true in every row, so
    the conjunction is the same. The checks of a 15-field schema cost ~2-3 ms a chunk to plan, on 10 rows as on
    28,000; the bench's traffic (7 of 15 keys) plans its checks in ~1.2 ms against ~3.2 (inproc36)."""
    def absent(*path: str) -> bool:
        return sent is not None and path not in sent

    # Lengths in bytes (O(1) per row) where they decide as characters would or conservatively: a string of at
    # most n bytes has at most n characters; one of more bytes but few enough characters takes the dict path.
    dimension = pl.col("attribution").struct.field
    checks = [pl.col("event_id").str.len_bytes().is_between(1, 512),
              *(dimension(dim).is_null() | (dimension(dim).str.len_bytes() <= MAX_ATTRIBUTION_CHARS)
                for dim in ATTRIBUTION_DIMENSIONS if not absent("attribution", dim)),
              # null (not sent) fails these: kept whatever was sent
              pl.col("source").str.len_bytes() > 0, pl.col("provider").str.len_bytes() > 0,
              pl.col("model").str.len_bytes() > 0,
              # the names' bounds (trust34); a null operation or tier is the model's default / none
              *(pl.col(name).is_null() | (pl.col(name).str.len_bytes() <= bound)
                for name, bound in TEXT_BOUNDS.items() if not absent(name)),
              *([pl.col("status").fill_null("ok").is_in(["ok", "error"])] if not absent("status") else []),
              pl.col("ts").is_not_null(), pl.col("usage").is_not_null(),
              *([pl.col("usage_assumption").is_null() | pl.col("usage_assumption").str.len_bytes().is_between(1, 200)]
                if not absent("usage_assumption") else []),
              *(pl.col(name).is_null() | (pl.col(name) >= 0) for name in NUMBERS if not absent(name))]
    checks += _usage_checks(frozenset(part for part in USAGE_PARTS if absent("usage", part)))
    if "correlation" in SCHEMA:
        correlation = pl.col("correlation").struct
        for name, low, high in CORRELATION_IDS:
            if absent("correlation", name):
                continue
            value = correlation.field(name)
            length = value.str.len_bytes() if low <= 1 else value.str.len_chars()
            checks.append(value.is_null() | length.is_between(low, high))
    ok = all_of(*checks)  # balanced: a chain of ~25 `&` was ~0.9 ms of planning per batch (exprs.py)
    return ok.fill_null(False)


# Usage._parts_within_totals as `usage_checks` writes them: (the parts summed, the total they must not exceed)
_WITHIN = ((("cached_input_tokens", "cache_write_tokens"), "input_tokens"),
           (("cache_write_1h_tokens",), "cache_write_tokens"),
           (("reasoning_tokens",), "output_tokens"))


def _usage_checks(absent: frozenset[str]) -> list[pl.Expr]:
    """`tokenmeter.exprs.usage_checks` on `usage` with the parts `absent` null in every row: such a part is 0
    (`fill_null(0)` of null), so its range check holds and is left out, and it is 0 in a sum; a sum of absent parts
    only (0 <= a total) holds where the total's own range check does (or 0 <= 0), and is left out too."""
    usage = pl.col("usage")
    if not absent:
        return usage_checks(usage)
    parts = {part: pl.lit(0, dtype=pl.Int64) if part in absent else usage.struct.field(part).fill_null(0)
             for part in USAGE_PARTS}
    checks = [parts[part].is_between(0, MAX_TOKENS) for part in USAGE_PARTS if part not in absent]
    for summed, total in _WITHIN:
        present = [parts[part] for part in summed if part not in absent]
        if present:
            checks.append(functools.reduce(operator.add, present) <= parts[total])
    return checks


__all__ = ["SCHEMA", "TOOLS_SCHEMA", "Scanned", "learnt_state", "restore_learnt", "row_checks", "scan"]
