"""Priced events as Arrow IPC (`tokenmeter.priced` with the header `tokenmeter-format: arrow`; issue 14, loader11).

One message is one Arrow IPC *stream* (schema, then record batches) of `SCHEMA` rows, one row per priced event, in
the order of the JSON array it replaces. The columns are the priced event's JSON fields, nested as in JSON
(attribution, usage, correlation and price are structs; tags, tool requests and cost lines are maps), with the
JSON's own texts: `ts`, `priced_at` and money stay decimal text, so a reader sees exactly the event the JSON would
have carried (`to_events` gives the same dicts as orjson gives for the JSON). Rules:

- the schema must equal `SCHEMA` exactly (names, order, types, nullability; metadata ignored), else the message
  is a dead letter ("not a priced Arrow batch");
- a null is an absent field (the worker writes JSON without nulls; `"tags": null` cannot be said here);
- a map is read as JSON reads an object: a duplicate key keeps its last value; a null map value is refused by the
  readers' checks as a JSON null would be;
- at most `MAX_EVENTS_PER_RECORD` rows per message (as the usage topic's readers refuse larger micro-batches),
  record batches only, uncompressed (a compressed body would be inflated to the size it declares), both read from
  the batches' headers before any body is decoded; the stream must be complete (a truncated one is a dead letter)
  and pass Arrow's full validation (offsets, UTF-8) before any value is read.

pyarrow is imported by this module: readers import it only when a message names this format
(`tokenmeter.priced_wire`).
"""

from __future__ import annotations

import struct
from typing import Any

import pyarrow as pa

from tokenmeter.events import ATTRIBUTION_DIMENSIONS, USAGE_PARTS, Correlation
from tokenmeter.microbatch import MAX_EVENTS_PER_RECORD

S = pa.string()
CORRELATION_IDS = tuple(Correlation.model_fields)
PRICE_FIELDS = ("entry", "effective_from", "catalog_version", "override")
# In PricedEvent's field order (what `exclude_none` JSON writes), so `to_events` gives the JSON's key order.
SCHEMA = pa.schema([
    *((name, S) for name in ("event_id", "ts", "source", "provider", "model", "operation", "status")),
    ("attribution", pa.struct([*((dim, S) for dim in ATTRIBUTION_DIMENSIONS), ("tags", pa.map_(S, S))])),
    ("usage", pa.struct([*((part, pa.int64()) for part in USAGE_PARTS), ("tool_requests", pa.map_(S, pa.int64()))])),
    ("latency_ms", pa.float64()), ("ttft_ms", pa.float64()), ("batch", pa.bool_()),
    ("service_tier", S), ("usage_assumption", S), ("reported_cost_usd", S),
    ("correlation", pa.struct([(name, S) for name in CORRELATION_IDS])),
    ("tokens_source", S), ("cost_usd", S), ("cost_breakdown", pa.map_(S, S)), ("pricing_status", S),
    ("unpriced_reason", S), ("price", pa.struct([(name, S) for name in PRICE_FIELDS])),
    ("priced_at", S), ("reported_cost_check", S),
])
STRUCTS = {"attribution": ("tags",), "usage": ("tool_requests",), "correlation": (), "price": ()}  # struct: its maps
MAPS = ("cost_breakdown",)


class ArrowMessageError(ValueError):
    """An Arrow message that cannot be read as priced events; the text is the dead letter's reason."""


def _field(buf: bytes, table: int, index: int) -> int | None:
    """Where field `index` of the flatbuffer table at `table` is, or None when the table leaves it out."""
    vtable = table - struct.unpack_from("<i", buf, table)[0]
    if 4 + 2 * index + 2 > struct.unpack_from("<H", buf, vtable)[0]:
        return None
    offset = struct.unpack_from("<H", buf, vtable + 4 + 2 * index)[0]
    return table + offset if offset else None


