"""Priced messages in the Arrow format (issue 14, loader11): the loader's Arrow path (tokenmeter.priced_arrow read,
warehouse.loader_arrow's checks and build) gives exactly what the JSON of the same events gives (the dict path: orjson
per message, then arrow_rows.build_batch): the same table rows in the same order, the same (event, record) per row,
the same dead letters in the same order; malformed Arrow messages become dead letters as malformed JSON does; and
usage priced by the worker in either format stores the same warehouse tables and the same dead letters."""

from __future__ import annotations

import itertools
import random
import re
from datetime import datetime, timezone
from decimal import Decimal
from types import SimpleNamespace

import orjson
import pyarrow as pa
import pytest

from tests.warehouse.test_arrow_rows import hostile_batch, priced  # noqa: F401 (fixture)
from tests.warehouse.test_loader_columnar_equivalence import _contents, _empty
# the dict path (orjson per message, then arrow_rows) against the loader's own (_accept): test_loader_frames' helpers
from tests.warehouse.test_loader_frames import _assert_same, _letters
from tests.warehouse.test_loader_frames import _new as _loader
from tests.warehouse.test_loader_frames import _old as _dict_path
from streams.columnar import process_batch_columnar
from streams.columnar.corpus import Corpus
from streams.pricing import load_price_book
from tokenmeter import priced_arrow, topics
from tokenmeter.microbatch import MAX_EVENTS_PER_RECORD, frame
from tokenmeter.priced_wire import ARROW_HEADERS, FORMAT_HEADER, PricedFormatError, decode_priced
from warehouse.loader import _store_priced
from warehouse.loader_arrow import build_arrow

pytestmark = pytest.mark.slow(seconds=50)


def _record(offset: int, value, headers=None, topic: str = topics.PRICED) -> SimpleNamespace:
    return SimpleNamespace(topic=topic, partition=0, offset=offset, value=value, headers=headers)


def _tables(events: list[dict], size: int) -> list[pa.Table]:
    return [priced_arrow.from_events(events[i:i + size]) for i in range(0, len(events), size)]


def _arrow_records(tables: list[pa.Table], first: int = 0) -> list[SimpleNamespace]:
    return [_record(first + i, priced_arrow.write_stream(t), ARROW_HEADERS) for i, t in enumerate(tables)]


def _json_twins(records: list[SimpleNamespace]) -> list[SimpleNamespace]:
    """Each Arrow record as the JSON its rows decode to (the reference), other records as they are."""
    return [_record(r.offset, orjson.dumps(priced_arrow.to_events(priced_arrow.read_table(r.value))), None, r.topic)
            if r.headers else r for r in records]


def _representable(items: list) -> list[pa.Table]:
    """The hostile items an Arrow writer can say at all, one table each (a JSON-only mistake, such as "batch":
    "false" or a count of 2^64, cannot be written in this schema; pyarrow infers some conversions from the first
    row, so each item is converted alone)."""
    out = []
    for item in items:
        try:
            out.append(priced_arrow.from_events([item]))
        except Exception:  # noqa: BLE001 - not representable: a JSON-only mistake
            continue
    return out


def _struct_with(table: pa.Table, name: str, mask: list[bool]) -> pa.Table:
    """`table` with the struct column `name` null where `mask`, its children kept (set under a null struct)."""
    column = table.column(name).combine_chunks()
    rebuilt = pa.StructArray.from_arrays([column.field(i) for i in range(column.type.num_fields)],
                                         fields=list(column.type), mask=pa.array(mask))
    return table.set_column(table.schema.get_field_index(name), name, rebuilt)


def _arrow_only_mutations(events: list[dict], rng: random.Random) -> list[pa.Table]:
    """What only an Arrow writer can say: duplicate map keys, null map values, a struct's children under a null
    struct, nulls in required fields, numbers JSON cannot carry; each in a small table with clean rows around it."""
    out = []
    mutations = [
        lambda e: {**e, "attribution": {**e["attribution"], "tags": [("a", "1"), ("a", "2")]}},
        lambda e: {**e, "attribution": {**e["attribution"], "tags": [("a", None)]}},
        lambda e: {**e, "cost_breakdown": [("input", "0.1"), ("input", "0.2")]},
        lambda e: {**e, "cost_breakdown": [("input", None)]},
        lambda e: {**e, "cost_breakdown": [("zz", "1.5")]},
        lambda e: {**e, "usage": {**e["usage"], "tool_requests": [("web_search", 2), ("web_search", 0)]}},
        lambda e: {**e, "usage": {**e["usage"], "tool_requests": [("web_search", None)]}},
        lambda e: {**e, "usage": {**e["usage"], "tool_requests": [("web_search", -1)]}},
        lambda e: {**e, "usage": {**e["usage"], "tool_requests": [("bogus", 1), ("web_fetch", 0)]}},
        lambda e: {**e, "usage": {**e["usage"], "input_tokens": -5}},
        lambda e: {**e, "usage": {**e["usage"], "output_tokens": 2**62}},
        lambda e: {**e, "usage": None},
        lambda e: {**e, "latency_ms": float("nan")},
        lambda e: {**e, "latency_ms": float("inf")},
        lambda e: {**e, "latency_ms": -0.0},
        lambda e: {**e, "ttft_ms": 1e300},
        lambda e: {**e, "ts": None}, lambda e: {**e, "event_id": None}, lambda e: {**e, "cost_usd": None},
        lambda e: {**e, "event_id": ""}, lambda e: {**e, "event_id": "x" * 513}, lambda e: {**e, "source": ""},
        lambda e: {**e, "status": None}, lambda e: {**e, "operation": None}, lambda e: {**e, "batch": None},
        lambda e: {**e, "tokens_source": None}, lambda e: {**e, "pricing_status": None},
        lambda e: {**e, "price": {"effective_from": "2025-01-01"}}, lambda e: {**e, "price": None},
        lambda e: {**e, "attribution": None}, lambda e: {**e, "priced_at": None},
        lambda e: {**e, "priced_at": "2026-02-30T00:00:00Z"}, lambda e: {**e, "ts": "2026-01-01T10:00:60Z"},
        lambda e: {**e, "ts": "2026-01-01 10:00:00"}, lambda e: {**e, "cost_usd": "1e-3"},
        lambda e: {**e, "reported_cost_usd": "0.5"}, lambda e: {**e, "reported_cost_usd": "-1"},
        lambda e: {**e, "correlation": {"response_id": "chatcmpl-1"}},
        lambda e: {**e, "correlation": {}},
        lambda e: {**e, "unpriced_reason": None, "pricing_status": "unpriced"},
        lambda e: {**e, "usage_assumption": ""}, lambda e: {**e, "usage_assumption": "x" * 201},
    ]
    plain = [e for e in events if e.get("correlation") is None and not e["usage"].get("tool_requests")]
    for mutate in mutations:
        rows = [dict(e) for e in rng.sample(plain, 5)]
        rows[2] = mutate(rows[2])
        rows = [{k: (list(v.items()) if k == "cost_breakdown" and isinstance(v, dict) else v) for k, v in r.items()}
                for r in rows]
        for row in rows:
            for struct, inner in (("attribution", "tags"), ("usage", "tool_requests")):
                if isinstance(row.get(struct), dict) and isinstance(row[struct].get(inner), dict):
                    row[struct] = {**row[struct], inner: list(row[struct][inner].items())}
        out.append(pa.Table.from_pylist(rows, schema=priced_arrow.SCHEMA))
    base = priced_arrow.from_events(rng.sample(plain, 6))
    out.append(_struct_with(base, "price", [False, True, False, False, True, False]))  # children under a null price
    out.append(_struct_with(base, "attribution", [True, False, False, False, False, False]))
    out.append(_struct_with(base, "usage", [False, False, True, False, False, False]))
    return out