RECORD_BATCH = 3  # Arrow's MessageHeader union: Schema 1, DictionaryBatch 2, RecordBatch 3


def _batch_rows(metadata: bytes) -> int:
    """The row count a record batch message declares, read from its flatbuffer (Message.header -> RecordBatch:
    length, field 0; compression, field 3) before its body is decoded; ArrowMessageError for a compressed body,
    which would be inflated to whatever size it declares."""
    root = struct.unpack_from("<I", metadata, 0)[0]
    kind, header = _field(metadata, root, 1), _field(metadata, root, 2)
    if kind is None or metadata[kind] != RECORD_BATCH or header is None:
        raise ArrowMessageError("not a priced Arrow batch: a message that is not a record batch")
    batch = header + struct.unpack_from("<I", metadata, header)[0]
    if _field(metadata, batch, 3) is not None:
        raise ArrowMessageError("not a priced Arrow batch: compressed record batches are not accepted")
    length = _field(metadata, batch, 0)
    rows = struct.unpack_from("<q", metadata, length)[0] if length is not None else 0
    if rows < 0:
        raise ArrowMessageError(f"invalid Arrow IPC: a record batch of {rows} rows")
    return rows


def _check_messages(value: bytes) -> None:
    """Before anything is decoded: every message after the schema is an uncompressed record batch, and together
    they declare at most MAX_EVENTS_PER_RECORD rows (so a message cannot make the reader inflate or allocate more
    than its own bytes)."""
    rows = 0
    for message in pa.ipc.MessageReader.open_stream(value):
        if message.type == "schema":
            continue
        try:
            rows += _batch_rows(message.metadata.to_pybytes())
        except (struct.error, IndexError):
            raise ArrowMessageError("invalid Arrow IPC: unreadable record batch header") from None
        if rows > MAX_EVENTS_PER_RECORD:
            raise ArrowMessageError(f"too many events in one message: more than {MAX_EVENTS_PER_RECORD}")


def read_table(value: bytes) -> pa.Table:
    """The rows of one Arrow message, fully validated; ArrowMessageError (the dead letter's reason) otherwise."""
    try:
        _check_messages(value)
    except ArrowMessageError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever a hostile stream makes pyarrow raise
        raise ArrowMessageError(f"invalid Arrow IPC: {_short(exc)}") from None
    try:
        reader = pa.ipc.open_stream(value)
    except Exception as exc:  # noqa: BLE001 - whatever a hostile stream makes pyarrow raise
        raise ArrowMessageError(f"invalid Arrow IPC: {_short(exc)}") from None
    if not reader.schema.equals(SCHEMA):
        raise ArrowMessageError(f"not a priced Arrow batch: {_difference(reader.schema)}")
    batches, rows = [], 0
    try:
        for batch in reader:
            rows += batch.num_rows
            if rows > MAX_EVENTS_PER_RECORD:
                raise ArrowMessageError(f"too many events in one message: more than {MAX_EVENTS_PER_RECORD}")
            batches.append(batch)
        table = pa.Table.from_batches(batches, SCHEMA)
        table.validate(full=True)  # offsets, UTF-8, child lengths: nothing is read before this passes
    except ArrowMessageError:
        raise
    except Exception as exc:  # noqa: BLE001 - truncated streams, bad buffers, invalid UTF-8
        raise ArrowMessageError(f"invalid Arrow IPC: {_short(exc)}") from None
    return table


def _short(exc: Exception) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 300 else text[:300] + "..."


def _difference(schema: pa.Schema) -> str:
    """The first field that differs from SCHEMA, for the dead letter."""
    for i, expected in enumerate(SCHEMA):
        if i >= len(schema):
            return f"field {expected.name!r} missing"
        found = schema.field(i)
        if not found.equals(expected):
            return f"field {i} is {found.name!r}: {found.type}{'' if found.nullable else ' not null'}, expected " \
                   f"{expected.name!r}: {expected.type}"
    return f"{len(schema) - len(SCHEMA)} fields more than expected"