def test_worker_events_take_the_arrow_path_and_equal_the_json_of_the_same_events(priced):  # noqa: F811
    tables = _tables(priced, 100)
    records = _arrow_records(tables)
    _, taken = build_arrow(tables)
    plain = [e for e in priced if e.get("correlation") is None]
    assert taken.sum() >= 0.99 * len(plain) and len(plain) > 3000  # correlated rows: the dict path, as for JSON
    reference, arrow = _dict_path(_json_twins(records)), _loader(records)
    _assert_same(reference, arrow)
    assert arrow.table.num_rows + len(arrow.dead) == len(priced) and len(arrow.dead) < 10
    assert [decode_priced(r.value, r.headers) for r in records] == [priced[i:i + 100] for i in
                                                                    range(0, len(priced), 100)]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_arrow_path_equals_the_dict_path_on_randomised_hostile_windows(priced, seed):  # noqa: F811
    rng = random.Random(seed)
    clean = _tables(rng.sample(priced, 1500), rng.randint(20, 120))
    hostile = _representable(hostile_batch(rng.sample(priced, 300)))
    rng.shuffle(hostile)
    size = rng.randint(1, 40)
    values = [pa.concat_tables(hostile[i:i + size]) for i in range(0, len(hostile), size)]
    arrow_only = _arrow_only_mutations(priced, rng)
    tables = clean + values + arrow_only
    rng.shuffle(tables)
    records = _arrow_records(tables)
    # JSON messages of other events between them: one window holds both formats, in arrival order
    json_messages = list(frame([orjson.dumps(e) for e in rng.sample(priced, 200)], max_events=50))
    for value in json_messages:
        records.insert(rng.randrange(len(records) + 1), _record(0, value))
    for offset, record in enumerate(records):
        record.offset = offset
    # the reference: each Arrow message's rows as dicts (to_events; JSON could not carry a NaN) through the dict path
    reference, arrow = _dict_path(records), _loader(records)
    _assert_same(reference, arrow)
    assert len(reference.dead) > 50 and reference.table.num_rows > 1500


def test_a_map_key_twice_keeps_the_last_value_as_json_does(priced):  # noqa: F811
    event = next(e for e in priced if e.get("correlation") is None and e["pricing_status"] == "priced")
    row = {**event, "attribution": {**event["attribution"], "tags": [("env", "dev"), ("env", "prod")]},
           "cost_breakdown": list(event["cost_breakdown"].items())}
    table = pa.Table.from_pylist([row], schema=priced_arrow.SCHEMA)
    assert priced_arrow.to_events(table)[0]["attribution"]["tags"] == {"env": "prod"}
    batch = _loader(_arrow_records([table]))
    assert batch.table.column("tags").to_pylist() == [[("env", "prod")]]


def _hostile_messages(priced: list[dict]) -> list[tuple[str, bytes, object]]:  # noqa: F811
    """(what, value, headers) of malformed Arrow messages, each with the start of its dead letter's reason."""
    good = priced_arrow.write_stream(priced_arrow.from_events(priced[:20]))
    renamed = pa.Table.from_arrays(priced_arrow.from_events(priced[:3]).columns,
                                   names=["id", *priced_arrow.SCHEMA.names[1:]])
    stringly = priced_arrow.from_events(priced[:3])
    stringly = stringly.set_column(14, "batch", pa.array(["false"] * 3))  # wrong type
    fewer = priced_arrow.from_events(priced[:3]).drop_columns(["reported_cost_check"])

    def stream(table: pa.Table) -> bytes:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return sink.getvalue().to_pybytes()

    def compressed(table: pa.Table, codec: str) -> bytes:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema, options=pa.ipc.IpcWriteOptions(compression=codec)) as writer:
            writer.write_table(table)
        return sink.getvalue().to_pybytes()

    huge = priced_arrow.from_events([priced[0]] * 1000)
    too_many = pa.concat_tables([huge] * (MAX_EVENTS_PER_RECORD // 1000 + 1))
    return [
        ("invalid Arrow IPC", good[:len(good) // 2], ARROW_HEADERS),  # truncated inside a batch
        ("invalid Arrow IPC", good[:7], ARROW_HEADERS),  # truncated inside the schema
        ("invalid Arrow IPC", b"", ARROW_HEADERS),
        ("invalid Arrow IPC", orjson.dumps(priced[:2]), ARROW_HEADERS),  # JSON under the Arrow header
        ("invalid Arrow IPC", good[:100] + b"\x00" * 50 + good[150:], ARROW_HEADERS),
        ("invalid Arrow IPC: empty message", None, ARROW_HEADERS),
        ("not a priced Arrow batch: field 0 is 'id'", stream(renamed), ARROW_HEADERS),
        ("not a priced Arrow batch: field 14 is 'batch': string", stream(stringly), ARROW_HEADERS),
        ("not a priced Arrow batch: field 'reported_cost_check' missing", stream(fewer), ARROW_HEADERS),
        (f"too many events in one message: more than {MAX_EVENTS_PER_RECORD}",
         priced_arrow.write_stream(too_many), ARROW_HEADERS),
        ("not a priced Arrow batch: compressed record batches", compressed(too_many, "zstd"), ARROW_HEADERS),
        ("not a priced Arrow batch: compressed record batches", compressed(huge, "zstd"), ARROW_HEADERS),
        ("not a priced Arrow batch: compressed record batches", compressed(huge, "lz4"), ARROW_HEADERS),
        ("unknown priced format in header tokenmeter-format: 'parquet'", good, [(FORMAT_HEADER, b"parquet")]),
        ("invalid JSON", good, None),  # Arrow bytes without the header: JSON, as every message before
    ]


def test_malformed_arrow_messages_are_dead_letters_and_the_window_goes_on(priced):  # noqa: F811
    """Truncated streams, wrong schemas and types, a huge batch, an unknown format: each message one dead letter
    (payload: its bytes, cut as any letter's), never a crash; the good messages around them are stored in order."""
    hostile = _hostile_messages(priced)
    # the good messages hold what the warehouse stores: the corpus also prices calls above 1,000,000 USD, which the
    # loader letters (Decimal(18,12)); which ones fall in the first 400 moved when hostile32 lettered `batch: 1`
    storable = [e for e in priced if Decimal(e["cost_usd"] or 0) < 1_000_000][:400]
    good = _tables(storable, 100)
    records = []
    for i, (_, value, headers) in enumerate(hostile):
        records.append(_record(0, value, headers))
        if i < len(good):
            records.append(_arrow_records([good[i]])[0])
    for offset, record in enumerate(records):
        record.offset = offset
    for path in (_loader, _dict_path):  # the loader's window, and parse_record (one record at a time)
        batch = path(records)
        expected = [what for what, _, _ in hostile]
        assert [d["reason"][:len(w)] for d, w in zip(batch.dead, expected)] == expected
        assert [d["offset"] for d in batch.dead] == [2 * i if i <= len(good) else len(good) + i
                                                     for i in range(len(hostile))]
        assert batch.table.column("event_id").to_pylist() == [e["event_id"] for e in storable]
        for letter in batch.dead:
            assert letter["payload_bytes"] <= 12_000_000 and len(orjson.dumps(letter)) < 100_000
    for what, value, headers in hostile[:-1]:  # every other reader: the shared decode refuses them alike
        with pytest.raises(PricedFormatError, match="^" + what[:20].replace("(", r"\(")):
            decode_priced(value, headers)


@pytest.fixture(scope="module")
def usage_records() -> list:
    """Usage as the worker reads it: every corpus shape, invalid records and rows."""
    return list(itertools.islice(Corpus(load_price_book(), 11).records(4000), 60))


def test_the_worker_in_either_format_stores_the_same_tables_and_dead_letters(wh, usage_records):
    """The same usage priced by the worker (the columnar step, frame path and dict path) and sent as JSON or as
    Arrow: the worker's own dead letters are the same, and the loader stores identical priced_events (every
    column), keys and rollups, with identical dead letters."""
    book = load_price_book()
    now = datetime.now(timezone.utc)
    results = {}
    for priced_format in ("json", "arrow"):
        # worker batches, priced as a worker writing this format prices them (Arrow: no JSON text; arrow14)
        priced_batches = [process_batch_columnar(usage_records[start:start + 12], book, now, priced_format)
                          for start in range(0, len(usage_records), 12)]
        worker_letters, records = [], []
        for result in priced_batches:
            # the per-row validator quotes its own clock in a far-future event's reason: the runs differ there only
            worker_letters += [{k: (re.sub(r"latest accepted now: [^;]*;", "now;", v) if k == "reason" else v)
                                for k, v in d.items() if k != "at"} for d in result.deadletters]
            for key, value in result.messages(priced_format):
                records.append(_record(len(records), value, ARROW_HEADERS if priced_format == "arrow" else None))
        _empty(wh)
        batch = _loader(records + records[:3])  # redelivered copies: the first wins
        stored = _store_priced(wh, batch)
        results[priced_format] = (len(records), worker_letters, stored, _letters(batch), _contents(wh))
    assert results["arrow"][0] == results["json"][0]  # as many messages: the same cuts
    assert results["arrow"][1] == results["json"][1] and len(results["json"][1]) > 10
    assert results["arrow"][2:] == results["json"][2:]
    assert results["json"][2] > 2000