def to_events(table: pa.Table) -> list[dict[str, Any]]:
    """Each row as the priced event dict its JSON decodes to: nulls left out, maps as dicts (a duplicate key keeps
    its last value, as a JSON object does). Column by column (arrow16): each column's values converted by pyarrow
    at once, each row's dict made by one `dict(zip(...))` and only the fields null in some rows checked;
    `Table.to_pylist` and a filtered comprehension per row cost ~2-3x as much."""
    names, columns, nullable = [], [], []
    rows = table.num_rows
    for name in table.column_names:
        column = table.column(name)
        nulls = column.null_count
        if nulls == rows:
            continue
        values = column.to_pylist()
        if name in STRUCTS:
            _struct_dicts(column, values, STRUCTS[name])
        elif name in MAPS:
            values = [None if value is None else dict(value) for value in values]
        names.append(name)
        columns.append(values)
        if nulls:
            nullable.append(name)
    events = [dict(zip(names, row)) for row in zip(*columns)] if columns else [{} for _ in range(rows)]
    _drop_nulls(events, nullable)
    return events


def _drop_nulls(dicts: list[dict[str, Any] | None], keys: list[str]) -> None:
    for key in keys:
        for value in dicts:
            if value is not None and value[key] is None:
                del value[key]


def _struct_dicts(column: pa.ChunkedArray, values: list[dict[str, Any] | None], maps: tuple[str, ...]) -> None:
    """A struct column's values (`to_pylist`'s dicts) as JSON decodes the object: null children left out, map
    children as dicts; in place."""
    children = column.type
    nullable = [children.field(i).name for i in range(children.num_fields)
                if any(chunk.field(i).null_count for chunk in column.chunks)]
    _drop_nulls(values, nullable)
    for name in maps:
        for value in values:
            if value is not None:
                found = value.get(name)
                if found is not None:
                    value[name] = dict(found)


def from_events(events: list[dict[str, Any]]) -> pa.Table:
    """The SCHEMA table of priced event dicts (a priced event's JSON decoded); ValueError for a field the schema
    does not have (the writer's bug: a priced event has no other field). Column by column: pyarrow reads a dict as
    a struct (a missing field is null) and as a map (its items in order), so no row is rebuilt (arrow14: ~6 against
    ~10 µs per event for the row-wise build before)."""
    names = set(SCHEMA.names)
    for event in events:
        if not names.issuperset(event):
            raise ValueError(f"priced event field(s) without an Arrow column: {sorted(set(event) - names)}")
    return pa.Table.from_arrays([pa.array([event.get(field.name) for event in events], field.type)
                                 for field in SCHEMA], schema=SCHEMA)


_SCHEMA_MESSAGE = SCHEMA.serialize().to_pybytes()  # the stream's first message, the same for every stream
_END_OF_STREAM = b"\xff\xff\xff\xff\x00\x00\x00\x00"


def write_stream(table: pa.Table) -> bytes:
    """One message: the table as an Arrow IPC stream (uncompressed), byte for byte what `pa.ipc.new_stream`
    writes (tests/test_priced_arrow.py), assembled from the schema's message made once, each record batch's
    `serialize` and the end-of-stream marker (arrow19: ~0.04-0.05 us per row less than the stream writer, which grew
    its output buffer while writing a ~300 KB message). SCHEMA has no dictionary column, whose batches this could
    not write; a table of another schema goes to the writer, which refuses it."""
    if not table.schema.equals(SCHEMA):
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, SCHEMA) as writer:
            writer.write_table(table)
        return sink.getvalue().to_pybytes()
    return b"".join([_SCHEMA_MESSAGE, *(batch.serialize() for batch in table.to_batches()), _END_OF_STREAM])


__all__ = ["ArrowMessageError", "SCHEMA", "from_events", "read_table", "to_events", "write_stream"]
